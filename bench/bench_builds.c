/* The host for bench/builds: real toolchains write the watched module, and this program
 * records what the watcher makes of it.
 *
 *   hm_bench_builds --module PATH --events FILE [--quiet-ms N] [--queued]
 *
 * It loads the module at PATH, takes live handles on its `int bench_version(void)` (the
 * build's version number) and `int bench_verify(void)` (the same number if the module's
 * code and data all read back as written, a negative number otherwise), starts the watcher
 * with the given quiet_ms (0 or absent: the library's default) and appends one line per
 * event to FILE:
 *
 *   <ms> start <version> <verify>        the first load, before the watcher starts
 *   <ms> watching                        hm_watch_start returned
 *   <ms> loaded <num> <version> <verify> HM_EVENT_LOADED; both values read through the live
 *                                        handles inside the callback, so they are the build
 *                                        that just became current
 *   <ms> rejected <num> <text>: <detail> HM_EVENT_REJECTED (hm_strerror, hm_registry_errmsg)
 *   <ms> changed <num>                   HM_EVENT_CHANGED
 *   <ms> mark <text>                     a `mark` command (the driver's own timeline)
 *
 * <ms> is milliseconds since the program started (CLOCK_MONOTONIC) when the event's callback
 * began, <num> the registry's version number of the event. Each line is one write() to a file opened with O_APPEND.
 *
 * Commands on stdin, one per line; answers on stdout, one line each:
 *
 *   wait <version> <deadline_ms>  poll the live handle every millisecond until it returns
 *                                 <version> and bench_verify agrees: `live <version> <ms>`,
 *                                 or after the deadline `timeout <version> <bench_version>
 *                                 <bench_verify>`
 *   mark <text>                   log it; answers `ok`
 *   quit (or end of input)        free the registry (which stops the watcher); `bye`
 *
 * With --queued the registry's reload mode is HM_RELOAD_QUEUED: the watcher prepares each
 * build and `wait` calls hm_registry_poll before each look, as a host's frame loop would.
 *
 * At start it prints `ready <version>` once the watcher runs. It uses only the public API
 * that will stay: hm_registry_new with hm_registry_options, hm_module_load, hm_live_get,
 * hm_live_enter/leave, hm_watch_start, hm_registry_free, hm_strerror, hm_registry_errmsg.
 * Exit status 1 on a setup error; if a torn build crashes it, the driver sees that too. */
#include "benchutil.h"
#include "hotmod.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*ifn)(void);

typedef struct host {
  int fd;              /* the events file */
  long long t0;        /* CLOCK_MONOTONIC at start, ns */
  hm_registry *reg;    /* set before the watcher starts; read by the callback */
  hm_live *version;    /* NULL until hm_live_get returned; the callback checks */
  hm_live *verify;
} host;


/* One event line, written whole: the callback runs on the watcher's thread while the main
 * thread may log a mark. `t` is when it happened (CLOCK_MONOTONIC, ns). */
static void logf_(host *h, long long t, const char *fmt, ...) {
  char line[1400];
  int n = snprintf(line, sizeof line, "%.3f ", (double)(t - h->t0) / 1e6);
  va_list ap;
  va_start(ap, fmt);
  if (n >= 0 && (size_t)n < sizeof line)
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n >= sizeof line - 1)
    n = (int)sizeof line - 2;
  line[n++] = '\n';
  if (write(h->fd, line, (size_t)n) < 0)
    perror("hm_bench_builds: writing the events file");
}

static int call_live(hm_live *l) {
  ifn fn;
  int v;
  if (l == NULL)
    return -1000;
  fn = (ifn)hm_live_enter(l);
  v = fn != NULL ? fn() : -1000;
  hm_live_leave(l);
  return v;
}

static void on_event(hm_event ev, hm_module *mod, unsigned num, int err, void *userdata) {
  host *h = userdata;
  /* The event's time is its callback's start: the self-check below takes milliseconds. */
  long long t = hmb_now_ns();
  (void)mod;
  switch (ev) {
  case HM_EVENT_LOADED: {
    /* Reloads of one module are serialised and this callback runs right after the version
     * became current, so the live handles reach the build this event is about. The first
     * load comes before the handles exist: main logs it as `start`. */
    hm_live *lv = __atomic_load_n(&h->version, __ATOMIC_ACQUIRE);
    hm_live *lc = __atomic_load_n(&h->verify, __ATOMIC_ACQUIRE);
    if (lv != NULL && lc != NULL)
      logf_(h, t, "loaded %u %d %d", num, call_live(lv), call_live(lc));
    break;
  }
  case HM_EVENT_REJECTED:
    /* The detail is per thread, and this is the thread that failed. */
    logf_(h, t, "rejected %u %s: %s", num, hm_strerror(err), hm_registry_errmsg(h->reg));
    break;
  case HM_EVENT_CHANGED:
    logf_(h, t, "changed %u", num);
    break;
  default:
    break; /* retired and unloaded versions are not what this benchmark is about */
  }
}

static int usage(void) {
  fprintf(stderr, "usage: hm_bench_builds --module PATH --events FILE [--quiet-ms N] [--queued]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *path = NULL, *events = NULL;
  unsigned quiet_ms = 0;
  int queued = 0;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_live *lv = NULL, *lc = NULL;
  host h;
  char cmd[1024];
  int i, rc;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--module") == 0 && i + 1 < argc)
      path = argv[++i];
    else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
      events = argv[++i];
    else if (strcmp(argv[i], "--quiet-ms") == 0 && i + 1 < argc)
      quiet_ms = (unsigned)strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--queued") == 0)
      queued = 1;
    else
      return usage();
  }
  if (path == NULL || events == NULL)
    return usage();

  memset(&h, 0, sizeof h);
  h.t0 = hmb_now_ns();
  h.fd = open(events, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (h.fd < 0) {
    perror(events);
    return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  o.flags = HM_FLAG_QUIET;
  o.on_event = on_event;
  o.event_userdata = &h;
  o.quiet_ms = quiet_ms;
  o.reload_mode = queued ? HM_RELOAD_QUEUED : HM_RELOAD_DEFAULT;
  rc = hm_registry_new(&h.reg, &o);
  if (rc == 0)
    rc = hm_module_load(h.reg, "bb", path, NULL);
  if (rc == 0)
    rc = hm_live_get(h.reg, "bb:bench_version", &lv);
  if (rc == 0)
    rc = hm_live_get(h.reg, "bb:bench_verify", &lc);
  if (rc != 0) {
    fprintf(stderr, "hm_bench_builds: setup failed: %s (%s)\n", hm_strerror(rc),
            h.reg != NULL ? hm_registry_errmsg(h.reg) : "");
    hm_registry_free(h.reg);
    return 1;
  }
  __atomic_store_n(&h.version, lv, __ATOMIC_RELEASE);
  __atomic_store_n(&h.verify, lc, __ATOMIC_RELEASE);
  logf_(&h, hmb_now_ns(), "start %d %d", call_live(lv), call_live(lc));
  rc = hm_watch_start(h.reg);
  if (rc != 0) {
    fprintf(stderr, "hm_bench_builds: hm_watch_start failed: %s (%s)\n", hm_strerror(rc),
            hm_registry_errmsg(h.reg));
    hm_registry_free(h.reg);
    return 1;
  }
  logf_(&h, hmb_now_ns(), "watching");
  printf("ready %d\n", call_live(lv));

  while (fgets(cmd, sizeof cmd, stdin) != NULL) {
    int want;
    long deadline;
    cmd[strcspn(cmd, "\n")] = '\0';
    if (sscanf(cmd, "wait %d %ld", &want, &deadline) == 2) {
      long long t0 = hmb_now_ns(), end = t0 + deadline * 1000000ll;
      int got = -1000, ok = 0;
      /* Poll as a host's frame loop would, sleeping between looks so the builds and the
       * watcher keep the machine's two cores. The number alone may come from a torn file
       * (it is near the start of the module): a build counts once its self-check agrees,
       * and a torn one is followed by the finished one when its writer closes it. */
      for (;;) {
        if (queued)
          (void)hm_registry_poll(h.reg);
        got = call_live(lv);
        if (got == want && call_live(lc) == want) {
          ok = 1;
          break;
        }
        if (hmb_now_ns() >= end)
          break;
        hmb_sleep_ms(got == want ? 5 : 1);
      }
      if (ok)
        printf("live %d %.3f\n", want, (double)(hmb_now_ns() - t0) / 1e6);
      else
        printf("timeout %d %d %d\n", want, got, call_live(lc));
    } else if (strncmp(cmd, "mark ", 5) == 0) {
      logf_(&h, hmb_now_ns(), "mark %s", cmd + 5);
      printf("ok\n");
    } else if (strcmp(cmd, "quit") == 0) {
      break;
    } else {
      printf("error unknown command\n");
    }
  }
  hm_registry_free(h.reg);
  close(h.fd);
  printf("bye\n");
  return 0;
}
