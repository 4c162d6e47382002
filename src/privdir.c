/*
 * Private directories: where a registry keeps the copies it loads, and what happens to
 * those that a killed or crashed process left behind.
 *
 * A registry's directory is named hotmod-priv-XXXXXX (mkdtemp, mode 0700) and the registry
 * holds flock(LOCK_EX) on it, through a descriptor of the directory itself, for as long as
 * it lives. The kernel drops that lock when the last descriptor of that open goes away,
 * however the process ends; so "nobody holds the lock" means "no registry uses this
 * directory", with no pid in the name (a pid is reused, and means nothing in another pid
 * namespace sharing the tmpfs). Older hotmod versions named theirs hotmod-XXXXXX and held
 * no lock: those are never touched, since a running older program may still use one.
 *
 * The descriptor is O_CLOEXEC, so a program the host execs does not inherit the lock. A
 * child made by fork() would share it (flock locks belong to the open, which fork shares):
 * the registry's fork handler closes the child's descriptor (close, never LOCK_UN, which
 * would unlock the parent's too). The child cannot change a registry it inherited, and its
 * mapped versions stay mapped even if the directory is removed, so it has no need of it.
 *
 * A new registry sweeps every place a private directory can be: its own private_root,
 * $TMPDIR, /tmp, $XDG_RUNTIME_DIR and /dev/shm. It removes a directory only if the name
 * matches exactly, it is a real directory (never through a symbolic link) owned by this
 * effective user that nobody else may enter, and its lock can be taken at once; inside,
 * only the files the loader makes (regular files named NAME.SEQ.so), by descriptor,
 * without following links. Anything else found there stays, and so does the directory.
 * The work is bounded: so many directory entries read per place, so many candidates looked
 * at and removed per start; the rest waits for the next start.
 *
 * Where a registry makes its directory: private_root, else $TMPDIR, else a tmpfs
 * ($XDG_RUNTIME_DIR, then /dev/shm) that is exec-capable and ours to use, else /tmp. A tmpfs
 * chosen by default can fill up (/dev/shm is 64 MiB in many containers): a copy that finds
 * no room there goes to a second directory, made when first needed, under $TMPDIR or /tmp
 * (registry.c). Named copies on tmpfs, unlike memfd ones, keep gdb -p and perf working.
 *
 * Profiling mode's directories are named hotmod-prof-XXXXXX and live on disk (private_root,
 * else ~/.cache/hotmod, else /var/tmp). Their registry lets go of the lock at its end and
 * leaves the copies for profilers that read them after the process (perf record does); a
 * sweep removes such a directory only once it has also been left unchanged for a minute.
 * A copy with split debug information lives in a directory of its own, NAME.SEQ.d, beside
 * its debug file: it goes with the copy (hm__copy_unlink) and with the sweep.
 *
 * Layer 2 (docs/architecture.md): calls only the leaves.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#define PREFIX "hotmod-priv-"
#define PREFIX_LEN (sizeof PREFIX - 1)
#define PROF_PREFIX "hotmod-prof-" /* profiling mode's: kept after the registry (same length) */
#define TEMPLATE_X 6 /* mkdtemp's random part */

enum {
  SWEEP_MAX_ENTRIES = 20000, /* directory entries read in one place */
  SWEEP_MAX_CANDIDATES = 256, /* matching directories opened per start (locked ones too) */
  SWEEP_MAX_REMOVED = 32,     /* stale directories removed per start */
  SWEEP_MAX_FILES = 4096,     /* entries read inside one stale directory */
  SWEEP_MAX_VERSION_FILES = 16, /* entries read inside one copy's own directory */
  MAKE_TRIES = 8,             /* a sweeper in another process took our fresh directory */
  PROF_IDLE_S = 60            /* a profiling directory no registry holds is removed once
                                 nothing changed it for this long: perf record reads the
                                 copies just after the host exits */
};

static int is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A private directory's name, exactly: 1 for a registry's, 2 for profiling mode's. */
static int name_ok(const char *name) {
  size_t i;
  int kind = strncmp(name, PREFIX, PREFIX_LEN) == 0        ? 1
             : strncmp(name, PROF_PREFIX, PREFIX_LEN) == 0 ? 2
                                                           : 0;
  if (kind == 0 || strlen(name) != PREFIX_LEN + TEMPLATE_X)
    return 0;
  for (i = PREFIX_LEN; name[i] != '\0'; i++)
    if (!is_alnum(name[i]))
      return 0;
  return kind;
}

/* A name the loader makes, [A-Za-z0-9_-][A-Za-z0-9_.-]*.DIGITS`suffix`: a private copy
 * (".so"), or the directory of its own that a copy with split debug information lives in,
 * beside its debug file (".d"). */
static int loader_name_ok(const char *name, const char *suffix) {
  size_t n = strlen(name), k = strlen(suffix), i, end;
  if (n < k + 3 || strcmp(name + n - k, suffix) != 0)
    return 0;
  end = n - k;
  i = end;
  while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9')
    i--;
  if (i == end || i < 2 || name[i - 1] != '.')
    return 0;
  if (name[0] == '.')
    return 0;
  for (end = i - 1, i = 0; i < end; i++)
    if (!is_alnum(name[i]) && name[i] != '_' && name[i] != '-' && name[i] != '.')
      return 0;
  return 1;
}

static int copy_name_ok(const char *name) { return loader_name_ok(name, ".so"); }

/* Remove a copy's own directory `name` in the directory open as dfd: the regular files of
 * this user in it (the copy and its debug file), then the directory, never following a
 * link. */
static void remove_version_dir(int dfd, const char *name) {
  struct stat st;
  struct dirent *e;
  DIR *d;
  int n = 0, vfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (vfd < 0)
    return;
  if (fstat(vfd, &st) != 0 || st.st_uid != geteuid() || (d = fdopendir(dup(vfd))) == NULL) {
    close(vfd);
    return;
  }
  while ((e = readdir(d)) != NULL && n++ < SWEEP_MAX_VERSION_FILES) {
    struct stat fs;
    if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || strcmp(e->d_name, "..") == 0))
      continue;
    if (fstatat(vfd, e->d_name, &fs, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(fs.st_mode) &&
        fs.st_uid == geteuid())
      unlinkat(vfd, e->d_name, 0);
  }
  closedir(d);
  close(vfd);
  unlinkat(dfd, name, AT_REMOVEDIR);
}

void hm__copy_unlink(const char *copy) {
  const char *base = strrchr(copy, '/'), *parent;
  size_t stem;
  char dir[4096];
  int dfd;
  unlink(copy);
  /* Only a copy at DIR/NAME.SEQ.d/NAME.SEQ.so has a directory of its own: a few compares
   * for the others. */
  if (base == NULL || base == copy || (stem = strlen(base + 1)) < 4)
    return;
  stem -= 3; /* without ".so" */
  for (parent = base; parent > copy && parent[-1] != '/'; parent--)
    ;
  if ((size_t)(base - parent) != stem + 2 || memcmp(parent + stem, ".d", 2) != 0 ||
      memcmp(parent, base + 1, stem) != 0 || parent == copy ||
      (size_t)(parent - copy) >= sizeof dir)
    return;
  memcpy(dir, copy, (size_t)(parent - copy));
  dir[parent - copy] = '\0';
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return;
  memcpy(dir, parent, stem + 2);
  dir[stem + 2] = '\0';
  remove_version_dir(dfd, dir);
  close(dfd);
}

unsigned long long hm__copy_bytes(const char *copy) {
  const char *base = strrchr(copy, '/');
  unsigned long long n = 0;
  struct stat st;
  struct dirent *e;
  DIR *d;
  char dir[4096];
  if (base == NULL || base - copy < 3 || memcmp(base - 2, ".d", 2) != 0 ||
      (size_t)(base - copy) >= sizeof dir)
    return stat(copy, &st) == 0 ? (unsigned long long)st.st_size : 0;
  /* A copy with a directory of its own: the copy and its debug file. */
  memcpy(dir, copy, (size_t)(base - copy));
  dir[base - copy] = '\0';
  if ((d = opendir(dir)) == NULL)
    return 0;
  while ((e = readdir(d)) != NULL)
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
      n += (unsigned long long)st.st_size;
  closedir(d);
  return n;
}

int hm__copy_dir_make(const char *copy) {
  const char *base = strrchr(copy, '/');
  char dir[4096];
  if (base == NULL || (size_t)(base - copy) >= sizeof dir)
    return -ENAMETOOLONG;
  memcpy(dir, copy, (size_t)(base - copy));
  dir[base - copy] = '\0';
  return mkdir(dir, 0700) == 0 ? 0 : -errno;
}

/* Remove the loader's copies from the directory open as dfd, then the directory `name` in
 * `parent` if it is still the one open (same inode) and now empty. 1 if it is gone. */
static int empty_and_remove(int parent, const char *name, int dfd) {
  struct stat st, here;
  DIR *d;
  struct dirent *e;
  int n = 0, fd = dup(dfd);
  if (fd < 0 || fstat(dfd, &st) != 0) {
    if (fd >= 0)
      close(fd);
    return 0;
  }
  d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return 0;
  }
  while ((e = readdir(d)) != NULL && n++ < SWEEP_MAX_FILES) {
    struct stat fs;
    int dir = loader_name_ok(e->d_name, ".d");
    if (!dir && !copy_name_ok(e->d_name))
      continue; /* also . and .. */
    if (fstatat(dfd, e->d_name, &fs, AT_SYMLINK_NOFOLLOW) != 0 || fs.st_uid != geteuid())
      continue;
    if (dir && S_ISDIR(fs.st_mode))
      remove_version_dir(dfd, e->d_name);
    else if (!dir && S_ISREG(fs.st_mode))
      unlinkat(dfd, e->d_name, 0);
  }
  closedir(d);
  if (fstatat(parent, name, &here, AT_SYMLINK_NOFOLLOW) != 0 || here.st_dev != st.st_dev ||
      here.st_ino != st.st_ino)
    return 0;
  return unlinkat(parent, name, AT_REMOVEDIR) == 0;
}

void hm__privdir_remove(const char *dir, int lock_fd) {
  const char *slash = strrchr(dir, '/');
  char parent[4096];
  int pfd;
  if (lock_fd < 0) /* not ours to remove (a forked child's inherited registry) */
    return;
  if (slash != NULL && (size_t)(slash - dir) < sizeof parent) {
    size_t n = slash == dir ? 1 : (size_t)(slash - dir);
    memcpy(parent, dir, n);
    parent[n] = '\0';
    pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd >= 0) {
      empty_and_remove(pfd, slash + 1, lock_fd);
      close(pfd);
    }
  }
  close(lock_fd); /* the lock goes with the last descriptor of this open */
}

void hm__privdir_release(int lock_fd) {
  if (lock_fd < 0)
    return;
  /* The time a later sweep counts the idle minute from: now, when the copies' last reader
   * (perf record, after the host exits) may start. */
  futimens(lock_fd, NULL);
  close(lock_fd);
}

/* The private directory `name` in `root` (open as rfd): removed if it is stale. A profiling
 * directory (kind 2) also waits until it has been left alone for PROF_IDLE_S. */
static int sweep_one(int rfd, const char *name, int kind) {
  struct stat st;
  int removed = 0, dfd = openat(rfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0)
    return 0;
  if (fstat(dfd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
      (st.st_mode & 077) == 0 && flock(dfd, LOCK_EX | LOCK_NB) == 0 &&
      fstat(dfd, &st) == 0 && st.st_nlink > 0 && /* not removed by another sweeper meanwhile */
      (kind == 1 || st.st_mtime + PROF_IDLE_S < time(NULL)))
    removed = empty_and_remove(rfd, name, dfd);
  close(dfd);
  return removed;
}

typedef struct sweep_state {
  struct stat seen[6];
  int nseen;
  int candidates, removed;
} sweep_state;

static void sweep_root(sweep_state *s, const char *root) {
  struct stat st;
  DIR *d;
  struct dirent *e;
  int i, n = 0, rfd;
  if (root == NULL || root[0] == '\0')
    return;
  rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rfd < 0)
    return;
  if (fstat(rfd, &st) != 0 || s->nseen == (int)(sizeof s->seen / sizeof s->seen[0])) {
    close(rfd);
    return;
  }
  for (i = 0; i < s->nseen; i++) {
    if (s->seen[i].st_dev == st.st_dev && s->seen[i].st_ino == st.st_ino) {
      close(rfd);
      return; /* the same place by another name */
    }
  }
  s->seen[s->nseen++] = st;
  d = fdopendir(dup(rfd));
  if (d == NULL) {
    close(rfd);
    return;
  }
  while ((e = readdir(d)) != NULL && n++ < SWEEP_MAX_ENTRIES &&
         s->candidates < SWEEP_MAX_CANDIDATES && s->removed < SWEEP_MAX_REMOVED) {
    int kind = name_ok(e->d_name);
    if (kind == 0)
      continue;
    s->candidates++;
    s->removed += sweep_one(rfd, e->d_name, kind);
  }
  closedir(d);
  close(rfd);
}

/* Profiling mode's default place, on disk and the user's own: $XDG_CACHE_HOME/hotmod, else
 * $HOME/.cache/hotmod, into buf. 0 if neither can be named. */
static int profile_place(char *buf, size_t n) {
  const char *cache = secure_getenv("XDG_CACHE_HOME"), *home = secure_getenv("HOME");
  int k;
  if (cache != NULL && cache[0] == '/')
    k = snprintf(buf, n, "%s/hotmod", cache);
  else if (home != NULL && home[0] == '/')
    k = snprintf(buf, n, "%s/.cache/hotmod", home);
  else
    return 0;
  return k > 0 && (size_t)k < n;
}

int hm__privdir_sweep(const char *private_root) {
  sweep_state s;
  char prof[4096];
  int saved = errno;
  memset(&s, 0, sizeof s);
  sweep_root(&s, private_root);
  if (profile_place(prof, sizeof prof))
    sweep_root(&s, prof);
  sweep_root(&s, secure_getenv("TMPDIR"));
  sweep_root(&s, "/tmp");
  sweep_root(&s, secure_getenv("XDG_RUNTIME_DIR"));
  sweep_root(&s, "/dev/shm");
  errno = saved;
  return s.removed;
}

/* Mounted noexec: copies there could not be mapped executable. -errno if statvfs fails. */
static int on_noexec(const char *root) {
  struct statvfs vfs;
  if (statvfs(root, &vfs) != 0)
    return -errno;
  return (vfs.f_flag & ST_NOEXEC) != 0;
}

/* A tmpfs directory a private directory may go in: exec-capable, writable and searchable by
 * us, and either ours alone or sticky (so nobody else can remove or rename what we make). */
static int usable_tmpfs(const char *root) {
  struct statfs fs;
  struct stat st;
  if (root == NULL || root[0] != '/' || statfs(root, &fs) != 0 ||
      (unsigned long)fs.f_type != (unsigned long)TMPFS_MAGIC || on_noexec(root) != 0 ||
      stat(root, &st) != 0 || !S_ISDIR(st.st_mode) ||
      faccessat(AT_FDCWD, root, W_OK | X_OK, AT_EACCESS) != 0)
    return 0;
  return (st.st_uid == geteuid() && (st.st_mode & 022) == 0) || (st.st_mode & S_ISVTX);
}

const char *hm__privdir_root(const char *private_root, int *tmpfs_default) {
  const char *root = private_root;
  *tmpfs_default = 0;
  if (root == NULL || root[0] == '\0')
    root = secure_getenv("TMPDIR");
  if (root != NULL && root[0] != '\0')
    return root;
  /* Nobody chose: memory is the fastest place for a copy that lives as long as its version
   * (creating a file on a disk file system has been seen to take milliseconds), and a
   * named copy there keeps gdb and perf able to find the module's symbols. */
  *tmpfs_default = 1;
  root = secure_getenv("XDG_RUNTIME_DIR");
  if (usable_tmpfs(root))
    return root;
  if (usable_tmpfs("/dev/shm"))
    return "/dev/shm";
  *tmpfs_default = 0;
  return "/tmp";
}

const char *hm__privdir_spill_root(void) {
  const char *root = secure_getenv("TMPDIR");
  return root != NULL && root[0] != '\0' ? root : "/tmp";
}

/* A directory of this user's alone at `path`, made (mode 0700) if missing: 0, or -1. */
static int own_dir(const char *path) {
  struct stat st;
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return -1;
  if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
    return -1;
  return (st.st_mode & 077) == 0 || chmod(path, 0700) == 0 ? 0 : -1;
}

const char *hm__privdir_profile_root(const char *private_root, char *buf, size_t n) {
  char *slash;
  if (private_root != NULL && private_root[0] != '\0')
    return private_root;
  /* On disk, not a tmpfs: every version's copy stays after its unload (1,000 reloads of a
   * 1 MB module would be 1 GB of memory there). ~/.cache is made if missing, as the XDG
   * rules ask (0700). */
  if (profile_place(buf, n)) {
    slash = strrchr(buf, '/');
    *slash = '\0';
    if (mkdir(buf, 0700) == 0 || errno == EEXIST) {
      *slash = '/';
      if (own_dir(buf) == 0)
        return buf;
    }
  }
  return "/var/tmp"; /* on disk too, and sticky: the directory made in it is ours alone */
}

/* mkdtemp, open and lock; 1 to try again with a new name (another process's sweep removed
 * it or holds it), 0 done, or an error. */
static int make_once(char *dir, int *lock_fd) {
  struct stat st, by_name;
  int fd;
  memcpy(dir + strlen(dir) - TEMPLATE_X, "XXXXXX", TEMPLATE_X);
  if (mkdtemp(dir) == NULL)
    return -errno;
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e != ENOENT)
      rmdir(dir);
    return e == ENOENT ? 1 : -e;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    if (e == EWOULDBLOCK) {
      close(fd);
      return 1;
    }
    /* A filesystem without flock (NFS gives EBADF on a read-only descriptor, some give
     * ENOLCK): the directory stays unlocked. A sweep never removes it, since a sweep
     * removes only what it could lock. */
  }
  /* Locked: no sweeper can take it from here on. Is it still the directory mkdtemp made? */
  if (fstat(fd, &st) != 0 || st.st_nlink == 0 || lstat(dir, &by_name) != 0 ||
      by_name.st_dev != st.st_dev || by_name.st_ino != st.st_ino) {
    close(fd);
    return 1;
  }
  *lock_fd = fd;
  return 0;
}

int hm__privdir_make(const hm__allocator *a, const char *root, char **out, int *lock_fd) {
  return hm__privdir_make_kind(a, root, 0, out, lock_fd);
}

int hm__privdir_make_kind(const hm__allocator *a, const char *root, int profile, char **out,
                          int *lock_fd) {
  size_t n = strlen(root) + sizeof "/" PREFIX "XXXXXX";
  char *dir;
  int rc = 1, tries;
  *out = NULL;
  *lock_fd = -1;
  /* Copies on a noexec mount could not be mapped executable: say so now, not at the first
   * load ("failed to map segment from shared object"). */
  rc = on_noexec(root);
  if (rc < 0)
    return hm__fail(rc, "cannot create the private directory in %s: %s", root, strerror(-rc));
  if (rc > 0)
    return hm__fail(HM_EACCES,
                    "cannot use %s as the private root: it is on a filesystem mounted noexec, "
                    "where module copies cannot be mapped executable; set private_root (or "
                    "TMPDIR) to a directory on a mount without noexec",
                    root);
  dir = hm__malloc(a, n);
  if (dir == NULL)
    return hm__fail(HM_ENOMEM, "out of memory creating the registry");
  snprintf(dir, n, "%s/%sXXXXXX", root, profile ? PROF_PREFIX : PREFIX);
  rc = 1;
  for (tries = 0; tries < MAKE_TRIES && rc == 1; tries++)
    rc = make_once(dir, lock_fd);
  if (rc != 0) {
    int e = rc == 1 ? EAGAIN : -rc;
    hm__free(a, dir);
    return hm__fail(-e, "cannot create the private directory in %s: %s", root, strerror(e));
  }
  *out = dir;
  return 0;
}
