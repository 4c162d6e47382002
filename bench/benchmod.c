/* The benchmarks' module, built twice (-DVERSION=1 and -DVERSION=2): one tiny function to
 * call, so call benchmarks measure the calling mechanism and not the work, and one that does
 * about 50 ns of work, to see what the calling mechanism costs beside a callee that does
 * something. Both versions compute the same add1() and work50(); they differ in version() so
 * each reload loads a different file. */
#include "hotmod/module.h"

HM_MODULE_EXPORT int add1(int x) { return x + 1; }

/* About 50 ns on the benchmarks' machine (a 2-vCPU AMD EPYC guest): a chain of rounds each of
 * which needs the previous round's result (shift, xor, multiply), so the compiler can neither
 * shorten it nor run rounds side by side, and the result depends on every round. */
#define WORK50_ROUNDS 52
HM_MODULE_EXPORT unsigned work50(unsigned x) {
  for (int i = 0; i < WORK50_ROUNDS; i++) {
    x ^= x >> 15;
    x *= 0x2c1b3c6du;
  }
  return x;
}

HM_MODULE_EXPORT int version(void) { return VERSION; }
