/* The demo's module, built twice: -DVERSION=1 squares, -DVERSION=2 takes the square root.
 * It also counts its calls in a plain global, which each new version starts afresh. */
#include "hotmod/module.h"

#include <math.h>

static int calls;

HM_MODULE_EXPORT double my_function(double x) {
  calls++;
#if VERSION == 1
  return x * x;
#else
  return sqrt(x);
#endif
}

HM_MODULE_EXPORT int call_count(void) { return calls; }
