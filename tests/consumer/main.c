/* A host in twenty lines: load a module, call it through a live handle and a snapshot,
 * reload a new build, and see the live handle follow while the snapshot stays put.
 *   ./host greet_v1.so greet_v2.so [probe]
 * With "probe", each build is loaded in the crash-containment helper first. */
#include <hotmod.h>
#include <stdio.h>
#include <string.h>

typedef int (*version_fn)(void);

int main(int argc, char **argv) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  hm_module *mod;
  hm_live *live;
  hm_snapshot *snap;
  if (argc == 4 && strcmp(argv[3], "probe") == 0)
    o.flags |= HM_FLAG_PROBE;
  else if (argc != 3)
    return 2;
  if (hm_registry_new(&reg, &o) != 0)
    return fprintf(stderr, "host: %s\n", hm_errmsg()), 1;
  if (hm_module_load(reg, "greet", argv[1], &mod) != 0 ||
      hm_live_get(reg, "greet:version", &live) != 0 ||
      hm_snapshot_acquire(reg, "greet:version", &snap) != 0 ||
      hm_module_reload_from(mod, argv[2]) != 0)
    return fprintf(stderr, "host: %s\n", hm_errmsg()), 1;
  int now = HM_LIVE_CALL(live, version_fn), then = ((version_fn)hm_snapshot_fn(snap))();
  printf("live handle: version %d; snapshot: version %d\n", now, then);
  hm_snapshot_release(snap);
  hm_registry_free(reg);
  return now == 2 && then == 1 ? 0 : 1;
}
