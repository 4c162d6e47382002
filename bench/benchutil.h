/* Small helpers the benchmark programs share (they do not link the cmocka-based test
 * helpers, which assert through cmocka). */
#ifndef HM_BENCHUTIL_H
#define HM_BENCHUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Print "program: message" on stderr and exit with status 2. */
static inline void hmb_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void hmb_die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", program_invocation_short_name);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

/* The whole file at `path` (malloc'd, one spare byte), its length in *len; dies on failure. */
static inline unsigned char *hmb_slurp(const char *path, size_t *len) {
  struct stat st;
  unsigned char *b;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0 || (b = malloc((size_t)st.st_size + 1)) == NULL ||
      pread(fd, b, (size_t)st.st_size, 0) != st.st_size)
    hmb_die("cannot read %s: %s", path, strerror(errno));
  close(fd);
  *len = (size_t)st.st_size;
  return b;
}

/* Put `len` bytes at `dest` as a build tool or a deploy does: written to a new file beside
 * it (mode 0755), then renamed over it. Dies on failure. */
static inline void hmb_put(const unsigned char *buf, size_t len, const char *dest) {
  char tmp[4300];
  int fd;
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", dest) >= sizeof tmp)
    hmb_die("path too long: %s", dest);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  if (fd < 0 || write(fd, buf, len) != (ssize_t)len || fchmod(fd, 0755) != 0 || close(fd) != 0)
    hmb_die("cannot write %s: %s", tmp, strerror(errno));
  if (rename(tmp, dest) != 0)
    hmb_die("cannot rename %s: %s", tmp, strerror(errno));
}

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
