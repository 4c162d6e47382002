/* Build rules: the time from saving a module's one C source to the moment a live handle
 * returns the code just saved, with the module's build rule compiling it with `cc`
 * (hm_module_set_build) and the watcher on its own thread. Beside it, the compiler alone,
 * run the same way (posix_spawn, its own process group, output on a pipe, in the sources'
 * directory), alternating with the edits so both meet the same machine load; the
 * difference of the medians is hotmod's own share.
 *
 * Prints build.edit_to_live_ms_p50, build.edit_to_live_ms_p99, build.compile_ms_p50 and
 * build.overhead_ms_p50 on stdout, with build.overhead_paired_ms_p50 (the median of each
 * edit's time minus the compiler's run just before it: less noisy than a difference of
 * medians) and build.start_ms_p50 (save to HM_EVENT_BUILD_STARTED: noticing the save and
 * starting the command); details on stderr. HM_BENCH_BUILD_EDITS edits (default
 * 40). Nothing fails for being slow; exit status 1 only when it cannot run. */
#include "benchutil.h"
#include "hotmod.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef HM_BENCH_CC
#define HM_BENCH_CC "cc"
#endif

extern char **environ;

typedef int (*ifn)(void);

static int ended; /* builds that ended (atomic) */
static long long started_ns; /* when the last HM_EVENT_BUILD_STARTED came (atomic) */
static int failed;
/* The main thread sleeps until a version loads (it must not spin: on a 2-vCPU machine a
 * spinning waiter takes CPU time from the compiler it is timing). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t loaded = PTHREAD_COND_INITIALIZER;

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  (void)mod;
  (void)version;
  (void)ud;
  if (ev == HM_EVENT_BUILD_FAILED) {
    fprintf(stderr, "bench_build: build failed (%s): %s\n", hm_strerror(err),
            hm_event_detail());
    __atomic_add_fetch(&failed, 1, __ATOMIC_SEQ_CST);
  }
  if (ev == HM_EVENT_BUILD_STARTED)
    __atomic_store_n(&started_ns, hmb_now_ns(), __ATOMIC_SEQ_CST);
  if (ev == HM_EVENT_BUILD_SUCCEEDED || ev == HM_EVENT_BUILD_FAILED)
    __atomic_add_fetch(&ended, 1, __ATOMIC_SEQ_CST);
  if (ev == HM_EVENT_LOADED || ev == HM_EVENT_BUILD_FAILED) {
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&loaded);
    pthread_mutex_unlock(&mu);
  }
}

static int write_source(const char *path, int version) {
  char text[128];
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), n;
  if (fd < 0)
    return -1;
  n = snprintf(text, sizeof text, "int version(void) { return %d; }\n", version);
  if (write(fd, text, (size_t)n) != n) {
    close(fd);
    return -1;
  }
  return close(fd);
}

/* The compiler as the build runner starts it; returns its exit status or -1. */
static int run_cc(const char *dir, char *const argv[]) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  char buf[4096];
  int p[2], st = -1;
  pid_t pid;
  if (pipe2(p, O_CLOEXEC) != 0)
    return -1;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addchdir_np(&fa, dir);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  if (posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ) != 0)
    pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(p[1]);
  while (pid > 0 && read(p[0], buf, sizeof buf) > 0)
    ;
  close(p[0]);
  if (pid > 0 && waitpid(pid, &st, 0) != pid)
    st = -1;
  return st;
}

int main(void) {
  const char *env = getenv("HM_BENCH_BUILD_EDITS");
  int n = env != NULL ? atoi(env) : 40, i, ok = 1;
  char dir[] = "/tmp/hm_bench_build.XXXXXX", src[256], out[256], scratch[256], source[300];
  hm_registry_options ro = HM_REGISTRY_OPTIONS_INIT;
  hm_build_options bo = HM_BUILD_OPTIONS_INIT;
  hm_registry *reg = NULL;
  hm_module *mod = NULL;
  hm_live *live = NULL;
  double *edit_ms, *cc_ms, *start_ms, *pair_ms;
  if (n < 5)
    n = 5;
  edit_ms = calloc((size_t)n, sizeof *edit_ms);
  cc_ms = calloc((size_t)n, sizeof *cc_ms);
  start_ms = calloc((size_t)n, sizeof *start_ms);
  pair_ms = calloc((size_t)n, sizeof *pair_ms);
  if (edit_ms == NULL || cc_ms == NULL || start_ms == NULL || pair_ms == NULL ||
      mkdtemp(dir) == NULL)
    return 1;
  snprintf(src, sizeof src, "%s/src", dir);
  snprintf(out, sizeof out, "%s/m.so", dir);
  snprintf(scratch, sizeof scratch, "%s/scratch.so", dir);
  snprintf(source, sizeof source, "%s/m.c", src);
  {
    char *cc_out[] = {HM_BENCH_CC, "-shared", "-fPIC", "-o", out, "m.c", NULL};
    char *cc_scratch[] = {HM_BENCH_CC, "-shared", "-fPIC", "-o", scratch, "m.c", NULL};
    const char *sources[] = {src, NULL};
    if (mkdir(src, 0755) != 0 || write_source(source, 0) != 0 || run_cc(src, cc_out) != 0) {
      fprintf(stderr, "bench_build: cannot build the first version with %s\n", HM_BENCH_CC);
      return 1;
    }
    ro.flags = HM_FLAG_QUIET;
    ro.on_event = on_event;
    bo.argv = (const char *const *)cc_out;
    bo.sources = sources;
    bo.cwd = src;
    if (hm_registry_new(&reg, &ro) != 0 || hm_module_load(reg, "m", out, &mod) != 0 ||
        hm_live_get(reg, "m:version", &live) != 0 || hm_module_set_build(mod, &bo) != 0 ||
        hm_watch_start(reg) != 0) {
      fprintf(stderr, "bench_build: setup failed: %s\n", hm_errmsg());
      return 1;
    }
    while (hm_module_watch_method(mod) == 0)
      hmb_sleep_ms(1);
    for (i = 0; i < n && ok; i++) {
      long long t0, t1, deadline;
      int want = i + 1, before = __atomic_load_n(&ended, __ATOMIC_SEQ_CST);
      /* The compiler alone, same command, same directory, other output. */
      t0 = hmb_now_ns();
      if (run_cc(src, cc_scratch) != 0) {
        fprintf(stderr, "bench_build: %s failed\n", HM_BENCH_CC);
        ok = 0;
        break;
      }
      cc_ms[i] = (double)(hmb_now_ns() - t0) / 1e6;
      /* Save, and wait for the live handle to return what was saved. */
      t0 = hmb_now_ns();
      if (write_source(source, want) != 0) {
        ok = 0;
        break;
      }
      deadline = t0 + 30000000000ll;
      pthread_mutex_lock(&mu);
      for (;;) {
        ifn f = (ifn)hm_live_enter(live);
        int v = f != NULL ? f() : -1;
        struct timespec ts;
        hm_live_leave(live);
        t1 = hmb_now_ns();
        if (v == want)
          break;
        if (t1 > deadline || __atomic_load_n(&failed, __ATOMIC_SEQ_CST) != 0) {
          fprintf(stderr, "bench_build: edit %d never went live\n", want);
          ok = 0;
          break;
        }
        /* Woken by the LOADED event; the timeout only guards against a wake-up that came
         * between the check and the wait. */
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20000000;
        if (ts.tv_nsec >= 1000000000) {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&loaded, &mu, &ts);
      }
      pthread_mutex_unlock(&mu);
      edit_ms[i] = (double)(t1 - t0) / 1e6;
      start_ms[i] = (double)(__atomic_load_n(&started_ns, __ATOMIC_SEQ_CST) - t0) / 1e6;
      pair_ms[i] = edit_ms[i] - cc_ms[i];
      /* The build's end event may follow the reload by a moment: the next edit waits. */
      while (ok && __atomic_load_n(&ended, __ATOMIC_SEQ_CST) == before)
        hmb_sleep_ms(1);
    }
  }
  hm_registry_free(reg);
  {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
      fprintf(stderr, "bench_build: could not remove %s\n", dir);
  }
  if (!ok)
    return 1;
  {
    double e50 = hmb_percentile(edit_ms, (size_t)n, 50);
    double e99 = hmb_percentile(edit_ms, (size_t)n, 99);
    double c50 = hmb_percentile(cc_ms, (size_t)n, 50);
    printf("build.edit_to_live_ms_p50 %.2f\n", e50);
    printf("build.edit_to_live_ms_p99 %.2f\n", e99);
    printf("build.compile_ms_p50 %.2f\n", c50);
    printf("build.overhead_ms_p50 %.2f\n", e50 - c50);
    printf("build.overhead_paired_ms_p50 %.2f\n", hmb_percentile(pair_ms, (size_t)n, 50));
    printf("build.start_ms_p50 %.2f\n", hmb_percentile(start_ms, (size_t)n, 50));
    fprintf(stderr, "# build: %d edits of a one-file module built by %s, alternating with the "
                    "compiler alone\n", n, HM_BENCH_CC);
  }
  free(edit_ms);
  free(cc_ms);
  free(start_ms);
  free(pair_ms);
  return 0;
}
