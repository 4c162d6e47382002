/* Test module for crash containment (test_probe), one build per way of failing:
 *   (none)        a good build; its self-test passes and leaves a mark (HMT_PROBE_MARK)
 *   CTOR_SEGV     its constructor segfaults
 *   CTOR_EXIT     its constructor calls exit(3)
 *   CTOR_LOOP     its constructor never returns
 *   HOOK_SEGV     its load hook segfaults
 *   TEST_FAILS    its self-test returns 7
 *   HOST_SYMBOL   it needs a function only the test program exports (the probe's child
 *                 cannot open it; the host can)
 *   FD_WRITE      its constructor writes its pid to the descriptor in HMT_PROBE_FD
 *   OLD_DESC      its descriptor has the size of ABI 2 builds from before self_test
 *   API_NULL      its load hook calls every function of ctx->api with NULL arguments and
 *                 refuses the version unless each gives HM_EINVAL, NULL or nothing, as
 *                 hotmod.h says (in the host and in the probe's child alike)
 * Each build makes version() return VERSION. */
#include "hotmod/module.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(CTOR_SEGV) || defined(HOOK_SEGV)
/* A write to an unmapped page: a real segfault (not a null pointer a sanitizer reports). */
static volatile uintptr_t unmapped = 64; /* volatile: the compiler cannot see the address */
static void segfault(void) { *(volatile int *)unmapped = 1; }
#endif

#if defined(CTOR_SEGV) || defined(CTOR_EXIT) || defined(CTOR_LOOP)
__attribute__((constructor)) static void bad_constructor(void) {
#if defined(CTOR_SEGV)
  segfault();
#elif defined(CTOR_EXIT)
  exit(3);
#else
  for (volatile unsigned long n = 0;; n++) {
  }
#endif
}
#endif

#ifdef FD_WRITE
#include <stdio.h>
__attribute__((constructor)) static void write_fd(void) {
  const char *fd = getenv("HMT_PROBE_FD");
  char line[32];
  int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
  if (fd != NULL)
    (void)!write(atoi(fd), line, (size_t)n);
}
#endif

#ifdef HOST_SYMBOL
int hmt_probe_host_value(void); /* defined by test_probe, exported from it */
HM_MODULE_EXPORT int version(void) { return hmt_probe_host_value() * 0 + VERSION; }
#else
HM_MODULE_EXPORT int version(void) { return VERSION; }
#endif

#ifdef API_NULL
static int api_null_ok(const hm_module_api *api, hm_registry *reg) {
  hm_live *l = (hm_live *)api;
  hm_snapshot *s = (hm_snapshot *)api;
  int ok = api->live_get(reg, "p:version", NULL) == HM_EINVAL &&
           api->live_get(NULL, "p:version", &l) == HM_EINVAL && l == NULL &&
           api->live_get_typed(reg, "p:version", "int(void)", NULL) == HM_EINVAL &&
           api->snapshot_acquire(reg, "p:version", NULL) == HM_EINVAL &&
           api->snapshot_acquire(NULL, "p:version", &s) == HM_EINVAL && s == NULL &&
           api->snapshot_acquire_typed(reg, "p:version", "int(void)", NULL) == HM_EINVAL &&
           api->live_enter(NULL) == NULL && api->snapshot_fn(NULL) == NULL &&
           api->errmsg() != NULL;
  api->live_leave(NULL);
  api->snapshot_release(NULL);
  return ok;
}
#endif

static int load(const hm_load_ctx *ctx) {
  (void)ctx;
#ifdef HOOK_SEGV
  segfault();
#endif
#ifdef API_NULL
  if (!api_null_ok(ctx->api, ctx->reg))
    return -1;
#endif
  return HM_LOAD_CONVERTED;
}

static int self_test(void) {
  const char *mark = getenv("HMT_PROBE_MARK");
#ifdef TEST_FAILS
  return 7;
#endif
  if (mark != NULL) { /* proof that the self-test ran (in the child) */
    int fd = open(mark, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0)
      close(fd);
  }
  return version() == VERSION ? 0 : 1;
}

#ifdef OLD_DESC
/* The descriptor as an ABI 2 build made before self_test was added lays it out. */
HM_MODULE_EXPORT const struct {
  unsigned abi, size, state_version;
  void *(*save)(void);
  int (*load)(const hm_load_ctx *ctx);
  void (*unload)(int handed_over);
} hm_module_descriptor = {HM_MODULE_ABI, HM_MODULE_DESC_MIN_SIZE, 0, NULL, load, NULL};
int unused_self_test(void) { return self_test(); }
#else
HM_MODULE_DESCRIBE_TESTED(0, NULL, load, NULL, self_test);
#endif
