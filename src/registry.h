/* The registry's own structures, shared by registry.c, handles.c and watch.c. */
#ifndef HM_REGISTRY_H
#define HM_REGISTRY_H

#include "internal.h"
#include "map.h"

/* What the live handles of a module see: the current version's function for each symbol a
 * live handle uses, in slot order. Replaced whole (never changed in place) and freed after a
 * grace period, so a reader that loaded it can finish with it. */
typedef struct hm__table {
  hm_registry *reg;
  hm__version *v; /* holds one reference; NULL for an unloaded module (all fns NULL) */
  size_t n;
  hm__defer_node node;
  hm_fn fns[];
} hm__table;

struct hm_module {
  hm_registry *reg;
  char *name;
  char *path;            /* under reg->lock */
  hm_fn *table;          /* atomic: &cur_table->fns[0]; what hm_live_enter loads */
  hm__table *cur_table;  /* under reg->lock */
  hm__version *cur;      /* current version, NULL when unloaded; under reg->lock */
  unsigned cur_num;      /* atomic copy of cur->num (0 when unloaded) */
  unsigned next_num;     /* under reload_lock */
  hm__version *versions; /* versions still loaded, newest first; under reg->lock */
  char **syms;           /* symbol of each live slot; changed under reload_lock + reg->lock */
  size_t nsyms, capsyms;
  pthread_mutex_t reload_lock; /* serialises reloads, unload and new live slots */
  pthread_mutex_t hook_lock;   /* around the module's descriptor hooks */
  unsigned loaders;            /* hm_module_load calls under way for it; under reg->lock */
  hm_reload_mode mode;         /* watcher: per-module override; under reg->lock */
  int pending;                 /* watcher queued a reload; under reg->lock */
  void *watch;                 /* the watcher's per-module state; owned by watch.c */
};

struct hm_live {
  struct hm__live_head head; /* first: hm_live_enter reads it */
  hm_module *mod;
  char *qualified;
};

struct hm_snapshot {
  hm_fn fn;
  hm__version *v;
  hm_registry *reg;
};

/* Hooks a watcher installs so the registry can tell it about modules without knowing libuv. */
typedef struct hm__watch_ops {
  void (*module_added)(hm_registry *reg, hm_module *mod);
  void (*module_removed)(hm_registry *reg, hm_module *mod);
  void (*stop)(hm_registry *reg);
} hm__watch_ops;

struct hm_registry {
  hm__allocator a;
  pthread_mutex_t lock; /* modules, tables, versions, stats */
  pthread_mutex_t err_lock;
  char *dir;
  unsigned flags;
  hm_event_cb on_event;
  void *event_userdata;
  hm_reload_mode reload_mode;
  unsigned quiet_ms;
  hm__map modules; /* name -> hm_module*; removed only when its first load fails */
  hm__map lives;   /* "module:symbol" -> hm_live*, never removed */
  hm_module **mods; /* every module, in creation order (same rule as `modules`) */
  size_t nmods, capmods;
  hm__reclaimer *rc;
  unsigned long seq;  /* names the private copies */
  hm_stats stats;     /* loads, rejects, unloads, leaked */
  unsigned long long nloaded; /* versions mapped now */
  char errmsg[1024];
  const hm__watch_ops *watch_ops; /* under lock */
  void *watch;                    /* the watcher's state; owned by watch.c */
  /* A watcher stopped from its own thread, still finishing: joined by watch_reap (set by
   * watch.c) in hm_registry_free or the next hm_watch_start. Under lock. */
  void *watch_stopped;
  void (*watch_reap)(hm_registry *reg);
};

/* Split "module:symbol" into the module (looked up under reg->lock) and the symbol. */
HM__HIDDEN int hm__split_qualified(const char *qualified, char *modname, size_t modlen,
                                   const char **sym);
/* Publish `t` as the module's table, retiring the old one. Under reg->lock. */
HM__HIDDEN void hm__publish(hm_module *mod, hm__table *t);
/* A new table for version `v` (one more reference to it) with n slots. Under reg->lock. */
HM__HIDDEN hm__table *hm__table_new(hm_registry *reg, hm__version *v, size_t n);
/* Drop a reference to a version; the last one schedules its unload. */
HM__HIDDEN void hm__version_unref(hm_registry *reg, hm__version *v);
/* Reload from `path` (NULL: the module's path). `revive`: the module must be unloaded (a
 * load by name); otherwise it must be loaded. */
HM__HIDDEN int hm__reload(hm_module *mod, const char *path, int revive);

#endif
