/*
 * hm_bench — call, reload, soak and lookup figures (see bench/README.md for what each one means).
 *
 *   hm_bench                      every figure, one `name value` line each on stdout
 *   hm_bench --reload-timing      only the reload.* figures (bench/run uses it to time
 *                                 reloads with the private directory on disk too)
 *   hm_bench --reloads-only [--fast] [--iters N]
 *                                 N reloads and nothing else (for callgrind's count of
 *                                 instructions inside hm_module_reload); --fast: of the
 *                                 FAST_RELOAD build
 *   hm_bench --calls-only [--only raw|live|snapshot|qsbr] [--iters N]
 *                                 run the call loops once each, N calls, and print nothing
 *                                 but a note; bench/run runs this under callgrind with
 *                                 --toggle-collect=hm_bench_loop_<kind>* to count
 *                                 instructions per call
 *   hm_bench --calls50            only the call.live_vs_raw_50ns figures: starts itself
 *                                 again as --calls50-child CPU in HM_BENCH_CALLS50_PROCS
 *                                 processes (default 24), one after the other, each pinned
 *                                 to one CPU, and prints the median over them
 *   --moddir DIR                  where benchmod_v1.so, benchmod_v2.so and their
 *                                 FAST_RELOAD builds benchmod_fast_v1.so, _v2.so are
 *   --quick                       fewer rounds and reloads (a smoke run, not for figures)
 *   --verbose                     also print each round's call timings on stderr
 *
 * Speed figures are ratios measured side by side in one run: the loops run interleaved
 * (raw, live, snapshot, raw, live, ...) and the figure is the median of the per-round
 * ratios, so a noisy neighbour slows both sides of a ratio alike. Nothing here fails for
 * being slow; the exit status is non-zero only when the benchmark cannot run at all.
 *
 * Copyright (c) 2026 the hotmod authors. MIT licence, see LICENSE.
 */
#include "hotmod.h"

#include "benchutil.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef HM_BENCH_MODDIR
#define HM_BENCH_MODDIR "."
#endif
#ifndef HM_BENCH_BUILD_TYPE
#define HM_BENCH_BUILD_TYPE ""
#endif

#define NOINLINE __attribute__((noinline))

typedef int (*add_fn)(int);
typedef unsigned (*work_fn)(unsigned);

extern char **environ;

static const char *moddir = HM_BENCH_MODDIR;
static int quick, verbose;

/* ---- Small helpers ----------------------------------------------------------------------- */

static void check(int rc, hm_registry *reg, const char *what) {
  if (rc != 0)
    hmb_die("%s: %s (%s)", what, hm_strerror(rc), reg ? hm_registry_errmsg(reg) : "");
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* CPU time of the calling thread: unlike the wall clock it does not count the time the
 * thread spends preempted by other processes, which on a shared 2-core machine is most of
 * the noise in a millisecond-long loop. */
static double cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
  nanosleep(&ts, NULL);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of v[0..n-1], nearest rank; sorts v. */
static double percentile(double *v, size_t n, double p) {
  size_t k;
  qsort(v, n, sizeof *v, cmp_double);
  k = (size_t)(p / 100.0 * (double)n + 0.5);
  if (k > 0)
    k--;
  if (k >= n)
    k = n - 1;
  return v[k];
}

static double median(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static const char *modpath(const char *name) {
  static char buf[2][4096];
  static int i;
  char *b = buf[i++ % 2];
  snprintf(b, sizeof buf[0], "%s/%s.so", moddir, name);
  return b;
}

static char *make_tmpdir(void) {
  const char *root = getenv("TMPDIR");
  char *p = malloc(4096);
  if (p == NULL)
    hmb_die("out of memory");
  snprintf(p, 4096, "%s/hm_bench-XXXXXX", root && *root ? root : "/tmp");
  if (mkdtemp(p) == NULL)
    hmb_die("mkdtemp %s: %s", p, strerror(errno));
  return p;
}

static void rm_rf(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  if (d == NULL)
    return;
  while ((e = readdir(d)) != NULL) {
    char p[4400];
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      n++;
  closedir(d);
  return n;
}

static int maps_lines(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  int c, n = 0;
  if (f == NULL)
    return -1;
  while ((c = getc(f)) != EOF)
    n += c == '\n';
  fclose(f);
  return n;
}

static int fd_count(void) { return count_files("/proc/self/fd") - 1; /* the DIR's own fd */ }

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, rss = 0;
  if (f == NULL || fscanf(f, "%ld %ld", &size, &rss) != 2)
    hmb_die("cannot read /proc/self/statm");
  fclose(f);
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static hm_registry *new_registry(void) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  o.flags = HM_FLAG_QUIET;
  check(hm_registry_new(&reg, &o), NULL, "hm_registry_new");
  return reg;
}

/* Wait up to `seconds` for the reclaimer to unload every retired version; 1 if it did. */
static int wait_retired(hm_registry *reg, double seconds) {
  double end = now_ns() + seconds * 1e9;
  for (;;) {
    hm_stats st;
    check(hm_registry_stats(reg, &st), reg, "hm_registry_stats");
    if (st.retired == 0)
      return 1;
    if (now_ns() > end)
      return 0;
    sleep_us(100);
  }
}

/* ---- The call loops ---------------------------------------------------------------------- *
 * Out of line, each taking what it calls as an argument loaded from a volatile, so the
 * compiler can neither inline the module's function (it cannot: it is in a dlopen'd object)
 * nor hoist anything out of the loop. Each accumulates the results so the loop cannot be
 * dropped. The names are what bench/run gives callgrind's --toggle-collect. */

static volatile add_fn g_raw_fn;
static hm_snapshot *volatile g_snap;
static hm_live *volatile g_live;
static unsigned g_sink; /* results end here so no loop can be dropped */

static void sink(unsigned v) { __atomic_fetch_add(&g_sink, v, __ATOMIC_RELAXED); }

/* Raw: the module's function through a plain function pointer. */
NOINLINE static unsigned hm_bench_loop_raw(add_fn f, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc += (unsigned)f((int)(i & 0xffff));
  return acc;
}

/* Snapshot: how a host uses a stable snapshot — take its function once, call it. */
NOINLINE static unsigned hm_bench_loop_snapshot(const hm_snapshot *s, long n) {
  add_fn f = (add_fn)hm_snapshot_fn(s);
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc += (unsigned)f((int)(i & 0xffff));
  return acc;
}

/* Live: every call goes through the handle (inline enter, call, inline leave). */
NOINLINE static unsigned hm_bench_loop_live(hm_live *l, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc += (unsigned)HM_LIVE_CALL(l, add_fn, (int)(i & 0xffff));
  return acc;
}

/* The same two ways of calling, for the module's work50 (about 50 ns of work), in two
 * shapes. Independent calls (`acc += f(i)`): what a host's loop over many items does; the
 * CPU may start the next call's work while the previous one is still running, so what the
 * calling mechanism adds (instructions in flight, not only time on a path) shows. Chained
 * calls (`acc = f(acc + i)`): each call needs the previous one's result, so the loop's time
 * is the callee's latency plus whatever the calling mechanism adds to the dependency path. */
NOINLINE static unsigned hm_bench_loop_raw50(work_fn f, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc += f((unsigned)i);
  return acc;
}

/* Live calls on a QSBR thread (hm_thread_qsbr), through HM_LIVE_CALL_QSBR: the loop of
 * hm_bench_loop_live otherwise (-= for +=). The caller switches the thread's flavour around
 * it. */
NOINLINE static unsigned hm_bench_loop_qsbr(hm_live *l, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc -= (unsigned)HM_LIVE_CALL_QSBR(l, add_fn, (int)(i & 0xffff));
  return acc;
}

NOINLINE static unsigned hm_bench_loop_qsbr50(hm_live *l, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc -= HM_LIVE_CALL_QSBR(l, work_fn, (unsigned)i);
  return acc;
}

/* The same through HM_LIVE_CALL_QSBR_ONLY: the bare indirection (the bench is built with
 * NDEBUG). */
NOINLINE static unsigned hm_bench_loop_qsbr_only50(hm_live *l, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc -= HM_LIVE_CALL_QSBR_ONLY(l, work_fn, (unsigned)i);
  return acc;
}

NOINLINE static unsigned hm_bench_loop_live50(hm_live *l, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc += HM_LIVE_CALL(l, work_fn, (unsigned)i);
  return acc;
}

/* A bare indirection, what any live handle needs and nothing more: from a handle laid out
 * as a live handle is (where its module's table pointer is, and its slot), one atomic load
 * of the table pointer, one slot load, the call. The floor a live call's read side is
 * measured against (call.live_vs_indirect_50ns). */
struct indirect_handle {
  work_fn **table;
  size_t slot;
};

NOINLINE static unsigned hm_bench_loop_indirect50(const struct indirect_handle *h, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc += __atomic_load_n(h->table, __ATOMIC_SEQ_CST)[h->slot]((unsigned)i);
  return acc;
}

NOINLINE static unsigned hm_bench_loop_raw50_chained(work_fn f, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc = f(acc + (unsigned)i);
  return acc;
}

NOINLINE static unsigned hm_bench_loop_live50_chained(hm_live *l, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc = HM_LIVE_CALL(l, work_fn, acc + (unsigned)i);
  return acc;
}

/* The default run times the first K_N; qsbr only on request (--only qsbr). */
enum kind { K_RAW, K_LIVE, K_SNAPSHOT, K_N, K_QSBR = K_N, K_ALL };
static const char *const kind_name[K_ALL] = {"raw", "live", "snapshot", "qsbr"};

/* Run one loop of n calls; returns ns per call. */
static double run_loop(enum kind k, long n) {
  double t0 = cpu_ns(), t1;
  unsigned r = 0;
  switch (k) {
  case K_RAW:
    r = hm_bench_loop_raw(g_raw_fn, n);
    break;
  case K_LIVE:
    r = hm_bench_loop_live(g_live, n);
    break;
  case K_SNAPSHOT:
    r = hm_bench_loop_snapshot(g_snap, n);
    break;
  case K_QSBR:
    if (hm_thread_qsbr(1) != 0)
      hmb_die("hm_thread_qsbr(1) failed");
    r = hm_bench_loop_qsbr(g_live, n);
    (void)hm_thread_qsbr(0);
    break;
  default:
    break;
  }
  t1 = cpu_ns();
  sink(r);
  return (t1 - t0) / (double)n;
}

struct call_env {
  hm_registry *reg;
  hm_snapshot *snap;
  hm_live *live;
};

static void call_setup(struct call_env *e) {
  e->reg = new_registry();
  check(hm_module_load(e->reg, "b", modpath("benchmod_v1"), NULL), e->reg, "hm_module_load");
  check(hm_snapshot_acquire(e->reg, "b:add1", &e->snap), e->reg, "hm_snapshot_acquire");
  check(hm_live_get(e->reg, "b:add1", &e->live), e->reg, "hm_live_get");
  g_raw_fn = (add_fn)hm_snapshot_fn(e->snap);
  g_snap = e->snap;
  g_live = e->live;
  /* The first live call on a thread registers the thread: keep it out of the loops. */
  if (HM_LIVE_CALL(e->live, add_fn, 41) != 42 || g_raw_fn(1) != 2)
    hmb_die("benchmod's add1 does not add 1");
}

static void call_teardown(struct call_env *e) {
  hm_snapshot_release(e->snap);
  hm_registry_free(e->reg);
}

/* ---- Module-owned handles ----------------------------------------------------------------
 * A handle that a module's load hook took through ctx->api (bench/benchmod.c, RELAY) reads
 * its version's cell instead of the module's table: the same inline code, one pointer
 * elsewhere. "owned" calls such a handle inline from here; "owned_api" runs the module's own
 * loop, which calls it as module code does, through ctx->api's out-of-line enter and leave. */

typedef unsigned (*relay_loop_fn)(long);
static hm_live *volatile g_owned, *volatile g_owned50;
static volatile relay_loop_fn g_relay_loop, g_relay_loop50;

/* The live loop with ^= for +=: the same instructions, but not the same function, which the
 * compiler would otherwise fold into hm_bench_loop_live (identical code folding). */
NOINLINE static unsigned hm_bench_loop_owned(hm_live *l, long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++)
    acc ^= (unsigned)HM_LIVE_CALL(l, add_fn, (int)(i & 0xffff));
  return acc;
}

NOINLINE static unsigned hm_bench_loop_owned_api(long n) { return g_relay_loop(n); }

struct owned_env {
  hm_registry *reg;
  hm_snapshot *s[4];
};

static void owned_setup(struct owned_env *e) {
  static const char *const names[4] = {"r:relay_add1", "r:relay_work50", "r:relay_loop",
                                       "r:relay_loop50"};
  e->reg = new_registry();
  check(hm_module_load(e->reg, "b", modpath("benchmod_v1"), NULL), e->reg, "hm_module_load b");
  check(hm_module_load(e->reg, "r", modpath("relay_v1"), NULL), e->reg, "hm_module_load r");
  for (int i = 0; i < 4; i++)
    check(hm_snapshot_acquire(e->reg, names[i], &e->s[i]), e->reg, names[i]);
  g_owned = ((hm_live * (*)(void)) hm_snapshot_fn(e->s[0]))();
  g_owned50 = ((hm_live * (*)(void)) hm_snapshot_fn(e->s[1]))();
  g_relay_loop = (relay_loop_fn)hm_snapshot_fn(e->s[2]);
  g_relay_loop50 = (relay_loop_fn)hm_snapshot_fn(e->s[3]);
  if (HM_LIVE_CALL(g_owned, add_fn, 41) != 42 || g_relay_loop(1) != 1)
    hmb_die("the relay's handles do not reach add1");
}

static void owned_teardown(struct owned_env *e) {
  for (int i = 0; i < 4; i++)
    hm_snapshot_release(e->s[i]);
  hm_registry_free(e->reg);
}

/* --owned50: the 50 ns callee through a module-owned handle (inline, and through ctx->api)
 * and a host handle, beside a raw pointer, in one process pinned to one CPU: rounds of the
 * four loops interleaved, the order reversed every other round; medians of the per-round
 * ratios. */
static void bench_owned50(void) {
  enum { RAW, LIVE, OWNED, OWNED_API, N };
  int rounds = quick ? 11 : 41;
  double ns[N][41], ratio[N][41];
  struct owned_env e;
  hm_live *host;
  work_fn f;
  hm_snapshot *snap;
  cpu_set_t set;
  long n = 25000;
  unsigned acc = 0;
  CPU_ZERO(&set);
  CPU_SET(0, &set);
  (void)sched_setaffinity(0, sizeof set, &set);
  owned_setup(&e);
  check(hm_snapshot_acquire(e.reg, "b:work50", &snap), e.reg, "hm_snapshot_acquire");
  check(hm_live_get(e.reg, "b:work50", &host), e.reg, "hm_live_get");
  f = (work_fn)hm_snapshot_fn(snap);
  if (HM_LIVE_CALL(g_owned50, work_fn, 7u) != f(7u))
    hmb_die("owned and raw work50 differ");
  for (int r = -1; r < rounds; r++) { /* round -1 warms up */
    for (int j = 0; j < N; j++) {
      int k = r % 2 ? N - 1 - j : j;
      double t0 = cpu_ns();
      acc += k == RAW    ? hm_bench_loop_raw50(f, n)
             : k == LIVE ? hm_bench_loop_live50(host, n)
             : k == OWNED ? hm_bench_loop_live50(g_owned50, n)
                          : g_relay_loop50(n);
      if (r >= 0)
        ns[k][r] = (cpu_ns() - t0) / (double)n;
    }
    for (int k = 0; r >= 0 && k < N; k++)
      ratio[k][r] = ns[k][r] / ns[RAW][r];
  }
  sink(acc);
  printf("call.host_vs_raw_50ns_one_process %.3f\n", median(ratio[LIVE], (size_t)rounds));
  printf("call.owned_vs_raw_50ns %.3f\n", median(ratio[OWNED], (size_t)rounds));
  printf("call.owned_api_vs_raw_50ns %.3f\n", median(ratio[OWNED_API], (size_t)rounds));
  printf("call.callee50_one_process_ns %.1f\n", median(ns[RAW], (size_t)rounds));
  hm_snapshot_release(snap);
  owned_teardown(&e);
}

/* ---- 2 threads vs 1: the live loop on one handle, from persistent threads ----------------- */

struct mt {
  pthread_barrier_t start, end;
  long n;
  int active; /* how many workers run the loop this phase */
  int ready;  /* workers spinning at the start line (both start together when 2 run) */
  int quit;
  double ns[2];
  double wall[2][2]; /* each worker's wall-clock start and end, to see if they overlapped */
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct worker_arg {
  struct mt *mt;
  int idx;
};

static void *worker(void *p) {
  struct worker_arg *a = p;
  struct mt *mt = a->mt;
  sink((unsigned)HM_LIVE_CALL(g_live, add_fn, 0)); /* register this thread */
  for (;;) {
    pthread_barrier_wait(&mt->start);
    if (mt->quit)
      break;
    if (a->idx < mt->active) {
      /* A spinning start: the barrier wakes the threads one by one, and on a busy machine
       * the second may not get a core for a while; this makes both loops start together. */
      __atomic_add_fetch(&mt->ready, 1, __ATOMIC_ACQ_REL);
      while (__atomic_load_n(&mt->ready, __ATOMIC_ACQUIRE) < mt->active)
        cpu_relax();
      mt->wall[a->idx][0] = now_ns();
      mt->ns[a->idx] = run_loop(K_LIVE, mt->n);
      mt->wall[a->idx][1] = now_ns();
    }
    pthread_barrier_wait(&mt->end);
  }
  return NULL;
}

/* One phase with `active` threads; returns mean ns per call per thread (CPU time). With 2
 * threads, *overlap gets how much of the longer loop ran while the other one ran too (1: the
 * two loops ran side by side all along; lower on a machine too busy to give both a core). */
static double mt_phase(struct mt *mt, int active, double *overlap) {
  mt->active = active;
  mt->ready = 0;
  pthread_barrier_wait(&mt->start);
  pthread_barrier_wait(&mt->end);
  if (active == 1)
    return mt->ns[0];
  {
    double s = mt->wall[0][0] > mt->wall[1][0] ? mt->wall[0][0] : mt->wall[1][0];
    double e = mt->wall[0][1] < mt->wall[1][1] ? mt->wall[0][1] : mt->wall[1][1];
    double d0 = mt->wall[0][1] - mt->wall[0][0], d1 = mt->wall[1][1] - mt->wall[1][0];
    double d = d0 > d1 ? d0 : d1;
    *overlap = e > s && d > 0 ? (e - s) / d : 0.0;
  }
  return (mt->ns[0] + mt->ns[1]) / 2.0;
}

/* ---- Benchmarks --------------------------------------------------------------------------- */

static void bench_calls(void) {
  struct call_env e;
  int rounds = quick ? 21 : 151, mrounds = quick ? 11 : 101, mmax = 4 * mrounds;
  int side = 0, total = 0;
  double *ratio_live = calloc((size_t)rounds, sizeof(double));
  double *ratio_snap = calloc((size_t)rounds, sizeof(double));
  double *ns[K_N], *ratio_mt = calloc((size_t)mrounds, sizeof(double));
  double *ratio_mt_all = calloc((size_t)mmax, sizeof(double));
  double *ns1 = calloc((size_t)mrounds, sizeof(double));
  double *ns2 = calloc((size_t)mrounds, sizeof(double));
  double per, ov = 0;
  long n;
  struct mt mt;
  struct worker_arg wa[2];
  pthread_t th[2];

  for (int k = 0; k < K_N; k++)
    ns[k] = calloc((size_t)rounds, sizeof(double));
  call_setup(&e);

  /* Size the loops to about 1 ms of raw calls each: short enough that few rounds see a
   * context switch, long enough that the clock's cost does not matter. */
  (void)run_loop(K_RAW, 200000);
  per = run_loop(K_RAW, 200000);
  n = (long)(1e6 / (per > 0.3 ? per : 0.3));
  if (n < 50000)
    n = 50000;
  for (int k = 0; k < K_N; k++) /* warm up */
    (void)run_loop((enum kind)k, n / 4);

  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < K_N; k++)
      ns[k][r] = run_loop((enum kind)k, n);
    ratio_live[r] = ns[K_LIVE][r] / ns[K_RAW][r];
    ratio_snap[r] = ns[K_SNAPSHOT][r] / ns[K_RAW][r];
    if (verbose)
      fprintf(stderr, "# round %2d: raw %.2f live %.2f snapshot %.2f ns\n", r, ns[K_RAW][r],
              ns[K_LIVE][r], ns[K_SNAPSHOT][r]);
  }
  printf("call.live_vs_raw %.3f\n", median(ratio_live, (size_t)rounds));
  /* Its spread over the rounds: a trivial loop runs at one of a few discrete speeds here. */
  printf("call.live_vs_raw_p10 %.3f\n", percentile(ratio_live, (size_t)rounds, 10));
  printf("call.live_vs_raw_p90 %.3f\n", percentile(ratio_live, (size_t)rounds, 90));
  printf("call.snapshot_vs_raw %.3f\n", median(ratio_snap, (size_t)rounds));
  fflush(stdout);

  /* 2 threads vs 1, alternating which phase goes first. */
  memset(&mt, 0, sizeof mt);
  mt.n = n;
  pthread_barrier_init(&mt.start, NULL, 3);
  pthread_barrier_init(&mt.end, NULL, 3);
  for (int i = 0; i < 2; i++) {
    wa[i].mt = &mt;
    wa[i].idx = i;
    if (pthread_create(&th[i], NULL, worker, &wa[i]) != 0)
      hmb_die("pthread_create failed");
  }
  /* Only rounds in which the two loops really ran side by side say anything about
   * contention: on a busy machine the two threads may get one core between them and run
   * one after the other. Run rounds until `mrounds` of them overlapped (at least half of the
   * longer loop), or up to 4x that many rounds in all. */
  (void)mt_phase(&mt, 2, &ov); /* warm up */
  for (int r = 0; r < mmax && side < mrounds; r++) {
    double one, two;
    if (r % 2 == 0) {
      one = mt_phase(&mt, 1, NULL);
      two = mt_phase(&mt, 2, &ov);
    } else {
      two = mt_phase(&mt, 2, &ov);
      one = mt_phase(&mt, 1, NULL);
    }
    total++;
    if (ov >= 0.5) {
      ns1[side] = one;
      ns2[side] = two;
      ratio_mt[side++] = two / one;
    } else if (total - side <= mmax) { /* kept in case too few rounds overlap */
      ratio_mt_all[total - side - 1] = two / one;
    }
  }
  mt.quit = 1;
  pthread_barrier_wait(&mt.start);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&mt.start);
  pthread_barrier_destroy(&mt.end);
  if (side >= 5) {
    printf("call.live_2threads_vs_1thread %.3f\n", median(ratio_mt, (size_t)side));
  } else {
    /* Too busy a machine: report the ratio over all rounds and say so. */
    memcpy(ratio_mt_all + (total - side), ratio_mt, (size_t)side * sizeof(double));
    fprintf(stderr, "# 2 threads: only %d of %d rounds ran side by side; the ratio below is over"
                    " all rounds and says little about contention\n", side, total);
    printf("call.live_2threads_vs_1thread %.3f\n", median(ratio_mt_all, (size_t)total));
  }
  printf("call.live_2threads_side_by_side %.2f\n", (double)side / (double)total);

  /* Context: the medians in ns per call (absolute times vary with the machine's load). */
  printf("call.raw_ns %.2f\n", median(ns[K_RAW], (size_t)rounds));
  printf("call.live_ns %.2f\n", median(ns[K_LIVE], (size_t)rounds));
  printf("call.snapshot_ns %.2f\n", median(ns[K_SNAPSHOT], (size_t)rounds));
  if (side > 0) {
    printf("call.live_1thread_ns %.2f\n", median(ns1, (size_t)side));
    printf("call.live_2threads_ns %.2f\n", median(ns2, (size_t)side));
  }
  fflush(stdout);

  call_teardown(&e);
  for (int k = 0; k < K_N; k++)
    free(ns[k]);
  free(ratio_live);
  free(ratio_snap);
  free(ratio_mt);
  free(ns1);
  free(ns2);
  free(ratio_mt_all);
}

/* ---- A callee doing about 50 ns of work, live against raw, over many pinned processes ---- *
 * A single process's ratio depends on where its code and data happened to land (the
 * trivial loops show stable per-address speeds; see bench/README.md), so the figure is the
 * median over separate processes, each started fresh (its own addresses, caches and
 * predictor state), pinned to one CPU, alternating between the CPUs the benchmark may use. */

enum {
  C50_RAW,
  C50_LIVE,
  C50_RAW_CHAINED,
  C50_LIVE_CHAINED,
  C50_INDIRECT,
  C50_QSBR,
  C50_QSBR_ONLY,
  C50_N
};

/* The bare indirection's table: one slot, the same function the live handle calls. */
static work_fn g_indirect_slot[1];
static work_fn *g_indirect_table = g_indirect_slot;
static struct indirect_handle g_indirect = {&g_indirect_table, 0};
/* Read through a volatile, so the compiler cannot fold the handle into the loop (a live
 * handle is not a constant either). */
static struct indirect_handle *volatile g_indirect_h = &g_indirect;

static unsigned calls50_loop(int k, work_fn f, hm_live *l, long n) {
  switch (k) {
  case C50_RAW:
    return hm_bench_loop_raw50(f, n);
  case C50_LIVE:
    return hm_bench_loop_live50(l, n);
  case C50_INDIRECT:
    return hm_bench_loop_indirect50(g_indirect_h, n);
  case C50_QSBR:
  case C50_QSBR_ONLY: {
    /* Two fenced stores per loop of n calls: nothing against the loop's time. */
    unsigned r;
    if (hm_thread_qsbr(1) != 0)
      hmb_die("hm_thread_qsbr(1) failed");
    r = k == C50_QSBR ? hm_bench_loop_qsbr50(l, n) : hm_bench_loop_qsbr_only50(l, n);
    (void)hm_thread_qsbr(0);
    return r;
  }
  case C50_RAW_CHAINED:
    return hm_bench_loop_raw50_chained(f, n);
  default:
    return hm_bench_loop_live50_chained(l, n);
  }
}

/* In the child: rounds of the four loops, interleaved, the order reversed every other round
 * (raw, live, raw chained, live chained; then live chained, raw chained, live, raw), each
 * loop timed with the thread's CPU clock. Prints one line: the medians of the per-round
 * ratios live/raw (independent, chained) and the median ns per call of each loop. */
static int calls50_child(int cpu) {
  int rounds = quick ? 11 : 41;
  double *ns[C50_N], *ratio = calloc((size_t)rounds, sizeof(double));
  double *ratio_c = calloc((size_t)rounds, sizeof(double));
  double *ratio_i = calloc((size_t)rounds, sizeof(double));
  double *ratio_q = calloc((size_t)rounds, sizeof(double));
  double *ratio_qr = calloc((size_t)rounds, sizeof(double));
  double *ratio_qo = calloc((size_t)rounds, sizeof(double));
  hm_registry *reg;
  hm_snapshot *snap;
  hm_live *l;
  work_fn f;
  cpu_set_t set;
  long n = 25000; /* about 1.3 ms per loop at 50 ns per call */
  unsigned acc = 0;

  for (int k = 0; k < C50_N; k++)
    if ((ns[k] = calloc((size_t)rounds, sizeof(double))) == NULL)
      hmb_die("out of memory");
  if (ratio == NULL || ratio_c == NULL || ratio_i == NULL || ratio_q == NULL || ratio_qr == NULL ||
      ratio_qo == NULL)
    hmb_die("out of memory");
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0)
    hmb_die("sched_setaffinity(%d): %s", cpu, strerror(errno));
  reg = new_registry();
  check(hm_module_load(reg, "w", modpath("benchmod_v1"), NULL), reg, "hm_module_load");
  check(hm_snapshot_acquire(reg, "w:work50", &snap), reg, "hm_snapshot_acquire");
  check(hm_live_get(reg, "w:work50", &l), reg, "hm_live_get");
  f = (work_fn)hm_snapshot_fn(snap);
  g_indirect_slot[0] = f;
  /* Registers the thread (kept out of the loops), and checks both ways call the same code. */
  if (HM_LIVE_CALL(l, work_fn, 7u) != f(7u))
    hmb_die("live and raw work50 differ");
  for (int k = 0; k < C50_N; k++) /* warm up */
    acc += calls50_loop(k, f, l, n / 4);
  for (int r = 0; r < rounds; r++) {
    for (int j = 0; j < C50_N; j++) {
      int k = r % 2 ? C50_N - 1 - j : j;
      double t0 = cpu_ns(), t1;
      acc += calls50_loop(k, f, l, n);
      t1 = cpu_ns();
      ns[k][r] = (t1 - t0) / (double)n;
    }
    ratio[r] = ns[C50_LIVE][r] / ns[C50_RAW][r];
    ratio_c[r] = ns[C50_LIVE_CHAINED][r] / ns[C50_RAW_CHAINED][r];
    ratio_i[r] = ns[C50_LIVE][r] / ns[C50_INDIRECT][r];
    ratio_q[r] = ns[C50_QSBR][r] / ns[C50_INDIRECT][r];
    ratio_qr[r] = ns[C50_QSBR][r] / ns[C50_RAW][r];
    ratio_qo[r] = ns[C50_QSBR_ONLY][r] / ns[C50_INDIRECT][r];
  }
  sink(acc);
  printf("calls50 %.5f %.5f", median(ratio, (size_t)rounds), median(ratio_c, (size_t)rounds));
  for (int k = 0; k < C50_INDIRECT; k++)
    printf(" %.3f", median(ns[k], (size_t)rounds));
  printf(" %.5f", median(ratio_i, (size_t)rounds));
  printf(" %.5f %.5f %.3f %.5f", median(ratio_q, (size_t)rounds),
         median(ratio_qr, (size_t)rounds), median(ns[C50_QSBR], (size_t)rounds),
         median(ratio_qo, (size_t)rounds));
  printf("\n");
  fflush(stdout);
  hm_snapshot_release(snap);
  hm_registry_free(reg);
  for (int k = 0; k < C50_N; k++)
    free(ns[k]);
  free(ratio);
  free(ratio_c);
  free(ratio_i);
  free(ratio_q);
  free(ratio_qo);
  free(ratio_qr);
  return 0;
}

/* One child: this program again with --calls50-child CPU; its line parsed into r[C50_FIGS]. */
#define C50_FIGS 11
static void calls50_spawn(int cpu, double r[C50_FIGS]) {
  char cpus[16], line[256];
  char *argv[] = {"hm_bench", "--calls50-child", cpus, "--moddir", (char *)moddir,
                  quick ? "--quick" : NULL, NULL};
  posix_spawn_file_actions_t fa;
  int fds[2], st, ok;
  pid_t pid;
  FILE *in;

  snprintf(cpus, sizeof cpus, "%d", cpu);
  if (pipe(fds) != 0)
    hmb_die("pipe: %s", strerror(errno));
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  if (posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ) != 0)
    hmb_die("cannot start /proc/self/exe --calls50-child");
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  in = fdopen(fds[0], "r");
  ok = in != NULL && fgets(line, sizeof line, in) != NULL &&
       sscanf(line, "calls50 %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf", &r[0], &r[1], &r[2],
              &r[3], &r[4], &r[5], &r[6], &r[7], &r[8], &r[9], &r[10]) == C50_FIGS;
  if (in != NULL)
    fclose(in);
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !ok)
    hmb_die("the --calls50-child process on CPU %d failed", cpu);
}

/* The CPUs this process may run on (its affinity mask); at most `max`. */
static int allowed_cpus(int *cpu, int max) {
  cpu_set_t set;
  int n = 0;
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    hmb_die("sched_getaffinity: %s", strerror(errno));
  for (int c = 0; c < CPU_SETSIZE && n < max; c++)
    if (CPU_ISSET(c, &set))
      cpu[n++] = c;
  return n;
}

static void bench_calls50(void) {
  const char *env = getenv("HM_BENCH_CALLS50_PROCS");
  int procs = env && *env ? atoi(env) : quick ? 4 : 24, cpu[64], ncpu = allowed_cpus(cpu, 64);
  double *v[C50_FIGS], start = now_ns();

  if (procs < 1)
    procs = 1;
  if (ncpu > 2) /* alternate between two CPUs, as on the 2-vCPU machine the figures come from */
    ncpu = 2;
  for (int i = 0; i < C50_FIGS; i++)
    if ((v[i] = calloc((size_t)procs, sizeof(double))) == NULL)
      hmb_die("out of memory");
  fprintf(stderr, "# calls50: per process (CPU: live/raw, chained live/raw, raw ns):");
  for (int p = 0; p < procs; p++) {
    double r[C50_FIGS];
    calls50_spawn(cpu[p % ncpu], r);
    for (int i = 0; i < C50_FIGS; i++)
      v[i][p] = r[i];
    fprintf(stderr, "%s %d: %.3f %.3f %.1f", p % 6 ? "," : "\n#  ", cpu[p % ncpu], r[0], r[1],
            r[2]);
  }
  fputc('\n', stderr);
  /* median() sorts, so the extremes are the first and last elements after it. */
  printf("call.live_vs_raw_50ns %.3f\n", median(v[0], (size_t)procs));
  printf("call.live_vs_raw_50ns_min %.3f\n", v[0][0]);
  printf("call.live_vs_raw_50ns_max %.3f\n", v[0][procs - 1]);
  printf("call.live_vs_raw_50ns_chained %.3f\n", median(v[1], (size_t)procs));
  printf("call.live_vs_raw_50ns_chained_min %.3f\n", v[1][0]);
  printf("call.live_vs_raw_50ns_chained_max %.3f\n", v[1][procs - 1]);
  printf("call.live_vs_indirect_50ns %.3f\n", median(v[6], (size_t)procs));
  printf("call.live_vs_indirect_50ns_min %.3f\n", v[6][0]);
  printf("call.live_vs_indirect_50ns_max %.3f\n", v[6][procs - 1]);
  printf("call.qsbr_vs_indirect_50ns %.3f\n", median(v[7], (size_t)procs));
  printf("call.qsbr_vs_indirect_50ns_min %.3f\n", v[7][0]);
  printf("call.qsbr_vs_indirect_50ns_max %.3f\n", v[7][procs - 1]);
  printf("call.qsbr_only_vs_indirect_50ns %.3f\n", median(v[10], (size_t)procs));
  printf("call.qsbr_only_vs_indirect_50ns_min %.3f\n", v[10][0]);
  printf("call.qsbr_only_vs_indirect_50ns_max %.3f\n", v[10][procs - 1]);
  printf("call.qsbr_vs_raw_50ns %.3f\n", median(v[8], (size_t)procs));
  printf("call.qsbr_vs_raw_50ns_min %.3f\n", v[8][0]);
  printf("call.qsbr_vs_raw_50ns_max %.3f\n", v[8][procs - 1]);
  printf("call.callee50_ns %.1f\n", median(v[2], (size_t)procs));
  printf("call.callee50_chained_ns %.1f\n", median(v[4], (size_t)procs));
  fprintf(stderr, "# calls50: %d processes in %.1f s; live ns per call (median) %.1f, chained "
          "%.1f, qsbr %.1f\n", procs, (now_ns() - start) / 1e9, median(v[3], (size_t)procs),
          median(v[5], (size_t)procs), median(v[9], (size_t)procs));
  fflush(stdout);
  for (int i = 0; i < C50_FIGS; i++)
    free(v[i]);
}

/* A module loaded from a temporary directory, for the reload figures. */
typedef struct reload_fx {
  char *dir;
  char path[4200];
  hm_registry *reg;
  hm_module *mod;
} reload_fx;

static void reload_fx_open(reload_fx *f, const char *name, const unsigned char *buf,
                           size_t len) {
  f->dir = make_tmpdir();
  f->reg = new_registry();
  snprintf(f->path, sizeof f->path, "%s/benchmod.so", f->dir);
  hmb_put(buf, len, f->path);
  check(hm_module_load(f->reg, name, f->path, &f->mod), f->reg, "hm_module_load");
}

static void reload_fx_close(reload_fx *f) {
  hm_registry_free(f->reg);
  rm_rf(f->dir);
  free(f->dir);
}

/* One timed hm_module_reload of fixture `f`, after installing build `b` and waiting for the
 * reclaimer to unload what the previous reload retired. Wall-clock and CPU microseconds. */
static void timed_reload(reload_fx *f, const unsigned char *b, size_t len, double *us,
                         double *cpu) {
  double t0, t1, c0, c1;
  int rc;
  hmb_put(b, len, f->path);
  (void)wait_retired(f->reg, 1.0);
  c0 = cpu_ns();
  t0 = now_ns();
  rc = hm_module_reload(f->mod);
  t1 = now_ns();
  c1 = cpu_ns();
  check(rc, f->reg, "hm_module_reload");
  *us = (t1 - t0) / 1e3;
  *cpu = (c1 - c0) / 1e3;
}

/* hm_module_reload of a small module, alternating between two builds installed at its path;
 * beside it, in the same run and alternating with it sample by sample (so both see the same
 * machine), the same module built with FAST_RELOAD (-z norelro -z noseparate-code).
 * Outside the timed region: the install, and waiting for the registry's reclaimer to unload
 * the version the previous reload retired, so each sample is one reload on its own, as in
 * real use (back-to-back reloads are the soak's business). Wall-clock time is what the
 * caller waits; the calling thread's CPU time is given beside it, since on a busy machine
 * the wall clock also counts time spent preempted. */
/* The floor under a reload: what any loader that keeps a private copy of the build must do,
 * done by hand with no checks at all: open and read the new build, write the private copy
 * into a directory on the same filesystem as the registry's, dlopen it, dlsym one symbol.
 * Timed like hm_module_reload (the build is installed first, untimed); the previous object is
 * dlclosed and its copy deleted after the timing, as hotmod's reclaimer does off the
 * caller's path. */
typedef struct floor_fx {
  char *dir;       /* the copies */
  char *srcdir;    /* the build */
  char src[4200];
  void *prev;
  char prev_copy[4300];
  unsigned long seq;
} floor_fx;

static void floor_open(floor_fx *x, const char *regdir) {
  char parent[4096], *slash;
  memset(x, 0, sizeof *x);
  snprintf(parent, sizeof parent, "%s", regdir);
  slash = strrchr(parent, '/');
  if (slash == NULL || slash == parent)
    hmb_die("unexpected registry directory %s", regdir);
  *slash = '\0';
  x->dir = malloc(4200);
  if (x->dir == NULL)
    hmb_die("out of memory");
  snprintf(x->dir, 4200, "%s/hm_bench_floor-XXXXXX", parent);
  if (mkdtemp(x->dir) == NULL)
    hmb_die("mkdtemp %s: %s", x->dir, strerror(errno));
  x->srcdir = make_tmpdir();
  snprintf(x->src, sizeof x->src, "%s/benchmod.so", x->srcdir);
}

static void floor_close(floor_fx *x) {
  if (x->prev != NULL)
    dlclose(x->prev);
  rm_rf(x->dir);
  rm_rf(x->srcdir);
  free(x->dir);
  free(x->srcdir);
}

static void floor_reload(floor_fx *x, const unsigned char *b, size_t len, double *us) {
  char copy[4300];
  struct stat st;
  unsigned char *buf;
  double t0, t1;
  void *h;
  int fd;
  hmb_put(b, len, x->src);
  t0 = now_ns();
  fd = open(x->src, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0 || (buf = malloc((size_t)st.st_size)) == NULL ||
      pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
    hmb_die("floor: cannot read %s", x->src);
  close(fd);
  snprintf(copy, sizeof copy, "%s/c.%lu.so", x->dir, x->seq++);
  fd = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
  if (fd < 0 || write(fd, buf, (size_t)st.st_size) != st.st_size)
    hmb_die("floor: cannot write %s", copy);
  close(fd);
  h = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL || dlsym(h, "add1") == NULL)
    hmb_die("floor: %s", dlerror());
  t1 = now_ns();
  free(buf);
  if (x->prev != NULL) {
    dlclose(x->prev);
    unlink(x->prev_copy);
  }
  x->prev = h;
  snprintf(x->prev_copy, sizeof x->prev_copy, "%s", copy);
  *us = (t1 - t0) / 1e3;
}

static void bench_reload(const unsigned char *v[2], const size_t vlen[2],
                         const unsigned char *fv[2], const size_t fvlen[2]) {
  int samples = quick ? 200 : 2000, warm = quick ? 20 : 100;
  double *us = calloc((size_t)samples, sizeof(double));
  double *cpu = calloc((size_t)samples, sizeof(double));
  double *fus = calloc((size_t)samples, sizeof(double));
  double *fcpu = calloc((size_t)samples, sizeof(double));
  double *flo = calloc((size_t)samples, sizeof(double));
  double *fflo = calloc((size_t)samples, sizeof(double));
  reload_fx f, g;
  floor_fx x, y;
  hm_live *live, *flive;
  double start = now_ns();

  reload_fx_open(&f, "r", v[0], vlen[0]);
  reload_fx_open(&g, "fast", fv[0], fvlen[0]);
  check(hm_live_get(f.reg, "r:add1", &live), f.reg, "hm_live_get");
  check(hm_live_get(g.reg, "fast:add1", &flive), g.reg, "hm_live_get");
  floor_open(&x, hm_registry_dir(f.reg));
  floor_open(&y, hm_registry_dir(f.reg));
  for (int i = 0; i < warm + samples; i++) {
    int k = i >= warm ? i - warm : 0, next = (i + 1) % 2;
    double u, c, fu, fc, lo, flo1;
    if (i % 2 == 0) {
      timed_reload(&f, v[next], vlen[next], &u, &c);
      floor_reload(&x, v[next], vlen[next], &lo);
      timed_reload(&g, fv[next], fvlen[next], &fu, &fc);
      floor_reload(&y, fv[next], fvlen[next], &flo1);
    } else {
      floor_reload(&y, fv[next], fvlen[next], &flo1);
      timed_reload(&g, fv[next], fvlen[next], &fu, &fc);
      floor_reload(&x, v[next], vlen[next], &lo);
      timed_reload(&f, v[next], vlen[next], &u, &c);
    }
    if (i >= warm) {
      us[k] = u;
      cpu[k] = c;
      fus[k] = fu;
      fcpu[k] = fc;
      flo[k] = lo;
      fflo[k] = flo1;
    }
  }
  floor_close(&x);
  floor_close(&y);
  if (HM_LIVE_CALL(live, add_fn, 1) != 2 || HM_LIVE_CALL(flive, add_fn, 1) != 2)
    hmb_die("reloaded add1 does not add 1");
  printf("reload.api_us_p50 %.1f\n", percentile(us, (size_t)samples, 50));
  printf("reload.api_us_p99 %.1f\n", percentile(us, (size_t)samples, 99));
  printf("reload.api_cpu_us_p50 %.1f\n", percentile(cpu, (size_t)samples, 50));
  printf("reload.fast_us_p50 %.1f\n", percentile(fus, (size_t)samples, 50));
  printf("reload.fast_us_p99 %.1f\n", percentile(fus, (size_t)samples, 99));
  printf("reload.fast_cpu_us_p50 %.1f\n", percentile(fcpu, (size_t)samples, 50));
  {
    double a = percentile(us, (size_t)samples, 50), fa = percentile(fus, (size_t)samples, 50);
    double lo = percentile(flo, (size_t)samples, 50), flo1 = percentile(fflo, (size_t)samples, 50);
    printf("reload.floor_us_p50 %.1f\n", lo);
    printf("reload.fast_floor_us_p50 %.1f\n", flo1);
    printf("reload.api_vs_floor %.2f\n", a / lo);
    printf("reload.fast_vs_floor %.2f\n", fa / flo1);
  }
  fprintf(stderr, "# reload: %d samples of each in %.1f s, module file %zu bytes (FAST_RELOAD "
          "build %zu), private directory %s\n", samples, (now_ns() - start) / 1e9, vlen[0],
          fvlen[0], hm_registry_dir(f.reg));
  fflush(stdout);
  reload_fx_close(&f);
  reload_fx_close(&g);
  free(us);
  free(cpu);
  free(fus);
  free(fcpu);
  free(flo);
  free(fflo);
}

/* A group reload of two modules (hm_registry_reload_group) beside the same two modules
 * reloaded one after the other with hm_module_reload, in one registry, alternating sample by
 * sample; each sample is timed as in bench_reload (builds installed and the retired versions
 * unloaded first, untimed). */
static void bench_group(const unsigned char *v[2], const size_t vlen[2]) {
  int samples = quick ? 100 : 600, warm = quick ? 10 : 40;
  double *grp = calloc((size_t)samples, sizeof(double));
  double *two = calloc((size_t)samples, sizeof(double));
  reload_fx f;
  char path2[4300];
  hm_module *mods[2];
  double start = now_ns();
  if (grp == NULL || two == NULL)
    hmb_die("out of memory");
  reload_fx_open(&f, "ga", v[0], vlen[0]);
  mods[0] = f.mod;
  snprintf(path2, sizeof path2, "%s/benchmod2.so", f.dir);
  hmb_put(v[0], vlen[0], path2);
  check(hm_module_load(f.reg, "gb", path2, &mods[1]), f.reg, "hm_module_load");
  for (int i = 0; i < warm + samples; i++) {
    int next = (i + 1) % 2;
    for (int half = 0; half < 2; half++) {
      int as_group = (i + half) % 2 == 0;
      double t0, t1;
      hmb_put(v[next], vlen[next], f.path);
      hmb_put(v[next], vlen[next], path2);
      (void)wait_retired(f.reg, 1.0);
      t0 = now_ns();
      if (as_group) {
        check(hm_registry_reload_group(f.reg, mods, NULL, 2), f.reg, "hm_registry_reload_group");
      } else {
        check(hm_module_reload(mods[0]), f.reg, "hm_module_reload");
        check(hm_module_reload(mods[1]), f.reg, "hm_module_reload");
      }
      t1 = now_ns();
      if (i >= warm)
        (as_group ? grp : two)[i - warm] = (t1 - t0) / 1e3;
      next = 1 - next;
    }
  }
  {
    double g = percentile(grp, (size_t)samples, 50), t = percentile(two, (size_t)samples, 50);
    printf("reload.group2_us_p50 %.1f\n", g);
    printf("reload.two_singles_us_p50 %.1f\n", t);
    printf("reload.group2_vs_two_singles %.2f\n", g / t);
  }
  fprintf(stderr, "# group: %d samples of each in %.1f s\n", samples, (now_ns() - start) / 1e9);
  fflush(stdout);
  reload_fx_close(&f);
  free(grp);
  free(two);
}

/* What a host's loop feels when it applies a queued reload at its safe point: the module is
 * in HM_RELOAD_QUEUED mode with the watcher running; after each new build is installed, the
 * loop calls hm_registry_poll until it publishes the build (a poll that finds nothing
 * prepared costs a lock and returns 0), and the call that publishes it is timed. The watcher
 * has read, checked, copied and dlopened the build on its own thread; the poll resolves what
 * is left, runs the hooks and publishes.
 * Between samples, as in bench_reload, the retired version is left to be unloaded. */
static void bench_poll_stall(const unsigned char *v[2], const size_t vlen[2]) {
  int samples = quick ? 50 : 300, warm = quick ? 5 : 20;
  double *us = calloc((size_t)samples, sizeof(double));
  reload_fx f;
  reload_fx_open(&f, "q", v[0], vlen[0]);
  if (us == NULL)
    hmb_die("out of memory");
  check(hm_module_set_reload_mode(f.mod, HM_RELOAD_QUEUED), f.reg, "hm_module_set_reload_mode");
  check(hm_watch_start(f.reg), f.reg, "hm_watch_start");
  for (int i = 0; i < warm + samples; i++) {
    double t0, t1, deadline;
    int n;
    hmb_put(v[(i + 1) % 2], vlen[(i + 1) % 2], f.path);
    deadline = now_ns() + 10e9;
    for (;;) {
      t0 = now_ns();
      n = hm_registry_poll(f.reg);
      t1 = now_ns();
      if (n != 0)
        break;
      if (t1 > deadline)
        hmb_die("the watcher queued no reload within 10 s");
      sleep_us(50);
    }
    check(n < 0 ? n : 0, f.reg, "hm_registry_poll");
    if (i >= warm)
      us[i - warm] = (t1 - t0) / 1e3;
    (void)wait_retired(f.reg, 1.0);
  }
  printf("reload.poll_stall_us_p50 %.1f\n", percentile(us, (size_t)samples, 50));
  printf("reload.poll_stall_us_p99 %.1f\n", percentile(us, (size_t)samples, 99));
  fflush(stdout);
  hm_watch_stop(f.reg);
  reload_fx_close(&f);
  free(us);
}

/* The floor under the probe's cost: starting a program that does nothing (true) and
 * waiting for it, in microseconds. */
static double spawn_true_us(void) {
  char *argv[] = {"true", NULL};
  pid_t pid;
  double t0 = now_ns();
  if (posix_spawnp(&pid, "true", NULL, NULL, argv, environ) != 0)
    return -1;
  (void)waitpid(pid, NULL, 0);
  return (now_ns() - t0) / 1e3;
}

/* What crash containment (hm_module_set_probe) adds to a reload: reloads with and without
 * the probe, alternating, so both see the same machine; the figure is the median of the
 * differences between neighbouring samples. */
static void bench_probe(const unsigned char *v[2], const size_t vlen[2]) {
  int pairs = quick ? 40 : 300, warm = quick ? 4 : 20, n = 0;
  double *with = calloc((size_t)pairs, sizeof(double));
  double *without = calloc((size_t)pairs, sizeof(double));
  double *added = calloc((size_t)pairs, sizeof(double));
  double *floor_us = calloc((size_t)pairs, sizeof(double));
  reload_fx f;

  reload_fx_open(&f, "p", v[0], vlen[0]);
  for (int i = 0; i < 2 * (warm + pairs); i++) {
    int probed = i % 2 == 0, k = i / 2 - warm;
    double t0, t1;
    check(hm_module_set_probe(f.mod, probed), f.reg, "hm_module_set_probe");
    hmb_put(v[(i + 1) % 2], vlen[(i + 1) % 2], f.path);
    (void)wait_retired(f.reg, 1.0);
    t0 = now_ns();
    check(hm_module_reload(f.mod), f.reg, "hm_module_reload");
    t1 = now_ns();
    if (k >= 0)
      (probed ? with : without)[k] = (t1 - t0) / 1e3;
    if (k >= 0 && !probed)
      floor_us[k] = spawn_true_us();
  }
  for (int k = 0; k < pairs; k++)
    added[n++] = with[k] - without[k];
  printf("reload.probed_api_us_p50 %.1f\n", percentile(with, (size_t)pairs, 50));
  printf("reload.probe_us_p50 %.1f\n", percentile(added, (size_t)n, 50));
  printf("reload.probe_floor_us_p50 %.1f\n", percentile(floor_us, (size_t)pairs, 50));
  fprintf(stderr, "# probe: %d pairs; a reload without the probe took %.1f us (p50) in the "
          "same run\n", pairs, percentile(without, (size_t)pairs, 50));
  fflush(stdout);
  reload_fx_close(&f);
  free(with);
  free(without);
  free(added);
  free(floor_us);
}

/* N reloads and nothing else, for bench/run to count hm_module_reload's instructions under
 * callgrind (--toggle-collect=hm_module_reload): the repeatable figure beside the timed one. */
static void reloads_only(const unsigned char *v[2], const size_t vlen[2], long n) {
  reload_fx f;
  reload_fx_open(&f, "r", v[0], vlen[0]);
  for (long i = 0; i < n; i++) {
    hmb_put(v[(i + 1) % 2], vlen[(i + 1) % 2], f.path);
    (void)wait_retired(f.reg, 5.0);
    check(hm_module_reload(f.mod), f.reg, "hm_module_reload");
  }
  reload_fx_close(&f);
}

/* 10,000 reloads, a snapshot taken every few reloads and released after the next one;
 * process resources before and after (once the reclaimer has unloaded what was retired). */
static void bench_soak(const unsigned char *v[2], const size_t vlen[2]) {
  int reloads = quick ? 1000 : 10000, warm = 200, every = 4;
  char *dir = make_tmpdir();
  char path[4200];
  hm_registry *reg = new_registry();
  hm_module *mod;
  hm_live *live;
  hm_snapshot *snap = NULL;
  long rss0 = 0, rss1;
  int maps0 = 0, maps1, fds0 = 0, fds1, files0 = 0, files1, done;
  unsigned long long sum = 0;
  double t0 = 0, t1;

  snprintf(path, sizeof path, "%s/benchmod.so", dir);
  hmb_put(v[0], vlen[0], path);
  check(hm_module_load(reg, "s", path, &mod), reg, "hm_module_load");
  check(hm_live_get(reg, "s:add1", &live), reg, "hm_live_get");

  for (int phase = 0; phase < 2; phase++) {
    int count = phase == 0 ? warm : reloads;
    if (phase == 1) {
      if (!wait_retired(reg, 5.0))
        fprintf(stderr, "# soak: retired versions still loaded after the warm-up\n");
      rss0 = rss_kib();
      maps0 = maps_lines();
      fds0 = fd_count();
      files0 = count_files(hm_registry_dir(reg));
      t0 = now_ns();
    }
    for (int i = 0; i < count; i++) {
      hmb_put(v[(i + 1) % 2], vlen[(i + 1) % 2], path);
      check(hm_module_reload(mod), reg, "hm_module_reload");
      sum += (unsigned)HM_LIVE_CALL(live, add_fn, i & 0xff);
      if (snap != NULL) { /* it pinned the version this reload retired */
        sum += (unsigned)((add_fn)hm_snapshot_fn(snap))(1);
        hm_snapshot_release(snap);
        snap = NULL;
      }
      if (i % every == 0)
        check(hm_snapshot_acquire(reg, "s:add1", &snap), reg, "hm_snapshot_acquire");
    }
  }
  t1 = now_ns();
  hm_snapshot_release(snap);
  done = wait_retired(reg, 10.0);
  rss1 = rss_kib();
  maps1 = maps_lines();
  fds1 = fd_count();
  files1 = count_files(hm_registry_dir(reg));
  sink((unsigned)sum);
  if (!done)
    fprintf(stderr, "# soak: retired versions still loaded 10 s after the last reload\n");
  fprintf(stderr, "# soak: %d reloads in %.2f s (%.1f us each incl. install); rss %ld -> %ld KiB,"
                  " maps %d -> %d, fds %d -> %d, private files %d -> %d\n",
          reloads, (t1 - t0) / 1e9, (t1 - t0) / 1e3 / reloads, rss0, rss1, maps0, maps1, fds0,
          fds1, files0, files1);
  printf("soak.rss_growth_kib %ld\n", rss1 - rss0);
  printf("soak.maps_growth %d\n", maps1 - maps0);
  printf("soak.fds_growth %d\n", fds1 - fds0);
  printf("soak.files_left %d\n", files1 - files0);
  fflush(stdout);
  hm_registry_free(reg);
  rm_rf(dir);
  free(dir);
}

/* hm_live_get of existing handles, in random order, with 1,000 modules loaded. */
static void bench_lookup(void) {
  enum { NMOD = 1000 };
  int rounds = quick ? 3 : 9;
  long lookups = quick ? 50000 : 200000;
  static char names[NMOD][24];
  unsigned short *order = malloc((size_t)lookups * sizeof *order);
  double *ns = calloc((size_t)rounds, sizeof(double));
  hm_registry *reg = new_registry();
  const char *src = modpath("benchmod_v1");
  unsigned long long x = 88172645463325252ull;
  double t0, t1;

  t0 = now_ns();
  for (int i = 0; i < NMOD; i++) {
    char name[16];
    hm_live *l;
    snprintf(name, sizeof name, "m%d", i);
    snprintf(names[i], sizeof names[i], "m%d:add1", i);
    check(hm_module_load(reg, name, src, NULL), reg, "hm_module_load");
    check(hm_live_get(reg, names[i], &l), reg, "hm_live_get");
  }
  t1 = now_ns();
  fprintf(stderr, "# lookup: loaded %d modules in %.2f s\n", NMOD, (t1 - t0) / 1e9);
  for (long k = 0; k < lookups; k++) { /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    order[k] = (unsigned short)(x % NMOD);
  }
  for (int r = -1; r < rounds; r++) { /* round -1 warms up */
    uintptr_t acc = 0;
    t0 = cpu_ns();
    for (long k = 0; k < lookups; k++) {
      hm_live *l = NULL;
      if (hm_live_get(reg, names[order[k]], &l) != 0)
        hmb_die("hm_live_get(%s) failed", names[order[k]]);
      acc += (uintptr_t)l;
    }
    t1 = cpu_ns();
    sink((unsigned)acc);
    if (r >= 0)
      ns[r] = (t1 - t0) / (double)lookups;
  }
  printf("lookup.ns %.1f\n", median(ns, (size_t)rounds));
  fflush(stdout);
  hm_registry_free(reg);
  free(order);
  free(ns);
}

static void context_line(void) {
  struct utsname u;
  const char *cc =
#if defined(__clang__)
      "clang " __clang_version__;
#elif defined(__GNUC__)
      "gcc " __VERSION__;
#else
      "unknown";
#endif
  if (uname(&u) != 0)
    strcpy(u.release, "?");
  fprintf(stderr, "# machine: nproc=%ld compiler=%s build=%s kernel=%s glibc=%s hotmod=%s\n",
          sysconf(_SC_NPROCESSORS_ONLN), cc, HM_BENCH_BUILD_TYPE, u.release,
          gnu_get_libc_version(), hm_version_string());
}

/* The read side's mode, known once a live call has registered this thread: membarrier
 * (plain stores) or fenced (a sequentially consistent store per outermost call). */
static const char *read_side(void) { return hm__rdw_fenced ? "fenced" : "membarrier"; }

static void usage(void) {
  fputs("usage: hm_bench [--moddir DIR] [--quick] [--verbose]\n"
        "       hm_bench --calls-only [--only raw|live|snapshot|qsbr] [--iters N] [--moddir DIR]\n"
        "       hm_bench --reloads-only [--fast] [--iters N] [--moddir DIR]\n"
        "       hm_bench --reload-timing [--moddir DIR]\n"
        "       hm_bench --calls50 [--quick] [--moddir DIR]\n"
        "       hm_bench --owned-only owned|owned_api [--iters N] [--moddir DIR]\n"
        "       hm_bench --owned50 [--quick] [--moddir DIR]\n",
        stderr);
  exit(2);
}

int main(int argc, char **argv) {
  int calls_only = 0, reload_only = 0, reload_timing = 0, only = -1, fast = 0, calls50 = 0;
  int calls50_cpu = -1, owned50 = 0;
  const char *owned_only = NULL;
  long iters = 1000000;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--calls-only") == 0) {
      calls_only = 1;
    } else if (strcmp(argv[i], "--reloads-only") == 0) {
      reload_only = 1;
    } else if (strcmp(argv[i], "--reload-timing") == 0) {
      reload_timing = 1;
    } else if (strcmp(argv[i], "--calls50") == 0) {
      calls50 = 1;
    } else if (strcmp(argv[i], "--owned50") == 0) {
      owned50 = 1;
    } else if (strcmp(argv[i], "--owned-only") == 0 && i + 1 < argc) {
      owned_only = argv[++i];
      if (strcmp(owned_only, "owned") != 0 && strcmp(owned_only, "owned_api") != 0)
        usage();
    } else if (strcmp(argv[i], "--calls50-child") == 0 && i + 1 < argc) {
      calls50_cpu = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--fast") == 0) {
      fast = 1;
    } else if (strcmp(argv[i], "--quick") == 0) {
      quick = 1;
    } else if (strcmp(argv[i], "--verbose") == 0) {
      verbose = 1;
    } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      const char *k = argv[++i];
      for (int j = 0; j < K_ALL; j++)
        if (strcmp(k, kind_name[j]) == 0)
          only = j;
      if (only < 0)
        usage();
    } else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = strtol(argv[++i], NULL, 10);
      if (iters < 0)
        usage();
    } else if (strcmp(argv[i], "--moddir") == 0 && i + 1 < argc) {
      moddir = argv[++i];
    } else {
      usage();
    }
  }

  if (calls50_cpu >= 0)
    return calls50_child(calls50_cpu);
  if (owned50) {
    bench_owned50();
    return 0;
  }
  if (owned_only != NULL) {
    struct owned_env e;
    owned_setup(&e);
    sink(strcmp(owned_only, "owned") == 0 ? hm_bench_loop_owned(g_owned, iters)
                                          : hm_bench_loop_owned_api(iters));
    owned_teardown(&e);
    return 0;
  }
  if (calls50) {
    bench_calls50();
    return 0;
  }
  if (calls_only) {
    struct call_env e;
    call_setup(&e);
    for (int k = 0; k < K_ALL; k++)
      if ((only < 0 && k < K_N) || only == k)
        (void)run_loop((enum kind)k, iters);
    fprintf(stderr, "# calls-only: %ld calls of %s, read side %s\n", iters,
            only < 0 ? "raw, live and snapshot" : kind_name[only], read_side());
    call_teardown(&e);
    return 0;
  }

  {
    const unsigned char *v[2], *fv[2];
    size_t vlen[2], fvlen[2];
    unsigned char *b0, *b1, *f0, *f1;
    context_line();
    b0 = hmb_slurp(modpath("benchmod_v1"), &vlen[0]);
    b1 = hmb_slurp(modpath("benchmod_v2"), &vlen[1]);
    f0 = hmb_slurp(modpath("benchmod_fast_v1"), &fvlen[0]);
    f1 = hmb_slurp(modpath("benchmod_fast_v2"), &fvlen[1]);
    v[0] = b0;
    v[1] = b1;
    fv[0] = f0;
    fv[1] = f1;
    if (reload_only || reload_timing) {
      if (reload_only) {
        reloads_only(fast ? fv : v, fast ? fvlen : vlen, iters);
      } else {
        bench_reload(v, vlen, fv, fvlen);
        bench_group(v, vlen);
        bench_poll_stall(v, vlen);
        bench_probe(v, vlen);
      }
      free(b0);
      free(b1);
      free(f0);
      free(f1);
      return 0;
    }
    bench_calls();
    fprintf(stderr, "# read side: %s\n", read_side());
    bench_calls50();
    bench_owned50();
    bench_reload(v, vlen, fv, fvlen);
    bench_group(v, vlen);
    bench_poll_stall(v, vlen);
    bench_probe(v, vlen);
    bench_soak(v, vlen);
    bench_lookup();
    free(b0);
    free(b1);
    free(f0);
    free(f1);
  }
  return 0;
}
