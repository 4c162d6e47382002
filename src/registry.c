/*
 * The registry: modules by name, their versions, reloads, events, and what happens to all
 * of them at hm_registry_free and after fork(). Reading files is file.c's job, loading the
 * loader's, the tables live handles read are table.c's, and unloading after a grace period
 * is the reclaimer's; the registry decides what is current and tells them.
 *
 * Locks, always taken in this order: a module's reload_lock, then its hook_lock, then
 * reg->lock. reg->lock is never held while module code or the dynamic loader runs (dlopen,
 * dlsym, dlclose), nor while the host's callback runs; it guards only memory. A module's
 * hooks run under its hook_lock (and its save/load hooks under its reload_lock too), so hooks
 * of one module never overlap.
 */
#include "registry.h"

#include "build.h"

#include "hotmod/module.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Events ---------------------------------------------------------------------------- */

static const char *event_name(hm_event ev) {
  switch (ev) {
  case HM_EVENT_LOADED:
    return "loaded";
  case HM_EVENT_REJECTED:
    return "rejected";
  case HM_EVENT_RETIRED:
    return "retired";
  case HM_EVENT_UNLOADED:
    return "unloaded";
  case HM_EVENT_LEAKED:
    return "stays mapped";
  case HM_EVENT_CHANGED:
    return "changed on disk";
  case HM_EVENT_ROLLED_BACK:
    return "rolled back (an older build is current again)";
  case HM_EVENT_WARNING:
    return "warning";
  case HM_EVENT_BUILD_STARTED:
    return "build started";
  case HM_EVENT_BUILD_SUCCEEDED:
    return "build succeeded";
  case HM_EVENT_BUILD_FAILED:
    return "build failed";
  case HM_EVENT_WATCH_FAILED:
    return "not watched";
  }
  return "?";
}

void hm__emit_detail(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version,
                     int err, const char *detail) {
  const char *prev = hm__event_detail_set(detail);
  if (reg->on_event != NULL) {
    reg->on_event(ev, mod, version, err, reg->event_userdata);
  } else if (!(reg->flags & HM_FLAG_QUIET)) {
    if (err != 0)
      fprintf(stderr, "hotmod: %s v%u %s: %s (%s)\n", mod->name, version, event_name(ev),
              hm_strerror(err), hm_event_detail());
    else if (detail != NULL && detail[0] != '\0')
      fprintf(stderr, "hotmod: %s v%u %s: %s\n", mod->name, version, event_name(ev), detail);
    else
      fprintf(stderr, "hotmod: %s v%u %s\n", mod->name, version, event_name(ev));
  }
  hm__event_detail_set(prev);
}

void hm__emit(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version, int err) {
  /* A refusal's detail is the failure recorded on this thread just before: a copy, since a
   * call that fails inside the callback records its own. */
  char detail[1024];
  if (ev == HM_EVENT_REJECTED)
    snprintf(detail, sizeof detail, "%s", hm_errmsg());
  hm__emit_detail(reg, ev, mod, version, err, ev == HM_EVENT_REJECTED ? detail : NULL);
}

void hm__emit_mapped(hm_registry *reg, hm_module *mod, unsigned version, int why,
                     unsigned long long bytes, const char *detail) {
  hm__mapped_report r;
  const hm__mapped_report *prev;
  r.why = why;
  r.bytes = bytes;
  prev = hm__event_mapped_set(&r);
  hm__emit_detail(reg, HM_EVENT_LEAKED, mod, version, 0, detail);
  hm__event_mapped_set(prev);
}

void hm__watch_poke(hm_registry *reg) {
  /* Atomic: hm_watch_start may install the hooks meanwhile. */
  const hm__watch_ops *ops = __atomic_load_n(&reg->watch_ops, __ATOMIC_ACQUIRE);
  if (ops != NULL)
    ops->changed(reg);
}

int hm__check_forked(hm_registry *reg, const char *what) {
  if (!reg->forked)
    return 0;
  return hm__fail(HM_EFORKED,
                  "%s: this registry was made before fork(); in the child its versions stay "
                  "callable but nothing may change (make a new registry in the child)",
                  what);
}

/* ---- Every registry of the process, for fork() ---------------------------------------- */

/* The prepare handler first waits until no loader call hotmod makes, on any thread, is in
 * progress (dlgate.c: glibc's child would inherit the loader's list lock held, and block in
 * its first dlopen); that wait comes before any lock, because module code running inside
 * the loader may take reg->lock. Then it takes every registry's lock (and the reader
 * list's), so the child starts with each of them in a known state; reg->lock is only ever
 * held briefly, never around module code. The child then marks the registries it
 * inherited: their reclaimer and watcher threads did not come along, so they may not change
 * or reclaim anything. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static hm_registry *all_regs;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void prefork(void) {
  hm_registry *r;
  hm__dlgate_prefork();
  pthread_mutex_lock(&all_lock);
  for (r = all_regs; r != NULL; r = r->all_next)
    pthread_mutex_lock(&r->lock);
  hm__readers_prefork();
}

static void postfork(int child) {
  hm_registry *r;
  hm__readers_postfork(child);
  for (r = all_regs; r != NULL; r = r->all_next) {
    if (child) {
      r->forked = 1;
      /* The child shares the parent's lock on the private directory through this
       * descriptor: close it (never unlock, which would unlock the parent's), so the lock
       * lives as long as the parent's registry and no longer. */
      if (r->lock_fd >= 0)
        close(r->lock_fd);
      r->lock_fd = -1;
      if (r->spill_lock_fd >= 0)
        close(r->spill_lock_fd);
      r->spill_lock_fd = -1;
    }
    pthread_mutex_unlock(&r->lock);
  }
  pthread_mutex_unlock(&all_lock);
  hm__dlgate_postfork(child);
}

static void postfork_parent(void) { postfork(0); }
static void postfork_child(void) { postfork(1); }

static void install_atfork(void) { pthread_atfork(prefork, postfork_parent, postfork_child); }

/* Under all_lock. */
static void all_add_locked(hm_registry *reg) {
  reg->all_next = all_regs;
  if (all_regs != NULL)
    all_regs->all_prev = reg;
  all_regs = reg;
}

static void all_remove(hm_registry *reg) {
  pthread_mutex_lock(&all_lock);
  if (reg->all_prev != NULL)
    reg->all_prev->all_next = reg->all_next;
  else
    all_regs = reg->all_next;
  if (reg->all_next != NULL)
    reg->all_next->all_prev = reg->all_prev;
  pthread_mutex_unlock(&all_lock);
}

/* ---- Registry -------------------------------------------------------------------------- */

static void module_destroy(hm_registry *reg, hm_module *mod);

/* The options as the caller's header version laid them out: every version from 1 to the
 * current one is accepted, and fields newer than the caller's keep their defaults. */
static int read_options(const hm_registry_options *in, hm_registry_options *o) {
  static const size_t size_of[] = {0, offsetof(hm_registry_options, settle_ms),
                                   offsetof(hm_registry_options, lint),
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
  return 0;
}

int hm_registry_new(hm_registry **out, const hm_registry_options *opts) {
  hm_registry_options o;
  hm__allocator a;
  hm_registry *reg;
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
  reg = hm__calloc(&a, 1, sizeof *reg);
  if (reg == NULL)
    return hm__fail(HM_ENOMEM, "out of memory creating the registry");
  reg->a = a;
  reg->flags = o.flags;
  reg->on_event = o.on_event;
  reg->event_userdata = o.event_userdata;
  reg->reload_mode = o.reload_mode == HM_RELOAD_DEFAULT ? HM_RELOAD_IMMEDIATE : o.reload_mode;
  reg->quiet_ms = o.quiet_ms ? o.quiet_ms : 50;
  reg->settle_ms = o.settle_ms;
  reg->lint = o.lint == HM_LINT_DEFAULT ? HM_LINT_WARN : o.lint;
  reg->probe_timeout_ms = o.probe_timeout_ms ? o.probe_timeout_ms : 5000;
  /* Before this registry's first loader call (finding the probe walks the loaded objects):
   * a fork must find the handlers in place. */
  pthread_once(&atfork_once, install_atfork);
  /* Asked for crash containment: without its helper there is none, say so now. */
  rc = (o.flags & HM_FLAG_PROBE) ? hm__probe_find(&a, &reg->probe_helper) : 0;
  if (rc != 0) {
    hm__free(&a, reg);
    return rc;
  }
  rc = hm__reclaimer_new(&reg->rc, &a);
  if (rc != 0) {
    hm__free(&a, reg->probe_helper);
    hm__free(&a, reg);
    return hm__fail(rc, "cannot start the reclaimer thread: %s", hm_strerror(rc));
  }
  pthread_mutex_init(&reg->lock, NULL);
  hm__privdir_sweep(o.private_root); /* what killed processes left behind */
  /* The locked directory is made and the registry listed under all_lock, so that a fork()
   * cannot come between them: the fork handler must see every lock descriptor to close the
   * child's copy. */
  pthread_mutex_lock(&all_lock);
  reg->spill_lock_fd = -1;
  root = hm__privdir_root(o.private_root, &reg->tmpfs_default);
  rc = hm__privdir_make(&a, root, &reg->dir, &reg->lock_fd);
  if (HM__ERR_FULL(rc) && reg->tmpfs_default) {
    /* The tmpfs chosen by default has no room even for a directory. */
    reg->tmpfs_default = 0;
    rc = hm__privdir_make(&a, hm__privdir_spill_root(), &reg->dir, &reg->lock_fd);
  }
  if (rc == 0)
    all_add_locked(reg);
  pthread_mutex_unlock(&all_lock);
  if (rc != 0) {
    hm__reclaimer_free(reg->rc);
    pthread_mutex_destroy(&reg->lock);
    hm__free(&a, reg->probe_helper);
    hm__free(&a, reg);
    return rc;
  }
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
    if (refs <= 0) {
      hm__allocator a = v->a;
      if (!forked)
        unlink(v->copy_path);
      hm__free(&a, v->copy_path);
      hm__free(&a, v); /* forked: its mapping is the parent's business */
      continue;
    }
    if (!forked)
      unlink(v->copy_path);
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
    module_destroy(reg, reg->mods[i]);
  hm__free(&reg->a, reg->mods);
  for (i = 0; i < reg->lives.cap; i++) {
    hm_live *l = reg->lives.slots[i].val;
    if (reg->lives.slots[i].key != NULL) {
      hm__free(&reg->a, l->qualified);
      hm__free(&reg->a, l);
    }
  }
  hm__map_free(&reg->lives, &reg->a);
  hm__map_free(&reg->modules, &reg->a);
  hm__free(&reg->a, reg->dir);
  hm__free(&reg->a, reg->spill_dir);
  hm__free(&reg->a, reg->probe_helper);
  pthread_mutex_destroy(&reg->lock);
  hm__free(&a, reg);
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
  all_remove(reg);
  if (reg->forked) {
    free_forked(reg);
    return;
  }
  {
    const hm__watch_ops *ops = __atomic_load_n(&reg->watch_ops, __ATOMIC_ACQUIRE);
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
  hm__privdir_remove(reg->dir, reg->lock_fd);
  if (reg->spill_dir != NULL)
    hm__privdir_remove(reg->spill_dir, reg->spill_lock_fd);
  free_memory(reg);
}

const char *hm_registry_dir(const hm_registry *reg) { return reg ? reg->dir : NULL; }

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

/* ---- Modules --------------------------------------------------------------------------- */

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

static void module_destroy(hm_registry *reg, hm_module *mod) {
  size_t k;
  hm__free(&reg->a, mod->cur_table);
  hm__free(&reg->a, mod->spare);
  for (k = 0; k < mod->nsyms; k++) {
    hm__free(&reg->a, mod->syms[k]);
    hm__free(&reg->a, mod->sigs[k]);
  }
  hm__free(&reg->a, mod->syms);
  hm__free(&reg->a, mod->sigs);
  hm__free(&reg->a, mod->hist);
  if (mod->kept_path != NULL && !reg->forked)
    hm__copy_remove(mod->kept_path); /* it may be the copy of a version kept mapped */
  hm__free(&reg->a, mod->kept_path);
  hm__build_rule_unref(mod->build);
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
    module_destroy(reg, mod);
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

/* ---- Reloading, step by step ----------------------------------------------------------- */

typedef struct reload_job {
  hm_module *mod;
  hm_registry *reg;
  unsigned flags;
  int new_path;      /* the path differs from the module's (a load, or reload_from) */
  char *path;        /* owned, packed (hm__path_pack): where this version comes from */
  unsigned long seq; /* names the private copy */
  hm__version *old;  /* the current version, kept current (and alive) by reload_lock */
  unsigned oldnum;
  hm__version *v;    /* the new version, until published */
  int reused;        /* rollback: v is an older version still loaded, not a new load */
  unsigned target;   /* rollback: the build it goes back to (the top of the history) */
  hm__table *table;  /* prepared: the live slots resolved on the watcher's thread */
  int old_copy;      /* old's private copy is still there (looked at before any lock) */
  unsigned lint;     /* the new version's lint findings (those its policies look for) */
  unsigned nwarn;    /* lint findings to report once the version is current, unless sent */
  unsigned warn_bit[HM__LINT_KINDS]; /* for the module already (job_publish decides) */
  char warn[HM__LINT_KINDS][640];
} reload_job;

/* Is old's private copy still there? It may be gone already (a version that came back by a
 * reused rollback). Asked under reload_lock, which keeps old current, before reg->lock is
 * taken to publish. */
static int copy_present(const hm__version *old) {
  return old != NULL && old->copy_path != NULL && access(old->copy_path, F_OK) == 0;
}

/* The table an unload will publish, made before a version can become current (see
 * hm_module.spare). Under reg->lock. */
static int spare_ready(hm_module *mod) {
  if (mod->spare == NULL && (mod->spare = hm__table_new(mod->reg, NULL, 0)) == NULL)
    return HM_ENOMEM;
  return hm__table_grow(mod->reg, &mod->spare, mod->nsyms);
}

/* Under the module's reload_lock: is the module in the state the caller expects? */
static int job_begin(reload_job *j, const char *path) {
  hm_module *mod = j->mod;
  hm_registry *reg = j->reg;
  char *anchored = NULL;
  int rc = 0;
  /* A path from the host is taken against the current directory now, once (before the
   * lock: it asks the filesystem); the watcher's is the module's own. */
  if (path != NULL && !(j->flags & HM__RELOAD_WATCHER) &&
      (anchored = hm__path_anchor(&reg->a, path, &rc)) == NULL)
    return rc;
  pthread_mutex_lock(&reg->lock);
  j->old = mod->cur;
  j->oldnum = mod->cur != NULL ? mod->cur->num : 0;
  if ((j->flags & HM__RELOAD_REVIVE) && j->old != NULL) {
    rc = hm__fail(HM_EEXIST, "a module named %s is already loaded", mod->name);
  } else if (!(j->flags & HM__RELOAD_REVIVE) && j->old == NULL) {
    rc = hm__fail(HM_ENOMOD, "module %s is not loaded", mod->name);
  } else if ((j->flags & HM__RELOAD_ROLLBACK) &&
             (mod->nhist == 0 || mod->hist[mod->nhist - 1] != j->target)) {
    rc = hm__fail(HM_EAGAIN, "module %s was reloaded while its rollback was prepared; try again",
                  mod->name);
  } else if ((j->flags & HM__RELOAD_WATCHER) && path != NULL && strcmp(path, mod->path) != 0) {
    /* The watcher read a path the module has left meanwhile (hm_module_reload_from); it
     * moves its watch next. */
    rc = hm__fail(HM_EAGAIN, "module %s moved from %s to %s", mod->name, path, mod->path);
  } else if (spare_ready(mod) != 0) {
    rc = hm__fail(HM_ENOMEM, "out of memory loading %s", mod->name);
  } else {
    j->path = anchored != NULL ? anchored : hm__path_dup(&reg->a, mod->path);
    anchored = NULL;
    if (j->path == NULL)
      rc = hm__fail(HM_ENOMEM, "out of memory");
    j->new_path = j->old == NULL || (path != NULL && !(j->flags & HM__RELOAD_WATCHER));
    j->seq = ++reg->seq;
  }
  pthread_mutex_unlock(&reg->lock);
  hm__free(&reg->a, anchored);
  return rc;
}

/* Where a copy goes when the tmpfs chosen by default is full: the spill directory, made
 * now if it is not there yet. 0 with *dir set; 1 if the registry's directory was not chosen
 * that way (nowhere else to go); or the error making it (detail recorded). Made under
 * reg->lock, so a fork() sees it whole (the fork handler closes its lock). */
static int spill_dir(hm_registry *reg, const char **dir) {
  int rc = 1;
  pthread_mutex_lock(&reg->lock);
  if (reg->tmpfs_default) {
    rc = reg->spill_dir != NULL ? 0
                                : hm__privdir_make(&reg->a, hm__privdir_spill_root(),
                                                   &reg->spill_dir, &reg->spill_lock_fd);
    *dir = reg->spill_dir;
  }
  pthread_mutex_unlock(&reg->lock);
  return rc;
}

/* hm__load_bytes into the registry's directory, or into the spill directory when the
 * default tmpfs has no room for the copy. */
static int load_into_privdir(hm_registry *reg, reload_job *j, const hm__file *f,
                             const hm__load_opts *lo, hm__elf_info *elf) {
  char first[512];
  const char *spill = NULL;
  int rc = hm__load_bytes(&reg->a, reg->dir, j->mod->name, j->seq, j->path, f, lo, elf, &j->v),
      src;
  if (!HM__ERR_FULL(rc))
    return rc;
  snprintf(first, sizeof first, "%s", hm_errmsg());
  src = spill_dir(reg, &spill);
  if (src == 0)
    return hm__load_bytes(&reg->a, spill, j->mod->name, j->seq, j->path, f, lo, elf, &j->v);
  if (src < 0) {
    char second[400];
    snprintf(second, sizeof second, "%s", hm_errmsg());
    hm__fail(rc, "%s; and no directory to spill over to: %s", first, second);
  }
  return rc;
}

/* The policy for finding number i (lint.c's order) on `mod`: the first set of the module's
 * for the finding, the module's, the registry's for the finding, the registry's. Under
 * reg->lock. */
static hm_lint_policy lint_policy(const hm_module *mod, unsigned i) {
  const hm_registry *reg = mod->reg;
  if (mod->lint_finding[i] != HM_LINT_DEFAULT)
    return (hm_lint_policy)mod->lint_finding[i];
  if (mod->lint != HM_LINT_DEFAULT)
    return mod->lint;
  if (reg->lint_finding[i] != HM_LINT_DEFAULT)
    return (hm_lint_policy)reg->lint_finding[i];
  return reg->lint;
}

/* Read (unless the watcher did), check, copy and dlopen. The module's constructors run. A
 * rollback that reuses a loaded version has nothing to load. */
static int job_load(reload_job *j, const hm__file *given) {
  hm_registry *reg = j->reg;
  hm__file own;
  hm_module *prev;
  int rc;
  if (j->reused)
    return 0;
  if (given == NULL) {
    /* The hash tells a watcher whether a file is still what was loaded: computed now only
     * while one watches the module; one started later hashes the copy when it asks. */
    unsigned hash = __atomic_load_n(&j->mod->watch_method, __ATOMIC_RELAXED) ? HM__READ_HASH : 0;
    rc = hm__file_read(&reg->a, j->path,
                       (reg->flags & HM__READ_ALLOW_WRITABLE) | HM__READ_PROBE | hash, &own, NULL);
    if (rc != 0)
      return rc;
  }
  {
    unsigned warn_lint = 0, look_lint = 0, warned;
    hm__elf_info elf;
    hm__load_opts lo = {0, NULL, 0};
    hm__probe_req probe;
    const char *syms[HM__PROBE_MAX_SYMS];
    unsigned i;
    pthread_mutex_lock(&reg->lock);
    for (i = 0; i < hm__lint_count(); i++) {
      hm_lint_policy policy = lint_policy(j->mod, i);
      if (policy == HM_LINT_REJECT)
        lo.reject_lint |= hm__lint_bit(i);
      if (policy == HM_LINT_WARN)
        warn_lint |= hm__lint_bit(i);
      if (policy != HM_LINT_OFF)
        look_lint |= hm__lint_bit(i);
    }
    /* Versions that leave destructors behind stay mapped, unless the host does not look. */
    lo.keep_lint = look_lint & HM__LINT_LEAVES_DTORS;
    warned = j->mod->lint_warned;
    if (j->mod->probe == 1 || (j->mod->probe == 0 && (reg->flags & HM_FLAG_PROBE))) {
      memset(&probe, 0, sizeof probe);
      probe.helper = reg->probe_helper; /* set before the probe could be asked for */
      probe.path = j->path;
      probe.timeout_ms = reg->probe_timeout_ms;
      probe.version = j->mod->next_num;
      /* The names live as long as the module; the array may grow meanwhile. */
      for (; probe.nsyms < j->mod->nsyms && probe.nsyms < HM__PROBE_MAX_SYMS; probe.nsyms++)
        syms[probe.nsyms] = j->mod->syms[probe.nsyms];
      probe.syms = syms;
      lo.probe = &probe;
    }
    pthread_mutex_unlock(&reg->lock);
    memset(&elf, 0, sizeof elf);
    prev = hm__module_code_enter(j->mod);
    rc = load_into_privdir(reg, j, given != NULL ? given : &own, &lo, &elf);
    hm__module_code_leave(prev);
    j->lint = elf.lint & look_lint;
    /* The findings' strings point into the bytes: put them in words now, those not sent for
     * the module yet (job_publish looks again, under the lock). */
    for (i = 0; rc == 0 && i < hm__lint_count(); i++) {
      unsigned bit = hm__lint_bit(i);
      char what[512];
      if (!(elf.lint & warn_lint & bit) || (warned & bit) ||
          j->nwarn >= sizeof j->warn / sizeof j->warn[0])
        continue;
      hm__lint_what(&elf, bit, what, sizeof what);
      j->warn_bit[j->nwarn] = bit;
      snprintf(j->warn[j->nwarn++], sizeof j->warn[0], "%s: %s (%s); fix: %s", j->path, what,
               hm__lint_name(bit), hm__lint_fix(bit));
    }
  }
  if (given == NULL)
    hm__file_release(&reg->a, &own);
  if (rc == 0) {
    j->v->mod = j->mod;
    j->v->num = j->mod->next_num;
    j->v->build = ++j->mod->builds;
  }
  return rc;
}

/* Resolve every live slot in the new version, before any hook runs, so a missing symbol
 * rejects it while nothing has changed. From here until publishing, hm_live_get makes sure
 * a slot it adds resolves in the new version too, and completes the incoming table. */
static int job_resolve(reload_job *j) {
  hm_registry *reg = j->reg;
  hm__table *t = j->table;
  int rc;
  /* A prepared reload resumes the table its preparation filled: only slots added since are
   * left to resolve. */
  j->table = NULL;
  if (t == NULL && (t = hm__table_new(reg, j->v, 0)) != NULL)
    t->n = 0;
  if (t == NULL)
    return hm__fail(HM_ENOMEM, "out of memory loading %s", j->path);
  pthread_mutex_lock(&reg->lock);
  j->mod->incoming = j->v;
  j->mod->incoming_table = t;
  pthread_mutex_unlock(&reg->lock);
  rc = hm__table_fill(j->mod, j->path);
  if (rc == 0)
    pthread_mutex_unlock(&reg->lock);
  return rc;
}

/* Typed live handles: the new version must declare the same signatures. A slot typed from
 * here on is checked against the incoming version by hm_live_get_typed itself. */
static int job_check_signatures(reload_job *j) {
  hm_registry *reg = j->reg;
  hm_module *mod = j->mod;
  size_t i;
  for (i = 0;; i++) {
    const char *sym, *sig;
    int rc;
    pthread_mutex_lock(&reg->lock);
    if (i >= mod->nsyms) {
      pthread_mutex_unlock(&reg->lock);
      return 0;
    }
    sym = mod->syms[i]; /* both set once and never freed before the module */
    sig = mod->sigs[i];
    pthread_mutex_unlock(&reg->lock);
    if (sig != NULL && (rc = hm__sig_check(j->v, sym, sig)) != 0)
      return rc;
  }
}

/* The API as function pointers, for modules that do not link the shared library. */
static const hm_module_api module_api = {
    sizeof(hm_module_api), hm_live_get,     hm_live_get_typed, hm_live_enter_fn,
    hm_live_leave_fn,      hm_snapshot_acquire, hm_snapshot_acquire_typed, hm_snapshot_fn,
    hm_snapshot_release,   hm_errmsg};

/* Hand over state: the old version keeps owning it unless the new one adopts it. */
static int job_handover(reload_job *j) {
  hm_module *mod = j->mod, *prev;
  hm__version *old = j->old, *v = j->v;
  hm_load_ctx ctx;
  int hr = HM_LOAD_CONVERTED;
  if ((old == NULL || old->desc == NULL || old->desc->save == NULL) &&
      (v->desc == NULL || v->desc->load == NULL))
    return 0; /* plain modules: no hook, no lock */
  memset(&ctx, 0, sizeof ctx);
  ctx.size = sizeof ctx;
  /* The number job_publish gives it: a reused version still has its old one until then.
   * next_num changes only under reload_lock, which this job holds. */
  ctx.version = j->mod->next_num;
  ctx.rollback = (j->flags & HM__RELOAD_ROLLBACK) != 0;
  ctx.reused = j->reused;
  /* Reused after its successor converted: its unload(0) never ran, so what its globals
   * point to is still its own. */
  ctx.still_owned = j->reused && !v->handed_over;
  ctx.reg = j->reg;
  ctx.api = &module_api;
  pthread_mutex_lock(&mod->hook_lock);
  prev = hm__module_code_enter(mod);
  if (old != NULL && old->desc != NULL && old->desc->save != NULL) {
    ctx.prev = old->desc->save();
    if (ctx.prev != NULL)
      ctx.prev_state_version = old->desc->state_version;
  }
  if (v->desc != NULL && v->desc->load != NULL)
    hr = v->desc->load(&ctx);
  hm__module_code_leave(prev);
  pthread_mutex_unlock(&mod->hook_lock);
  if (hr != HM_LOAD_ADOPTED && hr != HM_LOAD_CONVERTED) {
    /* Refused: its unload hook must not run; the old version keeps its state. */
    v->desc = NULL;
    return hm__fail(HM_EHOOK, "load hook of %s (version %u of %s) %s %d", j->path, ctx.version,
                    mod->name, hr < 0 ? "refused it with" : "returned the unknown answer",
                    hr);
  }
  v->handed_over = 0; /* it owns what it has now, whatever it handed over before */
  if (old != NULL)
    old->handed_over = hr == HM_LOAD_ADOPTED && ctx.prev != NULL;
  return 0;
}

/* ---- Rollback's memory ----------------------------------------------------------------- */

#define HM__HISTORY_MAX 64

/* The reclaimer deletes a kept copy that nothing maps any more: the unlink is a system call
 * that a reload (or a poll) need not wait for. */
typedef struct kept_unlink {
  hm__defer_node node;
  hm__allocator a;
  char *path;
} kept_unlink;

static void kept_unlink_run(void *arg) {
  kept_unlink *k = arg;
  hm__allocator a = k->a;
  hm__copy_remove(k->path); /* its version may be kept mapped */
  hm__free(&a, k->path);
  hm__free(&a, k);
}

/* Forget the kept copy. Under reg->lock. A version still loaded keeps its file until it is
 * unloaded (gdb and perf read it); one already unloaded left it here to delete. */
static void drop_kept(hm_module *mod) {
  hm__version *v;
  kept_unlink *k;
  if (mod->kept_path == NULL)
    return;
  for (v = mod->versions; v != NULL; v = v->next)
    if (v->build == mod->kept_build)
      break;
  /* Still on the list means its unload has not begun (the list goes first, under this
   * lock), so it will see copy_kept cleared and delete its file itself. */
  if (v != NULL) {
    __atomic_store_n(&v->copy_kept, 0, __ATOMIC_RELEASE);
  } else if (mod->reg->rc != NULL && (k = hm__malloc(&mod->reg->a, sizeof *k)) != NULL) {
    k->a = mod->reg->a;
    k->path = mod->kept_path; /* the reclaimer's now */
    mod->kept_path = NULL;
    hm__defer(mod->reg->rc, &k->node, kept_unlink_run, k, 0);
  } else {
    hm__copy_remove(mod->kept_path);
  }
  hm__free(&mod->reg->a, mod->kept_path);
  mod->kept_path = NULL;
  mod->kept_build = 0;
}

/* A reload replaced `old` (NULL on a first load): it joins the history, and its private copy
 * (when `old_copy` says it is still there) becomes the one kept for rollback (the one kept
 * before goes). Under reg->lock. */
static void superseded(hm_module *mod, hm__version *old, int old_copy) {
  hm_registry *reg = mod->reg;
  mod->have_rolled_back = 0;
  drop_kept(mod);
  if (old == NULL)
    return;
  if (mod->nhist == mod->caphist && mod->nhist < HM__HISTORY_MAX) {
    size_t cap = mod->caphist ? mod->caphist * 2 : 4;
    unsigned *h = hm__realloc(&reg->a, mod->hist, cap * sizeof *h);
    if (h != NULL) {
      mod->hist = h;
      mod->caphist = cap;
    }
  }
  if (mod->nhist == mod->caphist && mod->nhist > 0) {
    /* Full (or out of memory): the oldest entry goes. */
    memmove(mod->hist, mod->hist + 1, (mod->nhist - 1) * sizeof *mod->hist);
    mod->nhist--;
  }
  if (mod->nhist < mod->caphist)
    mod->hist[mod->nhist++] = old->build;
  if (old_copy && (mod->kept_path = hm__strdup(&reg->a, old->copy_path)) != NULL) {
    mod->kept_build = old->build;
    __atomic_store_n(&old->copy_kept, 1, __ATOMIC_RELEASE);
  }
}

/* A rollback replaced `old` with the last build of the history: that entry goes, `old` does
 * not join (no redo), and neither copy is kept. The watcher takes old's bytes at the module's
 * path as no change (when their hash is known: see version_hash). Under reg->lock. */
static void rolled_back(hm_module *mod, hm__version *old) {
  if (mod->nhist > 0)
    mod->nhist--;
  drop_kept(mod);
  mod->have_rolled_back = old->id.hashed;
  mod->rolled_back_hash = old->id.hash;
}

/* v's content hash, from its private copy (the bytes that were loaded) if its reload did not
 * compute it. The caller keeps v loaded; no lock held. */
static void version_hash(hm_registry *reg, hm__version *v) {
  hm__file f;
  int known;
  pthread_mutex_lock(&reg->lock);
  known = v->id.hashed;
  pthread_mutex_unlock(&reg->lock);
  if (known || v->copy_path == NULL ||
      hm__file_read(&reg->a, v->copy_path, HM__READ_ALLOW_WRITABLE | HM__READ_HASH, &f, NULL) != 0)
    return;
  pthread_mutex_lock(&reg->lock);
  v->id.hash = f.id.hash;
  v->id.hashed = 1;
  pthread_mutex_unlock(&reg->lock);
  hm__file_release(&reg->a, &f);
}

void hm__hash_current(hm_module *mod) {
  hm_registry *reg = mod->reg;
  hm__version *v;
  pthread_mutex_lock(&reg->lock);
  v = mod->cur;
  if (v == NULL || v->id.hashed) {
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  hm__version_ref(v);
  pthread_mutex_unlock(&reg->lock);
  version_hash(reg, v);
  hm__version_unref(reg, v);
}

/* One warning per finding and module: drop from the job's warnings those the module sent
 * already, and note the ones it sends now. A finding the new version lacks is forgotten, so
 * that it is reported again if it comes back. Under reg->lock. */
static void lint_sent(hm_module *mod, reload_job *j) {
  unsigned i, n = 0, sent = mod->lint_warned & j->lint;
  for (i = 0; i < j->nwarn; i++) {
    if (sent & j->warn_bit[i])
      continue;
    sent |= j->warn_bit[i];
    if (n != i) {
      j->warn_bit[n] = j->warn_bit[i];
      memcpy(j->warn[n], j->warn[i], sizeof j->warn[0]);
    }
    n++;
  }
  j->nwarn = n;
  mod->lint_warned = sent;
}

/* Publish: one atomic store switches every live handle of the module together. Nothing
 * here can fail: the incoming table is complete (every slot added since job_resolve was
 * appended by hm_live_get), and the hooks have run. */
static void job_publish(reload_job *j) {
  hm_module *mod = j->mod;
  hm_registry *reg = j->reg;
  hm__version *v = j->v;
  hm__table *t;
  pthread_mutex_lock(&reg->lock);
  t = mod->incoming_table;
  mod->incoming = NULL;
  mod->incoming_table = NULL;
  /* Atomic: a reused version may be renumbered while a snapshot taken on it earlier reads
   * its number for a message. */
  __atomic_store_n(&v->num, mod->next_num++, __ATOMIC_RELAXED);
  if (j->new_path) {
    hm__free(&reg->a, mod->path);
    mod->path = j->path;
    j->path = NULL;
  }
  if (j->flags & HM__RELOAD_ROLLBACK)
    rolled_back(mod, j->old);
  else
    superseded(mod, j->old, j->old_copy);
  if (!j->reused) {
    v->published = 1;
    v->next = mod->versions;
    mod->versions = v;
    reg->nloaded++;
    lint_sent(mod, j);
  }
  mod->cur = v;
  __atomic_store_n(&mod->cur_num, v->num, __ATOMIC_RELEASE);
  hm__publish(mod, t);
  reg->stats.loads++;
  /* The loader's reference on v becomes its "current" reference. */
  pthread_mutex_unlock(&reg->lock);
}

/* Nothing changed: take back what the reload made, and report it. Called with the module's
 * reload_lock held, and releases it: the incoming version and table are this job's only
 * while it holds the lock (a reload that starts once it is released installs its own). */
static int job_reject(reload_job *j, int rc) {
  hm_registry *reg = j->reg;
  hm__table *t = NULL;
  int report = !(j->flags & HM__RELOAD_WATCHER) ||
               hm__err_is_final(rc);
  char detail[1024];
  pthread_mutex_lock(&reg->lock);
  if (j->v != NULL && j->mod->incoming == j->v) {
    t = j->mod->incoming_table;
    j->mod->incoming = NULL;
    j->mod->incoming_table = NULL;
  }
  if (report)
    reg->stats.rejects++;
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&j->mod->reload_lock);
  /* The refused version's destructors run in the discard and may fail calls of their own:
   * keep the detail of this failure for the event. */
  snprintf(detail, sizeof detail, "%s", hm_errmsg());
  hm__table_discard(t);
  hm__table_discard(j->table);
  if (j->v != NULL && j->reused)
    hm__version_unref(reg, j->v); /* still loaded for whoever pins it */
  else if (j->v != NULL)
    hm__version_discard(reg, j->v);
  hm__free(&reg->a, j->path);
  hm__fail(rc, "%s", detail);
  if (report)
    hm__emit(reg, HM_EVENT_REJECTED, j->mod, j->oldnum, rc);
  return rc;
}

static int reload_job_run(reload_job *j, const char *path, const hm__file *file);

int hm__reload(hm_module *mod, const char *path, const hm__file *file, unsigned flags) {
  reload_job j;
  memset(&j, 0, sizeof j);
  j.mod = mod;
  j.reg = mod->reg;
  j.flags = flags;
  return reload_job_run(&j, path, file);
}

/* Take the module's prepared reload off it, if any. Under reg->lock. */
static reload_job *prepared_take(hm_module *mod) {
  reload_job *p = mod->prepared;
  mod->prepared = NULL;
  return p;
}

/* A prepared reload that will not be published: unloaded now, quietly (its load hook never
 * ran, and nobody was told it would come). No lock held. */
static void prepared_discard(reload_job *p) {
  hm_registry *reg;
  if (p == NULL)
    return;
  reg = p->reg;
  hm__table_discard(p->table);
  hm__version_discard(reg, p->v);
  hm__free(&reg->a, p->path);
  hm__free(&reg->a, p);
}

/* The second half of every reload, under the module's reload_lock with the new version
 * loaded: resolve, check, hand over, publish (or refuse), then the events. Releases
 * reload_lock. */
static int job_complete(reload_job *jp) {
  reload_job j = *jp;
  hm_module *mod = j.mod;
  reload_job *stale = NULL;
  unsigned num;
  int rc = job_resolve(&j);
  if (rc == 0)
    rc = job_check_signatures(&j);
  if (rc == 0)
    rc = job_handover(&j);
  if (rc == 0) {
    job_publish(&j);
    /* A build prepared for the version this one replaced cannot be published any more. */
    pthread_mutex_lock(&j.reg->lock);
    if (mod->prepared != NULL)
      stale = prepared_take(mod);
    pthread_mutex_unlock(&j.reg->lock);
  }
  if (rc != 0)
    return job_reject(&j, rc); /* releases reload_lock */
  /* Once the lock is released another thread may retire and unload the new version. */
  num = j.v->num;
  pthread_mutex_unlock(&mod->reload_lock);
  prepared_discard(stale);
  hm__free(&j.reg->a, j.path); /* NULL when it became the module's path */
  if (j.new_path)
    hm__watch_poke(j.reg); /* a new path (a load, or hm_module_reload_from) is watched too */
  hm__emit(j.reg, (j.flags & HM__RELOAD_ROLLBACK) ? HM_EVENT_ROLLED_BACK : HM_EVENT_LOADED,
           mod, num, 0);
  {
    unsigned i;
    for (i = 0; i < j.nwarn; i++)
      hm__emit_detail(j.reg, HM_EVENT_WARNING, mod, num, 0, j.warn[i]);
  }
  if (j.old != NULL) {
    hm__emit(j.reg, HM_EVENT_RETIRED, mod, j.oldnum, 0);
    /* Dropped only now, so that its UNLOADED event cannot come before RETIRED. */
    hm__version_unref(j.reg, j.old);
  }
  return 0;
}

/* Run a reload job whose mod, reg, flags (and for a reused rollback, v and reused) are set. */
static int reload_job_run(reload_job *jp, const char *path, const hm__file *file) {
  reload_job j = *jp;
  hm_module *mod = j.mod;
  int rc;
  pthread_mutex_lock(&mod->reload_lock);
  rc = job_begin(&j, path);
  if (rc != 0) {
    pthread_mutex_unlock(&mod->reload_lock);
    if (j.reused)
      hm__version_unref(j.reg, j.v);
    return rc;
  }
  /* The build rolled back from stays "no change" for the watcher: its hash is needed. j.old
   * is kept loaded by the reload lock. */
  if (j.flags & HM__RELOAD_ROLLBACK)
    version_hash(j.reg, j.old);
  rc = job_load(&j, file);
  if (rc != 0)
    return job_reject(&j, rc); /* releases reload_lock */
  j.old_copy = !(j.flags & HM__RELOAD_ROLLBACK) && copy_present(j.old);
  return job_complete(&j);
}

/* ---- Prepared reloads (queued mode) ----------------------------------------------------- */

int hm__prepare(hm_module *mod, const char *path, const hm__file *file) {
  hm_registry *reg = mod->reg;
  reload_job *j = hm__calloc(&reg->a, 1, sizeof *j), *prev;
  int rc;
  if (j == NULL)
    return hm__fail(HM_ENOMEM, "out of memory preparing a reload of %s", mod->name);
  j->mod = mod;
  j->reg = reg;
  j->flags = HM__RELOAD_WATCHER;
  pthread_mutex_lock(&mod->reload_lock);
  rc = job_begin(j, path);
  if (rc != 0) {
    pthread_mutex_unlock(&mod->reload_lock);
    hm__free(&reg->a, j);
    return rc;
  }
  rc = job_load(j, file);
  /* Every live slot known now, resolved and type-checked here: a build that lacks one is
   * refused on this thread. The table goes back to the job until the poll resumes it. */
  if (rc == 0 && (rc = job_resolve(j)) == 0) {
    pthread_mutex_lock(&reg->lock);
    j->table = mod->incoming_table;
    mod->incoming = NULL;
    mod->incoming_table = NULL;
    pthread_mutex_unlock(&reg->lock);
    rc = job_check_signatures(j);
  }
  if (rc != 0) {
    rc = job_reject(j, rc); /* releases reload_lock */
    hm__free(&reg->a, j);
    return rc;
  }
  /* Installed before reload_lock goes, so an unload or reload that follows sees it. The
   * current version's copy is looked at here, off the poller's thread; the poll publishes
   * only over that same version. */
  j->old_copy = copy_present(j->old);
  j->old = NULL; /* not kept alive: the poll checks that the version it replaces is current */
  pthread_mutex_lock(&reg->lock);
  prev = prepared_take(mod);
  mod->prepared = j;
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  prepared_discard(prev); /* superseded by the newer build */
  return 0;
}

int hm__prepared_apply(hm_module *mod) {
  hm_registry *reg = mod->reg;
  reload_job *p, j;
  /* Never wait for a load: the lock is held while the watcher prepares a newer build (the
   * read, the copy, dlopen, a probe) or another thread reloads the module. Either replaces
   * what is prepared now; what is left, the next poll publishes. */
  if (pthread_mutex_trylock(&mod->reload_lock) != 0)
    return 1;
  pthread_mutex_lock(&reg->lock);
  p = mod->prepared;
  if (p == NULL) {
    pthread_mutex_unlock(&reg->lock);
    pthread_mutex_unlock(&mod->reload_lock);
    return 1; /* another poller took it, or it was dropped */
  }
  (void)prepared_take(mod);
  /* If it is not published after all, the reclaimer unloads it: not this thread. */
  p->v->discard_later = 1;
  /* Prepared for the version that is current, at the module's path? Numbers are never
   * reused, so a version retired since cannot pass for it. */
  if (mod->cur == NULL || mod->cur->num != p->oldnum || strcmp(p->path, mod->path) != 0) {
    pthread_mutex_unlock(&reg->lock);
    pthread_mutex_unlock(&mod->reload_lock);
    prepared_discard(p);
    return 1;
  }
  j = *p;
  j.old = mod->cur; /* kept current, and alive, by reload_lock */
  pthread_mutex_unlock(&reg->lock);
  hm__free(&reg->a, p);
  return job_complete(&j);
}

void hm__prepared_drop(hm_module *mod, int forked) {
  reload_job *p;
  pthread_mutex_lock(&mod->reg->lock);
  p = prepared_take(mod);
  pthread_mutex_unlock(&mod->reg->lock);
  if (p == NULL)
    return;
  if (!forked) {
    prepared_discard(p);
    return;
  }
  /* A forked child frees memory only: the mapping and the copy are the parent's. */
  {
    hm__allocator a = p->v->a;
    hm__free(&p->reg->a, p->table);
    hm__free(&a, p->v->copy_path);
    hm__free(&a, p->v);
    hm__free(&p->reg->a, p->path);
    hm__free(&p->reg->a, p);
  }
}

static int reload_checks(hm_module *mod, const char *what) {
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "%s: NULL module", what);
  if (hm__in_module_code())
    return hm__refuse_in_module_code(what);
  return hm__check_forked(mod->reg, what);
}

int hm_module_reload(hm_module *mod) {
  int rc = reload_checks(mod, "hm_module_reload");
  return rc != 0 ? rc : hm__reload(mod, NULL, NULL, 0);
}

int hm_module_reload_from(hm_module *mod, const char *path) {
  int rc = reload_checks(mod, "hm_module_reload_from");
  if (rc != 0)
    return rc;
  if (path == NULL || path[0] == '\0')
    return hm__fail(HM_EINVAL, "hm_module_reload_from: empty path");
  return hm__reload(mod, path, NULL, 0);
}

/* The build to go back to, under reg->lock: a loaded version of it (referenced), else the
 * kept copy's path (copied), else HM_ENOPREV. */
static int rollback_target(hm_module *mod, hm__version **reuse, char **kept) {
  hm_registry *reg = mod->reg;
  unsigned want;
  hm__version *v;
  *reuse = NULL;
  *kept = NULL;
  if (mod->cur == NULL)
    return hm__fail(HM_ENOMOD, "module %s is not loaded", mod->name);
  if (mod->nhist == 0)
    return hm__fail(HM_ENOPREV, "module %s has no earlier version to roll back to",
                    mod->name);
  want = mod->hist[mod->nhist - 1];
  for (v = mod->versions; v != NULL; v = v->next) {
    int refs = __atomic_load_n(&v->refs, __ATOMIC_ACQUIRE);
    /* Only while something still holds it: a version whose last reference went is being
     * unloaded already. */
    while (v->build == want && refs > 0) {
      if (__atomic_compare_exchange_n(&v->refs, &refs, refs + 1, 0, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE)) {
        *reuse = v;
        return 0;
      }
    }
  }
  if (mod->kept_path != NULL && mod->kept_build == want) {
    *kept = hm__strdup(&reg->a, mod->kept_path);
    return *kept != NULL ? 0 : hm__fail(HM_ENOMEM, "out of memory rolling back %s", mod->name);
  }
  return hm__fail(HM_ENOPREV,
                  "module %s: the build to roll back to is no longer loaded and its copy was "
                  "not kept (only the version before the current one is)",
                  mod->name);
}

int hm_module_rollback(hm_module *mod) {
  hm_registry *reg;
  reload_job j;
  hm__file f;
  char *kept = NULL;
  int rc = reload_checks(mod, "hm_module_rollback");
  if (rc != 0)
    return rc;
  reg = mod->reg;
  memset(&j, 0, sizeof j);
  memset(&f, 0, sizeof f);
  j.mod = mod;
  j.reg = reg;
  j.flags = HM__RELOAD_ROLLBACK;
  /* The reload lock is taken again by the job; holding it here would deadlock, and the
   * target is re-checked there through the history under the registry lock. */
  pthread_mutex_lock(&reg->lock);
  rc = rollback_target(mod, &j.v, &kept);
  if (rc == 0)
    j.target = mod->hist[mod->nhist - 1];
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0)
    return rc;
  if (j.v != NULL) {
    j.reused = 1;
    return reload_job_run(&j, NULL, NULL);
  }
  /* Loaded again from the kept copy, under a fresh private name (the kept path may still
   * name a mapped object, which dlopen would hand back). */
  rc = hm__file_read(&reg->a, kept, HM__READ_ALLOW_WRITABLE, &f, NULL);
  hm__free(&reg->a, kept);
  if (rc == 0)
    rc = reload_job_run(&j, NULL, &f);
  hm__file_release(&reg->a, &f);
  return rc;
}

int hm_module_unload(hm_module *mod) {
  hm_registry *reg;
  reload_job *stale;
  hm__table *t;
  hm__version *old;
  unsigned oldnum;
  int rc = reload_checks(mod, "hm_module_unload");
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
  mod->cur = NULL;
  stale = prepared_take(mod);
  /* Nothing to roll back to once the module is gone; a load by name starts afresh. */
  drop_kept(mod);
  mod->nhist = 0;
  mod->have_rolled_back = 0;
  __atomic_store_n(&mod->cur_num, 0, __ATOMIC_RELEASE);
  hm__publish(mod, t);
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  prepared_discard(stale);
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
static int set_lint_finding(hm_registry *reg, unsigned char *table, const char *finding,
                            hm_lint_policy policy, const char *what) {
  int k = lint_finding_index(finding, policy, what);
  if (k < 0)
    return k;
  pthread_mutex_lock(&reg->lock);
  table[k] = (unsigned char)policy;
  pthread_mutex_unlock(&reg->lock);
  return 0;
}

int hm_registry_set_lint_finding(hm_registry *reg, const char *finding, hm_lint_policy policy) {
  if (reg == NULL)
    return hm__fail(HM_EINVAL, "hm_registry_set_lint_finding: NULL registry");
  return set_lint_finding(reg, reg->lint_finding, finding, policy,
                          "hm_registry_set_lint_finding");
}

int hm_module_set_lint_finding(hm_module *mod, const char *finding, hm_lint_policy policy) {
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "hm_module_set_lint_finding: NULL module");
  return set_lint_finding(mod->reg, mod->lint_finding, finding, policy,
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

int hm_module_watch_method(const hm_module *mod) {
  return mod ? __atomic_load_n(&mod->watch_method, __ATOMIC_ACQUIRE) : 0;
}
