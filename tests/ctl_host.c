/* ctl_host: a small host for hotmodctl's end-to-end test (test_hotmodctl.py).
 *
 *   ctl_host SOCKET MODULE_FILE [queued]
 *
 * Loads MODULE_FILE as module "square", takes a live handle on square:version, serves the
 * control socket at SOCKET (hm_control_start) and then, until SIGTERM, calls the handle and
 * polls the registry every 10 ms (in queued mode that is where reloads are published). It
 * prints "ready" once serving, and "version N" each time the live call sees a new build. */
#include "hotmod.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  hm_registry *reg;
  hm_module *mod;
  hm_live *live;
  int rc, seen = 0;
  if (argc < 3) {
    fprintf(stderr, "usage: ctl_host SOCKET MODULE_FILE [queued]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  if ((rc = hm_registry_new(&reg, NULL)) != 0 ||
      (rc = hm_module_load(reg, "square", argv[2], &mod)) != 0 ||
      (rc = hm_live_get(reg, "square:version", &live)) != 0 ||
      (argc > 3 && strcmp(argv[3], "queued") == 0 &&
       (rc = hm_module_set_reload_mode(mod, HM_RELOAD_QUEUED)) != 0) ||
      (rc = hm_control_start(reg, argv[1])) != 0) {
    fprintf(stderr, "ctl_host: %s: %s\n", hm_err_name(rc), hm_errmsg());
    return 1;
  }
  printf("ready\n");
  while (!stop) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    int v = HM_LIVE_CALL(live, int (*)(void));
    if (v != seen)
      printf("version %d (module version %u)\n", seen = v, hm_module_version(mod));
    hm_registry_poll(reg);
    nanosleep(&ts, NULL);
  }
  hm_registry_free(reg);
  printf("stopped\n");
  return 0;
}
