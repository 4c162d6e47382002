/*
 * hotmod demo: the three reload behaviours in C.
 *
 * A "build" writes mathmod.so (version 1 squares its argument). The host takes a live handle
 * and a stable snapshot of mathmod:my_function, then the build writes version 2 (square
 * root) and the host reloads. The live handle follows the module; the snapshot keeps the
 * code it pinned; the module's plain global counter starts afresh in version 2.
 */
#include "hotmod.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int fail(hm_registry *reg, const char *what, int rc) {
  fprintf(stderr, "demo: %s: %s (%s)\n", what, hm_strerror(rc), hm_registry_errmsg(reg));
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
  if ((rc = hm_registry_new(&reg, &opts)) != 0)
    return fprintf(stderr, "demo: %s\n", hm_strerror(rc)), 1;

  printf("hotmod %s demo\n\n", hm_version_string());
  printf("build writes version 1 (my_function(x) = x*x)\n");
  install(DEMO_MODDIR "/mathmod_v1.so", target);
  if ((rc = hm_module_load(reg, "mathmod", target, &mod)) != 0)
    return fail(reg, "load", rc);
  if ((rc = hm_live_get(reg, "mathmod:my_function", &live)) != 0 ||
      (rc = hm_live_get(reg, "mathmod:call_count", &count)) != 0 ||
      (rc = hm_snapshot_acquire(reg, "mathmod:my_function", &snap)) != 0)
    return fail(reg, "handles", rc);
  printf("  live     my_function(2) = %g\n", HM_LIVE_CALL(live, math_fn, 2.0));
  printf("  snapshot my_function(2) = %g   (pins version %u)\n",
         ((math_fn)hm_snapshot_fn(snap))(2.0), hm_snapshot_version(snap));
  printf("  module-level call counter = %d\n\n", HM_LIVE_CALL(count, count_fn));

  printf("build writes version 2 (my_function(x) = sqrt(x)); host reloads\n");
  install(DEMO_MODDIR "/mathmod_v2.so", target);
  if ((rc = hm_module_reload(mod)) != 0)
    return fail(reg, "reload", rc);
  printf("  module version is now %u\n", hm_module_version(mod));
  printf("  (1) live     my_function(2) = %.6f   -> follows the reload\n",
         HM_LIVE_CALL(live, math_fn, 2.0));
  printf("  (2) snapshot my_function(2) = %g          -> still version %u until released\n",
         ((math_fn)hm_snapshot_fn(snap))(2.0), hm_snapshot_version(snap));
  printf("  (3) module-level call counter = %d         -> version 2 started with fresh globals\n",
         HM_LIVE_CALL(count, count_fn));
  hm_snapshot_release(snap);
  if ((rc = hm_snapshot_acquire(reg, "mathmod:my_function", &snap)) != 0)
    return fail(reg, "snapshot", rc);
  printf("  a snapshot taken now: my_function(2) = %.6f (version %u)\n\n",
         ((math_fn)hm_snapshot_fn(snap))(2.0), hm_snapshot_version(snap));
  hm_snapshot_release(snap);

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
  printf("  reload: %s: %s\n", hm_err_name(rc), hm_registry_errmsg(reg));
  printf("  live my_function(9) = %g (version %u)\n", HM_LIVE_CALL(live, math_fn, 9.0),
         hm_module_version(mod));

  hm_registry_free(reg);
  unlink(target);
  rmdir(dir);
  return 0;
}
