/*
 * hotmod demo: the three reload behaviours in C.
 *
 * A "build" writes mathmod.so (version 1 squares its argument). The host takes a live handle
 * and a stable snapshot of mathmod:my_function, then the build writes version 2 (square
 * root) and the host reloads. The live handle follows the module; the snapshot keeps the
 * code it pinned; the module's plain global counter starts afresh in version 2.
 *
 * Then the file watcher takes over: each new build is live a fraction of a millisecond after
 * it is written, with no reload call, and a build written slowly in two halves is only taken
 * once it is complete.
 */
#include "hotmod.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef double (*math_fn)(double);
typedef int (*count_fn)(void);

/* Stand-in for a build: write the new .so beside the target, then rename it into place. */
static int install(const char *from, const char *to) {
  char tmp[4096], buf[65536];
  FILE *in = fopen(from, "rb"), *out;
  size_t n;
  if (in == NULL)
    return -1;
  snprintf(tmp, sizeof tmp, "%s.tmp", to);
  out = fopen(tmp, "wb");
  if (out == NULL) {
    fclose(in);
    return -1;
  }
  while ((n = fread(buf, 1, sizeof buf, in)) > 0)
    fwrite(buf, 1, n, out);
  fclose(in);
  if (fclose(out) != 0)
    return -1;
  return rename(tmp, to);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Wait (up to 10 s) for the module to reach `version`; returns the ms it took, or -1. */
static double wait_version(hm_module *mod, unsigned version, double since) {
  struct timespec pause = {0, 20000};
  while (hm_module_version(mod) < version) {
    if (now_ms() - since > 10000)
      return -1;
    nanosleep(&pause, NULL);
  }
  return now_ms() - since;
}

/* What the demo shows is also checked: a difference is printed and fails the run. */
static int mismatches;
static void expect(int ok, const char *what) {
  if (!ok) {
    printf("  ** not as expected: %s\n", what);
    mismatches++;
  }
}

/* Events while the watcher runs: one indented line each. The last version unloaded lets the
 * host wait for the events of a reload before it prints what the reload did. */
static int show_events;
static unsigned last_unloaded;
static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  static const char *names[] = {"?", "loaded", "rejected", "retired", "unloaded", "leaked",
                                "changed"};
  (void)ud;
  if (!__atomic_load_n(&show_events, __ATOMIC_ACQUIRE))
    return;
  printf("      [event] %s v%u %s%s%s\n", hm_module_name(mod), version,
         ev >= 1 && ev <= 6 ? names[ev] : "?", err ? ": " : "", err ? hm_strerror(err) : "");
  fflush(stdout);
  if (ev == HM_EVENT_UNLOADED)
    __atomic_store_n(&last_unloaded, version, __ATOMIC_RELEASE);
}

/* Wait (up to 10 s) until `version` has been unloaded, so its events are printed; 0 when it
 * was not. */
static int wait_unloaded(unsigned version) {
  struct timespec pause = {0, 100000};
  double since = now_ms();
  while (__atomic_load_n(&last_unloaded, __ATOMIC_ACQUIRE) < version) {
    if (now_ms() - since > 10000)
      return 0;
    nanosleep(&pause, NULL);
  }
  return 1;
}

/* Write `from` to `to` in place in two halves with a pause between, like a slow linker. */
static int slow_write(const char *from, const char *to) {
  char buf[1 << 20];
  FILE *in = fopen(from, "rb"), *out;
  size_t n;
  if (in == NULL)
    return -1;
  n = fread(buf, 1, sizeof buf, in);
  fclose(in);
  out = fopen(to, "wb");
  if (out == NULL)
    return -1;
  fwrite(buf, 1, n / 2, out);
  fflush(out);
  usleep(300 * 1000);
  fwrite(buf + n / 2, 1, n - n / 2, out);
  return fclose(out);
}

typedef int (*record_fn)(int);
static int fail(const char *what, int rc);

/* State kept across versions and migrated to a new layout, a rollback, a typed handle. */
static int state_demo(hm_registry *reg) {
  hm_module *tally;
  hm_live *record, *largest;
  int rc, i;
  printf("a module with a descriptor keeps its state (tally.c: count, then count + largest)\n");
  if ((rc = hm_module_load(reg, "tally", DEMO_MODDIR "/tally_v1.so", &tally)) != 0 ||
      (rc = hm_live_get_typed(reg, "tally:record", "int(int)", &record)) != 0 ||
      (rc = hm_live_get(reg, "tally:largest", &largest)) != 0)
    return fail("tally", rc);
  for (i = 1; i <= 3; i++)
    HM_LIVE_CALL(record, record_fn, i * 10);
  i = HM_LIVE_CALL(largest, count_fn);
  printf("  version 1: 3 calls recorded, largest() = %d (layout 1 does not keep it)\n", i);
  expect(i == -1, "layout 1 keeps no largest");
  if ((rc = hm_module_reload_from(tally, DEMO_MODDIR "/tally_v2.so")) != 0)
    return fail("tally reload", rc);
  i = HM_LIVE_CALL(record, record_fn, 7);
  rc = HM_LIVE_CALL(largest, count_fn);
  printf("  version 2 migrated the tally: record(7) -> count %d, largest %d\n", i, rc);
  expect(i == 4 && rc == 7, "the migrated tally counts on");
  if ((rc = hm_module_rollback(tally)) != 0)
    return fail("tally rollback", rc);
  i = HM_LIVE_CALL(record, record_fn, 1);
  printf("  hm_module_rollback: version %u is build 1 again, record(1) -> count %d\n",
         hm_module_version(tally), i);
  expect(i == 5, "the rollback keeps the tally");
  rc = hm_module_reload_from(tally, DEMO_MODDIR "/mathmod_v1.so");
  i = HM_LIVE_CALL(record, record_fn, 1);
  printf("  a build without record() is refused: %s; the tally serves on (count %d)\n\n",
         hm_err_name(rc), i);
  expect(rc == HM_ENOSYM && i == 6, "a build without record() is refused");
  return 0;
}

static int fail(const char *what, int rc) {
  fprintf(stderr, "demo: %s: %s (%s)\n", what, hm_strerror(rc), hm_errmsg());
  return 1;
}

int main(void) {
  char dir[] = "/tmp/hotmod-demo-XXXXXX", target[256];
  hm_registry_options opts = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  hm_module *mod;
  hm_live *live, *count;
  hm_snapshot *snap;
  int rc;

  if (mkdtemp(dir) == NULL)
    return perror("mkdtemp"), 1;
  snprintf(target, sizeof target, "%s/mathmod.so", dir);
  opts.flags = HM_FLAG_QUIET;
  opts.on_event = on_event;
  if ((rc = hm_registry_new(&reg, &opts)) != 0)
    return fprintf(stderr, "demo: %s\n", hm_strerror(rc)), 1;

  printf("hotmod %s demo\n\n", hm_version_string());
  printf("build writes version 1 (my_function(x) = x*x)\n");
  install(DEMO_MODDIR "/mathmod_v1.so", target);
  if ((rc = hm_module_load(reg, "mathmod", target, &mod)) != 0)
    return fail("load", rc);
  if ((rc = hm_live_get(reg, "mathmod:my_function", &live)) != 0 ||
      (rc = hm_live_get(reg, "mathmod:call_count", &count)) != 0 ||
      (rc = hm_snapshot_acquire(reg, "mathmod:my_function", &snap)) != 0)
    return fail("handles", rc);
  expect(HM_LIVE_CALL(live, math_fn, 2.0) == 4.0, "version 1 squares");
  printf("  live     my_function(2) = %g\n", HM_LIVE_CALL(live, math_fn, 2.0));
  printf("  snapshot my_function(2) = %g   (pins version %u)\n",
         ((math_fn)hm_snapshot_fn(snap))(2.0), hm_snapshot_version(snap));
  printf("  module-level call counter = %d\n\n", HM_LIVE_CALL(count, count_fn));

  printf("build writes version 2 (my_function(x) = sqrt(x)); host reloads\n");
  install(DEMO_MODDIR "/mathmod_v2.so", target);
  if ((rc = hm_module_reload(mod)) != 0)
    return fail("reload", rc);
  printf("  module version is now %u\n", hm_module_version(mod));
  printf("  (1) live     my_function(2) = %.6f   -> follows the reload\n",
         HM_LIVE_CALL(live, math_fn, 2.0));
  printf("  (2) snapshot my_function(2) = %g          -> still version %u until released\n",
         ((math_fn)hm_snapshot_fn(snap))(2.0), hm_snapshot_version(snap));
  printf("  (3) module-level call counter = %d         -> version 2 started with fresh globals\n",
         HM_LIVE_CALL(count, count_fn));
  expect(HM_LIVE_CALL(count, count_fn) == 1, "version 2 starts with fresh globals");
  expect(HM_LIVE_CALL(live, math_fn, 4.0) == 2.0, "the live handle follows the reload");
  expect(((math_fn)hm_snapshot_fn(snap))(3.0) == 9.0, "the snapshot keeps version 1");
  hm_snapshot_release(snap);
  if ((rc = hm_snapshot_acquire(reg, "mathmod:my_function", &snap)) != 0)
    return fail("snapshot", rc);
  printf("  a snapshot taken now: my_function(2) = %.6f (version %u)\n\n",
         ((math_fn)hm_snapshot_fn(snap))(2.0), hm_snapshot_version(snap));
  hm_snapshot_release(snap);

  if ((rc = state_demo(reg)) != 0)
    return rc;

  printf("build writes a truncated file; the reload is refused and version 2 serves on\n");
  {
    FILE *f = fopen(target, "r+b");
    if (f != NULL) {
      if (ftruncate(fileno(f), 4096) != 0)
        perror("ftruncate");
      fclose(f);
    }
  }
  rc = hm_module_reload(mod);
  printf("  reload: %s: %s\n", hm_err_name(rc), hm_errmsg());
  expect(rc == HM_EBADELF && HM_LIVE_CALL(live, math_fn, 9.0) == 3.0,
         "the truncated build is refused and version 2 serves on");
  printf("  live my_function(9) = %g (version %u)\n", HM_LIVE_CALL(live, math_fn, 9.0),
         hm_module_version(mod));


  printf("\nthe watcher takes over (hm_watch_start): builds are picked up with no reload call\n");
  if ((rc = hm_watch_start(reg)) != 0)
    return fail("watch", rc);
  __atomic_store_n(&show_events, 1, __ATOMIC_RELEASE);
  {
    static const char *builds[] = {"mathmod_v1", "mathmod_v2", "mathmod_v1"};
    int i;
    for (i = 0; i < 3; i++) {
      char from[512];
      unsigned next = hm_module_version(mod) + 1;
      double t0 = now_ms(), took;
      snprintf(from, sizeof from, "%s/%s.so", DEMO_MODDIR, builds[i]);
      printf("  build writes %s.so (rename into place)\n", builds[i]);
      install(from, target);
      took = wait_version(mod, next, t0);
      if (took < 0)
        return fail("watcher did not reload", HM_EAGAIN);
      expect(wait_unloaded(next - 1), "the old version is unloaded, its events printed");
      expect(HM_LIVE_CALL(live, math_fn, 2.0) == (i == 1 ? sqrt(2.0) : 4.0),
             "the watcher's reload runs the new build");
      printf("    live my_function(2) = %g, version %u, %.2f ms after the build began writing\n",
             HM_LIVE_CALL(live, math_fn, 2.0), hm_module_version(mod), took);
    }
    printf("  build writes mathmod_v2.so slowly: half, a 300 ms pause, the rest\n");
    {
      unsigned before = hm_module_version(mod);
      double t0 = now_ms(), took;
      slow_write(DEMO_MODDIR "/mathmod_v2.so", target);
      took = wait_version(mod, before + 1, t0);
      if (took < 0)
        return fail("watcher did not reload", HM_EAGAIN);
      expect(wait_unloaded(before), "the old version is unloaded, its events printed");
      expect(HM_LIVE_CALL(live, math_fn, 2.0) == sqrt(2.0) && hm_module_version(mod) == before + 1,
             "the slowly written build is loaded once, complete");
      printf("    live my_function(2) = %.6f, version %u: the half-written file was never "
             "loaded\n",
             HM_LIVE_CALL(live, math_fn, 2.0), hm_module_version(mod));
    }
  }
  hm_watch_stop(reg);
  __atomic_store_n(&show_events, 0, __ATOMIC_RELEASE);

  hm_registry_free(reg);
  unlink(target);
  rmdir(dir);
  if (mismatches)
    printf("\n%d result(s) were not as expected\n", mismatches);
  return mismatches != 0;
}
