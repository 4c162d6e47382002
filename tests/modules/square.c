/* Test module in several versions (-DVERSION=n): the three reload behaviours.
 * v1: my_function(x) = x*x; v2 and later: sqrt(x). v3 lacks bonus(). */
#include <math.h>

double my_function(double x) {
#if VERSION == 1
  return x * x;
#else
  return sqrt(x);
#endif
}

/* Module-level state: a plain module's globals start fresh in each version. */
static int counter;
int counter_next(void) { return ++counter; }

int version(void) { return VERSION; }

#if VERSION < 3
int bonus(void) { return 100 + VERSION; }
#endif
