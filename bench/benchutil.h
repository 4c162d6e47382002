/* Small helpers the benchmark programs share (they do not link the cmocka-based test
 * helpers, which assert through cmocka). */
#ifndef HM_BENCHUTIL_H
#define HM_BENCHUTIL_H

#include <errno.h>
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

#endif
