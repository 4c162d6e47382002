/*
 * hm_bench_http: what reloads cost the traffic of a server whose request handler is a hotmod
 * module (examples/http).
 *
 *   hm_bench_http SERVER HANDLER_V1 HANDLER_V2 HANDLER_V3 [WRK]
 *
 * Each run starts the example's server (SERVER, in immediate or queued mode, -Q) on a copy
 * of HANDLER_V1 in a directory of its own and drives it with wrk (one thread, 8 keep-alive
 * connections, a fixed time, loopback). A reload run also puts a prebuilt build in place 10
 * times a second from a thread of this program, alternating V2 and V3, the way a deploy does
 * (written beside the module's file, renamed over it): no process is started per reload, and
 * nothing but wrk's requests reaches the server while it is measured. Base runs and reload
 * runs alternate (base, reload, then reload, base, ...), and the figures are the ratios of
 * their medians:
 *
 *   http.<mode>_reload_rps_vs_base   requests per second with reloads / without
 *   http.<mode>_reload_p99_vs_base   wrk's 99th percentile latency, with reloads / without
 *
 * plus the medians themselves and the reloads the server made (from its last line). The
 * figures for immediate mode are also printed as http.reload_rps_vs_base and
 * http.reload_p99_vs_base. HM_BENCH_HTTP_SECONDS sets each run's length (default 3),
 * HM_BENCH_HTTP_PAIRS the number of base/reload pairs per mode (default 3).
 */
#include "benchutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- The reloading thread --------------------------------------------------------------- */

struct reloader {
  const unsigned char *build[2];
  size_t len[2];
  const char *dest;
  int stop;
  long puts;
};

static void *reload_loop(void *arg) {
  struct reloader *r = arg;
  struct timespec tick = {0, 100 * 1000 * 1000}; /* 10 a second */
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
    nanosleep(&tick, NULL);
    if (__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
      break;
    hmb_put(r->build[r->puts % 2], r->len[r->puts % 2], r->dest);
    r->puts++;
  }
  return NULL;
}

/* ---- One run ------------------------------------------------------------------------------ */

struct run {
  double rps, p99_ms;
  long reloads; /* the server's own count */
};

/* Start `argv`, its stdout to a pipe; returns the pid and the read end. */
static pid_t start(char *const argv[], int *out) {
  posix_spawn_file_actions_t fa;
  int fds[2];
  pid_t pid;
  if (pipe(fds) != 0)
    hmb_die("pipe: %s", strerror(errno));
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0)
    hmb_die("cannot start %s", argv[0]);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  *out = fds[0];
  return pid;
}

/* wrk's latency in ms: "1.23ms", "456.78us", "1.02s". */
static double wrk_ms(const char *s) {
  char unit[8] = "";
  double v = 0;
  if (sscanf(s, "%lf%7s", &v, unit) < 1)
    return -1;
  if (strcmp(unit, "us") == 0)
    return v / 1000;
  if (strcmp(unit, "s") == 0)
    return v * 1000;
  return v;
}

static void one_run(const char *server, const char *wrk, const char *module, int queued,
                    int seconds, struct reloader *rl, struct run *out) {
  char *sargv[] = {(char *)server, "-q", "-m", (char *)module, queued ? "-Q" : NULL, NULL};
  char line[1024], url[64], dur[16];
  FILE *sf, *wf;
  int sfd, wfd, port = 0, st;
  pid_t spid, wpid;
  pthread_t th;

  memset(out, 0, sizeof *out);
  out->rps = out->p99_ms = -1;
  spid = start(sargv, &sfd);
  sf = fdopen(sfd, "r");
  while (sf != NULL && fgets(line, sizeof line, sf) != NULL)
    if (sscanf(line, "http_server: serving http://127.0.0.1:%d/", &port) == 1)
      break;
  if (port == 0)
    hmb_die("the server did not start");
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
  snprintf(dur, sizeof dur, "%ds", seconds);
  {
    char *wargv[] = {(char *)wrk, "-t1", "-c8", "-d", dur, "--latency", url, NULL};
    if (rl != NULL) {
      rl->stop = 0;
      rl->puts = 0;
      if (pthread_create(&th, NULL, reload_loop, rl) != 0)
        hmb_die("pthread_create");
    }
    wpid = start(wargv, &wfd);
    wf = fdopen(wfd, "r");
    while (wf != NULL && fgets(line, sizeof line, wf) != NULL) {
      char v[32];
      if (sscanf(line, "Requests/sec: %lf", &out->rps) == 1)
        continue;
      if (sscanf(line, " 99%% %31s", v) == 1)
        out->p99_ms = wrk_ms(v);
    }
    if (wf != NULL)
      fclose(wf);
    waitpid(wpid, &st, 0);
    if (rl != NULL) {
      __atomic_store_n(&rl->stop, 1, __ATOMIC_RELEASE);
      pthread_join(th, NULL);
    }
  }
  kill(spid, SIGTERM);
  while (sf != NULL && fgets(line, sizeof line, sf) != NULL)
    sscanf(line, "http_server: stopped after %*u requests; handler at module version "
                 "%*u (%ld reload",
           &out->reloads);
  if (sf != NULL)
    fclose(sf);
  waitpid(spid, &st, 0);
  if (out->rps < 0 || out->p99_ms < 0)
    hmb_die("no figures from %s", wrk);
}

int main(int argc, char **argv) {
  const char *server, *wrk = argc > 5 ? argv[5] : "wrk", *env;
  const unsigned char *v1;
  size_t v1len;
  struct reloader rl;
  char dir[] = "/tmp/hm_bench_http.XXXXXX", module[256];
  int seconds = 3, pairs = 3;

  if (argc < 5) {
    fprintf(stderr, "usage: hm_bench_http SERVER HANDLER_V1 HANDLER_V2 HANDLER_V3 [WRK]\n");
    return 2;
  }
  server = argv[1];
  if ((env = getenv("HM_BENCH_HTTP_SECONDS")) != NULL && atoi(env) > 0)
    seconds = atoi(env);
  if ((env = getenv("HM_BENCH_HTTP_PAIRS")) != NULL && atoi(env) > 0)
    pairs = atoi(env);
  v1 = hmb_slurp(argv[2], &v1len);
  rl.build[0] = hmb_slurp(argv[3], &rl.len[0]);
  rl.build[1] = hmb_slurp(argv[4], &rl.len[1]);
  if (mkdtemp(dir) == NULL)
    hmb_die("mkdtemp: %s", strerror(errno));
  snprintf(module, sizeof module, "%s/handler.so", dir);
  rl.dest = module;
  signal(SIGPIPE, SIG_IGN);

  for (int queued = 0; queued < 2; queued++) {
    const char *mode = queued ? "queued" : "immediate";
    double base_rps[16], base_p99[16], rel_rps[16], rel_p99[16], start_s = now_s();
    long reloads = 0, expected = 0;
    if (pairs > 16)
      pairs = 16;
    for (int p = 0; p < pairs; p++) {
      for (int k = 0; k < 2; k++) {
        int reloading = (p % 2) ? k == 0 : k == 1; /* base, reload; then reload, base */
        struct run r;
        hmb_put(v1, v1len, module);
        one_run(server, wrk, module, queued, seconds, reloading ? &rl : NULL, &r);
        if (reloading) {
          rel_rps[p] = r.rps;
          rel_p99[p] = r.p99_ms;
          reloads += r.reloads;
          expected += rl.puts;
        } else {
          base_rps[p] = r.rps;
          base_p99[p] = r.p99_ms;
        }
        fprintf(stderr, "# http %s %s: %.0f requests/s, p99 %.3f ms\n", mode,
                reloading ? "reloading" : "base", r.rps, r.p99_ms);
        if (reloading)
          fprintf(stderr, "#   %ld builds put in place, %ld reloads\n", rl.puts, r.reloads);
      }
    }
    {
      double brps = median(base_rps, pairs), bp99 = median(base_p99, pairs);
      double rrps = median(rel_rps, pairs), rp99 = median(rel_p99, pairs);
      printf("http.%s_base_rps %.0f\n", mode, brps);
      printf("http.%s_reload_rps %.0f\n", mode, rrps);
      printf("http.%s_base_p99_ms %.3f\n", mode, bp99);
      printf("http.%s_reload_p99_ms %.3f\n", mode, rp99);
      printf("http.%s_reload_rps_vs_base %.3f\n", mode, rrps / brps);
      printf("http.%s_reload_p99_vs_base %.3f\n", mode, rp99 / bp99);
      printf("http.%s_reloads %ld\n", mode, reloads);
      if (!queued) {
        printf("http.reload_rps_vs_base %.3f\n", rrps / brps);
        printf("http.reload_p99_vs_base %.3f\n", rp99 / bp99);
      }
      fprintf(stderr, "# http %s: %d pairs of %d s runs in %.0f s; %ld of %ld builds "
                      "reloaded\n",
              mode, pairs, seconds, now_s() - start_s, reloads, expected);
    }
    fflush(stdout);
  }
  unlink(module);
  rmdir(dir);
  return 0;
}
