/*
 * Reading a module's file: one place for the loader and the watcher, so both apply the same
 * rules and the bytes that are checked are the bytes that are loaded. Also what signed builds
 * read with it: its build signature, and the trusted key files.
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
 *
 * Layer 2 (docs/architecture.md): calls trust.c and the leaves.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Look at the open file: what the loader accepts. `placed`: what the walk to it found
 * there before it was opened (hm__file_open_placed), which must be this file. */
static int check_stat(const hm__allocator *a, int fd, const char *path, unsigned flags,
                      const struct stat *placed, struct stat *st) {
  struct statvfs vfs;
  if (fstat(fd, st) != 0)
    return hm__fail(-errno, "cannot stat %s: %s", path, strerror(errno));
  if (placed != NULL && (placed->st_dev != st->st_dev || placed->st_ino != st->st_ino))
    return hm__fail(HM_EAGAIN, "%s was replaced while it was being read", path);
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

static int read_fd(const hm__allocator *a, int fd, const char *path, unsigned flags,
                   const struct stat *placed, hm__file *out, hm__writer *writer) {
  struct stat st, st2;
  unsigned char *buf = NULL;
  size_t len, got = 0;
  hm__writer w;
  int rc;

  memset(out, 0, sizeof *out);
  if (writer != NULL)
    *writer = HM__WRITER_UNKNOWN;
  rc = check_stat(a, fd, path, flags, placed, &st);
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
  /* Through this descriptor's directory, while it is open (see below). */
  if ((flags & HM__READ_SIGNED) && (rc = hm__sigfile_read(a, fd, path, &out->sig)) != 0) {
    memset(out, 0, sizeof *out);
    goto out;
  }
  buf = NULL;
out:
  hm__free(a, buf);
  return rc;
}

int hm__file_read_fd(const hm__allocator *a, int fd, const char *path, unsigned flags,
                     hm__file *out, hm__writer *writer) {
  return read_fd(a, fd, path, flags & ~HM__READ_PLACED, NULL, out, writer);
}

int hm__file_read(const hm__allocator *a, const char *path, unsigned flags, hm__file *out,
                  hm__writer *writer) {
  struct stat placed;
  size_t n = strlen(path);
  int fd, rc;
  memset(out, 0, sizeof *out);
  if (writer != NULL)
    *writer = HM__WRITER_UNKNOWN;
  if ((flags & HM__READ_ALLOW_WRITABLE) || n == 0 || path[n - 1] == '/') {
    fd = hm__file_open(path);
    if (fd < 0)
      return fd;
    rc = read_fd(a, fd, path, flags & ~HM__READ_PLACED, NULL, out, writer);
  } else {
    /* The trust rules walk the file's directories anyway: walked first, the walk's look at
     * the last name is the look that refuses a device, FIFO or socket unopened (no stat by
     * name), and the file is opened through the directory just checked. */
    rc = hm__file_open_placed(a, path, &fd, &placed);
    if (rc == 0 && fd < 0)
      rc = not_regular(path, placed.st_mode);
    if (rc != 0)
      return rc;
    rc = read_fd(a, fd, path, flags | HM__READ_PLACED, &placed, out, writer);
  }
  close(fd);
  return rc;
}

/* ---- Signed builds: the build signature beside a module's file, and key files ---------- */

/* The signature is read through the directory the module's open file was found in, after
 * every symbolic link on its path (the kernel names it in /proc/self/fd), and that directory
 * must still hold that very file: so both reads follow the same resolution, and a deploy that
 * flips `current -> releases/N` between them cannot pair one release's build with another's
 * signature. Its bytes need no trust in who could write them (the signature is checked), only
 * a bound on their size; a key file is held to the trust rules of modules. */

/* minisign's files are a few hundred bytes; anything much larger is not one. */
#define HM__SIGFILE_MAX 16384
#define HM__SIGFILE_EXT ".minisig"

/* Read a small regular file open as fd whole, NUL-terminated, into *buf: 0; -EFBIG above
 * HM__SIGFILE_MAX, -EINVAL when not a regular file, -EAGAIN when it changed while read, or
 * the errno. *st gets its fstat. */
static int read_small(const hm__allocator *a, int fd, struct stat *st, unsigned char **buf,
                      size_t *len) {
  struct stat st2;
  size_t got = 0, n;
  *buf = NULL;
  *len = 0;
  if (fstat(fd, st) != 0)
    return -errno;
  if (!S_ISREG(st->st_mode))
    return -EINVAL;
  if (st->st_size > HM__SIGFILE_MAX)
    return -EFBIG;
  n = (size_t)st->st_size;
  if ((*buf = hm__malloc(a, n + 1)) == NULL)
    return HM_ENOMEM;
  while (got < n) {
    ssize_t r = pread(fd, *buf + got, n - got, (off_t)got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  if (got != n || fstat(fd, &st2) != 0 || st2.st_size != st->st_size ||
      st2.st_mtim.tv_sec != st->st_mtim.tv_sec || st2.st_mtim.tv_nsec != st->st_mtim.tv_nsec) {
    hm__free(a, *buf);
    *buf = NULL;
    return -EAGAIN;
  }
  (*buf)[n] = '\0';
  *len = n;
  return 0;
}

/* Where the open module file is: its directory (opened) and its name there. */
static int module_dir(int fd, const char *path, char *name, size_t nn) {
  char link[64], real[PATH_MAX];
  const char *dir, *base, *slash;
  ssize_t n;
  int dfd;
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink(link, real, sizeof real - 1);
  if (n > 0 && real[0] == '/') {
    real[n] = '\0';
    dir = real;
  } else {
    /* No /proc: the path's own directory, which the check below holds to the open file. */
    if (strlen(path) >= sizeof real)
      return -ENAMETOOLONG;
    snprintf(real, sizeof real, "%s", path);
    dir = strchr(real, '/') != NULL ? real : ".";
  }
  slash = strrchr(real, '/');
  base = slash != NULL ? slash + 1 : real;
  if (strlen(base) >= nn)
    return -ENAMETOOLONG;
  snprintf(name, nn, "%s", base);
  if (slash == real)
    dir = "/";
  else if (slash != NULL)
    real[slash - real] = '\0';
  dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  return dfd >= 0 ? dfd : -errno;
}

int hm__sigfile_read(const hm__allocator *a, int fd, const char *path, hm__sigfile *out) {
  char sname[NAME_MAX + 1];
  struct stat st, at;
  size_t n;
  int dfd, sfd, rc;
  memset(out, 0, sizeof *out);
  out->asked = 1;
  out->rc = HM_ENOENT;
  if (fstat(fd, &st) != 0)
    return hm__fail(-errno, "cannot stat %s: %s", path, strerror(errno));
  dfd = module_dir(fd, path, out->name, sizeof out->name);
  /* The directory must still hold this very file under that name. */
  if (dfd < 0 || fstatat(dfd, out->name, &at, 0) != 0 || at.st_dev != st.st_dev ||
      at.st_ino != st.st_ino) {
    if (dfd >= 0)
      close(dfd);
    return hm__fail(HM_EAGAIN, "%s was replaced or moved while it was being read", path);
  }
  if ((n = strlen(out->name)) + sizeof HM__SIGFILE_EXT > sizeof sname) {
    close(dfd);
    out->rc = -ENAMETOOLONG;
    return 0;
  }
  memcpy(sname, out->name, n);
  memcpy(sname + n, HM__SIGFILE_EXT, sizeof HM__SIGFILE_EXT);
  sfd = openat(dfd, sname, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  close(dfd);
  if (sfd < 0) {
    out->rc = errno == ENOENT ? HM_ENOENT : -errno;
    return 0;
  }
  rc = read_small(a, sfd, &st, &out->buf, &out->len);
  /* Asked after the read: a writer that came meanwhile makes it unfinished either way. */
  out->writer = rc == 0 ? hm__writer_probe(sfd) : HM__WRITER_UNKNOWN;
  close(sfd);
  if (rc == -EAGAIN) {
    rc = 0; /* changing while read: being written */
    out->writer = HM__WRITER_ACTIVE;
  }
  if (rc == HM_ENOMEM)
    return hm__fail(rc, "out of memory reading the signature of %s", path);
  out->rc = rc;
  out->dev = st.st_dev;
  out->ino = st.st_ino;
  out->size = st.st_size;
  out->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
  return 0;
}

void hm__sigfile_release(const hm__allocator *a, hm__sigfile *s) {
  hm__free(a, s->buf);
  s->buf = NULL;
  s->len = 0;
}

int hm__keyfile_read(const hm__allocator *a, const char *path, char **text, size_t *len) {
  struct stat st;
  unsigned char *buf = NULL;
  int rc, fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  *text = NULL;
  *len = 0;
  if (fd < 0)
    return hm__fail(-errno, "cannot open the trusted key file %s: %s", path, strerror(errno));
  rc = read_small(a, fd, &st, &buf, len);
  if (rc == 0 && (rc = hm__file_trusted(a, fd, &st, path, 0)) != 0) {
    char why[1024];
    snprintf(why, sizeof why, "%s", hm_errmsg());
    hm__fail(rc, "not trusting the key file: %s (for key files no flag waives this)", why);
  } else if (rc == -EINVAL || rc == -EFBIG) {
    rc = hm__fail(HM_EINVAL, "the trusted key file %s is %s", path,
                  rc == -EINVAL ? "not a regular file" : "too large for a minisign key");
  } else if (rc != 0) {
    rc = hm__fail(rc, "cannot read the trusted key file %s: %s", path, hm_strerror(rc));
  }
  close(fd);
  if (rc != 0) {
    hm__free(a, buf);
    return rc;
  }
  *text = (char *)buf;
  return 0;
}

/* ---- Where a module's file is ---------------------------------------------------------- */

char *hm__path_pack(const hm__allocator *a, const char *where, const char *given,
                    const char *dir) {
  size_t lw = strlen(where) + 1, lg = strlen(given) + 1, ld = strlen(dir) + 1;
  char *p = hm__malloc(a, lw + lg + ld);
  if (p != NULL) {
    memcpy(p, where, lw);
    memcpy(p + lw, given, lg);
    memcpy(p + lw + lg, dir, ld);
  }
  return p;
}

const char *hm__path_given(const char *packed) { return packed + strlen(packed) + 1; }

const char *hm__path_dir(const char *packed) {
  const char *g = hm__path_given(packed);
  return g + strlen(g) + 1;
}

char *hm__path_dup(const hm__allocator *a, const char *packed) {
  return hm__path_pack(a, packed, hm__path_given(packed), hm__path_dir(packed));
}

/* The current directory as the host named it: $PWD when that is the current directory (as
 * a shell keeps it, through the symlinks it was reached by, so that a deploy's
 * `current -> releases/42` flip is followed), else what getcwd says. Into buf[n]; 0 or a
 * negative errno. */
static int cwd_now(char *buf, size_t n) {
  const char *pwd = secure_getenv("PWD");
  struct stat here, there;
  if (pwd != NULL && pwd[0] == '/' && strlen(pwd) < n && stat(".", &here) == 0 &&
      stat(pwd, &there) == 0 && here.st_dev == there.st_dev && here.st_ino == there.st_ino) {
    strcpy(buf, pwd);
    return 0;
  }
  return getcwd(buf, n) != NULL ? 0 : -errno;
}

char *hm__path_anchor(const hm__allocator *a, const char *given, int *err) {
  char dir[PATH_MAX], *where = NULL, *p;
  int rc = cwd_now(dir, sizeof dir);
  if (rc != 0 && given[0] != '/') {
    *err = hm__fail(rc, "cannot take the relative path %s against the current directory: %s",
                    given, hm_strerror(rc));
    return NULL;
  }
  if (rc != 0)
    dir[0] = '\0'; /* not needed for an absolute path; build rules fall back on theirs */
  if (given[0] != '/') {
    size_t ld = strlen(dir), lg = strlen(given);
    if (ld == 1)
      ld = 0; /* the root: no "//" */
    if ((where = hm__malloc(a, ld + 1 + lg + 1)) != NULL) {
      memcpy(where, dir, ld);
      where[ld] = '/';
      memcpy(where + ld + 1, given, lg + 1);
    }
  }
  p = given[0] == '/' || where != NULL ? hm__path_pack(a, where ? where : given, given, dir)
                                       : NULL;
  hm__free(a, where);
  if (p == NULL)
    *err = hm__fail(HM_ENOMEM, "out of memory");
  return p;
}

void hm__file_release(const hm__allocator *a, hm__file *f) {
  hm__sigfile_release(a, &f->sig);
  hm__free(a, f->buf);
  f->buf = NULL;
  f->len = 0;
}
