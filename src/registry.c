/*
 * The registry: modules by name, their versions, the tables live handles read, events,
 * errors and the allocator. Loading is the loader's job; unloading after a grace period is
 * the reclaimer's; the registry decides what is current and tells them.
 *
 * Locks, always taken in this order: a module's reload_lock, then its hook_lock, then
 * reg->lock, then reg->err_lock. No lock is held while the host's callback runs; a module's
 * hooks run under its hook_lock (and its save/load hooks under its reload_lock too), so
 * hooks of one module never overlap.
 */
#include "registry.h"

#include "hotmod/module.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Allocation ------------------------------------------------------------------------ */

void *hm__realloc(const hm__allocator *a, void *ptr, size_t size) {
  if (a->fn != NULL)
    return a->fn(ptr, size, a->userdata);
  if (size == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, size);
}

void *hm__malloc(const hm__allocator *a, size_t size) {
  return hm__realloc(a, NULL, size ? size : 1);
}

void *hm__calloc(const hm__allocator *a, size_t n, size_t size) {
  void *p;
  if (size != 0 && n > (size_t)-1 / size)
    return NULL;
  p = hm__malloc(a, n * size);
  if (p != NULL)
    memset(p, 0, n * size);
  return p;
}

void hm__free(const hm__allocator *a, void *ptr) {
  if (ptr != NULL)
    hm__realloc(a, ptr, 0);
}

char *hm__strdup(const hm__allocator *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = hm__malloc(a, n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}

/* ---- Errors and events ----------------------------------------------------------------- */

void hm__set_error(hm_registry *reg, int err, const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&reg->err_lock);
  if (fmt != NULL) {
    va_start(ap, fmt);
    vsnprintf(reg->errmsg, sizeof reg->errmsg, fmt, ap);
    va_end(ap);
  } else {
    snprintf(reg->errmsg, sizeof reg->errmsg, "%s", hm_strerror(err));
  }
  pthread_mutex_unlock(&reg->err_lock);
}

const char *hm_registry_errmsg(const hm_registry *reg) {
  static __thread char copy[sizeof reg->errmsg];
  hm_registry *r = (hm_registry *)reg; /* the lock is not part of the logical state */
  if (reg == NULL)
    return hm_strerror(HM_EINVAL);
  pthread_mutex_lock(&r->err_lock);
  memcpy(copy, r->errmsg, sizeof copy);
  pthread_mutex_unlock(&r->err_lock);
  return copy;
}

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
    return "leaked (still mapped after dlclose)";
  case HM_EVENT_CHANGED:
    return "changed on disk";
  }
  return "?";
}

void hm__emit(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version, int err) {
  if (reg->on_event != NULL) {
    reg->on_event(ev, mod, version, err, reg->event_userdata);
  } else if (!(reg->flags & HM_FLAG_QUIET)) {
    if (err != 0)
      fprintf(stderr, "hotmod: %s v%u %s: %s (%s)\n", mod->name, version, event_name(ev),
              hm_strerror(err), hm_registry_errmsg(reg));
    else
      fprintf(stderr, "hotmod: %s v%u %s\n", mod->name, version, event_name(ev));
  }
}

/* ---- Registry -------------------------------------------------------------------------- */

static void module_destroy(hm_registry *reg, hm_module *mod);

static int make_private_dir(hm_registry *reg, const char *root) {
  size_t n;
  if (root == NULL || root[0] == '\0')
    root = getenv("TMPDIR");
  if (root == NULL || root[0] == '\0')
    root = "/tmp";
  n = strlen(root) + sizeof "/hotmod-XXXXXX";
  reg->dir = hm__malloc(&reg->a, n);
  if (reg->dir == NULL)
    return HM_ENOMEM;
  snprintf(reg->dir, n, "%s/hotmod-XXXXXX", root);
  /* mkdtemp creates it with mode 0700: only this user can put code into it. */
  if (mkdtemp(reg->dir) == NULL) {
    int rc = -errno;
    hm__free(&reg->a, reg->dir);
    reg->dir = NULL;
    return rc;
  }
  return 0;
}

int hm_registry_new(hm_registry **out, const hm_registry_options *opts) {
  hm_registry_options def = HM_REGISTRY_OPTIONS_INIT;
  hm__allocator a;
  hm_registry *reg;
  int rc;

  if (out == NULL)
    return HM_EINVAL;
  *out = NULL;
  if (opts == NULL)
    opts = &def;
  if (opts->version != HM_REGISTRY_OPTIONS_VERSION)
    return HM_EINVAL;
  if (opts->reload_mode != HM_RELOAD_DEFAULT && opts->reload_mode != HM_RELOAD_IMMEDIATE &&
      opts->reload_mode != HM_RELOAD_QUEUED)
    return HM_EINVAL;
  a.fn = opts->alloc;
  a.userdata = opts->alloc_userdata;
  reg = hm__calloc(&a, 1, sizeof *reg);
  if (reg == NULL)
    return HM_ENOMEM;
  reg->a = a;
  reg->flags = opts->flags;
  reg->on_event = opts->on_event;
  reg->event_userdata = opts->event_userdata;
  reg->reload_mode =
      opts->reload_mode == HM_RELOAD_DEFAULT ? HM_RELOAD_IMMEDIATE : opts->reload_mode;
  reg->quiet_ms = opts->quiet_ms ? opts->quiet_ms : 50;
  rc = make_private_dir(reg, opts->private_root);
  if (rc != 0) {
    hm__free(&a, reg);
    return rc;
  }
  rc = hm__reclaimer_new(&reg->rc, &a);
  if (rc != 0) {
    rmdir(reg->dir);
    hm__free(&a, reg->dir);
    hm__free(&a, reg);
    return rc;
  }
  pthread_mutex_init(&reg->lock, NULL);
  pthread_mutex_init(&reg->err_lock, NULL);
  *out = reg;
  return 0;
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  if (d != NULL) {
    /* Only copies that were still pinned at free time can be left here. */
    while ((e = readdir(d)) != NULL) {
      char p[4096];
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  rmdir(dir);
}

void hm_registry_free(hm_registry *reg) {
  size_t i;
  hm__allocator a;
  if (reg == NULL)
    return;
  if (reg->watch_ops != NULL)
    reg->watch_ops->stop(reg);
  if (reg->watch_reap != NULL)
    reg->watch_reap(reg);
  /* Retire every current version; the reclaimer unloads them once live calls have left. */
  for (i = 0; i < reg->nmods; i++)
    hm_module_unload(reg->mods[i]);
  hm__reclaimer_drain(reg->rc);
  hm__reclaimer_free(reg->rc);
  for (i = 0; i < reg->nmods; i++) {
    hm_module *mod = reg->mods[i];
    /* Versions still pinned by snapshots the host did not release: unload them anyway,
     * as documented; the registry is going away. */
    while (mod->versions != NULL) {
      hm__version *v = mod->versions;
      mod->versions = v->next;
      hm__unload_version(&reg->a, v);
    }
    module_destroy(reg, mod);
  }
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
  remove_dir(reg->dir);
  hm__free(&reg->a, reg->dir);
  pthread_mutex_destroy(&reg->err_lock);
  pthread_mutex_destroy(&reg->lock);
  a = reg->a;
  hm__free(&a, reg);
}

const char *hm_registry_dir(const hm_registry *reg) { return reg ? reg->dir : NULL; }

int hm_registry_stats(hm_registry *reg, hm_stats *out) {
  size_t i;
  unsigned long long current = 0;
  if (reg == NULL || out == NULL)
    return HM_EINVAL;
  pthread_mutex_lock(&reg->lock);
  *out = reg->stats;
  for (i = 0; i < reg->nmods; i++)
    current += reg->mods[i]->cur != NULL;
  out->modules = current;
  out->retired = reg->nloaded - current;
  pthread_mutex_unlock(&reg->lock);
  return 0;
}

/* ---- Tables and versions --------------------------------------------------------------- */

hm__table *hm__table_new(hm_registry *reg, hm__version *v, size_t n) {
  hm__table *t = hm__calloc(&reg->a, 1, sizeof *t + (n ? n : 1) * sizeof(hm_fn));
  if (t == NULL)
    return NULL;
  t->reg = reg;
  t->v = v;
  t->n = n;
  if (v != NULL)
    __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
  return t;
}

static void version_unload_cb(void *arg) {
  hm__version *v = arg;
  hm_module *mod = v->mod;
  hm_registry *reg = mod->reg;
  hm__version **pp;
  unsigned num = v->num;
  int leaked;

  pthread_mutex_lock(&reg->lock);
  for (pp = &mod->versions; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == v) {
      *pp = v->next;
      break;
    }
  }
  pthread_mutex_unlock(&reg->lock);
  if (v->desc != NULL && v->desc->unload != NULL) {
    /* Hooks of one module never overlap: this unload hook waits while a reload of the
     * module is in its save or load hook. Plain modules do not contend for the lock. */
    pthread_mutex_lock(&mod->hook_lock);
    leaked = hm__unload_version(&reg->a, v);
    pthread_mutex_unlock(&mod->hook_lock);
  } else {
    leaked = hm__unload_version(&reg->a, v);
  }
  pthread_mutex_lock(&reg->lock);
  reg->nloaded--;
  reg->stats.unloads++;
  if (leaked)
    reg->stats.leaked++;
  pthread_mutex_unlock(&reg->lock);
  hm__emit(reg, leaked ? HM_EVENT_LEAKED : HM_EVENT_UNLOADED, mod, num, 0);
}

void hm__version_unref(hm_registry *reg, hm__version *v) {
  if (__atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0)
    hm__defer(reg->rc, &v->unload_node, version_unload_cb, v, 0);
}

static void table_free_cb(void *arg) {
  hm__table *t = arg;
  hm_registry *reg = t->reg;
  hm__version *v = t->v;
  hm__free(&reg->a, t);
  if (v != NULL)
    hm__version_unref(reg, v);
}

void hm__publish(hm_module *mod, hm__table *t) {
  hm__table *old = mod->cur_table;
  mod->cur_table = t;
  __atomic_store_n(&mod->table, t->fns, __ATOMIC_SEQ_CST);
  if (old != NULL)
    hm__defer(mod->reg->rc, &old->node, table_free_cb, old, 1);
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
  mod->path = hm__strdup(&reg->a, path);
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
  for (k = 0; k < mod->nsyms; k++)
    hm__free(&reg->a, mod->syms[k]);
  hm__free(&reg->a, mod->syms);
  pthread_mutex_destroy(&mod->reload_lock);
  pthread_mutex_destroy(&mod->hook_lock);
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
    return HM_EINVAL;
  if (!valid_name(name) || path == NULL || path[0] == '\0') {
    hm__set_error(reg, HM_EINVAL, "module name must be 1-255 characters without ':', and the "
                                  "path non-empty");
    return HM_EINVAL;
  }
  pthread_mutex_lock(&reg->lock);
  rc = module_get_or_create(reg, name, path, &mod);
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0) {
    hm__set_error(reg, rc, "out of memory creating module %s", name);
    return rc;
  }
  rc = hm__reload(mod, path, 1);
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
    return HM_EINVAL;
  pthread_mutex_lock(&reg->lock);
  mod = hm__map_get(&reg->modules, name);
  if (mod != NULL && mod->cur == NULL)
    mod = NULL;
  pthread_mutex_unlock(&reg->lock);
  if (mod == NULL) {
    hm__set_error(reg, HM_ENOMOD, "no module named %s", name);
    return HM_ENOMOD;
  }
  *out = mod;
  return 0;
}

/* Reject a new version that was loaded but not published: its load hook did not run or
 * failed, so its unload hook must not run either. */
static void discard_version(hm_registry *reg, hm__version *v) {
  hm_module *mod = v->mod;
  unsigned num = v->num;
  v->desc = NULL;
  if (hm__unload_version(&reg->a, v)) {
    /* A rejected NODELETE object stays mapped all the same: count it, say so. */
    pthread_mutex_lock(&reg->lock);
    reg->stats.leaked++;
    pthread_mutex_unlock(&reg->lock);
    hm__emit(reg, HM_EVENT_LEAKED, mod, num, 0);
  }
}

/* Resolve every live slot's symbol in version v into a new table. Under reg->lock. */
static int build_table(hm_module *mod, hm__version *v, const char *path, hm__table **out,
                       char *err, size_t errlen) {
  hm__table *t = hm__table_new(mod->reg, v, mod->nsyms);
  size_t i;
  if (t == NULL) {
    snprintf(err, errlen, "out of memory");
    return HM_ENOMEM;
  }
  for (i = 0; i < mod->nsyms; i++) {
    void *p = dlsym(v->dl, mod->syms[i]);
    if (p == NULL) {
      snprintf(err, errlen, "%s (new version of module %s) lacks symbol %s, used by a live handle",
               path, mod->name, mod->syms[i]);
      __atomic_sub_fetch(&v->refs, 1, __ATOMIC_RELAXED);
      hm__free(&mod->reg->a, t);
      return HM_ENOSYM;
    }
    /* POSIX guarantees that dlsym's object pointer converts to a function pointer. */
    memcpy(&t->fns[i], &p, sizeof p);
  }
  *out = t;
  return 0;
}

int hm__reload(hm_module *mod, const char *path, int revive) {
  hm_registry *reg = mod->reg;
  hm__version *v = NULL, *old;
  hm__table *t = NULL;
  char err[1024];
  char *pathcopy = NULL;
  unsigned long seq = 0;
  unsigned oldnum = 0, newnum;
  void *prev = NULL;
  int rc = 0, have_old;

  err[0] = '\0';
  pthread_mutex_lock(&mod->reload_lock);
  pthread_mutex_lock(&reg->lock);
  have_old = mod->cur != NULL;
  if (revive && have_old) {
    rc = HM_EEXIST;
    snprintf(err, sizeof err, "a module named %s is already loaded", mod->name);
  } else if (!revive && !have_old) {
    rc = HM_ENOMOD;
    snprintf(err, sizeof err, "module %s is not loaded", mod->name);
  } else {
    pathcopy = hm__strdup(&reg->a, path != NULL ? path : mod->path);
    if (pathcopy == NULL) {
      rc = HM_ENOMEM;
      snprintf(err, sizeof err, "out of memory");
    }
    seq = ++reg->seq;
  }
  old = mod->cur;
  oldnum = old != NULL ? old->num : 0;
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0) {
    pthread_mutex_unlock(&mod->reload_lock);
    hm__set_error(reg, rc, "%s", err);
    return rc;
  }

  /* The slow part (read, check, copy, dlopen) runs without the registry lock, so finds,
   * acquires and other modules' reloads go on meanwhile. */
  rc = hm__load_file(&reg->a, reg->dir, mod->name, seq, pathcopy, reg->flags, &v, err,
                     sizeof err);
  if (rc != 0)
    goto rejected;
  v->mod = mod;
  v->num = mod->next_num;

  pthread_mutex_lock(&reg->lock);
  rc = build_table(mod, v, pathcopy, &t, err, sizeof err);
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0) {
    discard_version(reg, v);
    goto rejected;
  }

  /* Hand over state: the old version keeps owning it until the new one accepts it. */
  pthread_mutex_lock(&mod->hook_lock);
  if (old != NULL && old->desc != NULL && old->desc->save != NULL)
    prev = old->desc->save();
  if (v->desc != NULL && v->desc->load != NULL) {
    int hr = v->desc->load(prev);
    if (hr != 0) {
      pthread_mutex_unlock(&mod->hook_lock);
      rc = HM_EHOOK;
      snprintf(err, sizeof err, "load hook of %s (version %u of %s) failed with %d", pathcopy,
               v->num, mod->name, hr);
      __atomic_sub_fetch(&v->refs, 1, __ATOMIC_RELAXED);
      hm__free(&reg->a, t);
      discard_version(reg, v);
      goto rejected;
    }
    if (old != NULL && prev != NULL)
      old->handed_over = 1;
  }
  pthread_mutex_unlock(&mod->hook_lock);

  /* Publish: one atomic store switches every live handle of the module together. */
  pthread_mutex_lock(&reg->lock);
  mod->next_num++;
  hm__free(&reg->a, mod->path);
  mod->path = pathcopy;
  pathcopy = NULL;
  v->next = mod->versions;
  mod->versions = v;
  mod->cur = v;
  __atomic_store_n(&mod->cur_num, v->num, __ATOMIC_RELEASE);
  /* v may be retired and unloaded by another thread as soon as the locks are released. */
  newnum = v->num;
  hm__publish(mod, t);
  reg->nloaded++;
  reg->stats.loads++;
  /* The loader's reference on v becomes its "current" reference. */
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  {
    /* Atomic: hm_watch_start may install the hooks meanwhile. A new path (a load, or
     * hm_module_reload_from) must be watched too. */
    const hm__watch_ops *ops = __atomic_load_n(&reg->watch_ops, __ATOMIC_ACQUIRE);
    if (ops != NULL && (!have_old || path != NULL))
      ops->module_added(reg, mod);
  }
  hm__emit(reg, HM_EVENT_LOADED, mod, newnum, 0);
  if (old != NULL) {
    hm__emit(reg, HM_EVENT_RETIRED, mod, oldnum, 0);
    /* Dropped only now, so that its UNLOADED event cannot come before RETIRED. */
    hm__version_unref(reg, old);
  }
  return 0;

rejected:
  pthread_mutex_lock(&reg->lock);
  reg->stats.rejects++;
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  hm__set_error(reg, rc, "%s", err);
  hm__free(&reg->a, pathcopy);
  hm__emit(reg, HM_EVENT_REJECTED, mod, oldnum, rc);
  return rc;
}

int hm_module_reload(hm_module *mod) {
  if (mod == NULL)
    return HM_EINVAL;
  return hm__reload(mod, NULL, 0);
}

int hm_module_reload_from(hm_module *mod, const char *path) {
  if (mod == NULL)
    return HM_EINVAL;
  if (path == NULL || path[0] == '\0') {
    hm__set_error(mod->reg, HM_EINVAL, "empty path");
    return HM_EINVAL;
  }
  return hm__reload(mod, path, 0);
}

int hm_module_unload(hm_module *mod) {
  hm_registry *reg;
  hm__table *t;
  hm__version *old;
  unsigned oldnum;
  if (mod == NULL)
    return HM_EINVAL;
  reg = mod->reg;
  pthread_mutex_lock(&mod->reload_lock);
  pthread_mutex_lock(&reg->lock);
  old = mod->cur;
  if (old == NULL) {
    pthread_mutex_unlock(&reg->lock);
    pthread_mutex_unlock(&mod->reload_lock);
    hm__set_error(reg, HM_ENOMOD, "module %s is not loaded", mod->name);
    return HM_ENOMOD;
  }
  /* Live handles of an unloaded module read a table of NULLs. */
  t = hm__table_new(reg, NULL, mod->nsyms);
  if (t == NULL) {
    pthread_mutex_unlock(&reg->lock);
    pthread_mutex_unlock(&mod->reload_lock);
    hm__set_error(reg, HM_ENOMEM, "out of memory unloading %s", mod->name);
    return HM_ENOMEM;
  }
  oldnum = old->num;
  mod->cur = NULL;
  __atomic_store_n(&mod->cur_num, 0, __ATOMIC_RELEASE);
  hm__publish(mod, t);
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  {
    const hm__watch_ops *ops = __atomic_load_n(&reg->watch_ops, __ATOMIC_ACQUIRE);
    if (ops != NULL)
      ops->module_removed(reg, mod);
  }
  hm__emit(reg, HM_EVENT_RETIRED, mod, oldnum, 0);
  hm__version_unref(reg, old);
  return 0;
}

unsigned hm_module_version(const hm_module *mod) {
  return mod ? __atomic_load_n(&mod->cur_num, __ATOMIC_ACQUIRE) : 0;
}

const char *hm_module_name(const hm_module *mod) { return mod ? mod->name : NULL; }

const char *hm_module_path(const hm_module *mod) { return mod ? mod->path : NULL; }
