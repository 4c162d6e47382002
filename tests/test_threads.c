/* Concurrency (I2, I4, I7): callers on several threads while another thread reloads,
 * snapshots taken and released meanwhile, a call that blocks inside an old version. */
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*ifn)(void);
typedef int (*host_cb)(void *);
typedef int (*through_fn)(host_cb, void *);

/* ---- Callers and a reloader ------------------------------------------------------------ */

typedef struct stress {
  hm_registry *reg;
  hm_module *mod;
  hm_live *ver;
  long reloads;
  /* The reloader bumps `started` before each reload and `completed` after it returns. */
  long started, completed;
  int stop;
  /* Results seen by the checkers: bad ones are counted, not asserted off the main thread. */
  long calls, stale, wrong, snaps, snap_wrong, churn_ops, churn_errors;
} stress;

/* Reload k (k >= 1) loads v2 when k is odd, v1 when even; version() returns the file's
 * VERSION, so after c completed reloads the current value is: */
static int value_after(long c) { return (c % 2) ? 2 : 1; }

static void *caller(void *arg) {
  stress *s = arg;
  long calls = 0, stale = 0, wrong = 0;
  while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
    long c = __atomic_load_n(&s->completed, __ATOMIC_ACQUIRE);
    int r = HM_LIVE_CALL(s->ver, ifn);
    long st = __atomic_load_n(&s->started, __ATOMIC_ACQUIRE);
    calls++;
    if (r != 1 && r != 2)
      wrong++;
    else if (st == c && r != value_after(c))
      stale++; /* no reload was under way, yet the call did not see the last one */
  }
  __atomic_add_fetch(&s->calls, calls, __ATOMIC_RELAXED);
  __atomic_add_fetch(&s->stale, stale, __ATOMIC_RELAXED);
  __atomic_add_fetch(&s->wrong, wrong, __ATOMIC_RELAXED);
  return NULL;
}

static void *snapshotter(void *arg) {
  stress *s = arg;
  long n = 0, bad = 0;
  while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
    hm_snapshot *snap;
    int i;
    if (hm_snapshot_acquire(s->reg, "sq:version", &snap) != 0) {
      bad++;
      continue;
    }
    /* Module version n came from reload n-1. Call it a few times while reloads go on. */
    for (i = 0; i < 50; i++)
      if (((ifn)hm_snapshot_fn(snap))() != value_after((long)hm_snapshot_version(snap) - 1))
        bad++;
    hm_snapshot_release(snap);
    n++;
  }
  __atomic_add_fetch(&s->snaps, n, __ATOMIC_RELAXED);
  __atomic_add_fetch(&s->snap_wrong, bad, __ATOMIC_RELAXED);
  return NULL;
}

/* Registry operations from another thread at once: find, get, acquire, and load/unload of a
 * second module. */
static void *churner(void *arg) {
  stress *s = arg;
  long ops = 0, errors = 0;
  while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
    hm_module *m;
    hm_live *l;
    hm_snapshot *snap;
    if (hm_module_find(s->reg, "sq", &m) != 0 || m != s->mod)
      errors++;
    if (hm_live_get(s->reg, "sq:version", &l) != 0 || l != s->ver)
      errors++;
    if (hm_module_load(s->reg, "other", hmt_mod("chain_v1"), &m) != 0)
      errors++;
    else {
      if (hm_snapshot_acquire(s->reg, "other:entry", &snap) != 0 ||
          ((ifn)hm_snapshot_fn(snap))() != 11)
        errors++;
      else
        hm_snapshot_release(snap);
      if (hm_module_unload(m) != 0)
        errors++;
    }
    ops++;
  }
  __atomic_add_fetch(&s->churn_ops, ops, __ATOMIC_RELAXED);
  __atomic_add_fetch(&s->churn_errors, errors, __ATOMIC_RELAXED);
  return NULL;
}

static void test_callers_while_reloading(void **state) {
  stress s;
  pthread_t th[5];
  long k, n = hmt_scaled(3000);
  int i;
  const char *v1, *v2;
  char p1[4096], p2[4096];
  hm_stats st;
  (void)state;
  memset(&s, 0, sizeof s);
  v1 = hmt_mod("square_v1");
  snprintf(p1, sizeof p1, "%s", v1);
  v2 = hmt_mod("square_v2");
  snprintf(p2, sizeof p2, "%s", v2);
  s.reg = hmt_registry(0);
  assert_int_equal(hm_module_load(s.reg, "sq", p1, &s.mod), 0);
  assert_int_equal(hm_live_get(s.reg, "sq:version", &s.ver), 0);

  assert_int_equal(pthread_create(&th[0], NULL, caller, &s), 0);
  assert_int_equal(pthread_create(&th[1], NULL, caller, &s), 0);
  assert_int_equal(pthread_create(&th[2], NULL, snapshotter, &s), 0);
  assert_int_equal(pthread_create(&th[3], NULL, snapshotter, &s), 0);
  assert_int_equal(pthread_create(&th[4], NULL, churner, &s), 0);

  for (k = 1; k <= n; k++) {
    __atomic_store_n(&s.started, k, __ATOMIC_RELEASE);
    assert_int_equal(hm_module_reload_from(s.mod, (k % 2) ? p2 : p1), 0);
    __atomic_store_n(&s.completed, k, __ATOMIC_RELEASE);
    /* I2 on this thread too: a call started after the reload returned sees it. */
    assert_int_equal(HM_LIVE_CALL(s.ver, ifn), value_after(k));
  }
  __atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
  for (i = 0; i < 5; i++)
    pthread_join(th[i], NULL);

  printf("# %ld reloads; %ld live calls, %ld snapshots, %ld registry ops on other threads\n", n,
         s.calls, s.snaps, s.churn_ops);
  assert_true(s.calls > 0);
  assert_true(s.snaps > 0);
  assert_int_equal(s.wrong, 0);
  assert_int_equal(s.stale, 0);
  assert_int_equal(s.snap_wrong, 0);
  assert_int_equal(s.churn_errors, 0);
  assert_int_equal(hm_module_version(s.mod), n + 1);
  assert_int_equal(hm_registry_stats(s.reg, &st), 0);
  assert_int_equal(st.loads, (unsigned long long)n + 1 + (unsigned long long)s.churn_ops);
  assert_int_equal(st.rejects, 0);
  assert_int_equal(st.leaked, 0);
  hm_registry_free(s.reg);
}

/* ---- A call that blocks inside an old version ------------------------------------------ */

typedef struct gate {
  pthread_mutex_t m;
  pthread_cond_t c;
  int entered, open;
} gate;

static int wait_at_gate(void *arg) {
  gate *g = arg;
  pthread_mutex_lock(&g->m);
  g->entered = 1;
  pthread_cond_broadcast(&g->c);
  while (!g->open)
    pthread_cond_wait(&g->c, &g->m);
  pthread_mutex_unlock(&g->m);
  return 7;
}

static int no_wait(void *arg) {
  (void)arg;
  return 5;
}

typedef struct blocked_call {
  hm_live *through;
  gate *g;
  int result;
} blocked_call;

static void *blocked_caller(void *arg) {
  blocked_call *b = arg;
  b->result = HM_LIVE_CALL(b->through, through_fn, wait_at_gate, b->g);
  return NULL;
}

static void gate_init(gate *g) {
  pthread_mutex_init(&g->m, NULL);
  pthread_cond_init(&g->c, NULL);
  g->entered = g->open = 0;
}

/* Start a thread whose live call through `through` blocks at the gate; return once it is
 * inside the call. */
static void start_blocked_call(blocked_call *b, pthread_t *th, hm_live *through, gate *g) {
  b->through = through;
  b->g = g;
  b->result = 0;
  assert_int_equal(pthread_create(th, NULL, blocked_caller, b), 0);
  pthread_mutex_lock(&g->m);
  while (!g->entered)
    pthread_cond_wait(&g->c, &g->m);
  pthread_mutex_unlock(&g->m);
}

/* Open the gate and wait for the blocked call to return. */
static void finish_blocked_call(gate *g, pthread_t th) {
  pthread_mutex_lock(&g->m);
  g->open = 1;
  pthread_cond_broadcast(&g->c);
  pthread_mutex_unlock(&g->m);
  pthread_join(th, NULL);
}

typedef struct copy_wait {
  const char *path;
} copy_wait;

static int copy_unmapped(void *arg) {
  copy_wait *w = arg;
  return hmt_maps_count(w->path) == 0 && access(w->path, F_OK) != 0;
}

/* The one file in dir, as a full path. */
static void only_file(const char *dir, char *out, size_t len) {
  char cmd[4200], name[256];
  FILE *p;
  assert_int_equal(hmt_count_files(dir), 1);
  snprintf(cmd, sizeof cmd, "ls %s", dir);
  p = popen(cmd, "r");
  assert_non_null(p);
  assert_non_null(fgets(name, sizeof name, p));
  pclose(p);
  name[strcspn(name, "\n")] = '\0';
  snprintf(out, len, "%.3800s/%s", dir, name);
}

static void test_blocked_caller_delays_only_its_version(void **state) {
  hm_registry *reg = hmt_registry(0);
  hm_module *mod;
  hm_live *through;
  gate g;
  blocked_call b;
  pthread_t th;
  char v1copy[4096], p1[4096], p2[4096];
  copy_wait w;
  struct timespec t0, t1, tick = {0, 50 * 1000000};
  double waited;
  int i;
  (void)state;
  snprintf(p1, sizeof p1, "%s", hmt_mod("blocker_v1"));
  snprintf(p2, sizeof p2, "%s", hmt_mod("blocker_v2"));
  gate_init(&g);

  assert_int_equal(hm_module_load(reg, "blk", p1, &mod), 0);
  only_file(hm_registry_dir(reg), v1copy, sizeof v1copy);
  assert_int_equal(hm_live_get(reg, "blk:through", &through), 0);
  start_blocked_call(&b, &th, through, &g);

  /* A caller is inside v1. Reloads and other callers go on regardless. */
  assert_int_equal(hm_module_reload_from(mod, p2), 0);
  assert_int_equal(HM_LIVE_CALL(through, through_fn, no_wait, NULL), 2005);
  assert_int_equal(hm_module_reload_from(mod, p1), 0);
  assert_int_equal(HM_LIVE_CALL(through, through_fn, no_wait, NULL), 1005);
  assert_int_equal(hm_module_reload_from(mod, p2), 0);
  assert_int_equal(hm_module_version(mod), 4);

  /* Give the reclaimer many chances to get it wrong: v1 must stay mapped meanwhile, while
   * versions 2 and 3 (no caller inside) wait behind the same grace period. */
  for (i = 0; i < 6; i++) {
    nanosleep(&tick, NULL);
    assert_true(hmt_maps_count(v1copy) > 0);
    assert_int_equal(access(v1copy, F_OK), 0);
  }

  /* Let the call return through v1's code; then v1 goes without anything else happening. */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  finish_blocked_call(&g, th);
  assert_int_equal(b.result, 1007);
  w.path = v1copy;
  assert_true(hmt_wait_until(copy_unmapped, &w, 10.0));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  waited = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  printf("# v1 unloaded %.1f ms after its last caller returned\n", waited);
  assert_int_equal(HM_LIVE_CALL(through, through_fn, no_wait, NULL), 2005);
  hm_registry_free(reg);
  pthread_cond_destroy(&g.c);
  pthread_mutex_destroy(&g.m);
}

/* A version whose last user is a snapshot goes when the snapshot is released, even while a
 * caller sits inside another version (that caller only holds back grace periods). */
typedef struct unload_log {
  int unloaded[16]; /* per version number */
} unload_log;

static void log_unloads(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  unload_log *l = ud;
  (void)mod;
  (void)err;
  if (ev == HM_EVENT_UNLOADED && version < 16)
    __atomic_store_n(&l->unloaded[version], 1, __ATOMIC_RELEASE);
}

typedef struct version_wait {
  unload_log *log;
  unsigned version;
} version_wait;

static int version_unloaded(void *arg) {
  version_wait *w = arg;
  return __atomic_load_n(&w->log->unloaded[w->version], __ATOMIC_ACQUIRE);
}

static void test_release_not_held_back_by_blocked_caller(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  hm_module *mod;
  hm_live *through;
  hm_snapshot *snap;
  unload_log log;
  version_wait vw;
  gate g;
  blocked_call b;
  pthread_t th;
  char p1[4096], p2[4096];
  int v1_went;
  (void)state;
  memset(&log, 0, sizeof log);
  o.on_event = log_unloads;
  o.event_userdata = &log;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  snprintf(p1, sizeof p1, "%s", hmt_mod("blocker_v1"));
  snprintf(p2, sizeof p2, "%s", hmt_mod("blocker_v2"));
  gate_init(&g);

  assert_int_equal(hm_module_load(reg, "blk", p1, &mod), 0);
  assert_int_equal(hm_live_get(reg, "blk:through", &through), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "blk:version", &snap), 0);
  assert_int_equal(hm_module_reload_from(mod, p2), 0); /* v1 retired; the snapshot keeps it */
  assert_int_equal(hm_module_reload_from(mod, p1), 0); /* v2 retired, unpinned */
  /* v2 unloaded means the grace period of v1's table, queued before, is over too: from now
   * on only the snapshot holds v1. */
  vw.log = &log;
  vw.version = 2;
  assert_true(hmt_wait_until(version_unloaded, &vw, 10.0));

  start_blocked_call(&b, &th, through, &g);
  /* A caller is inside v3 now, and v3 is retired in turn: its grace period cannot end. */
  assert_int_equal(hm_module_reload_from(mod, p2), 0);

  assert_int_equal(((ifn)hm_snapshot_fn(snap))(), 1);
  hm_snapshot_release(snap);
  vw.version = 1;
  v1_went = hmt_wait_until(version_unloaded, &vw, 10.0);
  vw.version = 3;
  assert_false(version_unloaded(&vw)); /* the blocked caller's version is still there */

  finish_blocked_call(&g, th);
  assert_true(v1_went);
  assert_int_equal(b.result, 1007);
  assert_true(hmt_wait_until(version_unloaded, &vw, 10.0));
  hm_registry_free(reg);
  pthread_cond_destroy(&g.c);
  pthread_mutex_destroy(&g.m);
}

/* ---- All live handles of a module move together ------------------------------------- */

typedef struct pair_run {
  hm_module *mod;
  hm_live *ver, *bonus;
  int order, stop;
  long pairs, mixed;
} pair_run;

/* Calls two handles back to back. While the module's version number stays N, the tables it
 * can see are N-1's then N's, in that order, so the first call may be older than the second
 * but never newer: first == N and second == N-1 means a table mixed the two versions. */
static void *pair_caller(void *arg) {
  pair_run *p = arg;
  long n = 0, mixed = 0;
  while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
    unsigned v0 = hm_module_version(p->mod), v1;
    int a, b, first, second;
    if (p->order == 0) {
      first = a = HM_LIVE_CALL(p->ver, ifn);
      second = b = HM_LIVE_CALL(p->bonus, ifn) - 100;
    } else {
      first = b = HM_LIVE_CALL(p->bonus, ifn) - 100;
      second = a = HM_LIVE_CALL(p->ver, ifn);
    }
    v1 = hm_module_version(p->mod);
    n++;
    /* Version v came from reload v-1 (value_after(v-1)); version 1 is square_v1. */
    if (v0 == v1 && v0 >= 2 && first == value_after((long)v0 - 1) &&
        second == value_after((long)v0 - 2))
      mixed++;
  }
  __atomic_add_fetch(&p->pairs, n, __ATOMIC_RELAXED);
  __atomic_add_fetch(&p->mixed, mixed, __ATOMIC_RELAXED);
  return NULL;
}

static void test_handles_never_mix(void **state) {
  hm_registry *reg = hmt_registry(0);
  pair_run p[2];
  pthread_t th[2];
  hm_module *mod;
  hm_live *ver, *bonus;
  char p1[4096], p2[4096];
  long k, n = hmt_scaled(2000);
  int i;
  (void)state;
  snprintf(p1, sizeof p1, "%s", hmt_mod("square_v1"));
  snprintf(p2, sizeof p2, "%s", hmt_mod("square_v2"));
  assert_int_equal(hm_module_load(reg, "sq", p1, &mod), 0);
  assert_int_equal(hm_live_get(reg, "sq:version", &ver), 0);
  assert_int_equal(hm_live_get(reg, "sq:bonus", &bonus), 0);
  for (i = 0; i < 2; i++) {
    memset(&p[i], 0, sizeof p[i]);
    p[i].mod = mod;
    p[i].ver = ver;
    p[i].bonus = bonus;
    p[i].order = i;
    assert_int_equal(pthread_create(&th[i], NULL, pair_caller, &p[i]), 0);
  }
  for (k = 1; k <= n; k++)
    assert_int_equal(hm_module_reload_from(mod, (k % 2) ? p2 : p1), 0);
  for (i = 0; i < 2; i++) {
    __atomic_store_n(&p[i].stop, 1, __ATOMIC_RELEASE);
    pthread_join(th[i], NULL);
    printf("# order %d: %ld pairs, %ld mixed\n", i, p[i].pairs, p[i].mixed);
    assert_true(p[i].pairs > 0);
    assert_int_equal(p[i].mixed, 0);
  }
  hm_registry_free(reg);
}

/* Live calls nest, on one thread and across handles of several modules. */
static void test_nested_calls(void **state) {
  hm_registry *reg = hmt_registry(0);
  hm_module *a;
  hm_live *ver, *entry;
  char p[4096];
  (void)state;
  snprintf(p, sizeof p, "%s", hmt_mod("square_v1"));
  assert_int_equal(hm_module_load(reg, "a", p, &a), 0);
  assert_int_equal(hm_module_load(reg, "b", hmt_mod("chain_v1"), NULL), 0);
  assert_int_equal(hm_live_get(reg, "a:version", &ver), 0);
  assert_int_equal(hm_live_get(reg, "b:entry", &entry), 0);
  {
    ifn outer = (ifn)hm_live_enter(ver);
    ifn inner = (ifn)hm_live_enter(entry);
    assert_int_equal(outer(), 1);
    assert_int_equal(inner(), 11);
    hm_live_leave(entry);
    /* Still inside the outer call: a reload must not unmap the version it is using. */
    assert_int_equal(hm_module_reload_from(a, hmt_mod("square_v2")), 0);
    {
      /* Give the reclaimer ample time to get it wrong before calling into v1 again. */
      struct timespec t = {0, 100 * 1000000};
      nanosleep(&t, NULL);
    }
    assert_int_equal(outer(), 1);
    hm_live_leave(ver);
  }
  assert_int_equal(HM_LIVE_CALL(ver, ifn), 2);
  /* HOTMOD_NO_MEMBARRIER=1 (the test_threads_fenced run) must put readers on the fenced
   * path, so that run really exercises the fallback. */
  if (getenv("HOTMOD_NO_MEMBARRIER") != NULL)
    assert_int_equal(__atomic_load_n(&hm__rdw_fenced, __ATOMIC_RELAXED), 1);
  printf("# readers %s\n", hm__rdw_fenced ? "fence (no membarrier)" : "rely on membarrier");
  assert_int_equal(((ifn)hm_live_enter_fn(entry))(), 11);
  hm_live_leave_fn(entry);
  hm_registry_free(reg);
}

/* Threads that make one live call and exit register and unregister themselves. */
static void *one_call(void *arg) { return (void *)(long)HM_LIVE_CALL((hm_live *)arg, ifn); }

static void test_short_lived_threads(void **state) {
  hm_registry *reg = hmt_registry(0);
  hm_module *mod;
  hm_live *ver;
  long i, n = hmt_scaled(300);
  (void)state;
  assert_int_equal(hm_module_load(reg, "sq", hmt_mod("square_v1"), &mod), 0);
  assert_int_equal(hm_live_get(reg, "sq:version", &ver), 0);
  for (i = 0; i < n; i++) {
    pthread_t th;
    void *r;
    assert_int_equal(pthread_create(&th, NULL, one_call, ver), 0);
    if (i % 10 == 0)
      assert_int_equal(hm_module_reload_from(mod, hmt_mod(i % 20 ? "square_v1" : "square_v2")), 0);
    pthread_join(th, &r);
    assert_true((long)r == 1 || (long)r == 2);
  }
  /* Grace periods still complete: nothing is left retired. */
  {
    hm_stats st;
    for (i = 0; i < 10000; i++) {
      struct timespec ms = {0, 1000000};
      assert_int_equal(hm_registry_stats(reg, &st), 0);
      if (st.retired == 0)
        break;
      nanosleep(&ms, NULL);
    }
    assert_int_equal(st.retired, 0);
  }
  hm_registry_free(reg);
}

/* ---- Refused reloads racing good ones (I4, I5) ------------------------------------------ */

typedef struct racer {
  hm_module *mod;
  const char *path;
  long n, ok, refused, other;
} racer;

static void *race_reloads(void *arg) {
  racer *r = arg;
  long i;
  for (i = 0; i < r->n; i++) {
    int rc = hm_module_reload_from(r->mod, r->path);
    if (rc == 0)
      r->ok++;
    else if (rc == HM_ENOSYM)
      r->refused++;
    else
      r->other++;
  }
  return NULL;
}

static int nothing_retired(void *arg) {
  hm_stats st;
  return hm_registry_stats((hm_registry *)arg, &st) == 0 && st.retired == 0;
}

/* One thread reloads good builds while two reload a build that lacks a symbol a live handle
 * uses: every refused version is unloaded, whatever ran beside it (the refusal used to take
 * back its table only if no other reload had begun meanwhile, so its version stayed mapped
 * for good: 1-13 per 10 s run, and past hm_registry_free). */
static void test_refused_reloads_race_good_ones(void **state) {
  hm_registry *reg = hmt_registry(0);
  hm_module *mod;
  hm_live *bonus;
  racer r[3];
  pthread_t th[3];
  char dir[4096];
  long n = hmt_scaled(400), refused = 0;
  int i;
  (void)state;
  assert_int_equal(hm_module_load(reg, "sq", hmt_mod("square_v1"), &mod), 0);
  assert_int_equal(hm_live_get(reg, "sq:bonus", &bonus), 0); /* square_v3 lacks it */
  snprintf(dir, sizeof dir, "%s/", hm_registry_dir(reg));
  memset(r, 0, sizeof r);
  for (i = 0; i < 3; i++) {
    r[i].mod = mod;
    r[i].n = n;
    r[i].path = hmt_mod(i == 0 ? "square_v2" : "square_v3");
    assert_int_equal(pthread_create(&th[i], NULL, race_reloads, &r[i]), 0);
  }
  for (i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(r[0].ok, n);
  for (i = 1; i < 3; i++) {
    assert_int_equal(r[i].refused, n);
    refused += r[i].refused;
  }
  assert_int_equal(HM_LIVE_CALL(bonus, ifn), 102);
  {
    hm_stats st;
    assert_true(hmt_wait_until(nothing_retired, reg, 60));
    assert_int_equal(hm_registry_stats(reg, &st), 0);
    assert_int_equal(st.rejects, (unsigned long long)refused);
    assert_int_equal(st.leaked, 0);
  }
  /* In the private directory: the current version's copy and the one kept for rollback
   * (a leaked refusal kept its copy too). */
  assert_true(hmt_maps_count(dir) > 0);
  assert_true(hmt_count_files(hm_registry_dir(reg)) <= 2);
  hm_registry_free(reg);
  assert_int_equal(hmt_maps_count(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_callers_while_reloading),
      cmocka_unit_test(test_blocked_caller_delays_only_its_version),
      cmocka_unit_test(test_release_not_held_back_by_blocked_caller),
      cmocka_unit_test(test_handles_never_mix),
      cmocka_unit_test(test_nested_calls),
      cmocka_unit_test(test_short_lived_threads),
      cmocka_unit_test(test_refused_reloads_race_good_ones),
  };
  return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
