/*
 * hotmod — load shared-object modules and swap in new versions while the host runs.
 *
 * This header is the specification of the public API. Every function states what it does,
 * who owns what, how NULL is treated, whether it may be called from several threads, and
 * which error codes it returns.
 *
 * The model in three sentences: a registry owns modules; each module is a name bound to the
 * path of a .so file and has a current version (1, 2, 3 ...). A stable snapshot pins one
 * version of one symbol until it is released; a live handle runs the module's current
 * version on every call. A reload turns the file into the next version in one atomic step,
 * or fails and changes nothing.
 *
 * Copyright (c) 2026 the hotmod authors. MIT licence, see LICENSE.
 */
#ifndef HOTMOD_H
#define HOTMOD_H

#include <errno.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Versions -------------------------------------------------------------------------- */

#define HM_VERSION_MAJOR 0
#define HM_VERSION_MINOR 1
#define HM_VERSION_PATCH 0
#define HM_VERSION_HEX ((HM_VERSION_MAJOR << 16) | (HM_VERSION_MINOR << 8) | HM_VERSION_PATCH)

#if defined(__GNUC__)
#define HM_EXTERN __attribute__((visibility("default")))
#else
#define HM_EXTERN
#endif

/* HM_VERSION_HEX of the library the program runs against (which may differ from the header
 * it was compiled with). Thread-safe. */
HM_EXTERN unsigned hm_version(void);

/* The same as a static string, "major.minor.patch". Thread-safe. */
HM_EXTERN const char *hm_version_string(void);

/* ---- Errors ---------------------------------------------------------------------------- */

/* Every fallible function returns 0 on success or one of these negative codes. Codes that
 * match an errno value are that value negated, so -errno from a system call can be passed
 * through as it is. XX(name, value, text). */
#define HM_ERRNO_MAP(XX)                                                                       \
  XX(EINVAL, -EINVAL, "invalid argument")                                                      \
  XX(ENOMEM, -ENOMEM, "out of memory")                                                         \
  XX(ENOENT, -ENOENT, "no such file or directory")                                             \
  XX(EACCES, -EACCES, "permission denied")                                                     \
  XX(EEXIST, -EEXIST, "name already taken")                                                    \
  XX(EIO, -EIO, "i/o error")                                                                   \
  XX(EAGAIN, -EAGAIN, "file is still being written, try again")                                \
  XX(EBUSY, -EBUSY, "resource busy")                                                           \
  XX(EALREADY, -EALREADY, "already running")                                                   \
  XX(ENOTSUP, -ENOTSUP, "operation not supported")                                             \
  XX(ENOTELF, -30001, "not an ELF shared object for this machine")                             \
  XX(EBADELF, -30002, "file incomplete or corrupt")                                            \
  XX(EDLOPEN, -30003, "dlopen failed")                                                         \
  XX(ENOMOD, -30004, "no such module")                                                         \
  XX(ENOSYM, -30005, "no such symbol")                                                         \
  XX(EHOOK, -30006, "module hook failed")                                                      \
  XX(EABI, -30007, "module built for an incompatible hotmod ABI")                              \
  XX(EUNCHANGED, -30008, "file unchanged, no new version")

typedef enum hm_errno {
#define HM__ERR_ENUM(name, value, text) HM_##name = (value),
  HM_ERRNO_MAP(HM__ERR_ENUM)
#undef HM__ERR_ENUM
  HM_ERRNO_MAX_ = -30100
} hm_errno;

/* Static English text for an error code ("unknown error" for codes not in the table).
 * Never NULL; never freed. Thread-safe. */
HM_EXTERN const char *hm_strerror(int err);

/* The code's name, e.g. "HM_ENOSYM" ("HM_UNKNOWN" for others). Static; thread-safe. */
HM_EXTERN const char *hm_err_name(int err);

/* ---- Types ----------------------------------------------------------------------------- */

typedef struct hm_registry hm_registry; /* opaque; created by hm_registry_new */
typedef struct hm_module hm_module;     /* opaque; owned by its registry */
typedef struct hm_snapshot hm_snapshot; /* opaque; owned by the caller until released */
typedef struct hm_live hm_live;         /* opaque; owned by its registry, valid until it is freed */

/* A generic function pointer. Cast it to the function's real type to call it. */
typedef void (*hm_fn)(void);

/* What the host's event callback is told. */
typedef enum hm_event {
  HM_EVENT_LOADED = 1, /* a version became current (first load or successful reload) */
  HM_EVENT_REJECTED,   /* a new file was refused; err says why; the old version serves on */
  HM_EVENT_RETIRED,    /* a version stopped being current; it stays mapped while in use */
  HM_EVENT_UNLOADED,   /* a retired version was unloaded and its private copy deleted */
  HM_EVENT_LEAKED,     /* dlclose returned but the version stayed mapped (NODELETE and the like) */
  HM_EVENT_CHANGED     /* the watcher saw the module's file change (issue 4's watcher) */
} hm_event;

/* The host's event callback. Runs on the thread that caused the event: the caller of the
 * API, the registry's reclaimer thread (RETIRED is on the caller's, UNLOADED and LEAKED on the
 * reclaimer's) or the watcher's thread. `mod` is valid for the duration of the call; `version`
 * is the version the event is about; `err` is 0 or the error of a REJECTED event. The
 * callback must not call hm_registry_free; it may call any other function of the registry. */
typedef void (*hm_event_cb)(hm_event ev, hm_module *mod, unsigned version, int err,
                            void *userdata);

/* Allocator hook, shaped like realloc: (NULL, n) allocates, (p, n) resizes, (p, 0) frees and
 * returns NULL. Used for every allocation the registry makes. */
typedef void *(*hm_alloc_fn)(void *ptr, size_t size, void *userdata);

/* Registry flags. */
#define HM_FLAG_ALLOW_WRITABLE 0x1u /* load files that other users may write to (unsafe) */
#define HM_FLAG_QUIET 0x2u          /* no default one-line event log on stderr */

/* Reload modes for the file watcher. */
typedef enum hm_reload_mode {
  HM_RELOAD_DEFAULT = 0,   /* per module: follow the registry; per registry: immediate */
  HM_RELOAD_IMMEDIATE = 1, /* the watcher reloads as soon as the file is complete */
  HM_RELOAD_QUEUED = 2     /* the watcher marks the module; hm_registry_poll applies it */
} hm_reload_mode;

#define HM_REGISTRY_OPTIONS_VERSION 1

/* Options for hm_registry_new. Start from HM_REGISTRY_OPTIONS_INIT so new fields keep their
 * defaults when the struct grows. Strings are copied; nothing here is kept by reference
 * except the callbacks and their userdata. */
typedef struct hm_registry_options {
  unsigned version;         /* HM_REGISTRY_OPTIONS_VERSION */
  unsigned flags;           /* HM_FLAG_... */
  const char *private_root; /* where the private directory is made; NULL: $TMPDIR or /tmp */
  hm_alloc_fn alloc;        /* NULL: the C library's realloc/free */
  void *alloc_userdata;
  hm_event_cb on_event; /* NULL: one line per event on stderr (unless HM_FLAG_QUIET) */
  void *event_userdata;
  hm_reload_mode reload_mode; /* for the watcher; HM_RELOAD_DEFAULT is immediate */
  unsigned quiet_ms;          /* watcher: quiet period before a file counts as settled; 0: 50 */
} hm_registry_options;

#define HM_REGISTRY_OPTIONS_INIT                                                               \
  { HM_REGISTRY_OPTIONS_VERSION, 0, NULL, NULL, NULL, NULL, NULL, HM_RELOAD_DEFAULT, 0 }

/* Counters of a registry, for monitoring and tests. */
typedef struct hm_stats {
  unsigned long long loads;    /* versions that became current */
  unsigned long long rejects;  /* files or hooks refused */
  unsigned long long unloads;  /* versions unloaded with their copy removed */
  unsigned long long leaked;   /* versions that dlclose did not unmap */
  unsigned long long retired;  /* versions retired but not yet unloaded (now) */
  unsigned long long modules;  /* modules with a current version (now) */
} hm_stats;

/* ---- Registry -------------------------------------------------------------------------- */

/* Create a registry: its private directory (mode 0700, made with mkdtemp) and its reclaimer
 * thread. `opts` may be NULL for defaults; it is read during the call only.
 * On success *out is owned by the caller and freed with hm_registry_free.
 * Thread-safe. Errors: HM_EINVAL (out NULL, bad options version), HM_ENOMEM, or the errno of
 * the failed directory creation (HM_EACCES, HM_ENOENT ...). */
HM_EXTERN int hm_registry_new(hm_registry **out, const hm_registry_options *opts);

/* Stop the watcher, unload every version, delete the private directory and free the
 * registry. Waits for live calls still running to return (any registry's: see
 * hm_live_enter), so it must not be called from inside a live call, nor from the event
 * callback. Every snapshot must have been released before: a snapshot still held becomes
 * invalid. Live handles and module pointers become invalid. NULL is a no-op. Must not run
 * concurrently with other calls on `reg`. A child process after fork() must not use a
 * registry made before the fork (its reclaimer thread did not come along). */
HM_EXTERN void hm_registry_free(hm_registry *reg);

/* The detail of the last failure of any call on this registry: the path, the dlerror() text,
 * the missing symbol. Returns a copy owned by the calling thread, valid until this thread
 * calls hm_registry_errmsg again. "" when nothing failed yet; "invalid argument" for NULL.
 * Thread-safe. */
HM_EXTERN const char *hm_registry_errmsg(const hm_registry *reg);

/* The registry's private directory (borrowed; valid until hm_registry_free). Thread-safe. */
HM_EXTERN const char *hm_registry_dir(const hm_registry *reg);

/* Fill *out with the registry's counters. Thread-safe. Errors: HM_EINVAL. */
HM_EXTERN int hm_registry_stats(hm_registry *reg, hm_stats *out);

/* ---- Modules --------------------------------------------------------------------------- */

/* Load the file at `path` as version 1 of a new module called `name` (no ':' allowed).
 * The file is checked (regular, not writable by others, a complete ELF shared object for
 * this machine), copied into the private directory and loaded from the copy with
 * dlopen(RTLD_NOW | RTLD_LOCAL). `name` and `path` are copied. If a module of that name was
 * unloaded with hm_module_unload, it comes back under the same name with its next version
 * number and its live handles work again.
 * On success, if `out` is not NULL, *out is a borrowed pointer owned by the registry, valid
 * until hm_registry_free. Thread-safe.
 * Errors: HM_EINVAL, HM_EEXIST (a loaded module has that name), HM_ENOENT, HM_EACCES,
 * HM_ENOTELF, HM_EBADELF, HM_EAGAIN (the file changed while it was read), HM_EDLOPEN, HM_EABI,
 * HM_EHOOK, HM_EIO, HM_ENOMEM. On error nothing is created. */
HM_EXTERN int hm_module_load(hm_registry *reg, const char *name, const char *path,
                             hm_module **out);

/* Find a loaded module by name. *out is borrowed (see hm_module_load). Thread-safe.
 * Errors: HM_EINVAL, HM_ENOMOD. */
HM_EXTERN int hm_module_find(hm_registry *reg, const char *name, hm_module **out);

/* Load the file at the module's path now as its next version, and make it current for all
 * of the module's live handles in one atomic step. Every symbol a live handle of the module
 * uses must be in the new version. The old version is retired: it stays mapped while a
 * snapshot pins it or a live call is still inside it, then it is unloaded by the registry.
 * On any error the module, its current version, its state and every handle are unchanged.
 * Thread-safe; reloads of one module are serialised.
 * Errors: as hm_module_load except HM_EEXIST, plus HM_ENOSYM (a live handle's symbol is
 * missing), HM_ENOMOD (the module was unloaded) and HM_EUNCHANGED is never returned here:
 * an identical file still becomes a new version. */
HM_EXTERN int hm_module_reload(hm_module *mod);

/* Like hm_module_reload, but load the file at `path`, which becomes the module's path.
 * Thread-safe. Errors: as hm_module_reload. */
HM_EXTERN int hm_module_reload_from(hm_module *mod, const char *path);

/* Retire the module's current version and take the name out of use: hm_module_find fails,
 * live handles of the module return NULL from hm_live_enter, snapshots keep working until
 * released. The module pointer stays valid. Thread-safe. Errors: HM_EINVAL, HM_ENOMOD
 * (already unloaded), HM_ENOMEM (nothing changed). */
HM_EXTERN int hm_module_unload(hm_module *mod);

/* The current version number: 1 after the first load, +1 per successful reload; 0 for NULL
 * or an unloaded module. Thread-safe. */
HM_EXTERN unsigned hm_module_version(const hm_module *mod);

/* The module's name and source path, borrowed. The name is valid until hm_registry_free. The
 * path is valid until the module's path changes (hm_module_reload_from, or hm_module_load
 * of an unloaded module with another path), which frees it: copy it if that may happen,
 * on this thread or another. NULL for a NULL module. */
HM_EXTERN const char *hm_module_name(const hm_module *mod);
HM_EXTERN const char *hm_module_path(const hm_module *mod);

/* ---- Stable snapshots ------------------------------------------------------------------ */

/* Pin the current version of "module:symbol" and return its function. The snapshot keeps
 * calling exactly that version, across any number of reloads, until it is released: the
 * version stays loaded, callable and unchanged. On success *out is owned by the caller and
 * must be released with hm_snapshot_release before hm_registry_free. Thread-safe.
 * Errors: HM_EINVAL (NULL, no ':' in the name), HM_ENOMOD, HM_ENOSYM, HM_ENOMEM. */
HM_EXTERN int hm_snapshot_acquire(hm_registry *reg, const char *qualified, hm_snapshot **out);

/* The pinned version's function: a plain C function pointer, valid until the snapshot is
 * released. NULL for NULL. Thread-safe. */
HM_EXTERN hm_fn hm_snapshot_fn(const hm_snapshot *snap);

/* The pinned version's number (0 for NULL). Thread-safe. */
HM_EXTERN unsigned hm_snapshot_version(const hm_snapshot *snap);

/* Release the snapshot; its version is unloaded once nothing else uses it. NULL is a no-op.
 * Thread-safe; each snapshot is released once. */
HM_EXTERN void hm_snapshot_release(hm_snapshot *snap);

/* ---- Live handles ---------------------------------------------------------------------- */

/* Get the live handle of "module:symbol", creating it the first time (the same handle is
 * returned for the same name). The symbol must exist in the module's current version, and
 * from then on every new version must export it too or its reload is rejected.
 * *out is owned by the registry and valid until hm_registry_free. Thread-safe.
 * Errors: HM_EINVAL, HM_ENOMOD, HM_ENOSYM, HM_ENOMEM. */
HM_EXTERN int hm_live_get(hm_registry *reg, const char *qualified, hm_live **out);

/* hm_live_enter starts a call and returns the current version's function (NULL if the module
 * was unloaded); hm_live_leave ends it. Until the matching leave, the version returned stays
 * mapped, even if a reload replaces it meanwhile. Pairs nest on a thread, and a thread may
 * be inside calls of several handles at once. No locks, no shared writes: the cost is a few
 * thread-local instructions. Any thread may call them; a thread registers itself on its first
 * call and unregisters when it exits. Do not keep the returned pointer after leave.
 * A call may block as long as it likes: reloads and other callers go on. While it lasts, no
 * version retired after it started is unloaded, in any registry of the process (grace
 * periods are process-wide, as in RCU); they all go within milliseconds after it returns.
 * Versions whose last user is a snapshot are unloaded when it is released, regardless.
 * Not async-signal-safe: do not make live calls from a signal handler. */
static inline hm_fn hm_live_enter(hm_live *live);
static inline void hm_live_leave(hm_live *live);

/* Call a live handle like a C function: HM_LIVE_CALL(live, double (*)(double), 2.0).
 * `live` is evaluated more than once. Needs GCC or Clang. For functions returning void use
 * HM_LIVE_CALL_VOID. It does not check for NULL: if the module may have been unloaded
 * (hm_module_unload), use hm_live_enter and test the pointer. */
#define HM_LIVE_CALL(live, type, ...)                                                          \
  __extension__({                                                                              \
    __typeof__(((type)0)(__VA_ARGS__)) hm__r_ = ((type)hm_live_enter(live))(__VA_ARGS__);      \
    hm_live_leave(live);                                                                       \
    hm__r_;                                                                                    \
  })
#define HM_LIVE_CALL_VOID(live, type, ...)                                                     \
  do {                                                                                         \
    ((type)hm_live_enter(live))(__VA_ARGS__);                                                  \
    hm_live_leave(live);                                                                       \
  } while (0)

/* The live handle's module (borrowed). Thread-safe. */
HM_EXTERN hm_module *hm_live_module(const hm_live *live);

/* Out-of-line versions of enter/leave, for bindings and compilers without GNU extensions. */
HM_EXTERN hm_fn hm_live_enter_fn(hm_live *live);
HM_EXTERN void hm_live_leave_fn(hm_live *live);

/* ---- Watching and queued reloads ------------------------------------------------------- */

/* The watcher follows the file of every loaded module: those loaded before it starts and
 * after. A module unloaded with hm_module_unload stops being watched, and is watched again
 * when it is loaded again; hm_module_reload_from moves the watch to the new path. It watches
 * the directory of each path as the path was given (a relative path is taken against the
 * current directory when the watch is made; for a path that is a symlink, only a change of
 * the link itself is seen), so a build that renames a new file over the old one is seen.
 *
 * A new build is taken once it is complete: at once when its writer closes it or it is
 * renamed into place and it is a complete ELF shared object; failing that, once its size and
 * mtime have not changed for the registry's quiet_ms. A file still being written is never
 * loaded. A file whose bytes equal the current version's is no change (touching it,
 * rewriting the same bytes). A file still incomplete after the quiet period is refused
 * (HM_EVENT_REJECTED; the same bytes are not refused twice) and the current version serves
 * on. A deleted file also leaves the current version serving; the next file to appear at the
 * path is taken. For each change it takes the watcher sends HM_EVENT_CHANGED, then by the
 * module's reload mode either reloads the module at once on the watcher's thread
 * (HM_RELOAD_IMMEDIATE; LOADED or REJECTED follow there) or marks it for hm_registry_poll
 * (HM_RELOAD_QUEUED). */

/* Start the watcher on a thread and a libuv loop of the registry's own (to run it on the
 * host's loop instead, see hm_watch_attach in hotmod/uv.h). Thread-safe.
 * Errors: HM_EINVAL, HM_EALREADY (a watcher runs), HM_ENOMEM, or a libuv or system error,
 * passed through as the negative errno value it is (e.g. -EMFILE: no inotify instance). */
HM_EXTERN int hm_watch_start(hm_registry *reg);

/* Stop the watcher started by hm_watch_start or hm_watch_attach (hotmod/uv.h), waiting for
 * its thread to finish (a reload under way completes first). Queued reloads stay queued.
 * NULL, or no watcher running: a no-op. Thread-safe, except that a watcher attached to a
 * host loop must be stopped on that loop's thread. From the event callback on the watcher's
 * own thread it does not wait: no reload starts after the call and the thread ends by
 * itself. hm_registry_free calls it. */
HM_EXTERN void hm_watch_stop(hm_registry *reg);

/* Set one module's reload mode (HM_RELOAD_DEFAULT: follow the registry). It applies to the
 * changes the watcher sees from then on; a reload already queued stays queued. Thread-safe.
 * Errors: HM_EINVAL (NULL module, unknown mode). */
HM_EXTERN int hm_module_set_reload_mode(hm_module *mod, hm_reload_mode mode);

/* Apply the reloads the watcher queued for modules in HM_RELOAD_QUEUED mode, each from its
 * file as it is now. Returns how many modules got a new version (>= 0); a queued file that is
 * refused counts as applied-and-rejected (not counted; its REJECTED event is sent). A queued
 * change whose file went back to the current version's bytes is dropped. Call it at a safe
 * point of the host. Thread-safe. Errors: HM_EINVAL. */
HM_EXTERN int hm_registry_poll(hm_registry *reg);

/* ---- Internals the inline fast path needs (not API: do not use directly) ---------------- */

/* A live handle begins with this: where its module's current function table is published,
 * and its slot in that table. */
struct hm__live_head {
  hm_fn **table;
  size_t slot;
};

/* Per-thread read-side state of the grace-period scheme (src/reclaim.c explains it). */
struct hm__reader {
  unsigned long nest;      /* depth of nested live calls on this thread */
  unsigned long long ctr;  /* 0: outside; else the grace-period counter read at entry */
  int mode;                /* 0: not registered yet; 1: membarrier; 2: fenced stores */
  int pad_;
  struct hm__reader *next, *prev;
};

#if defined(__SANITIZE_THREAD__)
#define HM__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HM__TSAN 1
#endif
#endif

HM_EXTERN extern __thread struct hm__reader hm__self __attribute__((tls_model("initial-exec")));
HM_EXTERN extern unsigned long long hm__gp_ctr;
HM_EXTERN extern int hm__reader_fenced;
HM_EXTERN void hm__reader_enter_slow(unsigned long long g);

static inline hm_fn hm_live_enter(hm_live *live) {
  struct hm__reader *r = &hm__self;
  const struct hm__live_head *h = (const struct hm__live_head *)(const void *)live;
  hm_fn *fns;
  if (r->nest++ == 0) {
    unsigned long long g = __atomic_load_n(&hm__gp_ctr, __ATOMIC_ACQUIRE);
#ifndef HM__TSAN
    if (__builtin_expect(r->mode == 1, 1)) {
      /* The writer's membarrier() orders this store before our load of the table. */
      __atomic_store_n(&r->ctr, g, __ATOMIC_RELAXED);
      __atomic_signal_fence(__ATOMIC_SEQ_CST);
    } else
#endif
    {
      /* First call on this thread, or no membarrier: a sequentially consistent store.
       * ThreadSanitizer does not see the writer's membarrier(); it does see this. */
      hm__reader_enter_slow(g);
    }
  }
  fns = __atomic_load_n(h->table, __ATOMIC_SEQ_CST);
  return fns[h->slot];
}

static inline void hm_live_leave(hm_live *live) {
  struct hm__reader *r = &hm__self;
  (void)live;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  if (--r->nest == 0)
    __atomic_store_n(&r->ctr, 0, __ATOMIC_RELEASE);
}

#ifdef __cplusplus
}
#endif

#endif /* HOTMOD_H */
