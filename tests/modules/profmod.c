/* The debugging and profiling tests' module (test_profile, tests/profile_tools.sh), in
 * versions 1 to 3 (-DVERSION=n). Each version has functions of its own names behind the
 * exported ones, so a profile, a backtrace or a leak report says which version ran:
 * spin_vN burns the CPU (perf), leak_vN leaks a block (LSan, valgrind), and dbg_fn is at a
 * line of its own in each version (gdb). */
#include <stdlib.h>
#include <string.h>

#define HM_CAT2(a, b) a##b
#define HM_CAT(a, b) HM_CAT2(a, b)
#define SPIN HM_CAT(spin_v, VERSION)
#define LEAK HM_CAT(leak_v, VERSION)

/* About `n` million rounds of arithmetic, with no call out of this function (so the samples
 * land here, not in a library). */
__attribute__((noinline)) static double SPIN(long n) {
  volatile double acc = 1.0;
  for (long i = 0; i < n * 1000000; i++)
    acc = acc * 1.0000001 + 0.5 / (double)(i + 1);
  return acc;
}

double spin(long n) { return SPIN(n); }

/* A block nothing points to once it returns: leaked, with this version's frame in its
 * allocation stack. */
__attribute__((noinline)) static void LEAK(void) {
  char *p = malloc(4242);
  if (p != NULL)
    memset(p, VERSION, 4242);
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

void leak(void) { LEAK(); }

#if VERSION == 1
int dbg_fn(int x) { return x + 1; } /* DBG_LINE_V1 */
#elif VERSION == 2
int dbg_fn(int x) { return x + 2; } /* DBG_LINE_V2 */
#else
int dbg_fn(int x) { return x + 3; } /* DBG_LINE_V3 */
#endif

int version(void) { return VERSION; }
