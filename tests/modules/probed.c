/* Test module for crash containment (test_probe), one build per way of failing:
 *   (none)        a good build; its self-test passes and leaves a mark (HMT_PROBE_MARK)
 *   CTOR_SEGV     its constructor segfaults
 *   CTOR_EXIT     its constructor calls exit(3)
 *   CTOR_LOOP     its constructor never returns
 *   HOOK_SEGV     its load hook segfaults
 *   TEST_FAILS    its self-test returns 7
 *   HOST_SYMBOL   it needs a function only the test program exports (the probe's child
 *                 cannot open it; the host can)
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

#ifdef HOST_SYMBOL
int hmt_probe_host_value(void); /* defined by test_probe, exported from it */
HM_MODULE_EXPORT int version(void) { return hmt_probe_host_value() * 0 + VERSION; }
#else
HM_MODULE_EXPORT int version(void) { return VERSION; }
#endif

static int load(const hm_load_ctx *ctx) {
  (void)ctx;
#ifdef HOOK_SEGV
  segfault();
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

HM_MODULE_DESCRIBE_TESTED(0, NULL, load, NULL, self_test);
