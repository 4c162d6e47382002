/* Module code calling hotmod: constructors, destructors and hooks run while the registry is
 * loading or unloading their module, sometimes under the dynamic loader's lock. The calls the
 * header allows there work; the others fail with HM_EBUSY. None of them deadlocks, against
 * itself or against other threads (I7).
 *
 * The module (tests/modules/reentrant.c) calls the hmt_in_* functions below, which this
 * program exports (-rdynamic). A watchdog turns a deadlock into a failure instead of a hang. */
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*ifn)(void);

/* ---- What module code does, set per test ---------------------------------------------- */

typedef enum action {
  DO_NOTHING,
  DO_FIND_LOOP,     /* constructor: hm_module_find many times */
  DO_FORBIDDEN,     /* hooks and constructor: try every forbidden call, record the codes */
  DO_ALLOWED,       /* load hook: the allowed calls on another module */
  DO_CROSS_LIVE_GET, /* load hook: meet the other module's hook, then hm_live_get on it */
  DO_STOP_WATCH,     /* load hook: hm_watch_stop, which must not wait from here */
  DO_GET_ELSEWHERE,  /* load hook: another thread takes a new handle on this module, then
                        the registry's allocator fails its next reallocation */
  DO_BLOCK           /* constructor: wait until the test releases it (g_blocking) */
} action;

static hm_registry *g_reg;
/* Set by the test, read by module code on other threads (the watcher, the reclaimer). */
static action g_ctor, g_load, g_unload;
#define GET(a) __atomic_load_n(&(a), __ATOMIC_SEQ_CST)
#define SET(a, v) __atomic_store_n(&(a), (v), __ATOMIC_SEQ_CST)
static int g_codes[16];
static int g_ncodes;
static int g_allowed_rc = 99;
static hm_snapshot *g_release_in_unload; /* released by the unload hook */
static int g_arrived;                     /* atomic: hooks at the meeting point */
static int g_cross_rc[2] = {99, 99};
static int g_blocking; /* atomic: 1 while a DO_BLOCK constructor waits, 0 to release it */

static void record(int rc) {
  int n = __atomic_load_n(&g_ncodes, __ATOMIC_RELAXED);
  if (n < 16) {
    g_codes[n] = rc;
    __atomic_store_n(&g_ncodes, n + 1, __ATOMIC_RELEASE);
  }
}

static void try_forbidden(void) {
  hm_module *m = NULL;
  hm_live *l = NULL;
  __atomic_store_n(&g_ncodes, 0, __ATOMIC_RELEASE);
  record(hm_module_load(g_reg, "other2", hmt_mod("square_v1"), NULL));
  if (hm_module_find(g_reg, "sq", &m) == 0) {
    record(hm_module_reload(m));
    record(hm_module_reload_from(m, hmt_mod("square_v2")));
    record(hm_module_unload(m));
  }
  record(hm_registry_poll(g_reg));
  record(hm_watch_start(g_reg));
  /* A new live handle on the module whose code is running. */
  if (hm_module_find(g_reg, "re", &m) == 0)
    record(hm_live_get(g_reg, "re:version", &l));
}

static void meet_then_live_get(int version) {
  /* Versions 1-2 are module A, 3-4 module B; each takes a new handle on the other while
   * the other's hook runs too. Before the fix each waited for the other's reload lock. */
  int me = version <= 2 ? 0 : 1;
  hm_live *l = NULL;
  struct timespec ms = {0, 1000000};
  int i;
  __atomic_add_fetch(&g_arrived, 1, __ATOMIC_SEQ_CST);
  for (i = 0; i < 3000 && __atomic_load_n(&g_arrived, __ATOMIC_SEQ_CST) < 2; i++)
    nanosleep(&ms, NULL);
  g_cross_rc[me] = hm_live_get(g_reg, me == 0 ? "b:version" : "a:version", &l);
}

/* An allocator that fails the next reallocation when told to. */
static int g_fail_grow;
static int g_twice_rc = 99;

static void *failing_alloc(void *p, size_t n, void *ud) {
  (void)ud;
  if (n == 0) {
    free(p);
    return NULL;
  }
  if (p != NULL && __atomic_exchange_n(&g_fail_grow, 0, __ATOMIC_SEQ_CST))
    return NULL;
  return realloc(p, n);
}

static void *get_twice(void *arg) {
  hm_live *l = NULL;
  (void)arg;
  g_twice_rc = hm_live_get(g_reg, "re:twice", &l);
  return NULL;
}

void hmt_in_constructor(int version);
void hmt_in_destructor(int version);
int hmt_in_load_hook(int version);
void hmt_in_unload_hook(int version);

void hmt_in_constructor(int version) {
  (void)version;
  if (GET(g_ctor) == DO_FIND_LOOP) {
    hm_module *m;
    for (int i = 0; i < 2000; i++)
      (void)hm_module_find(g_reg, "sq", &m);
  } else if (GET(g_ctor) == DO_FORBIDDEN) {
    try_forbidden();
  } else if (GET(g_ctor) == DO_BLOCK) {
    /* Inside dlopen, with the dynamic loader's lock held, until released; bounded, so that
     * a call that waits for this constructor fails the test instead of hanging it. */
    struct timespec ms = {0, 1000000};
    SET(g_blocking, 1);
    for (int i = 0; i < 60000 && GET(g_blocking); i++)
      nanosleep(&ms, NULL);
    SET(g_blocking, 0);
  }
}

void hmt_in_destructor(int version) { (void)version; }

int hmt_in_load_hook(int version) {
  if (GET(g_load) == DO_FORBIDDEN) {
    try_forbidden();
  } else if (GET(g_load) == DO_ALLOWED) {
    hm_live *l = NULL;
    hm_snapshot *s = NULL;
    hm_stats st;
    hm_module *m = NULL;
    int rc = hm_live_get(g_reg, "sq:bonus", &l);
    if (rc == 0)
      rc = hm_snapshot_acquire(g_reg, "sq:version", &s);
    if (rc == 0)
      rc = HM_LIVE_CALL(l, ifn) == 101 && ((ifn)hm_snapshot_fn(s))() == 1 ? 0 : -1;
    hm_snapshot_release(s);
    if (rc == 0)
      rc = hm_registry_stats(g_reg, &st);
    if (rc == 0)
      rc = hm_module_find(g_reg, "sq", &m);
    g_allowed_rc = rc;
  } else if (GET(g_load) == DO_CROSS_LIVE_GET) {
    meet_then_live_get(version);
  } else if (GET(g_load) == DO_STOP_WATCH) {
    hm_watch_stop(g_reg);
  } else if (GET(g_load) == DO_GET_ELSEWHERE) {
    pthread_t t;
    pthread_create(&t, NULL, get_twice, NULL);
    pthread_join(t, NULL);
    __atomic_store_n(&g_fail_grow, 1, __ATOMIC_SEQ_CST);
  }
  return 0;
}

void hmt_in_unload_hook(int version) {
  (void)version;
  if (GET(g_unload) == DO_FORBIDDEN) {
    try_forbidden();
    hm_registry_free(g_reg); /* does nothing from here */
  }
  {
    hm_snapshot *s = __atomic_exchange_n(&g_release_in_unload, NULL, __ATOMIC_SEQ_CST);
    hm_snapshot_release(s);
  }
}

/* ---- Watchdog: a deadlock fails the run instead of hanging it -------------------------- */

static int g_done;

static void *watchdog(void *arg) {
  int seconds = *(int *)arg, i;
  for (i = 0; i < seconds * 10; i++) {
    struct timespec t = {0, 100000000};
    if (__atomic_load_n(&g_done, __ATOMIC_SEQ_CST))
      return NULL;
    nanosleep(&t, NULL);
  }
  fprintf(stderr, "test_module_code: no progress for %d s: deadlock\n", seconds);
  _exit(1);
}

static pthread_t g_dog;
static int g_dog_seconds = 120;

static int setup(void **state) {
  char *dir = hmt_tmpdir();
  g_reg = hmt_registry(0);
  SET(g_ctor, DO_NOTHING);
  SET(g_load, DO_NOTHING);
  SET(g_unload, DO_NOTHING);
  __atomic_store_n(&g_ncodes, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&g_done, 0, __ATOMIC_SEQ_CST);
  assert_int_equal(pthread_create(&g_dog, NULL, watchdog, &g_dog_seconds), 0);
  *state = dir;
  return 0;
}

static int teardown(void **state) {
  char *dir = *state;
  SET(g_ctor, DO_NOTHING);
  SET(g_load, DO_NOTHING);
  SET(g_unload, DO_NOTHING);
  hm_registry_free(g_reg);
  g_reg = NULL;
  __atomic_store_n(&g_done, 1, __ATOMIC_SEQ_CST);
  pthread_join(g_dog, NULL);
  hmt_rm_rf(dir);
  free(dir);
  return 0;
}

static void install_load(const char *dir, const char *name, const char *file) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.so", dir, name);
  hmt_install(hmt_mod(file), path);
  assert_int_equal(hm_module_load(g_reg, name, path, NULL), 0);
}

static void reload_from(const char *name, const char *file) {
  hm_module *m;
  assert_int_equal(hm_module_find(g_reg, name, &m), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod(file)), 0);
}

/* ---- Tests ---------------------------------------------------------------------------- */

typedef struct hammer {
  int stop;
  long rounds; /* atomic */
  int errors;
} hammer;

static void *acquire_loop(void *arg) {
  hammer *h = arg;
  while (!__atomic_load_n(&h->stop, __ATOMIC_SEQ_CST)) {
    hm_snapshot *s = NULL;
    if (hm_snapshot_acquire(g_reg, "sq:version", &s) != 0)
      h->errors++;
    hm_snapshot_release(s);
    __atomic_add_fetch(&h->rounds, 1, __ATOMIC_SEQ_CST);
  }
  return NULL;
}

static int hammering(void *arg) {
  return __atomic_load_n(&((hammer *)arg)->rounds, __ATOMIC_SEQ_CST) > 0;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A constructor that looks modules up while another thread acquires snapshots: the acquire
 * used to hold the registry lock around dlsym, which waits for the loader's lock, which the
 * constructor's dlopen holds while it waits for the registry lock.
 * The acquiring thread is running before the reloads start, and the reloads go on (past
 * 30) until it has acquired while they ran: 30 reloads can take under 3 ms, and on a loaded
 * machine a new thread may not have run once by then (it failed 9 of 30 runs that way with
 * two busy loops competing, once its dlsym no longer waited for the constructors). */
static void t_constructor_vs_acquire(void **state) {
  const char *dir = *state;
  hammer h = {0, 0, 0};
  pthread_t t;
  long before;
  double deadline;
  int i;
  install_load(dir, "sq", "square_v1");
  SET(g_ctor, DO_FIND_LOOP);
  assert_int_equal(pthread_create(&t, NULL, acquire_loop, &h), 0);
  assert_true(hmt_wait_until(hammering, &h, 60.0));
  install_load(dir, "re", "reentrant_v1");
  before = __atomic_load_n(&h.rounds, __ATOMIC_SEQ_CST);
  deadline = now_s() + 60.0;
  for (i = 0; i < 30 || (__atomic_load_n(&h.rounds, __ATOMIC_SEQ_CST) == before &&
                         now_s() < deadline);
       i++)
    reload_from("re", i % 2 ? "reentrant_v1" : "reentrant_v2");
  __atomic_store_n(&h.stop, 1, __ATOMIC_SEQ_CST);
  pthread_join(t, NULL);
  assert_int_equal(h.errors, 0);
  assert_true(__atomic_load_n(&h.rounds, __ATOMIC_SEQ_CST) > before);
}

/* Every forbidden call fails with HM_EBUSY from a constructor, a load hook and an unload
 * hook, and hm_registry_free from a hook does nothing. */
static void check_all_busy(void) {
  int i, n = __atomic_load_n(&g_ncodes, __ATOMIC_ACQUIRE);
  assert_int_equal(n, 7);
  for (i = 0; i < n; i++)
    if (g_codes[i] != HM_EBUSY)
      fail_msg("forbidden call %d from module code returned %s, not HM_EBUSY", i,
               hm_err_name(g_codes[i]));
}

static void t_forbidden_calls_are_busy(void **state) {
  const char *dir = *state;
  hm_module *re;
  install_load(dir, "sq", "square_v1");
  install_load(dir, "re", "reentrant_v1");
  assert_int_equal(hm_module_find(g_reg, "re", &re), 0);

  SET(g_ctor, DO_FORBIDDEN);
  reload_from("re", "reentrant_v2");
  check_all_busy();
  SET(g_ctor, DO_NOTHING);

  SET(g_load, DO_FORBIDDEN);
  reload_from("re", "reentrant_v1");
  check_all_busy();
  SET(g_load, DO_NOTHING);

  /* The unload hook runs on the reclaimer thread once the retired version goes. */
  SET(g_unload, DO_FORBIDDEN);
  __atomic_store_n(&g_ncodes, 0, __ATOMIC_RELEASE);
  reload_from("re", "reentrant_v2");
  {
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 20000 && __atomic_load_n(&g_ncodes, __ATOMIC_SEQ_CST) < 7; i++)
      nanosleep(&ms, NULL);
  }
  check_all_busy();
  SET(g_unload, DO_NOTHING);
  /* Nothing changed: the registry and the modules serve on. */
  assert_int_equal(hm_module_version(re), 4);
  {
    hm_module *sq;
    assert_int_equal(hm_module_find(g_reg, "sq", &sq), 0);
    assert_int_equal(hm_module_version(sq), 1);
  }
}

static void t_allowed_calls_work(void **state) {
  const char *dir = *state;
  install_load(dir, "sq", "square_v1");
  install_load(dir, "re", "reentrant_v1");
  SET(g_load, DO_ALLOWED);
  reload_from("re", "reentrant_v2");
  assert_int_equal(g_allowed_rc, 0);
}

/* Two modules whose load hooks each take a new live handle on the other, at the same time.
 * Each used to hold its own reload lock and wait for the other's. */
typedef struct reload_arg {
  const char *name;
  const char *file;
  int rc;
} reload_arg;

static void *reload_thread(void *arg) {
  reload_arg *r = arg;
  hm_module *m;
  r->rc = hm_module_find(g_reg, r->name, &m);
  if (r->rc == 0)
    r->rc = hm_module_reload_from(m, hmt_mod(r->file));
  return NULL;
}

static void t_cross_hooks_live_get(void **state) {
  const char *dir = *state;
  int round;
  for (round = 0; round < 5; round++) {
    reload_arg ra = {"a", "reentrant_v2", 99}, rb = {"b", "reentrant_v4", 99};
    pthread_t ta, tb;
    if (round > 0) {
      /* A fresh registry, so the handles are new again. */
      hm_registry_free(g_reg);
      g_reg = hmt_registry(0);
    }
    SET(g_load, DO_NOTHING);
    install_load(dir, "a", "reentrant_v1");
    install_load(dir, "b", "reentrant_v3");
    __atomic_store_n(&g_arrived, 0, __ATOMIC_SEQ_CST);
    g_cross_rc[0] = g_cross_rc[1] = 99;
    SET(g_load, DO_CROSS_LIVE_GET);
    assert_int_equal(pthread_create(&ta, NULL, reload_thread, &ra), 0);
    assert_int_equal(pthread_create(&tb, NULL, reload_thread, &rb), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    SET(g_load, DO_NOTHING);
    assert_int_equal(ra.rc, 0);
    assert_int_equal(rb.rc, 0);
    /* Each got its handle: the other module's current version, or (if that one was about to
     * publish a version without the symbol) a clear refusal. Both versions have it. */
    assert_int_equal(g_cross_rc[0], 0);
    assert_int_equal(g_cross_rc[1], 0);
  }
}

/* An unload hook releases a snapshot of another module: allowed, and that version goes. */
static void t_unload_hook_releases_snapshot(void **state) {
  const char *dir = *state;
  hm_stats st;
  install_load(dir, "sq", "square_v1");
  install_load(dir, "re", "reentrant_v1");
  {
    hm_snapshot *s = NULL;
    assert_int_equal(hm_snapshot_acquire(g_reg, "sq:version", &s), 0);
    __atomic_store_n(&g_release_in_unload, s, __ATOMIC_SEQ_CST);
  }
  reload_from("sq", "square_v2"); /* v1 of sq stays: the snapshot pins it */
  reload_from("re", "reentrant_v2"); /* re v1's unload hook releases it */
  {
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 20000; i++) {
      assert_int_equal(hm_registry_stats(g_reg, &st), 0);
      if (st.retired == 0)
        break;
      nanosleep(&ms, NULL);
    }
  }
  assert_null(__atomic_load_n(&g_release_in_unload, __ATOMIC_SEQ_CST));
  assert_int_equal(st.retired, 0);
}

/* hm_watch_stop from a load hook on the watcher's own thread (the watcher reloads) does not
 * wait for itself; the registry joins the thread later. */
static int unwatched(void *arg) { return hm_module_watch_method(arg) == HM_WATCH_NONE; }
static int watched(void *arg) { return hm_module_watch_method(arg) != HM_WATCH_NONE; }
static int at_v2(void *arg) { return hm_module_version(arg) == 2; }

static void t_watch_stop_from_hook(void **state) {
  const char *dir = *state;
  char path[4096];
  hm_module *re;
  snprintf(path, sizeof path, "%s/re.so", dir);
  hmt_install(hmt_mod("reentrant_v1"), path);
  assert_int_equal(hm_module_load(g_reg, "re", path, &re), 0);
  assert_int_equal(hm_watch_start(g_reg), 0);
  assert_true(hmt_wait_until(watched, re, 60.0));
  SET(g_load, DO_STOP_WATCH);
  hmt_install(hmt_mod("reentrant_v2"), path);
  assert_true(hmt_wait_until(at_v2, re, 60.0));
  assert_true(hmt_wait_until(unwatched, re, 60.0));
  SET(g_load, DO_NOTHING);
  /* A watcher can start again; teardown frees with it running. */
  assert_int_equal(hm_watch_start(g_reg), 0);
}

/* Once a version's load hook has accepted the old version's state, its reload cannot fail:
 * a live handle another thread adds meanwhile is completed in the incoming version's table
 * by that thread. Before, publishing grew the table, and if that allocation failed the
 * reload was refused after the hook had taken the state (I5 broken, the state leaked). */
static void t_publish_cannot_fail_after_hooks(void **state) {
  const char *dir = *state;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_live *v, *t;
  hm_module *re;
  char path[4096];
  hm_registry_free(g_reg);
  o.alloc = failing_alloc;
  o.flags = HM_FLAG_QUIET;
  assert_int_equal(hm_registry_new(&g_reg, &o), 0);
  snprintf(path, sizeof path, "%s/re.so", dir);
  hmt_install(hmt_mod("reentrant_v1"), path);
  assert_int_equal(hm_module_load(g_reg, "re", path, &re), 0);
  assert_int_equal(hm_live_get(g_reg, "re:version", &v), 0);
  SET(g_load, DO_GET_ELSEWHERE);
  assert_int_equal(hm_module_reload_from(re, hmt_mod("reentrant_v2")), 0);
  SET(g_load, DO_NOTHING);
  __atomic_store_n(&g_fail_grow, 0, __ATOMIC_SEQ_CST);
  assert_int_equal(g_twice_rc, 0);
  assert_int_equal(hm_live_get(g_reg, "re:twice", &t), 0);
  assert_int_equal(HM_LIVE_CALL(v, int (*)(void)), 2);
  assert_int_equal(HM_LIVE_CALL(t, int (*)(void)), 4);
}

/* A constructor that runs long inside one thread's dlopen holds the dynamic loader's lock
 * all that time. Snapshots and live handles on functions of another, loaded module must not
 * wait for it: they used to call dlsym, which takes that lock (10 s constructor, 10 s
 * hm_snapshot_acquire). Each call below must return while the constructor still waits. */
static void *load_re(void *arg) {
  char *path = arg;
  hm_module *m;
  return (void *)(long)hm_module_load(g_reg, "re", path, &m);
}

static int ctor_blocking(void *arg) {
  (void)arg;
  return GET(g_blocking);
}

static void t_slow_constructor_does_not_stall_others(void **state) {
  const char *dir = *state;
  char path[4096];
  hm_snapshot *s1 = NULL, *s2 = NULL;
  hm_live *l1 = NULL, *l2 = NULL;
  pthread_t t;
  void *rc;
  int blocked, rcs[4];
  install_load(dir, "sq", "square_v1");
  install_load(dir, "sg", "sig_v1");
  snprintf(path, sizeof path, "%s/re.so", dir);
  hmt_install(hmt_mod("reentrant_v1"), path);
  SET(g_ctor, DO_BLOCK);
  assert_int_equal(pthread_create(&t, NULL, load_re, path), 0);
  blocked = hmt_wait_until(ctor_blocking, NULL, 60.0);
  rcs[0] = hm_snapshot_acquire(g_reg, "sq:version", &s1);
  rcs[1] = hm_snapshot_acquire_typed(g_reg, "sg:version", "int(void)", &s2);
  rcs[2] = hm_live_get(g_reg, "sq:bonus", &l1);
  rcs[3] = hm_live_get_typed(g_reg, "sg:my_function", "double(double)", &l2);
  /* Still inside that dlopen afterwards: none of the calls waited for it. Released before
   * any assertion, so that a failure does not leave the load behind. */
  blocked = blocked && GET(g_blocking);
  SET(g_blocking, 0);
  pthread_join(t, &rc);
  SET(g_ctor, DO_NOTHING);
  assert_int_equal(rcs[0], 0);
  assert_int_equal(rcs[1], 0);
  assert_int_equal(rcs[2], 0);
  assert_int_equal(rcs[3], 0);
  assert_true(blocked);
  assert_int_equal((long)rc, 0);
  assert_int_equal(((ifn)hm_snapshot_fn(s1))(), 1);
  assert_int_equal(((ifn)hm_snapshot_fn(s2))(), 1);
  assert_int_equal(HM_LIVE_CALL(l1, ifn), 101);
  assert_true(HM_LIVE_CALL(l2, double (*)(double), 2.0) == 2.0);
  hm_snapshot_release(s1);
  hm_snapshot_release(s2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_slow_constructor_does_not_stall_others, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(t_constructor_vs_acquire, setup, teardown),
      cmocka_unit_test_setup_teardown(t_forbidden_calls_are_busy, setup, teardown),
      cmocka_unit_test_setup_teardown(t_allowed_calls_work, setup, teardown),
      cmocka_unit_test_setup_teardown(t_cross_hooks_live_get, setup, teardown),
      cmocka_unit_test_setup_teardown(t_unload_hook_releases_snapshot, setup, teardown),
      cmocka_unit_test_setup_teardown(t_watch_stop_from_hook, setup, teardown),
      cmocka_unit_test_setup_teardown(t_publish_cannot_fail_after_hooks, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
