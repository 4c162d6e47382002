/*
 * Split debug information: the debug file a build's .gnu_debuglink names (objcopy
 * --only-keep-debug, then --add-gnu-debuglink), found where gdb looks for it beside the
 * build, checked against the CRC the build carries, and copied beside the private copy.
 *
 * gdb, perf, valgrind and the sanitizers' symbolizers look for that file beside the file
 * that was loaded (then in its .debug/ and under /usr/lib/debug), which is the private copy,
 * not the build. A link to the file beside the build would not do: the next build writes
 * over it, and the version loaded before would then be described by its successor's lines.
 * So the file is copied with the version, as it was when the version was loaded, and goes
 * with the copy (privdir.c: a copy with a debug file has a directory of its own).
 *
 * Layer 2 (docs/architecture.md): calls only the leaves.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEBUGFILE_MAX (1ULL << 30) /* as a module's file (file.c) */

/* The table of the reflected CRC-32 polynomial (0xEDB88320), made once. */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

uint32_t hm__crc32(uint32_t crc, const unsigned char *buf, size_t len) {
  pthread_once(&crc_once, crc_init);
  crc = ~crc;
  while (len-- > 0)
    crc = crc_table[(crc ^ *buf++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/* Copy the file at `from` to `to` (a new file) if its CRC-32 is `crc`: the bytes copied, or 0
 * (nothing left at `to`). The CRC is taken over the bytes written, so a file another build
 * rewrites meanwhile is refused rather than copied half old, half new. */
static unsigned long long copy_checked(const char *from, const char *to, uint32_t crc) {
  unsigned char buf[16384];
  unsigned long long total = 0;
  uint32_t have = 0;
  struct stat st;
  int in = open(from, O_RDONLY | O_NONBLOCK | O_CLOEXEC), out = -1, ok = 0;
  if (in < 0)
    return 0;
  if (fstat(in, &st) != 0 || !S_ISREG(st.st_mode) || (unsigned long long)st.st_size > DEBUGFILE_MAX ||
      (out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
    close(in);
    return 0;
  }
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf), put = 0;
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    have = hm__crc32(have, buf, (size_t)n);
    while (put < n) {
      ssize_t w = write(out, buf + put, (size_t)(n - put));
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        break;
      put += w;
    }
    if (put < n || (total += (unsigned long long)n) > DEBUGFILE_MAX)
      break;
  }
  close(in);
  if (close(out) != 0 || !ok || have != crc) {
    unlink(to);
    return 0;
  }
  return total;
}

/* The places gdb looks for `link` beside a file in directory `dir`, in its order. */
static unsigned long long copy_from_dir(const char *dir, const char *link, uint32_t crc,
                                        const char *to) {
  static const char *const fmt[] = {"%s/%s", "%s/.debug/%s", "/usr/lib/debug%s/%s"};
  char from[PATH_MAX];
  unsigned long long n = 0;
  for (size_t i = 0; i < sizeof fmt / sizeof fmt[0] && n == 0; i++) {
    int k;
    if (i == 2 && dir[0] != '/')
      break; /* the debug directory holds absolute paths only */
    k = snprintf(from, sizeof from, fmt[i], dir, link);
    if (k > 0 && (size_t)k < sizeof from)
      n = copy_checked(from, to, crc);
  }
  return n;
}

/* The directory part of `path` into buf ("." for a bare name). */
static void dir_of(const char *path, char *buf, size_t n) {
  const char *slash = strrchr(path, '/');
  size_t k = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
  if (k == 0 || k >= n) {
    snprintf(buf, n, "%s", k == 0 ? "." : "/");
    return;
  }
  memcpy(buf, path, k);
  buf[k] = '\0';
}

unsigned long long hm__debugfile_copy(const char *src, const char *link, uint32_t crc,
                                      const char *copy) {
  char dir[PATH_MAX], to[PATH_MAX], *real;
  unsigned long long n;
  struct stat st;
  int k;
  dir_of(copy, dir, sizeof dir);
  k = snprintf(to, sizeof to, "%s/%s", dir, link);
  if (k <= 0 || (size_t)k >= sizeof to)
    return 0;
  dir_of(src, dir, sizeof dir);
  n = copy_from_dir(dir, link, crc, to);
  /* A build reached through a symbolic link (a deployment's current -> releases/42) has its
   * debug file beside the file the link leads to. */
  if (n == 0 && lstat(src, &st) == 0 && S_ISLNK(st.st_mode) &&
      (real = realpath(src, NULL)) != NULL) {
    dir_of(real, dir, sizeof dir);
    free(real); /* realpath's own malloc: never the registry's allocator */
    n = copy_from_dir(dir, link, crc, to);
  }
  return n;
}
