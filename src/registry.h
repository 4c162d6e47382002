/* The registry's own structures, shared by registry.c, table.c, handles.c, queue.c and the
 * watcher. */
#ifndef HM_REGISTRY_H
#define HM_REGISTRY_H

#include "internal.h"
#include "map.h"

/* What the live handles of a module see: the current version's function for each symbol a
 * live handle uses, in slot order. Replaced whole (never changed in place once published)
 * and freed after a grace period, so a reader that loaded it can finish with it. */
typedef struct hm__table {
  hm_registry *reg;
  hm__version *v; /* holds one reference; NULL for an unloaded module (all fns NULL) */
  size_t n, cap;
  int refs; /* under reg->lock, once published: the module's while it is the current one,
               and one per cell that points to it; the last one frees it after a grace
               period */
  hm__defer_node node;
  hm_fn fns[];
} hm__table;

/* The live handles one version of a module took on another module (its "holder" took them
 * in its load hook: through ctx->api, or hm_live_acquire), all reading one pointer, so that
 * they move together as the host's handles of a module do. While the holder is current (or
 * about to be) the cell follows the target's current table; once the holder is retired it
 * stays on the table it had (frozen: a call still running in the holder, or a snapshot of
 * it, sees the versions it saw), until nothing can call the holder any more (cells.c's
 * sweep): then it points to NULLs (dead) and lets the table go. In a group reload, a cell
 * of an incoming member on another member is bound to that member's incoming version (a
 * copy of its incoming table) until the group publishes. All under reg->lock, except fns,
 * which live calls read. */
typedef struct hm__cell {
  hm_fn *fns;              /* atomic: what its handles' hm_live_enter loads */
  hm__table *t;            /* the table fns belongs to (one reference), NULL once dead */
  hm_fn *nulls;            /* one NULL per slot its handles use: fns once dead */
  size_t nnulls;
  hm_module *target;       /* NULL once detached by hm_registry_free */
  hm__version *holder;
  hm_live *lives;          /* its handles (hm_live.next_c) */
  int dead;
  int bound_in;            /* bound to the target's incoming version of a group reload */
  struct hm__cell *next_h; /* the holder's cells */
  struct hm__cell *next_t, *prev_t; /* the target's cells */
} hm__cell;

struct hm_module {
  hm_registry *reg;
  char *name;
  char *path;            /* packed (hm__path_pack): where the file is, then the path as given
                            and the directory it was taken against; under reg->lock */
  hm_fn *table;          /* atomic: &cur_table->fns[0]; what hm_live_enter loads */
  hm__table *cur_table;  /* under reg->lock */
  hm__version *cur;      /* current version, NULL when unloaded; under reg->lock */
  /* A reload under way, from the moment it starts resolving live slots until it publishes
   * or is refused: the new version, and the table it will publish. A live slot added
   * meanwhile must resolve in the incoming version too, and is appended to incoming_table
   * by whoever adds it (hm__table_fill or hm_live_get), so publishing never has anything
   * left to do that could fail after the hooks ran. Under reg->lock. */
  hm__version *incoming;
  hm__table *incoming_table;
  /* The table of NULLs an unload publishes, made ahead (by the reload that makes a version
   * current, and grown with the slots), so that unloading, and so hm_registry_free, never
   * needs memory it could fail to get. Non-NULL while the module is loaded; under
   * reg->lock. */
  hm__table *spare;
  unsigned cur_num;      /* atomic copy of cur->num (0 when unloaded) */
  unsigned next_num;     /* under reload_lock */
  hm__version *versions; /* versions still loaded, newest first; under reg->lock */
  char **syms;           /* symbol of each live slot; grows under reg->lock, never shrinks */
  char **sigs;           /* its signature (whitespace removed) once a typed handle asked for
                            one, else NULL; set once, under reg->lock */
  size_t nsyms, capsyms;
  unsigned char *borrowed; /* per slot: a handle of hm_live_get uses it (for good) */
  hm_live *owned;        /* owned handles on it that are held (hm_live_acquire, and those of
                            versions' cells until they die); under reg->lock */
  hm__cell *cells;       /* versions' cells on it; under reg->lock */
  struct hm__group *grp; /* the group reload it is a member of, while one runs; under
                            reg->lock and reload_lock */
  char *group;           /* hm_module_set_group's name, or NULL; under reg->lock */
  pthread_mutex_t reload_lock; /* serialises reloads and unloads of the module */
  pthread_mutex_t hook_lock;   /* around the module's descriptor hooks */
  unsigned loaders;            /* hm_module_load calls under way for it; under reg->lock */
  hm_reload_mode mode;         /* watcher: per-module override; under reg->lock */
  hm_lint_policy lint;         /* per-module override; under reg->lock */
  unsigned char lint_finding[HM__LINT_KINDS]; /* per finding (lint.c's order), an
                                                 hm_lint_policy; 0: not set. Under reg->lock */
  unsigned lint_warned; /* findings already sent as warnings, while its versions have them;
                           under reg->lock */
  int probe;                   /* crash containment: 0 as the registry, 1 on, 2 off; under
                                  reg->lock */
  struct hm__job *prepared;    /* queued mode: the build the watcher prepared for
                                  hm_registry_poll (registry.c); under reg->lock */
  int poll_rc;   /* a queued reload failed transiently with this; the watcher retries it.
                    HM__POLL_REGROUP: its group was refused for another member's build; the
                    watcher holds this one's for that member's next */
  int watch_method;            /* atomic: the hm_watch_method in force, 0 when unwatched */
  /* Rollback (all under reg->lock): the builds that were current before this one, oldest
   * first (hm__version.build); the private copy of the last of them, kept; and after a
   * rollback, the bytes it rolled back from, which the watcher takes as no change. */
  unsigned builds; /* loads so far (under reload_lock) */
  unsigned *hist;
  size_t nhist, caphist;
  char *kept_path;
  unsigned kept_build;
  int have_rolled_back;
  uint64_t rolled_back_hash;
  struct hm__build_rule *build; /* hm_module_set_build (buildrule.c); under reg->lock */
  /* Signed builds (signed.c), under reg->lock: the newest timestamp of a signed build that
   * became current (no replay goes back before it), and the signature the kept copy was
   * verified with (rollback checks it again). */
  long long signed_ts;
  struct hm__signed *kept_sig;
  /* What introspection (introspect.c) reports beyond the state above, all under reg->lock:
   * the module's reloads and rollbacks, counted as they publish (reload.c), and what its
   * REJECTED and LEAKED events said (events.c). */
  unsigned long long n_reloads, n_rollbacks, n_rejects;
  long long reject_ns; /* CLOCK_REALTIME of the last refusal; 0: none */
  int reject_err;
  unsigned reject_version; /* the version that served on */
  char *reject_detail;     /* its detail (allocated), or NULL */
  struct hm__kept_rec *kept_recs; /* versions that stay mapped for good, oldest first */
  size_t nkept_recs, capkept_recs;
  unsigned kept_num; /* the number kept_build had when it was last current (history.c) */
};

/* A version that stays mapped for good, as its LEAKED event said (events.c). */
typedef struct hm__kept_rec {
  unsigned num;
  int why; /* hm_mapped */
  unsigned long long bytes;
  long long ns; /* when it was reported (CLOCK_REALTIME) */
} hm__kept_rec;
#define HM__KEPT_RECS_MAX 4096 /* the oldest records go beyond this */

/* What a live handle is: the registry's, shared and kept for good (hm_live_get); the
 * host's own (hm_live_acquire outside a load hook); a version's own (taken in its load
 * hook). */
enum { HM__LIVE_BORROWED = 0, HM__LIVE_HOST = 1, HM__LIVE_VERSION = 2 };

struct hm_live {
  struct hm__live_head head; /* first: hm_live_enter reads it */
  hm_module *mod;
  char *qualified;
  /* Owned handles only (under reg->lock): */
  int kind;     /* HM__LIVE_* */
  int released; /* released (or its version's cell died): no longer on mod->owned */
  size_t slot;  /* its slot in mod's tables (head.slot is 0 once released) */
  char *sig;    /* its signature (whitespace removed), or NULL */
  hm__cell *cell; /* a version's: its holder's cell on mod */
  hm_live *next_owned, *prev_owned; /* mod->owned, while held */
  hm_live *next_c; /* its cell's handles; or, released (the host's), reg->spare_lives */
};

struct hm_snapshot {
  hm_fn fn;
  hm__version *v;
  unsigned num;
  hm_registry *reg; /* not used once the registry is freed (v->orphan) */
  hm__allocator a;  /* a copy: a snapshot released after hm_registry_free frees with it */
};

/* A set of trusted keys for signed builds (signed.c). */
typedef struct hm__keyset hm__keyset;

/* Hooks a control server (control.c) installs in its registry: every event as it is
 * delivered (any thread, no lock of ours held: it only queues), and the server's stop and
 * end, which hm_registry_free calls first and last. */
typedef struct hm__control_ops {
  void (*event)(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version, int err,
                const char *detail);
  void (*stop)(hm_registry *reg);
  void (*destroy)(hm_registry *reg);
} hm__control_ops;

/* Hooks a watcher installs so the registry can tell it about modules without knowing libuv.
 * Each may be called from any thread with no lock held; each only wakes the watcher. */
typedef struct hm__watch_ops {
  void (*changed)(hm_registry *reg); /* modules, paths or queued results changed */
  void (*stop)(hm_registry *reg);
} hm__watch_ops;

struct hm_registry {
  hm__allocator a;
  pthread_mutex_t lock; /* modules, tables, versions, stats, the watcher pointers */
  char *dir;
  int lock_fd; /* flock(LOCK_EX) on dir while the registry lives (privdir.c); -1: a child's */
  /* dir is a tmpfs chosen by default: a copy that finds it full goes to spill_dir instead,
   * a second private directory under $TMPDIR or /tmp made when first needed (locked the
   * same way with spill_lock_fd). Under lock. */
  int tmpfs_default;
  char *spill_dir;
  int spill_lock_fd;
  unsigned flags;
  hm_event_cb on_event;
  void *event_userdata;
  hm_reload_mode reload_mode;
  unsigned quiet_ms;  /* watcher: the timing fallback's quiet period */
  unsigned settle_ms; /* watcher: delay after a finished build, 0 = none */
  hm_lint_policy lint; /* WARN, REJECT or OFF */
  unsigned char lint_finding[HM__LINT_KINDS]; /* per finding, as hm_module's; under lock */
  unsigned probe_timeout_ms;
  unsigned group_ms; /* watcher: how long a group member's build waits for the others */
  char *probe_helper; /* hotmod-probe's path once a probe was asked for; under lock, then
                         never changed */
  hm__map modules; /* name -> hm_module*; removed only when its first load fails */
  hm__map lives;   /* "module:symbol" -> hm_live*, never removed */
  hm_live *spare_lives; /* the host's released handles, kept (an enter through one returns
                           NULL) and reused by hm_live_acquire of the same name */
  /* The sweep of retired versions' cells (cells.c): each retirement of a version that has
   * cells counts in retire_gen; a sweep queued when retire_gen was sweep_covers runs after a
   * grace period that every call into versions retired until then has left. */
  unsigned long retire_gen, sweep_covers;
  int sweep_queued;
  hm__defer_node sweep_node;
  hm_module **mods; /* every module, in creation order (same rule as `modules`) */
  size_t nmods, capmods;
  hm__reclaimer *rc;
  unsigned long seq;  /* names the private copies */
  hm_stats stats;     /* loads, rejects, unloads, leaked */
  unsigned long long nloaded; /* versions mapped now */
  int forked; /* made before a fork() and this is the child: nothing may change or reclaim */
  hm_registry *all_next, *all_prev; /* every registry of the process (fork handling) */
  const hm__watch_ops *watch_ops; /* atomic */
  void *watch;                    /* the running watcher; owned by the watcher */
  /* Watchers stopped without being joined (from their own thread, or from module code):
   * watch_reap joins them, from hm_registry_free or the next start. Under lock. */
  void *watch_stopped;
  void (*watch_reap)(hm_registry *reg);
  /* Profiling mode (HM_FLAG_PROFILE in flags; profile.c): the copies of unloaded versions
   * kept in `dir`, oldest first, their bytes and the cap on them. Under lock. */
  struct hm__prof_copy *prof_old, *prof_new;
  unsigned long long prof_bytes, prof_cap;
  /* Signed builds (signed.c): the trusted keys (NULL: builds load unsigned), replaced whole
   * under lock; `signing` is 1 once there are any (atomic; never 0 again); the policies
   * (HM_SIGNED_*) and how long the watcher waits for a signature. */
  hm__keyset *keys;
  int signing;
  unsigned signed_flags;
  unsigned signed_wait_ms;
  char *name; /* hm_registry_options.name, else the program's name */
  const hm__control_ops *control_ops; /* atomic: set while a control server exists */
  void *control;                      /* that server; control.c's */
};

/* hm_registry_new without what the environment asks of a new registry (registry.c; the
 * public function is envstart.c's). */
HM__HIDDEN int hm__registry_new(hm_registry **out, const hm_registry_options *opts);

/* ---- Tables and versions (table.c) ----------------------------------------------------- */

/* A new table for version `v` (one more reference to it) with n slots, all NULL. */
HM__HIDDEN hm__table *hm__table_new(hm_registry *reg, hm__version *v, size_t n);
HM__HIDDEN void hm__table_discard(hm__table *t);
/* Resolve every live slot of the module that a handle still needs (see slot_needed) in
 * mod->incoming_table's version, appending to that table until it has an entry for every
 * slot the module has (NULL where no handle needs one). dlsym runs without reg->lock (a
 * module constructor may be waiting for it while holding the loader's lock).
 * On success returns 0 with reg->lock HELD. On failure (HM_ENOSYM, HM_ENOMEM, detail
 * recorded) returns with reg->lock not held. */
HM__HIDDEN int hm__table_fill(hm_module *mod, const char *path);
/* `in` without whitespace, however long, in memory from `a` (NULL: out of memory): how
 * signatures are compared. */
HM__HIDDEN char *hm__sig_norm(const hm__allocator *a, const char *in);
/* Does version v declare `want` (normalised) as the signature of `sym`? 0, or HM_ESIG with
 * the detail recorded. dlsym: no lock of ours held. */
HM__HIDDEN int hm__sig_check(const hm__version *v, const char *sym, const char *want);
/* Make room in *tp for n slots (it may move; slots past its old capacity are NULL). Not for
 * a published table. HM_ENOMEM. */
HM__HIDDEN int hm__table_grow(hm_registry *reg, hm__table **tp, size_t n);
/* The same for mod->incoming_table. Under reg->lock. */
HM__HIDDEN int hm__table_reserve(hm_module *mod, size_t n);
/* Publish `t` as the module's table, retiring the old one, and move the cells that follow
 * the module to it. Under reg->lock. */
HM__HIDDEN void hm__publish(hm_module *mod, hm__table *t);
/* Drop a published table's reference; the last one frees it after a grace period. Under
 * reg->lock. */
HM__HIDDEN void hm__table_unref(hm__table *t);
/* Point a cell at `t` (a published table, or a copy of an incoming one), taking a
 * reference and dropping the one on what it pointed to. Under reg->lock. */
HM__HIDDEN void hm__cell_point(hm__cell *c, hm__table *t);
/* A cell nothing can call through any more: its handles read NULLs, its table goes, and
 * they stop constraining their module. Under reg->lock. */
HM__HIDDEN void hm__cell_kill(hm__cell *c);
struct hm__group;
/* Does the held owned handle `l` constrain the next version of its module, in a reload of
 * the group `grp` (NULL: of that module alone)? Under reg->lock. */
HM__HIDDEN int hm__owned_constrains(const hm_live *l, const struct hm__group *grp);
/* A version that will never be published (a refused group): kill its cells, freeing at once
 * the copies of other members' incoming tables they were bound to. Under reg->lock. */
HM__HIDDEN void hm__cells_drop_unpublished(hm__version *v);
/* Take an owned handle off its module's list of held ones. Under reg->lock. */
HM__HIDDEN void hm__owned_unlink(hm_live *l);
/* Kill a version's cells and take them off their targets' lists (hm_registry_free, for a
 * version snapshots still pin: they are freed with it). Under reg->lock. */
HM__HIDDEN void hm__cells_detach(hm__version *v);
/* In a forked child: mark a version's cells dead without touching their tables (whose
 * frees would need the reclaimer). Under reg->lock. */
HM__HIDDEN void hm__cells_forget(hm__version *v);
/* Detach all of a version's cells (killed, off their targets' lists) and return them, to be
 * freed with hm__cells_free once its code cannot run. Under reg->lock. */
HM__HIDDEN hm__cell *hm__cells_take(hm__version *v);
/* Free detached cells and their handles. No lock needed. */
HM__HIDDEN void hm__cells_free(const hm__allocator *a, hm__cell *list);
HM__HIDDEN void hm__version_ref(hm__version *v);
/* Drop a reference to a version; the last one schedules its unload (or, for a version that
 * was never published, discards it). */
HM__HIDDEN void hm__version_unref(hm_registry *reg, hm__version *v);
/* Drop the loader's reference to a version that will not be published: it is unloaded now,
 * without its unload hook, unless a lookup still holds it (then by the last unref) or it
 * is marked discard_later (then on the reclaimer thread). */
HM__HIDDEN void hm__version_discard(hm_registry *reg, hm__version *v);

/* ---- Versions' handles (cells.c) -------------------------------------------------------- */

/* Give `holder`'s handle `l` (its slot set) its cell on `target`: made on first use, following
 * the target's current table, or bound to a copy of its incoming table (`bound_in`: the
 * holder and the target are members of one group reload). HM_ENOMEM, nothing changed.
 * Under reg->lock. */
HM__HIDDEN int hm__cell_add(hm__version *holder, hm_module *target, hm_live *l, int bound_in);
/* v stops being current: its cells stay on what they reach until the sweep lets them go.
 * Under reg->lock. */
HM__HIDDEN void hm__version_retire(hm__version *v);
/* Queue a sweep of retired versions' cells, after a grace period. Under reg->lock. */
HM__HIDDEN void hm__sweep_request(hm_registry *reg);
/* hm_registry_free: every cell of every version let go. Under reg->lock. */
HM__HIDDEN void hm__cells_end(hm_registry *reg);

/* ---- Events (events.c) ----------------------------------------------------------------- */

HM__HIDDEN void hm__emit(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version,
                         int err);
/* The same with the detail hm_event_detail() gives during the callback. */
HM__HIDDEN void hm__emit_detail(hm_registry *reg, hm_event ev, hm_module *mod,
                                unsigned version, int err, const char *detail);
/* HM_EVENT_LEAKED: why the version stays mapped (hm_mapped), the bytes it keeps and the
 * detail in words, which hm_event_mapped() and hm_event_detail() give the callback. */
HM__HIDDEN void hm__emit_mapped(hm_registry *reg, hm_module *mod, unsigned version, int why,
                                unsigned long long bytes, const char *detail);
/* Tell the watcher, if one runs, that modules or their paths changed. No lock held. */
HM__HIDDEN void hm__watch_poke(hm_registry *reg);

/* ---- Profiling mode (profile.c) -------------------------------------------------------- */

/* What profiling mode keeps of unloaded versions' copies by default, MiB. */
#define HM__PROFILE_CAP_MB 1024ULL
/* The registry's flags with HM_FLAG_PROFILE added when HOTMOD_PROFILE=1; *cap gets the cap
 * in bytes (HOTMOD_PROFILE_MAX_MB, else HM__PROFILE_CAP_MB). Read at hm_registry_new. */
HM__HIDDEN unsigned hm__profile_flags(unsigned flags, unsigned long long *cap);
/* Say once per process, on stderr, that profiling mode is on (and where the copies go). */
HM__HIDDEN void hm__profile_announce(const hm_registry *reg);
/* A version was unloaded and stays mapped for profiling: remember its copy (`copy`, now the
 * registry's), and delete the oldest such copies while they take more than the cap. On the
 * reclaimer thread; no lock held. */
HM__HIDDEN void hm__profile_kept(hm_registry *reg, char *copy);
/* Forget the kept copies (memory only: the files stay). */
HM__HIDDEN void hm__profile_free(hm_registry *reg);

/* ---- fork() (fork.c) ------------------------------------------------------------------- */

/* HM_EFORKED (detail recorded) for a registry made before fork(), in the child. */
HM__HIDDEN int hm__check_forked(hm_registry *reg, const char *what);
/* Install the fork handlers (once per process): before a registry's first loader call. */
HM__HIDDEN void hm__fork_handlers_install(void);
/* The list of every registry, which the fork handlers walk: adding one happens between
 * lock and unlock, with whatever must not be split from it by a fork. */
HM__HIDDEN void hm__registries_lock(void);
HM__HIDDEN void hm__registries_unlock(void);
HM__HIDDEN void hm__registries_add_locked(hm_registry *reg);
HM__HIDDEN void hm__registries_remove(hm_registry *reg);

/* ---- Handles (handles.c) --------------------------------------------------------------- */

/* Split "module:symbol" into the module name and the symbol. */
HM__HIDDEN int hm__split_qualified(const char *qualified, char *modname, size_t modlen,
                                   const char **sym);
/* The API as function pointers, for modules that do not link the shared library (what a
 * load hook gets as ctx->api). */
HM__HIDDEN extern const hm_module_api hm__module_api;

/* ---- Reloads (reload.c, history.c, prepared.c) ------------------------------------------ */

#define HM__RELOAD_REVIVE 0x1u  /* a load by name: the module must be unloaded now */
#define HM__RELOAD_WATCHER 0x2u /* on the watcher's behalf: transient failures are not
                                   reported (the watcher retries them), and `path`, if given,
                                   must still be the module's path (HM_EAGAIN otherwise) */
#define HM__RELOAD_ROLLBACK 0x8u /* hm_module_rollback: an older build comes back */
#define HM__POLL_REGROUP 1 /* hm_module.poll_rc: see there */
#define HM__RELOAD_QUIET 0x10u   /* a member of a group: its refusal is reported by the
                                    group, once */
/* Make a new version of `mod` current: from `file` when given (bytes the watcher read and
 * checked), else from `path` (NULL: the module's path). Reports REJECTED itself, except for
 * transient failures with HM__RELOAD_WATCHER. */
HM__HIDDEN int hm__reload(hm_module *mod, const char *path, const hm__file *file,
                          unsigned flags);
/* Make sure the current version's content hash is known (id.hashed), computing it from
 * its private copy if the reload that loaded it skipped it (no watcher then). Best effort:
 * a copy that cannot be read leaves it unknown, which only costs a reload of identical
 * bytes. No lock held; not from module code. (history.c) */
HM__HIDDEN void hm__hash_current(hm_module *mod);
/* Queued mode, on the watcher's thread: load a build (`file`: the bytes it read at `path`)
 * without publishing it (read, check, copy, dlopen, the live slots resolved and their
 * signatures checked) and keep it as the module's prepared reload, replacing and
 * discarding one prepared before. 0, or the error, reported as hm__reload reports it.
 * (prepared.c, as the two below) */
HM__HIDDEN int hm__prepare(hm_module *mod, const char *path, const hm__file *file);
/* The same for a reload or rollback that the control socket asks for in queued mode: the
 * job `j` (allocated, consumed) has mod, reg and flags set, and for a rollback its target
 * (and v and reused when it reuses a loaded version); `path` and `file` as hm__reload's. */
HM__HIDDEN int hm__prepare_job(struct hm__job *j, const char *path, const hm__file *file);
/* A reload asked for (not the watcher's: every failure is reported), from `path` (NULL:
 * the module's path), prepared for the poll. */
HM__HIDDEN int hm__prepare_request(hm_module *mod, const char *path);
/* hm_module_rollback, prepared for the poll (rollback.c). */
HM__HIDDEN int hm__rollback_prepare(hm_module *mod);
/* hm_registry_poll: publish the module's prepared reload (the hooks and the publish, and
 * the live slots added since it was prepared). 0 when published; 1 when there was none, it
 * was prepared for a version no longer current (discarded quietly), or the module is being
 * loaded meanwhile (left for the next poll: no wait); or the error,
 * reported as hm__reload reports it. No lock held. */
HM__HIDDEN int hm__prepared_apply(hm_module *mod);
/* hm_registry_poll, for a module with a prepared reload: publish it, or, if it was prepared
 * in a group (*grouped set), the whole group. As hm__prepared_apply (0 published, 1
 * nothing, or the error), with *published the modules published; a refused group has told
 * the watcher what to retry already. */
HM__HIDDEN int hm__group_poll(hm_module *mod, unsigned *published, int *grouped);
/* Discard the module's prepared reload, if any (forked: free its memory only, in a child
 * after fork()). No lock held. */
HM__HIDDEN void hm__prepared_drop(hm_module *mod, int forked);

/* ---- Signed builds (signed.c) ---------------------------------------------------------- */

/* The trusted keys a new registry starts with: `opt` (hm_registry_options.trusted_keys) if
 * not NULL, else the files HOTMOD_TRUSTED_KEYS names, else none (*out NULL). 0, or the error
 * (-ENOTSUP without libsodium, HM_EINVAL, HM_EACCES, HM_ENOENT ...) with the detail. */
HM__HIDDEN int hm__keys_load(const hm__allocator *a, const char *const *opt, hm__keyset **out);
/* Drop the registry's keys (hm_registry_free, a failed hm_registry_new). */
HM__HIDDEN void hm__keys_free(hm_registry *reg);
/* 1 when f's signature (read with it) verifies f's bytes with one of the registry's keys;
 * nothing recorded, no policy applied: the watcher's look at a signature older than its
 * build (the previous build's, or deployed first?). */
HM__HIDDEN int hm__signed_verifies(hm_registry *reg, const hm__file *f);

/* ---- Modules (module.c) ---------------------------------------------------------------- */

/* Free a module and what it owns (hm_registry_free, or a first load that failed). */
HM__HIDDEN void hm__module_destroy(hm_registry *reg, hm_module *mod);
/* Store `policy` for the lint finding called `finding` in a registry's or a module's table
 * of policies (reg->lint_finding, mod->lint_finding). HM_EINVAL naming the findings for an
 * unknown one; `what` names the caller in the message. */
HM__HIDDEN int hm__lint_finding_set(hm_registry *reg, unsigned char *table,
                                    const char *finding, hm_lint_policy policy,
                                    const char *what);

#endif
