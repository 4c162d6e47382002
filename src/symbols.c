/*
 * A loaded version's own symbols, looked up by name without the dynamic loader's lock.
 *
 * dlsym takes glibc's loader lock, and a module's constructors run inside dlopen with that
 * lock held: one constructor that runs for seconds on one thread would stall every dlsym in
 * the process for as long, and with it every snapshot, live handle and poll of unrelated,
 * already loaded modules. The symbols those need are nearly always functions (and signature
 * strings) that the version itself defines, plainly. For those, the answer dlsym would give
 * is in memory that the version's own dlopen mapped and that stays unchanged until its
 * dlclose: the hash table, the symbol table and the string table, at the addresses the
 * checked file gives plus the load bias. The caller keeps the version loaded while it looks.
 *
 * So a lookup here either gives exactly the address dlsym(handle, name) returns, or says it
 * cannot tell, and the caller asks dlsym. It says so for everything glibc resolves in ways
 * this file does not mirror (elf/dl-lookup.c, do_lookup_x and check_match; elf/dl-sym.c):
 *   - a name the object does not define (dlsym goes on to the libraries it needs);
 *   - an indirect function (dlsym calls its resolver) or a thread-local variable (dlsym
 *     returns this thread's copy);
 *   - STB_GNU_UNIQUE (the process-wide unique table may hold another object's definition),
 *     STB_WEAK (LD_DYNAMIC_WEAK makes dlsym look past it), an absolute symbol, an undefined
 *     one, one of an unusual type or visibility;
 *   - a version index past "global" (dlsym picks among versions by rules of its own), or
 *     more than one entry with the name;
 *   - an object whose dynamic section is not where the file says (the bias would be wrong),
 *     a process with audit modules (LD_AUDIT: they may change what dlsym returns), and
 *     machines where a function's address is not its symbol's value plus the bias
 *     (function descriptors) or that this has not been checked on.
 *
 * Every index and offset read from memory is checked against the bounds the ELF check found
 * in the file (hm__elf_info.syms), so even a table that a crafted object's relocations
 * rewrote cannot send a lookup outside it.
 *
 * Layer 4 (docs/architecture.md): calls only the leaves.
 */
#include "internal.h"

#include <elf.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>

/* Machines where glibc's dlsym returns the symbol's value plus the load bias (no function
 * descriptors, no extra rules), and where DT_HASH entries are Elf_Symndx as read below. */
#if defined(__GLIBC__) &&                                                                   \
    (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || defined(__riscv) || \
     defined(__arm__))
#define HM__HAND_LOOKUP 1
#else
#define HM__HAND_LOOKUP 0
#endif

/* Audit modules come from LD_AUDIT at the program's start; read once (a later setenv does
 * not change what ld.so loaded, and the environment is not walked at every load). */
static int audited(void) {
  static int state; /* atomic: 0 not read yet, 1 none, 2 audited */
  int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
  if (s == 0) {
    s = getenv("LD_AUDIT") != NULL ? 2 : 1;
    __atomic_store_n(&state, s, __ATOMIC_RELAXED);
  }
  return s == 2;
}

void hm__symtab_init(hm__symtab *t, const hm__elf_info *elf, uintptr_t bias,
                     const void *dynamic) {
  const hm__elf_syms *s = &elf->syms;
  memset(t, 0, sizeof *t);
  if (!HM__HAND_LOOKUP || s->nsyms == 0 || s->nbuckets == 0 ||
      (s->gnu_hash == 0 && s->sysv_hash == 0))
    return;
  /* The link map's dynamic section is the file's, moved by the bias: the same object, laid
   * out as the check saw it. */
  if (dynamic == NULL || (uintptr_t)dynamic != bias + (uintptr_t)s->dynamic)
    return;
  if (audited())
    return;
  t->bias = bias;
  t->syms = (const unsigned char *)(bias + (uintptr_t)s->symtab);
  t->strtab = (const char *)(bias + (uintptr_t)s->strtab);
  t->strsz = s->strsz;
  t->nsyms = s->nsyms;
  t->versym = s->versym != 0 ? (const unsigned char *)(bias + (uintptr_t)s->versym) : NULL;
  t->nbuckets = s->nbuckets;
  t->symoffset = s->symoffset;
  t->gnu = s->gnu_hash != 0;
  if (t->gnu) {
    /* The header (4 words), the Bloom filter (bloom_size address-sized words), the
     * buckets, then one hash value per hashed symbol. */
    t->buckets = (const unsigned char *)(bias + (uintptr_t)s->gnu_hash) + 16 +
                 (uintptr_t)s->bloom_size * sizeof(ElfW(Addr));
    t->chains = t->buckets + (uintptr_t)s->nbuckets * 4;
  } else {
    t->buckets = (const unsigned char *)(bias + (uintptr_t)s->sysv_hash) + 2 * sizeof(Elf_Symndx);
    t->chains = t->buckets + (uintptr_t)s->nbuckets * sizeof(Elf_Symndx);
  }
}

static uint32_t gnu_hash(const char *name) {
  uint32_t h = 5381;
  for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
    h = h * 33 + *p;
  return h;
}

/* The SysV ELF hash, in 32 bits as glibc computes it (with a wider type, a carry out of
 * bit 31 would survive and give another bucket). */
static uint32_t sysv_hash(const char *name) {
  uint32_t h = 0, g;
  for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
    h = (h << 4) + *p;
    g = h & 0xf0000000u;
    if (g != 0)
      h ^= g >> 24;
    h &= ~g;
  }
  return h;
}

/* Does symbol i carry `name` (len bytes, without its terminator)? */
static int name_is(const hm__symtab *t, const ElfW(Sym) *sym, const char *name, size_t len) {
  uint64_t at = sym->st_name;
  return at < t->strsz && len < t->strsz - at && memcmp(t->strtab + at, name, len + 1) == 0;
}

/* Would dlsym take this entry, and take it as its value plus the bias? (The ELF64_ST_*
 * macros read st_info and st_other the same way for both classes.) */
static int plain(const hm__symtab *t, const ElfW(Sym) *sym, uint64_t i) {
  unsigned type = ELF64_ST_TYPE(sym->st_info), vis = ELF64_ST_VISIBILITY(sym->st_other);
  if (ELF64_ST_BIND(sym->st_info) != STB_GLOBAL)
    return 0;
  if (type != STT_FUNC && type != STT_OBJECT && type != STT_NOTYPE)
    return 0;
  if (sym->st_shndx == SHN_UNDEF || sym->st_shndx == SHN_ABS || sym->st_shndx == SHN_COMMON ||
      sym->st_value == 0)
    return 0;
  if (vis != STV_DEFAULT && vis != STV_PROTECTED)
    return 0;
  if (t->versym != NULL) {
    ElfW(Versym) ver;
    memcpy(&ver, t->versym + i * sizeof ver, sizeof ver);
    if ((ver & 0x7fff) > VER_NDX_GLOBAL)
      return 0;
  }
  return 1;
}

/* Note one entry named `name`: its index in *found, or *found = nsyms for "ask dlsym".
 * Returns 0 to stop looking. A reference to another library's symbol (undefined, no value)
 * is no entry: dlsym passes over it too. */
static int note(const hm__symtab *t, const ElfW(Sym) *sym, uint64_t i, uint64_t *found) {
  if (sym->st_shndx == SHN_UNDEF && sym->st_value == 0 &&
      ELF64_ST_TYPE(sym->st_info) != STT_TLS)
    return 1;
  if (*found != UINT64_MAX || !plain(t, sym, i)) {
    *found = t->nsyms; /* a second entry with the name, or one dlsym may see otherwise */
    return 0;
  }
  *found = i;
  return 1;
}

static void get_sym(const hm__symtab *t, uint64_t i, ElfW(Sym) *sym) {
  memcpy(sym, t->syms + i * sizeof *sym, sizeof *sym);
}

/* Every entry named `name` in the GNU hash table's chain for it. */
static uint64_t find_gnu(const hm__symtab *t, const char *name, size_t len) {
  uint32_t h = gnu_hash(name), b, v;
  uint64_t i, found = UINT64_MAX;
  memcpy(&b, t->buckets + (uint64_t)(h % t->nbuckets) * 4, sizeof b);
  if (b == 0)
    return found; /* an empty bucket: no such name */
  if (b < t->symoffset)
    return t->nsyms;
  for (i = b; i < t->nsyms; i++) {
    memcpy(&v, t->chains + (i - t->symoffset) * 4, sizeof v);
    if ((v | 1u) == (h | 1u)) {
      ElfW(Sym) sym;
      get_sym(t, i, &sym);
      if (name_is(t, &sym, name, len) && !note(t, &sym, i, &found))
        return found;
    }
    if (v & 1u)
      return found;
  }
  return t->nsyms; /* the chain ran past the table: do not trust it */
}

/* The same through the SysV hash table; a chain that loops is cut at nsyms steps. */
static uint64_t find_sysv(const hm__symtab *t, const char *name, size_t len) {
  Elf_Symndx i;
  uint64_t steps, found = UINT64_MAX;
  memcpy(&i, t->buckets + (uint64_t)(sysv_hash(name) % t->nbuckets) * sizeof i, sizeof i);
  for (steps = 0; i != STN_UNDEF; steps++) {
    ElfW(Sym) sym;
    if (i >= t->nsyms || steps >= t->nsyms)
      return t->nsyms;
    get_sym(t, i, &sym);
    if (name_is(t, &sym, name, len) && !note(t, &sym, i, &found))
      return found;
    memcpy(&i, t->chains + (uint64_t)i * sizeof i, sizeof i);
  }
  return found;
}

int hm__symtab_find(const hm__symtab *t, const char *name, void **addr) {
  uint64_t i;
  ElfW(Sym) sym;
  if (t->syms == NULL || name == NULL)
    return 0;
  i = t->gnu ? find_gnu(t, name, strlen(name)) : find_sysv(t, name, strlen(name));
  if (i == UINT64_MAX)
    return -1; /* not defined here: dlsym would look in the libraries it needs */
  if (i >= t->nsyms)
    return 0; /* defined here, but not plainly, or the table is not sound: dlsym decides */
  get_sym(t, i, &sym);
  *addr = (void *)(t->bias + (uintptr_t)sym.st_value);
  return 1;
}
