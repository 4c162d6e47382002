/* The large module of bench/builds, last object: the build's version number again, after
 * everything else in the module's code and data (see head.c). */
#include "build_version.h"

#define HM_BB_HIDDEN __attribute__((visibility("hidden")))

HM_BB_HIDDEN const int hm_bb_tail_ro = BUILD_VERSION;
HM_BB_HIDDEN int hm_bb_tail_rw = BUILD_VERSION;
