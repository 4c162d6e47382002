/*
 * The file watcher: decides when a module's file holds a new, complete build, and then
 * reloads the module or queues the reload. It is the only part of the core that knows
 * libuv; the registry reaches it through the hm__watch_ops hooks.
 *
 * One inotify descriptor per watcher, driven by a uv_poll_t, with one watch per directory
 * that holds a module's file. Not uv_fs_event: it does not report close-after-write, which
 * is the one signal that says a writer is done, and a watch on the file itself goes silent
 * once a build renames a new file over it. Events are matched to modules by file name.
 *
 * When is a file complete?
 *  - On IN_CLOSE_WRITE (a writer closed it) or IN_MOVED_TO (a file was renamed onto it),
 *    read it at once: if it passes the ELF check it is complete, and it loads without
 *    waiting, which is what keeps the latency within a millisecond.
 *  - Any other sign of life (create, modify, attrib, a queue overflow, a new watch) starts
 *    the module's quiet timer instead. When quiet_ms pass with no event and the same size
 *    and mtime, the file is read; a complete file is handled as above, an incomplete one is
 *    refused (HM_EVENT_REJECTED) and the current version serves on. Before the quiet period
 *    an incomplete file is "not ready", never an error, so a writer that pauses half-way is
 *    refused at worst, never loaded.
 * Inode numbers are reused at once, so "is this new?" is answered by the content hash: a
 * file whose bytes equal the current version's is no change (a touch, an identical rewrite).
 *
 * Threads: everything below runs on the loop's thread, except the hooks and the public
 * functions at the end. The hooks only wake the loop (uv_async_send); the loop then compares
 * the registry's modules with what it watches and fixes the difference. So a hook never
 * allocates, never blocks, and may come from any thread, including the loop's own.
 *
 * Lifetime: reg->watch points to the watcher while it runs, under reg->lock. Stopping
 * clears it first, so a hook that comes later finds no watcher; then every handle is closed,
 * and the memory goes in the close callbacks (on the registry's own loop, before
 * hm_watch_stop returns; on a host's loop, when the host next runs it).
 */
#include "registry.h"

#include "hotmod/uv.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

/* Larger files are not read (the loader refuses them too). */
#define HM__WATCH_MAX_SIZE ((off_t)1 << 30)
/* How often a directory that went away is looked for again. */
#define HM__WATCH_RETRY_MS 250

/* What we ask inotify for, on each directory. Completion signals first; the rest only
 * starts quiet timers or notes a deletion. IN_ONLYDIR: a path that is not a directory is
 * not watched by accident. */
#define HM__WATCH_MASK                                                                         \
  (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY | IN_ATTRIB | IN_DELETE |              \
   IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

typedef struct hm__watcher hm__watcher;

/* A watched directory, shared by the modules whose files are in it. */
typedef struct hm__wdir {
  struct hm__wdir *next;
  char *path;
  int wd; /* -1: the directory went away; the retry timer looks for it */
  size_t refs;
} hm__wdir;

/* One watched module (mod->watch). */
typedef struct hm__wmod {
  uv_timer_t timer; /* the quiet period */
  hm__watcher *w;
  hm_module *mod;
  struct hm__wmod *next;
  hm__wdir *dir;
  char *path;       /* the module's path when the watch was made */
  const char *base; /* its file name, inside path */
  int have_st;      /* size/mtime/ino recorded at the last sign of life */
  off_t size;
  long long mtime_ns;
  ino_t ino;
  int have_failed; /* failed_key: the file that was refused; not retried until it changes */
  uint64_t failed_key;
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
  int fd; /* the inotify descriptor */
  int stopping;  /* atomic: hm_watch_stop asked the own thread to close everything */
  int closing;   /* handles are being closed; callbacks that still run do nothing */
  unsigned open; /* handles not yet closed */
  unsigned quiet_ms;
  hm__wdir *dirs;
  hm__wmod *mods;
};

/* The watcher whose thread this is, so hm_watch_stop called from an event callback on the
 * watcher's own thread does not wait for itself. */
static __thread hm__watcher *running_here;

static void watch_check(hm__watcher *w, hm__wmod *wm, int completion);
static void quiet_restart(hm__wmod *wm);
static void on_quiet(uv_timer_t *t);
static void on_retry(uv_timer_t *t);

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
  /* On its own loop, uv_run returns now and whoever stopped it frees the rest. */
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

static void wmod_closed(uv_handle_t *h) {
  hm__wmod *wm = h->data;
  hm__watcher *w = wm->w;
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
    uv_close((uv_handle_t *)&wm->timer, wmod_closed);
  }
  w->mods = NULL;
  uv_close((uv_handle_t *)&w->retry, handle_closed);
  uv_close((uv_handle_t *)&w->async, handle_closed);
  uv_close((uv_handle_t *)&w->poll, handle_closed);
}

/* ---- Directories ----------------------------------------------------------------------- */

static void retry_start(hm__watcher *w) {
  if (!uv_is_active((uv_handle_t *)&w->retry))
    uv_timer_start(&w->retry, on_retry, HM__WATCH_RETRY_MS, HM__WATCH_RETRY_MS);
}

/* The directory of `path` (an allocated copy): "." for a bare name, "/" for the root. */
static char *dir_of(const hm__allocator *a, const char *path) {
  const char *slash = strrchr(path, '/');
  size_t n;
  char *d;
  if (slash == NULL)
    return hm__strdup(a, ".");
  n = slash == path ? 1 : (size_t)(slash - path);
  d = hm__malloc(a, n + 1);
  if (d != NULL) {
    memcpy(d, path, n);
    d[n] = '\0';
  }
  return d;
}

/* Find or make the entry for directory `path` (taken over) and add a reference. */
static hm__wdir *dir_ref(hm__watcher *w, char *path) {
  hm__wdir *d;
  int wd = inotify_add_watch(w->fd, path, HM__WATCH_MASK);
  /* Two spellings of one directory get one watch descriptor: match on that, not the text.
   * A directory we cannot watch now (not there yet) is matched by its text and retried. */
  for (d = w->dirs; d != NULL; d = d->next) {
    if (wd >= 0 ? d->wd == wd : (d->wd < 0 && strcmp(d->path, path) == 0)) {
      hm__free(&w->a, path);
      d->refs++;
      return d;
    }
  }
  d = hm__calloc(&w->a, 1, sizeof *d);
  if (d == NULL) {
    if (wd >= 0) {
      int shared = 0;
      hm__wdir *o;
      for (o = w->dirs; o != NULL; o = o->next)
        shared |= o->wd == wd;
      if (!shared)
        inotify_rm_watch(w->fd, wd);
    }
    hm__free(&w->a, path);
    return NULL;
  }
  d->path = path;
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

/* The directory with watch descriptor `wd` is gone (deleted, moved, unmounted): its modules'
 * files can only come back at the same path in a new directory, so look for that. */
static void dir_lost(hm__watcher *w, int wd) {
  hm__wdir *d;
  for (d = w->dirs; d != NULL; d = d->next) {
    if (d->wd == wd) {
      d->wd = -1;
      retry_start(w);
    }
  }
}

/* ---- Modules --------------------------------------------------------------------------- */

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
    /* Whatever happened while nobody looked is found by reading the files. */
    for (wm = w->mods; wm != NULL; wm = wm->next)
      if (wm->dir == d)
        quiet_restart(wm);
  }
  if (!dead)
    uv_timer_stop(&w->retry);
}

static void unwatch(hm__watcher *w, hm__wmod *wm) {
  hm__wmod **pp;
  for (pp = &w->mods; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == wm) {
      *pp = wm->next;
      break;
    }
  }
  wm->mod->watch = NULL;
  dir_unref(w, wm->dir);
  uv_close((uv_handle_t *)&wm->timer, wmod_closed);
}

/* Watch `mod`'s file at `path` (taken over). A failure to allocate leaves the module
 * unwatched until the next hook wakes the loop. */
static void watch_mod(hm__watcher *w, hm_module *mod, char *path) {
  hm__wmod *wm = hm__calloc(&w->a, 1, sizeof *wm);
  char *dir = dir_of(&w->a, path);
  if (wm == NULL || dir == NULL) {
    hm__free(&w->a, dir);
    hm__free(&w->a, wm);
    hm__free(&w->a, path);
    return;
  }
  wm->dir = dir_ref(w, dir); /* takes dir over */
  if (wm->dir == NULL) {
    hm__free(&w->a, wm);
    hm__free(&w->a, path);
    return;
  }
  wm->w = w;
  wm->mod = mod;
  wm->path = path;
  wm->base = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;
  uv_timer_init(w->loop, &wm->timer);
  wm->timer.data = wm;
  w->open++;
  wm->next = w->mods;
  w->mods = wm;
  mod->watch = wm;
  /* The file may have changed between the module's load and this watch: a quiet check
   * reads it once and compares it with the current version. */
  quiet_restart(wm);
}

/* Make the set of watched modules match the registry's loaded modules and their paths. */
static void reconcile(hm__watcher *w) {
  hm_registry *reg = w->reg;
  size_t i;
  for (i = 0;; i++) {
    hm_module *mod;
    hm__wmod *wm;
    int loaded, moved;
    char *path = NULL;
    pthread_mutex_lock(&reg->lock);
    if (i >= reg->nmods) {
      pthread_mutex_unlock(&reg->lock);
      break;
    }
    mod = reg->mods[i];
    wm = mod->watch;
    loaded = mod->cur != NULL;
    moved = loaded && wm != NULL && strcmp(wm->path, mod->path) != 0;
    if (loaded && (wm == NULL || moved))
      path = hm__strdup(&w->a, mod->path);
    pthread_mutex_unlock(&reg->lock);
    if (wm != NULL && (!loaded || moved))
      unwatch(w, wm);
    if (path != NULL)
      watch_mod(w, mod, path);
  }
}

/* ---- Deciding ------------------------------------------------------------------------- */

static void record_stat(hm__wmod *wm) {
  struct stat st;
  wm->have_st = stat(wm->path, &st) == 0;
  if (wm->have_st) {
    wm->size = st.st_size;
    wm->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
    wm->ino = st.st_ino;
  }
}

/* A sign of life: note the file's size and mtime and (re)start the quiet period. */
static void quiet_restart(hm__wmod *wm) {
  record_stat(wm);
  uv_timer_start(&wm->timer, on_quiet, wm->w->quiet_ms, 0);
}

static void on_quiet(uv_timer_t *t) {
  hm__wmod *wm = t->data;
  struct stat st;
  long long mtime;
  if (wm->w->closing)
    return;
  if (stat(wm->path, &st) != 0) {
    /* Gone: the current version serves on; a new file will announce itself. */
    wm->have_st = 0;
    return;
  }
  mtime = (long long)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
  if (!wm->have_st || st.st_size != wm->size || mtime != wm->mtime_ns || st.st_ino != wm->ino) {
    /* Still changing without telling inotify (writes through a mapping): wait again. */
    quiet_restart(wm);
    return;
  }
  watch_check(wm->w, wm, 0);
}

/* Read the file whole, and its mode. HM_EAGAIN if it changed while being read. */
static int read_whole(hm__watcher *w, const char *path, unsigned char **out, size_t *outlen,
                      mode_t *mode) {
  struct stat st, st2;
  unsigned char *buf;
  size_t len, got = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY), rc = 0;
  if (fd < 0)
    return -errno;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > HM__WATCH_MAX_SIZE) {
    close(fd);
    return HM_ENOTELF;
  }
  len = (size_t)st.st_size;
  buf = hm__malloc(&w->a, len);
  if (buf == NULL) {
    close(fd);
    return HM_ENOMEM;
  }
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  if (got != len || fstat(fd, &st2) != 0 || st2.st_size != st.st_size ||
      st2.st_mtim.tv_sec != st.st_mtim.tv_sec || st2.st_mtim.tv_nsec != st.st_mtim.tv_nsec)
    rc = HM_EAGAIN;
  close(fd);
  if (rc != 0) {
    hm__free(&w->a, buf);
    return rc;
  }
  *out = buf;
  *outlen = len;
  *mode = st.st_mode;
  return 0;
}

static hm_reload_mode mode_of(hm_module *mod) {
  /* Under reg->lock. */
  return mod->mode != HM_RELOAD_DEFAULT ? mod->mode : mod->reg->reload_mode;
}

/* What a refusal is about: the bytes and the permission bits (the loader refuses a file
 * that others may write to; a chmod that fixes it must count as a change). */
static uint64_t failure_key(uint64_t hash, mode_t mode) {
  return hash ^ ((uint64_t)(mode & 07777) * 0x9e3779b97f4a7c15ull);
}

/* A settled file that never became complete: refuse it, as a failed reload would, once per
 * distinct file (`key`). */
static void reject(hm__watcher *w, hm__wmod *wm, uint64_t key, int err, const char *why) {
  hm_registry *reg = w->reg;
  unsigned num;
  if (wm->have_failed && wm->failed_key == key)
    return;
  wm->have_failed = 1;
  wm->failed_key = key;
  pthread_mutex_lock(&reg->lock);
  if (wm->mod->cur == NULL) {
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  num = wm->mod->cur->num;
  reg->stats.rejects++;
  pthread_mutex_unlock(&reg->lock);
  hm__set_error(reg, err, "%s stayed incomplete for %u ms: %s", wm->path, w->quiet_ms,
                why[0] ? why : hm_strerror(err));
  hm__emit(reg, HM_EVENT_REJECTED, wm->mod, num, err);
}

/* A complete file with content hash h. Reload or queue it unless it is what already
 * serves, what is already queued, or what was already refused. */
static void settled(hm__watcher *w, hm__wmod *wm, uint64_t h, uint64_t key) {
  hm_registry *reg = w->reg;
  hm_module *mod = wm->mod;
  hm_reload_mode mode;
  unsigned num;
  int rc;

  pthread_mutex_lock(&reg->lock);
  if (mod->cur == NULL) {
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  if (h == mod->cur->id.hash) {
    /* Back to what serves: a reload queued for other bytes has nothing left to do. */
    mod->pending = 0;
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  if (wm->have_failed && wm->failed_key == key) {
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  mode = mode_of(mod);
  if (mode == HM_RELOAD_QUEUED) {
    if (mod->pending && wm->have_queued && wm->queued_hash == h) {
      pthread_mutex_unlock(&reg->lock);
      return;
    }
    mod->pending = 1;
    wm->have_queued = 1;
    wm->queued_hash = h;
  }
  num = mod->cur->num;
  pthread_mutex_unlock(&reg->lock);

  hm__emit(reg, HM_EVENT_CHANGED, mod, num, 0);
  if (mode == HM_RELOAD_QUEUED || w->closing)
    return;
  rc = hm__reload(mod, NULL, 0);
  /* A file that was complete and still failed (a missing symbol, a hook, dlopen) fails the
   * same way until its bytes change. One that changed under the loader is being rewritten:
   * its writer's close will bring it back, and the quiet timer covers a writer that never
   * closes. */
  if (rc == 0) {
    wm->have_failed = 0;
  } else if (rc == HM_EAGAIN || rc == HM_EBADELF || rc == HM_ENOENT) {
    if (!w->closing)
      quiet_restart(wm);
  } else if (rc != HM_ENOMOD) {
    wm->have_failed = 1;
    wm->failed_key = key;
  }
}

/* Look at the file now. `completion`: a writer just closed it or it was renamed into place;
 * otherwise its quiet period has passed. */
static void watch_check(hm__watcher *w, hm__wmod *wm, int completion) {
  unsigned char *buf = NULL;
  size_t len = 0;
  char why[200];
  uint64_t h;
  mode_t fmode = 0;
  int rc = read_whole(w, wm->path, &buf, &len, &fmode);

  if (rc == -ENOENT || rc == -ENOTDIR) {
    uv_timer_stop(&wm->timer);
    return;
  }
  if (rc == HM_EAGAIN || rc == HM_ENOMEM || (rc != 0 && completion)) {
    quiet_restart(wm);
    return;
  }
  if (rc != 0) {
    /* Unreadable after the quiet period: the loader would refuse it the same way. The
     * error code stands in for the unknown bytes. */
    reject(w, wm, (uint64_t)(int64_t)rc, rc, "cannot read it");
    return;
  }
  why[0] = '\0';
  rc = hm__elf_check(buf, len, NULL, why, sizeof why);
  h = hm__hash_bytes(buf, len);
  hm__free(&w->a, buf);
  if (rc != 0) {
    if (completion) {
      /* Closed, but not complete: a writer that closes between parts, or a broken build.
       * Give it the quiet period before calling it broken. */
      quiet_restart(wm);
      return;
    }
    reject(w, wm, failure_key(h, fmode), rc, why);
    return;
  }
  uv_timer_stop(&wm->timer);
  settled(w, wm, h, failure_key(h, fmode));
}

/* One inotify event about `wm`'s file. */
static void file_event(hm__watcher *w, hm__wmod *wm, uint32_t mask) {
  if (mask & (IN_DELETE | IN_MOVED_FROM)) {
    /* The source went away: the current version serves on until a new file appears. */
    uv_timer_stop(&wm->timer);
    wm->have_st = 0;
  } else if (mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
    watch_check(w, wm, 1);
  } else {
    quiet_restart(wm);
  }
}

static void on_inotify(uv_poll_t *p, int status, int events) {
  hm__watcher *w = p->data;
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
      return;
    for (at = u.buf; at < u.buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)(void *)at;
      at += sizeof *ev + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        /* Events were lost: any file may have changed. Read them all once they are quiet. */
        hm__wmod *wm;
        for (wm = w->mods; wm != NULL; wm = wm->next)
          quiet_restart(wm);
        continue;
      }
      if (ev->mask & (IN_IGNORED | IN_MOVE_SELF)) {
        if (ev->mask & IN_MOVE_SELF)
          inotify_rm_watch(w->fd, ev->wd);
        dir_lost(w, ev->wd);
        continue;
      }
      if (ev->len == 0)
        continue;
      {
        hm__wmod *wm, *next;
        for (wm = w->mods; wm != NULL; wm = next) {
          next = wm->next;
          if (wm->dir->wd != ev->wd || strcmp(wm->base, ev->name) != 0)
            continue;
          file_event(w, wm, ev->mask);
          /* The host's event callback may have stopped us (on a host loop). */
          if (w->closing)
            return;
        }
      }
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

static void hook_poke(hm_registry *reg, hm_module *mod) {
  hm__watcher *w;
  (void)mod;
  /* Under reg->lock, so hm_watch_stop cannot close the async handle meanwhile. */
  pthread_mutex_lock(&reg->lock);
  w = reg->watch;
  if (w != NULL)
    uv_async_send(&w->async);
  pthread_mutex_unlock(&reg->lock);
}

static void hook_stop(hm_registry *reg) { hm_watch_stop(reg); }

static const hm__watch_ops watch_ops = {hook_poke, hook_poke, hook_stop};

/* ---- Starting and stopping ------------------------------------------------------------- */

static void watcher_thread(void *arg) {
  hm__watcher *w = arg;
  running_here = w;
  uv_run(&w->own_loop, UV_RUN_DEFAULT);
  running_here = NULL;
  /* Stopped from an event callback on this thread: watch_reap joins and frees it, from
   * hm_registry_free or the next hm_watch_start, so the registry outlives this thread. */
}

/* Join and free a watcher that was stopped from its own thread. */
static void watch_reap(hm_registry *reg) {
  hm__watcher *w;
  pthread_mutex_lock(&reg->lock);
  w = reg->watch_stopped;
  if (w != NULL && running_here == w)
    w = NULL; /* called from that very thread: leave it for later */
  if (w != NULL)
    reg->watch_stopped = NULL;
  pthread_mutex_unlock(&reg->lock);
  if (w == NULL)
    return;
  uv_thread_join(&w->thread);
  uv_loop_close(&w->own_loop);
  {
    hm__allocator a = w->a;
    hm__free(&a, w);
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

static int watch_begin(hm_registry *reg, uv_loop_t *loop) {
  hm__watcher *w;
  int rc;

  pthread_mutex_lock(&reg->lock);
  rc = reg->watch != NULL ? HM_EALREADY : 0;
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0) {
    hm__set_error(reg, rc, "a watcher already runs for this registry");
    return rc;
  }
  w = hm__calloc(&reg->a, 1, sizeof *w);
  if (w == NULL) {
    hm__set_error(reg, HM_ENOMEM, "out of memory starting the watcher");
    return HM_ENOMEM;
  }
  w->reg = reg;
  w->a = reg->a;
  w->quiet_ms = reg->quiet_ms;
  w->fd = -1;
  if (loop == NULL) {
    rc = uv_loop_init(&w->own_loop);
    if (rc != 0) {
      hm__free(&w->a, w);
      hm__set_error(reg, rc, "uv_loop_init: %s", uv_strerror(rc));
      return rc;
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
    hm__set_error(reg, rc, "cannot start the watcher: %s", uv_strerror(rc));
    return rc;
  }
  w->async.data = w;
  w->open = 1;
  rc = uv_poll_init(loop, &w->poll, w->fd);
  if (rc != 0) {
    w->closing = 1;
    uv_close((uv_handle_t *)&w->async, handle_closed);
    watcher_discard(w);
    hm__set_error(reg, rc, "cannot poll the inotify descriptor: %s", uv_strerror(rc));
    return rc;
  }
  w->poll.data = w;
  w->open++;
  uv_timer_init(loop, &w->retry);
  w->retry.data = w;
  w->open++;
  rc = uv_poll_start(&w->poll, UV_READABLE, on_inotify);

  pthread_mutex_lock(&reg->lock);
  if (rc == 0 && reg->watch != NULL)
    rc = HM_EALREADY; /* another thread won the race */
  if (rc == 0) {
    reg->watch = w;
    __atomic_store_n(&reg->watch_ops, &watch_ops, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&reg->lock);
  if (rc == 0) {
    /* The first wake-up watches the modules already loaded. */
    uv_async_send(&w->async);
    if (w->own)
      rc = uv_thread_create(&w->thread, watcher_thread, w);
    if (rc == 0)
      return 0;
    pthread_mutex_lock(&reg->lock);
    reg->watch = NULL;
    __atomic_store_n(&reg->watch_ops, NULL, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&reg->lock);
  }
  watcher_close(w);
  watcher_discard(w);
  hm__set_error(reg, rc, "cannot start the watcher: %s", hm_strerror(rc));
  return rc;
}

int hm_watch_start(hm_registry *reg) {
  if (reg == NULL)
    return HM_EINVAL;
  watch_reap(reg);
  return watch_begin(reg, NULL);
}

int hm_watch_attach(hm_registry *reg, uv_loop_t *loop) {
  if (reg == NULL)
    return HM_EINVAL;
  if (loop == NULL) {
    hm__set_error(reg, HM_EINVAL, "hm_watch_attach needs a loop");
    return HM_EINVAL;
  }
  watch_reap(reg);
  return watch_begin(reg, loop);
}

void hm_watch_stop(hm_registry *reg) {
  hm__watcher *w;
  if (reg == NULL)
    return;
  pthread_mutex_lock(&reg->lock);
  w = reg->watch;
  reg->watch = NULL;
  __atomic_store_n(&reg->watch_ops, NULL, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&reg->lock);
  if (w == NULL)
    return;
  if (!w->own || running_here == w) {
    /* On the loop's thread: close now. On a host loop the close callbacks free the rest; the
     * watcher's own thread is joined and freed by watch_reap, since it may still be inside a
     * reload of this registry when this returns. */
    watcher_close(w);
    if (w->own) {
      pthread_mutex_lock(&reg->lock);
      reg->watch_stopped = w;
      reg->watch_reap = watch_reap;
      pthread_mutex_unlock(&reg->lock);
    }
    return;
  }
  __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
  uv_async_send(&w->async);
  uv_thread_join(&w->thread);
  uv_loop_close(&w->own_loop);
  {
    hm__allocator a = w->a;
    hm__free(&a, w);
  }
}

/* ---- Modes and queued reloads ---------------------------------------------------------- */

int hm_module_set_reload_mode(hm_module *mod, hm_reload_mode mode) {
  if (mod == NULL)
    return HM_EINVAL;
  if (mode != HM_RELOAD_DEFAULT && mode != HM_RELOAD_IMMEDIATE && mode != HM_RELOAD_QUEUED) {
    hm__set_error(mod->reg, HM_EINVAL, "unknown reload mode %d", (int)mode);
    return HM_EINVAL;
  }
  pthread_mutex_lock(&mod->reg->lock);
  mod->mode = mode;
  pthread_mutex_unlock(&mod->reg->lock);
  return 0;
}

int hm_registry_poll(hm_registry *reg) {
  size_t i;
  int n = 0;
  if (reg == NULL)
    return HM_EINVAL;
  /* Walking reg->mods by index with the lock taken per step is safe while other threads add
   * modules. The only ones ever removed never had a version (so nothing is pending on them);
   * a removal may make this pass skip one module, whose reload then waits for the next poll. */
  for (i = 0;; i++) {
    hm_module *mod;
    int due;
    pthread_mutex_lock(&reg->lock);
    if (i >= reg->nmods) {
      pthread_mutex_unlock(&reg->lock);
      break;
    }
    mod = reg->mods[i];
    due = mod->pending && mod->cur != NULL;
    mod->pending = 0;
    pthread_mutex_unlock(&reg->lock);
    if (due && hm__reload(mod, NULL, 0) == 0 && n < INT_MAX)
      n++;
  }
  return n;
}
