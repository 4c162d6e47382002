/*
 * Modules: names and their validation, finding or creating a module, loading one by name,
 * unloading it, and its getters and settings. A load is a reload of a module that has no
 * version yet (reload.c); an unload publishes the table of NULLs made ahead for it.
 */
#include "reload.h"

#include "build.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int valid_name(const char *name) {
  size_t n;
  if (name == NULL)
    return 0;
  n = strlen(name);
  return n > 0 && n < 256 && strchr(name, ':') == NULL;
}

/* Find or create the module object for `name`. Under reg->lock. */
static int module_get_or_create(hm_registry *reg, const char *name, const char *path,
                                hm_module **out) {
  hm_module *mod = hm__map_get(&reg->modules, name);
  if (mod != NULL) {
    mod->loaders++;
    *out = mod;
    return 0;
  }
  if (reg->nmods == reg->capmods) {
    size_t ncap = reg->capmods ? reg->capmods * 2 : 8;
    hm_module **nm = hm__realloc(&reg->a, reg->mods, ncap * sizeof *nm);
    if (nm == NULL)
      return HM_ENOMEM;
    reg->mods = nm;
    reg->capmods = ncap;
  }
  mod = hm__calloc(&reg->a, 1, sizeof *mod);
  if (mod == NULL)
    return HM_ENOMEM;
  mod->reg = reg;
  mod->name = hm__strdup(&reg->a, name);
  mod->path = hm__path_pack(&reg->a, path, path, ""); /* the first load anchors it */
  mod->next_num = 1;
  if (mod->name == NULL || mod->path == NULL ||
      hm__map_put(&reg->modules, &reg->a, mod->name, mod) != 0) {
    hm__free(&reg->a, mod->name);
    hm__free(&reg->a, mod->path);
    hm__free(&reg->a, mod);
    return HM_ENOMEM;
  }
  pthread_mutex_init(&mod->reload_lock, NULL);
  pthread_mutex_init(&mod->hook_lock, NULL);
  mod->loaders = 1;
  reg->mods[reg->nmods++] = mod;
  *out = mod;
  return 0;
}

void hm__module_destroy(hm_registry *reg, hm_module *mod) {
  size_t k;
  hm__free(&reg->a, mod->cur_table);
  hm__free(&reg->a, mod->spare);
  for (k = 0; k < mod->nsyms; k++) {
    hm__free(&reg->a, mod->syms[k]);
    hm__free(&reg->a, mod->sigs[k]);
  }
  hm__free(&reg->a, mod->syms);
  hm__free(&reg->a, mod->sigs);
  hm__free(&reg->a, mod->borrowed);
  hm__free(&reg->a, mod->group);
  /* The host's owned handles still held (a version's go with its cells). */
  while (mod->owned != NULL) {
    hm_live *l = mod->owned;
    mod->owned = l->next_owned;
    if (l->kind != HM__LIVE_HOST)
      continue;
    hm__free(&reg->a, l->qualified);
    hm__free(&reg->a, l->sig);
    hm__free(&reg->a, l);
  }
  hm__free(&reg->a, mod->hist);
  if (mod->kept_path != NULL && !reg->forked && !(reg->flags & HM_FLAG_PROFILE))
    hm__copy_remove(mod->kept_path); /* it may be the copy of a version kept mapped */
  hm__free(&reg->a, mod->kept_path);
  hm__free(&reg->a, mod->kept_sig);
  hm__build_rule_unref(mod->build);
  hm__free(&reg->a, mod->reject_detail);
  hm__free(&reg->a, mod->kept_recs);
  if (!reg->forked) {
    /* In a forked child they may be held by threads that did not come along. */
    pthread_mutex_destroy(&mod->reload_lock);
    pthread_mutex_destroy(&mod->hook_lock);
  }
  hm__free(&reg->a, mod->name);
  hm__free(&reg->a, mod->path);
  hm__free(&reg->a, mod);
}

/* After a first load failed, take the module out again, so failed loads leave nothing
 * behind. Only a module that never had a version qualifies: nothing can have kept a pointer
 * to it (finds, handles and the watcher all skip modules without a current version). */
static void module_forget_if_unused(hm_registry *reg, hm_module *mod) {
  size_t i;
  int forget;
  pthread_mutex_lock(&reg->lock);
  forget = --mod->loaders == 0 && mod->cur == NULL && mod->next_num == 1 && mod->nsyms == 0;
  if (forget) {
    hm__map_del(&reg->modules, mod->name);
    for (i = 0; i < reg->nmods; i++) {
      if (reg->mods[i] == mod) {
        memmove(&reg->mods[i], &reg->mods[i + 1], (reg->nmods - i - 1) * sizeof *reg->mods);
        reg->nmods--;
        break;
      }
    }
  }
  pthread_mutex_unlock(&reg->lock);
  if (forget)
    hm__module_destroy(reg, mod);
}

int hm_module_load(hm_registry *reg, const char *name, const char *path, hm_module **out) {
  hm_module *mod;
  int rc;
  if (out != NULL)
    *out = NULL;
  if (reg == NULL)
    return hm__fail(HM_EINVAL, "hm_module_load: NULL registry");
  if (!valid_name(name) || path == NULL || path[0] == '\0')
    return hm__fail(HM_EINVAL, "module name must be 1-255 characters without ':', and the "
                               "path non-empty");
  if (hm__in_module_code())
    return hm__refuse_in_module_code("hm_module_load");
  if ((rc = hm__check_forked(reg, "hm_module_load")) != 0)
    return rc;
  pthread_mutex_lock(&reg->lock);
  rc = module_get_or_create(reg, name, path, &mod);
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0)
    return hm__fail(rc, "out of memory creating module %s", name);
  rc = hm__reload(mod, path, NULL, HM__RELOAD_REVIVE);
  module_forget_if_unused(reg, mod);
  if (rc == 0 && out != NULL)
    *out = mod;
  return rc;
}

int hm_module_find(hm_registry *reg, const char *name, hm_module **out) {
  hm_module *mod;
  if (out != NULL)
    *out = NULL;
  if (reg == NULL || name == NULL || out == NULL)
    return hm__fail(HM_EINVAL, "hm_module_find: NULL argument");
  pthread_mutex_lock(&reg->lock);
  mod = hm__map_get(&reg->modules, name);
  if (mod != NULL && mod->cur == NULL)
    mod = NULL;
  pthread_mutex_unlock(&reg->lock);
  if (mod == NULL)
    return hm__fail(HM_ENOMOD, "no module named %s", name);
  *out = mod;
  return 0;
}

int hm_module_unload(hm_module *mod) {
  hm_registry *reg;
  hm__job *stale;
  hm__table *t;
  hm__version *old;
  unsigned oldnum;
  int rc = hm__reload_checks(mod, "hm_module_unload");
  if (rc != 0)
    return rc;
  reg = mod->reg;
  pthread_mutex_lock(&mod->reload_lock);
  pthread_mutex_lock(&reg->lock);
  old = mod->cur;
  if (old == NULL) {
    pthread_mutex_unlock(&reg->lock);
    pthread_mutex_unlock(&mod->reload_lock);
    return hm__fail(HM_ENOMOD, "module %s is not loaded", mod->name);
  }
  /* Live handles of an unloaded module read a table of NULLs: the spare, made ahead. */
  t = mod->spare;
  mod->spare = NULL;
  t->n = mod->nsyms;
  oldnum = old->num;
  hm__version_retire(old);
  mod->cur = NULL;
  stale = hm__prepared_take(mod);
  /* Nothing to roll back to once the module is gone; a load by name starts afresh. */
  hm__kept_drop(mod);
  mod->nhist = 0;
  mod->have_rolled_back = 0;
  __atomic_store_n(&mod->cur_num, 0, __ATOMIC_RELEASE);
  hm__publish(mod, t);
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  hm__prepared_discard(stale);
  hm__watch_poke(reg);
  hm__emit(reg, HM_EVENT_RETIRED, mod, oldnum, 0);
  hm__version_unref(reg, old);
  return 0;
}

unsigned hm_module_version(const hm_module *mod) {
  return mod ? __atomic_load_n(&mod->cur_num, __ATOMIC_ACQUIRE) : 0;
}

const char *hm_module_name(const hm_module *mod) { return mod ? mod->name : NULL; }

const char *hm_module_path(const hm_module *mod) {
  return mod ? hm__path_given(mod->path) : NULL;
}

int hm_module_set_lint(hm_module *mod, hm_lint_policy policy) {
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "hm_module_set_lint: NULL module");
  if ((unsigned)policy > HM_LINT_OFF)
    return hm__fail(HM_EINVAL, "unknown lint policy %d", (int)policy);
  pthread_mutex_lock(&mod->reg->lock);
  mod->lint = policy;
  pthread_mutex_unlock(&mod->reg->lock);
  return 0;
}

/* The index of the finding called `finding`, or HM_EINVAL naming the findings there are. */
static int lint_finding_index(const char *finding, hm_lint_policy policy, const char *what) {
  char names[256];
  size_t used = 0;
  unsigned i;
  int k = hm__lint_index(finding);
  if ((unsigned)policy > HM_LINT_OFF)
    return hm__fail(HM_EINVAL, "%s: unknown lint policy %d", what, (int)policy);
  if (k >= 0)
    return k;
  names[0] = '\0';
  for (i = 0; i < hm__lint_count() && used < sizeof names; i++) {
    int w = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                     hm__lint_name(hm__lint_bit(i)));
    used += w > 0 ? (size_t)w : 0;
  }
  return hm__fail(HM_EINVAL, "%s: no lint finding is called \"%s\"; the findings are %s", what,
                  finding != NULL ? finding : "(null)", names);
}

/* Store a policy for a finding in a registry's or a module's table, under reg->lock. */
int hm__lint_finding_set(hm_registry *reg, unsigned char *table, const char *finding,
                            hm_lint_policy policy, const char *what) {
  int k = lint_finding_index(finding, policy, what);
  if (k < 0)
    return k;
  pthread_mutex_lock(&reg->lock);
  table[k] = (unsigned char)policy;
  pthread_mutex_unlock(&reg->lock);
  return 0;
}

int hm_module_set_lint_finding(hm_module *mod, const char *finding, hm_lint_policy policy) {
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "hm_module_set_lint_finding: NULL module");
  return hm__lint_finding_set(mod->reg, mod->lint_finding, finding, policy,
                          "hm_module_set_lint_finding");
}

int hm_module_set_probe(hm_module *mod, int enable) {
  hm_registry *reg;
  char *helper = NULL;
  int rc = 0;
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "hm_module_set_probe: NULL module");
  if (enable < -1 || enable > 1)
    return hm__fail(HM_EINVAL, "hm_module_set_probe: enable is -1, 0 or 1, not %d", enable);
  reg = mod->reg;
  pthread_mutex_lock(&reg->lock);
  helper = reg->probe_helper;
  pthread_mutex_unlock(&reg->lock);
  if (enable == 1 && helper == NULL) {
    rc = hm__probe_find(&reg->a, &helper);
    if (rc != 0)
      return rc;
    pthread_mutex_lock(&reg->lock);
    if (reg->probe_helper == NULL) {
      reg->probe_helper = helper;
      helper = NULL;
    }
    pthread_mutex_unlock(&reg->lock);
    hm__free(&reg->a, helper); /* another thread found it first */
  }
  pthread_mutex_lock(&reg->lock);
  mod->probe = enable == -1 ? 0 : enable == 1 ? 1 : 2;
  pthread_mutex_unlock(&reg->lock);
  return 0;
}

int hm_module_set_group(hm_module *mod, const char *name) {
  char *copy = NULL;
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "hm_module_set_group: NULL module");
  if (name != NULL && name[0] != '\0' && (copy = hm__strdup(&mod->reg->a, name)) == NULL)
    return hm__fail(HM_ENOMEM, "out of memory naming the group of %s", mod->name);
  pthread_mutex_lock(&mod->reg->lock);
  hm__free(&mod->reg->a, mod->group);
  mod->group = copy;
  pthread_mutex_unlock(&mod->reg->lock);
  return 0;
}

int hm_module_watch_method(const hm_module *mod) {
  return mod ? __atomic_load_n(&mod->watch_method, __ATOMIC_ACQUIRE) : 0;
}
