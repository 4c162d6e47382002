/* The benchmarks' module, built twice (-DVERSION=1 and -DVERSION=2): one tiny function to
 * call, so call benchmarks measure the calling mechanism and not the work. Both versions
 * compute the same add1(); they differ in version() so each reload loads a different file. */
#include "hotmod/module.h"

HM_MODULE_EXPORT int add1(int x) { return x + 1; }

HM_MODULE_EXPORT int version(void) { return VERSION; }
