/* Watcher latency: the time from the moment a new build of a watched module is
 * complete (its rename returned, or its writer's close returned) to the moment a live handle
 * returns the new version, with the watcher on its own thread in immediate mode.
 *
 * Prints exactly two lines on stdout, `watch.ms_p50 <ms>` and `watch.ms_p99 <ms>`, over
 * HM_BENCH_WATCH_RELOADS reloads (default 400, at least 200), half of them a file renamed
 * into place and half a file rewritten in place. Details go to stderr. The goal is
 * p50 <= 1 ms and p99 <= 5 ms; nothing here fails for being slow. Exit status 1 only when
 * the benchmark cannot run (setup error, or a reload that never shows up). */
#include "benchutil.h"
#include "hotmod.h"

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef HM_BENCH_MODDIR
#error "HM_BENCH_MODDIR must name the directory holding benchmod_v1.so and benchmod_v2.so"
#endif

typedef int (*ifn)(void);

/* A reload that takes longer than this is not late, it is lost. */
#define LOST_NS 5000000000ll


static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  long n;
  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 ||
      fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)n)) == NULL) {
    if (f != NULL)
      fclose(f);
    return NULL;
  }
  if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* Write buf to path (created or truncated). *t_closed, when not NULL, is set just before
 * the close that completes the file. */
static int write_all(const char *path, const unsigned char *buf, size_t len,
                     long long *t_closed) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  size_t put = 0;
  if (fd < 0)
    return -1;
  while (put < len) {
    ssize_t n = write(fd, buf + put, len - put);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      close(fd);
      return -1;
    }
    put += (size_t)n;
  }
  if (t_closed != NULL)
    *t_closed = hmb_now_ns();
  return close(fd);
}

static int live_version(hm_live *l) {
  ifn fn = (ifn)hm_live_enter(l);
  int v = fn != NULL ? fn() : -1;
  hm_live_leave(l);
  return v;
}

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples. */
static double pct_ms(const long long *s, int n, double p) {
  int k = (int)(p / 100.0 * n + 0.999999) - 1;
  if (k < 0)
    k = 0;
  if (k >= n)
    k = n - 1;
  return (double)s[k] / 1e6;
}

/* Put a build at `path`: written beside it and renamed into place, or rewritten in place.
 * Returns the time at which the file became complete, or -1. The clock is read just before
 * the rename or the close, not after: the watcher's thread, woken inside that system call,
 * may run before this one returns, and a clock read afterwards would miss that work. */
static long long publish(const char *path, const char *tmp, const unsigned char *buf,
                         size_t len, int by_rename) {
  long long t0 = -1;
  if (by_rename) {
    if (write_all(tmp, buf, len, NULL) != 0)
      return -1;
    t0 = hmb_now_ns();
    if (rename(tmp, path) != 0)
      return -1;
  } else if (write_all(path, buf, len, &t0) != 0) {
    return -1;
  }
  return t0;
}

int main(void) {
  const char *root = getenv("TMPDIR");
  const char *env_n = getenv("HM_BENCH_WATCH_RELOADS");
  int n = env_n != NULL ? atoi(env_n) : 400, i, lost = 0, rc;
  char dir[4096], path[4200], tmp[4300], src[2][4200];
  unsigned char *bytes[2];
  size_t lens[2];
  long long *lat;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  hm_live *live = NULL;

  if (n < 200)
    n = 200;
  snprintf(src[0], sizeof src[0], "%s/benchmod_v1.so", HM_BENCH_MODDIR);
  snprintf(src[1], sizeof src[1], "%s/benchmod_v2.so", HM_BENCH_MODDIR);
  bytes[0] = slurp(src[0], &lens[0]);
  bytes[1] = slurp(src[1], &lens[1]);
  lat = calloc((size_t)n, sizeof *lat);
  if (bytes[0] == NULL || bytes[1] == NULL || lat == NULL) {
    fprintf(stderr, "bench_watch: cannot read %s and %s\n", src[0], src[1]);
    return 1;
  }
  snprintf(dir, sizeof dir, "%s/hm_bench_watch.XXXXXX", root && *root ? root : "/tmp");
  if (mkdtemp(dir) == NULL) {
    perror("bench_watch: mkdtemp");
    return 1;
  }
  snprintf(path, sizeof path, "%s/benchmod.so", dir);
  snprintf(tmp, sizeof tmp, "%s/benchmod.so.tmp", dir);

  o.flags = HM_FLAG_QUIET;
  if ((rc = hm_registry_new(&reg, &o)) != 0 ||
      publish(path, tmp, bytes[0], lens[0], 1) < 0 ||
      (rc = hm_module_load(reg, "benchmod", path, NULL)) != 0 ||
      (rc = hm_live_get(reg, "benchmod:version", &live)) != 0 ||
      (rc = hm_watch_start(reg)) != 0) {
    fprintf(stderr, "bench_watch: setup failed: %s (%s)\n", hm_strerror(rc),
            reg ? hm_registry_errmsg(reg) : "");
    return 1;
  }

  /* Warm up (and make sure the watch is in place) with reloads that do not count. */
  for (i = -10; i < n; i++) {
    int want = (i & 1) ? 1 : 2; /* alternate builds: every write is a change */
    long long t0, t1;
    t0 = publish(path, tmp, bytes[want - 1], lens[want - 1], i & 2);
    if (t0 < 0) {
      perror("bench_watch: writing the module");
      return 1;
    }
    /* Poll the live handle as a host's busy loop would. The yield matters on a machine
     * with few cores: without it this loop keeps the core that the woken watcher thread
     * wants, and the figure measures the scheduler's time slice instead of the watcher. */
    while (live_version(live) != want && hmb_now_ns() - t0 < LOST_NS)
      sched_yield();
    t1 = hmb_now_ns();
    if (live_version(live) != want) {
      lost++;
      fprintf(stderr, "bench_watch: reload %d never showed up (%s)\n", i,
              hm_registry_errmsg(reg));
      /* Resynchronise: the next write makes its own change. */
    }
    if (i >= 0)
      lat[i] = t1 - t0;
    /* Let the retired version be unloaded and the watcher go idle, as between builds. */
    hmb_sleep_ms(i < 0 ? 60 : 3);
  }

  hm_watch_stop(reg);
  hm_registry_free(reg);
  unlink(path);
  unlink(tmp);
  rmdir(dir);

  qsort(lat, (size_t)n, sizeof *lat, cmp_ll);
  fprintf(stderr, "# bench_watch: %d reloads (half renamed, half rewritten in place); "
          "min %.3f ms, max %.3f ms, lost %d\n", n, (double)lat[0] / 1e6,
          (double)lat[n - 1] / 1e6, lost);
  printf("watch.ms_p50 %.3f\n", pct_ms(lat, n, 50));
  printf("watch.ms_p99 %.3f\n", pct_ms(lat, n, 99));
  free(lat);
  free(bytes[0]);
  free(bytes[1]);
  return lost > 0 ? 1 : 0;
}
