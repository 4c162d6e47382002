/*
 * hotmod — load shared-object modules and swap in new versions while the host runs.
 *
 * This header is the specification of the public API. Every function's comment says what it
 * does in a short paragraph, then, where they apply, these lines:
 *   Ownership: who allocates and frees what it takes or returns, and how long a returned
 *              pointer or string stays valid.
 *   NULL:      what a NULL pointer argument does.
 *   Threads:   which threads may call it, concurrently with what, and whether module code
 *              (see below) may call it.
 *   Errors:    every code an int-returning function can return besides 0 (and >= 0 counts).
 * "Any thread" means concurrently with any other call of the API except hm_registry_free
 * of the same registry. tests/header_doc_check.py keeps this layout.
 *
 * The model in three sentences: a registry owns modules; each module is a name bound to the
 * path of a .so file and has a current version (1, 2, 3 ...). A stable snapshot pins one
 * version of one symbol until it is released; a live handle runs the module's current
 * version on every call. A reload turns the file into the next version in one atomic step,
 * or fails and changes nothing.
 *
 * The dynamic loader's lock. glibc runs one dlopen or dlclose at a time in the whole process,
 * and holds its lock while a module's constructors or destructors run; dlsym takes it too.
 * So loads, reloads, unloads and rollbacks of different modules run in parallel except
 * inside dlopen and dlclose: a constructor that runs for seconds holds up the loads of every
 * other module for as long. Snapshots, live handles and polls do not wait for it: a symbol
 * that a version defines itself, plainly (a function or object, global, not versioned, not
 * an indirect function, thread-local, weak or STB_GNU_UNIQUE symbol), is found in that
 * version's own symbol tables in memory, exactly where dlsym would find it, without that
 * lock; only other symbols (those kinds, and symbols of the libraries a module needs) go
 * through dlsym and may wait, and every symbol does in a process that runs audit modules
 * (LD_AUDIT: they may change what dlsym returns). A poll leaves the unloading of a build it
 * refuses to the registry's reclaimer thread.
 *
 * Module code and the registry. A module's constructors and destructors run inside dlopen
 * and dlclose, and its hooks (hotmod/module.h) run while the registry reloads or unloads it;
 * the dynamic loader's lock, the module's reload lock or the registry's reclaimer thread may
 * be held by that very thread then. From such code, on the thread that runs it, these calls
 * are allowed (a hook that waits for another thread making a forbidden call is not
 * detected, and can deadlock): hm_module_find, hm_module_version, hm_module_name,
 * hm_module_path, hm_module_watch_method, hm_module_set_reload_mode, hm_registry_stats,
 * hm_registry_dir, hm_registry_errmsg, hm_errmsg, hm_event_detail, hm_strerror,
 * hm_err_name, hm_version, hm_version_string, hm_snapshot_acquire / _typed / _fn / _version
 * / _release, hm_live_get and hm_live_get_typed (a handle on another module, or one that
 * already exists on its own), hm_live_acquire (on another module) and hm_live_release,
 * hm_live_module, hm_live_enter / _leave / _enter_fn /
 * _leave_fn and HM_LIVE_CALL, and hm_watch_stop (which then does not wait). These fail with
 * HM_EBUSY instead of deadlocking: hm_module_load, hm_module_reload, hm_module_reload_from,
 * hm_module_unload, hm_module_rollback, hm_registry_poll, hm_watch_start, hm_watch_attach,
 * and hm_live_get of a new handle on the module whose code is running. hm_registry_free does
 * nothing there (it prints why). Calls in neither list are not meant for module code.
 *
 * fork(). The child may go on using registries made before the fork for what does not
 * change or reclaim anything: live calls, hm_live_get of existing handles, snapshots
 * (acquire, call, release) and the getters. What would change or reclaim something (loads,
 * reloads, unloads, rollbacks, new live handles, polls, starting a watcher) returns
 * HM_EFORKED; hm_watch_stop does nothing; the per-module settings (hm_module_set_reload_mode,
 * _set_lint, _set_probe) are stored, and nothing in the child acts on them. hm_registry_free
 * frees its memory only, leaving the parent's private directory and files alone. The child
 * does not keep the parent's lock on that directory (see hm_registry_new): once the parent's
 * registry is gone, a new registry may remove it, and the child's versions stay mapped.
 * Registries the child makes work fully. Live calls that other threads of the parent were
 * inside at the fork do not hold up the child's grace periods. Loading in the child needs
 * the dynamic loader's list lock, which glibc (2.36 at least) does not reset at fork: a
 * thread that held it at the fork (inside dlopen, dlclose or dl_iterate_phdr) leaves the
 * child's first dlopen blocked forever. So fork() waits until no such call that hotmod
 * makes, on any thread (its reclaimer, its watcher, any thread in the API), is in progress,
 * and holds new ones back until the fork returns. The wait covers the constructors and
 * destructors those calls run, for at most 2 s: module code that runs longer, or waits for
 * the forking thread, lets the fork go ahead with a warning on stderr. Module code that
 * forks from a constructor or destructor hotmod runs does not wait for its own call (other
 * threads' loader calls may then be in progress). What hotmod cannot cover: the host's or a
 * module's own calls into the loader in other threads at the fork can block the child's
 * first dlopen, hotmod or not.
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

/* The version of this header. While the major is 0, each minor may break the ABI. */
#define HM_VERSION_MAJOR 0
#define HM_VERSION_MINOR 4
#define HM_VERSION_PATCH 0
/* 0xMMmmpp: one byte each for major, minor and patch, for comparisons in #if. */
#define HM_VERSION_HEX ((HM_VERSION_MAJOR << 16) | (HM_VERSION_MINOR << 8) | HM_VERSION_PATCH)

/* Marks the functions the library exports (it is built with hidden visibility). */
#if defined(__GNUC__)
#define HM_EXTERN __attribute__((visibility("default")))
#else
#define HM_EXTERN
#endif

/* HM_VERSION_HEX of the library the program runs against (which may differ from the header
 * it was compiled with).
 * Threads: any; also module code. */
HM_EXTERN unsigned hm_version(void);

/* The library's version as "major.minor.patch".
 * Ownership: a static string; never freed.
 * Threads: any; also module code. */
HM_EXTERN const char *hm_version_string(void);

/* ---- Errors ---------------------------------------------------------------------------- */

/* Every fallible function returns 0 on success or a negative code. Codes that match an errno
 * value are that value negated, and any other negative errno from a system call is passed
 * through as it is (e.g. -EROFS, -ENOSPC, -EMFILE): hm_strerror and hm_err_name name those
 * too. XX(name, value, text). */
#define HM_ERRNO_MAP(XX)                                                                       \
  XX(EINVAL, -EINVAL, "invalid argument")                                                      \
  XX(ENOMEM, -ENOMEM, "out of memory")                                                         \
  XX(ENOENT, -ENOENT, "no such file or directory")                                             \
  XX(EACCES, -EACCES, "permission denied")                                                     \
  XX(EEXIST, -EEXIST, "name already taken")                                                    \
  XX(EIO, -EIO, "i/o error")                                                                   \
  XX(EAGAIN, -EAGAIN, "file is still being written, try again")                                \
  XX(EBUSY, -EBUSY, "not allowed from module code (a constructor, destructor or hook)")       \
  XX(EALREADY, -EALREADY, "already running")                                                   \
  XX(ENOTELF, -30001, "not an ELF shared object for this machine")                             \
  XX(EBADELF, -30002, "file incomplete or corrupt")                                            \
  XX(EDLOPEN, -30003, "dlopen failed")                                                         \
  XX(ENOMOD, -30004, "no such module")                                                         \
  XX(ENOSYM, -30005, "no such symbol")                                                         \
  XX(EHOOK, -30006, "module hook failed")                                                      \
  XX(EABI, -30007, "module built for an incompatible hotmod ABI")                              \
  XX(EFORKED, -30009, "registry made before fork(): read-only in the child")                  \
  XX(ESIG, -30010, "function signature differs or is undeclared")                            \
  XX(ENOPREV, -30011, "no previous version to roll back to")                                 \
  XX(ELINT, -30012, "refused by the reloadability lint")                                      \
  XX(ECRASHED, -30013, "the new build crashed in the probe")                                  \
  XX(EBUILD, -30014, "the build command failed")                                              \
  XX(EUNTRUSTED, -30015, "not a build signed by a trusted key")                                \
  XX(ETIMEDOUT, -ETIMEDOUT, "timed out")

/* The codes as constants: HM_EINVAL, HM_ENOMEM ... as in HM_ERRNO_MAP. HM_ERRNO_MAX_ only
 * bounds the range of hotmod's own codes (-30001 and below); it is never returned. */
typedef enum hm_errno {
#define HM__ERR_ENUM(name, value, text) HM_##name = (value),
  HM_ERRNO_MAP(HM__ERR_ENUM)
#undef HM__ERR_ENUM
  HM_ERRNO_MAX_ = -30100
} hm_errno;

/* English text for an error code: the table's, "success" for 0, the C library's for other
 * negative errno values, "unknown error" otherwise. Each code of the table has its own text.
 * Ownership: a static string, never NULL; never freed.
 * Threads: any; also module code. */
HM_EXTERN const char *hm_strerror(int err);

/* The code's name, e.g. "HM_ENOSYM"; "HM_OK" for 0; for other negative errno values the C
 * library's ("EROFS"); "HM_UNKNOWN" otherwise.
 * Ownership: a static string, never NULL; never freed.
 * Threads: any; also module code. */
HM_EXTERN const char *hm_err_name(int err);

/* The detail of the last failure of any hotmod call on the calling thread: the path, the
 * dlerror() text, the missing symbol. Kept per thread, so threads sharing a registry never
 * see each other's detail, and a failed hm_registry_new has one too. Inside the event
 * callback it is the detail of a REJECTED event (set just before, on the same thread).
 * Successful calls leave it as it was. "" when nothing failed yet on this thread.
 * Ownership: the library's, per thread, never NULL; valid until the thread's next failing
 * hotmod call or its exit. Copy it to keep it.
 * Threads: any (each reads its own); also module code. */
HM_EXTERN const char *hm_errmsg(void);

/* ---- Types ----------------------------------------------------------------------------- */

/* Opaque handles. A registry is made by hm_registry_new and freed by hm_registry_free. Its
 * modules and live handles are owned by it and valid until then (a module also after
 * hm_module_unload). A snapshot is the caller's until hm_snapshot_release. */
typedef struct hm_registry hm_registry;
typedef struct hm_module hm_module;
typedef struct hm_snapshot hm_snapshot;
typedef struct hm_live hm_live;

/* A generic function pointer. Cast it to the function's real type to call it. */
typedef void (*hm_fn)(void);

/* What the host's event callback is told. */
typedef enum hm_event {
  HM_EVENT_LOADED = 1, /* a version became current (first load or successful reload); for a
                          signed build, hm_event_detail() is its trusted comment */
  HM_EVENT_REJECTED,   /* a new file was refused; err says why; the old version serves on */
  HM_EVENT_RETIRED,    /* a version stopped being current; it stays mapped while in use */
  HM_EVENT_UNLOADED,   /* a retired version was unloaded and its private copy deleted; in
                          profiling mode (HM_FLAG_PROFILE) its hooks ran but it stays mapped
                          and its copy stays: hm_event_detail() then begins with "kept for
                          profiling" and hm_event_mapped() gives HM_MAPPED_PROFILING */
  HM_EVENT_LEAKED,     /* a version stays mapped for good, said once per version: it left
                          destructors behind (see hm_lint_policy), dlclose kept it
                          (NODELETE and the like), or snapshots still pinned it when its
                          registry was freed. hm_event_detail() begins with the words of
                          hm_mapped_text and says what it keeps; hm_event_mapped() gives the
                          reason and the bytes */
  HM_EVENT_CHANGED,    /* the watcher found a finished new build of the module's file */
  HM_EVENT_ROLLED_BACK, /* hm_module_rollback made an older build current again (under a new
                           version number; counted as a load); detail as for LOADED */
  HM_EVENT_WARNING,     /* the reloadability lint found something in a version that loaded
                           (policy HM_LINT_WARN): hm_event_detail() says what and how to fix
                           it */
  HM_EVENT_BUILD_STARTED,   /* the module's build rule started its command (see
                               hm_module_set_build); `version` is the current one */
  HM_EVENT_BUILD_SUCCEEDED, /* the command exited with status 0: hm_event_detail() is its
                               output, hm_event_build() its status and duration */
  HM_EVENT_BUILD_FAILED,    /* the command failed: err is HM_EBUILD (a non-zero exit or a
                               signal), HM_ETIMEDOUT (killed after its timeout), -ECANCELED
                               (killed because its rule was replaced or removed), -ECHILD
                               (its status was reaped elsewhere) or the error that kept it
                               from starting; output and status as for SUCCEEDED */
  HM_EVENT_WATCH_FAILED     /* the watcher could not watch the module's file, or its build
                               rule's sources, for about 3 s of retries: err says why
                               (HM_ENOMEM; -ENOSPC: inotify's limit on watches), and
                               hm_event_detail() what. It keeps trying; once per failure */
} hm_event;

/* During the event callback: the event's detail, or "". For HM_EVENT_REJECTED the refusal's
 * detail (as hm_errmsg()), for HM_EVENT_WARNING the finding and its fix, for
 * HM_EVENT_WATCH_FAILED what could not be watched, for HM_EVENT_LOADED and
 * HM_EVENT_ROLLED_BACK of a signed build its verified trusted comment (see "Signed builds";
 * "" for a build loaded without trusted keys). "" outside a callback.
 * Ownership: the library's, never NULL; valid until the callback returns.
 * Threads: any (each thread sees the event it is delivering); also module code. */
HM_EXTERN const char *hm_event_detail(void);

/* During the callback of a build event (HM_EVENT_BUILD_*): the command's wait status, as
 * waitpid gives it (test it with WIFEXITED, WEXITSTATUS, WIFSIGNALED...; -1 for STARTED, for
 * a command that did not start, and for one whose status was reaped elsewhere), and the
 * milliseconds since it started. The command's output is hm_event_detail().
 * NULL: either pointer may be NULL (that value is not written).
 * Threads: any (each thread sees the event it is delivering); also module code.
 * Errors: HM_EINVAL outside a build event's callback (nothing is written). */
HM_EXTERN int hm_event_build(int *status, unsigned *duration_ms);

/* Why a version is still mapped, in one set of words that hotmod uses wherever it says so:
 * the detail of HM_EVENT_LEAKED begins with them, and so does the default event log's line.
 *   current           the module's current version;
 *   kept for rollback the version hm_module_rollback would return to;
 *   pinned by snapshots  said "pinned by N snapshots" where N is known;
 *   prepared          queued mode: loaded by the watcher, waiting for hm_registry_poll;
 *   waiting for a grace period  live calls may still be inside it;
 *   kept because it left destructors behind  thread-exit destructors stay in its code (see
 *                     hm_lint_policy): mapped for good;
 *   kept by the dynamic loader  dlclose did not unmap it (NODELETE, STB_GNU_UNIQUE symbols
 *                     ...): mapped for good;
 *   kept for profiling  profiling mode (HM_FLAG_PROFILE): unloaded, but left mapped until
 *                     the process exits, so that profilers, debuggers and leak checkers
 *                     name its code (an UNLOADED event, not a leak).
 *   being unloaded    nothing holds it any more: the reclaimer thread is unloading it
 *                     (introspection only, for the moment until it is gone).
 * XX(name, value, words). */
#define HM_MAPPED_MAP(XX)                                                                      \
  XX(CURRENT, 1, "current")                                                                    \
  XX(ROLLBACK, 2, "kept for rollback")                                                         \
  XX(PINNED, 3, "pinned by snapshots")                                                         \
  XX(PREPARED, 4, "prepared")                                                                  \
  XX(GRACE, 5, "waiting for a grace period")                                                   \
  XX(DESTRUCTORS, 6, "kept because it left destructors behind")                                \
  XX(LOADER, 7, "kept by the dynamic loader")                                                  \
  XX(PROFILING, 8, "kept for profiling")                                                       \
  XX(UNLOADING, 9, "being unloaded")

/* The reasons as constants: HM_MAPPED_CURRENT, HM_MAPPED_ROLLBACK ... as in HM_MAPPED_MAP.
 * HM_MAPPED_MAX_ only ends the list; it is never a reason. */
typedef enum hm_mapped {
#define HM__MAPPED_ENUM(name, value, words) HM_MAPPED_##name = (value),
  HM_MAPPED_MAP(HM__MAPPED_ENUM)
#undef HM__MAPPED_ENUM
  HM_MAPPED_MAX_
} hm_mapped;

/* The words for a reason of HM_MAPPED_MAP, e.g. "kept because it left destructors behind";
 * "" for a value that is not one.
 * Ownership: a static string, never NULL; never freed.
 * Threads: any; also module code. */
HM_EXTERN const char *hm_mapped_text(int why);

/* During the callback of HM_EVENT_LEAKED, and of HM_EVENT_UNLOADED for a version kept for
 * profiling: why the version stays mapped (an hm_mapped) and
 * the bytes of memory its mapping keeps (its loadable segments, whole pages; 0 where not
 * measured: a version pinned when its registry was freed).
 * NULL: either pointer may be NULL (that value is not written).
 * Threads: any (each thread sees the event it is delivering); also module code.
 * Errors: HM_EINVAL outside a LEAKED event's callback (nothing is written). */
HM_EXTERN int hm_event_mapped(int *why, unsigned long long *bytes);

/* The host's event callback. Runs on the thread that caused the event: the caller of the
 * API, the registry's reclaimer thread (RETIRED is on the caller's, UNLOADED and LEAKED on the
 * reclaimer's, and LEAKED also on hm_registry_free's caller) or the watcher's thread (the
 * loop's thread with hm_watch_attach); so it may run on several threads at once. `mod` is
 * valid for the duration of the call (and as long as any hm_module pointer); `version` is
 * the version the event is about; `err` is 0 or the error of a REJECTED event, whose detail
 * hm_errmsg() and hm_event_detail() give during the call. The callback must not call
 * hm_registry_free; it may call any other function of the registry. */
typedef void (*hm_event_cb)(hm_event ev, hm_module *mod, unsigned version, int err,
                            void *userdata);

/* Allocator hook, shaped like realloc: (NULL, n) allocates (n > 0), (p, n) resizes, (p, 0)
 * frees (its result is ignored). Returning NULL for an allocation makes the call that needed
 * it fail with HM_ENOMEM. Used for every allocation hotmod makes for the registry (the
 * dynamic loader, libuv and the C library allocate with malloc as usual). Called from any
 * thread of the host and from the registry's reclaimer and watcher threads, concurrently:
 * it must be thread-safe. It must keep working after hm_registry_free while snapshots are
 * released or a host loop still closes the watcher's handles (hotmod/uv.h). */
typedef void *(*hm_alloc_fn)(void *ptr, size_t size, void *userdata);

/* Registry flags, for hm_registry_options.flags (or-ed together). */
#define HM_FLAG_ALLOW_WRITABLE 0x1u /* load files that someone else could have written or
                                       replaced: writable by other users or a shared group,
                                       in such a directory, or owned by another user
                                       (unsafe; see hm_module_load) */
#define HM_FLAG_QUIET 0x2u          /* no default one-line event log on stderr */
#define HM_FLAG_PROBE 0x4u          /* load each new build in a short-lived child process first
                                       (crash containment; see hm_module_set_probe);
                                       hm_registry_new fails with HM_ENOENT without the
                                       helper */
#define HM_FLAG_PROFILE 0x8u        /* profiling mode, as HOTMOD_PROFILE=1 in the environment
                                       turns on (see hm_registry_new): every version that
                                       became current stays mapped, and its private copy on
                                       disk, after its unload and after the process, so that
                                       profilers, debuggers and leak checkers name its code.
                                       Costs: see hm_registry_new */

/* What the reloadability lint does with what it finds in a module's file (see hotmod-check).
 * Each finding has a short, stable name, by which hm_registry_set_lint_finding and
 * hm_module_set_lint_finding give it a policy of its own:
 *   "nodelete"                 never unloaded (-z nodelete);
 *   "unique-symbols"           shares state across versions through STB_GNU_UNIQUE symbols;
 *   "initial-exec-tls"         defines initial-exec TLS (a budget of a few reloads);
 *   "thread-local-destructors" registers thread_local destructors, which pin a version a
 *                              live thread touched (the loader keeps it mapped);
 *   "pthread-keys"             creates pthread keys, whose destructors stay in the version;
 *   "rust-std"                 a Rust cdylib linked with std, which does both of the last
 *                              two (reported instead of them);
 *   "origin-runpath"           searches $ORIGIN (the private copy's directory);
 *   "shared-dependency"        needs a library that every version shares.
 * Versions that leave destructors behind. A pthread key's destructor stays in the version's
 * code for every thread that stored a value under the key (Rust's std does for
 * std::thread::current()), and glibc runs it when such a thread exits, whether the version is
 * still mapped or not: after an unload, a crash. So a version of a module with
 * "pthread-keys" or "rust-std" is kept mapped once retired (and so is a build of it that
 * was loaded, its constructors run, but refused or dropped before it became current): when
 * it would be unloaded, its unload hook runs but dlclose does not (its destructors run at
 * exit), its private copy is deleted (cut to what stays mapped), and HM_EVENT_LEAKED says
 * "kept because it left destructors behind" and the bytes it keeps (a small Rust module's:
 * about 320 KiB per version; counted in hm_stats.leaked and leaked_bytes). Not kept:
 * versions of a module whose descriptor declares HM_MODULE_KEYS_DELETED (hotmod/module.h;
 * for "pthread-keys" only: Rust's std cannot delete its keys), and any version loaded while
 * the finding's policy was HM_LINT_OFF, which the host may choose when no thread that ran
 * the module's code exits while the process goes on. Kept or not, keys that are never
 * deleted stay taken: Rust's std takes one per version that uses it, and after about a
 * thousand of them (glibc has 1024) it aborts the process. */
typedef enum hm_lint_policy {
  HM_LINT_DEFAULT = 0, /* per module: follow the registry; per registry: warn */
  HM_LINT_WARN = 1,    /* load it, and send one HM_EVENT_WARNING per finding and module:
                          again only after a version without the finding */
  HM_LINT_REJECT = 2,  /* refuse it: HM_ELINT, the current version serves on */
  HM_LINT_OFF = 3      /* do not look (nor keep versions mapped for it: see above) */
} hm_lint_policy;

/* Reload modes for the file watcher. */
typedef enum hm_reload_mode {
  HM_RELOAD_DEFAULT = 0,   /* per module: follow the registry; per registry: immediate */
  HM_RELOAD_IMMEDIATE = 1, /* the watcher reloads as soon as a build is finished */
  HM_RELOAD_QUEUED = 2     /* the watcher prepares the new version (loads it without
                              publishing it); hm_registry_poll publishes it */
} hm_reload_mode;

/* ---- Signed builds --------------------------------------------------------------------
 * With trusted keys set (hm_registry_options.trusted_keys, HOTMOD_TRUSTED_KEYS, or
 * hm_registry_set_trusted_keys), every build hotmod loads needs a build signature by one of
 * them: a minisign signature in `<file>.minisig` beside the module's file, as
 * `minisign -Sm mod.so` writes it. Both of minisign's formats verify: the prehashed one
 * (BLAKE2b-512, its default) and the legacy one (minisign -l). The signature must be over
 * exactly the bytes hotmod read, which are the bytes it checks, copies and maps (the file is
 * read once), and the global signature (over the signature and its trusted comment) must
 * verify too before anything of the trusted comment is used or shown. This holds for first
 * loads, reloads, the watcher's loads and prepared reloads, rollbacks and the probe (which
 * runs only verified bytes). A refusal is HM_EUNTRUSTED, the reason in the message (no
 * signature file, unknown key id, bad signature, malformed signature, replay, name
 * mismatch), and the loaded version serves on.
 *
 * The signature is read from the directory in which the module's file was found, after
 * every symbolic link on its path (so for a path that is itself a link, beside the link's
 * target, under the target's name), through that same directory: a deploy that flips
 * `current -> releases/N` cannot pair one release's build with another's signature.
 *
 * Policies on the signed trusted comment, whose default from minisign is
 * "timestamp:T<tab>file:NAME<tab>hashed"; each applies when the comment has its field:
 *   no replay  a build signed earlier than the newest signed build the module has made
 *              current is refused (an older signed build put back);
 *              HM_SIGNED_ALLOW_REPLAY turns it off;
 *   the name   file: must be the name of the module's file (the last part of its path, or
 *              the name of the file a link there leads to), so a build signed for module `a`
 *              cannot be placed as `b`; HM_SIGNED_ALLOW_RENAME turns it off.
 * HM_SIGNED_REQUIRE_FIELDS refuses a trusted comment without both fields (minisign -t sets a
 * comment of your own). An explicit hm_module_rollback is exempt from both policies: it goes
 * back on purpose.
 *
 * What would run unchecked is refused too, whatever the lint's policy: a build that needs a
 * shared library that is not a system one ("shared-dependency") or has $ORIGIN in its run
 * path ("origin-runpath") brings code its signature does not cover.
 *
 * The watcher waits for a signature that is not there yet (deploy tools copy mod.so first
 * and mod.so.minisig a moment later): a finished build whose signature file is missing,
 * still being written (the same rules as for modules' files) or older than the build and
 * not verifying it (the previous build's) is loaded once a finished signature comes, or
 * refused after signed_wait_ms (HM_EVENT_REJECTED, HM_EUNTRUSTED); a finished signature newer
 * than the build that does not verify it is refused at once. A refusal holds for the pair
 * (the build's bytes, the signature file): a new signature file is looked at afresh.
 * Explicit loads and reloads do not wait.
 *
 * Rollback checks the build again with the keys trusted at that moment: the kept copy with
 * the signature it was verified with when it loaded (the file at the path belongs to the
 * newer build by then), a build still loaded with its own, over its private copy.
 *
 * Rotation: hm_registry_set_trusted_keys replaces the set. The versions loaded keep serving
 * when the key that signed them is removed (the rule: a key is checked when a build is
 * loaded; nothing is unloaded for it); every later load, reload and rollback needs the new
 * set, so a rollback to a build signed by a removed key is refused.
 *
 * A library built without libsodium (see README.md) refuses every request for signed builds
 * with -ENOTSUP (hm_registry_new with trusted_keys or HOTMOD_TRUSTED_KEYS set,
 * hm_registry_set_trusted_keys), and never loads a build unchecked instead. */

/* Policies of signed builds, for hm_registry_options.signed_flags (or-ed together). */
#define HM_SIGNED_ALLOW_REPLAY 0x1u   /* do not refuse a build signed earlier than the newest
                                         one the module made current */
#define HM_SIGNED_ALLOW_RENAME 0x2u   /* do not compare the signed file name with the module's */
#define HM_SIGNED_REQUIRE_FIELDS 0x4u /* refuse a trusted comment without timestamp: and file: */

/* The version of hm_registry_options this header defines (fields up to name). */
#define HM_REGISTRY_OPTIONS_VERSION 4

/* Options for hm_registry_new. Start from HM_REGISTRY_OPTIONS_INIT so new fields keep their
 * defaults when the struct grows; a program built against an older header (an older
 * `version`) keeps working. Strings are copied; nothing here is kept by reference except the
 * callbacks and their userdata. */
typedef struct hm_registry_options {
  unsigned version;         /* HM_REGISTRY_OPTIONS_VERSION (1 to 4 are accepted) */
  unsigned flags;           /* HM_FLAG_... */
  const char *private_root; /* where the private directory is made; NULL: $TMPDIR, else a
                               tmpfs ($XDG_RUNTIME_DIR, then /dev/shm) mounted without
                               noexec that this user may write in and that is its own or
                               sticky, else /tmp. Must not be on a noexec mount. When the
                               tmpfs so chosen is full, copies go to a second private
                               directory under $TMPDIR or /tmp (made when first needed);
                               a root given here or in $TMPDIR is never spilled over */
  hm_alloc_fn alloc;        /* NULL: the C library's realloc/free */
  void *alloc_userdata;     /* passed to alloc as it is; hotmod never touches it */
  hm_event_cb on_event; /* NULL: one line per event on stderr (unless HM_FLAG_QUIET) */
  void *event_userdata; /* passed to on_event as it is; hotmod never touches it */
  hm_reload_mode reload_mode; /* for the watcher; HM_RELOAD_DEFAULT is immediate */
  unsigned quiet_ms; /* watcher, timing fallback only (HM_WATCH_TIMING): how long a file must
                        hold still before it is read; 0: 50 */
  /* version 2 */
  unsigned settle_ms; /* watcher: after a build is finished, wait until nothing has touched
                         the file for this long before loading it, so post-link steps that
                         rewrite it (strip, objcopy, patchelf) make one version, not two;
                         0 (default): load at once */
  /* version 3 */
  hm_lint_policy lint;       /* HM_LINT_DEFAULT: warn */
  unsigned probe_timeout_ms; /* HM_FLAG_PROBE: how long the child may take; 0: 5000 */
  /* version 4 */
  const char *const *trusted_keys; /* signed builds (see above): the minisign public keys
                               trusted, in a NULL-terminated list of at most 256: each the
                               text of a minisign.pub file (or its key line alone, "RW..."),
                               or the path of such a file (relative: to the current
                               directory), which must pass the trust rules of modules
                               (hm_module_load; not waived by HM_FLAG_ALLOW_WRITABLE). Read
                               by hm_registry_new. NULL: the files HOTMOD_TRUSTED_KEYS names,
                               else none (builds load unsigned) */
  unsigned signed_flags;    /* HM_SIGNED_... */
  unsigned signed_wait_ms;  /* watcher: how long a finished build waits for its signature;
                               0: 5000 */
  unsigned group_ms; /* watcher: how long a finished build of a module in a group
                        (hm_module_set_group) waits for the builds of the group's other
                        members; 0: 500 */
  const char *name; /* what the registry is called where it is shown (hm_registry_name,
                       the control socket's status and metrics); NULL or "": the
                       program's name (program_invocation_short_name). At most 255 bytes,
                       no control characters */
} hm_registry_options;

/* The defaults, with version HM_REGISTRY_OPTIONS_VERSION. */
#define HM_REGISTRY_OPTIONS_INIT                                                               \
  { HM_REGISTRY_OPTIONS_VERSION, 0, NULL, NULL, NULL, NULL, NULL, HM_RELOAD_DEFAULT, 0, 0,     \
    HM_LINT_DEFAULT, 0, NULL, 0, 0, 0, NULL }

/* Counters of a registry, for monitoring and tests. May grow at the end in later versions;
 * hm_registry_stats passes the caller's size, so older programs keep working. */
typedef struct hm_stats {
  unsigned long long loads;    /* versions that became current */
  unsigned long long rejects;  /* files or hooks refused (REJECTED events) */
  unsigned long long unloads;  /* versions unloaded with their copy removed (or, in
                                  profiling mode, kept for profiling) */
  unsigned long long leaked;   /* versions that stayed mapped for good (LEAKED events) */
  unsigned long long retired;  /* versions retired but not yet unloaded (now) */
  unsigned long long modules;  /* modules with a current version (now) */
  unsigned long long leaked_bytes; /* memory the `leaked` versions keep mapped, as their
                                      LEAKED events said (hm_event_mapped) */
} hm_stats;

/* ---- Registry -------------------------------------------------------------------------- */

/* Create a registry: its private directory (hotmod-priv-XXXXXX, mode 0700, made with
 * mkdtemp and held with flock while the registry lives; a forked child does not keep the
 * lock) and its reclaimer thread. First it removes private directories that registries of
 * dead processes left behind: unlocked ones of this effective user, in private_root,
 * $TMPDIR, /tmp, $XDG_RUNTIME_DIR and /dev/shm, with only the copies hotmod makes in them,
 * never following links, at most 32 per call (best effort: never an error).
 * A build whose .gnu_debuglink names a split debug file (objcopy --only-keep-debug, then
 * --add-gnu-debuglink) has that file copied beside its private copy when it loads, from
 * where gdb would find it beside the build (its directory, its .debug/, /usr/lib/debug),
 * only if its CRC matches: the copy and its debug file then share a directory of their
 * own, NAME.SEQ.d/, and go together.
 * Profiling mode (HM_FLAG_PROFILE in the flags, or HOTMOD_PROFILE=1 in the environment,
 * read here with secure_getenv; said once per process on stderr): the directory is
 * hotmod-prof-XXXXXX on disk, in private_root if set, else $XDG_CACHE_HOME/hotmod or
 * ~/.cache/hotmod (made 0700), else /var/tmp. Every version that became current stays
 * mapped after its unload (its unload hook runs, its destructors do not: they run at the
 * process's exit, as for any object still loaded then), reported as UNLOADED "kept for
 * profiling", and its copy stays; hm_registry_free leaves the directory and what is in it.
 * The copies of unloaded versions are capped at 1 GiB (HOTMOD_PROFILE_MAX_MB, read here,
 * sets another cap in MiB): past it the oldest are deleted, and those versions' frames are
 * addresses again. Each kept version holds its mappings (about 5; the kernel allows
 * vm.max_map_count, 65,530 by default, in all), so a process makes some thousands of
 * reloads in this mode before a dlopen fails for want of them (HM_EDLOPEN: the current
 * version serves on). A later registry, of any process of the user, removes the directory
 * once no registry holds it and nothing changed it for a minute, as it sweeps (the same
 * limits: 32 directories and 4,096 entries in each per call; the rest at later calls).
 * Ownership: on success *out is the caller's, freed with hm_registry_free; on error *out is
 * NULL (when `out` is not). `opts` is read during the call only; its strings are copied.
 * NULL: `out` NULL is HM_EINVAL; `opts` NULL means HM_REGISTRY_OPTIONS_INIT.
 * Trusted keys for signed builds are read here: trusted_keys, or when it is NULL, the key
 * files that the environment variable HOTMOD_TRUSTED_KEYS=FILE[:FILE...] names (read with
 * secure_getenv; set but empty, or with an empty part, is an error, not "no keys").
 * Threads: any. Not among the calls allowed to module code (not refused there either).
 * Errors: HM_EINVAL (out NULL, options version not between 1 and
 * HM_REGISTRY_OPTIONS_VERSION, unknown reload mode, lint policy or signed_flags; an empty
 * key list, a key that is not a minisign public key), HM_ENOMEM, HM_ENOENT
 * (HM_FLAG_PROBE and the helper cannot be found; a key file that is not there), HM_EACCES
 * (the private root is on a noexec mount, where copies could not run: the message says
 * noexec; a key file that others could have written), -ENOTSUP (trusted keys asked for, by
 * the options or the environment, from a library built without libsodium), or the errno of
 * the failed directory creation or thread start (HM_EACCES, HM_ENOENT, HM_EAGAIN, -EROFS
 * ...); the detail is in hm_errmsg, as for every failure. */
HM_EXTERN int hm_registry_new(hm_registry **out, const hm_registry_options *opts);

/* Replace the registry's trusted keys for signed builds (see "Signed builds" above): `keys`
 * as hm_registry_options.trusted_keys, read and checked now. Loads, reloads and rollbacks
 * that start from then on need a signature by one of the new keys; one under way may have
 * taken the old set. The versions loaded keep serving whatever key signed them. A registry
 * without keys requires signed builds from then on; there is no way back to unsigned builds
 * (make a new registry).
 * Ownership: `keys` and its strings are read during the call only.
 * NULL: `reg` or `keys` NULL is HM_EINVAL; so is an empty list.
 * Threads: any. Not among the calls allowed to module code (not refused there either).
 * Errors: HM_EINVAL (also: a key that is not a minisign public key), HM_ENOENT, HM_EACCES
 * and the other errors of reading a key file, -ENOTSUP (built without libsodium),
 * HM_ENOMEM. On error the registry keeps its set. */
HM_EXTERN int hm_registry_set_trusted_keys(hm_registry *reg, const char *const *keys);

/* Stop the watcher, unload every version, delete the private directory (in profiling mode:
 * leave it, see hm_registry_new) and free the registry. Waits for live calls still running
 * to return (any registry's: see hm_live_enter). Every unload hook runs, including those of versions that snapshots still
 * pin. Snapshots should be released before; a version one still pins stays mapped (counted
 * in `leaked`, reported as HM_EVENT_LEAKED and by one warning on stderr unless
 * HM_FLAG_QUIET), its function stays callable, and hm_snapshot_release later frees only the
 * snapshot (with the registry's allocator, which must still work). In a child after fork()
 * it frees the memory only (see the top of this file).
 * Ownership: frees `reg`; its live handles, module pointers and the strings the getters
 * returned become invalid.
 * NULL: a no-op.
 * Threads: any thread, but never concurrently with another call on `reg` (the release of
 * its snapshots included) nor from inside a live call or the event callback; from module
 * code it does nothing but print why on stderr. */
HM_EXTERN void hm_registry_free(hm_registry *reg);

/* The same string as hm_errmsg(): the calling thread's last failure detail. Kept for
 * programs that read it through their registry.
 * Ownership: as hm_errmsg.
 * NULL: returns "invalid argument" (a static string).
 * Threads: any; also module code. */
HM_EXTERN const char *hm_registry_errmsg(const hm_registry *reg);

/* The registry's private directory, where its copies of module files live (except those
 * that found the default tmpfs full: see private_root); in profiling mode, the one that
 * outlives it (see hm_registry_new).
 * Ownership: borrowed; valid until hm_registry_free.
 * NULL: returns NULL.
 * Threads: any; also module code. */
HM_EXTERN const char *hm_registry_dir(const hm_registry *reg);

/* The registry's name (hm_registry_options.name, else the program's name), as the control
 * socket shows it.
 * Ownership: borrowed; valid until hm_registry_free.
 * NULL: returns NULL.
 * Threads: any; also module code and a forked child. */
HM_EXTERN const char *hm_registry_name(const hm_registry *reg);

/* Fill the first `size` bytes of *out with the registry's counters (a consistent set, taken
 * under one lock); call it through hm_registry_stats, which passes sizeof(hm_stats) as the
 * caller's header defines it. A `size` larger than this library's hm_stats fills only what
 * it has.
 * NULL: `reg` or `out` NULL is HM_EINVAL.
 * Threads: any; also module code and a forked child.
 * Errors: HM_EINVAL (NULL, size 0). */
HM_EXTERN int hm_registry_stats_get(hm_registry *reg, hm_stats *out, size_t size);
static inline int hm_registry_stats(hm_registry *reg, hm_stats *out) {
  return hm_registry_stats_get(reg, out, sizeof *out);
}

/* ---- Modules --------------------------------------------------------------------------- */

/* Load the file at `path` as version 1 of a new module called `name` (no ':' allowed).
 * The file is opened (O_NONBLOCK | O_CLOEXEC), checked with fstat on that descriptor and
 * read from it: a regular file that nobody but its owner could have changed, not on a
 * noexec mount, not open for writing by any process, a complete ELF shared object for this
 * machine. Refused with HM_EACCES and the rule and its fix in the message, unless the
 * registry has HM_FLAG_ALLOW_WRITABLE: the file or its directory (the one holding its name,
 * and each one holding a symbolic link on the way to it) writable by other users (a sticky
 * directory is fine for an entry of this process's user), or by a group other than the
 * owner's private group (a group named as the owner with no other member), directly or
 * through a POSIX ACL; the file or that directory owned by anyone but this process's
 * effective user or root. Always refused with HM_EACCES: a file on a noexec mount (its
 * private copy would bypass noexec). The bytes read are then copied into the private
 * directory and
 * loaded from the copy with dlopen(RTLD_NOW | RTLD_LOCAL). The registry's lint policy and
 * crash containment (hm_module_set_probe) apply. If a module of that name was unloaded with
 * hm_module_unload, it comes back under the same name with its next version number and its
 * live handles work again (so the file must have their symbols and signatures).
 * A relative `path` is taken against the current directory of this call, and that
 * directory is kept with it: reloads (hm_module_reload), the watcher and the module's build
 * rule use the same file whatever chdir() the process makes later. The directory is the one
 * $PWD names when it is the current directory (as a shell sets it, through the symbolic
 * links it was reached by), else getcwd()'s; it is joined to the path as text, so symbolic
 * links on the way are followed anew at each reload (a `current -> releases/42` flip).
 * hm_module_path still returns the path as given.
 * Ownership: `name` and `path` are copied. On success, if `out` is not NULL, *out is
 * borrowed from the registry, valid until hm_registry_free; on error *out is NULL.
 * NULL: `reg`, `name` or `path` NULL is HM_EINVAL; `out` may be NULL.
 * Threads: any; loads and reloads of different modules run in parallel, except inside
 * dlopen (see "The dynamic loader's lock" above). From module code: HM_EBUSY.
 * Errors: HM_EINVAL (also: a name empty, of 256 characters or more, or with ':'; an empty
 * path), HM_EEXIST (a loaded module has that name), HM_ENOENT, HM_EACCES (the rules above, or
 * no permission to read), HM_ENOTELF (also: not a regular file: a directory, FIFO, socket or
 * device, refused at once without waiting on it; the message says which), -ELOOP (a loop of
 * symbolic links), HM_EBADELF, HM_EAGAIN (a process has the file open for writing, it
 * changed while it was read, or the path was made to lead elsewhere meanwhile), HM_EDLOPEN,
 * HM_EABI (a descriptor of another module ABI, or linked against another libhotmod than
 * this one), HM_EHOOK, HM_ELINT (lint policy HM_LINT_REJECT), HM_ECRASHED and HM_ETIMEDOUT
 * (crash containment), HM_EUNTRUSTED (trusted keys are set and the build is not signed by
 * one, or breaks a policy: see "Signed builds"; -ESTALE if keys were set while it was read),
 * HM_ENOSYM and HM_ESIG (a revived module's live handles), HM_EIO,
 * HM_ENOMEM, HM_EBUSY, HM_EFORKED, or another negative errno of a system call (e.g. -ENOSPC
 * writing the private copy, -EMFILE; getcwd's, for a relative path when the current
 * directory is gone). On error nothing is created. */
HM_EXTERN int hm_module_load(hm_registry *reg, const char *name, const char *path,
                             hm_module **out);

/* Find a loaded module by name (one unloaded with hm_module_unload is not found).
 * Ownership: *out is borrowed (see hm_module_load); NULL on error.
 * NULL: any argument NULL is HM_EINVAL.
 * Threads: any; also module code and a forked child.
 * Errors: HM_EINVAL, HM_ENOMOD. */
HM_EXTERN int hm_module_find(hm_registry *reg, const char *name, hm_module **out);

/* Load the file at the module's path now as its next version, and make it current for all
 * of the module's live handles in one atomic step. Every symbol a live handle uses must be
 * in the new version. The old version is retired: it stays mapped while a snapshot pins it
 * or a live call is still inside it, then it is unloaded by the registry. An identical file
 * still becomes a new version. On any error the module, its current version, its state and
 * every handle are unchanged.
 * NULL: HM_EINVAL.
 * Threads: any; reloads of one module are serialised (a second caller waits for the first),
 * reloads of different modules run in parallel except inside dlopen and dlclose (see "The
 * dynamic loader's lock" above). From module code: HM_EBUSY.
 * Errors: as hm_module_load except HM_EEXIST, and HM_ENOSYM (a live handle's symbol is
 * missing), HM_ESIG (a typed live handle's signature is not declared alike), HM_ENOMOD (the
 * module was unloaded). */
HM_EXTERN int hm_module_reload(hm_module *mod);

/* Like hm_module_reload, but load the file at `path`, which becomes the module's path if the
 * reload succeeds (a failed one leaves the path as it was). A relative `path` is taken
 * against the current directory of this call, kept with it as hm_module_load does.
 * Ownership: `path` is copied. The string hm_module_path returned before is freed on success.
 * NULL: `mod` or `path` NULL (or an empty path) is HM_EINVAL.
 * Threads: as hm_module_reload.
 * Errors: as hm_module_reload. */
HM_EXTERN int hm_module_reload_from(hm_module *mod, const char *path);

/* Retire the module's current version and take the name out of use: hm_module_find fails,
 * live handles of the module return NULL from hm_live_enter, snapshots keep working until
 * released, and the module has nothing to roll back to. hm_module_load of the name revives
 * it.
 * Ownership: the module pointer and its live handles stay valid (until hm_registry_free).
 * NULL: HM_EINVAL.
 * Threads: any; serialised with the module's reloads. From module code: HM_EBUSY.
 * Errors: HM_EINVAL, HM_ENOMOD (already unloaded), HM_ENOMEM (nothing changed), HM_EBUSY,
 * HM_EFORKED. */
HM_EXTERN int hm_module_unload(hm_module *mod);

/* Make the version before the current one current again, with the same state handover as
 * a reload: the current version's save(), then the older build's load() with rollback = 1
 * and the current version's state_version, which it may refuse (HM_EHOOK, nothing changes).
 * The older build is reused as it is while it is still loaded (a snapshot pins it: reused =
 * 1), and otherwise loaded again from the copy the registry keeps of the version before the
 * current one (one per module). It becomes current under the next version number and the
 * host gets HM_EVENT_ROLLED_BACK. Rollback follows the history of current versions and never
 * returns to the version it replaced: rolling back again goes one further back, which only
 * works while that build is still loaded. The watcher then takes the bytes at the module's
 * path (the build rolled back from) as no change until they change.
 * NULL: HM_EINVAL.
 * Threads: as hm_module_reload.
 * Errors: HM_EINVAL, HM_ENOMOD (the module is unloaded), HM_ENOPREV (nothing to go back
 * to, or the kept copy was deleted from outside hotmod), HM_EAGAIN (a reload of the module
 * came first; try again), HM_EHOOK, HM_ENOSYM and
 * HM_ESIG (the older build lacks what live handles need now), HM_EUNTRUSTED (trusted keys
 * are set and the older build's signature does not verify with them, or it was loaded
 * without one: see "Signed builds"), HM_ENOMEM, HM_EBUSY,
 * HM_EFORKED; loading the kept copy again can also fail as hm_module_reload does (HM_EDLOPEN,
 * HM_ELINT, HM_ECRASHED, HM_EIO ...). */
HM_EXTERN int hm_module_rollback(hm_module *mod);

/* The build signature the module's current version was verified with when it loaded (see
 * "Signed builds"): returns 1 and writes, where the pointers are not NULL, the signing key's
 * id (in hex, as minisign prints it in minisign.pub's comment: at most 16 digits, no leading
 * zeros, and a NUL) into key_id[17] and the trusted comment (cut to size - 1 bytes,
 * NUL-terminated) into comment[size]; returns 0, writing nothing, for a version loaded
 * without trusted keys.
 * NULL: `mod` NULL is HM_EINVAL; `key_id` and `comment` may be NULL.
 * Threads: any; also module code and a forked child.
 * Errors: HM_EINVAL, HM_ENOMOD (the module is unloaded). */
HM_EXTERN int hm_module_build_signed(hm_module *mod, char *key_id, char *comment, size_t size);

/* Reload several modules as one: every member's new build (from paths[i], or the module's
 * path where `paths` is NULL or paths[i] is NULL) is read, checked, copied, loaded, its live
 * handles resolved and their signatures checked, then every member's state hooks run (in
 * the order given: the outgoing version's save(), the incoming one's load()), and then all
 * members become current in one step. Use it to change an interface between modules (a
 * function's type, a struct they pass each other) that neither build works with alone.
 * What is checked against the new builds: every handle the host holds (hm_live_get's, and
 * hm_live_acquire's while held), and the handles of modules outside the group, keep their
 * types and are checked as for hm_module_reload; a handle that a member's outgoing version
 * took in its load hook (through ctx->api, or hm_live_acquire) is that version's own and
 * goes with it: the member's incoming version may take it anew with another type.
 * No mixed pair: a handle a member's incoming version takes on another member (in its load
 * hook) reaches that member's incoming version, from the hook on; a call that entered a
 * member's old version keeps reaching the old versions of the others through its version's
 * handles until it returns (and a snapshot of an old version, for as long as it is held).
 * So calls between members never cross from a new version to an old one or back. The
 * host's own handles of two members switch in the same step but not at the same instant:
 * two host calls, one to each member, may straddle it (make the caller a member too, or
 * have one member call the other).
 * All or nothing: if any step fails for any member, no member changes: the load hooks that
 * had accepted are undone (the incoming version's unload hook runs as if it handed its
 * state straight back: unload(1) if it adopted the state, which the outgoing version keeps
 * owning, else unload(0)), every incoming build is unloaded and its copy removed, and one
 * HM_EVENT_REJECTED for the member that failed says why (its detail, and hm_errmsg, begin
 * with "group reload of a, b: b: "). On success each member gets LOADED, WARNING and
 * RETIRED as a reload would, and counts one load; a member's path changes as with
 * hm_module_reload_from.
 * Ownership: `mods` and `paths` are read during the call only; paths are copied.
 * NULL: `reg` or `mods` NULL, n 0, a NULL member, or an empty path is HM_EINVAL.
 * Threads: as hm_module_reload (each member's reloads are serialised with the group's;
 * groups that share members wait for one another, without deadlock). From module code:
 * HM_EBUSY.
 * Errors: HM_EINVAL (also: a module given twice, a module of another registry), HM_EBUSY,
 * HM_EFORKED, or any error of hm_module_reload for the member that failed. */
HM_EXTERN int hm_registry_reload_group(hm_registry *reg, hm_module *const mods[],
                                       const char *const paths[], size_t n);

/* Roll several modules back as one: each member goes back to the build before its current
 * one, as hm_module_rollback does for one module (reused while still loaded, else loaded
 * again from its kept copy; the state handed over with rollback = 1), and all of them become
 * current in one step, as hm_registry_reload_group does, or none. After a group reload, that
 * is the set of versions that were current together before it. The hooks run in the order
 * given; a refusal undoes the others as in hm_registry_reload_group, with one
 * HM_EVENT_REJECTED; on success each member gets HM_EVENT_ROLLED_BACK.
 * Ownership: `mods` is read during the call only.
 * NULL: `reg` or `mods` NULL, n 0 or a NULL member is HM_EINVAL.
 * Threads: as hm_registry_reload_group. From module code: HM_EBUSY.
 * Errors: HM_EINVAL (also: a module given twice, a module of another registry), HM_EBUSY,
 * HM_EFORKED, or any error of hm_module_rollback for the member that failed (HM_ENOPREV,
 * HM_ENOMOD, HM_EAGAIN, HM_EHOOK, HM_ENOSYM, HM_ESIG ...). */
HM_EXTERN int hm_registry_rollback_group(hm_registry *reg, hm_module *const mods[], size_t n);

/* The current version number: 1 after the first load, +1 per successful reload or rollback;
 * 0 for an unloaded module. A lock-free read: a reload on another thread may change it at
 * once.
 * NULL: returns 0.
 * Threads: any; also module code and a forked child. */
HM_EXTERN unsigned hm_module_version(const hm_module *mod);

/* Set the module's lint policy for the versions loaded from then on (HM_LINT_DEFAULT: follow
 * the registry); a reload under way may already have read the old one.
 * NULL: HM_EINVAL.
 * Threads: any. Not among the calls allowed to module code (not refused there either).
 * Errors: HM_EINVAL (NULL module, unknown policy). */
HM_EXTERN int hm_module_set_lint(hm_module *mod, hm_lint_policy policy);

/* Set the policy for one lint finding, by its name (see hm_lint_policy), for the versions
 * loaded from then on: for every module of the registry, or for one module. HM_LINT_DEFAULT
 * removes the setting. The policy for a finding is the first set of: the module's for that
 * finding, the module's (hm_module_set_lint), the registry's for that finding, the
 * registry's (hm_registry_options.lint); else HM_LINT_WARN. A reload under way may already
 * have read the old one.
 * NULL: HM_EINVAL.
 * Threads: any. Not among the calls allowed to module code (not refused there either).
 * Errors: HM_EINVAL (NULL registry, module or name; a name that is not a finding's, the
 * message lists them; unknown policy). */
HM_EXTERN int hm_registry_set_lint_finding(hm_registry *reg, const char *finding,
                                           hm_lint_policy policy);
HM_EXTERN int hm_module_set_lint_finding(hm_module *mod, const char *finding,
                                         hm_lint_policy policy);

/* Crash containment for the module's next builds: enable 1 on, 0 off, -1 as the registry
 * (HM_FLAG_PROBE; that flag also covers first loads). With it on, each new build is first
 * loaded in a short-lived child process (the helper hotmod-probe, installed in
 * <libdir>/../libexec/hotmod beside the library; HOTMOD_PROBE overrides the path): its
 * constructors run there, then its load hook as on a first load (no state is handed over,
 * ctx->reg is NULL and ctx->api fails every call), the symbols of the module's live handles
 * are resolved, the descriptor's self_test runs if it has one, and its destructors run. The
 * host loads the build only if the child got through: a build that dies there (a signal,
 * exit(), abort) or whose self-test fails is refused with HM_ECRASHED, one still running
 * after probe_timeout_ms with HM_ETIMEDOUT, each with the step and signal in the message,
 * and the current version serves on. A build the child cannot dlopen (it needs symbols the
 * host program exports, say) is not refused: the host's own load decides. The probe adds
 * the cost of starting a process to each reload (make bench: reload.probe_us_p50) and runs
 * on the reloading thread: in immediate mode the watcher's thread, whose other modules'
 * reloads wait meanwhile (up to probe_timeout_ms for a build that hangs). The child gets
 * none of the host's descriptors (stdin and stdout are /dev/null, stderr is the host's).
 * Containment, not a sandbox: the build runs with the host's user and environment.
 * NULL: HM_EINVAL.
 * Threads: any. Not among the calls allowed to module code (not refused there either).
 * Errors: HM_EINVAL (NULL module, `enable` not -1, 0 or 1), HM_ENOENT (enable 1 and the
 * helper cannot be found; the message says where it looked), HM_ENOMEM. */
HM_EXTERN int hm_module_set_probe(hm_module *mod, int enable);

/* The module's name and source path (as given, not resolved).
 * Ownership: borrowed. The name is valid until hm_registry_free. The path is valid until the
 * module's path changes (hm_module_reload_from, or hm_module_load of an unloaded module with
 * another path), which frees it: copy it if that may happen, on this thread or another.
 * NULL: returns NULL.
 * Threads: any (for the path, see Ownership); also module code and a forked child. */
HM_EXTERN const char *hm_module_name(const hm_module *mod);
HM_EXTERN const char *hm_module_path(const hm_module *mod);

/* ---- Stable snapshots ------------------------------------------------------------------ */

/* Pin the current version of "module:symbol" and return its function. The snapshot keeps
 * calling exactly that version, across any number of reloads, until it is released: the
 * version stays loaded, callable and unchanged.
 * Ownership: on success *out is the caller's, released with hm_snapshot_release (best
 * before hm_registry_free: see there); on error *out is NULL. `qualified` is read during the
 * call only.
 * NULL: any argument NULL is HM_EINVAL.
 * Threads: any; also module code (e.g. a load hook, through ctx->reg) and a forked child.
 * A plain symbol of the version is found without the dynamic loader's lock, so the call does
 * not wait for other modules' constructors (see "The dynamic loader's lock" above).
 * Errors: HM_EINVAL (NULL; no ':', nothing before or after it, or a module name of 256
 * characters or more), HM_ENOMOD (no such module, or it is unloaded), HM_ENOSYM, HM_ENOMEM. */
HM_EXTERN int hm_snapshot_acquire(hm_registry *reg, const char *qualified, hm_snapshot **out);

/* The pinned version's function: a plain C function pointer.
 * Ownership: valid until the snapshot is released (also after hm_registry_free, see there).
 * NULL: returns NULL.
 * Threads: any; also module code and a forked child. */
HM_EXTERN hm_fn hm_snapshot_fn(const hm_snapshot *snap);

/* The pinned version's number (as hm_module_version said when it was acquired).
 * NULL: returns 0.
 * Threads: any; also module code and a forked child. */
HM_EXTERN unsigned hm_snapshot_version(const hm_snapshot *snap);

/* Like hm_snapshot_acquire, and the pinned version must declare `signature` for the symbol
 * (HM_MODULE_SIGNATURE in hotmod/module.h). Signatures are compared after removing
 * whitespace (whole, at any length), and nothing else is normalised. Checked once, when acquired.
 * Ownership: as hm_snapshot_acquire; `signature` is read during the call only.
 * NULL: any argument NULL is HM_EINVAL.
 * Threads: as hm_snapshot_acquire.
 * Errors: as hm_snapshot_acquire, plus HM_ESIG (declared otherwise, or not declared; the
 * detail names both signatures). */
HM_EXTERN int hm_snapshot_acquire_typed(hm_registry *reg, const char *qualified,
                                        const char *signature, hm_snapshot **out);

/* Release the snapshot; its version is unloaded (on the registry's reclaimer thread) once
 * nothing else uses it. After its registry was freed it frees only the snapshot (and the
 * leaked version's bookkeeping with the last one).
 * Ownership: frees `snap`, with the registry's allocator; each snapshot is released once.
 * NULL: a no-op.
 * Threads: any (not necessarily the one that acquired it), but not concurrently with
 * hm_registry_free of its registry; also module code (an unload hook releases what its load
 * hook acquired) and a forked child. */
HM_EXTERN void hm_snapshot_release(hm_snapshot *snap);

/* ---- Live handles ---------------------------------------------------------------------- */

/* Get the live handle of "module:symbol", creating it the first time (the same handle is
 * returned for the same name). The symbol must exist in the module's current version, and
 * from then on every new version must export it too or its reload is rejected. An existing
 * handle is returned as it is, also when its module is unloaded.
 * Ownership: *out is borrowed from the registry, valid until hm_registry_free (never freed
 * by the caller); NULL on error. `qualified` is copied for a new handle.
 * NULL: any argument NULL is HM_EINVAL.
 * Threads: any; concurrent gets of one name return the same handle. Module code may get a
 * handle on another module, or one that already exists; a new handle on the module whose
 * code is running is HM_EBUSY. A forked child may get existing handles only. Like
 * hm_snapshot_acquire, it does not wait for other modules' constructors for a plain
 * symbol.
 * Errors: HM_EINVAL (as hm_snapshot_acquire), HM_ENOMOD, HM_ENOSYM (also: a reload of the
 * module is about to publish a version without the symbol), HM_ENOMEM, HM_EBUSY, HM_EFORKED
 * (a new handle, in a forked child). */
HM_EXTERN int hm_live_get(hm_registry *reg, const char *qualified, hm_live **out);

/* Like hm_live_get, for a symbol whose C type is `signature` (e.g. "double(double)"): the
 * current version must declare that signature for it (HM_MODULE_SIGNATURE), and so must
 * every later version, rollbacks included, or its reload is refused with HM_ESIG and the
 * current version serves on. The handle is the same one hm_live_get returns for the name;
 * once typed it stays typed, and a typed get with another signature fails. Whitespace is
 * removed before comparing, nothing else is normalised.
 * Ownership: as hm_live_get; `signature` is copied when it types the handle.
 * NULL: any argument NULL is HM_EINVAL.
 * Threads: as hm_live_get.
 * Errors: as hm_live_get, plus HM_ESIG (not declared alike, or the handle is typed with
 * another signature). */
HM_EXTERN int hm_live_get_typed(hm_registry *reg, const char *qualified,
                                const char *signature, hm_live **out);

/* Get an owned live handle of "module:symbol": a live handle like hm_live_get's (every call
 * runs the module's current version, at the same cost), but held only until it is released,
 * so that the symbol constrains the module's new builds only while someone holds it: a
 * reload, rollback or group reload checks that the new version has the symbol (and declares
 * `signature`, when given, as hm_live_get_typed does) for every handle still held, and for
 * no other. `signature` NULL: untyped. Each call makes a handle of its own, with its own
 * type; two handles on one name may have different types where the versions they serve
 * declare both (see hm_registry_reload_group: a member's new version may take a handle with
 * the new type while its old version's handle keeps the old one).
 * Whose it is: a handle taken while a module's load hook runs on this thread (through
 * ctx->api->live_acquire or the library directly; ctx->api->live_get and live_get_typed
 * take the same kind there) belongs to the version being loaded, and follows its life
 * (hotmod/module.h, "Calling other modules"): it follows the module it reaches while that
 * version is current; once the version is retired, it keeps reaching the versions it
 * reached then, for as long as anything can still call the retired version (a call that
 * began before, a snapshot of it, or another retired version's handle); after that it is
 * dead (enter returns NULL) and it is freed when the version is unloaded. Any other handle
 * is the caller's until hm_live_release.
 * Ownership: on success *out is the caller's (or, as above, the loading version's), given
 * back with hm_live_release; on error *out is NULL. Strings are read during the call only.
 * NULL: `reg`, `qualified` or `out` NULL is HM_EINVAL; `signature` may be NULL.
 * Threads: any; also module code (a handle on another module: a new handle on the module
 * whose code is running is HM_EBUSY). Not in a forked child (HM_EFORKED).
 * Errors: as hm_live_get_typed: HM_EINVAL, HM_ENOMOD, HM_ENOSYM, HM_ESIG, HM_ENOMEM,
 * HM_EBUSY, HM_EFORKED. */
HM_EXTERN int hm_live_acquire(hm_registry *reg, const char *qualified, const char *signature,
                              hm_live **out);

/* Give back a handle of hm_live_acquire: from then on it constrains no new build, and an
 * enter through it returns NULL (hm_live_enter and hm_live_enter_fn; HM_LIVE_CALL would call
 * NULL). Its memory is kept (until hm_registry_free, or, a version's, until that version is
 * unloaded) and a later hm_live_acquire of the same name by the host may hand the same
 * object out again, alive. A version's handle may be released before the version goes; it
 * need not be. A handle of hm_live_get is the registry's: releasing it does nothing.
 * Ownership: the handle stays the library's memory (see above); do not use it after the
 * release except for enters that expect NULL.
 * NULL: a no-op.
 * Threads: any, but not while another thread may be entering through the same handle (the
 * release changes what the handle reads); also module code (an unload hook may release what
 * its load hook acquired). */
HM_EXTERN void hm_live_release(hm_live *live);

/* hm_live_enter starts a call and returns the current version's function (NULL if the module
 * was unloaded); hm_live_leave ends it. `live` must not be NULL. Until the matching leave,
 * the version returned stays mapped, even if a reload replaces it meanwhile. Pairs nest on a
 * thread (up to 2^29 - 1 deep; 2^13 - 1 on 32-bit systems), and a thread may be inside calls
 * of several handles at once. No locks, no shared writes: the cost is a few thread-local
 * instructions. Any thread may call them; a thread registers itself on its first call and
 * unregisters when it exits. Do not keep the returned pointer after leave. A leave without
 * its enter aborts the program in builds without NDEBUG. A call may block as long as it
 * likes: reloads and other callers go on. While it lasts, no version retired after it
 * started is unloaded, in any registry of the process (grace periods are process-wide, as in
 * RCU); they all go within about 4 ms after it returns: the registry's reclaimer thread
 * notices a retired version within 2 ms, and checks every 2 ms at most for the calls that
 * keep it (plus the time the unload hooks and dlclose of versions queued before it take, and
 * any delay the scheduler adds). Versions whose last user is a snapshot are unloaded within
 * 2 ms after it is released, regardless. Threads that chose the QSBR flavour
 * (hm_thread_qsbr) change that bound: while one is online, a retired version also waits for
 * its next quiescent state. Every enter needs its leave, also when the call
 * ends by an exception or a longjmp: use HM_LIVE_CALL, which leaves on unwinding.
 * Ownership: the returned pointer is borrowed, valid until the matching leave.
 * NULL: `live` must not be NULL (a crash): use hm_live_enter_fn to have NULL checked.
 * Threads: any, concurrently with everything, including reloads and unloads of the module;
 * also module code and a forked child. Not async-signal-safe: do not make live calls from a
 * signal handler. */
static inline hm_fn hm_live_enter(hm_live *live);
static inline void hm_live_leave(hm_live *live);

/* Call a live handle like a C function: HM_LIVE_CALL(live, double (*)(double), 2.0), also for
 * functions returning void. `live` is evaluated once. Needs GCC or Clang. It leaves the call
 * however the callee ends: normally, or by a C++ exception that the host catches around it
 * (in C++, and in C compiled with -fexceptions; C compiled without it has no unwind actions,
 * so a C host must not let exceptions cross its frames: catch them inside the module). It
 * does not check for NULL: if the module may have been unloaded (hm_module_unload), use
 * hm_live_enter and test the pointer. `live` itself must not be NULL. Threads: as
 * hm_live_enter. HM_LIVE_CALL_VOID is the same macro, for readers who like to see the void. */
#define HM_LIVE_CALL(live, type, ...)                                                          \
  __extension__({                                                                              \
    hm_live *hm__l_ = (live);                                                                  \
    hm__live_call_qsbr() ? HM__LIVE_CALL_BARE(hm__l_, type, __VA_ARGS__)                       \
                         : HM__LIVE_CALL_MARKED(hm__l_, type, __VA_ARGS__);                    \
  })
/* The two ways of HM_LIVE_CALL and HM_LIVE_CALL_QSBR (not API): the bare indirection, on an
 * online QSBR thread; the call that marks itself, with its leave on unwinding. */
#define HM__LIVE_CALL_BARE(l, type, ...) HM__FN_CAST(type, hm__live_slot(l))(__VA_ARGS__)
#define HM__LIVE_CALL_MARKED(l, type, ...)                                                     \
  __extension__({                                                                              \
    struct hm__live_call hm__c_ __attribute__((cleanup(hm__live_call_leave))) = {(l), 0};      \
    HM__FN_CAST(type, hm__live_call_enter(&hm__c_))(__VA_ARGS__);                              \
  })
#define HM_LIVE_CALL_VOID HM_LIVE_CALL

/* HM_LIVE_CALL laid out for a thread of the QSBR flavour (hm_thread_qsbr): on an online QSBR
 * thread it is one compare of the thread's word and then the bare indirection, with no jump
 * taken; on any other thread (ordinary, or offline) it makes the ordinary call, as
 * HM_LIVE_CALL does, after that compare. So it is correct on every thread, and only its
 * cost differs: use it in the loops of QSBR threads, HM_LIVE_CALL elsewhere (where it would
 * add a compare to the ordinary call; HM_LIVE_CALL on a QSBR thread takes two jumps more).
 * Otherwise as HM_LIVE_CALL: `live` is evaluated once and must not be NULL; the call leaves
 * on unwinding; no NULL check of the function. Threads: as hm_live_enter. */
#define HM_LIVE_CALL_QSBR(live, type, ...)                                                     \
  __extension__({                                                                              \
    hm_live *hm__l_ = (live);                                                                  \
    __builtin_expect(HM__RD_QSBR_ON(hm__rdw), 1)                                               \
        ? HM__LIVE_CALL_BARE(hm__l_, type, __VA_ARGS__)                                        \
        : HM__LIVE_CALL_MARKED(hm__l_, type, __VA_ARGS__);                                     \
  })

/* HM_LIVE_CALL for code that runs only on online QSBR threads: in a build with NDEBUG
 * defined (CMake's Release and RelWithDebInfo), the bare indirection and nothing else (no
 * test of the thread's word: what a call through a table of function pointers costs, the
 * liburcu QSBR flavour's read side). Without NDEBUG it checks the thread first and aborts,
 * with a message on stderr, on a thread that is not an online QSBR thread. That is its whole
 * contract: used on an ordinary thread, or an offline one, in a build with NDEBUG, the call
 * marks nothing and the version it runs may be unloaded under it. Prefer HM_LIVE_CALL_QSBR
 * (one compare more, correct on every thread) unless that compare is measurable in your loop.
 * Otherwise as HM_LIVE_CALL: `live` is evaluated once and must not be NULL; no NULL check of
 * the function. Threads: online QSBR threads only (hm_thread_qsbr). */
#ifdef NDEBUG
#define HM_LIVE_CALL_QSBR_ONLY(live, type, ...) HM__LIVE_CALL_BARE((live), type, __VA_ARGS__)
#else
#define HM_LIVE_CALL_QSBR_ONLY(live, type, ...)                                                \
  __extension__({                                                                              \
    hm_live *hm__l_ = (live);                                                                  \
    if (!HM__RD_QSBR_ON(hm__rdw))                                                              \
      hm__rdw_not_qsbr();                                                                      \
    HM__LIVE_CALL_BARE(hm__l_, type, __VA_ARGS__);                                             \
  })
#endif

/* The live handle's module.
 * Ownership: borrowed, valid until hm_registry_free.
 * NULL: returns NULL.
 * Threads: any; also module code and a forked child. */
HM_EXTERN hm_module *hm_live_module(const hm_live *live);

/* Out-of-line versions of enter/leave, for bindings and compilers without GNU extensions,
 * and the ones ctx->api gives module code. Otherwise as hm_live_enter / hm_live_leave.
 * Ownership: as hm_live_enter.
 * NULL: hm_live_enter_fn(NULL) returns NULL without entering; hm_live_leave_fn(NULL) does
 * nothing.
 * Threads: as hm_live_enter. */
HM_EXTERN hm_fn hm_live_enter_fn(hm_live *live);
HM_EXTERN void hm_live_leave_fn(hm_live *live);

/* ---- Threads that report quiescent states (the QSBR flavour) ---------------------------- */

/* By default a live call marks the thread as inside it: its enter and its leave each store to
 * a word of the thread's own (a few instructions; 1-3 % of a 50 ns callee). A thread that
 * runs a loop may choose instead to say, between its calls, that it holds nothing, as
 * liburcu's QSBR flavour does: after hm_thread_qsbr(1), the thread's HM_LIVE_CALL and
 * HM_LIVE_CALL_QSBR (laid out for such threads) do no read-side work at all, a test of that
 * word and then the call (hm_live_enter / _leave and the _fn versions still count their
 * nesting in the word, with plain stores and no fence, so that the leave stays one
 * decrement on every thread), and the thread reports quiescent states instead:
 * hm_thread_quiescent(), any hm_registry_poll, or hm_thread_offline() before it blocks.
 * The contract: a quiescent state, and going offline, happen only outside every live call of
 * the thread (not in a callee of HM_LIVE_CALL or HM_LIVE_CALL_QSBR); one inside such a call
 * lets the version the call runs be unloaded under it. hotmod cannot check this (the calls
 * leave no trace): that is the price of calls that cost nothing. (Between hm_live_enter and
 * its leave, the counted nesting makes a quiescent state a no-op.)
 * The unload bound changes, for every registry of the process: a version retired while a
 * QSBR thread is online is unloaded only after that thread's next quiescent state (or its
 * going offline, or its exit), and then within about 4 ms as hm_live_enter says. So an
 * online QSBR thread that blocks (a wait, a sleep, a read) without going offline, or loops
 * without reporting, holds back the unloading of every version retired since, in every
 * registry of the process: reloads go on and succeed, but the old versions' mappings,
 * copies and memory accumulate. After 2 s of such a wait the reclaimer names the thread on
 * stderr (once per thread), and introspection (hm_module_info) lists it among the threads
 * that keep the version.
 * hm_thread_qsbr(1) makes the calling thread a QSBR thread, online, with a quiescent state
 * now (again: a quiescent state); hm_thread_qsbr(0) makes it an ordinary one again. A thread
 * that exits needs not undo it. While an online QSBR thread waits in hm_registry_free (for
 * the registry's reclaimer), it counts as offline. The flavour works the same with or
 * without membarrier(), and under ThreadSanitizer (it needs no barrier from the writer).
 * Ownership: none.
 * Threads: each thread chooses for itself; also in a forked child (the thread that forked
 * keeps its flavour and state there; the parent's other threads hold nothing in the child).
 * Not from inside a live call of the thread.
 * Errors: HM_EBUSY (called inside a live call of this thread that the library can see: an
 * ordinary one, or one made while offline), HM_EINVAL (`on` neither 0 nor 1). */
HM_EXTERN int hm_thread_qsbr(int on);

/* A quiescent state of the calling thread, if it is an online QSBR thread: it is outside
 * every live call, and no version it called until now is still in use by it. Two loads and a
 * compare when no grace period waits for the thread, a fenced store when one does. Does
 * nothing on an ordinary thread or an offline one.
 * Threads: the calling thread; never inside one of its own live calls (see hm_thread_qsbr). */
HM_EXTERN void hm_thread_quiescent(void);

/* hm_thread_offline: the calling QSBR thread is about to block or idle, outside every live
 * call; grace periods do not wait for it until hm_thread_online (going offline is also a
 * quiescent state). A live call made while offline is allowed and safe: it marks itself as
 * an ordinary call does (a fenced store on its enter, a store on its leave), and the thread
 * stays offline. hm_thread_online: back online, with a quiescent state now. Each is harmless
 * when the thread already is so.
 * Threads: the calling thread; not inside one of its live calls (see hm_thread_qsbr).
 * Errors: HM_EINVAL (not a QSBR thread), HM_EBUSY (hm_thread_online inside a call made while
 * offline: go online after it). */
HM_EXTERN int hm_thread_offline(void);
HM_EXTERN int hm_thread_online(void);

/* ---- Introspection ---------------------------------------------------------------------- */

/* What a running host holds, for tools (the control socket and hotmodctl use exactly this):
 * the modules, and for each its current version, counters, last refusal, rollback history
 * and every version hotmod still keeps, with why in the words of HM_MAPPED_MAP. Reading it
 * takes the registry's lock for a moment (and the list of threads that make live calls,
 * for "waiting for a grace period"), never a module's reload lock: it does not wait for a
 * reload under way, and no live call pays anything for it. A live call records no version,
 * so "which calls are inside version N" cannot be known; what is known is which threads are
 * inside a live call that began before version N was retired: those may be in it, and the
 * grace period waits for them. */

/* The first `max` modules of the registry into out[] (max may be 0, out then NULL), in the
 * order they were first loaded, unloaded ones included; returns how many there are (>= 0),
 * which may be more than max. Modules are never freed before the registry, so the pointers
 * stay valid (see hm_module_load).
 * Ownership: the pointers are borrowed; valid until hm_registry_free.
 * NULL: `reg` NULL, or `out` NULL with max > 0, is HM_EINVAL.
 * Threads: any; also module code and a forked child.
 * Errors: HM_EINVAL. */
HM_EXTERN int hm_registry_modules(hm_registry *reg, hm_module **out, size_t max);

/* How many thread ids hm_version_info keeps for a version that waits for a grace period. */
#define HM_INFO_THREADS 8

/* One version hotmod keeps, in hm_module_info.versions. May grow at the end in later
 * versions (see hm_module_describe_get). */
typedef struct hm_version_info {
  unsigned version;  /* its number (hm_module_version's numbering) */
  unsigned build;    /* which load of the module's files it is (1, 2 ...): a rollback makes
                        an older build current under a new number; 0 where not known (a
                        version kept for good is known by its number only) */
  unsigned why;      /* every reason hotmod keeps it, one bit per reason of HM_MAPPED_MAP
                        (1u << HM_MAPPED_CURRENT ...): for a mapped version, why it is
                        mapped (and HM_MAPPED_ROLLBACK if hm_module_rollback would go back to
                        it); for one that is not, why its private copy is kept */
  unsigned snapshots; /* with HM_MAPPED_PINNED: how many snapshots pin it */
  int mapped;        /* 1: loaded in the process; 0: only its private copy is kept (the
                        rollback copy) */
  long long loaded_ns; /* when it was loaded (CLOCK_REALTIME, ns), or for a version kept for
                          good when that was reported; 0 where not known */
  unsigned long long bytes; /* a version kept for good: what its mapping keeps (as its
                               HM_EVENT_LEAKED said); else 0 */
  unsigned nthreads; /* with HM_MAPPED_GRACE: the threads inside a live call that began
                        before the version was retired (the first HM_INFO_THREADS of their
                        kernel thread ids, as gettid() gives them, in threads[]) */
  int threads[HM_INFO_THREADS];
  const char *note;  /* the build's note where hotmod knows one: for a build verified with
                        trusted keys, its signature's trusted comment ("build 1234 from
                        CI"), also for the rollback copy; "" for a build loaded without
                        keys and for a version kept for good. Never NULL; owned as the
                        info's strings */
} hm_version_info;

/* One module, as hm_module_describe_get describes it. May grow at the end in later versions:
 * hm_module_describe_get is given the caller's size. The strings and the array are the info's
 * own copies, taken under the registry's lock, so they stay as they were when it was read:
 * valid until hm_module_info_clear (also after the module changes, and after
 * hm_registry_free). */
typedef struct hm_module_info {
  void *hm__mem;        /* the library's: the memory below; hm_module_info_clear frees it */
  hm_module *module;    /* the module described (borrowed: valid until hm_registry_free) */
  const char *name;     /* its name */
  const char *path;     /* its source path, as given (hm_module_path) */
  unsigned version;     /* its current version; 0 while unloaded */
  unsigned build;       /* the current version's build (see hm_version_info.build) */
  int reload_mode;      /* the mode in force for the watcher and the control socket:
                           HM_RELOAD_IMMEDIATE or HM_RELOAD_QUEUED (the module's own, else
                           the registry's) */
  int watch_method;     /* hm_module_watch_method */
  long long loaded_ns;  /* when the current version was loaded (CLOCK_REALTIME, ns); 0 while
                           unloaded */
  unsigned long long reloads;   /* versions that replaced a current one (not first loads,
                                   not rollbacks) */
  unsigned long long rejects;   /* builds refused: the module's HM_EVENT_REJECTED events */
  unsigned long long rollbacks; /* successful hm_module_rollback calls */
  long long last_reject_ns; /* when the last refusal was (CLOCK_REALTIME, ns); 0: none yet */
  int last_reject_err;      /* its error code */
  unsigned last_reject_version; /* the version that served on */
  const char *last_reject;  /* its detail, as hm_event_detail() gave it; "" for none */
  size_t nhistory;          /* the builds rollback goes back through, oldest first: */
  const unsigned *history;  /* hm_module_rollback returns to history[nhistory - 1] while it
                               is mapped or its copy is kept (a version in `versions` with
                               that build and HM_MAPPED_ROLLBACK); older ones only while
                               mapped. NULL when nhistory is 0 */
  size_t live_slots;        /* the symbols its live handles use (each must resolve in every
                               new build) */
  int prepared;             /* queued mode: a build is prepared and waits for the poll (it is
                               in `versions` with HM_MAPPED_PREPARED) */
  size_t nversions;         /* every version hotmod keeps, newest first (of the versions
                               kept for good, the last 4096 reported): */
  const hm_version_info *versions;
  /* Added after the first version of the struct (a caller built with an older header
   * passes a size that ends above, and gets the fields above): the build signature the
   * current version was verified with when it loaded, as hm_module_build_signed gives it.
   * Never NULL; owned as the info's strings. */
  const char *key_id;          /* the signing key's id in hex, as minisign prints it (at most
                                  16 digits); "" when the current version was loaded without
                                  trusted keys, or the module is unloaded */
  const char *trusted_comment; /* the signature's verified trusted comment (minisign's
                                  default "timestamp:T file:NAME hashed", or the signer's own
                                  `-t` text); "" as key_id, and for a signature whose comment
                                  is empty (key_id tells a signed build) */
} hm_module_info;

/* Describe the module into the first `size` bytes of *out; call it through hm_module_describe,
 * which passes sizeof(hm_module_info) as the caller's header defines it (a larger size
 * fills only what this library has). A consistent
 * picture taken under the registry's lock (a reload on another thread is either in it or
 * not); the threads of a grace period are read just after, from the list of threads that
 * make live calls. Release it with hm_module_info_clear.
 * Ownership: *out's strings and arrays are allocated with the registry's allocator and
 * freed by hm_module_info_clear, which works after hm_registry_free too (the allocator must
 * still work then); `module` is borrowed. On error *out is cleared (nothing to free).
 * NULL: `mod` or `out` NULL is HM_EINVAL.
 * Threads: any, concurrently with reloads, rollbacks, polls and live calls of the module;
 * also module code and a forked child.
 * Errors: HM_EINVAL (NULL, or a size smaller than the first version of the struct: its
 * fields up to `versions`), HM_ENOMEM. */
HM_EXTERN int hm_module_describe_get(hm_module *mod, hm_module_info *out, size_t size);
static inline int hm_module_describe(hm_module *mod, hm_module_info *out) {
  return hm_module_describe_get(mod, out, sizeof *out);
}

/* Free what hm_module_describe_get put in *info, and clear its pointers (those within the
 * size it was filled with).
 * Ownership: frees the info's strings and arrays (not the struct itself, the caller's).
 * NULL: a no-op, as is an info cleared before or filled by a failed call.
 * Threads: any. */
HM_EXTERN void hm_module_info_clear(hm_module_info *info);

/* ---- Watching and queued reloads ------------------------------------------------------- */

/* The watcher follows the file of every loaded module: those loaded before it starts and
 * after. A module unloaded with hm_module_unload stops being watched, and is watched again
 * when it is loaded again; hm_module_reload_from moves the watch to the new path. A relative
 * path is taken against the directory that was current when it was given (hm_module_load),
 * not the current directory of the moment.
 *
 * It watches what the path means: the directory of every symlink met along the path and
 * the directory of the file it ends at. When a symlink on the way changes (a deploy that
 * flips `current -> releases/42` with ln -sfn, or a module path that is itself a link and
 * is replaced), the path is resolved again and the file it now names is a new build; writes
 * into a directory the path no longer leads to are ignored.
 *
 * A new build is taken once its writer is done, as the kernel knows it (and never by
 * guessing from a quiet period where the kernel can tell):
 *  - HM_WATCH_LEASE: a read lease cannot be taken while any process has the file open for
 *    writing or mapped shared-writable (as gold writes). Needs the file's owner (or
 *    CAP_LEASE) and a filesystem with leases (ext4, xfs, btrfs, tmpfs...). The lease is held
 *    for microseconds; the kernel's lease-break signal is set to SIGURG or SIGWINCH, one
 *    that the host does not handle (if it handles both, this method is not used).
 *  - HM_WATCH_EVENTS: otherwise, inotify's events: a file closed after writing (or renamed
 *    into place) and not written since. A second writer that has the file open but has not
 *    written yet is not seen this way. A complete file that no such close vouches for (at
 *    the watch's start, a file created without a write seen) waits for quiet_ms first.
 *  - HM_WATCH_TIMING: where neither can tell (events were lost, or the host forced it),
 *    once the file's size, mtime and inode held still for quiet_ms. A file that is not
 *    complete is then waited for, never refused; but a write through a shared mapping that
 *    changes neither size nor mtime (the end of a gold link) cannot be seen this way.
 * hm_module_watch_method tells which is in force for a module. A finished file that is a
 * complete ELF shared object whose bytes differ from the current version's is a new build
 * (identical bytes, a touch, are no change). The watcher sends HM_EVENT_CHANGED for it, then
 * by the module's reload mode reloads the module at once on the watcher's thread
 * (HM_RELOAD_IMMEDIATE; LOADED or REJECTED follow there) or prepares it for hm_registry_poll
 * (HM_RELOAD_QUEUED: loaded on the watcher's thread, REJECTED there if it fails, published
 * by the poll). The bytes it checked are the bytes it loads.
 *
 * HM_EVENT_REJECTED from the watcher always means a finished file was refused: not an ELF
 * shared object, incomplete although its writer closed it, a missing symbol, a hook that
 * refused, the wrong ABI. Such a refusal holds for those bytes while the same version is
 * current; any change of the file is looked at afresh. Failures that a later try may not
 * meet (out of memory or descriptors, I/O errors, a dependency that dlopen cannot find yet,
 * a file this process may not open yet: `install -m755` by another user makes it 0600 and
 * chmods it only after writing it) are retried after 0.1, 0.2, 0.4, 0.8 and 1.6 s with no
 * event, and sooner at the file's next change (the chmod); one that outlasts that is
 * reported as REJECTED, and tried again at the file's next change. A deleted file leaves the
 * current version serving; the next file to appear at the path is taken.
 *
 * A watch that cannot be set up (out of memory, inotify's limit on watches) is tried again
 * every 0.25 s. Meanwhile hm_module_watch_method says HM_WATCH_NONE, and after about 3 s
 * HM_EVENT_WATCH_FAILED says what cannot be watched and why, once until it succeeds; then
 * the module's file is looked at afresh, so a build made meanwhile is not missed. The same
 * holds for the directories of a build rule's sources (saves made before their watch
 * succeeds start no build). A directory that is not there is no failure: it is looked for
 * every 0.25 s, and the module counts as watched.
 *
 * Post-link steps that rewrite a finished output (strip, objcopy, patchelf) make a second
 * finished file, and so a second version, unless the registry's settle_ms is set: then a
 * finished build is loaded only once nothing has touched it for settle_ms. */

/* Which of the methods above tells the watcher that a module's file is finished. */
typedef enum hm_watch_method {
  HM_WATCH_NONE = 0,   /* the module is not watched (no watcher, unloaded, not yet seen, or
                          its watch could not be set up: HM_EVENT_WATCH_FAILED) */
  HM_WATCH_LEASE = 1,  /* kernel leases: any writer, including shared writable mappings */
  HM_WATCH_EVENTS = 2, /* inotify: written, then closed after writing */
  HM_WATCH_TIMING = 3  /* the quiet period: a fallback, see above */
} hm_watch_method;

/* The method the watcher last went by for the module's file (an hm_watch_method). The
 * environment variable HOTMOD_WATCH_METHOD=events or =timing, read when the watcher starts,
 * forces a weaker method (for tests and diagnosis).
 * NULL: returns 0 (HM_WATCH_NONE).
 * Threads: any; also module code and a forked child.
 * Errors: none: it returns a method, never an error code. */
HM_EXTERN int hm_module_watch_method(const hm_module *mod);

/* Start the watcher on a thread and a libuv loop of the registry's own (to run it on the
 * host's loop instead, see hm_watch_attach in hotmod/uv.h). Its thread runs the event
 * callback for CHANGED events and, in immediate mode, the reloads and their events; in
 * queued mode, the preparation of each build (see hm_registry_poll), its module's
 * constructors and its REJECTED events.
 * Descriptors: a running watcher holds 5 (its loop's epoll, signal pipe and eventfd, and
 * its inotify descriptor), and the first libuv loop of the process, this one or the host's,
 * also makes libuv's process-wide signal pipe (2, kept until exit, by libuv's design). The
 * start checks that 7 are free (5 after a watcher of this process has started once) before
 * it asks libuv for any, and fails with -EMFILE (or -ENFILE) otherwise, rather than let
 * libuv abort the process or leak one. Only another thread that takes descriptors between
 * that check and libuv's use can still make libuv fail as it would without the check (on
 * the process's first loop: abort); a host that starts the watcher before other threads
 * open files, or keeps descriptors to spare, rules that out.
 * Ownership: the registry owns the watcher; hm_watch_stop or hm_registry_free ends it.
 * NULL: HM_EINVAL.
 * Threads: any; of two concurrent starts one gets HM_EALREADY. From module code: HM_EBUSY.
 * Errors: HM_EINVAL, HM_EALREADY (a watcher runs), HM_ENOMEM, HM_EBUSY, HM_EFORKED, or a
 * libuv or system error, passed through as the negative errno value it is (e.g. -EMFILE:
 * too few free descriptors, or no inotify instance). On error no watcher runs. */
HM_EXTERN int hm_watch_start(hm_registry *reg);

/* Stop the watcher started by hm_watch_start or hm_watch_attach (hotmod/uv.h), waiting for
 * its thread to finish (a reload under way completes first). Reloads already prepared stay
 * prepared for hm_registry_poll. hm_registry_free calls it.
 * NULL: a no-op; so is a registry with no watcher running, or one inherited by a forked
 * child.
 * Threads: any, except that a watcher attached to a host loop must be stopped on that
 * loop's thread. From the event callback on the watcher's own thread, and from module code,
 * it does not wait: no reload starts after the call and the thread ends by itself (the next
 * hm_watch_start or hm_registry_free joins it). */
HM_EXTERN void hm_watch_stop(hm_registry *reg);

/* Put the module in the watcher's group called `name` (NULL or "": in none), so that builds
 * of several members that finish together are applied as one group reload
 * (hm_registry_reload_group), never one after the other: the way to deploy an interface
 * change between modules by rebuilding them (one `cmake --build` of their targets).
 * When a finished new build of a member is found, the watcher holds it (HM_EVENT_CHANGED is
 * sent at once) and waits: for group_ms (hm_registry_options) after the last member's build
 * finished, and for as long as any member's file is being written (a writer has it open, or
 * wrote it and has not closed it, or it waits for its quiet period or settle delay), but
 * never more than 30 s after the first build it holds. Then it applies every build it holds
 * for the group: two or more as one group reload (the members' hooks in the order the
 * modules were first loaded), in immediate mode on its thread; in queued mode it prepares
 * them on its thread as one group, and the next hm_registry_poll publishes all of them in
 * one step or none (it never publishes part of a group; the group's mode is that of its
 * member loaded first). A member rebuilt alone reloads alone, as without a group, once the
 * wait is over. If the group is refused, one HM_EVENT_REJECTED names the member that
 * failed, and every member's build stays held for the group's next build, whichever
 * member's it is (the refusal may be another member's fault: a load hook that refuses
 * because the other's build lacks what it needs): fixing one member's build applies them
 * all again. A failure a later try may not meet is retried as for any module, and the
 * retried builds are held for the group again.
 * Settings take effect for builds found from then on.
 * Ownership: `name` is copied.
 * NULL: `mod` NULL is HM_EINVAL; `name` NULL leaves every group.
 * Threads: any. Not among the calls allowed to module code (not refused there either).
 * Errors: HM_EINVAL, HM_ENOMEM. */
HM_EXTERN int hm_module_set_group(hm_module *mod, const char *name);

/* Set one module's reload mode (HM_RELOAD_DEFAULT: follow the registry). It applies to the
 * changes the watcher sees from then on; a reload already prepared stays prepared (the next
 * poll publishes it, the next reload of the module drops it).
 * NULL: HM_EINVAL.
 * Threads: any; also module code.
 * Errors: HM_EINVAL (NULL module, unknown mode). */
HM_EXTERN int hm_module_set_reload_mode(hm_module *mod, hm_reload_mode mode);

/* Publish the reloads the watcher prepared for modules in HM_RELOAD_QUEUED mode, and return
 * how many it published (>= 0).
 * What runs where: for a finished new build the watcher does, on its own thread, everything
 * callers cannot see: it reads the file, checks it, makes the private copy and dlopens it
 * (the module's constructors run there), then resolves the symbols of the module's live
 * handles and checks the signatures of typed ones. A build that fails there is REJECTED from
 * the watcher's thread (hm_event_detail says why), and the poll never sees it. The poll runs
 * only the rest, on the calling thread: the symbols of live handles taken since the build
 * was prepared, the state hooks (save, then the new version's load hook), the publish, and
 * the LOADED, WARNING and RETIRED events. A failure there (a symbol or signature a handle
 * taken since the preparation needs, a load hook that refuses) is REJECTED from the poll.
 * A module holds at most one prepared build: a newer build replaces it (the older one is
 * unloaded on the watcher's thread, with no event). A prepared build is also dropped
 * quietly once it no longer follows the current version: after an explicit reload,
 * rollback or unload of the module that succeeds (on that call's thread), or when the file
 * goes back to the current version's bytes. hm_registry_free unloads one still waiting. Failures a later try may not meet are
 * retried by the watcher, as in immediate mode, and prepared again. The poll never waits
 * for a load: a module whose newer build the watcher is preparing at that moment, or that
 * another thread is reloading, is left for the next poll; nor for another module's
 * constructor or destructor (see "The dynamic loader's lock" above): a build the poll
 * refuses is unloaded on the registry's reclaimer thread.
 * Call it at a safe point of the host (a frame boundary, between requests): no reload
 * changes what callers see at any other time.
 * NULL: HM_EINVAL.
 * On a thread that reports quiescent states (hm_thread_qsbr), a poll is one: it calls
 * hm_thread_quiescent first (unless it fails with HM_EINVAL or HM_EBUSY), so a QSBR loop
 * that polls needs nothing more.
 * NULL: HM_EINVAL.
 * Threads: any; a module's prepared reload is taken by one poller only. From module code:
 * HM_EBUSY.
 * Errors: HM_EINVAL, HM_EBUSY, HM_EFORKED. (A refused build is not an error of the poll: its
 * REJECTED event tells.) */
HM_EXTERN int hm_registry_poll(hm_registry *reg);

/* ---- Build rules: edit, build, reload ------------------------------------------------- */

#define HM_BUILD_SHELL 0x1u        /* argv[0] is a shell command line, run by /bin/sh -c
                                      (argv[1...] become $0, $1 ...); otherwise argv is run as
                                      it is, with no shell */
#define HM_BUILD_NO_DEFAULT_EXCLUDES 0x2u /* do not apply HM_BUILD_DEFAULT_EXCLUDES */

/* What every build rule ignores unless it sets HM_BUILD_NO_DEFAULT_EXCLUDES: editors' and
 * tools' swap, backup, lock, probe and temporary files (vim's .x.c.swp and the other swap
 * names down to .x.c.saa, its .x.c.swx name test and 4913; nano's .x.c.swp; emacs's #x.c#,
 * .#x.c and flycheck_x.c; x.c~; gedit's .goutputstream-*; JetBrains' x.c___jb_tmp___ and
 * x.c___jb_old___; the files that sed -i (sedXXXXXX) and clang-format -i (x.c-XXXXXXXX)
 * write and rename over the source) and build products (objects, libraries, and the
 * temporary files linkers rename over them). git checkout and nano write the source
 * itself. Patterns for fnmatch(), matched against a file's name. */
#define HM_BUILD_DEFAULT_EXCLUDES                                                              \
  ".*.s[a-w][a-z]", "*~", "4913", "#*#", ".#*", "flycheck_*", ".goutputstream-*",              \
      "*___jb_tmp___", "*___jb_old___", "sed" HM__ALNUM6,                                      \
      "*-" HM__HEX4 HM__HEX4, "*.o", "*.a", "*.so", "*.so.*", "*.tmp"
/* Pieces of the patterns above: six letters or digits (mkstemp's XXXXXX), four hex digits. */
#define HM__ALNUM "[A-Za-z0-9]"
#define HM__ALNUM6 HM__ALNUM HM__ALNUM HM__ALNUM HM__ALNUM HM__ALNUM HM__ALNUM
#define HM__HEX "[0-9a-f]"
#define HM__HEX4 HM__HEX HM__HEX HM__HEX HM__HEX

/* The version of hm_build_options this header defines (fields up to output_max). */
#define HM_BUILD_OPTIONS_VERSION 1

/* A module's build rule (hm_module_set_build). Start from HM_BUILD_OPTIONS_INIT so new
 * fields keep their defaults when the struct grows. Lists end with a NULL entry. Everything
 * is copied by the setter; nothing is kept by reference. */
typedef struct hm_build_options {
  unsigned version;            /* HM_BUILD_OPTIONS_VERSION */
  unsigned flags;              /* HM_BUILD_... */
  const char *const *argv;     /* the command: argv[0] is looked up in PATH (the host's) when
                                  it has no '/'; required, non-empty */
  const char *const *sources;  /* files and directories to watch; required, non-empty. A
                                  directory stands for the files directly in it (not its
                                  subdirectories). Relative paths are taken against `cwd`
                                  if set, else the module's directory (below) */
  const char *const *include;  /* fnmatch() patterns on the names of files in a source
                                  directory: only those that match one count (NULL: all) */
  const char *const *exclude;  /* patterns of names that never count, added to
                                  HM_BUILD_DEFAULT_EXCLUDES; they apply to a source given
                                  as a file too */
  const char *cwd;             /* the command's working directory (NULL: the module's
                                  directory: the one its relative path was taken against,
                                  the current directory of the hm_module_load or
                                  hm_module_reload_from that gave its path; for a path given
                                  absolute whose directory could not be had, the current
                                  directory at the setter's call); relative: against the
                                  module's directory */
  const char *const *env;      /* "NAME=value" set, or "NAME" removed, in the command's
                                  environment, which is the host's otherwise (NULL: none) */
  unsigned timeout_ms;         /* the command's process group is killed (SIGKILL) after this
                                  long; 0: 600000 (ten minutes) */
  unsigned output_max;         /* bytes of output kept for the events (the first ones; a
                                  note says how much more was dropped); 0: 65536 */
} hm_build_options;

/* The defaults, with version HM_BUILD_OPTIONS_VERSION. */
#define HM_BUILD_OPTIONS_INIT                                                                  \
  { HM_BUILD_OPTIONS_VERSION, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0 }

/* Give the module a build rule (NULL `opts`: remove it): when one of its sources is written
 * and closed, or renamed into place (as editors save), the watcher runs the command, which
 * should rebuild the module's file. The new file then reaches the module through the
 * watcher like any other build, with all of the watcher's checks: a failed build leaves the
 * current version serving. Files the command writes must be outside the sources, or
 * excluded (the defaults exclude objects and libraries), or each build starts another.
 *
 * Scheduling: the first completed write starts the build at once (no delay); changes while
 * it runs are folded into exactly one more build, started when it ends. At most one build
 * per module runs at a time; builds of different modules may overlap.
 *
 * The command runs on the watcher's loop without blocking it, as a child started with
 * posix_spawn (not libuv's uv_spawn, which would install a process-wide SIGCHLD handler in
 * place of the host's), in a process group of its own, with stdin on /dev/null and its
 * stdout and stderr on one pipe (in the order written; the first output_max bytes are kept).
 * Its end is seen through a pidfd, and only its own pid is waited for, so the host's other
 * children are not touched; but a host that ignores SIGCHLD, or reaps every child with
 * waitpid(-1), takes the build's exit status (HM_EVENT_BUILD_FAILED with -ECHILD; what the
 * build wrote still reaches the module). When the command exits, whatever it left running
 * in its process group is killed. After timeout_ms, and when the watcher stops (hm_watch_stop,
 * hm_registry_free), the whole group is killed and the command reaped before that call
 * returns (on a host loop: hm_watch_stop, on the loop's thread), with no event: no child is
 * left behind. A rule removed or replaced while its command runs has the command killed the
 * same way on the loop's next turn (HM_EVENT_BUILD_FAILED, -ECANCELED); a replacing rule
 * then builds at once.
 *
 * Events, on the watcher's thread: HM_EVENT_BUILD_STARTED, then HM_EVENT_BUILD_SUCCEEDED or
 * HM_EVENT_BUILD_FAILED (hm_event_build and hm_event_detail give status, duration and
 * output inside the callback). Without a running watcher (hm_watch_start or
 * hm_watch_attach), and while the module is unloaded, the rule does nothing; a rule set
 * while a watcher runs takes effect on its loop's next turn. Setting a rule starts no build
 * by itself.
 *
 * Ownership: `opts` is read during the call only; everything in it is copied.
 * NULL: `mod` NULL is HM_EINVAL; `opts` NULL removes the rule.
 * Threads: any; also from the event callback (on the watcher's thread too). Not among the
 * calls allowed to module code (not refused there either).
 * Errors: HM_EINVAL (options version not 1 to HM_BUILD_OPTIONS_VERSION; no argv or
 * sources; an empty path), HM_ENOENT (cwd is not a directory), HM_ENOMEM, HM_EFORKED, or
 * the errno of getcwd. On error the module's rule is unchanged. */
HM_EXTERN int hm_module_set_build(hm_module *mod, const hm_build_options *opts);

/* ---- The control socket --------------------------------------------------------------- */

/* Serve the registry at the Unix stream socket `path`, on a thread of its own, for
 * `hotmodctl --socket PATH` (installed beside hotmod-check): status (every module, its
 * versions and why each is kept: hm_module_describe), metrics (the Prometheus text format),
 * events (each event as it is delivered), reload MODULE [FILE] and rollback MODULE. The
 * host's threads do nothing for it: commands run on the server's thread (a reload there
 * as hm_module_reload would on any thread), and it needs no watcher.
 *
 * Who gets in: the socket is made mode 0600, and only in a directory that this process's
 * effective user owns and that nobody else may enter (mode 0700 or stricter, as
 * $XDG_RUNTIME_DIR is): HM_EACCES otherwise, with the directory's mode and owner in the
 * message. Every connection's peer credentials (SO_PEERCRED) are checked again: the same
 * effective user or root, anyone else gets an error line and is counted (the events carry
 * no such event: they are about modules). An existing path is taken over only when it is a
 * socket that nobody listens on (a server that died), decided under a lock on the
 * directory; a file that is not a socket, or a live socket, is HM_EEXIST. The socket and
 * its connections are close-on-exec; a forked child closes them at once and never removes
 * the parent's path; children hotmod starts (build commands, the probe) get HOTMOD_CONTROL
 * removed from their environment.
 *
 * Requests: one line each, at most 4096 bytes, sent whole within 5 s of connecting; a
 * malformed, oversized or half-sent one gets an error line ("error HM_EINVAL ..." or
 * "error HM_ETIMEDOUT ...") and the connection closed, and changes nothing. At most 32
 * connections at once (more get "error HM_EAGAIN"), of them 8 streaming events. An events
 * client that reads too slowly never holds anyone up: each has a queue of 256 events, and
 * what does not fit is dropped, counted (in status and metrics) and told to that client in
 * a "# dropped N events" line.
 *
 * Reload and rollback follow the module's reload mode. Immediate: done at once on the
 * server's thread (the reply says the version, or the error's name and message). Queued:
 * prepared on the server's thread as the watcher prepares a build (read, check, copy,
 * dlopen, the live handles' symbols; a rollback finds or reloads its older build), and the
 * host's next hm_registry_poll publishes it, at the host's safe point; the reply says
 * "queued" (hotmodctl's exit status 3). A reload from another FILE published that way makes
 * FILE the module's path, as hm_module_reload_from does. A module holds one prepared build:
 * a newer one (the watcher's, or another command's) replaces it quietly.
 *
 * HOTMOD_CONTROL=PATH in the environment (read with secure_getenv at hm_registry_new) makes
 * the process's first registry serve at PATH with no code in the host; later registries
 * serve only if their host calls this. If it cannot serve, one line on stderr says why and
 * the registry works without it. A call of this function on that registry replaces it (a
 * setting in code wins). Call hm_control_stop to stop; hm_registry_free does.
 * Ownership: `path` is copied. The server is the registry's.
 * NULL: `reg` or `path` NULL (or an empty path) is HM_EINVAL.
 * Threads: any; not from the server's own thread (an event callback of a reload it runs:
 * HM_EBUSY). From module code: HM_EBUSY.
 * Errors: HM_EINVAL (also: a path of 108 bytes or more, or not ending in a name),
 * HM_EALREADY (the registry serves one already), HM_EACCES (the directory), HM_EEXIST (the
 * path is taken), HM_ENOMEM, HM_EBUSY, HM_EFORKED, or the errno of the failed system call
 * (e.g. HM_ENOENT: no such directory). */
HM_EXTERN int hm_control_start(hm_registry *reg, const char *path);

/* Stop serving: the connections are closed, the server's thread joined, and the socket's
 * path removed (if it is still this server's). A command under way finishes first.
 * NULL: a no-op; so is a registry that serves nothing, and one inherited by a forked child.
 * Threads: any. From the server's own thread (an event callback of a reload it runs) it
 * does not wait: the server ends after that command, and the next hm_control_start or
 * hm_registry_free joins its thread. */
HM_EXTERN void hm_control_stop(hm_registry *reg);

/* ---- Internals the inline fast path needs (not API: do not use directly) ---------------- */

/* A live handle begins with this: where its module's current function table is published,
 * and its slot in that table. */
struct hm__live_head {
  hm_fn **table;
  size_t slot;
};

/* The read side of the grace-period scheme (src/reclaim.c explains it) is one thread-local
 * word, hm__rdw. The low half of the word holds the depth of the thread's nested live calls
 * and, in its top bit, HM__RD_SLOW, which sends the thread's next outermost enter to the slow
 * path (the thread has not registered yet, or readers order their stores themselves: no
 * membarrier, or TSan); the high half holds the grace period the outermost call entered in.
 * So "outermost, fast" is "low half zero", one test. hm__gpw is the current grace period in
 * the same layout, with a depth of 1 and HM__RD_SLOW while readers must fence: the outermost
 * enter of a registered thread copies it into hm__rdw as it is. */
#define HM__RD_SLOW (1UL << (sizeof(unsigned long) * 4 - 1))
/* Below it, two more flags: the thread reports quiescent states (hm_thread_qsbr), and it is
 * offline (hm_thread_offline). An online QSBR thread's word has HM__RD_SLOW too, so the test
 * of an ordinary outermost enter sends it off the ordinary path, to a second test only
 * (HM__RD_QSBR_ON): its calls change nothing; its word's grace period is that of its last
 * quiescent state. An offline one's calls mark themselves as ordinary calls do, through the
 * slow path. */
#define HM__RD_QSBR (HM__RD_SLOW >> 1)
#define HM__RD_OFFLINE (HM__RD_SLOW >> 2)
#define HM__RD_DEPTH (HM__RD_OFFLINE - 1)
/* The whole low half: depth and flags. An online QSBR thread's is exactly HM__RD_QSBR and
 * HM__RD_SLOW (its calls have no depth), one compare. */
#define HM__RD_LOW (HM__RD_SLOW | (HM__RD_SLOW - 1))
#if defined(__SIZEOF_LONG__) && __SIZEOF_LONG__ == 8
#define HM__RD_LOW_OF(w) HM__CAST(unsigned int, w) /* a compare of the 32-bit register */
#else
#define HM__RD_LOW_OF(w) ((w) & HM__RD_LOW)
#endif
#define HM__RD_QSBR_ON(w) (HM__RD_LOW_OF(w) == (HM__RD_QSBR | HM__RD_SLOW))

/* The library's own code and the tests take the fenced path under ThreadSanitizer. */
#if defined(__SANITIZE_THREAD__)
#define HM__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HM__TSAN 1
#endif
#endif

HM_EXTERN extern __thread unsigned long hm__rdw __attribute__((tls_model("initial-exec")));
HM_EXTERN extern unsigned long hm__gpw;
HM_EXTERN extern int hm__rdw_fenced;
HM_EXTERN void hm__rdw_enter_slow(void);
HM_EXTERN void hm__rdw_unbalanced(void);
HM_EXTERN void hm__rdw_not_qsbr(void);

/* Casts that C++ hosts see as C++ casts (-Wold-style-cast). */
#ifdef __cplusplus
#define HM__CAST(type, expr) static_cast<type>(expr)
#define HM__FN_CAST(type, expr) reinterpret_cast<type>(expr)
#else
#define HM__CAST(type, expr) ((type)(expr))
#define HM__FN_CAST(type, expr) ((type)(expr))
#endif

/* The enter of a live call: the thread's word (hm__rdw) goes into the read section, and the
 * word it now holds is returned, for a leave that restores it without reading it. */
static inline unsigned long hm__rd_enter(void) {
  unsigned long w;
  /* A plain read, so that the test can be one instruction: only this thread writes its
   * word (the others only read it). */
  if (__builtin_expect(HM__RD_LOW_OF(w = hm__rdw) == 0, 1)) {
    /* Outermost call of a registered thread: the writer's membarrier() orders this store
     * before our load of the table. */
    w = __atomic_load_n(&hm__gpw, __ATOMIC_ACQUIRE);
    __atomic_store_n(&hm__rdw, w, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
  } else if (__builtin_expect((w & HM__RD_DEPTH) != 0 || HM__RD_QSBR_ON(w), 1)) {
    /* Nested: the outer call protects. Or an online QSBR thread, which its quiescent states
     * protect: the depth only keeps its word right for hm_live_leave's decrement (and makes
     * a quiescent state inside the call a no-op). HM_LIVE_CALL does not come here. */
    w = __atomic_load_n(&hm__rdw, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(&hm__rdw, w, __ATOMIC_RELAXED);
  } else {
    hm__rdw_enter_slow(); /* first call on this thread, or fenced readers */
    w = __atomic_load_n(&hm__rdw, __ATOMIC_RELAXED);
  }
  return w;
}

static inline hm_fn hm__live_slot(hm_live *live) {
  const struct hm__live_head *h =
      HM__CAST(const struct hm__live_head *, HM__CAST(const void *, live));
  hm_fn *fns = __atomic_load_n(h->table, __ATOMIC_SEQ_CST);
  return fns[h->slot];
}

static inline hm_fn hm_live_enter(hm_live *live) {
  (void)hm__rd_enter();
  return hm__live_slot(live);
}

static inline void hm_live_leave(hm_live *live) {
  (void)live;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
#if defined(__x86_64__) && defined(__LP64__) && defined(NDEBUG) && !defined(HM__TSAN)
  /* One instruction, a decrement in memory (of 64 bits: not on x32, whose long has 32).
   * Only this thread writes its word, and others only read it, so the read-modify-write
   * needs no lock prefix; x86-64 keeps the call's loads before this store (a release), and
   * the asm keeps the compiler from moving memory accesses across it. */
  __asm__ __volatile__("subq $1, %0" : "+m"(hm__rdw) : : "memory");
#else
  {
    unsigned long w = __atomic_load_n(&hm__rdw, __ATOMIC_RELAXED);
#ifndef NDEBUG
    if (__builtin_expect((w & HM__RD_DEPTH) == 0, 0))
      hm__rdw_unbalanced();
#endif
    __atomic_store_n(&hm__rdw, w - 1, __ATOMIC_RELEASE);
  }
#endif
}

/* HM_LIVE_CALL's state: the handle, and the word its enter left in hm__rdw. Calls nest in
 * strict order, so at the leave the word is that one again, and the leave stores it less one
 * without reading it: a plain store of a register, where hm_live_leave must read the word
 * and write it back. */
struct hm__live_call {
  hm_live *live;
  unsigned long word;
};

/* HM_LIVE_CALL's choice: 1 on an online QSBR thread, whose calls are the bare indirection
 * (no enter, no leave, nothing to clean up); otherwise the ordinary call. Tested so that an
 * ordinary outermost call sees the one test of hm__rd_enter (the compiler merges the two):
 * only a word whose low half is not zero goes on to the QSBR test. */
static inline int hm__live_call_qsbr(void) {
  unsigned long w = hm__rdw;
  if (__builtin_expect(HM__RD_LOW_OF(w) == 0, 1))
    return 0;
  return __builtin_expect(HM__RD_QSBR_ON(w), 1);
}

static inline hm_fn hm__live_call_enter(struct hm__live_call *c) {
  c->word = hm__rd_enter();
  return hm__live_slot(c->live);
}

/* HM_LIVE_CALL's cleanup: runs when the call's scope ends, by return or by unwinding. A
 * release store: the call's loads of the version's memory come before it. */
static inline void hm__live_call_leave(struct hm__live_call *c) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
#ifndef NDEBUG
  if (__builtin_expect(__atomic_load_n(&hm__rdw, __ATOMIC_RELAXED) != c->word, 0))
    hm__rdw_unbalanced();
#endif
  __atomic_store_n(&hm__rdw, c->word - 1, __ATOMIC_RELEASE);
}

#ifdef __cplusplus
}
#endif

#endif /* HOTMOD_H */
