#include "watchutil.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef int (*ifn)(void);

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  wt_log *l = ud;
  (void)version;
  if (strcmp(hm_module_name(mod), "sq") != 0)
    return;
  /* Stop first, count after: a test that saw the count may start a new watcher. */
  if (ev == HM_EVENT_CHANGED && __atomic_load_n(&l->stop_on_changed, __ATOMIC_SEQ_CST)) {
    hm_watch_stop(l->reg); /* on the watcher's own thread */
    if (__atomic_load_n(&l->restart_on_changed, __ATOMIC_SEQ_CST))
      (void)hm_watch_start(l->reg);
  }
  if (ev == HM_EVENT_REJECTED) {
    /* The detail is per thread: read it here, on the thread that refused the file. */
    pthread_mutex_lock(&l->mu);
    l->last_err = err;
    snprintf(l->last_reject, sizeof l->last_reject, "%s", hm_errmsg());
    pthread_mutex_unlock(&l->mu);
  }
  if (ev == HM_EVENT_WATCH_FAILED) {
    pthread_mutex_lock(&l->mu);
    l->watch_err = err;
    snprintf(l->watch_detail, sizeof l->watch_detail, "%s", hm_event_detail());
    pthread_mutex_unlock(&l->mu);
  }
  if (ev == HM_EVENT_BUILD_SUCCEEDED || ev == HM_EVENT_BUILD_FAILED) {
    pthread_mutex_lock(&l->mu);
    l->build_err = err;
    assert_int_equal(hm_event_build(&l->build_status, NULL), 0);
    snprintf(l->build_output, sizeof l->build_output, "%s", hm_event_detail());
    pthread_mutex_unlock(&l->mu);
  }
  if ((unsigned)ev < sizeof l->counts / sizeof l->counts[0])
    __atomic_add_fetch(&l->counts[ev], 1, __ATOMIC_SEQ_CST);
  if (ev == HM_EVENT_LOADED) {
    /* Which build became current: ask it. Reloads of one module are serialised, so the
     * current version here is the one this event is about. */
    hm_snapshot *s = NULL;
    if (hm_snapshot_acquire(l->reg, "sq:version", &s) == 0) {
      int b = ((ifn)hm_snapshot_fn(s))();
      hm_snapshot_release(s);
      pthread_mutex_lock(&l->mu);
      if (l->nbuilds < WT_MAX_BUILDS)
        l->builds[l->nbuilds++] = b;
      pthread_mutex_unlock(&l->mu);
    }
  }
}

static wt *make(hm_reload_mode mode, unsigned quiet_ms, unsigned settle_ms, hm_alloc_fn alloc,
               void *alloc_userdata, unsigned group_ms);

wt *wt_new(hm_reload_mode mode, unsigned quiet_ms, unsigned settle_ms) {
  return make(mode, quiet_ms, settle_ms, NULL, NULL, 0);
}

wt *wt_new_group(hm_reload_mode mode, unsigned group_ms) {
  return make(mode, 0, 0, NULL, NULL, group_ms);
}

wt *wt_new_alloc(hm_reload_mode mode, unsigned quiet_ms, unsigned settle_ms, hm_alloc_fn alloc,
                 void *alloc_userdata) {
  return make(mode, quiet_ms, settle_ms, alloc, alloc_userdata, 0);
}

static wt *make(hm_reload_mode mode, unsigned quiet_ms, unsigned settle_ms, hm_alloc_fn alloc,
               void *alloc_userdata, unsigned group_ms) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  wt *f = calloc(1, sizeof *f);
  assert_non_null(f);
  pthread_mutex_init(&f->log.mu, NULL);
  f->src = hmt_tmpdir();
  f->tmp = hmt_tmpdir();
  f->cdir = hmt_tmpdir();
  snprintf(f->path, sizeof f->path, "%s/sq.so", f->src);
  snprintf(f->canary_path, sizeof f->canary_path, "%s/canary.so", f->cdir);
  o.quiet_ms = quiet_ms;
  o.settle_ms = settle_ms;
  o.flags = HM_FLAG_QUIET;
  o.on_event = on_event;
  o.event_userdata = &f->log;
  o.reload_mode = mode;
  o.alloc = alloc;
  o.alloc_userdata = alloc_userdata;
  o.group_ms = group_ms;
  assert_int_equal(hm_registry_new(&f->reg, &o), 0);
  f->log.reg = f->reg;
  hmt_install(hmt_mod("square_v1"), f->canary_path);
  assert_int_equal(hm_module_load(f->reg, "canary", f->canary_path, &f->canary), 0);
  assert_int_equal(hm_module_set_reload_mode(f->canary, HM_RELOAD_IMMEDIATE), 0);
  f->canary_next = 2;
  return f;
}

void wt_free(wt *f) {
  hm_registry_free(f->reg); /* possibly with the watcher running: it must stop cleanly */
  hmt_rm_rf(f->src);
  hmt_rm_rf(f->tmp);
  hmt_rm_rf(f->cdir);
  free(f->src);
  free(f->tmp);
  free(f->cdir);
  pthread_mutex_destroy(&f->log.mu);
  free(f);
}

int wt_live(hm_live *l) {
  ifn fn = (ifn)hm_live_enter(l);
  int r = fn != NULL ? fn() : -1;
  hm_live_leave(l);
  return r;
}

void wt_load(wt *f, const char *build) {
  hmt_install(build, f->path);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  assert_int_equal(hm_live_get(f->reg, "sq:version", &f->live), 0);
}

static int both_watched(void *arg) {
  wt *f = arg;
  return hm_module_watch_method(f->canary) != 0 &&
         (f->mod == NULL || hm_module_watch_method(f->mod) != 0);
}

void wt_wait_watched(wt *f) {
  if (!hmt_wait_until(both_watched, f, WT_DEADLINE))
    fail_msg("the watcher did not pick up the modules");
}

void wt_start(wt *f) {
  assert_int_equal(hm_watch_start(f->reg), 0);
  wt_wait_watched(f);
}

typedef struct version_wait {
  hm_module *mod;
  unsigned want;
} version_wait;

static int version_reached(void *arg) {
  version_wait *w = arg;
  return hm_module_version(w->mod) >= w->want;
}

void wt_sync(wt *f) {
  version_wait w = {f->canary, hm_module_version(f->canary) + 1};
  hmt_install(hmt_mod(f->canary_next == 2 ? "square_v2" : "square_v1"), f->canary_path);
  f->canary_next = f->canary_next == 2 ? 1 : 2;
  if (!hmt_wait_until(version_reached, &w, WT_DEADLINE))
    fail_msg("the watcher did not take the canary's new build (is it running?)");
}

typedef struct live_wait {
  hm_live *live;
  int want;
} live_wait;

static int live_is(void *arg) {
  live_wait *w = arg;
  return wt_live(w->live) == w->want;
}

void wt_wait_live(hm_live *live, int want) {
  live_wait w = {live, want};
  if (!hmt_wait_until(live_is, &w, WT_DEADLINE))
    fail_msg("live handle returns %d, waited for build %d", wt_live(live), want);
}

int wt_count(wt *f, hm_event ev) { return __atomic_load_n(&f->log.counts[ev], __ATOMIC_SEQ_CST); }

typedef struct count_wait {
  wt *f;
  hm_event ev;
  int atleast;
} count_wait;

static int count_reached(void *arg) {
  count_wait *w = arg;
  return wt_count(w->f, w->ev) >= w->atleast;
}

void wt_wait_count(wt *f, hm_event ev, int atleast) {
  count_wait w = {f, ev, atleast};
  if (!hmt_wait_until(count_reached, &w, WT_DEADLINE))
    fail_msg("event %d seen %d times, waited for %d", (int)ev, wt_count(f, ev), atleast);
}

int wt_nbuilds(wt *f) {
  int n;
  pthread_mutex_lock(&f->log.mu);
  n = f->log.nbuilds;
  pthread_mutex_unlock(&f->log.mu);
  return n;
}

void wt_expect_one_new(wt *f, unsigned before, int loads_before, int want) {
  wt_wait_live(f->live, want);
  wt_sync(f);
  assert_int_equal(hm_module_version(f->mod), before + 1);
  assert_int_equal(wt_count(f, HM_EVENT_LOADED), loads_before + 1);
  assert_int_equal(wt_live(f->live), want);
  pthread_mutex_lock(&f->log.mu);
  assert_int_equal(f->log.builds[f->log.nbuilds - 1], want);
  pthread_mutex_unlock(&f->log.mu);
}

void *wt_faulty_alloc(void *p, size_t n, void *ud) {
  wt_faulty *fa = ud;
  if (n == 0) {
    free(p);
    return NULL;
  }
  if (__atomic_load_n(&fa->armed, __ATOMIC_ACQUIRE) &&
      !pthread_equal(pthread_self(), fa->test_thread)) {
    int k = __atomic_add_fetch(&fa->seen, 1, __ATOMIC_ACQ_REL);
    if (k == fa->fail_at || __atomic_load_n(&fa->fail_all, __ATOMIC_ACQUIRE))
      return NULL;
  }
  return realloc(p, n);
}

wt *wt_new_faulty(wt_faulty *fa, int fail_at) {
  wt *f;
  memset(fa, 0, sizeof *fa);
  fa->test_thread = pthread_self();
  fa->fail_at = fail_at;
  f = wt_new_alloc(HM_RELOAD_DEFAULT, 0, 0, wt_faulty_alloc, fa);
  wt_load(f, hmt_mod("square_v1"));
  return f;
}

void wt_cp_over(const char *src, const char *dest) {
  size_t len;
  unsigned char *buf = hmt_read(src, &len);
  hmt_write(dest, buf, len);
  free(buf);
}

void wt_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

int wt_run(char *const argv[]) {
  pid_t pid;
  int st;
  if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0)
    return -1;
  if (waitpid(pid, &st, 0) != pid)
    return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int wt_have_linker(const char *cc, const char *ld) {
  char dir[] = "/tmp/hmldXXXXXX", src[64], out[64], fuse[64];
  FILE *fp;
  int ok;
  if (mkdtemp(dir) == NULL)
    return 0;
  snprintf(src, sizeof src, "%s/t.c", dir);
  snprintf(out, sizeof out, "%s/t.so", dir);
  snprintf(fuse, sizeof fuse, "-fuse-ld=%s", ld);
  fp = fopen(src, "w");
  if (fp == NULL)
    return 0;
  fputs("int f(void) { return 1; }\n", fp);
  fclose(fp);
  {
    char *argv[] = {(char *)cc, "-shared", "-fPIC", fuse, "-o", out, src, NULL};
    int devnull = open("/dev/null", O_WRONLY), saved = dup(2);
    dup2(devnull, 2);
    ok = wt_run(argv) == 0;
    dup2(saved, 2);
    close(saved);
    close(devnull);
  }
  unlink(src);
  unlink(out);
  rmdir(dir);
  return ok;
}
