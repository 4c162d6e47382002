/* The public headers must compile on their own as C99 and as C++ (this file is built both
 * ways by tests/CMakeLists.txt), with no libuv headers needed for the core ones, and without
 * a warning under -Wall -Wextra -Wpedantic (and -Wold-style-cast in C++) where a host
 * includes them with plain -I: so the inline read side and every macro are expanded here. */
#include <hotmod.h>
#include <hotmod/module.h>

#include <stddef.h>

typedef int (*int_fn)(int);

/* A module's side: a descriptor, a signature and a load hook that looks at its context. */
static int check_load(const hm_load_ctx *ctx) {
  return HM_LOAD_CTX_HAS(ctx, still_owned) ? HM_LOAD_ADOPTED : HM_LOAD_CONVERTED;
}
HM_MODULE_DESCRIBE(1, NULL, check_load, NULL);
HM_MODULE_SIGNATURE(twice, "int(int)");
HM_MODULE_EXPORT int twice(int x);
HM_MODULE_EXPORT int twice(int x) { return 2 * x; }

/* A host's side: never run (it would need a module), only compiled and linked. */
static int host_side(void) {
  hm_registry *reg = NULL;
  hm_live *l = NULL;
  hm_stats st;
  hm_fn f;
  int r = 0;
  if (hm_registry_new(&reg, NULL) != 0 || hm_registry_stats(reg, &st) != 0 ||
      hm_live_get_typed(reg, "m:twice", "int(int)", &l) != 0)
    return -1;
  r += HM_LIVE_CALL(l, int_fn, 21);
  f = hm_live_enter(l);
  if (f != NULL)
    r += 1;
  hm_live_leave(l);
  hm_registry_free(reg);
  return r;
}

static int unused_symbol_check(void) {
  return HM_ENOSYM < 0 && HM_MODULE_ABI > 0 && HM_MAPPED_DESTRUCTORS < HM_MAPPED_MAX_ &&
         HM_MODULE_KEYS_DELETED != 0;
}

int main(int argc, char **argv) {
  (void)argv;
  if (argc > 99)
    return host_side();
  return unused_symbol_check() && twice(1) == 2 ? 0 : 1;
}
