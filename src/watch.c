/*
 * The file watcher's decisions: it folds inotify events into each module's settle state,
 * asks the kernel about writers, reads the file, and carries out what the settle policy
 * (settle.c) decides: wait, load (or queue), refuse, or retry. Where it looks is
 * watchpath.c's business; starting, stopping and the hooks the registry calls are
 * watchrun.c's. Everything here runs on the watcher loop's thread.
 *
 * One inotify descriptor per watcher, driven by a uv_poll_t, with one watch per directory.
 * Not uv_fs_event: it does not report close-after-write, which is what says a writer is
 * done, and a watch on the file itself goes silent once a build renames a new file
 * over it. Events are matched to modules by directory and name, and all events of one read
 * are folded before any decision, so a create, open, write and close that arrive together
 * are seen together.
 *
 * Layer 9 (docs/architecture.md), above build.c, watchsig.c and watchpath.c: calls them and
 * the registry's layers; watchrun.c calls it.
 */
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

static void after_failure(hm__wmod *wm, int rc, uint64_t key, unsigned cur);

/* ---- Modules --------------------------------------------------------------------------- */

static void unwatch(hm__watcher *w, hm__wmod *wm) {
  hm__wmod **pp;
  for (pp = &w->mods; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == wm) {
      *pp = wm->next;
      break;
    }
  }
  __atomic_store_n(&wm->mod->watch_method, 0, __ATOMIC_RELEASE);
  uv_close((uv_handle_t *)&wm->timer, hm__watch_wmod_closed);
}

/* Watch `mod`'s file at `path` (taken over). A failure to allocate leaves the module
 * unwatched until a retry on the timer succeeds. */
static void watch_mod(hm__watcher *w, hm_module *mod, char *path) {
  hm__wmod *wm = hm__calloc(&w->a, 1, sizeof *wm);
  if (wm == NULL) {
    hm__free(&w->a, path);
    w->lost_mods = 1;
    hm__watch_setup_failed(w);
    return;
  }
  wm->w = w;
  wm->mod = mod;
  wm->path = path;
  hm__settle_init(&wm->st, w->forced);
  hm__watch_set_points(w, wm);
  uv_timer_init(w->loop, &wm->timer);
  wm->timer.data = wm;
  w->open++;
  wm->next = w->mods;
  w->mods = wm;
  /* The file may have changed between the module's load and this watch: look at it now. */
  hm__settle_note(&wm->st, HM__EV_START);
  hm__watch_decide(wm, HM__WHY_EVENTS);
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
/* The watcher's state for `mod`, or NULL. The list is the watcher's own: no lock. (Not a
 * pointer in the module: a stopped watcher still closing and its successor would share it.) */
static hm__wmod *find_wmod(hm__watcher *w, const hm_module *mod) {
  hm__wmod *wm;
  for (wm = w->mods; wm != NULL; wm = wm->next)
    if (wm->mod == mod)
      return wm;
  return NULL;
}

static void setup_check(hm__watcher *w);

void hm__watch_reconcile(hm__watcher *w) {
  hm_registry *reg = w->reg;
  watch_todo *todo;
  hm__wmod *wm;
  size_t i, n = 0, cap;
  /* What failed before is tried again now; this pass says whether it still fails. */
  w->failing = 0;
  w->lost_mods = 0;
  /* Build rules first: their sources are watched before the modules say they are. */
  hm__build_reconcile(w);
  if (hm__watch_winding_down(w))
    return;
  pthread_mutex_lock(&reg->lock);
  cap = reg->nmods;
  todo = cap ? hm__calloc(&w->a, cap, sizeof *todo) : NULL;
  if (cap != 0 && todo == NULL) {
    w->lost_mods = 1;
    hm__watch_setup_failed(w);
  }
  for (i = 0; todo != NULL && i < reg->nmods; i++) {
    hm_module *mod = reg->mods[i];
    hm__wmod *wm = find_wmod(w, mod);
    int loaded = mod->cur != NULL;
    int moved = loaded && wm != NULL && strcmp(wm->path, mod->path) != 0;
    watch_todo t = {mod, NULL, wm != NULL && (!loaded || moved), 0};
    if (loaded && (wm == NULL || moved) && (t.path = hm__strdup(&w->a, mod->path)) == NULL) {
      w->lost_mods = 1;
      hm__watch_setup_failed(w);
    }
    if (loaded && mod->poll_rc != 0) {
      t.poll_rc = mod->poll_rc;
      mod->poll_rc = 0;
    }
    if (t.path != NULL || t.unwatch || t.poll_rc != 0)
      todo[n++] = t;
  }
  pthread_mutex_unlock(&reg->lock);
  for (i = 0; i < n && !hm__watch_winding_down(w); i++) {
    hm__wmod *wm = find_wmod(w, todo[i].mod);
    if (wm != NULL && todo[i].unwatch)
      unwatch(w, wm);
    if (todo[i].path != NULL) {
      watch_mod(w, todo[i].mod, todo[i].path);
      todo[i].path = NULL;
    }
    wm = find_wmod(w, todo[i].mod);
    if (wm != NULL && todo[i].poll_rc == HM__POLL_REGROUP) {
      /* Its group was refused for another member's build: read it again and hold it for
       * that member's next one. */
      wm->have_queued = 0;
      wm->regroup = 1;
      hm__settle_note(&wm->st, HM__EV_START);
      hm__watch_decide(wm, HM__WHY_EVENTS);
    } else if (wm != NULL && todo[i].poll_rc != 0) {
      /* As if the watcher had tried it: the retry schedule brings it back to the queue. */
      wm->have_queued = 0;
      after_failure(wm, todo[i].poll_rc, wm->queued_hash, hm_module_version(wm->mod));
    }
  }
  for (i = 0; i < n; i++)
    hm__free(&w->a, todo[i].path);
  hm__free(&w->a, todo);
  /* Modules whose directories could not all be watched: follow their paths again. */
  for (wm = w->mods; wm != NULL && !hm__watch_winding_down(w); wm = wm->next) {
    if (wm->setup_err != 0 && hm__watch_set_points(w, wm) == 0) {
      /* Changes made while it was not watched are found by looking now. */
      hm__settle_note(&wm->st, HM__EV_START);
      hm__watch_decide(wm, HM__WHY_EVENTS);
    }
  }
  if (!hm__watch_winding_down(w))
    setup_check(w);
}

/* Whether the module `mod` (wm: the watcher's state for it, or NULL) is watched, or the
 * error that keeps it from it, with what could not be watched in what[n]. */
static int watch_err(hm__watcher *w, hm_module *mod, const hm__wmod *wm, int has_rule,
                     const char *path, char *what, size_t n) {
  int err;
  size_t i;
  if (wm == NULL) {
    snprintf(what, n, "%s", path);
    return w->lost_mods ? HM_ENOMEM : 0; /* else loaded since this pass: not failed yet */
  }
  if ((err = hm__watch_points_err(wm)) != 0) {
    snprintf(what, n, "%s", wm->path);
    for (i = 0; i < wm->npts && wm->setup_err == 0; i++)
      if (wm->pts[i].dir->err != 0)
        snprintf(what, n, "the directory %s (on the way to %s)", wm->pts[i].dir->path, wm->path);
    return err;
  }
  return hm__build_watch_err(w, mod, has_rule, what, n);
}

/* At the end of each pass: while anything is not watched, the retry timer brings the
 * watcher back (hm__watch_setup_failed); once that has lasted HM__WATCH_REPORT_MS, each
 * module concerned gets one HM_EVENT_WATCH_FAILED. The failure is over when a pass finds
 * everything watched. */
static void setup_check(hm__watcher *w) {
  hm_registry *reg = w->reg;
  hm__wmod *wm;
  size_t i;
  for (wm = w->mods; wm != NULL; wm = wm->next)
    if (hm__watch_points_err(wm) != 0)
      hm__watch_setup_failed(w);
  if (!w->failing) {
    /* Build rules need a look at the modules' rules, under the lock. */
    pthread_mutex_lock(&reg->lock);
    for (i = 0; i < reg->nmods && !w->failing; i++) {
      char what[256];
      if (reg->mods[i]->cur != NULL &&
          hm__build_watch_err(w, reg->mods[i], reg->mods[i]->build != NULL, what, sizeof what))
        hm__watch_setup_failed(w);
    }
    pthread_mutex_unlock(&reg->lock);
  }
  if (!w->failing) {
    w->failing_since_ns = 0;
    w->failing_reported = 0;
    return;
  }
  if (w->failing_since_ns == 0)
    w->failing_since_ns = hm__mono_ns();
  if (w->failing_reported ||
      hm__mono_ns() - w->failing_since_ns < (long long)HM__WATCH_REPORT_MS * 1000000)
    return;
  w->failing_reported = 1;
  /* One module at a time: the lock is not held while the host's callback runs, and a loaded
   * module is never freed before the registry. */
  for (i = 0; !hm__watch_winding_down(w); i++) {
    hm_module *mod;
    unsigned num;
    int has_rule, err;
    char path[1024], what[1200], detail[1500];
    pthread_mutex_lock(&reg->lock);
    if (i >= reg->nmods) {
      pthread_mutex_unlock(&reg->lock);
      break;
    }
    mod = reg->mods[i];
    num = mod->cur != NULL ? mod->cur->num : 0;
    has_rule = mod->build != NULL;
    snprintf(path, sizeof path, "%s", mod->path);
    pthread_mutex_unlock(&reg->lock);
    if (num == 0)
      continue;
    err = watch_err(w, mod, find_wmod(w, mod), has_rule, path, what, sizeof what);
    if (err == 0)
      continue;
    snprintf(detail, sizeof detail,
             "the watcher cannot watch %s: %s; it tries again every %u ms (meanwhile "
             "hm_module_watch_method says HM_WATCH_NONE for a module's own file)",
             what, hm_strerror(err), (unsigned)HM__WATCH_RETRY_MS);
    hm__emit_detail(reg, HM_EVENT_WATCH_FAILED, mod, num, err, detail);
  }
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

/* The wait of a group with held builds: on, or over, then they are applied together. When
 * the group is refused for good, the member that failed is a refused build (those bytes are
 * not tried again), and every member's build stays held (parked) for the group's next
 * build, whichever member's it is (the failure may have been another member's fault: a
 * load hook that refused because the other's build lacks what it needs). A failure a later
 * try may not meet is retried member by member, each held again. */
static void on_group_timer(uv_timer_t *t) {
  hm__wgroup *wg = t->data;
  hm__wmod *held[64];
  size_t n, i, failed = 0;
  unsigned ms;
  int rc, queued = 0;
  if (hm__watch_winding_down(wg->w))
    return;
  if ((ms = hm__wgroup_wait_ms(wg)) != 0) {
    uv_timer_start(t, on_group_timer, ms, 0);
    return;
  }
  n = hm__wgroup_held(wg, held, sizeof held / sizeof held[0]);
  if (n == 0)
    return;
  rc = hm__wgroup_apply(wg, held, n, &failed, &queued);
  for (i = 0; i < n; i++) {
    hm__wmod *wm = held[i];
    if (rc != 0 && n > 1 && hm__err_is_final(rc)) {
      if (i == failed)
        after_failure(wm, rc, wm->held_key, wm->held_cur);
      wm->parked = 1;
      continue;
    }
    if (queued) {
      wm->have_queued = rc == 0;
      wm->queued_hash = wm->held.id.hash;
    }
    after_failure(wm, rc, wm->held_key, wm->held_cur);
    hm__wgroup_release(wm);
  }
}

/* A finished new build: reload it at once, or prepare it for hm_registry_poll; or, for a
 * module in a group, hold it for the group (watchgroup.c: `f`'s bytes are taken). */
static void take(hm__wmod *wm, hm__file *f, uint64_t key, unsigned cur) {
  hm__watcher *w = wm->w;
  hm_registry *reg = w->reg;
  hm_module *mod = wm->mod;
  hm__wgroup *wg;
  hm_reload_mode mode;
  int rc;

  pthread_mutex_lock(&reg->lock);
  if (mod->cur == NULL) {
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  mode = mode_of(mod);
  if (mode == HM_RELOAD_QUEUED && mod->prepared != NULL && wm->have_queued &&
      wm->queued_hash == f->id.hash) {
    pthread_mutex_unlock(&reg->lock);
    return; /* already prepared */
  }
  pthread_mutex_unlock(&reg->lock);

  hm__emit(reg, HM_EVENT_CHANGED, mod, cur, 0);
  if (hm__watch_winding_down(w))
    return;
  if ((wg = hm__wgroup_hold(wm, f, key, cur)) != NULL) {
    if (!wm->parked)
      uv_timer_start(&wg->timer, on_group_timer, hm__wgroup_wait_ms(wg), 0);
    return;
  }
  if (mode == HM_RELOAD_QUEUED) {
    /* Everything callers cannot see happens here; the host's poll only publishes. */
    rc = hm__prepare(mod, wm->path, f);
    wm->have_queued = rc == 0;
    wm->queued_hash = f->id.hash;
  } else {
    rc = hm__reload(mod, wm->path, f, HM__RELOAD_WATCHER);
  }
  after_failure(wm, rc, key, cur);
}

/* A finished new build, with trusted keys set: taken once its signature is there (see
 * hm__settle_signature); without keys, at once. */
static void load_signed(hm__wmod *wm, hm__file *f, const hm__settle_file *sf) {
  unsigned ms;
  switch (hm__watch_sig_gate(wm, f, failure_key(f->id.hash, f->id.mode), sf->key, sf->cur,
                             &ms)) {
  case HM__DO_SIGWAIT:
    timer_start(wm, HM__WHY_SIGNED, ms);
    break;
  case HM__DO_REFUSE:
    report(wm, HM_EUNTRUSTED);
    break;
  default:
    take(wm, f, sf->key, sf->cur);
    break;
  }
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
                                         (reg->flags & HM__READ_ALLOW_WRITABLE) | HM__READ_HASH |
                                             (wm->st.method == HM__BY_LEASE ? HM__READ_PROBE : 0) |
                                             (__atomic_load_n(&reg->signing, __ATOMIC_ACQUIRE)
                                                  ? HM__READ_SIGNED
                                                  : 0),
                                         &f, NULL);
  sf.denied = fd == HM_EACCES; /* the open itself: no permission to read, for now */
  if (sf.read_rc == 0) {
    why[0] = '\0';
    elf_rc = hm__elf_check(f.buf, f.len, NULL, why, sizeof why);
    sf.complete = elf_rc == 0;
    /* Signed builds: a refusal is about these bytes with this signature file. */
    sf.key = failure_key(f.id.hash, f.id.mode) ^ hm__watch_sig_key(&f);
  } else {
    sf.key = (uint64_t)(int64_t)sf.read_rc * 0x9e3779b97f4a7c15ull;
  }
  {
    int queued = 0;
    /* Asked after the read: events of a writer that changed the file before it was read
     * are queued by then. The module decides again once they are read. */
    sf.events_pending = ioctl(w->fd, FIONREAD, &queued) == 0 && queued > 0;
    if (sf.events_pending)
      wm->dirty = 1;
  }
  if (sf.read_rc == 0)
    hm__hash_current(wm->mod); /* an explicit reload left it to the first watcher to ask */
  pthread_mutex_lock(&reg->lock);
  if (wm->mod->cur == NULL) {
    pthread_mutex_unlock(&reg->lock);
    hm__file_release(&w->a, &f);
    return;
  }
  sf.cur = wm->mod->cur->num;
  /* After a rollback, the build it rolled back from is no change either, until it changes. */
  sf.same_as_current = sf.read_rc == 0 && ((wm->mod->cur->id.hashed &&
                                            f.id.hash == wm->mod->cur->id.hash) ||
                                           (wm->mod->have_rolled_back &&
                                            f.id.hash == wm->mod->rolled_back_hash));
  pthread_mutex_unlock(&reg->lock);
  if (sf.same_as_current) {
    hm__prepared_drop(wm->mod, 0); /* back to what serves: nothing left to publish */
    hm__wgroup_release(wm);        /* nor to hold */
  }

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
    load_signed(wm, &f, &sf);
    break;
  default:
    break;
  }
  hm__file_release(&w->a, &f);
}

/* Decide what to do about a module's file after events (or a timer). The file is opened
 * once: the lease probe asks about writers on that descriptor, and a read uses it too. */
void hm__watch_decide(hm__wmod *wm, hm__settle_why why) {
  hm__writer writer = HM__WRITER_UNKNOWN;
  struct stat st;
  int stable = 0, fd;
  hm__settle_do act;
  if (hm__watch_winding_down(wm->w))
    return;
  if (wm->relink) {
    /* A symlink on the way changed: the path names another file now, a new build. */
    wm->relink = 0;
    hm__watch_set_points(wm->w, wm);
    hm__settle_note(&wm->st, HM__EV_DONE | HM__EV_NEW);
  }
  fd = hm__file_open(file_path(wm));
  if (fd >= 0) {
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
  /* A module some of whose directories are not watched is not said to be watched. */
  __atomic_store_n(&wm->mod->watch_method,
                   hm__watch_points_err(wm) == 0 ? (int)wm->st.method : 0, __ATOMIC_RELEASE);
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
  if (hm__watch_winding_down(wm->w))
    return;
  hm__watch_decide(wm, wm->timer_why);
}

/* ---- Events ---------------------------------------------------------------------------- */

/* What an inotify event on a module's file means to the settle policy. */
static unsigned event_bits(uint32_t mask) {
  unsigned ev = 0;
  if (mask & IN_CREATE)
    ev |= HM__EV_CHANGE | HM__EV_NEW;
  if (mask & IN_MODIFY)
    ev |= HM__EV_WRITE;
  if (mask & IN_ATTRIB)
    ev |= HM__EV_CHANGE;
  if (mask & IN_CLOSE_WRITE)
    ev |= HM__EV_DONE;
  if (mask & IN_MOVED_TO)
    ev |= HM__EV_DONE | HM__EV_NEW;
  if (mask & (IN_DELETE | IN_MOVED_FROM))
    ev |= HM__EV_GONE;
  return ev;
}

/* Fold one named event into every module with a point at that directory and name. */
static void fold(hm__watcher *w, const struct inotify_event *ev) {
  hm__wmod *wm;
  hm__build_note(w, ev);
  for (wm = w->mods; wm != NULL; wm = wm->next) {
    size_t i;
    for (i = 0; i < wm->npts; i++) {
      const hm__wpoint *p = &wm->pts[i];
      if (p->dir == NULL || p->dir->wd != ev->wd)
        continue;
      if (strcmp(p->name, ev->name) != 0) {
        hm__watch_sig_event(wm, p, ev); /* its build signature, if that is what it is */
        continue;
      }
      if (p->link) {
        wm->relink = 1; /* it may point elsewhere now */
      } else {
        hm__settle_note(&wm->st, event_bits(ev->mask));
      }
      wm->dirty = 1;
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

void hm__watch_on_retry(uv_timer_t *t) {
  hm__watcher *w = t->data;
  hm__wdir *d;
  hm__wmod *wm;
  int dead = hm__watch_dirs_retry(w);
  for (d = w->dirs; d != NULL; d = d->next) {
    if (!d->back)
      continue;
    d->back = 0;
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
  /* Watches that could not be set up are tried again, and reported once that lasts. */
  if (w->failing && !hm__watch_winding_down(w))
    hm__watch_reconcile(w);
  if (!dead && !w->failing && !hm__watch_winding_down(w))
    uv_timer_stop(&w->retry);
  for (wm = w->mods; wm != NULL && !hm__watch_winding_down(w); wm = wm->next) {
    if (wm->dirty) {
      wm->dirty = 0;
      hm__watch_decide(wm, HM__WHY_EVENTS);
    }
  }
}

void hm__watch_on_inotify(uv_poll_t *p, int status, int events) {
  hm__watcher *w = p->data;
  hm__wmod *wm;
  /* Aligned for struct inotify_event; room for many events per read. */
  union {
    struct inotify_event ev;
    char buf[16384];
  } u;
  (void)events;
  if (status < 0 || hm__watch_winding_down(w))
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
        hm__build_note(w, NULL);
        continue;
      }
      if (ev->mask & (IN_IGNORED | IN_MOVE_SELF)) {
        if (ev->mask & IN_MOVE_SELF)
          inotify_rm_watch(w->fd, ev->wd);
        hm__watch_dir_lost(w, ev->wd);
        continue;
      }
      if (ev->len != 0)
        fold(w, ev);
    }
  }
  /* Decide once per module, with everything this wake-up brought. */
  for (wm = w->mods; wm != NULL && !hm__watch_winding_down(w); wm = wm->next) {
    if (wm->dirty) {
      wm->dirty = 0;
      hm__watch_decide(wm, HM__WHY_EVENTS);
    }
  }
  if (!hm__watch_winding_down(w))
    hm__build_kick(w);
}
