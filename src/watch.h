/* The watcher's private pieces, shared by watch.c and watchpath.c. */
#ifndef HM_WATCH_H
#define HM_WATCH_H

#include "registry.h"

#include <sys/inotify.h>
#include <uv.h>

/* One place the watcher looks: a name in a directory. A module's path gives one point per
 * symlink met while following it (where the link itself lives), then the file it ends at. */
typedef struct hm__wpath_point {
  char *dir;
  char *name;
  int link; /* 1: a symlink on the way; 0: the file the path ends at (always the last) */
} hm__wpath_point;

typedef struct hm__wpath {
  hm__wpath_point *pts;
  size_t n;
} hm__wpath;

/* Follow `path` as the kernel would (relative to the current directory), recording every
 * symlink on the way. Parts that do not exist yet are taken as written. Errors: HM_ENOMEM,
 * HM_EINVAL (the path names no file, e.g. "/" or ending in ".."). */
HM__HIDDEN int hm__wpath_resolve(const hm__allocator *a, const char *path, hm__wpath *out);
HM__HIDDEN void hm__wpath_free(const hm__allocator *a, hm__wpath *p);

/* How often a directory that went away is looked for again, and a watch that could not be
 * set up (memory, inotify's limits) is tried again. */
#define HM__WATCH_RETRY_MS 250
/* How long a watch may fail to be set up before HM_EVENT_WATCH_FAILED says so. */
#define HM__WATCH_REPORT_MS 3000

/* What we ask inotify for, on each directory: completion (close after write, renamed into
 * place), writes and other changes, and the directory's own fate. Not opens or read-only
 * closes: the watcher's own reads would make them. IN_ONLYDIR: a path that is not a
 * directory is not watched by accident. */
#define HM__WATCH_MASK                                                                         \
  (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY | IN_ATTRIB | IN_DELETE |              \
   IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

typedef struct hm__watcher hm__watcher;

/* A watched directory, shared by the points in it. */
typedef struct hm__wdir {
  struct hm__wdir *next;
  char *path;
  int wd; /* -1: not watched now; the retry timer tries again */
  int err; /* with wd -1: why, when it is not just missing (-ENOSPC, HM_ENOMEM ...), else 0 */
  int back; /* watched again by the last retry: what happened meanwhile is unknown */
  size_t refs;
} hm__wdir;

typedef struct hm__wpoint {
  hm__wdir *dir;
  char *name;
  int link;
} hm__wpoint;

/* One watched module, on its watcher's list. */
typedef struct hm__wmod {
  uv_timer_t timer; /* the quiet period, a retry or the settle delay: timer_why */
  hm__settle_why timer_why;
  hm__watcher *w;
  hm_module *mod;
  struct hm__wmod *next;
  char *path;         /* the module's path when the watch was made */
  hm__wpoint *pts;    /* symlinks on the way, then the file itself (the last) */
  size_t npts;
  int setup_err;      /* the last hm__watch_set_points failed (HM_ENOMEM ...): not watched */
  hm__settle st;
  int dirty;  /* events were folded into st since the last decision */
  int relink; /* a symlink on the way changed: follow the path again */
  int have_st; /* the file's size, mtime and inode when the quiet period began */
  off_t size;
  long long mtime_ns;
  ino_t ino;
  int have_queued; /* queued_hash: the bytes a queued reload is waiting for */
  uint64_t queued_hash;
  int sig_writing; /* signed builds: its signature was made or written since its last close */
  /* A finished new build held for the module's group (watchgroup.c): its bytes, and what
   * a refusal of it is about. Parked: held for another member's next build (its group was
   * refused for that member's), so it starts no wait of its own. regroup: the next
   * finished build found is held parked (a poll refused its group). */
  hm__file held;
  int have_held, parked, regroup;
  uint64_t held_key;
  unsigned held_cur;
} hm__wmod;

/* A group of modules (hm_module_set_group) whose finished builds the watcher holds, to
 * apply them as one (watchgroup.c). */
typedef struct hm__wgroup {
  uv_timer_t timer; /* the wait; its callback is watch.c's */
  hm__watcher *w;
  char *name;
  long long first_ns, last_ns; /* monotonic: the first and the last build held since the
                                  group was last applied (0: none) */
  struct hm__wgroup *next;
} hm__wgroup;

struct hm__watcher {
  hm_registry *reg; /* valid while the watcher runs: stopping comes before the free */
  hm__allocator a;  /* a copy: close callbacks on a host loop may run after the free */
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int own; /* runs on own_loop, on its own thread */
  uv_thread_t thread;
  uv_async_t async;
  uv_poll_t poll;
  uv_timer_t retry;
  /* Set by watchrun.c when it makes the watcher, so that the files below it call up only
   * through them: the retry timer's callback (watch.c), and the free once the last handle
   * has closed (watchrun.c). */
  uv_timer_cb on_retry;
  void (*closed)(struct hm__watcher *w);
  int fd;        /* the inotify descriptor */
  int stopping;  /* atomic: a stop asked the loop's thread to close everything */
  int detached;  /* atomic: stopped from module code; its close must not touch modules */
  int closing;   /* handles are being closed; callbacks that still run do nothing */
  unsigned open; /* handles not yet closed */
  unsigned quiet_ms, settle_ms;
  hm__method forced; /* HOTMOD_WATCH_METHOD */
  hm__wdir *dirs;
  hm__wmod *mods;
  /* Watches that could not be set up: `failing` since failing_since_ns (monotonic), reported
   * once it lasts (failing_reported); lost_mods: a loaded module got no watch state at all. */
  int failing, lost_mods, failing_reported;
  long long failing_since_ns;
  hm__watcher *next_stopped; /* on reg->watch_stopped */
  struct hm__wbuild *builds; /* build rules of watched modules (build.c) */
  hm__wgroup *groups;        /* groups with a build held, or held once (watchgroup.c) */
};


/* No decision, and no reload, once a stop was asked for: from another thread that only
 * sets `stopping` and wakes the loop, which closes everything on its next turn. */
static inline int hm__watch_winding_down(hm__watcher *w) {
  return w->closing || __atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE);
}

/* ---- Where to look, and the watcher's handles (watchpath.c) --------------------------- */

/* Follow the module's path again and watch every directory it leads through; the old points
 * are let go after the new ones hold their directories. 0, or the error that left some
 * directory unwatched (also kept in wm->setup_err; the watcher tries again). */
HM__HIDDEN int hm__watch_set_points(hm__watcher *w, hm__wmod *wm);
/* Is every directory the module's path leads through watched (or only missing, and looked
 * for)? The error that keeps one from it otherwise. */
HM__HIDDEN int hm__watch_points_err(const hm__wmod *wm);
HM__HIDDEN void hm__watch_free_points(hm__watcher *w, hm__wmod *wm);
/* A reference to the watch on directory `path` (shared by modules' points and build rules'
 * sources); NULL on ENOMEM. A directory that cannot be watched now is looked for again on
 * the retry timer. */
HM__HIDDEN hm__wdir *hm__watch_dir_ref(hm__watcher *w, const char *path);
HM__HIDDEN void hm__watch_dir_unref(hm__watcher *w, hm__wdir *d);
/* The directory with this watch descriptor is gone: look for it again on a timer. */
HM__HIDDEN void hm__watch_dir_lost(hm__watcher *w, int wd);
/* The retry timer's work on directories: watch again those that could not be (each that
 * is gets `back` set). 1 while some still cannot. */
HM__HIDDEN int hm__watch_dirs_retry(hm__watcher *w);
/* A watch could not be set up: the retry timer brings the watcher back to reconcile. */
HM__HIDDEN void hm__watch_setup_failed(hm__watcher *w);
HM__HIDDEN void hm__watch_free_dirs(hm__watcher *w);
/* One of the watcher's handles (w->open) finished closing; the last one calls w->closed. */
HM__HIDDEN void hm__watch_handle_done(hm__watcher *w);
/* The close callback of a module's timer: frees the module's watch state. */
HM__HIDDEN void hm__watch_wmod_closed(uv_handle_t *h);

/* ---- Build rules (build.c) ------------------------------------------------------------- */

/* Make the watcher's build states match the modules' rules (a changed rule cancels the
 * command under way). On the loop's thread, no lock held. */
HM__HIDDEN void hm__build_reconcile(hm__watcher *w);
/* A named inotify event (or, ev NULL, lost events): mark the builds it calls for. */
HM__HIDDEN void hm__build_note(hm__watcher *w, const struct inotify_event *ev);
/* The error that keeps the build rule of `mod` (has_rule: it has one) from watching all of
 * its sources, with the directory concerned in what[n]; 0 if it watches them all. */
HM__HIDDEN int hm__build_watch_err(hm__watcher *w, hm_module *mod, int has_rule, char *what,
                                   size_t n);
/* Start the builds marked since the last call, or fold them into one more build after the
 * one under way. */
HM__HIDDEN void hm__build_kick(hm__watcher *w);
/* The watcher is closing: kill and reap every command under way (no events), close their
 * handles. */
HM__HIDDEN void hm__build_close(hm__watcher *w);
/* The watcher's last close: free the build states. */
HM__HIDDEN void hm__build_free(hm__watcher *w);

/* ---- Signed builds (watchsig.c) -------------------------------------------------------- */

/* An event on the build signature of the module file at point `p` (`<name>.minisig` beside
 * it), while the registry wants signed builds: folded into the module's state (a change to
 * look at), 1; 0 for an event about anything else. */
HM__HIDDEN int hm__watch_sig_event(hm__wmod *wm, const hm__wpoint *p,
                                   const struct inotify_event *ev);
/* What the signature read with `f` (a finished, complete new build whose refusal key is
 * `key`, `build_key` without the signature) allows: LOAD, SIGWAIT (then after *timer_ms at
 * the latest) or REFUSE (with the detail recorded). */
HM__HIDDEN hm__settle_do hm__watch_sig_gate(hm__wmod *wm, const hm__file *f, uint64_t build_key,
                                            uint64_t key, unsigned cur, unsigned *timer_ms);
/* The identity of the signature read with `f`, to mix into what a refusal is about. */
HM__HIDDEN uint64_t hm__watch_sig_key(const hm__file *f);

/* ---- Groups (watchgroup.c) ------------------------------------------------------------- */

/* The longest a group waits for members being written, from the first build it holds. */
#define HM__WGROUP_MAX_MS 30000

/* Hold the finished new build `f` (its bytes are taken over) of a module in a group, and
 * return the group, whose wait the caller (re)starts unless the build is parked; NULL if
 * the module is in no group (or out of memory): the caller applies it alone. */
HM__HIDDEN hm__wgroup *hm__wgroup_hold(hm__wmod *wm, hm__file *f, uint64_t key, unsigned cur);
/* How much longer the group waits: while a member is being written (up to
 * HM__WGROUP_MAX_MS), and group_ms after the last build it held. 0: apply now. */
HM__HIDDEN unsigned hm__wgroup_wait_ms(hm__wgroup *wg);
/* The group's members with a build held, in the order their modules were first loaded
 * (up to cap). */
HM__HIDDEN size_t hm__wgroup_held(hm__wgroup *wg, hm__wmod **out, size_t cap);
/* Apply the held builds of `held` (n of them): alone for one, else as one group reload, or
 * prepared as one group in queued mode (*queued set). 0, or the error with *failed the
 * member that failed. The builds stay held: the caller decides what becomes of them. */
HM__HIDDEN int hm__wgroup_apply(hm__wgroup *wg, hm__wmod **held, size_t n, size_t *failed,
                                int *queued);
/* Let a held build go. */
HM__HIDDEN void hm__wgroup_release(hm__wmod *wm);
/* The watcher is closing: close every group's timer (the close frees it). */
HM__HIDDEN void hm__wgroup_close_all(hm__watcher *w);

/* ---- Deciding (watch.c) ---------------------------------------------------------------- */

/* Decide what to do about a module's file after events or a timer. */
HM__HIDDEN void hm__watch_decide(hm__wmod *wm, hm__settle_why why);
/* Make the watched modules match the registry's, and pick up failed queued reloads. Also
 * tries again what could not be set up before, and reports what keeps failing. */
HM__HIDDEN void hm__watch_reconcile(hm__watcher *w);
HM__HIDDEN void hm__watch_on_inotify(uv_poll_t *p, int status, int events);
/* The retry timer's callback (w->on_retry). */
HM__HIDDEN void hm__watch_on_retry(uv_timer_t *t);

#endif
