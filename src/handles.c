/*
 * Stable snapshots and live handles.
 *
 * A snapshot holds one reference to a version: acquiring and releasing it touch the version's
 * count once each, and calling through it is a plain indirect call.
 *
 * A live handle is a slot in its module's function table. hm_live_enter (inline, hotmod.h)
 * loads the module's current table and returns the slot's entry. A new symbol gets a new
 * slot: the module's table is copied with one more entry and republished, so readers never
 * see a table change under them.
 */
#include "registry.h"

#include <dlfcn.h>
#include <string.h>

int hm__split_qualified(const char *qualified, char *modname, size_t modlen,
                        const char **sym) {
  const char *colon;
  size_t n;
  if (qualified == NULL)
    return HM_EINVAL;
  colon = strchr(qualified, ':');
  if (colon == NULL || colon == qualified || colon[1] == '\0')
    return HM_EINVAL;
  n = (size_t)(colon - qualified);
  if (n >= modlen)
    return HM_EINVAL;
  memcpy(modname, qualified, n);
  modname[n] = '\0';
  *sym = colon + 1;
  return 0;
}

/* Look up a loaded module and resolve `sym` in its current version. Under reg->lock. */
static int resolve_current(hm_registry *reg, const char *modname, const char *sym,
                           hm_module **modp, hm_fn *fn) {
  hm_module *mod = hm__map_get(&reg->modules, modname);
  void *p;
  if (mod == NULL || mod->cur == NULL) {
    hm__set_error(reg, HM_ENOMOD, "no module named %s", modname);
    return HM_ENOMOD;
  }
  p = dlsym(mod->cur->dl, sym);
  if (p == NULL) {
    hm__set_error(reg, HM_ENOSYM, "module %s (version %u, %s) has no symbol %s", modname,
                  mod->cur->num, mod->path, sym);
    return HM_ENOSYM;
  }
  memcpy(fn, &p, sizeof p);
  *modp = mod;
  return 0;
}

/* The checks every "module:symbol" entry point starts with (after clearing its *out). */
static int begin_lookup(hm_registry *reg, const char *qualified, int have_out, char *modname,
                        size_t modlen, const char **sym) {
  if (reg == NULL || !have_out)
    return HM_EINVAL;
  if (hm__split_qualified(qualified, modname, modlen, sym) != 0) {
    hm__set_error(reg, HM_EINVAL, "expected \"module:symbol\", got \"%s\"",
                  qualified ? qualified : "(null)");
    return HM_EINVAL;
  }
  return 0;
}

/* ---- Snapshots ------------------------------------------------------------------------- */

int hm_snapshot_acquire(hm_registry *reg, const char *qualified, hm_snapshot **out) {
  char modname[256];
  const char *sym;
  hm_module *mod;
  hm_snapshot *s;
  hm_fn fn;
  int rc;
  if (out != NULL)
    *out = NULL;
  rc = begin_lookup(reg, qualified, out != NULL, modname, sizeof modname, &sym);
  if (rc != 0)
    return rc;
  s = hm__malloc(&reg->a, sizeof *s);
  if (s == NULL)
    return HM_ENOMEM;
  pthread_mutex_lock(&reg->lock);
  rc = resolve_current(reg, modname, sym, &mod, &fn);
  if (rc == 0) {
    s->v = mod->cur;
    __atomic_add_fetch(&s->v->refs, 1, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0) {
    hm__free(&reg->a, s);
    return rc;
  }
  s->fn = fn;
  s->reg = reg;
  *out = s;
  return 0;
}

hm_fn hm_snapshot_fn(const hm_snapshot *snap) { return snap ? snap->fn : NULL; }

unsigned hm_snapshot_version(const hm_snapshot *snap) { return snap ? snap->v->num : 0; }

void hm_snapshot_release(hm_snapshot *snap) {
  hm_registry *reg;
  hm__version *v;
  if (snap == NULL)
    return;
  reg = snap->reg;
  v = snap->v;
  hm__free(&reg->a, snap);
  hm__version_unref(reg, v);
}

/* ---- Live handles ---------------------------------------------------------------------- */

/* Add a slot for `sym` to the module and republish its table. Under reload_lock and
 * reg->lock, with `fn` resolved in the current version. */
static int add_slot(hm_module *mod, const char *sym, hm_fn fn, size_t *slot) {
  hm_registry *reg = mod->reg;
  hm__table *t;
  char *copy;
  if (mod->nsyms == mod->capsyms) {
    size_t ncap = mod->capsyms ? mod->capsyms * 2 : 4;
    char **ns = hm__realloc(&reg->a, mod->syms, ncap * sizeof *ns);
    if (ns == NULL)
      return HM_ENOMEM;
    mod->syms = ns;
    mod->capsyms = ncap;
  }
  copy = hm__strdup(&reg->a, sym);
  t = hm__table_new(reg, mod->cur, mod->nsyms + 1);
  if (copy == NULL || t == NULL) {
    hm__free(&reg->a, copy);
    if (t != NULL) {
      __atomic_sub_fetch(&mod->cur->refs, 1, __ATOMIC_RELAXED);
      hm__free(&reg->a, t);
    }
    return HM_ENOMEM;
  }
  memcpy(t->fns, mod->cur_table->fns, mod->nsyms * sizeof(hm_fn));
  t->fns[mod->nsyms] = fn;
  *slot = mod->nsyms;
  mod->syms[mod->nsyms++] = copy;
  hm__publish(mod, t);
  return 0;
}

int hm_live_get(hm_registry *reg, const char *qualified, hm_live **out) {
  char modname[256];
  const char *sym;
  hm_module *mod;
  hm_live *live;
  hm_fn fn;
  size_t slot;
  int rc, loaded;

  if (out != NULL)
    *out = NULL;
  rc = begin_lookup(reg, qualified, out != NULL, modname, sizeof modname, &sym);
  if (rc != 0)
    return rc;

  pthread_mutex_lock(&reg->lock);
  live = hm__map_get(&reg->lives, qualified);
  mod = hm__map_get(&reg->modules, modname);
  /* A module without a current version may be one whose first load is failing right now,
   * which then removes it: do not keep its pointer past the lock. */
  loaded = mod != NULL && mod->cur != NULL;
  pthread_mutex_unlock(&reg->lock);
  if (live != NULL) {
    *out = live;
    return 0;
  }
  if (mod == NULL || !loaded) {
    hm__set_error(reg, HM_ENOMOD, "no module named %s", modname);
    return HM_ENOMOD;
  }

  /* A new slot changes which symbols every later version must have: take the module's
   * reload lock so no reload is between resolving and publishing. */
  pthread_mutex_lock(&mod->reload_lock);
  pthread_mutex_lock(&reg->lock);
  live = hm__map_get(&reg->lives, qualified);
  if (live != NULL)
    goto done;
  rc = resolve_current(reg, modname, sym, &mod, &fn);
  if (rc != 0)
    goto fail;
  live = hm__calloc(&reg->a, 1, sizeof *live);
  if (live == NULL || (live->qualified = hm__strdup(&reg->a, qualified)) == NULL) {
    rc = HM_ENOMEM;
    goto fail;
  }
  rc = add_slot(mod, sym, fn, &slot);
  if (rc != 0)
    goto fail;
  live->head.table = &mod->table;
  live->head.slot = slot;
  live->mod = mod;
  /* The map only grows; if this fails the slot stays, unused, which is harmless. */
  rc = hm__map_put(&reg->lives, &reg->a, live->qualified, live);
  if (rc != 0)
    goto fail;
done:
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  *out = live;
  return 0;
fail:
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  if (live != NULL) {
    hm__free(&reg->a, live->qualified);
    hm__free(&reg->a, live);
  }
  if (rc == HM_ENOMEM)
    hm__set_error(reg, rc, "out of memory getting %s", qualified);
  return rc;
}

hm_module *hm_live_module(const hm_live *live) { return live ? live->mod : NULL; }

hm_fn hm_live_enter_fn(hm_live *live) { return hm_live_enter(live); }

void hm_live_leave_fn(hm_live *live) { hm_live_leave(live); }
