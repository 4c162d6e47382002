/*
 * The registry: its options, hm_registry_new and hm_registry_free (which unloads every module,
 * runs the hooks of versions snapshots still pin, and removes the private directory), and its
 * statistics. Calls the modules (module.c) and everything below them.
 *
 * Locks, always taken in this order: a module's reload_lock, then its hook_lock, then
 * reg->lock. reg->lock is never held while module code or the dynamic loader runs (dlopen,
 * dlsym, dlclose), nor while the host's callback runs; it guards only memory. A module's
 * hooks run under its hook_lock (and its save/load hooks under its reload_lock too), so hooks
 * of one module never overlap.
 */
#include "registry.h"

#include "hotmod/module.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The options as the caller's header version laid them out: every version from 1 to the
 * current one is accepted, and fields newer than the caller's keep their defaults. */
static int read_options(const hm_registry_options *in, hm_registry_options *o) {
  static const size_t size_of[] = {0, offsetof(hm_registry_options, settle_ms),
                                   offsetof(hm_registry_options, lint),
                                   offsetof(hm_registry_options, trusted_keys),
                                   sizeof(hm_registry_options)};
  hm_registry_options def = HM_REGISTRY_OPTIONS_INIT;
  *o = def;
  if (in == NULL)
    return 0;
  if (in->version < 1 || in->version > HM_REGISTRY_OPTIONS_VERSION)
    return hm__fail(HM_EINVAL, "hm_registry_options version %u; this hotmod knows 1 to %d",
                    in->version, HM_REGISTRY_OPTIONS_VERSION);
  memcpy(o, in, size_of[in->version]);
  if (o->reload_mode != HM_RELOAD_DEFAULT && o->reload_mode != HM_RELOAD_IMMEDIATE &&
      o->reload_mode != HM_RELOAD_QUEUED)
    return hm__fail(HM_EINVAL, "unknown reload mode %d", (int)o->reload_mode);
  if ((unsigned)o->lint > HM_LINT_OFF)
    return hm__fail(HM_EINVAL, "unknown lint policy %d", (int)o->lint);
  if (o->signed_flags & ~(unsigned)(HM_SIGNED_ALLOW_REPLAY | HM_SIGNED_ALLOW_RENAME |
                                    HM_SIGNED_REQUIRE_FIELDS))
    return hm__fail(HM_EINVAL, "unknown signed_flags 0x%x", o->signed_flags);
  if (o->name != NULL) {
    const char *c;
    if (strlen(o->name) > 255)
      return hm__fail(HM_EINVAL, "registry name longer than 255 bytes");
    for (c = o->name; *c != '\0'; c++)
      if ((unsigned char)*c < 0x20 || *c == 0x7f)
        return hm__fail(HM_EINVAL, "registry name with a control character");
  }
  return 0;
}

/* hm_registry_new without what the environment asks of a new registry (envstart.c). */
/* A registry hm__registry_new could not finish: what it had made so far goes. Returns rc. */
static int discard(hm__allocator *a, hm_registry *reg, int rc) {
  hm__keys_free(reg);
  hm__free(a, reg->probe_helper);
  hm__free(a, reg->name);
  hm__free(a, reg);
  return rc;
}

int hm__registry_new(hm_registry **out, const hm_registry_options *opts) {
  hm_registry_options o;
  hm__allocator a;
  hm_registry *reg;
  hm__keyset *keys;
  const char *root;
  int rc;

  if (out == NULL)
    return hm__fail(HM_EINVAL, "hm_registry_new: out is NULL");
  *out = NULL;
  rc = read_options(opts, &o);
  if (rc != 0)
    return rc;
  a.fn = o.alloc;
  a.userdata = o.alloc_userdata;
  /* Signed builds asked for (by the options or the environment) that cannot be had fail
   * here, before anything is made. */
  if ((rc = hm__keys_load(&a, o.trusted_keys, &keys)) != 0)
    return rc;
  reg = hm__calloc(&a, 1, sizeof *reg);
  if (reg == NULL) {
    hm__free(&a, keys);
    return hm__fail(HM_ENOMEM, "out of memory creating the registry");
  }
  reg->a = a;
  reg->keys = keys;
  reg->signing = keys != NULL;
  reg->signed_flags = o.signed_flags;
  reg->signed_wait_ms = o.signed_wait_ms ? o.signed_wait_ms : 5000;
  reg->flags = hm__profile_flags(o.flags, &reg->prof_cap);
  reg->on_event = o.on_event;
  reg->event_userdata = o.event_userdata;
  reg->reload_mode = o.reload_mode == HM_RELOAD_DEFAULT ? HM_RELOAD_IMMEDIATE : o.reload_mode;
  reg->quiet_ms = o.quiet_ms ? o.quiet_ms : 50;
  reg->settle_ms = o.settle_ms;
  reg->lint = o.lint == HM_LINT_DEFAULT ? HM_LINT_WARN : o.lint;
  reg->probe_timeout_ms = o.probe_timeout_ms ? o.probe_timeout_ms : 5000;
  reg->group_ms = o.group_ms ? o.group_ms : 500;
  reg->name = hm__strdup(&a, o.name != NULL && o.name[0] != '\0' ? o.name
                                                                 : program_invocation_short_name);
  if (reg->name == NULL)
    return discard(&a, reg, hm__fail(HM_ENOMEM, "out of memory creating the registry"));
  /* Before this registry's first loader call (finding the probe walks the loaded objects):
   * a fork must find the handlers in place. */
  hm__fork_handlers_install();
  /* Asked for crash containment: without its helper there is none, say so now. */
  rc = (o.flags & HM_FLAG_PROBE) ? hm__probe_find(&a, &reg->probe_helper) : 0;
  if (rc != 0)
    return discard(&a, reg, rc);
  rc = hm__reclaimer_new(&reg->rc, &a);
  if (rc != 0)
    return discard(&a, reg, hm__fail(rc, "cannot start the reclaimer thread: %s", hm_strerror(rc)));
  pthread_mutex_init(&reg->lock, NULL);
  hm__privdir_sweep(o.private_root); /* what killed processes left behind */
  /* The locked directory is made and the registry listed in one step, so that a fork()
   * cannot come between them: the fork handler must see every lock descriptor to close the
   * child's copy. */
  hm__registries_lock();
  reg->spill_lock_fd = -1;
  if (reg->flags & HM_FLAG_PROFILE) {
    /* On disk, made to outlive the registry: every version's copy stays for profilers. */
    char place[4096];
    root = hm__privdir_profile_root(o.private_root, place, sizeof place);
    rc = hm__privdir_make_kind(&a, root, 1, &reg->dir, &reg->lock_fd);
  } else {
    root = hm__privdir_root(o.private_root, &reg->tmpfs_default);
    rc = hm__privdir_make(&a, root, &reg->dir, &reg->lock_fd);
  }
  if (HM__ERR_FULL(rc) && reg->tmpfs_default) {
    /* The tmpfs chosen by default has no room even for a directory. */
    reg->tmpfs_default = 0;
    rc = hm__privdir_make(&a, hm__privdir_spill_root(), &reg->dir, &reg->lock_fd);
  }
  if (rc == 0)
    hm__registries_add_locked(reg);
  hm__registries_unlock();
  if (rc != 0) {
    hm__reclaimer_free(reg->rc);
    pthread_mutex_destroy(&reg->lock);
    return discard(&a, reg, rc);
  }
  hm__profile_announce(reg);
  *out = reg;
  return 0;
}

/* Run the unload hook of one version that snapshots still pin, if any has not run. Returns
 * 1 if it ran one. Hooks may release snapshots, of this module or others. */
static int run_one_pinned_hook(hm_registry *reg) {
  size_t i;
  hm__version *v = NULL;
  hm_module *mod = NULL, *prev;
  pthread_mutex_lock(&reg->lock);
  for (i = 0; i < reg->nmods && v == NULL; i++) {
    hm__version *x;
    for (x = reg->mods[i]->versions; x != NULL; x = x->next) {
      if (!x->hook_done && x->desc != NULL && x->desc->unload != NULL) {
        v = x;
        mod = reg->mods[i];
        hm__version_ref(v); /* its hook may release the snapshot that pins it */
        break;
      }
    }
  }
  pthread_mutex_unlock(&reg->lock);
  if (v == NULL)
    return 0;
  v->hook_done = 1;
  pthread_mutex_lock(&mod->hook_lock);
  prev = hm__module_code_enter(mod);
  v->desc->unload(v->handed_over);
  hm__module_code_leave(prev);
  pthread_mutex_unlock(&mod->hook_lock);
  hm__version_unref(reg, v);
  return 1;
}

/* Versions that snapshots still pin when the registry goes: they stay mapped, so the
 * snapshots' functions stay callable, and are counted as leaked. Each frees its own
 * bookkeeping when its last snapshot is released. Their copies are deleted (a mapping does
 * not need its file). Returns how many. */
static size_t orphan_pinned(hm_module *mod, int forked) {
  size_t n = 0;
  /* Profiling mode leaves every copy for the profilers. */
  int remove = !forked && !(mod->reg->flags & HM_FLAG_PROFILE);
  while (mod->versions != NULL) {
    hm__version *v = mod->versions;
    int refs = __atomic_load_n(&v->refs, __ATOMIC_ACQUIRE);
    mod->versions = v->next;
    if (forked) {
      /* The child's own references to its current version and table are gone with it. */
      refs -= v == mod->cur;
      refs -= mod->cur_table != NULL && mod->cur_table->v == v;
      __atomic_store_n(&v->refs, refs, __ATOMIC_RELEASE);
    }
    hm__free(&v->a, v->sig);
    v->sig = NULL;
    if (refs <= 0) {
      hm__allocator a = v->a;
      if (remove)
        hm__copy_unlink(v->copy_path);
      hm__free(&a, v->copy_path);
      /* Dead already; forked: memory only (the tables they point to leak with the
       * reclaimer's queue, as other deferred frees do in a child). */
      if (forked)
        hm__cells_forget(v);
      hm__cells_free(&a, hm__cells_take(v));
      hm__free(&a, v); /* forked: its mapping is the parent's business */
      continue;
    }
    /* Its handles are dead; the modules they were on go now. */
    if (forked)
      hm__cells_forget(v);
    hm__cells_detach(v);
    if (remove)
      hm__copy_unlink(v->copy_path);
    hm__free(&v->a, v->copy_path);
    v->copy_path = NULL;
    v->mod = NULL;
    __atomic_store_n(&v->orphan, 1, __ATOMIC_RELEASE);
    n++;
  }
  return n;
}

static void free_memory(hm_registry *reg) {
  size_t i;
  hm__allocator a = reg->a;
  for (i = 0; i < reg->nmods; i++)
    hm__module_destroy(reg, reg->mods[i]);
  hm__free(&reg->a, reg->mods);
  for (i = 0; i < reg->lives.cap; i++) {
    hm_live *l = reg->lives.slots[i].val;
    if (reg->lives.slots[i].key != NULL) {
      hm__free(&reg->a, l->qualified);
      hm__free(&reg->a, l);
    }
  }
  while (reg->spare_lives != NULL) {
    hm_live *l = reg->spare_lives;
    reg->spare_lives = l->next_c;
    hm__free(&reg->a, l->qualified);
    hm__free(&reg->a, l->sig);
    hm__free(&reg->a, l);
  }
  hm__map_free(&reg->lives, &reg->a);
  hm__map_free(&reg->modules, &reg->a);
  hm__profile_free(reg);
  hm__free(&reg->a, reg->dir);
  hm__free(&reg->a, reg->spill_dir);
  hm__free(&reg->a, reg->probe_helper);
  hm__keys_free(reg);
  hm__free(&reg->a, reg->name);
  pthread_mutex_destroy(&reg->lock);
  hm__free(&a, reg);
}

/* The control server's end (its memory; in a forked child, its descriptors too). */
static void control_destroy(hm_registry *reg) {
  const hm__control_ops *ctl = __atomic_load_n(&reg->control_ops, __ATOMIC_ACQUIRE);
  if (ctl != NULL)
    ctl->destroy(reg);
}

/* In a child after fork(): free memory only. The threads, the private directory and its
 * files are the parent's; mapped versions stay mapped. */
static void free_forked(hm_registry *reg) {
  size_t i, pinned = 0;
  hm__reclaimer_forget(reg->rc);
  for (i = 0; i < reg->nmods; i++) {
    hm__prepared_drop(reg->mods[i], 1);
    pinned += orphan_pinned(reg->mods[i], 1);
  }
  (void)pinned;
  control_destroy(reg);
  free_memory(reg);
}

void hm_registry_free(hm_registry *reg) {
  size_t i, pinned = 0;
  if (reg == NULL)
    return;
  if (hm__in_module_code()) {
    /* It would wait for the reclaimer or the loader that runs this very code. */
    hm__refuse_in_module_code("hm_registry_free");
    fprintf(stderr, "hotmod: %s\n", hm_errmsg());
    return;
  }
  hm__registries_remove(reg);
  if (reg->forked) {
    free_forked(reg);
    return;
  }
  {
    /* First the control server: no command may start a reload from here on. */
    const hm__control_ops *ctl = __atomic_load_n(&reg->control_ops, __ATOMIC_ACQUIRE);
    const hm__watch_ops *ops;
    if (ctl != NULL)
      ctl->stop(reg);
    ops = __atomic_load_n(&reg->watch_ops, __ATOMIC_ACQUIRE);
    if (ops != NULL)
      ops->stop(reg);
  }
  if (reg->watch_reap != NULL)
    reg->watch_reap(reg);
  /* Retire every current version; the reclaimer unloads them once live calls have left. */
  for (i = 0; i < reg->nmods; i++) {
    if (reg->mods[i]->cur != NULL)
      hm_module_unload(reg->mods[i]);
    hm__prepared_drop(reg->mods[i], 0); /* left only if that unload failed */
  }
  hm__reclaimer_drain(reg->rc);
  /* Versions that snapshots pin still get their unload hooks, which may release snapshots
   * of other modules and so let those versions go normally. */
  while (run_one_pinned_hook(reg))
    hm__reclaimer_drain(reg->rc);
  /* Every hook has run: what versions' handles still reach goes too (a snapshot still
   * pinning a version calls NULLs through them from here on). */
  pthread_mutex_lock(&reg->lock);
  hm__cells_end(reg);
  pthread_mutex_unlock(&reg->lock);
  hm__reclaimer_drain(reg->rc);
  hm__reclaimer_free(reg->rc);
  for (i = 0; i < reg->nmods; i++) {
    hm_module *mod = reg->mods[i];
    hm__version *v;
    for (v = mod->versions; v != NULL; v = v->next) {
      char detail[128];
      int refs = __atomic_load_n(&v->refs, __ATOMIC_ACQUIRE);
      snprintf(detail, sizeof detail, "pinned by %d snapshot%s when its registry was freed",
               refs, refs == 1 ? "" : "s");
      hm__emit_mapped(reg, mod, v->num, HM_MAPPED_PINNED, 0, detail);
    }
    pinned += orphan_pinned(mod, 0);
  }
  if (pinned != 0 && !(reg->flags & HM_FLAG_QUIET))
    fprintf(stderr,
            "hotmod: hm_registry_free: %zu version(s) still pinned by snapshots stay mapped "
            "(leaked); release snapshots before freeing their registry\n",
            pinned);
  if (reg->flags & HM_FLAG_PROFILE)
    hm__privdir_release(reg->lock_fd);
  else
    hm__privdir_remove(reg->dir, reg->lock_fd);
  if (reg->spill_dir != NULL)
    hm__privdir_remove(reg->spill_dir, reg->spill_lock_fd);
  control_destroy(reg);
  free_memory(reg);
}

const char *hm_registry_dir(const hm_registry *reg) { return reg ? reg->dir : NULL; }

const char *hm_registry_name(const hm_registry *reg) { return reg ? reg->name : NULL; }

int hm_registry_stats_get(hm_registry *reg, hm_stats *out, size_t size) {
  hm_stats st;
  size_t i;
  unsigned long long current = 0;
  if (reg == NULL || out == NULL || size == 0)
    return hm__fail(HM_EINVAL, "hm_registry_stats: NULL registry or output");
  pthread_mutex_lock(&reg->lock);
  st = reg->stats;
  for (i = 0; i < reg->nmods; i++)
    current += reg->mods[i]->cur != NULL;
  st.modules = current;
  st.retired = reg->nloaded - current;
  pthread_mutex_unlock(&reg->lock);
  /* A caller built against an older header has a smaller hm_stats: fill what it has. */
  memcpy(out, &st, size < sizeof st ? size : sizeof st);
  return 0;
}

int hm_registry_set_lint_finding(hm_registry *reg, const char *finding, hm_lint_policy policy) {
  if (reg == NULL)
    return hm__fail(HM_EINVAL, "hm_registry_set_lint_finding: NULL registry");
  return hm__lint_finding_set(reg, reg->lint_finding, finding, policy,
                          "hm_registry_set_lint_finding");
}
