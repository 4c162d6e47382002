/* The file watcher (issue 4): real files, real builds. Every way a build can replace a
 * module's file ends with exactly one new version that is the complete new build; files that
 * did not change, or are not complete, never become versions; queued mode waits for
 * hm_registry_poll; the watcher runs on its own thread or on a host's libuv loop, and stops
 * and frees cleanly (ASan, TSan and valgrind run this file too).
 *
 * No assertion is about time. Positive checks poll with generous deadlines; negative ones
 * ("nothing happens") give the watcher many quiet periods to misbehave, then look. */
#include "util.h"

#include "hotmod/uv.h"

#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef HM_TEST_CC
#define HM_TEST_CC "cc"
#endif

extern char **environ;

typedef int (*ifn)(void);

/* Generous: sanitizer and valgrind builds are slow. */
#define DEADLINE 20.0
/* Long enough for several quiet periods (50 ms) to pass under valgrind. */
#define SETTLE_MS 500

/* ---- What the event callback saw ------------------------------------------------------ */

#define MAX_BUILDS 256

typedef struct evlog {
  hm_registry *reg;
  int counts[8];                /* per hm_event; atomic */
  pthread_mutex_t mu;           /* builds */
  int builds[MAX_BUILDS];       /* version() of each version that became current, in order */
  int nbuilds;
  int stop_on_changed;          /* the callback stops the watcher on CHANGED */
  char last_reject[1024];       /* hm_errmsg() inside the callback of the last REJECTED */
} evlog;

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  evlog *l = ud;
  (void)version;
  (void)err;
  /* Stop first, count after: a test that saw the count may start a new watcher. */
  if (ev == HM_EVENT_CHANGED && __atomic_load_n(&l->stop_on_changed, __ATOMIC_SEQ_CST))
    hm_watch_stop(l->reg); /* on the watcher's own thread */
  if (ev == HM_EVENT_REJECTED) {
    /* The detail is per thread: read it here, on the thread that refused the file. */
    pthread_mutex_lock(&l->mu);
    snprintf(l->last_reject, sizeof l->last_reject, "%s", hm_errmsg());
    pthread_mutex_unlock(&l->mu);
  }
  __atomic_add_fetch(&l->counts[ev], 1, __ATOMIC_SEQ_CST);
  if (ev == HM_EVENT_LOADED) {
    /* Which build became current: ask it. Reloads of one module are serialised, so the
     * current version here is the one this event is about. */
    char q[300];
    hm_snapshot *s = NULL;
    snprintf(q, sizeof q, "%s:version", hm_module_name(mod));
    if (hm_snapshot_acquire(l->reg, q, &s) == 0) {
      int b = ((ifn)hm_snapshot_fn(s))();
      hm_snapshot_release(s);
      pthread_mutex_lock(&l->mu);
      if (l->nbuilds < MAX_BUILDS)
        l->builds[l->nbuilds++] = b;
      pthread_mutex_unlock(&l->mu);
    }
  }
}

static int count(evlog *l, hm_event ev) { return __atomic_load_n(&l->counts[ev], __ATOMIC_SEQ_CST); }

static int nbuilds(evlog *l) {
  int n;
  pthread_mutex_lock(&l->mu);
  n = l->nbuilds;
  pthread_mutex_unlock(&l->mu);
  return n;
}

/* ---- Fixture --------------------------------------------------------------------------- */

typedef struct fixture {
  char *src;   /* stands in for a build's output directory */
  char *tmp;   /* builds made by the test, and scratch */
  char path[4096]; /* src/sq.so: the watched module's file */
  hm_registry *reg;
  evlog log;
  hm_module *mod;
  hm_live *live; /* sq:version */
} fixture;

static unsigned next_quiet_ms; /* 0: the default */

static hm_registry *new_registry(evlog *l, hm_reload_mode mode) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  o.quiet_ms = next_quiet_ms;
  o.flags = HM_FLAG_QUIET;
  o.on_event = on_event;
  o.event_userdata = l;
  o.reload_mode = mode;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  l->reg = reg;
  return reg;
}

static fixture *fx_new(hm_reload_mode mode) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  pthread_mutex_init(&f->log.mu, NULL);
  f->src = hmt_tmpdir();
  f->tmp = hmt_tmpdir();
  snprintf(f->path, sizeof f->path, "%s/sq.so", f->src);
  f->reg = new_registry(&f->log, mode);
  return f;
}

static int setup(void **state) {
  *state = fx_new(HM_RELOAD_DEFAULT);
  return 0;
}

static int setup_queued(void **state) {
  *state = fx_new(HM_RELOAD_QUEUED);
  return 0;
}

/* A quiet period far longer than any deadline below: only the completion signals
 * (IN_CLOSE_WRITE, IN_MOVED_TO) can make a build load in time. */
#define LONG_QUIET_MS 60000

static int setup_long_quiet(void **state) {
  next_quiet_ms = LONG_QUIET_MS;
  *state = fx_new(HM_RELOAD_DEFAULT);
  next_quiet_ms = 0;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  hm_registry_free(f->reg); /* with the watcher still running: it must stop cleanly */
  hmt_rm_rf(f->src);
  hmt_rm_rf(f->tmp);
  free(f->src);
  free(f->tmp);
  pthread_mutex_destroy(&f->log.mu);
  free(f);
  return 0;
}

static int live_i(hm_live *l) {
  ifn fn = (ifn)hm_live_enter(l);
  int r = fn != NULL ? fn() : -1;
  hm_live_leave(l);
  return r;
}

/* Install square_v1 as sq and take a live handle on sq:version. */
static void load_v1(fixture *f) {
  hmt_install(hmt_mod("square_v1"), f->path);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  assert_int_equal(hm_live_get(f->reg, "sq:version", &f->live), 0);
  assert_int_equal(live_i(f->live), 1);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

typedef struct live_wait {
  hm_live *live;
  int want;
} live_wait;

static int live_is(void *arg) {
  live_wait *w = arg;
  return live_i(w->live) == w->want;
}

/* Wait for the live handle to return build `want`. */
static void wait_live(hm_live *live, int want) {
  live_wait w = {live, want};
  if (!hmt_wait_until(live_is, &w, DEADLINE))
    fail_msg("live handle returns %d, waited for build %d", live_i(live), want);
}

typedef struct count_wait {
  evlog *log;
  hm_event ev;
  int atleast;
} count_wait;

static int count_reached(void *arg) {
  count_wait *w = arg;
  return count(w->log, w->ev) >= w->atleast;
}

static void wait_count(evlog *l, hm_event ev, int atleast) {
  count_wait w = {l, ev, atleast};
  if (!hmt_wait_until(count_reached, &w, DEADLINE))
    fail_msg("event %d seen %d times, waited for %d", (int)ev, count(l, ev), atleast);
}

/* After a replacement: exactly one new version, and it is build `want`. The settle pause
 * gives a second (wrong) load every chance to happen before we count. */
static void expect_one_new_version(fixture *f, unsigned before, int loads_before, int want) {
  wait_live(f->live, want);
  sleep_ms(SETTLE_MS);
  assert_int_equal(hm_module_version(f->mod), before + 1);
  assert_int_equal(count(&f->log, HM_EVENT_LOADED), loads_before + 1);
  assert_int_equal(live_i(f->live), want);
  pthread_mutex_lock(&f->log.mu);
  assert_int_equal(f->log.builds[f->log.nbuilds - 1], want);
  pthread_mutex_unlock(&f->log.mu);
}

/* Copy `src` over `dest` in place, as cp does: truncate, write, close. Safe here because
 * hotmod loads a private copy, never the source file. */
static void cp_over(const char *src, const char *dest) {
  size_t len;
  unsigned char *buf = hmt_read(src, &len);
  hmt_write(dest, buf, len);
  free(buf);
}

/* ---- Building modules with the real compiler ------------------------------------------ */

static const char module_src[] =
    "int version(void) { return VERSION; }\n"
    "double my_function(double x) { return x * VERSION; }\n"
    "int counter_next(void) { static int c; return ++c; }\n";

static int run(char *const argv[]) {
  pid_t pid;
  int st;
  if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0)
    return -1;
  if (waitpid(pid, &st, 0) != pid)
    return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Compile module_src with VERSION=version straight to `out`, as a build would. The module is
 * a plain one, built without sanitizers: that is fine to dlopen into an instrumented test. */
static void cc_module(fixture *f, int version, const char *out) {
  char src[4200], def[64];
  char *argv[] = {HM_TEST_CC, "-shared", "-fPIC", "-O1", def, "-o", (char *)out, src, NULL};
  FILE *fp;
  snprintf(src, sizeof src, "%s/module.c", f->tmp);
  snprintf(def, sizeof def, "-DVERSION=%d", version);
  if (access(src, F_OK) != 0) {
    fp = fopen(src, "w");
    assert_non_null(fp);
    fputs(module_src, fp);
    fclose(fp);
  }
  if (run(argv) != 0)
    fail_msg("%s failed to build %s", HM_TEST_CC, out);
}

/* ---- Replacing a watched module, every way a build does it ---------------------------- */

/* Load v1, start the watcher, and note the version and LOADED count to compare with. */
static void start_v1_watched(fixture *f, unsigned *before, int *loads) {
  load_v1(f);
  assert_int_equal(hm_watch_start(f->reg), 0);
  *before = hm_module_version(f->mod);
  *loads = count(&f->log, HM_EVENT_LOADED);
}

static void t_cp_over(void **state) {
  fixture *f = *state;
  unsigned before;
  int loads;
  start_v1_watched(f, &before, &loads);
  cp_over(hmt_mod("square_v2"), f->path);
  expect_one_new_version(f, before, loads, 2);
}

static void t_rename_over(void **state) {
  fixture *f = *state;
  unsigned before;
  int loads;
  start_v1_watched(f, &before, &loads);
  hmt_install(hmt_mod("square_v2"), f->path); /* write a temp file, rename it over */
  expect_one_new_version(f, before, loads, 2);
}

static void t_delete_then_create(void **state) {
  fixture *f = *state;
  unsigned before;
  int loads;
  start_v1_watched(f, &before, &loads);
  assert_int_equal(unlink(f->path), 0);
  /* A deleted source keeps the current version serving. */
  sleep_ms(SETTLE_MS);
  assert_int_equal(hm_module_version(f->mod), before);
  assert_int_equal(live_i(f->live), 1);
  assert_int_equal(count(&f->log, HM_EVENT_REJECTED), 0);
  cp_over(hmt_mod("square_v2"), f->path); /* creates it again */
  expect_one_new_version(f, before, loads, 2);
}

static void t_slow_writer(void **state) {
  fixture *f = *state;
  unsigned before;
  int loads, fd;
  size_t len, half;
  unsigned char *buf = hmt_read(hmt_mod("square_v2"), &len);
  start_v1_watched(f, &before, &loads);
  half = len / 2;
  fd = open(f->path, O_WRONLY | O_TRUNC);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, buf, half), (ssize_t)half);
  sleep_ms(300); /* several quiet periods with half a file */
  /* The half file is never loaded: the old version serves on. */
  assert_int_equal(hm_module_version(f->mod), before);
  assert_int_equal(count(&f->log, HM_EVENT_LOADED), loads);
  assert_int_equal(live_i(f->live), 1);
  assert_int_equal(write(fd, buf + half, len - half), (ssize_t)(len - half));
  assert_int_equal(close(fd), 0);
  free(buf);
  expect_one_new_version(f, before, loads, 2);
}

static void t_compiler_writes_in_place(void **state) {
  fixture *f = *state;
  unsigned before;
  int loads;
  start_v1_watched(f, &before, &loads);
  cc_module(f, 7, f->path); /* the linker writes straight to the watched path */
  expect_one_new_version(f, before, loads, 7);
}

static void t_burst_of_builds(void **state) {
  fixture *f = *state;
  char builds[20][4200];
  unsigned before;
  int loads, i, first, n;
  for (i = 0; i < 20; i++) {
    snprintf(builds[i], sizeof builds[i], "%s/b%d.so", f->tmp, 101 + i);
    cc_module(f, 101 + i, builds[i]);
  }
  start_v1_watched(f, &before, &loads);
  first = nbuilds(&f->log);
  /* Both ways a build lands, alternately, 10 ms apart. */
  for (i = 0; i < 20; i++) {
    if (i % 2)
      cp_over(builds[i], f->path);
    else
      hmt_install(builds[i], f->path);
    sleep_ms(10);
  }
  wait_live(f->live, 120);
  sleep_ms(SETTLE_MS);
  assert_int_equal(live_i(f->live), 120);
  /* Every load after the first is a later build than the one before it: no earlier build
   * ever loads after a later one, and the last one loaded is the last build. */
  pthread_mutex_lock(&f->log.mu);
  n = f->log.nbuilds - first;
  assert_true(n >= 1 && n <= 20);
  for (i = first + 1; i < f->log.nbuilds; i++)
    assert_true(f->log.builds[i] > f->log.builds[i - 1]);
  assert_true(f->log.builds[first] >= 101);
  assert_int_equal(f->log.builds[f->log.nbuilds - 1], 120);
  pthread_mutex_unlock(&f->log.mu);
  assert_int_equal(count(&f->log, HM_EVENT_LOADED), loads + n);
  assert_int_equal(hm_module_version(f->mod), before + (unsigned)n);
}

/* A finished build is taken when its writer closes it or renames it into place, without
 * waiting for the quiet period (here 60 s, three times the deadline). */
static void t_completion_without_quiet_period(void **state) {
  fixture *f = *state;
  unsigned before;
  int loads;
  start_v1_watched(f, &before, &loads);
  sleep_ms(SETTLE_MS);
  cp_over(hmt_mod("square_v2"), f->path); /* truncate, write, close */
  expect_one_new_version(f, before, loads, 2);
  hmt_install(hmt_mod("square_v3"), f->path); /* write beside, rename over */
  expect_one_new_version(f, before + 1, loads + 1, 3);
}

/* ---- What is not a change ------------------------------------------------------------- */

static void t_touch_and_identical_bytes(void **state) {
  fixture *f = *state;
  unsigned before;
  int loads;
  load_v1(f);
  assert_int_equal(hm_watch_start(f->reg), 0);
  sleep_ms(SETTLE_MS); /* let the watch settle in: the touch must meet a running watch */
  before = hm_module_version(f->mod);
  loads = count(&f->log, HM_EVENT_LOADED);

  assert_int_equal(utimensat(AT_FDCWD, f->path, NULL, 0), 0); /* touch */
  sleep_ms(SETTLE_MS);
  assert_int_equal(hm_module_version(f->mod), before);

  cp_over(hmt_mod("square_v1"), f->path); /* the same bytes, rewritten in place */
  sleep_ms(SETTLE_MS);
  assert_int_equal(hm_module_version(f->mod), before);

  hmt_install(hmt_mod("square_v1"), f->path); /* the same bytes, a new inode */
  sleep_ms(SETTLE_MS);
  assert_int_equal(hm_module_version(f->mod), before);
  assert_int_equal(count(&f->log, HM_EVENT_LOADED), loads);
  assert_int_equal(count(&f->log, HM_EVENT_CHANGED), 0);
  assert_int_equal(count(&f->log, HM_EVENT_REJECTED), 0);

  /* The watch was alive all along: a real change still goes through. */
  hmt_install(hmt_mod("square_v2"), f->path);
  expect_one_new_version(f, before, loads, 2);
}

static void t_incomplete_file_rejected_after_quiet(void **state) {
  fixture *f = *state;
  size_t len;
  unsigned char *buf = hmt_read(hmt_mod("square_v2"), &len);
  unsigned before;
  load_v1(f);
  assert_int_equal(hm_watch_start(f->reg), 0);
  before = hm_module_version(f->mod);
  hmt_write(f->path, buf, len / 2); /* a build that died half-way */
  wait_count(&f->log, HM_EVENT_REJECTED, 1);
  assert_int_equal(hm_module_version(f->mod), before);
  assert_int_equal(live_i(f->live), 1);
  pthread_mutex_lock(&f->log.mu);
  assert_non_null(strstr(f->log.last_reject, f->path));
  pthread_mutex_unlock(&f->log.mu);
  /* The next good build is taken. */
  hmt_write(f->path, buf, len);
  free(buf);
  wait_live(f->live, 2);
  assert_int_equal(hm_module_version(f->mod), before + 1);
}

/* ---- Modes ----------------------------------------------------------------------------- */

static void t_queued_waits_for_poll(void **state) {
  fixture *f = *state;
  load_v1(f);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(hm_watch_start(f->reg), 0);
  hmt_install(hmt_mod("square_v2"), f->path);
  wait_count(&f->log, HM_EVENT_CHANGED, 1);
  sleep_ms(SETTLE_MS);
  /* Nothing changes until the host polls. */
  assert_int_equal(hm_module_version(f->mod), 1);
  assert_int_equal(live_i(f->live), 1);
  assert_int_equal(count(&f->log, HM_EVENT_CHANGED), 1);
  assert_int_equal(hm_registry_poll(f->reg), 1);
  assert_int_equal(hm_module_version(f->mod), 2);
  assert_int_equal(live_i(f->live), 2);
  assert_int_equal(hm_registry_poll(f->reg), 0);

  /* A module can opt out of its registry's mode. */
  assert_int_equal(hm_module_set_reload_mode(f->mod, HM_RELOAD_IMMEDIATE), 0);
  hmt_install(hmt_mod("square_v3"), f->path);
  wait_live(f->live, 3);
  assert_int_equal(hm_registry_poll(f->reg), 0);
}

static void t_per_module_queued(void **state) {
  fixture *f = *state;
  load_v1(f);
  assert_int_equal(hm_module_set_reload_mode(f->mod, HM_RELOAD_QUEUED), 0);
  assert_int_equal(hm_watch_start(f->reg), 0);
  hmt_install(hmt_mod("square_v2"), f->path);
  wait_count(&f->log, HM_EVENT_CHANGED, 1);
  sleep_ms(SETTLE_MS);
  assert_int_equal(live_i(f->live), 1);
  assert_int_equal(hm_registry_poll(f->reg), 1);
  assert_int_equal(live_i(f->live), 2);
  /* Back to the registry's default (immediate). */
  assert_int_equal(hm_module_set_reload_mode(f->mod, HM_RELOAD_DEFAULT), 0);
  cp_over(hmt_mod("square_v3"), f->path);
  wait_live(f->live, 3);
  assert_int_equal(hm_module_set_reload_mode(f->mod, (hm_reload_mode)7), HM_EINVAL);
  assert_int_equal(hm_module_set_reload_mode(NULL, HM_RELOAD_QUEUED), HM_EINVAL);
}

/* ---- Which modules are watched --------------------------------------------------------- */

static void t_modules_loaded_after_start(void **state) {
  fixture *f = *state;
  char other[4200];
  hm_module *m2 = NULL;
  hm_live *l2 = NULL;
  assert_int_equal(hm_watch_start(f->reg), 0);
  load_v1(f);
  /* A second module in the same directory, and one elsewhere. */
  snprintf(other, sizeof other, "%s/other.so", f->tmp);
  hmt_install(hmt_mod("square_v1"), other);
  assert_int_equal(hm_module_load(f->reg, "other", other, &m2), 0);
  assert_int_equal(hm_live_get(f->reg, "other:version", &l2), 0);
  hmt_install(hmt_mod("square_v2"), f->path);
  wait_live(f->live, 2);
  hmt_install(hmt_mod("square_v3"), other);
  wait_live(l2, 3);
  assert_int_equal(hm_module_version(f->mod), 2);
  assert_int_equal(hm_module_version(m2), 2);
}

static void t_unload_stops_watch(void **state) {
  fixture *f = *state;
  int loads;
  load_v1(f);
  assert_int_equal(hm_watch_start(f->reg), 0);
  hmt_install(hmt_mod("square_v2"), f->path);
  wait_live(f->live, 2);
  assert_int_equal(hm_module_unload(f->mod), 0);
  /* The LOADED event of v2 comes just after the switch that wait_live saw. */
  wait_count(&f->log, HM_EVENT_LOADED, 2);
  loads = count(&f->log, HM_EVENT_LOADED);
  hmt_install(hmt_mod("square_v3"), f->path);
  sleep_ms(SETTLE_MS);
  assert_int_equal(hm_module_version(f->mod), 0);
  assert_int_equal(count(&f->log, HM_EVENT_LOADED), loads);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  /* Loaded again by name, it is watched again. */
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, NULL), 0);
  assert_int_equal(live_i(f->live), 3);
  hmt_install(hmt_mod("square_v1"), f->path);
  wait_live(f->live, 1);
}

static void t_reload_from_moves_the_watch(void **state) {
  fixture *f = *state;
  char moved[4200];
  load_v1(f);
  assert_int_equal(hm_watch_start(f->reg), 0);
  snprintf(moved, sizeof moved, "%s/moved.so", f->tmp);
  hmt_install(hmt_mod("square_v2"), moved);
  assert_int_equal(hm_module_reload_from(f->mod, moved), 0);
  assert_int_equal(live_i(f->live), 2);
  hmt_install(hmt_mod("square_v3"), moved);
  wait_live(f->live, 3);
}

static void t_directory_replaced(void **state) {
  fixture *f = *state;
  char old[4200];
  load_v1(f);
  assert_int_equal(hm_watch_start(f->reg), 0);
  sleep_ms(SETTLE_MS); /* the watch is in place before the directory goes */
  /* The build directory is moved away and made anew (a clean build does that). */
  snprintf(old, sizeof old, "%s.old", f->src);
  assert_int_equal(rename(f->src, old), 0);
  assert_int_equal(mkdir(f->src, 0700), 0);
  hmt_install(hmt_mod("square_v2"), f->path);
  wait_live(f->live, 2);
  hmt_rm_rf(old);
  /* Deleted and made again. */
  hmt_rm_rf(f->src);
  sleep_ms(SETTLE_MS);
  assert_int_equal(live_i(f->live), 2); /* the current version serves on meanwhile */
  assert_int_equal(mkdir(f->src, 0700), 0);
  hmt_install(hmt_mod("square_v3"), f->path);
  wait_live(f->live, 3);
  assert_int_equal(hm_module_version(f->mod), 3);
}

/* ---- Starting, stopping, freeing ------------------------------------------------------- */

static void t_start_stop_errors(void **state) {
  fixture *f = *state;
  uv_loop_t loop;
  assert_int_equal(hm_watch_start(NULL), HM_EINVAL);
  assert_int_equal(hm_watch_attach(NULL, &loop), HM_EINVAL);
  assert_int_equal(hm_watch_attach(f->reg, NULL), HM_EINVAL);
  assert_int_equal(hm_registry_poll(NULL), HM_EINVAL);
  hm_watch_stop(NULL);
  hm_watch_stop(f->reg); /* none running: no-op */
  load_v1(f);
  assert_int_equal(hm_watch_start(f->reg), 0);
  assert_int_equal(hm_watch_start(f->reg), HM_EALREADY);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(hm_watch_attach(f->reg, &loop), HM_EALREADY);
  assert_int_equal(uv_loop_close(&loop), 0); /* the refused attach left nothing on it */
  hm_watch_stop(f->reg);
  hm_watch_stop(f->reg);
  /* Stopped: changes are not followed. */
  hmt_install(hmt_mod("square_v2"), f->path);
  sleep_ms(SETTLE_MS);
  assert_int_equal(live_i(f->live), 1);
  /* Started again: the change made meanwhile is found. */
  assert_int_equal(hm_watch_start(f->reg), 0);
  wait_live(f->live, 2);
  /* Repeated start/stop with modules loaded leaks nothing (valgrind, ASan check it). */
  for (int i = 0; i < 20; i++) {
    hm_watch_stop(f->reg);
    assert_int_equal(hm_watch_start(f->reg), 0);
  }
  /* teardown frees the registry with the watcher running */
}

static void t_stop_from_event_callback(void **state) {
  fixture *f = *state;
  load_v1(f);
  __atomic_store_n(&f->log.stop_on_changed, 1, __ATOMIC_SEQ_CST);
  assert_int_equal(hm_watch_start(f->reg), 0);
  hmt_install(hmt_mod("square_v2"), f->path);
  wait_count(&f->log, HM_EVENT_CHANGED, 1);
  /* The callback stopped the watcher before it reloaded; a new one can start. */
  __atomic_store_n(&f->log.stop_on_changed, 0, __ATOMIC_SEQ_CST);
  assert_int_equal(hm_watch_start(f->reg), 0);
  wait_live(f->live, 2);
}

/* ---- On the host's loop ---------------------------------------------------------------- */

typedef struct host {
  uv_loop_t loop;
  hm_live *live;
  int want;
  evlog *log;
} host;

static int pump_until_changed(void *arg) {
  host *h = arg;
  uv_run(&h->loop, UV_RUN_NOWAIT);
  return count(h->log, HM_EVENT_CHANGED) > 0;
}

static int pump_until_live(void *arg) {
  host *h = arg;
  uv_run(&h->loop, UV_RUN_NOWAIT);
  return live_i(h->live) == h->want;
}

static void t_host_loop(void **state) {
  fixture *f = *state;
  host h;
  load_v1(f);
  assert_int_equal(uv_loop_init(&h.loop), 0);
  h.live = f->live;
  assert_int_equal(hm_watch_attach(f->reg, &h.loop), 0);
  assert_int_equal(hm_watch_start(f->reg), HM_EALREADY);
  hmt_install(hmt_mod("square_v2"), f->path);
  h.want = 2;
  assert_true(hmt_wait_until(pump_until_live, &h, DEADLINE));
  cp_over(hmt_mod("square_v3"), f->path);
  h.want = 3;
  assert_true(hmt_wait_until(pump_until_live, &h, DEADLINE));
  assert_int_equal(hm_module_version(f->mod), 3);

  /* Stop, and let the loop run the close callbacks: nothing is left on it. */
  hm_watch_stop(f->reg);
  uv_run(&h.loop, UV_RUN_DEFAULT);
  /* Attach again and free the registry with the watcher attached. */
  assert_int_equal(hm_watch_attach(f->reg, &h.loop), 0);
  uv_run(&h.loop, UV_RUN_NOWAIT);
  hm_registry_free(f->reg);
  f->reg = NULL;
  uv_run(&h.loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&h.loop), 0);
}

static void t_host_loop_queued(void **state) {
  fixture *f = *state;
  host h;
  load_v1(f);
  assert_int_equal(uv_loop_init(&h.loop), 0);
  h.live = f->live;
  assert_int_equal(hm_watch_attach(f->reg, &h.loop), 0);
  hmt_install(hmt_mod("square_v2"), f->path);
  h.log = &f->log;
  assert_true(hmt_wait_until(pump_until_changed, &h, DEADLINE));
  h.want = 2; /* not reached without a poll */
  assert_false(hmt_wait_until(pump_until_live, &h, SETTLE_MS / 1000.0));
  assert_int_equal(live_i(f->live), 1);
  assert_int_equal(hm_registry_poll(f->reg), 1);
  assert_int_equal(live_i(f->live), 2);
  hm_watch_stop(f->reg);
  uv_run(&h.loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&h.loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_cp_over, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rename_over, setup, teardown),
      cmocka_unit_test_setup_teardown(t_delete_then_create, setup, teardown),
      cmocka_unit_test_setup_teardown(t_slow_writer, setup, teardown),
      cmocka_unit_test_setup_teardown(t_compiler_writes_in_place, setup, teardown),
      cmocka_unit_test_setup_teardown(t_burst_of_builds, setup, teardown),
      cmocka_unit_test_setup_teardown(t_completion_without_quiet_period, setup_long_quiet, teardown),
      cmocka_unit_test_setup_teardown(t_touch_and_identical_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(t_incomplete_file_rejected_after_quiet, setup, teardown),
      cmocka_unit_test_setup_teardown(t_queued_waits_for_poll, setup_queued, teardown),
      cmocka_unit_test_setup_teardown(t_per_module_queued, setup, teardown),
      cmocka_unit_test_setup_teardown(t_modules_loaded_after_start, setup, teardown),
      cmocka_unit_test_setup_teardown(t_unload_stops_watch, setup, teardown),
      cmocka_unit_test_setup_teardown(t_reload_from_moves_the_watch, setup, teardown),
      cmocka_unit_test_setup_teardown(t_directory_replaced, setup, teardown),
      cmocka_unit_test_setup_teardown(t_start_stop_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(t_stop_from_event_callback, setup, teardown),
      cmocka_unit_test_setup_teardown(t_host_loop, setup, teardown),
      cmocka_unit_test_setup_teardown(t_host_loop_queued, setup_queued, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
