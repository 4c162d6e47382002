/* C code between a C++ host and a C++ module, built with -fexceptions: HM_LIVE_CALL's
 * cleanup runs when an exception unwinds through this frame. */
#include "hotmod.h"

int hmt_c_live_call(hm_live *live, int x);

int hmt_c_live_call(hm_live *live, int x) { return HM_LIVE_CALL(live, int (*)(int), x); }
