/*
 * The file watcher's life: starting it on a loop (its own, on a thread, or the host's),
 * stopping it from any thread, and the hooks through which the registry wakes it. The
 * watcher (watch.c, watchpath.c) is the only part of the core that knows libuv; the registry
 * reaches it through the hm__watch_ops hooks.
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
 *
 * Layer 9 (docs/architecture.md), the watcher's top: calls watch.c, watchgroup.c, build.c,
 * watchpath.c and fork.c.
 */
#include "watch.h"

#include "hotmod/uv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

/* The watcher whose thread this is, so hm_watch_stop called from an event callback on the
 * watcher's own thread does not wait for itself. */
static __thread hm__watcher *running_here;

/* ---- Closing --------------------------------------------------------------------------- */

/* The last close callback: everything the watcher allocated goes. */
static void watcher_closed(hm__watcher *w) {
  hm__build_free(w);
  hm__watch_free_dirs(w);
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

static void handle_closed(uv_handle_t *h) { hm__watch_handle_done(h->data); }

/* Close every handle. On the loop's thread. Nothing is freed here, so a callback that is
 * still on the stack (one that ran the host's event callback, which stopped us) can look at
 * its structures and see `closing`. */
static void watcher_close(hm__watcher *w) {
  hm__wmod *wm;
  if (w->closing)
    return;
  w->closing = 1;
  /* Build commands first: no child outlives the stop. */
  hm__build_close(w);
  for (wm = w->mods; wm != NULL; wm = wm->next) {
    if (!__atomic_load_n(&w->detached, __ATOMIC_ACQUIRE))
      __atomic_store_n(&wm->mod->watch_method, 0, __ATOMIC_RELEASE);
    uv_close((uv_handle_t *)&wm->timer, hm__watch_wmod_closed);
  }
  w->mods = NULL;
  hm__wgroup_close_all(w);
  uv_close((uv_handle_t *)&w->retry, handle_closed);
  uv_close((uv_handle_t *)&w->async, handle_closed);
  uv_close((uv_handle_t *)&w->poll, handle_closed);
}

/* ---- Wake-ups --------------------------------------------------------------------------- */

static void on_async(uv_async_t *a) {
  hm__watcher *w = a->data;
  if (w->closing)
    return;
  if (__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE))
    watcher_close(w);
  else
    hm__watch_reconcile(w);
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
  const char *e = secure_getenv("HOTMOD_WATCH_METHOD");
  if (e == NULL)
    return (hm__method)0;
  if (strcmp(e, "events") == 0)
    return HM__BY_EVENTS;
  if (strcmp(e, "timing") == 0)
    return HM__BY_TIMING;
  return (hm__method)0;
}

/* Descriptors a watcher on a loop of its own needs at its start: the loop's epoll, signal
 * pipe (2) and wake-up eventfd, and the inotify descriptor; and, for the first loop of the
 * process, libuv's process-wide signal pipe (2), kept until exit. */
#define HM__WATCH_FDS 5
#define HM__WATCH_START_FDS (HM__WATCH_FDS + 2)

/* Set once a loop of ours was made: libuv's process-wide pipe exists from then on. (A loop
 * the host made first also made it, but that cannot be known: it costs only the margin.) */
static int libuv_signal_pipe_made;

/* Fail with the errno (-EMFILE, -ENFILE) unless `n` descriptors can be had now. libuv's first
 * loop aborts the process when its process-wide signal pipe cannot be made (1 or 2 free
 * descriptors), and a uv_loop_init that fails after its epoll descriptor leaks that one
 * (libuv 1.44): asking first means libuv is only called when it has what it needs. Another
 * thread may take them between this look and libuv's; only the host can rule that out. */
static int fds_available(int n) {
  int fds[HM__WATCH_START_FDS], got = 0, rc = 0;
  while (got < n) {
    fds[got] = got == 0 ? eventfd(0, EFD_CLOEXEC) : fcntl(fds[0], F_DUPFD_CLOEXEC, 0);
    if (fds[got] < 0) {
      rc = -errno;
      break;
    }
    got++;
  }
  while (got > 0)
    close(fds[--got]);
  return rc;
}

/* After uv_loop_init failed: its epoll descriptor is left open (libuv's error path closes
 * only what uv__platform_loop_delete knows, not backend_fd). Closed here, if it is still an
 * epoll descriptor, so that a libuv that closes it itself is not harmed. */
static void close_leftover_epoll(uv_loop_t *loop) {
  char proc[48], target[64];
  ssize_t n;
  int fd = uv_backend_fd(loop);
  if (fd < 0)
    return;
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  n = readlink(proc, target, sizeof target - 1);
  if (n <= 0)
    return;
  target[n] = '\0';
  if (strcmp(target, "anon_inode:[eventpoll]") == 0)
    close(fd);
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
  w->closed = watcher_closed;
  w->on_retry = hm__watch_on_retry;
  if (loop == NULL) {
    int need = __atomic_load_n(&libuv_signal_pipe_made, __ATOMIC_ACQUIRE) ? HM__WATCH_FDS
                                                                            : HM__WATCH_START_FDS;
    if ((rc = fds_available(need)) != 0) {
      hm__free(&w->a, w);
      return hm__fail(rc, "cannot start the watcher: it needs %d free file descriptors: %s",
                      need, hm_strerror(rc));
    }
    rc = uv_loop_init(&w->own_loop);
    if (rc != 0) {
      close_leftover_epoll(&w->own_loop);
      hm__free(&w->a, w);
      return hm__fail(rc, "uv_loop_init: %s", uv_strerror(rc));
    }
    __atomic_store_n(&libuv_signal_pipe_made, 1, __ATOMIC_RELEASE);
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
  rc = uv_poll_start(&w->poll, UV_READABLE, hm__watch_on_inotify);
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
  if (w != NULL && hm__in_module_code()) {
    /* The loop closes it on its next turn, perhaps after the registry is gone: it must not
     * touch the modules then. They say now that they are no longer watched. */
    size_t i;
    __atomic_store_n(&w->detached, 1, __ATOMIC_RELEASE);
    for (i = 0; i < reg->nmods; i++)
      __atomic_store_n(&reg->mods[i]->watch_method, 0, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&reg->lock);
  if (w == NULL)
    return;
  if (running_here == w || (!w->own && !hm__in_module_code())) {
    /* On the loop's thread: close now. On a host loop the close callbacks free the rest. */
    watcher_close(w);
    return;
  }
  __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
  uv_async_send(&w->async);
  if (wait)
    watcher_join_free(w);
}
