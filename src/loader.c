/*
 * The loader turns a file's bytes into a loaded version, or an error that leaves nothing
 * behind. It does not decide when to reload, nor what is current; the registry does.
 *
 * The bytes were read once (file.c), and everything here works on them: the ELF check, the
 * private copy and so dlopen. So the copy that dlopen maps is exactly what was checked, and
 * a build that rewrites the source later cannot change loaded code.
 */
#include "internal.h"

#include "hotmod/module.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* A failed write or close: HM_EIO, or the errno when the file system is full (the caller
 * may try another place). */
static int copy_failed(const char *path, const char *copy, int fd, const char *why, int e) {
  int rc = e == ENOSPC || e == EDQUOT ? -e : HM_EIO;
  hm__fail(rc, "cannot write private copy %s of %s: %s", copy, path, why);
  if (fd >= 0)
    close(fd);
  unlink(copy);
  return rc;
}

static int write_copy(const char *path, const char *copy, const unsigned char *buf,
                      size_t len) {
  size_t put = 0;
  int fd = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
  if (fd < 0)
    return hm__fail(-errno, "cannot create private copy %s of %s: %s", copy, path,
                    strerror(errno));
  while (put < len) {
    ssize_t n = write(fd, buf + put, len - put);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return copy_failed(path, copy, fd, n < 0 ? strerror(errno) : "short write",
                         n < 0 ? errno : 0);
    put += (size_t)n;
  }
  if (close(fd) != 0)
    return copy_failed(path, copy, -1, strerror(errno), errno);
  return 0;
}

/* The longest part of a module name a copy's file name carries: with ".SEQ.so" (at most 24
 * characters) it stays within NAME_MAX (255) for every valid name (up to 255 characters)
 * and every sequence number. The sequence number alone makes the name unique. */
#define HM__COPY_NAME_MAX 200

/* The copy's file name: the module name (its first HM__COPY_NAME_MAX characters) with
 * anything but [A-Za-z0-9_.-] replaced, so a name can never climb out of the private
 * directory. */
static char *copy_name(const hm__allocator *a, const char *dir, const char *name,
                       unsigned long seq) {
  size_t namelen = strnlen(name, HM__COPY_NAME_MAX), n = strlen(dir) + namelen + 48, i;
  char *p = hm__malloc(a, n), *base;
  if (p == NULL)
    return NULL;
  snprintf(p, n, "%s/", dir);
  base = p + strlen(p);
  snprintf(base, n - (size_t)(base - p), "%.*s.%lu.so", (int)namelen, name, seq);
  for (i = 0; base[i] && i < namelen; i++) {
    char c = base[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-' || (c == '.' && i > 0)))
      base[i] = '_';
  }
  return p;
}

/* A descriptor this library can use: the same ABI, and at least the fields every ABI 2
 * build has (self_test came later: it is read only when `size` covers it). */
static int desc_ok(unsigned abi, unsigned size) {
  return abi == HM_MODULE_ABI && size >= HM_MODULE_DESC_MIN_SIZE;
}

static int abi_refused(const char *path, unsigned abi, unsigned size) {
  return hm__fail(HM_EABI,
                  "%s was built for module ABI %u (descriptor size %u); this hotmod needs ABI "
                  "%d (size %zu or more): rebuild it against this hotmod/module.h",
                  path, abi, size, HM_MODULE_ABI, (size_t)HM_MODULE_DESC_MIN_SIZE);
}

int hm__desc_check(const char *path, const hm__elf_info *elf) {
  if (elf->has_desc && !desc_ok(elf->desc_abi, elf->desc_size))
    return abi_refused(path, elf->desc_abi, elf->desc_size);
  /* A module that calls the API itself must use this very library: another libhotmod in the
   * process would have read sides of its own, which grace periods here never wait for. */
  if (elf->hotmod_needed != NULL && strcmp(elf->hotmod_needed, HM__SONAME) != 0)
    return hm__fail(HM_EABI,
                    "%s is linked against %s, but this hotmod is %s: rebuild it against this "
                    "hotmod (two copies of the library in one process would not see each "
                    "other's live calls)",
                    path, elf->hotmod_needed, HM__SONAME);
  return 0;
}

/* Refuse for the first finding in `bits`, in words. */
static int lint_refused(const char *path, const hm__elf_info *elf, unsigned bits) {
  unsigned i;
  char what[512];
  for (i = 0; i < hm__lint_count(); i++) {
    unsigned bit = hm__lint_bit(i);
    if (bits & bit) {
      hm__lint_what(elf, bit, what, sizeof what);
      return hm__fail(HM_ELINT, "%s: %s (%s); fix: %s", path, what, hm__lint_name(bit),
                      hm__lint_fix(bit));
    }
  }
  return hm__fail(HM_ELINT, "%s: refused by the lint", path);
}

int hm__load_bytes(const hm__allocator *a, const char *dir, const char *name,
                   unsigned long seq, const char *path, const hm__file *f,
                   const hm__load_opts *o, hm__elf_info *info, hm__version **out) {
  hm__elf_info elf;
  char why[200];
  char *copy = NULL;
  void *dl = NULL;
  const hm_module_desc *desc;
  hm__version *v;
  int rc;

  memset(&elf, 0, sizeof elf);
  rc = hm__elf_check(f->buf, f->len, &elf, why, sizeof why);
  if (rc != 0)
    return hm__fail(rc, "%s: %s", path, why[0] ? why : hm_strerror(rc));
  /* Before dlopen runs any of its code (constructors included). */
  if ((rc = hm__desc_check(path, &elf)) != 0)
    return rc;
  if (info != NULL)
    *info = elf;
  if (elf.lint & o->reject_lint)
    return lint_refused(path, &elf, elf.lint & o->reject_lint);
  copy = copy_name(a, dir, name, seq);
  if (copy == NULL)
    return hm__fail(HM_ENOMEM, "out of memory loading %s", path);
  rc = write_copy(path, copy, f->buf, f->len);
  if (rc != 0) {
    hm__free(a, copy);
    return rc;
  }
  /* The child maps the very copy the host would: the bytes checked above. */
  if (o->probe != NULL && (rc = hm__probe_run(o->probe, copy)) != 0)
    goto fail;

  /* RTLD_LOCAL keeps each version's symbols to itself, so a version's calls between its own
   * functions bind inside that version (invariant I3). RTLD_NOW reports a missing symbol here
   * instead of killing the process at the first call. */
  dl = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
  if (dl == NULL) {
    const char *e = dlerror();
    rc = hm__fail(HM_EDLOPEN, "dlopen %s failed: %s", path, e ? e : "unknown error");
    goto fail;
  }
  /* A file whose descriptor the preflight could not find (no hash tables) is checked here,
   * after its constructors ran. */
  desc = (const hm_module_desc *)dlsym(dl, HM_MODULE_DESC_SYMBOL);
  if (desc != NULL && !desc_ok(desc->abi, desc->size)) {
    rc = abi_refused(path, desc->abi, desc->size);
    goto fail;
  }
  v = hm__calloc(a, 1, sizeof *v);
  if (v == NULL) {
    rc = hm__fail(HM_ENOMEM, "out of memory loading %s", path);
    goto fail;
  }
  v->refs = 1;
  v->dl = dl;
  v->copy_path = copy;
  v->id = f->id;
  v->load_ns = hm__now_ns();
  v->desc = desc;
  v->a = *a;
  *out = v;
  return 0;

fail:
  if (dl != NULL)
    dlclose(dl);
  unlink(copy);
  hm__free(a, copy);
  return rc;
}

int hm__resolve(const hm__version *v, const char *sym, hm_fn *out) {
  void *p = dlsym(v->dl, sym);
  if (p == NULL)
    return HM_ENOSYM;
  /* POSIX guarantees that dlsym's object pointer converts to a function pointer. */
  memcpy(out, &p, sizeof p);
  return 0;
}

static int find_mapped(struct dl_phdr_info *info, size_t size, void *path) {
  (void)size;
  return info->dlpi_name != NULL && strcmp(info->dlpi_name, path) == 0;
}

int hm__unload_version(hm__version *v, int run_hook) {
  hm__allocator a = v->a;
  int leaked = 0;
  if (v->dl != NULL) {
    if (run_hook && !v->hook_done && v->desc != NULL && v->desc->unload != NULL)
      v->desc->unload(v->handed_over);
    v->hook_done = 1;
    dlclose(v->dl);
    /* dlclose returns 0 even when it keeps the object (NODELETE, unique symbols, a TLS
     * destructor pending): look for the copy among the loaded objects instead. */
    leaked = dl_iterate_phdr(find_mapped, v->copy_path) != 0;
    v->dl = NULL;
  }
  if (v->copy_path != NULL) {
    if (!__atomic_load_n(&v->copy_kept, __ATOMIC_ACQUIRE))
      unlink(v->copy_path);
    hm__free(&a, v->copy_path);
  }
  hm__free(&a, v);
  return leaked;
}
