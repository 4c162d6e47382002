/*
 * The loader turns a path into a loaded version, or an error that leaves nothing behind.
 * It does not decide when to reload; the registry and the watcher do.
 *
 * The file is read into memory once, and everything after that works on those bytes: the
 * ELF check, the content hash and the private copy. So the copy that dlopen maps is exactly
 * what was checked, and a build that rewrites the source later cannot change loaded code.
 */
#include "internal.h"

#include "hotmod/module.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Larger files are refused rather than read into memory whole. */
#define HM__MAX_MODULE_SIZE ((off_t)1 << 30)

long long hm__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

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

static void fill_id(hm__file_id *id, const struct stat *st) {
  id->dev = st->st_dev;
  id->ino = st->st_ino;
  id->size = st->st_size;
  id->mtime_ns = (long long)st->st_mtim.tv_sec * 1000000000ll + st->st_mtim.tv_nsec;
}

static int same_stat(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Read the whole regular file at `path` into a new buffer. */
static int read_file(const hm__allocator *a, const char *path, unsigned flags,
                     unsigned char **out, size_t *outlen, hm__file_id *id, char *err,
                     size_t errlen) {
  struct stat st, st2;
  unsigned char *buf = NULL;
  size_t len, got = 0;
  int fd, rc = 0;

  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return rc;
  }
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = HM_ENOTELF;
    snprintf(err, errlen, "%s is not a regular file", path);
    goto out;
  }
  if ((st.st_mode & S_IWOTH) && !(flags & HM_FLAG_ALLOW_WRITABLE)) {
    rc = HM_EACCES;
    snprintf(err, errlen, "%s is writable by other users; refusing to load it", path);
    goto out;
  }
  if (st.st_size > HM__MAX_MODULE_SIZE) {
    rc = HM_ENOTELF;
    snprintf(err, errlen, "%s is too large (%lld bytes)", path, (long long)st.st_size);
    goto out;
  }
  len = (size_t)st.st_size;
  buf = hm__malloc(a, len ? len : 1);
  if (buf == NULL) {
    rc = HM_ENOMEM;
    snprintf(err, errlen, "out of memory reading %s", path);
    goto out;
  }
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = HM_EIO;
      snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
      goto out;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  /* A writer still at work shows as a short read or a changed size or mtime. */
  if (got != len || fstat(fd, &st2) != 0 || !same_stat(&st, &st2)) {
    rc = HM_EAGAIN;
    snprintf(err, errlen, "%s changed while it was being read", path);
    goto out;
  }
  fill_id(id, &st);
  id->hash = hm__hash_bytes(buf, len);
  *out = buf;
  *outlen = len;
  buf = NULL;
out:
  hm__free(a, buf);
  close(fd);
  return rc;
}

static int write_copy(const char *path, const char *copy, const unsigned char *buf, size_t len,
                      char *err, size_t errlen) {
  size_t put = 0;
  int fd = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
  if (fd < 0) {
    int rc = -errno;
    snprintf(err, errlen, "cannot create private copy %s of %s: %s", copy, path,
             strerror(errno));
    return rc;
  }
  while (put < len) {
    ssize_t n = write(fd, buf + put, len - put);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      snprintf(err, errlen, "cannot write private copy %s of %s: %s", copy, path,
               n < 0 ? strerror(errno) : "short write");
      close(fd);
      unlink(copy);
      return HM_EIO;
    }
    put += (size_t)n;
  }
  if (close(fd) != 0) {
    snprintf(err, errlen, "cannot write private copy %s of %s: %s", copy, path,
             strerror(errno));
    unlink(copy);
    return HM_EIO;
  }
  return 0;
}

/* The copy's file name: the module name with anything but [A-Za-z0-9_.-] replaced, so a name
 * can never climb out of the private directory. */
static char *copy_name(const hm__allocator *a, const char *dir, const char *name,
                       unsigned long seq) {
  size_t n = strlen(dir) + strlen(name) + 48, i;
  char *p = hm__malloc(a, n), *base;
  if (p == NULL)
    return NULL;
  snprintf(p, n, "%s/", dir);
  base = p + strlen(p);
  snprintf(base, n - (size_t)(base - p), "%s.%lu.so", name, seq);
  for (i = 0; base[i] && i < strlen(name); i++) {
    char c = base[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-' || (c == '.' && i > 0)))
      base[i] = '_';
  }
  return p;
}

int hm__load_file(const hm__allocator *a, const char *dir, const char *name,
                  unsigned long seq, const char *path, unsigned flags, hm__version **out,
                  char *err, size_t errlen) {
  unsigned char *buf = NULL;
  size_t len = 0;
  hm__file_id id;
  hm__elf_info elf;
  char why[200];
  char *copy = NULL;
  void *dl = NULL;
  const hm_module_desc *desc;
  hm__version *v;
  int rc;

  rc = read_file(a, path, flags, &buf, &len, &id, err, errlen);
  if (rc != 0)
    return rc;
  memset(&elf, 0, sizeof elf);
  why[0] = '\0';
  rc = hm__elf_check(buf, len, &elf, why, sizeof why);
  if (rc != 0) {
    snprintf(err, errlen, "%s: %s", path, why[0] ? why : hm_strerror(rc));
    goto fail;
  }
  copy = copy_name(a, dir, name, seq);
  if (copy == NULL) {
    rc = HM_ENOMEM;
    snprintf(err, errlen, "out of memory loading %s", path);
    goto fail;
  }
  rc = write_copy(path, copy, buf, len, err, errlen);
  if (rc != 0)
    goto fail;
  hm__free(a, buf);
  buf = NULL;

  /* RTLD_LOCAL keeps each version's symbols to itself, so a version's calls between its own
   * functions bind inside that version (invariant I3). RTLD_NOW reports a missing symbol here
   * instead of killing the process at the first call. */
  dl = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
  if (dl == NULL) {
    const char *e = dlerror();
    rc = HM_EDLOPEN;
    snprintf(err, errlen, "dlopen %s failed: %s", path, e ? e : "unknown error");
    goto fail;
  }
  desc = (const hm_module_desc *)dlsym(dl, HM_MODULE_DESC_SYMBOL);
  if (desc != NULL && (desc->abi != HM_MODULE_ABI || desc->size < sizeof(hm_module_desc))) {
    rc = HM_EABI;
    snprintf(err, errlen, "%s was built for module ABI %u (size %u); this hotmod needs ABI %d",
             path, desc->abi, desc->size, HM_MODULE_ABI);
    goto fail;
  }
  v = hm__calloc(a, 1, sizeof *v);
  if (v == NULL) {
    rc = HM_ENOMEM;
    snprintf(err, errlen, "out of memory loading %s", path);
    goto fail;
  }
  v->refs = 1;
  v->dl = dl;
  v->copy_path = copy;
  v->id = id;
  v->load_ns = hm__now_ns();
  v->desc = desc;
  *out = v;
  return 0;

fail:
  if (dl != NULL)
    dlclose(dl);
  if (copy != NULL) {
    unlink(copy);
    hm__free(a, copy);
  }
  hm__free(a, buf);
  return rc;
}

static int find_mapped(struct dl_phdr_info *info, size_t size, void *path) {
  (void)size;
  return info->dlpi_name != NULL && strcmp(info->dlpi_name, path) == 0;
}

int hm__unload_version(const hm__allocator *a, hm__version *v) {
  int leaked = 0;
  if (v->dl != NULL) {
    if (v->desc != NULL && v->desc->unload != NULL)
      v->desc->unload(v->handed_over);
    dlclose(v->dl);
    /* dlclose returns 0 even when it keeps the object (NODELETE, unique symbols, a TLS
     * destructor pending): look for the copy among the loaded objects instead. */
    leaked = dl_iterate_phdr(find_mapped, v->copy_path) != 0;
    v->dl = NULL;
  }
  if (v->copy_path != NULL) {
    unlink(v->copy_path);
    hm__free(a, v->copy_path);
  }
  hm__free(a, v);
  return leaked;
}
