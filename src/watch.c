/*
 * The file watcher's inotify and libuv layer: it watches the directories that matter for each
 * module's path, folds inotify events into each module's settle state, asks the kernel about
 * writers, reads the file, and carries out what the settle policy (settle.c) decides: wait,
 * load (or queue), refuse, or retry. It is the only part of the core that knows libuv; the
 * registry reaches it through the hm__watch_ops hooks.
 *
 * One inotify descriptor per watcher, driven by a uv_poll_t, with one watch per directory.
 * Not uv_fs_event: it reports neither close-after-write nor opens, which are what say a
 * writer is done, and a watch on the file itself goes silent once a build renames a new file
 * over it. Events are matched to modules by directory and name, and all events of one read
 * are folded before any decision, so a create, open, write and close that arrive together
 * are seen together.
 *
 * Threads: everything below runs on the loop's thread, except the hooks and the public
 * functions at the end. The hooks only wake the loop (uv_async_send); the loop then compares
 * the registry's modules with what it watches and fixes the difference. So a hook never
 * allocates, never blocks, and may come from any thread, including the loop's own.
 *
 * Lifetime: reg->watch points to the watcher while it runs, under reg->lock; it is set only
 * once the watcher's thread exists. Stopping clears it first, so a hook that comes later finds
 * no watcher; then every handle is closed, and the memory goes in the close callbacks (on the
 * registry's own loop, before the thread ends; on a host's loop, when the host next runs it).
 */
#include "registry.h"
#include "watch.h"

#include "hotmod/uv.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

/* How often a directory that went away is looked for again. */
#define HM__WATCH_RETRY_MS 250

/* What we ask inotify for, on each directory: completion (close after write, renamed into
 * place), opens and read-only closes (the open count, where leases are not available),
 * changes, and the directory's own fate. IN_ONLYDIR: a path that is not a directory is not
 * watched by accident. */
#define HM__WATCH_MASK                                                                         \
  (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY | IN_ATTRIB | IN_DELETE |              \
   IN_MOVED_FROM | IN_OPEN | IN_CLOSE_NOWRITE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

typedef struct hm__watcher hm__watcher;

/* A watched directory, shared by the points in it. */
typedef struct hm__wdir {
  struct hm__wdir *next;
  char *path;
  int wd; /* -1: the directory is not there; the retry timer looks for it */
  size_t refs;
} hm__wdir;

typedef struct hm__wpoint {
  hm__wdir *dir;
  char *name;
  int link;
} hm__wpoint;

/* One watched module (mod->watch). */
typedef struct hm__wmod {
  uv_timer_t timer; /* the quiet period, a retry or the settle delay: timer_why */
  hm__settle_why timer_why;
  hm__watcher *w;
  hm_module *mod;
  struct hm__wmod *next;
  char *path;         /* the module's path when the watch was made */
  hm__wpoint *pts;    /* symlinks on the way, then the file itself (the last) */
  size_t npts;
  hm__settle st;
  int dirty;  /* events were folded into st since the last decision */
  int relink; /* a symlink on the way changed: follow the path again */
  int have_st; /* the file's size, mtime and inode when the quiet period began */
  off_t size;
  long long mtime_ns;
  ino_t ino;
  int have_queued; /* queued_hash: the bytes a queued reload is waiting for */
  uint64_t queued_hash;
} hm__wmod;

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
  int fd;        /* the inotify descriptor */
  int stopping;  /* atomic: stop asked the own thread to close everything */
  int closing;   /* handles are being closed; callbacks that still run do nothing */
  unsigned open; /* handles not yet closed */
  unsigned quiet_ms, settle_ms;
  hm__method forced; /* HOTMOD_WATCH_METHOD */
  hm__wdir *dirs;
  hm__wmod *mods;
  hm__watcher *next_stopped; /* on reg->watch_stopped */
};

/* The watcher whose thread this is, so hm_watch_stop called from an event callback on the
 * watcher's own thread does not wait for itself. */
static __thread hm__watcher *running_here;

static void decide(hm__wmod *wm, hm__settle_why why);
static void after_failure(hm__wmod *wm, int rc, uint64_t key, unsigned cur);

/* ---- Closing --------------------------------------------------------------------------- */

/* The last close callback: everything the watcher allocated goes. */
static void watcher_closed(hm__watcher *w) {
  hm__wdir *d;
  while ((d = w->dirs) != NULL) {
    w->dirs = d->next;
    hm__free(&w->a, d->path);
    hm__free(&w->a, d);
  }
  if (w->fd >= 0) {
    close(w->fd);
    w->fd = -1;
  }
  /* On its own loop, uv_run returns now and whoever joins the thread frees the rest. */
  if (!w->own) {
    hm__allocator a = w->a;
    hm__free(&a, w);
  }
}

static void handle_closed(uv_handle_t *h) {
  hm__watcher *w = h->data;
  if (--w->open == 0)
    watcher_closed(w);
}

static void free_points(hm__watcher *w, hm__wmod *wm);

static void wmod_closed(uv_handle_t *h) {
  hm__wmod *wm = h->data;
  hm__watcher *w = wm->w;
  free_points(w, wm);
  hm__free(&w->a, wm->path);
  hm__free(&w->a, wm);
  if (--w->open == 0)
    watcher_closed(w);
}

/* Close every handle. On the loop's thread. Nothing is freed here, so a callback that is
 * still on the stack (one that ran the host's event callback, which stopped us) can look at
 * its structures and see `closing`. */
static void watcher_close(hm__watcher *w) {
  hm__wmod *wm;
  if (w->closing)
    return;
  w->closing = 1;
  for (wm = w->mods; wm != NULL; wm = wm->next) {
    wm->mod->watch = NULL;
    __atomic_store_n(&wm->mod->watch_method, 0, __ATOMIC_RELEASE);
    uv_close((uv_handle_t *)&wm->timer, wmod_closed);
  }
  w->mods = NULL;
  uv_close((uv_handle_t *)&w->retry, handle_closed);
  uv_close((uv_handle_t *)&w->async, handle_closed);
  uv_close((uv_handle_t *)&w->poll, handle_closed);
}

/* ---- Directories ----------------------------------------------------------------------- */

static void on_retry(uv_timer_t *t);

static void retry_start(hm__watcher *w) {
  if (!uv_is_active((uv_handle_t *)&w->retry))
    uv_timer_start(&w->retry, on_retry, HM__WATCH_RETRY_MS, HM__WATCH_RETRY_MS);
}

/* Find or make the entry for directory `path` (copied) and add a reference. */
static hm__wdir *dir_ref(hm__watcher *w, const char *path) {
  hm__wdir *d;
  int wd = inotify_add_watch(w->fd, path, HM__WATCH_MASK);
  /* Two spellings of one directory get one watch descriptor: match on that, not the text.
   * A directory we cannot watch now (not there yet) is matched by its text and retried. */
  for (d = w->dirs; d != NULL; d = d->next) {
    if (wd >= 0 ? d->wd == wd : (d->wd < 0 && strcmp(d->path, path) == 0)) {
      d->refs++;
      return d;
    }
  }
  d = hm__calloc(&w->a, 1, sizeof *d);
  if (d == NULL || (d->path = hm__strdup(&w->a, path)) == NULL) {
    hm__free(&w->a, d);
    if (wd >= 0) {
      int shared = 0;
      hm__wdir *o;
      for (o = w->dirs; o != NULL; o = o->next)
        shared |= o->wd == wd;
      if (!shared)
        inotify_rm_watch(w->fd, wd);
    }
    return NULL;
  }
  d->wd = wd;
  d->refs = 1;
  d->next = w->dirs;
  w->dirs = d;
  if (wd < 0)
    retry_start(w);
  return d;
}

static void dir_unref(hm__watcher *w, hm__wdir *d) {
  hm__wdir **pp, *o;
  int shared = 0;
  if (--d->refs > 0)
    return;
  for (pp = &w->dirs; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == d) {
      *pp = d->next;
      break;
    }
  }
  for (o = w->dirs; o != NULL; o = o->next)
    shared |= d->wd >= 0 && o->wd == d->wd;
  if (d->wd >= 0 && !shared)
    inotify_rm_watch(w->fd, d->wd);
  hm__free(&w->a, d->path);
  hm__free(&w->a, d);
}

/* The directory with watch descriptor `wd` is gone (deleted, moved, unmounted): its files
 * can only come back in a new directory at the same path, so look for that. */
static void dir_lost(hm__watcher *w, int wd) {
  hm__wdir *d;
  for (d = w->dirs; d != NULL; d = d->next) {
    if (d->wd == wd) {
      d->wd = -1;
      retry_start(w);
    }
  }
}

static int uses_dir(const hm__wmod *wm, const hm__wdir *d) {
  size_t i;
  for (i = 0; i < wm->npts; i++)
    if (wm->pts[i].dir == d)
      return 1;
  return 0;
}

static void on_retry(uv_timer_t *t) {
  hm__watcher *w = t->data;
  hm__wdir *d;
  int dead = 0;
  for (d = w->dirs; d != NULL; d = d->next) {
    hm__wmod *wm;
    if (d->wd >= 0)
      continue;
    d->wd = inotify_add_watch(w->fd, d->path, HM__WATCH_MASK);
    if (d->wd < 0) {
      dead = 1;
      continue;
    }
    /* Whatever happened while nobody looked is found by looking now; a symlink may have
     * come back too, so follow the path again. */
    for (wm = w->mods; wm != NULL; wm = wm->next) {
      if (uses_dir(wm, d)) {
        wm->relink = 1;
        hm__settle_note(&wm->st, HM__EV_LOST);
        wm->dirty = 1;
      }
    }
  }
  if (!dead)
    uv_timer_stop(&w->retry);
  for (hm__wmod *wm = w->mods; wm != NULL && !w->closing; wm = wm->next) {
    if (wm->dirty) {
      wm->dirty = 0;
      decide(wm, HM__WHY_EVENTS);
    }
  }
}

/* ---- Points: where a module's path leads ----------------------------------------------- */

static void free_points(hm__watcher *w, hm__wmod *wm) {
  size_t i;
  for (i = 0; i < wm->npts; i++) {
    if (wm->pts[i].dir != NULL)
      dir_unref(w, wm->pts[i].dir);
    hm__free(&w->a, wm->pts[i].name);
  }
  hm__free(&w->a, wm->pts);
  wm->pts = NULL;
  wm->npts = 0;
}

/* Follow the module's path and watch every directory it leads through. On failure (memory)
 * the module keeps its old points, or none, until the next change wakes the loop. */
static void set_points(hm__watcher *w, hm__wmod *wm) {
  hm__wpath p;
  hm__wpoint *pts;
  size_t i;
  if (hm__wpath_resolve(&w->a, wm->path, &p) != 0)
    return;
  pts = hm__calloc(&w->a, p.n, sizeof *pts);
  if (pts == NULL) {
    hm__wpath_free(&w->a, &p);
    return;
  }
  for (i = 0; i < p.n; i++) {
    pts[i].dir = dir_ref(w, p.pts[i].dir);
    pts[i].name = p.pts[i].name;
    pts[i].link = p.pts[i].link;
    p.pts[i].name = NULL;
  }
  /* The new directories are referenced before the old ones are let go, so a directory both
   * use keeps its inotify watch (and its pending events). */
  free_points(w, wm);
  wm->pts = pts;
  wm->npts = p.n;
  hm__wpath_free(&w->a, &p);
}

/* ---- Modules --------------------------------------------------------------------------- */

static void unwatch(hm__watcher *w, hm__wmod *wm) {
  hm__wmod **pp;
  for (pp = &w->mods; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == wm) {
      *pp = wm->next;
      break;
    }
  }
  wm->mod->watch = NULL;
  __atomic_store_n(&wm->mod->watch_method, 0, __ATOMIC_RELEASE);
  uv_close((uv_handle_t *)&wm->timer, wmod_closed);
}

/* Watch `mod`'s file at `path` (taken over). A failure to allocate leaves the module
 * unwatched until the next hook wakes the loop. */
static void watch_mod(hm__watcher *w, hm_module *mod, char *path) {
  hm__wmod *wm = hm__calloc(&w->a, 1, sizeof *wm);
  if (wm == NULL) {
    hm__free(&w->a, path);
    return;
  }
  wm->w = w;
  wm->mod = mod;
  wm->path = path;
  hm__settle_init(&wm->st, w->forced);
  set_points(w, wm);
  uv_timer_init(w->loop, &wm->timer);
  wm->timer.data = wm;
  w->open++;
  wm->next = w->mods;
  w->mods = wm;
  mod->watch = wm;
  /* The file may have changed between the module's load and this watch: look at it now. */
  hm__settle_note(&wm->st, HM__EV_START);
  decide(wm, HM__WHY_EVENTS);
}

/* What reconcile found for one module, taken in one pass under the lock. */
typedef struct watch_todo {
  hm_module *mod;
  char *path;  /* watch it at this path (after unwatching, if it was watched elsewhere) */
  int unwatch; /* no longer loaded, or moved */
  int poll_rc; /* a queued reload failed with this transient error */
} watch_todo;

/* Make the set of watched modules match the registry's loaded modules and their paths, and
 * pick up queued reloads that failed. The list is read in one pass under the lock: a failed
 * first load removes its module and shifts the list, so an index kept across lock sections
 * could skip a module. Only loaded modules are acted on, and those are never freed before
 * the registry. */
static void reconcile(hm__watcher *w) {
  hm_registry *reg = w->reg;
  watch_todo *todo;
  size_t i, n = 0, cap;
  pthread_mutex_lock(&reg->lock);
  cap = reg->nmods;
  todo = cap ? hm__calloc(&w->a, cap, sizeof *todo) : NULL;
  for (i = 0; todo != NULL && i < reg->nmods; i++) {
    hm_module *mod = reg->mods[i];
    hm__wmod *wm = mod->watch;
    int loaded = mod->cur != NULL;
    int moved = loaded && wm != NULL && strcmp(wm->path, mod->path) != 0;
    watch_todo t = {mod, NULL, wm != NULL && (!loaded || moved), 0};
    if (loaded && (wm == NULL || moved))
      t.path = hm__strdup(&w->a, mod->path);
    if (loaded && mod->poll_rc != 0) {
      t.poll_rc = mod->poll_rc;
      mod->poll_rc = 0;
    }
    if (t.path != NULL || t.unwatch || t.poll_rc != 0)
      todo[n++] = t;
  }
  pthread_mutex_unlock(&reg->lock);
  for (i = 0; i < n && !w->closing; i++) {
    hm__wmod *wm = todo[i].mod->watch;
    if (wm != NULL && todo[i].unwatch)
      unwatch(w, wm);
    if (todo[i].path != NULL) {
      watch_mod(w, todo[i].mod, todo[i].path);
      todo[i].path = NULL;
    }
    wm = todo[i].mod->watch;
    if (wm != NULL && todo[i].poll_rc != 0) {
      /* As if the watcher had tried it: the retry schedule brings it back to the queue. */
      wm->have_queued = 0;
      after_failure(wm, todo[i].poll_rc, wm->queued_hash, hm_module_version(wm->mod));
    }
  }
  for (i = 0; i < n; i++)
    hm__free(&w->a, todo[i].path);
  hm__free(&w->a, todo);
}

/* ---- Deciding ------------------------------------------------------------------------- */

static const char *file_path(const hm__wmod *wm) { return wm->path; }

static int stat_now(const hm__wmod *wm, off_t *size, long long *mtime, ino_t *ino) {
  struct stat st;
  if (stat(file_path(wm), &st) != 0)
    return 0;
  *size = st.st_size;
  *mtime = (long long)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
  *ino = st.st_ino;
  return 1;
}

static void on_timer(uv_timer_t *t);

static void timer_start(hm__wmod *wm, hm__settle_why why, unsigned ms) {
  wm->timer_why = why;
  uv_timer_start(&wm->timer, on_timer, ms, 0);
}

/* Start (or restart) the quiet period: note the file's size, mtime and inode now. */
static void quiet_start(hm__wmod *wm) {
  wm->have_st = stat_now(wm, &wm->size, &wm->mtime_ns, &wm->ino);
  timer_start(wm, HM__WHY_QUIET, wm->w->quiet_ms);
}

/* What a refusal is about: the bytes and the permission bits (the loader refuses a file
 * that others may write to; a chmod that fixes it must count as a change). */
static uint64_t failure_key(uint64_t hash, mode_t mode) {
  return hash ^ ((uint64_t)(mode & 07777) * 0x9e3779b97f4a7c15ull);
}

/* Report a finished file as refused, with the detail already recorded on this thread. */
static void report(hm__wmod *wm, int err) {
  hm_registry *reg = wm->w->reg;
  unsigned num;
  pthread_mutex_lock(&reg->lock);
  if (wm->mod->cur == NULL) {
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  num = wm->mod->cur->num;
  reg->stats.rejects++;
  pthread_mutex_unlock(&reg->lock);
  hm__emit(reg, HM_EVENT_REJECTED, wm->mod, num, err);
}

static hm_reload_mode mode_of(hm_module *mod) {
  /* Under reg->lock. */
  return mod->mode != HM_RELOAD_DEFAULT ? mod->mode : mod->reg->reload_mode;
}

/* Apply hm__settle_result's answer to a failure (or success, rc 0). */
static void after_failure(hm__wmod *wm, int rc, uint64_t key, unsigned cur) {
  unsigned ms;
  switch (hm__settle_result(&wm->st, rc, key, cur, &ms)) {
  case HM__DO_RETRY:
    timer_start(wm, HM__WHY_RETRY, ms);
    break;
  case HM__DO_REPORT:
    report(wm, rc);
    break;
  case HM__DO_QUIET:
    quiet_start(wm);
    break;
  default:
    break;
  }
}

/* A finished new build: reload it at once, or queue it for hm_registry_poll. */
static void take(hm__wmod *wm, const hm__file *f, uint64_t key, unsigned cur) {
  hm__watcher *w = wm->w;
  hm_registry *reg = w->reg;
  hm_module *mod = wm->mod;
  hm_reload_mode mode;
  int rc;

  pthread_mutex_lock(&reg->lock);
  if (mod->cur == NULL) {
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  mode = mode_of(mod);
  if (mode == HM_RELOAD_QUEUED) {
    if (mod->pending && wm->have_queued && wm->queued_hash == f->id.hash) {
      pthread_mutex_unlock(&reg->lock);
      return; /* already queued */
    }
    mod->pending = 1;
    wm->have_queued = 1;
    wm->queued_hash = f->id.hash;
  }
  pthread_mutex_unlock(&reg->lock);

  hm__emit(reg, HM_EVENT_CHANGED, mod, cur, 0);
  if (mode == HM_RELOAD_QUEUED || w->closing)
    return;
  rc = hm__reload(mod, NULL, f, HM__RELOAD_WATCHER);
  after_failure(wm, rc, key, cur);
}

/* Read the file (open as `fd`, or not there: `fd` is the error) and act on what the policy
 * makes of it. */
static void check(hm__wmod *wm, int fd, int settle_due) {
  hm__watcher *w = wm->w;
  hm_registry *reg = w->reg;
  hm__settle_file sf;
  hm__file f;
  char why[200];
  int elf_rc = 0;

  memset(&sf, 0, sizeof sf);
  memset(&f, 0, sizeof f);
  /* Where the lease decided, a writer that came since is waited for; where events or the
   * quiet period decided, the lease is not asked (it may not be what the host wants). */
  sf.read_rc = fd < 0 ? fd
                      : hm__file_read_fd(&w->a, fd, file_path(wm),
                                         (reg->flags & HM__READ_ALLOW_WRITABLE) |
                                             (wm->st.method == HM__BY_LEASE ? HM__READ_PROBE : 0),
                                         &f, NULL);
  if (sf.read_rc == 0) {
    why[0] = '\0';
    elf_rc = hm__elf_check(f.buf, f.len, NULL, why, sizeof why);
    sf.complete = elf_rc == 0;
    sf.key = failure_key(f.id.hash, f.id.mode);
  } else {
    sf.key = (uint64_t)(int64_t)sf.read_rc * 0x9e3779b97f4a7c15ull;
  }
  pthread_mutex_lock(&reg->lock);
  if (wm->mod->cur == NULL) {
    pthread_mutex_unlock(&reg->lock);
    hm__file_release(&w->a, &f);
    return;
  }
  sf.cur = wm->mod->cur->num;
  sf.same_as_current = sf.read_rc == 0 && f.id.hash == wm->mod->cur->id.hash;
  if (sf.same_as_current)
    wm->mod->pending = 0; /* back to what serves: a queued reload has nothing left to do */
  pthread_mutex_unlock(&reg->lock);

  switch (hm__settle_checked(&wm->st, &sf, settle_due, w->settle_ms)) {
  case HM__DO_QUIET:
    quiet_start(wm);
    break;
  case HM__DO_RETRY:
    after_failure(wm, sf.read_rc, sf.key, sf.cur);
    break;
  case HM__DO_REFUSE:
    if (sf.read_rc == 0)
      hm__fail(elf_rc, "%s: %s (its writer is done)", file_path(wm),
               why[0] ? why : hm_strerror(elf_rc));
    report(wm, sf.read_rc != 0 ? sf.read_rc : elf_rc);
    break;
  case HM__DO_SETTLE:
    timer_start(wm, HM__WHY_SETTLE, w->settle_ms);
    break;
  case HM__DO_LOAD:
    uv_timer_stop(&wm->timer);
    take(wm, &f, sf.key, sf.cur);
    break;
  default:
    break;
  }
  hm__file_release(&w->a, &f);
}

/* Decide what to do about a module's file after events (or a timer). The file is opened
 * once: the lease probe asks about writers on that descriptor, and a read uses it too. */
static void decide(hm__wmod *wm, hm__settle_why why) {
  hm__writer writer = HM__WRITER_UNKNOWN;
  struct stat st;
  int stable = 0, fd;
  hm__settle_do act;
  if (wm->w->closing)
    return;
  if (why == HM__WHY_EVENTS && !wm->relink && !hm__settle_due(&wm->st))
    return; /* opening the file to look would only make more such events */
  if (wm->relink) {
    /* A symlink on the way changed: the path names another file now, a new build. */
    wm->relink = 0;
    set_points(wm->w, wm);
    hm__settle_note(&wm->st, HM__EV_DONE | HM__EV_NEW);
  }
  fd = hm__file_open(file_path(wm));
  if (fd >= 0) {
    hm__settle_own_open(&wm->st);
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      int i;
      writer = hm__writer_probe(fd);
      /* Right after a writer's close the kernel may count it for a moment more (see
       * settle.c): give the closing thread the CPU and ask again a few times before the
       * policy falls back on timed rechecks. */
      for (i = 0; i < 8 && writer == HM__WRITER_ACTIVE && (wm->st.seen & HM__EV_DONE); i++) {
        sched_yield();
        writer = hm__writer_probe(fd);
      }
    }
  }
  if (why == HM__WHY_QUIET) {
    off_t size;
    long long mtime;
    ino_t ino;
    stable = wm->have_st && stat_now(wm, &size, &mtime, &ino) && size == wm->size &&
             mtime == wm->mtime_ns && ino == wm->ino;
  }
  act = hm__settle_decide(&wm->st, why, writer, stable);
  __atomic_store_n(&wm->mod->watch_method, (int)wm->st.method, __ATOMIC_RELEASE);
  if (act == HM__DO_QUIET)
    quiet_start(wm);
  else if (act == HM__DO_RECHECK)
    timer_start(wm, HM__WHY_RECHECK, wm->st.recheck_ms);
  else if (act == HM__DO_READ)
    check(wm, fd, why == HM__WHY_SETTLE);
  if (fd >= 0)
    close(fd);
}

static void on_timer(uv_timer_t *t) {
  hm__wmod *wm = t->data;
  if (wm->w->closing)
    return;
  decide(wm, wm->timer_why);
}

/* ---- Events ---------------------------------------------------------------------------- */

/* What an inotify event on a module's file means to the settle policy. */
static unsigned event_bits(uint32_t mask) {
  unsigned ev = 0;
  if (mask & IN_CLOSE_WRITE)
    ev |= HM__EV_DONE | HM__EV_CLOSED;
  if (mask & IN_MOVED_TO)
    ev |= HM__EV_DONE | HM__EV_NEW;
  if (mask & IN_CREATE)
    ev |= HM__EV_CHANGE | HM__EV_NEW;
  if (mask & (IN_MODIFY | IN_ATTRIB))
    ev |= HM__EV_CHANGE;
  if (mask & IN_OPEN)
    ev |= HM__EV_OPEN;
  if (mask & IN_CLOSE_NOWRITE)
    ev |= HM__EV_CLOSE_NOWRITE;
  if (mask & (IN_DELETE | IN_MOVED_FROM))
    ev |= HM__EV_GONE;
  return ev;
}

/* Fold one named event into every module with a point at that directory and name. */
static void fold(hm__watcher *w, const struct inotify_event *ev) {
  hm__wmod *wm;
  for (wm = w->mods; wm != NULL; wm = wm->next) {
    size_t i;
    for (i = 0; i < wm->npts; i++) {
      const hm__wpoint *p = &wm->pts[i];
      if (p->dir == NULL || p->dir->wd != ev->wd || strcmp(p->name, ev->name) != 0)
        continue;
      if (p->link) {
        /* Reading a link makes no event; anything else means it may point elsewhere now. */
        if (ev->mask & ~(uint32_t)(IN_OPEN | IN_CLOSE_NOWRITE))
          wm->relink = 1;
      } else {
        hm__settle_note(&wm->st, event_bits(ev->mask));
      }
      wm->dirty = 1;
    }
  }
}

static void on_inotify(uv_poll_t *p, int status, int events) {
  hm__watcher *w = p->data;
  hm__wmod *wm;
  /* Aligned for struct inotify_event; room for many events per read. */
  union {
    struct inotify_event ev;
    char buf[16384];
  } u;
  (void)events;
  if (status < 0 || w->closing)
    return;
  for (;;) {
    ssize_t n = read(w->fd, u.buf, sizeof u.buf);
    char *at;
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    for (at = u.buf; at < u.buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)(void *)at;
      at += sizeof *ev + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        /* Events were lost: any file may have changed, any open count is wrong. */
        for (wm = w->mods; wm != NULL; wm = wm->next) {
          hm__settle_note(&wm->st, HM__EV_LOST);
          wm->relink = 1;
          wm->dirty = 1;
        }
        continue;
      }
      if (ev->mask & (IN_IGNORED | IN_MOVE_SELF)) {
        if (ev->mask & IN_MOVE_SELF)
          inotify_rm_watch(w->fd, ev->wd);
        dir_lost(w, ev->wd);
        continue;
      }
      if (ev->len != 0)
        fold(w, ev);
    }
  }
  /* Decide once per module, with everything this wake-up brought. */
  for (wm = w->mods; wm != NULL && !w->closing; wm = wm->next) {
    if (wm->dirty) {
      wm->dirty = 0;
      decide(wm, HM__WHY_EVENTS);
    }
  }
}

static void on_async(uv_async_t *a) {
  hm__watcher *w = a->data;
  if (w->closing)
    return;
  if (__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE))
    watcher_close(w);
  else
    reconcile(w);
}

/* ---- Hooks the registry calls (any thread, no lock held) ------------------------------- */

static void hook_changed(hm_registry *reg) {
  hm__watcher *w;
  /* Under reg->lock, so hm_watch_stop cannot close the async handle meanwhile. */
  pthread_mutex_lock(&reg->lock);
  w = reg->watch;
  if (w != NULL)
    uv_async_send(&w->async);
  pthread_mutex_unlock(&reg->lock);
}

static void hook_stop(hm_registry *reg) { hm_watch_stop(reg); }

static const hm__watch_ops watch_ops = {hook_changed, hook_stop};

/* ---- Starting and stopping ------------------------------------------------------------- */

static void watcher_thread(void *arg) {
  hm__watcher *w = arg;
  running_here = w;
  uv_run(&w->own_loop, UV_RUN_DEFAULT);
  running_here = NULL;
}

static void watcher_join_free(hm__watcher *w) {
  hm__allocator a = w->a;
  uv_thread_join(&w->thread);
  uv_loop_close(&w->own_loop);
  hm__free(&a, w);
}

/* Join and free the watchers that were stopped without waiting, except this thread's own
 * (stopped from its event callback: it is still running, so it waits for later). */
static void watch_reap(hm_registry *reg) {
  hm__watcher *w, *keep = NULL, *next;
  pthread_mutex_lock(&reg->lock);
  w = reg->watch_stopped;
  reg->watch_stopped = NULL;
  pthread_mutex_unlock(&reg->lock);
  for (; w != NULL; w = next) {
    next = w->next_stopped;
    if (w == running_here) {
      w->next_stopped = keep;
      keep = w;
    } else {
      watcher_join_free(w);
    }
  }
  if (keep != NULL) {
    pthread_mutex_lock(&reg->lock);
    keep->next_stopped = reg->watch_stopped;
    reg->watch_stopped = keep;
    pthread_mutex_unlock(&reg->lock);
  }
}

/* Free a watcher that never ran, and whose handles have just been closed. */
static void watcher_discard(hm__watcher *w) {
  if (w->own) {
    hm__allocator a = w->a;
    uv_run(&w->own_loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->own_loop);
    hm__free(&a, w);
  }
  /* On a host loop the close callbacks free it. */
}

static hm__method forced_method(void) {
  const char *e = getenv("HOTMOD_WATCH_METHOD");
  if (e == NULL)
    return (hm__method)0;
  if (strcmp(e, "events") == 0)
    return HM__BY_EVENTS;
  if (strcmp(e, "timing") == 0)
    return HM__BY_TIMING;
  return (hm__method)0;
}

/* Make the watcher's handles on `loop` (NULL: its own). */
static int watcher_make(hm_registry *reg, uv_loop_t *loop, hm__watcher **out) {
  hm__watcher *w = hm__calloc(&reg->a, 1, sizeof *w);
  int rc;
  if (w == NULL)
    return hm__fail(HM_ENOMEM, "out of memory starting the watcher");
  w->reg = reg;
  w->a = reg->a;
  w->quiet_ms = reg->quiet_ms;
  w->settle_ms = reg->settle_ms;
  w->forced = forced_method();
  w->fd = -1;
  if (loop == NULL) {
    rc = uv_loop_init(&w->own_loop);
    if (rc != 0) {
      hm__free(&w->a, w);
      return hm__fail(rc, "uv_loop_init: %s", uv_strerror(rc));
    }
    w->own = 1;
    loop = &w->own_loop;
  }
  w->loop = loop;
  /* Handles in an order where each failure has only the earlier ones to undo. */
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  rc = w->fd < 0 ? -errno : uv_async_init(loop, &w->async, on_async);
  if (rc != 0) {
    if (w->fd >= 0)
      close(w->fd);
    if (w->own)
      uv_loop_close(&w->own_loop);
    hm__free(&w->a, w);
    return hm__fail(rc, "cannot start the watcher: %s", hm_strerror(rc));
  }
  w->async.data = w;
  w->open = 1;
  rc = uv_poll_init(loop, &w->poll, w->fd);
  if (rc != 0) {
    w->closing = 1;
    uv_close((uv_handle_t *)&w->async, handle_closed);
    watcher_discard(w);
    return hm__fail(rc, "cannot poll the inotify descriptor: %s", uv_strerror(rc));
  }
  w->poll.data = w;
  w->open++;
  uv_timer_init(loop, &w->retry);
  w->retry.data = w;
  w->open++;
  rc = uv_poll_start(&w->poll, UV_READABLE, on_inotify);
  if (rc == 0 && w->own)
    rc = uv_thread_create(&w->thread, watcher_thread, w);
  if (rc != 0) {
    watcher_close(w);
    watcher_discard(w);
    return hm__fail(rc, "cannot start the watcher: %s", hm_strerror(rc));
  }
  *out = w;
  return 0;
}

static int watch_begin(hm_registry *reg, uv_loop_t *loop) {
  hm__watcher *w = NULL;
  int rc;
  if (hm__in_module_code())
    return hm__refuse_in_module_code(loop ? "hm_watch_attach" : "hm_watch_start");
  if ((rc = hm__check_forked(reg, loop ? "hm_watch_attach" : "hm_watch_start")) != 0)
    return rc;
  watch_reap(reg);
  pthread_mutex_lock(&reg->lock);
  rc = reg->watch != NULL ? HM_EALREADY : 0;
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0)
    return hm__fail(rc, "a watcher already runs for this registry");
  rc = watcher_make(reg, loop, &w);
  if (rc != 0)
    return rc;
  /* Published only now that its thread exists, so a concurrent hm_watch_stop that finds it
   * has a thread to join. */
  pthread_mutex_lock(&reg->lock);
  if (reg->watch != NULL) {
    rc = HM_EALREADY; /* another thread won the race */
  } else {
    reg->watch = w;
    reg->watch_reap = watch_reap;
    __atomic_store_n(&reg->watch_ops, &watch_ops, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&reg->lock);
  if (rc == 0) {
    /* The first wake-up watches the modules already loaded. */
    uv_async_send(&w->async);
    return 0;
  }
  if (w->own) {
    __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
    uv_async_send(&w->async);
    watcher_join_free(w);
  } else {
    watcher_close(w);
  }
  return hm__fail(rc, "a watcher already runs for this registry");
}

int hm_watch_start(hm_registry *reg) {
  if (reg == NULL)
    return hm__fail(HM_EINVAL, "hm_watch_start: NULL registry");
  return watch_begin(reg, NULL);
}

int hm_watch_attach(hm_registry *reg, uv_loop_t *loop) {
  if (reg == NULL)
    return hm__fail(HM_EINVAL, "hm_watch_attach: NULL registry");
  if (loop == NULL)
    return hm__fail(HM_EINVAL, "hm_watch_attach needs a loop");
  return watch_begin(reg, loop);
}

void hm_watch_stop(hm_registry *reg) {
  hm__watcher *w;
  int wait;
  if (reg == NULL || reg->forked)
    return;
  pthread_mutex_lock(&reg->lock);
  w = reg->watch;
  reg->watch = NULL;
  __atomic_store_n(&reg->watch_ops, NULL, __ATOMIC_RELEASE);
  /* Waiting would deadlock on the watcher's own thread, and from module code (the watcher
   * may be waiting for the loader's lock or a reload lock this thread holds). Such a stop is
   * recorded here, in the same locked section, so no hm_registry_free can miss the join. */
  wait = w != NULL && w->own && running_here != w && !hm__in_module_code();
  if (w != NULL && w->own && !wait) {
    w->next_stopped = reg->watch_stopped;
    reg->watch_stopped = w;
  }
  pthread_mutex_unlock(&reg->lock);
  if (w == NULL)
    return;
  if (!w->own || running_here == w) {
    /* On the loop's thread: close now. On a host loop the close callbacks free the rest. */
    watcher_close(w);
    return;
  }
  __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
  uv_async_send(&w->async);
  if (wait)
    watcher_join_free(w);
}
