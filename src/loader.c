/*
 * The loader turns a file's bytes into a loaded version, or an error that leaves nothing
 * behind. It does not decide when to reload, nor what is current; the registry does.
 *
 * The bytes were read once (file.c), and everything here works on them: the ELF check, the
 * private copy and so dlopen. So the copy that dlopen maps is exactly what was checked, and
 * a build that rewrites the source later cannot change loaded code.
 *
 * Layer 4 (docs/architecture.md): calls the ELF check, the lint, the probe, symbols.c,
 * dlgate.c and the leaves.
 */
#include "internal.h"

#include "hotmod/module.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A failed write or close: HM_EIO, or the errno when the file system is full (the caller
 * may try another place). */
static int copy_failed(const char *path, const char *copy, int fd, const char *why, int e) {
  int rc = e == ENOSPC || e == EDQUOT ? -e : HM_EIO;
  hm__fail(rc, "cannot write private copy %s of %s: %s", copy, path, why);
  if (fd >= 0)
    close(fd);
  hm__copy_unlink(copy);
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
 * directory. A copy with a debug file to go beside it (`own_dir`) gets a directory of its
 * own, NAME.SEQ.d/NAME.SEQ.so: the debug file's name is the build's, the same for every
 * version. */
/* Append n bytes of s at `at`; the decimal digits of v. Both return the end. Put together by
 * hand, not by snprintf: this runs on every reload, and formatting cost as much as a
 * tenth of a reload's own instructions. */
static char *put_bytes(char *at, const char *s, size_t n) {
  memcpy(at, s, n);
  return at + n;
}

static char *put_decimal(char *at, unsigned long v) {
  char d[24];
  int k = 0;
  do
    d[k++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (k > 0)
    *at++ = d[--k];
  return at;
}

static char *copy_name(const hm__allocator *a, const char *dir, const char *name,
                       unsigned long seq, int own_dir) {
  size_t namelen = strnlen(name, HM__COPY_NAME_MAX), i, dirlen = strlen(dir),
         n = dirlen + namelen + 48 + (own_dir ? namelen + 32 : 0);
  char *p = hm__malloc(a, n), *base, *at;
  if (p == NULL)
    return NULL;
  at = put_bytes(p, dir, dirlen);
  *at++ = '/';
  base = at;
  at = put_bytes(at, name, namelen);
  *at++ = '.';
  at = put_decimal(at, seq);
  if (own_dir) { /* NAME.SEQ.d/NAME.SEQ.so */
    at = put_bytes(at, ".d/", 3);
    at = put_bytes(at, name, namelen);
    *at++ = '.';
    at = put_decimal(at, seq);
  }
  memcpy(at, ".so", 4);
  for (i = 0; base[i] && i < namelen; i++) {
    char c = base[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-' || (c == '.' && i > 0)))
      base[i] = '_';
  }
  if (own_dir) /* the file's name: the directory's, less ".d", and ".so" */
    memcpy(strrchr(base, '/') + 1, base, namelen);
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

/* Signed builds: the first finding in `bits` brings code the build signature does not cover
 * (a library that is not a system one, $ORIGIN). */
static int untrusted_code(const char *path, const hm__elf_info *elf, unsigned bits) {
  unsigned bit = bits & HM__LINT_NEEDED ? HM__LINT_NEEDED : bits & (0u - bits);
  char what[512];
  hm__lint_what(elf, bit, what, sizeof what);
  return hm__fail(HM_EUNTRUSTED,
                  "%s: untrusted build: %s (%s), code its build signature does not cover; fix: "
                  "%s",
                  path, what, hm__lint_name(bit), hm__lint_fix(bit));
}

/* The module's descriptor, if it has one of its own: one that only a library it needs
 * exports is not looked for (dlsym would search them all, at every reload of a plain
 * module). */
static const hm_module_desc *own_descriptor(void *dl, struct link_map *lm,
                                            const hm__symtab *syms) {
  void *found = NULL;
  switch (hm__symtab_find(syms, HM_MODULE_DESC_SYMBOL, &found)) {
  case 1:
    return found;
  case 0: {
    /* dlsym, and the same rule: the object that holds it must be this one. */
    struct link_map *owner = NULL;
    Dl_info di;
    const hm_module_desc *desc = (const hm_module_desc *)dlsym(dl, HM_MODULE_DESC_SYMBOL);
    if (desc != NULL && lm != NULL &&
        dladdr1(desc, &di, (void **)&owner, RTLD_DL_LINKMAP) != 0 && owner != lm)
      return NULL;
    return desc;
  }
  }
  return NULL;
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
  hm__symtab syms;
  struct link_map *lm = NULL;
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
  if (elf.lint & o->untrusted_lint)
    return untrusted_code(path, &elf, elf.lint & o->untrusted_lint);
  copy = copy_name(a, dir, name, seq, elf.debuglink != NULL);
  if (copy == NULL)
    return hm__fail(HM_ENOMEM, "out of memory loading %s", path);
  if (elf.debuglink != NULL && (rc = hm__copy_dir_make(copy)) != 0) {
    rc = hm__fail(HM__ERR_FULL(rc) ? rc : HM_EIO,
                  "cannot create the directory of private copy %s of %s: %s", copy, path,
                  strerror(-rc));
    hm__free(a, copy);
    return rc;
  }
  rc = write_copy(path, copy, f->buf, f->len);
  if (rc != 0) {
    hm__free(a, copy);
    return rc;
  }
  /* Before dlopen: a debugger reads the debug file when it sees the object appear. */
  if (elf.debuglink != NULL)
    hm__debugfile_copy(o->debug_from != NULL ? o->debug_from : path, elf.debuglink,
                       elf.debuglink_crc, copy);
  /* The child maps the very copy the host would: the bytes checked above. */
  if (o->probe != NULL && (rc = hm__probe_run(o->probe, copy)) != 0)
    goto fail;

  /* RTLD_LOCAL keeps each version's symbols to itself, so a version's calls between its own
   * functions bind inside that version (invariant I3). RTLD_NOW reports a missing symbol here
   * instead of killing the process at the first call. */
  dl = hm__dlopen(copy, RTLD_NOW | RTLD_LOCAL);
  if (dl == NULL) {
    const char *e = dlerror();
    rc = hm__fail(HM_EDLOPEN, "dlopen %s failed: %s", path, e ? e : "unknown error");
    goto fail;
  }
  /* Where its symbols are in memory, so that later lookups need not take the loader's
   * lock (symbols.c): the load bias, and the dynamic section to check it by. */
  memset(&syms, 0, sizeof syms);
  if (dlinfo(dl, RTLD_DI_LINKMAP, &lm) == 0 && lm != NULL)
    hm__symtab_init(&syms, &elf, (uintptr_t)lm->l_addr, lm->l_ld);
  /* A file whose descriptor the preflight could not find (no hash tables) is checked here,
   * after its constructors ran. */
  desc = own_descriptor(dl, lm, &syms);
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
  v->syms = syms;
  v->a = *a;
  v->lint = elf.lint;
  v->keep = elf.lint & o->keep_lint;
  /* A module that deletes its keys in its unload hook leaves no key destructor behind. */
  if (desc != NULL && desc->size >= offsetof(hm_module_desc, flags) + sizeof desc->flags &&
      (desc->flags & HM_MODULE_KEYS_DELETED) != 0)
    v->keep &= ~(unsigned)HM__LINT_KEY_CREATE;
  *out = v;
  return 0;

fail:
  if (dl != NULL)
    hm__dlclose(dl);
  hm__copy_unlink(copy);
  hm__free(a, copy);
  return rc;
}

void *hm__symbol(const hm__version *v, const char *name) {
  void *p;
  if (hm__symtab_find(&v->syms, name, &p) == 1)
    return p;
  return dlsym(v->dl, name);
}

int hm__resolve(const hm__version *v, const char *sym, hm_fn *out) {
  void *p = hm__symbol(v, sym);
  if (p == NULL)
    return HM_ENOSYM;
  /* POSIX guarantees that dlsym's object pointer converts to a function pointer. */
  memcpy(out, &p, sizeof p);
  return 0;
}

/* Is the object loaded from `path` still mapped, and how much memory do its loadable
 * segments take (whole pages)? */
typedef struct mapped_find {
  const char *path;
  int found;
  unsigned long long bytes;
} mapped_find;

static int find_mapped(struct dl_phdr_info *info, size_t size, void *arg) {
  mapped_find *m = arg;
  unsigned long long page;
  ElfW(Half) i;
  (void)size;
  if (info->dlpi_name == NULL || strcmp(info->dlpi_name, m->path) != 0)
    return 0;
  m->found = 1;
  page = (unsigned long long)sysconf(_SC_PAGESIZE);
  for (i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_LOAD && ph->p_memsz != 0) {
      unsigned long long start = ph->p_vaddr & ~(page - 1),
                         end = (ph->p_vaddr + ph->p_memsz + page - 1) & ~(page - 1);
      m->bytes += end - start;
    }
  }
  return 1;
}

/* Why a version stays mapped, in words: the reason (hm_mapped), the finding that explains
 * it, and the memory. */
static void why_mapped(const hm__version *v, int kept_here, hm__unloaded *out) {
  const char *why;
  if (!kept_here && v->profile) {
    out->mapped = HM_MAPPED_PROFILING;
    snprintf(out->detail, sizeof out->detail,
             "%s: profiling mode keeps every version mapped, and its copy for profilers to "
             "read after the process; %llu KiB stay mapped",
             hm_mapped_text(out->mapped), out->bytes / 1024);
    return;
  }
  if (kept_here && (v->keep & HM__LINT_RUST_STD))
    why = "Rust's std keeps destructors for the threads that ran it, which glibc would run "
          "after an unload (rust-std)";
  else if (kept_here)
    why = "it creates pthread keys, whose destructors the threads that stored values under "
          "them would run after an unload (pthread-keys)";
  else if (v->lint & (HM__LINT_NODELETE | HM__LINT_UNIQUE))
    why = (v->lint & HM__LINT_NODELETE) ? "dlclose did not unmap it (nodelete)"
                                        : "dlclose did not unmap it (unique-symbols)";
  else if (v->lint & (HM__LINT_THREAD_ATEXIT | HM__LINT_RUST_STD))
    why = "thread_local destructors of threads that ran it are pending, so dlclose did not "
          "unmap it (thread-local-destructors)";
  else
    why = "dlclose did not unmap it";
  if (kept_here || ((v->lint & (HM__LINT_NODELETE | HM__LINT_UNIQUE)) == 0 &&
                    (v->lint & (HM__LINT_THREAD_ATEXIT | HM__LINT_RUST_STD)) != 0))
    out->mapped = HM_MAPPED_DESTRUCTORS;
  else
    out->mapped = HM_MAPPED_LOADER;
  snprintf(out->detail, sizeof out->detail, "%s: %s; %llu KiB stay mapped",
           hm_mapped_text(out->mapped), why, out->bytes / 1024);
}

void hm__unload_version(hm__version *v, int run_hook, hm__unloaded *out) {
  hm__allocator a = v->a;
  mapped_find m = {v->copy_path, 0, 0};
  out->mapped = 0;
  out->bytes = 0;
  out->detail[0] = '\0';
  out->kept_copy = NULL;
  /* Profiling mode keeps what became current; a build refused or dropped before goes. */
  v->profile = v->profile && v->published;
  if (v->dl != NULL) {
    if (run_hook && !v->hook_done && v->desc != NULL && v->desc->unload != NULL)
      v->desc->unload(v->handed_over);
    v->hook_done = 1;
    /* A version kept for the destructors it left behind is never closed: its code stays
     * where the threads that ran it will call it when they exit (and its own destructors
     * run at the process's exit, as for any object still loaded then). */
    if (v->keep == 0 && !v->profile)
      hm__dlclose(v->dl);
    /* dlclose returns 0 even when it keeps the object (NODELETE, unique symbols, a TLS
     * destructor pending): look for the copy among the loaded objects instead. */
    hm__dl_iterate_phdr(find_mapped, &m);
    if (m.found || v->keep != 0 || v->profile) {
      out->bytes = m.bytes;
      why_mapped(v, v->keep != 0, out);
    }
    v->dl = NULL;
  }
  if (v->copy_path != NULL && v->profile) {
    /* Whole, for profilers and symbolizers; the registry keeps it (and deletes the oldest
     * such copies past its cap). */
    out->kept_copy = v->copy_path;
  } else if (v->copy_path != NULL) {
    /* The rollback copy stays whole until the registry drops it (hm__copy_remove then). */
    int kept_copy = __atomic_load_n(&v->copy_kept, __ATOMIC_ACQUIRE);
    if (!kept_copy && out->mapped)
      hm__copy_remove(v->copy_path);
    else if (!kept_copy)
      hm__copy_unlink(v->copy_path);
    hm__free(&a, v->copy_path);
  }
  hm__free(&a, v->sig);
  hm__free(&a, v);
}

void hm__copy_remove(const char *path) {
  /* Opened before the unlink, and cut through the descriptor: a mapping holds the file's
   * pages (on a tmpfs, memory) until it goes, including debug sections it never maps, often
   * ten times what it does. Cutting below the end of the last PT_LOAD's file bytes, rounded
   * up to a page, leaves every page a mapping can touch (the loader's own reservation
   * beyond them is PROT_NONE). */
  ElfW(Ehdr) eh;
  ElfW(Phdr) ph[64];
  unsigned long long end = 0, page = (unsigned long long)sysconf(_SC_PAGESIZE);
  struct stat st;
  unsigned i;
  int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  hm__copy_unlink(path);
  if (fd < 0)
    return;
  if (pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh &&
      memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_phentsize == sizeof(ElfW(Phdr)) &&
      eh.e_phnum > 0 && eh.e_phnum <= sizeof ph / sizeof ph[0]) {
    size_t want = sizeof(ElfW(Phdr)) * eh.e_phnum;
    if (pread(fd, ph, want, (off_t)eh.e_phoff) == (ssize_t)want) {
      for (i = 0; i < eh.e_phnum; i++)
        if (ph[i].p_type == PT_LOAD && ph[i].p_offset + ph[i].p_filesz > end)
          end = ph[i].p_offset + ph[i].p_filesz;
      end = (end + page - 1) & ~(page - 1);
    }
  }
  /* A cut that fails changes nothing: the file goes when its mapping does. */
  if (end != 0 && fstat(fd, &st) == 0 && (unsigned long long)st.st_size > end &&
      ftruncate(fd, (off_t)end) != 0)
    end = 0;
  close(fd);
}
