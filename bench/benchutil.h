/* Small helpers the benchmark programs share (they do not link the cmocka-based test
 * helpers, which assert through cmocka). */
#ifndef HM_BENCHUTIL_H
#define HM_BENCHUTIL_H

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>

/* CLOCK_MONOTONIC, in nanoseconds. */
static inline long long hmb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static inline void hmb_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static inline int hmb_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The p-th percentile (0..100) of v[0..n-1], nearest rank; sorts v. */
static inline double hmb_percentile(double *v, size_t n, double p) {
  size_t k;
  if (n == 0)
    return 0;
  qsort(v, n, sizeof *v, hmb_cmp_double);
  k = (size_t)(p / 100.0 * (double)n + 0.999999);
  return v[k == 0 ? 0 : k > n ? n - 1 : k - 1];
}

#endif
