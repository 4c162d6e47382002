/*
 * Whether a module's file may be loaded: who could have changed it or could replace it.
 * file.c asks this about the file it has opened, before reading from that descriptor (the
 * watcher's reads), or has the directories walked first and the file opened at the walk's
 * end, through the directory just checked (a reload's reads: one look by name fewer); the
 * loader copies exactly the bytes it read.
 *
 * The rules (waived by HM_FLAG_ALLOW_WRITABLE):
 *  - Owner: the file and the directories below belong to this process's effective user or
 *    to root. Whoever owns them can rewrite or replace the module.
 *  - Writers: nobody but the owner may write to them: not other users (S_IWOTH), not a group
 *    unless it is the owner's private group, not anyone a POSIX ACL grants write.
 *    A user private group is Debian's default (adduser makes group alice for user alice,
 *    and pam_umask then makes her builds group-writable): a group whose name is the owner's
 *    user name and whose member list names nobody else. The gid alone (the owner's primary
 *    group) is not enough: where users share a primary group (Debian without private
 *    groups puts everyone in "users") that group lists no members either, and every user
 *    could write. (Users whose primary gid is someone else's private group are not found:
 *    that would mean reading the whole user database on every load.)
 *  - Directories: the one that holds the name the host gave and, when that name is a
 *    symbolic link, the one that holds each link on the way and the file at the end: a
 *    writer of any of them can make the name lead elsewhere. One that others may write to
 *    is still fine when it is sticky (/tmp) and the entry in it is this process's user's:
 *    then only that user, root and the directory's owner (trusted by the first rule) can
 *    rename or remove it. Directories further up are not looked at. The walk ends at the
 *    file the descriptor has open (same device and inode), or the file was replaced
 *    meanwhile (HM_EAGAIN, as for a file that changes while it is read).
 *
 * Layer 2 (docs/architecture.md): calls only the leaves.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

/* The kernel's own limit on symbolic links followed in one lookup. */
#define HM__MAX_LINKS 40
/* The C library's user and group entries are read into a buffer that grows to this. */
#define HM__MAX_ENTRY ((size_t)1 << 20)

static int trusted_owner(uid_t uid) { return uid == 0 || uid == geteuid(); }

/* ---- Users and groups ------------------------------------------------------------------ */

/* getpwuid_r or getgrgid_r, shaped alike. */
typedef int (*entry_fn)(unsigned id, void *ent, char *buf, size_t len, int *found);

static int get_user(unsigned id, void *ent, char *buf, size_t len, int *found) {
  struct passwd *res = NULL;
  int rc = getpwuid_r((uid_t)id, ent, buf, len, &res);
  *found = res != NULL;
  return rc;
}

static int get_group(unsigned id, void *ent, char *buf, size_t len, int *found) {
  struct group *res = NULL;
  int rc = getgrgid_r((gid_t)id, ent, buf, len, &res);
  *found = res != NULL;
  return rc;
}

/* A user or group entry, read into a buffer that grows while the entry does not fit.
 * *heap is what the caller frees. 1 if found. */
static int entry(const hm__allocator *a, entry_fn get, unsigned id, void *ent, char *stack,
                 size_t len, char **heap) {
  char *buf = stack;
  int rc, found = 0;
  *heap = NULL;
  while ((rc = get(id, ent, buf, len, &found)) == ERANGE && len < HM__MAX_ENTRY) {
    hm__free(a, *heap);
    len *= 4;
    buf = *heap = hm__malloc(a, len);
    if (buf == NULL)
      return 0;
  }
  return rc == 0 && found;
}

/* "alice (uid 1000)", or "uid 1000" for a user the system does not know. */
static void user_str(const hm__allocator *a, uid_t uid, char *out, size_t n) {
  struct passwd pw;
  char stack[1024], *heap;
  if (entry(a, get_user, uid, &pw, stack, sizeof stack, &heap))
    snprintf(out, n, "%s (uid %u)", pw.pw_name, (unsigned)uid);
  else
    snprintf(out, n, "uid %u", (unsigned)uid);
  hm__free(a, heap);
}

/* Is `gid` the private group of user `owner` (see the top of this file)? Its name, or its
 * number, into out[n] either way. */
static int private_group(const hm__allocator *a, gid_t gid, uid_t owner, char *out, size_t n) {
  struct passwd pw;
  struct group gr;
  char ustack[1024], gstack[2048], *uheap, *gheap;
  int ok = 0, have_user = entry(a, get_user, owner, &pw, ustack, sizeof ustack, &uheap);
  if (entry(a, get_group, gid, &gr, gstack, sizeof gstack, &gheap)) {
    snprintf(out, n, "%s (gid %u)", gr.gr_name, (unsigned)gid);
    if (have_user && strcmp(gr.gr_name, pw.pw_name) == 0) {
      char **m;
      ok = 1;
      for (m = gr.gr_mem; m != NULL && *m != NULL; m++)
        if (strcmp(*m, pw.pw_name) != 0)
          ok = 0;
    }
  } else {
    snprintf(out, n, "gid %u", (unsigned)gid);
  }
  hm__free(a, uheap);
  hm__free(a, gheap);
  return ok;
}

/* ---- Who may write --------------------------------------------------------------------- */

/* The POSIX ACL of the open file or directory, as the kernel hands it out: a little-endian
 * version 2, then entries of tag (16 bits), permissions (16) and id (32). */
#define HM__ACL_XATTR "system.posix_acl_access"
enum { ACL_TAG_USER = 0x02, ACL_TAG_GROUP_OBJ = 0x04, ACL_TAG_GROUP = 0x08, ACL_PERM_W = 0x02 };

static ssize_t read_acl(int fd, unsigned char *buf, size_t len) {
  ssize_t n = fgetxattr(fd, HM__ACL_XATTR, buf, len);
  if (n < 0 && errno == EBADF) {
    /* An O_PATH descriptor (a directory we may search but not read): by its /proc name. */
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    n = getxattr(p, HM__ACL_XATTR, buf, len);
  }
  return n;
}

static unsigned le(const unsigned char *p, int bytes) {
  unsigned v = 0;
  while (bytes-- > 0)
    v = (v << 8) | p[bytes];
  return v;
}

enum { WRITER_OTHERS = 1, WRITER_GROUP = 2 };

/* Who besides the owner may write to `st` (open as fd): 0 if nobody, else WRITER_OTHERS or
 * WRITER_GROUP (a group or an ACL entry, which "chmod g-w" takes away: with an ACL, the
 * group bits are its mask) with a description in why[n]. */
static int other_writers(const hm__allocator *a, int fd, const struct stat *st, char *why,
                         size_t n) {
  unsigned char acl[4 + 8 * 64];
  char g[300];
  ssize_t len, i;
  if (st->st_mode & S_IWOTH) {
    snprintf(why, n, "other users (mode %04o)", (unsigned)(st->st_mode & 07777));
    return WRITER_OTHERS;
  }
  /* With an ACL the group bits are its mask, which bounds every entry below but the
   * owner's and other's: without write there, nobody else may write. */
  if (!(st->st_mode & S_IWGRP))
    return 0;
  len = read_acl(fd, acl, sizeof acl);
  if (len < 0 && errno == ERANGE) {
    snprintf(why, n, "whoever its ACL names (too long to check)");
    return WRITER_GROUP;
  }
  if (len <= 0) { /* none (ENODATA), or no ACLs on this filesystem */
    if (private_group(a, st->st_gid, st->st_uid, g, sizeof g))
      return 0;
    snprintf(why, n, "group %s, which is not its owner's private group (mode %04o)", g,
             (unsigned)(st->st_mode & 07777));
    return WRITER_GROUP;
  }
  if (len < 4 || (len - 4) % 8 != 0 || le(acl, 4) != 2) {
    snprintf(why, n, "whoever its ACL names (in a format this hotmod does not know)");
    return WRITER_GROUP;
  }
  for (i = 4; i < len; i += 8) {
    unsigned tag = le(acl + i, 2), perm = le(acl + i + 2, 2), id = le(acl + i + 4, 4);
    if (!(perm & ACL_PERM_W))
      continue;
    if (tag == ACL_TAG_USER && (uid_t)id != st->st_uid && !trusted_owner((uid_t)id)) {
      user_str(a, (uid_t)id, g, sizeof g);
      snprintf(why, n, "user %s through its ACL", g);
      return WRITER_GROUP;
    }
    if ((tag == ACL_TAG_GROUP_OBJ || tag == ACL_TAG_GROUP) &&
        !private_group(a, tag == ACL_TAG_GROUP ? (gid_t)id : st->st_gid, st->st_uid, g,
                       sizeof g)) {
      snprintf(why, n, "group %s through its ACL, which is not its owner's private group", g);
      return WRITER_GROUP;
    }
  }
  return 0;
}

/* ---- The file and its directories ------------------------------------------------------ */

static const char *chmod_fix(int kind) { return kind == WRITER_OTHERS ? "o-w" : "g-w"; }

/* The module at `path`, or its directory `dir` (if not NULL), belongs to `uid`, who is
 * neither root nor this process's user. */
static int owner_refused(const hm__allocator *a, uid_t uid, const char *path, const char *dir) {
  char who[300], me[300];
  user_str(a, uid, who, sizeof who);
  user_str(a, geteuid(), me, sizeof me);
  if (dir == NULL)
    return hm__fail(HM_EACCES,
                    "%s is owned by %s, and only files of this process's user %s or root are "
                    "loaded; refusing to load it (fix: build it as that user, or chown it; "
                    "HM_FLAG_ALLOW_WRITABLE waives this)",
                    path, who, me);
  return hm__fail(HM_EACCES,
                  "%s: its directory %s is owned by %s, and only directories of this process's "
                  "user %s or root are trusted; refusing to load it (fix: keep modules in a "
                  "directory of your own; HM_FLAG_ALLOW_WRITABLE waives this)",
                  path, dir, who, me);
}

static int check_file(const hm__allocator *a, int fd, const struct stat *st, const char *path) {
  char why[400];
  int kind;
  if (!trusted_owner(st->st_uid))
    return owner_refused(a, st->st_uid, path, NULL);
  if ((kind = other_writers(a, fd, st, why, sizeof why)) != 0)
    return hm__fail(HM_EACCES,
                    "%s is writable by %s; refusing to load it (fix: chmod %s %s; "
                    "HM_FLAG_ALLOW_WRITABLE waives this)",
                    path, why, chmod_fix(kind), path);
  return 0;
}

/* The directory `dst` (open as dfd, shown as `dir`) that holds the entry `est` on the way
 * to the module at `path`. */
static int check_dir(const hm__allocator *a, int dfd, const struct stat *dst,
                     const struct stat *est, const char *dir, const char *path) {
  char who[300], why[400];
  int kind;
  if (!trusted_owner(dst->st_uid))
    return owner_refused(a, dst->st_uid, path, dir);
  if ((kind = other_writers(a, dfd, dst, why, sizeof why)) == 0)
    return 0;
  if ((dst->st_mode & S_ISVTX) && est->st_uid == geteuid())
    return 0; /* sticky: only we, root and the directory's owner can replace our entry */
  if (dst->st_mode & S_ISVTX) {
    user_str(a, est->st_uid, who, sizeof who);
    return hm__fail(HM_EACCES,
                    "%s: its directory %s is writable by %s, and although it is sticky, the "
                    "entry there is owned by %s, not by this process's user; refusing to load "
                    "it (fix: keep modules in a directory of your own; HM_FLAG_ALLOW_WRITABLE "
                    "waives this)",
                    path, dir, why, who);
  }
  return hm__fail(HM_EACCES,
                  "%s: its directory %s is writable by %s (and not sticky), who could replace "
                  "the module; refusing to load it (fix: chmod %s %s; HM_FLAG_ALLOW_WRITABLE "
                  "waives this)",
                  path, dir, why, chmod_fix(kind), dir);
}

/* `path` into the directory that holds its last name ("." if none) and that name. */
static int split(const char *path, char *dir, size_t dn, char *name, size_t nn) {
  const char *slash = strrchr(path, '/');
  size_t dlen = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
  const char *base = slash == NULL ? path : slash + 1;
  if (dlen >= dn || strlen(base) >= nn)
    return -ENAMETOOLONG;
  if (slash == NULL) {
    memcpy(dir, ".", 2);
  } else {
    memcpy(dir, path, dlen);
    dir[dlen] = '\0';
  }
  memcpy(name, base, strlen(base) + 1); /* fits: checked above */
  return 0;
}

static int open_dir(int at, const char *dir) {
  int fd = openat(at, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 && errno == EACCES)
    fd = openat(at, dir, O_PATH | O_DIRECTORY | O_CLOEXEC); /* searchable, not readable */
  return fd;
}

static int replaced(const char *path) {
  return hm__fail(HM_EAGAIN, "%s was replaced while it was being read", path);
}

/* A name that is not there: replaced, when the file was opened already (`st`), else missing
 * as open() would have said. */
static int gone(const char *path, const struct stat *st) {
  return st != NULL ? replaced(path)
                    : hm__fail(-ENOENT, "cannot open %s: %s", path, strerror(ENOENT));
}

/* The end of the walk: the entry `est`, called `name` in dfd. Checked against the open file
 * `st`; or, with no file open yet (st NULL), opened here when it is a regular file (*fd; -1
 * otherwise, for the caller to refuse it by est's type, unopened). */
static int walk_end(int dfd, const char *name, const struct stat *est, const struct stat *st,
                    const char *path, int *fd) {
  int e;
  if (st != NULL)
    return est->st_dev != st->st_dev || est->st_ino != st->st_ino ? replaced(path) : 0;
  if (!S_ISREG(est->st_mode))
    return 0;
  /* The very entry looked at: a name swapped for a link since is not followed. */
  *fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
  if (*fd >= 0)
    return 0;
  e = errno;
  return e == ENOENT || e == ELOOP ? replaced(path)
                                   : hm__fail(-e, "cannot open %s: %s", path, strerror(e));
}

/* Walk from the directory of `path` through the symbolic links its last name leads through
 * to the file at the end, checking each directory on the way (walk_end says what then). */
static int check_place(const hm__allocator *a, const struct stat *st, const char *path,
                       int *fd, struct stat *end) {
  char dir[PATH_MAX], name[NAME_MAX + 1], link[PATH_MAX], shown[PATH_MAX], tmp[PATH_MAX];
  int dfd, hops, rc = split(path, dir, sizeof dir, name, sizeof name);
  if (rc != 0)
    return hm__fail(rc, "%s: path too long", path);
  memcpy(shown, dir, strlen(dir) + 1); /* both PATH_MAX */
  dfd = open_dir(AT_FDCWD, dir);
  if (dfd < 0)
    return errno == ENOENT ? gone(path, st)
                           : hm__fail(-errno, "%s: cannot open its directory %s: %s", path,
                                      dir, strerror(errno));
  for (hops = 0;; hops++) {
    struct stat dst, *est = end;
    ssize_t n;
    if (fstat(dfd, &dst) != 0 || fstatat(dfd, name, est, AT_SYMLINK_NOFOLLOW) != 0) {
      rc = errno == ENOENT ? gone(path, st)
                           : hm__fail(-errno, "%s: cannot look at %s in %s: %s", path, name,
                                      shown, strerror(errno));
      break;
    }
    if ((rc = check_dir(a, dfd, &dst, est, shown, path)) != 0)
      break;
    if (!S_ISLNK(est->st_mode)) {
      rc = walk_end(dfd, name, est, st, path, fd);
      break;
    }
    if (hops == HM__MAX_LINKS) {
      rc = hm__fail(-ELOOP, "%s: a loop of symbolic links (or more than %d in a row)", path,
                    HM__MAX_LINKS);
      break;
    }
    n = readlinkat(dfd, name, link, sizeof link - 1);
    if (n <= 0) {
      rc = replaced(path);
      break;
    }
    link[n] = '\0';
    if ((rc = split(link, dir, sizeof dir, name, sizeof name)) != 0) {
      rc = hm__fail(rc, "%s: the link %s in %s is too long", path, link, shown);
      break;
    }
    if (strchr(link, '/') != NULL) {
      int next = open_dir(dfd, dir);
      if (next < 0) {
        rc = errno == ENOENT ? replaced(path)
                             : hm__fail(-errno, "%s: cannot open the directory %s: %s", path,
                                        dir, strerror(errno));
        break;
      }
      close(dfd);
      dfd = next;
      if (link[0] == '/')
        snprintf(shown, sizeof shown, "%s", dir);
      else if (snprintf(tmp, sizeof tmp, "%s/%s", shown, dir) < (int)sizeof tmp)
        memcpy(shown, tmp, sizeof shown);
    }
  }
  close(dfd);
  return rc;
}

int hm__file_trusted(const hm__allocator *a, int fd, const struct stat *st, const char *path,
                     unsigned flags) {
  struct stat end;
  int rc;
  if (flags & HM__READ_ALLOW_WRITABLE)
    return 0;
  if ((rc = check_file(a, fd, st, path)) != 0)
    return rc;
  /* Opened by hm__file_open_placed: its place was walked before. */
  if (flags & HM__READ_PLACED)
    return 0;
  return check_place(a, st, path, NULL, &end);
}

int hm__file_open_placed(const hm__allocator *a, const char *path, int *fd, struct stat *end) {
  *fd = -1;
  return check_place(a, NULL, path, fd, end);
}
