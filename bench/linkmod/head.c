/* The large module of bench/builds, first object: the build's version number at the start
 * of the module's code and data (tail.c, linked last, holds it again at the end), and the
 * two functions the host calls. build_version.h defines BUILD_VERSION; each build writes
 * its own. */
#include "build_version.h"
#include "hotmod/module.h"

#define HM_BB_HIDDEN __attribute__((visibility("hidden")))

HM_BB_HIDDEN const int hm_bb_head_ro = BUILD_VERSION;
HM_BB_HIDDEN int hm_bb_head_rw = BUILD_VERSION;
extern HM_BB_HIDDEN const int hm_bb_tail_ro;
extern HM_BB_HIDDEN int hm_bb_tail_rw;
HM_BB_HIDDEN unsigned hm_bb_big_check(void);

/* Read through volatile, so the number comes from the file's data, not an immediate. */
static int rd(const int *p) { return *(const volatile int *)p; }

HM_MODULE_EXPORT int bench_version(void) { return rd(&hm_bb_head_ro); }

/* The version number if all four copies of it agree and every function and data word of
 * the generated body reads back as written; -1 or -2 otherwise (a part of the file that was
 * never written). */
HM_MODULE_EXPORT int bench_verify(void) {
  int v = rd(&hm_bb_head_ro);
  if (rd(&hm_bb_head_rw) != v || rd(&hm_bb_tail_ro) != v || rd(&hm_bb_tail_rw) != v)
    return -1;
  return hm_bb_big_check() == 0 ? v : -2;
}
