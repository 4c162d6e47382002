/*
 * Reading a module's file: one place for the loader and the watcher, so both apply the same
 * rules and the bytes that are checked are the bytes that are loaded.
 *
 * The file is opened with O_NONBLOCK and checked with fstat on that descriptor: opening a
 * FIFO for reading would otherwise block until a writer appears (forever, for the watcher's
 * thread and for hm_registry_free joining it), and a stat by name could describe another
 * file than the one opened.
 *
 * The writer probe asks the kernel whether any process has the file open for writing: a
 * read lease (F_SETLEASE, F_RDLCK) cannot be taken while one has, and that includes a writer
 * that closed its descriptor but still holds a shared writable mapping (gold). The lease is
 * released at once. While it is held, a writer's open() waits for us (microseconds) and the
 * kernel signals the lease holder, so the signal is set (F_SETSIG) to one whose default
 * action is to do nothing and that the host does not handle; if the host handles both
 * candidates, there is no probe (HM__WRITER_UNKNOWN) rather than a surprise signal.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Larger files are refused rather than read into memory whole. */
#define HM__MAX_MODULE_SIZE ((off_t)1 << 30)

uint64_t hm__hash_bytes(const void *buf, size_t len) {
  /* FNV-1a over 8-byte words, then the tail: an identity for change detection, fast enough
   * for megabytes, not meant to resist an adversary (the file permissions do that). */
  const unsigned char *p = buf;
  uint64_t h = 1469598103934665603ull ^ (uint64_t)len;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * 1099511628211ull;
    h ^= h >> 29;
  }
  for (; i < len; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

/* A signal whose delivery does nothing in this process now: default action "ignore" and no
 * handler installed, or explicitly ignored. 0 if the host handles both candidates. */
static int harmless_signal(void) {
  static const int candidates[] = {SIGURG, SIGWINCH};
  size_t i;
  for (i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
    struct sigaction sa;
    if (sigaction(candidates[i], NULL, &sa) != 0)
      continue;
    if (!(sa.sa_flags & SA_SIGINFO) && (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
      return candidates[i];
  }
  return 0;
}

hm__writer hm__writer_probe(int fd) {
  int sig = harmless_signal(), saved = errno;
  hm__writer w;
  if (sig == 0 || fcntl(fd, F_SETSIG, sig) != 0) {
    errno = saved;
    return HM__WRITER_UNKNOWN;
  }
  if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
    fcntl(fd, F_SETLEASE, F_UNLCK);
    w = HM__WRITER_NONE;
  } else {
    /* EAGAIN: open for writing somewhere. EACCES: not our file; EINVAL: no leases here. */
    w = errno == EAGAIN ? HM__WRITER_ACTIVE : HM__WRITER_UNKNOWN;
  }
  errno = saved;
  return w;
}

static int same_stat(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* What a file that is not a regular one is, for messages. */
static const char *kind_of(mode_t m) {
  if (S_ISDIR(m))
    return "a directory";
  if (S_ISFIFO(m))
    return "a FIFO (named pipe)";
  if (S_ISSOCK(m))
    return "a socket";
  if (S_ISCHR(m))
    return "a character device";
  if (S_ISBLK(m))
    return "a block device";
  return "a special file";
}

static int not_regular(const char *path, mode_t m) {
  return hm__fail(HM_ENOTELF, "%s is %s, not a regular file", path, kind_of(m));
}

int hm__file_open(const char *path) {
  struct stat st;
  int fd, e;
  /* A look by name first, so that a device, FIFO or socket is refused without being opened
   * (opening some devices does something, a socket cannot be opened at all); the fstat on
   * the descriptor decides in the end. */
  if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
    return not_regular(path, st.st_mode);
  fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd >= 0)
    return fd;
  e = errno;
  if (e == ELOOP)
    return hm__fail(-e, "cannot open %s: a loop of symbolic links (or more than 40 in a row)",
                    path);
  if (e == ENXIO)
    return hm__fail(-e, "cannot open %s: %s (a socket, or a device with nothing behind it)",
                    path, strerror(e));
  return hm__fail(-e, "cannot open %s: %s", path, strerror(e));
}

/* Look at the open file: what the loader accepts. */
static int check_stat(const hm__allocator *a, int fd, const char *path, unsigned flags,
                      struct stat *st) {
  struct statvfs vfs;
  if (fstat(fd, st) != 0)
    return hm__fail(-errno, "cannot stat %s: %s", path, strerror(errno));
  if (!S_ISREG(st->st_mode))
    return not_regular(path, st->st_mode);
  if (st->st_size > HM__MAX_MODULE_SIZE)
    return hm__fail(HM_ENOTELF, "%s is too large (%lld bytes)", path, (long long)st->st_size);
  /* Whoever mounted it noexec meant that nothing there runs: a private copy would. Not
   * waived by HM_FLAG_ALLOW_WRITABLE, which is about who may write, not where. */
  if (fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_NOEXEC))
    return hm__fail(HM_EACCES,
                    "%s is on a filesystem mounted noexec, and loading a copy of it would "
                    "bypass noexec; refusing to load it (build or copy it to a mount without "
                    "noexec)",
                    path);
  return hm__file_trusted(a, fd, st, path, flags); /* its owner, writers and directories */
}

int hm__file_read_fd(const hm__allocator *a, int fd, const char *path, unsigned flags,
                     hm__file *out, hm__writer *writer) {
  struct stat st, st2;
  unsigned char *buf = NULL;
  size_t len, got = 0;
  hm__writer w;
  int rc;

  memset(out, 0, sizeof *out);
  if (writer != NULL)
    *writer = HM__WRITER_UNKNOWN;
  rc = check_stat(a, fd, path, flags, &st);
  if (rc != 0)
    return rc;
  w = hm__writer_probe(fd);
  if (writer != NULL)
    *writer = w;
  if (w == HM__WRITER_ACTIVE && (flags & HM__READ_PROBE))
    return hm__fail(HM_EAGAIN, "%s is still being written (a process has it open for writing)",
                    path);
  len = (size_t)st.st_size;
  buf = hm__malloc(a, len ? len : 1);
  if (buf == NULL)
    return hm__fail(HM_ENOMEM, "out of memory reading %s (%zu bytes)", path, len);
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = hm__fail(HM_EIO, "cannot read %s: %s", path, strerror(errno));
      goto out;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  /* A writer still at work shows as a short read or a changed size or mtime. */
  if (got != len || fstat(fd, &st2) != 0 || !same_stat(&st, &st2)) {
    rc = hm__fail(HM_EAGAIN, "%s changed while it was being read", path);
    goto out;
  }
  out->buf = buf;
  out->len = len;
  out->id.dev = st.st_dev;
  out->id.ino = st.st_ino;
  out->id.size = st.st_size;
  out->id.mode = st.st_mode;
  out->id.mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
  if (flags & HM__READ_HASH) {
    out->id.hash = hm__hash_bytes(buf, len);
    out->id.hashed = 1;
  }
  buf = NULL;
out:
  hm__free(a, buf);
  return rc;
}

int hm__file_read(const hm__allocator *a, const char *path, unsigned flags, hm__file *out,
                  hm__writer *writer) {
  int fd = hm__file_open(path), rc;
  memset(out, 0, sizeof *out);
  if (writer != NULL)
    *writer = HM__WRITER_UNKNOWN;
  if (fd < 0)
    return fd;
  rc = hm__file_read_fd(a, fd, path, flags, out, writer);
  close(fd);
  return rc;
}

void hm__file_release(const hm__allocator *a, hm__file *f) {
  hm__free(a, f->buf);
  f->buf = NULL;
  f->len = 0;
}
