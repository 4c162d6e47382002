/* The host that tests/profile_tools.sh runs under perf, gdb, LSan and valgrind: it loads the
 * profiling test module (modules/profmod.c) and reloads it, in one of three ways.
 *   profile_host spin N MOD...     load the first build as module "p", run its spin(N) (N
 *                                   million rounds), reload the next build, and so on
 *   profile_host leak MOD1 MOD2    leak a block from MOD1, reload MOD2, wait until MOD1's
 *                                   version is unloaded
 *   profile_host gdb MOD NEXT_SO NEXT_DEBUG
 *                                   load MOD (split: MOD.debug beside it), put the next
 *                                   build's files over MOD and MOD.debug as a build would,
 *                                   then call dbg_fn of the loaded version
 * Each frees its registry and exits 0, or says why it failed and exits 1. */
#include <hotmod.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int die(const char *what) {
  fprintf(stderr, "profile_host: %s: %s\n", what, hm_errmsg());
  return 1;
}

/* Copy `from` to a temporary file beside `to`, then rename it over `to`. */
static int install(const char *from, const char *to) {
  char tmp[4096], buf[65536];
  size_t n;
  FILE *in = fopen(from, "rb"), *out;
  snprintf(tmp, sizeof tmp, "%s.tmp", to);
  if (in == NULL || (out = fopen(tmp, "wb")) == NULL)
    return -1;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0)
    fwrite(buf, 1, n, out);
  fclose(in);
  return fclose(out) == 0 && rename(tmp, to) == 0 ? 0 : -1;
}

static int spin(hm_registry *reg, long n, char **mods, int count) {
  hm_module *mod;
  hm_live *live;
  if (hm_module_load(reg, "p", mods[0], &mod) != 0 || hm_live_get(reg, "p:spin", &live) != 0)
    return die("load");
  for (int i = 0; i < count; i++) {
    if (i > 0 && hm_module_reload_from(mod, mods[i]) != 0)
      return die("reload");
    printf("version %u: %g\n", hm_module_version(mod), HM_LIVE_CALL(live, double (*)(long), n));
  }
  return 0;
}

static int leak(hm_registry *reg, char **mods) {
  hm_module *mod;
  hm_live *live;
  hm_stats st;
  struct timespec ms = {0, 1000000};
  if (hm_module_load(reg, "p", mods[0], &mod) != 0 || hm_live_get(reg, "p:leak", &live) != 0)
    return die("load");
  HM_LIVE_CALL(live, void (*)(void));
  if (hm_module_reload_from(mod, mods[1]) != 0)
    return die("reload");
  for (int i = 0; i < 30000; i++) { /* the reclaimer unloads version 1 within milliseconds */
    hm_registry_stats(reg, &st);
    if (st.retired == 0)
      return 0;
    nanosleep(&ms, NULL);
  }
  fprintf(stderr, "profile_host: version 1 was not unloaded\n");
  return 1;
}

static int next_build(hm_registry *reg, char **args) {
  hm_module *mod;
  hm_live *live;
  char debug[4096];
  if (hm_module_load(reg, "p", args[0], &mod) != 0 || hm_live_get(reg, "p:dbg_fn", &live) != 0)
    return die("load");
  snprintf(debug, sizeof debug, "%s.debug", args[0]);
  if (install(args[1], args[0]) != 0 || install(args[2], debug) != 0) {
    perror("profile_host: install");
    return 1;
  }
  printf("dbg_fn(1) = %d\n", HM_LIVE_CALL(live, int (*)(int), 1));
  return 0;
}

int main(int argc, char **argv) {
  hm_registry *reg;
  int rc;
  if (argc < 3 || hm_registry_new(&reg, NULL) != 0) {
    fprintf(stderr, "usage: profile_host spin N MOD... | leak MOD1 MOD2 | gdb MOD SO DEBUG\n");
    return 2;
  }
  if (strcmp(argv[1], "spin") == 0 && argc >= 4)
    rc = spin(reg, atol(argv[2]), argv + 3, argc - 3);
  else if (strcmp(argv[1], "leak") == 0 && argc == 4)
    rc = leak(reg, argv + 2);
  else if (strcmp(argv[1], "gdb") == 0 && argc == 5)
    rc = next_build(reg, argv + 2);
  else
    rc = 2;
  hm_registry_free(reg);
  return rc;
}
