/* elfcheck.c: decide, from the bytes alone, whether glibc's dlopen can map a file without
 * faulting.
 *
 * dlopen trusts the file: it mmaps the PT_LOAD segments and then follows pointers found in
 * the mapped memory (the dynamic section, the symbol and string tables, the hash tables,
 * the relocations, the version chains). A file that is still being written, or that was
 * cut short, gives mappings past the end of the file (SIGBUS on first touch) or zeroed /
 * garbage pointers (SIGSEGV), inside dlopen, where nothing can recover. So before the copy
 * is handed to dlopen we walk the same structures the loader walks and require everything
 * it will touch to lie in the file-backed part of a PT_LOAD segment.
 *
 * This is a pure function over bytes: no I/O, no allocation, no globals. Every read goes
 * through a bounds check with overflow-safe arithmetic (offsets and sizes are 64-bit file
 * quantities, compared as `off <= len && size <= len - off`, never as `off + size <= len`),
 * and every structure is copied out with memcpy because the buffer has no alignment
 * guarantee. It is fuzzed; keep it that way.
 *
 * It must also take time linear in the file size, whatever the file: the loader reads files
 * up to 1 GiB, and a crafted one can hold 65,535 program headers and millions of relocations.
 * So every loop walks one table once, and addresses are looked up in a small sorted array of
 * the PT_LOAD segments, never by walking the program headers. "Work bound" below says how
 * much work that is; tests/test_elf.c holds the check to it. */
#include "internal.h"

#include <elf.h>
#include <link.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---- What "this machine" means: follow the build --------------------------------------- */

#if __ELF_NATIVE_CLASS == 64
#define HM__ELFCLASS ELFCLASS64
#define HM__R_SYM(info) ELF64_R_SYM(info)
#define HM__R_TYPE(info) ELF64_R_TYPE(info)
#else
#define HM__ELFCLASS ELFCLASS32
#define HM__R_SYM(info) ELF32_R_SYM(info)
#define HM__R_TYPE(info) ELF32_R_TYPE(info)
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HM__ELFDATA ELFDATA2MSB
#else
#define HM__ELFDATA ELFDATA2LSB
#endif

#if defined(__x86_64__)
#define HM__MACHINE EM_X86_64 /* also x32: same machine, ELFCLASS32 via __ELF_NATIVE_CLASS */
#elif defined(__aarch64__)
#define HM__MACHINE EM_AARCH64
#elif defined(__i386__)
#define HM__MACHINE EM_386
#elif defined(__arm__)
#define HM__MACHINE EM_ARM
#elif defined(__riscv)
#define HM__MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define HM__MACHINE EM_PPC64
#elif defined(__powerpc__)
#define HM__MACHINE EM_PPC
#elif defined(__s390__)
#define HM__MACHINE EM_S390
#endif
/* On a machine missing from the table HM__MACHINE stays undefined and the e_machine check is
 * skipped: dlopen still refuses a foreign machine with an error (it does not fault), so the
 * check is a nicety that gives a clearer error code, not a safety requirement. */

/* The dynamic relocations that give a TLS variable's offset from the thread pointer: what
 * initial-exec (and local-exec) accesses need, and what makes the loader place the variable's
 * TLS block in the static TLS area. Without them for a machine, the lint takes any TLS block
 * in a DF_STATIC_TLS module for initial-exec TLS. */
#if defined(__x86_64__)
#define HM__TPOFF(t) ((t) == R_X86_64_TPOFF64 || (t) == R_X86_64_TPOFF32)
#elif defined(__aarch64__)
#define HM__TPOFF(t) ((t) == R_AARCH64_TLS_TPREL)
#elif defined(__i386__)
#define HM__TPOFF(t) ((t) == R_386_TLS_TPOFF || (t) == R_386_TLS_TPOFF32)
#elif defined(__arm__)
#define HM__TPOFF(t) ((t) == R_ARM_TLS_TPOFF32)
#elif defined(__riscv) && __riscv_xlen == 64
#define HM__TPOFF(t) ((t) == R_RISCV_TLS_TPREL64)
#elif defined(__riscv)
#define HM__TPOFF(t) ((t) == R_RISCV_TLS_TPREL32)
#elif defined(__powerpc64__)
#define HM__TPOFF(t) ((t) == R_PPC64_TPREL64)
#elif defined(__s390__)
#define HM__TPOFF(t) ((t) == R_390_TLS_TPOFF)
#endif

/* Upper bound on the steps of the version-chain walks. Each step moves forward at least one
 * byte, so a single chain is bounded by the file size, but the inner chains restart for each
 * outer entry; the budget keeps a crafted file from making the check quadratic. Real files
 * have a few dozen entries. The budget is also at most one step per 8 bytes of file (see
 * check_versions), so that the walks stay linear in the file size. */
#define HM__WALK_BUDGET (1u << 20)

/* Most PT_LOAD segments a file may have. glibc itself sets no limit: it keeps one struct
 * loadcmd per program header, in a variable-length array on its stack, and maps each
 * PT_LOAD with its own mmap, so it would take all 65,535. Linkers emit 2 to 5 (4 from GNU
 * ld's x86-64 default, -z separate-code), so a file with more than 256 is crafted, and
 * refusing it keeps every address lookup at a fixed cost: at most 1 + 9 steps (the last
 * hit, then a binary search). */
#define HM__MAX_LOADS 256

/* ---- Work bound ------------------------------------------------------------------------
 *
 * The work, counted in ck.steps (one table entry read, one segment probed), is at most 24
 * steps per byte of file plus a few hundred. Each table walk reads entries that lie in the
 * file, so it makes at most len / (entry size) iterations; the tables may all overlap the
 * same bytes, so their costs add up. An address lookup costs at most 10. Per byte of file:
 *
 *   DT_RELR       under 10: an address (one lookup) and a bitmap word (one lookup for
 *                 the range of its set bits; if that range is not inside one segment, one
 *                 step per set bit and per segment passed, where only segments that can
 *                 hold a word count, disjoint and inside the bitmap's 63 words: at most
 *                 63 + 63), i.e. at most 11 + 1 + 10 + 126 steps per 16 bytes, or
 *                 11 + 1 + 10 + 62 per 8 on 32-bit; plus one step per segment, once.
 *                 Further bitmaps after the same address cover new words, so they pass
 *                 other segments: one address per bitmap is the worst case;
 *   relocations   2 (4 on 32-bit): 12 steps per entry, and DT_RELA, DT_REL and DT_JMPREL
 *                 may all cover the same bytes (Rel is 16 bytes, 8 on 32-bit);
 *   the rest      under 1.5: program headers (2 passes and one lookup each), hash tables
 *                 (one step per 4-byte word), symbols, dynamic entries, version nodes (the
 *                 walk budget), section headers (twice for a file that may be Rust's),
 *                 and the lint's searches of the one search path glibc uses and of the
 *                 first 4 KiB of .comment (a step per 16 bytes of each, once).
 *
 * That is 12.5 on 64-bit and 13.5 on 32-bit, well inside 24. Fixed costs (a few dozen
 * lookups of single addresses) add a few hundred steps. */

/* ---- Context and helpers --------------------------------------------------------------- */

/* A PT_LOAD segment, as addresses: [vaddr, end) in memory, [vaddr, fileend) of it backed by
 * the file from offset `off`. */
typedef struct seg {
  uint64_t vaddr, end, fileend, off;
} seg;

typedef struct ck {
  const unsigned char *buf;
  uint64_t len;
  const ElfW(Ehdr) *eh;
  uint64_t phoff;
  unsigned phnum;
  unsigned nload, hit; /* see load[] */
  uint64_t steps; /* see hm__elf_info.steps */
  uint64_t tls_size; /* PT_TLS p_memsz, 0 if none */
  int own_tpoff;     /* a thread-pointer offset relocation names the module's own TLS */
  char *why;
  size_t whylen;
  /* Last, and not zeroed (hm__elf_check): entries are written before they are read, only
   * the first nload (+1) are, and clearing all 8.7 KB cost a quarter of a reload's own
   * instructions. */
  /* The PT_LOADs that have memory, in ascending order (check_segments requires it of the
   * file) and disjoint; `hit` is the one the last lookup found. */
  seg load[HM__MAX_LOADS];
  /* For DT_RELR: word_next[i] is the first of segments i.. that can hold an address-sized
   * word (nload if none), so that bitmaps skip the ones that cannot at no cost. */
  unsigned short word_next[HM__MAX_LOADS + 1];
} ck;

__attribute__((format(printf, 3, 4))) static int fail(ck *c, int err, const char *fmt, ...) {
  if (c->why != NULL && c->whylen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, c->whylen, fmt, ap);
    va_end(ap);
  }
  return err;
}

/* [off, off+size) inside [0, len), without computing off+size (which may wrap). */
static int in_range(uint64_t off, uint64_t size, uint64_t len) {
  return off <= len && size <= len - off;
}

/* n * size without wrapping; 0 when it would. */
static int mul_ok(uint64_t n, uint64_t size, uint64_t *out) {
  if (size != 0 && n > UINT64_MAX / size)
    return 0;
  *out = n * size;
  return 1;
}

static void get_phdr(const ck *c, unsigned i, ElfW(Phdr) *ph) {
  /* Bounds were checked once for the whole table in check_ehdr. */
  memcpy(ph, c->buf + c->phoff + (uint64_t)i * sizeof *ph, sizeof *ph);
}

static uint32_t get_u32(const ck *c, uint64_t off) {
  uint32_t v;
  memcpy(&v, c->buf + off, sizeof v);
  return v;
}

/* The segment whose memory holds the byte at addr, if any. Lookups come in runs on one table,
 * so the last hit is tried first; otherwise a binary search (the segments are sorted and
 * disjoint, so at most one can hold addr). */
static const seg *find_seg(ck *c, uint64_t addr) {
  c->steps++;
  const seg *s = &c->load[c->hit];
  if (c->nload > 0 && addr >= s->vaddr && addr < s->end)
    return s;
  unsigned lo = 0, hi = c->nload; /* the first segment starting above addr is in [lo, hi] */
  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    c->steps++;
    if (c->load[mid].vaddr <= addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0 || addr >= c->load[lo - 1].end)
    return NULL;
  c->hit = lo - 1;
  return &c->load[lo - 1];
}

/* Translate the virtual range [addr, addr+size) to a file offset through the PT_LOAD
 * segments. The range must lie in the file-backed part of one segment (p_filesz, not
 * p_memsz: past p_filesz the loader gives zeros, which is never what a table should hold).
 * On success *off is the file offset of addr and *avail the number of file bytes from there
 * to the end of that segment's file-backed part (>= size). Every PT_LOAD was already checked
 * to lie inside the file, so off + avail <= len. Link-time addresses of an ET_DYN object are
 * relative to its load base, which is exactly what p_vaddr is. */
static int map_vaddr(ck *c, uint64_t addr, uint64_t size, uint64_t *off, uint64_t *avail) {
  const seg *s = find_seg(c, addr);
  if (s == NULL || addr >= s->fileend || size > s->fileend - addr)
    return 0;
  *off = s->off + (addr - s->vaddr);
  *avail = s->fileend - addr;
  return 1;
}

/* Is [addr, addr+size) inside the memory image of one PT_LOAD (p_memsz: relocations may
 * target .bss)? Relocation targets are written by the loader, so a target outside every
 * segment is a write to a wild address inside dlopen. */
static int in_image(ck *c, uint64_t addr, uint64_t size) {
  const seg *s = find_seg(c, addr);
  return s != NULL && size <= s->end - addr;
}

/* ---- The dynamic section --------------------------------------------------------------- */

/* The entries we care about, last one wins (as in glibc's elf_get_dynamic_info). */
typedef struct dyninfo {
  uint64_t val[DT_NUM];
  unsigned char has[DT_NUM];
  uint64_t gnu_hash, versym, verneed, verdef, flags_1;
  int has_gnu_hash, has_versym, has_verneed, has_verdef, has_flags_1;
} dyninfo;

/* The symbol table as the relocations see it: symbols [0, count) lie in the file from offset
 * `off`, and `from` says where the count came from. */
typedef struct symtab {
  uint64_t off, count;
  uint64_t hashed; /* symbols the hash tables reach, 0 without them */
  uint64_t gnu_count, sysv_count; /* of them, those each table reaches */
  uint64_t named;  /* one more than the highest index a relocation names, 0 if none */
  uint64_t strsz;
  const char *from;
} symtab;

static void dyn_note(dyninfo *d, const ElfW(Dyn) *e) {
  uint64_t tag = (uint64_t)e->d_tag, v = (uint64_t)e->d_un.d_val;
  if (tag < DT_NUM) {
    d->val[tag] = v;
    d->has[tag] = 1;
    return;
  }
  switch (e->d_tag) {
  case DT_GNU_HASH: d->gnu_hash = v, d->has_gnu_hash = 1; break;
  case DT_VERSYM: d->versym = v, d->has_versym = 1; break;
  case DT_VERNEED: d->verneed = v, d->has_verneed = 1; break;
  case DT_VERDEF: d->verdef = v, d->has_verdef = 1; break;
  case DT_FLAGS_1: d->flags_1 = v, d->has_flags_1 = 1; break;
  default: break;
  }
}

/* A table given by an address tag and a size tag: glibc reads the size entry through a
 * pointer without checking it exists (l_info[DT_RELASZ]->d_un.d_val), so an address without
 * its size is a NULL dereference inside dlopen, not merely an inconsistency. */
static int check_table(ck *c, const dyninfo *d, int addr_tag, int size_tag, uint64_t entsize,
                       const char *name) {
  if (!d->has[addr_tag])
    return 0;
  if (!d->has[size_tag])
    return fail(c, HM_EBADELF, "corrupt: %s without its size entry", name);
  uint64_t addr = d->val[addr_tag], size = d->val[size_tag], off, avail;
  if (entsize > 1 && size % entsize != 0)
    return fail(c, HM_EBADELF, "corrupt: %s size %llu is not a multiple of %llu", name,
                (unsigned long long)size, (unsigned long long)entsize);
  if (size == 0)
    return 0; /* nothing is read */
  if (!map_vaddr(c, addr, size, &off, &avail))
    return fail(c, HM_EBADELF,
                "corrupt: %s at 0x%llx (%llu bytes) is outside the file-backed segments", name,
                (unsigned long long)addr, (unsigned long long)size);
  return 0;
}

/* The symbol a relocation names must exist, and its name lie in the string table: glibc
 * indexes the symbol table with the relocation's symbol index, unchecked, then reads the
 * name to look the symbol up. *out gets the symbol. */
static int check_reloc_sym(ck *c, symtab *st, uint64_t sym, const char *name, uint64_t entry,
                           ElfW(Sym) *out) {
  ElfW(Sym) s;
  c->steps++;
  memset(out, 0, sizeof *out);
  if (sym >= st->count)
    return fail(c, HM_EBADELF, "corrupt: %s entry %llu names symbol %llu of %llu (counted from %s)",
                name, (unsigned long long)entry, (unsigned long long)sym,
                (unsigned long long)st->count, st->from);
  memcpy(&s, c->buf + st->off + sym * sizeof s, sizeof s);
  if (s.st_name >= st->strsz)
    return fail(c, HM_EBADELF,
                "corrupt: %s entry %llu names symbol %llu, whose name is outside the string "
                "table",
                name, (unsigned long long)entry, (unsigned long long)sym);
  if (sym >= st->named)
    st->named = sym + 1;
  *out = s;
  return 0;
}

/* The relocation tables must have the entry size the loader asserts (glibc's
 * elf_get_dynamic_info asserts DT_RELAENT == sizeof(Rela) whenever DT_RELA is present, and
 * reads DT_RELAENT through a pointer to do so), lie in the file, write inside the image and
 * name only symbols that exist. */
static int check_relocs(ck *c, const dyninfo *d, int addr_tag, int size_tag, uint64_t entsize,
                        int rela, symtab *st, const char *name) {
  int rc = check_table(c, d, addr_tag, size_tag, entsize, name);
  if (rc != 0 || !d->has[addr_tag] || d->val[size_tag] == 0)
    return rc;
  uint64_t off = 0, avail = 0;
  map_vaddr(c, d->val[addr_tag], d->val[size_tag], &off, &avail);
  for (uint64_t p = 0; p < d->val[size_tag]; p += entsize) {
    uint64_t info, where;
    c->steps++;
    if (rela) {
      ElfW(Rela) r;
      memcpy(&r, c->buf + off + p, sizeof r);
      info = r.r_info, where = r.r_offset;
    } else {
      ElfW(Rel) r;
      memcpy(&r, c->buf + off + p, sizeof r);
      info = r.r_info, where = r.r_offset;
    }
    if (!in_image(c, where, sizeof(ElfW(Addr))))
      return fail(c, HM_EBADELF, "corrupt: %s entry %llu writes 0x%llx, outside the image", name,
                  (unsigned long long)(p / entsize), (unsigned long long)where);
    ElfW(Sym) s;
    if ((rc = check_reloc_sym(c, st, HM__R_SYM(info), name, p / entsize, &s)) != 0)
      return rc;
#ifdef HM__TPOFF
    /* The module's own TLS: a local one (symbol 0: the offset is in the addend) or one it
     * defines. An undefined symbol is another library's TLS, already in the static area. */
    if (HM__TPOFF(HM__R_TYPE(info)) && (HM__R_SYM(info) == 0 || s.st_shndx != SHN_UNDEF))
      c->own_tpoff = 1;
#endif
  }
  return 0;
}

#ifdef DT_RELR
static int relr_fail(ck *c, uint64_t at) {
  return fail(c, HM_EBADELF, "corrupt: DT_RELR writes 0x%llx, outside the image",
              (unsigned long long)at);
}

/* One bitmap word: bit k of `bits` names the word at where + k * sizeof(Addr). In a real
 * file all the words a bitmap names lie in one segment, so the range from its lowest to its
 * highest set bit is checked with one lookup. Otherwise each set bit is checked in turn, in
 * ascending order, with a cursor that only moves forward through the sorted segments that
 * can hold a word (a smaller one cannot hold this bit's word, nor any later one's): at most
 * one step per set bit and one per segment passed. Failures name the lowest word outside
 * the image, as a walk over every bit would. */
static int check_relr_bitmap(ck *c, uint64_t bits, uint64_t where) {
  const uint64_t w = sizeof(ElfW(Addr));
  if (bits == 0)
    return 0;
  uint64_t lo = where + (uint64_t)__builtin_ctzll(bits) * w;
  uint64_t hi = where + (uint64_t)(63 - __builtin_clzll(bits)) * w;
  if (lo < where)
    return relr_fail(c, lo);
  const seg *s = find_seg(c, lo);
  if (s != NULL && hi >= lo && w <= s->end - lo && hi - lo <= s->end - lo - w)
    return 0;
  unsigned cur = s != NULL ? (unsigned)(s - c->load) : c->nload;
  for (uint64_t b = bits; b != 0; b &= b - 1) {
    uint64_t at = where + (uint64_t)__builtin_ctzll(b) * w;
    c->steps++;
    if (at < where)
      return relr_fail(c, at);
    while (cur < c->nload && c->load[cur].end <= at) {
      c->steps++;
      cur = c->word_next[cur + 1];
    }
    if (cur >= c->nload || at < c->load[cur].vaddr || w > c->load[cur].end - at)
      return relr_fail(c, at);
  }
  return 0;
}

/* DT_RELR: an even entry is the address of a relative relocation, an odd one a bitmap of the
 * (bits - 1) words that follow the last address. Every word it names is written. */
static int check_relr(ck *c, const dyninfo *d) {
  const unsigned bits = 8 * sizeof(ElfW(Addr));
  uint64_t off = 0, avail = 0, where = 0, size = d->has[DT_RELR] ? d->val[DT_RELRSZ] : 0;
  int rc;
  if (size == 0)
    return 0;
  map_vaddr(c, d->val[DT_RELR], size, &off, &avail); /* checked by check_table */
  c->word_next[c->nload] = (unsigned short)c->nload;
  for (unsigned i = c->nload; i-- > 0;) {
    c->steps++;
    c->word_next[i] = c->load[i].end - c->load[i].vaddr >= sizeof(ElfW(Addr))
                          ? (unsigned short)i
                          : c->word_next[i + 1];
  }
  for (uint64_t p = 0; p < size; p += sizeof(ElfW(Addr))) {
    ElfW(Addr) e;
    c->steps++;
    memcpy(&e, c->buf + off + p, sizeof e);
    if ((e & 1) == 0) {
      if (!in_image(c, e, sizeof e))
        return relr_fail(c, e);
      where = (uint64_t)e + sizeof e;
      continue;
    }
    if ((rc = check_relr_bitmap(c, (uint64_t)(e >> 1), where)) != 0)
      return rc;
    where += (uint64_t)(bits - 1) * sizeof e;
  }
  return 0;
}
#endif

/* DT_HASH: nbucket, nchain, buckets, chains. Every index must be a valid symbol (glibc
 * follows them into the symbol table), nbucket must be non-zero (it divides by it). The
 * symbol count is nchain. */
static int check_sysv_hash(ck *c, uint64_t addr, uint64_t *nsyms) {
  uint64_t off, avail, words, bytes;
  if (!map_vaddr(c, addr, 2 * sizeof(Elf_Symndx), &off, &avail))
    return fail(c, HM_EBADELF, "corrupt: DT_HASH at 0x%llx is outside the file-backed segments",
                (unsigned long long)addr);
  Elf_Symndx nb, nc;
  memcpy(&nb, c->buf + off, sizeof nb);
  memcpy(&nc, c->buf + off + sizeof nb, sizeof nc);
  if (nb == 0)
    return fail(c, HM_EBADELF, "corrupt: DT_HASH has no buckets");
  /* 2 + nb + nc cannot wrap: each is below 2^64 only if Elf_Symndx is 64-bit, so check. */
  words = 2 + (uint64_t)nb;
  if (words < 2 || words + (uint64_t)nc < words || !mul_ok(words + nc, sizeof(Elf_Symndx), &bytes) ||
      bytes > avail)
    return fail(c, HM_EBADELF, "corrupt: DT_HASH table (%llu buckets, %llu chains) is truncated",
                (unsigned long long)nb, (unsigned long long)nc);
  for (uint64_t i = 2; i < words + nc; i++) {
    Elf_Symndx v;
    c->steps++;
    memcpy(&v, c->buf + off + i * sizeof v, sizeof v);
    if (v >= nc)
      return fail(c, HM_EBADELF, "corrupt: DT_HASH entry %llu is %llu, past %llu symbols",
                  (unsigned long long)i, (unsigned long long)v, (unsigned long long)nc);
  }
  *nsyms = nc;
  return 0;
}

/* DT_GNU_HASH: nbuckets, symoffset, bloom_size, bloom_shift, bloom words, buckets, then one
 * hash value per hashed symbol, each chain ending with a value whose low bit is set. glibc
 * divides by nbuckets, masks with bloom_size - 1 (so 0 means reading anywhere), and indexes
 * the chain array with bucket - symoffset. Chains are laid out in bucket order, so the chain
 * of the highest bucket is the last one; its end is the highest symbol index, which gives
 * the symbol count (the ELF file records it nowhere else). */
static int check_gnu_hash(ck *c, uint64_t addr, uint64_t *nsyms) {
  uint64_t off, avail;
  if (!map_vaddr(c, addr, 16, &off, &avail))
    return fail(c, HM_EBADELF,
                "corrupt: DT_GNU_HASH at 0x%llx is outside the file-backed segments",
                (unsigned long long)addr);
  uint32_t nb = get_u32(c, off), symoff = get_u32(c, off + 4), bloom = get_u32(c, off + 8);
  if (nb == 0 || bloom == 0)
    return fail(c, HM_EBADELF, "corrupt: DT_GNU_HASH has %u buckets and %u bloom words", nb,
                bloom);
  /* 16 + bloom * 8 + nb * 4 < 2^37: no wrap in 64 bits. */
  uint64_t buckets = 16 + (uint64_t)bloom * sizeof(ElfW(Addr));
  uint64_t chains = buckets + (uint64_t)nb * 4;
  if (chains > avail)
    return fail(c, HM_EBADELF, "corrupt: DT_GNU_HASH table (%u buckets) is truncated", nb);
  uint32_t maxb = 0;
  for (uint32_t i = 0; i < nb; i++) {
    c->steps++;
    uint32_t b = get_u32(c, off + buckets + (uint64_t)i * 4);
    if (b != 0 && b < symoff)
      return fail(c, HM_EBADELF, "corrupt: DT_GNU_HASH bucket %u is %u, below symoffset %u", i,
                  b, symoff);
    if (b > maxb)
      maxb = b;
  }
  if (maxb == 0) { /* nothing hashed: only the unhashed symbols below symoffset */
    *nsyms = symoff;
    return 0;
  }
  for (uint64_t i = (uint64_t)(maxb - symoff);; i++) {
    uint64_t at = chains + i * 4;
    c->steps++;
    if (at > avail || avail - at < 4)
      return fail(c, HM_EBADELF, "corrupt: DT_GNU_HASH chain of symbol %u is unterminated",
                  maxb);
    if (get_u32(c, off + at) & 1) {
      *nsyms = (uint64_t)symoff + i + 1;
      return 0;
    }
  }
}

/* glibc's _dl_check_map_versions walks DT_VERNEED (vn_next / vna_next chains, each until a
 * zero link) and DT_VERDEF (vd_next, and the first Verdaux of each), reading names from the
 * string table. Every link is unsigned, so the walks only move forward; each node must lie
 * in the same file-backed segment as the first (they are one section) and each name offset
 * inside the string table. */
static int check_verneed(ck *c, uint64_t addr, uint64_t strsz, unsigned *budget) {
  uint64_t off, avail;
  if (!map_vaddr(c, addr, sizeof(ElfW(Verneed)), &off, &avail))
    return fail(c, HM_EBADELF,
                "corrupt: DT_VERNEED at 0x%llx is outside the file-backed segments",
                (unsigned long long)addr);
  for (uint64_t pos = 0;;) {
    ElfW(Verneed) vn;
    c->steps++;
    if (!in_range(pos, sizeof vn, avail) || --*budget == 0)
      return fail(c, HM_EBADELF, "corrupt: DT_VERNEED chain runs past its segment");
    memcpy(&vn, c->buf + off + pos, sizeof vn);
    if (vn.vn_file >= strsz)
      return fail(c, HM_EBADELF, "corrupt: DT_VERNEED file name is outside the string table");
    for (uint64_t aux = pos + vn.vn_aux;;) {
      ElfW(Vernaux) va;
      c->steps++;
      if (!in_range(aux, sizeof va, avail) || --*budget == 0)
        return fail(c, HM_EBADELF, "corrupt: DT_VERNEED aux chain runs past its segment");
      memcpy(&va, c->buf + off + aux, sizeof va);
      if (va.vna_name >= strsz)
        return fail(c, HM_EBADELF, "corrupt: DT_VERNEED version name is outside the string table");
      if (va.vna_next == 0)
        break;
      aux += va.vna_next;
    }
    if (vn.vn_next == 0)
      return 0;
    pos += vn.vn_next;
  }
}

static int check_verdef(ck *c, uint64_t addr, uint64_t strsz, unsigned *budget) {
  uint64_t off, avail;
  if (!map_vaddr(c, addr, sizeof(ElfW(Verdef)), &off, &avail))
    return fail(c, HM_EBADELF, "corrupt: DT_VERDEF at 0x%llx is outside the file-backed segments",
                (unsigned long long)addr);
  for (uint64_t pos = 0;;) {
    ElfW(Verdef) vd;
    ElfW(Verdaux) va;
    c->steps++;
    if (!in_range(pos, sizeof vd, avail) || --*budget == 0)
      return fail(c, HM_EBADELF, "corrupt: DT_VERDEF chain runs past its segment");
    memcpy(&vd, c->buf + off + pos, sizeof vd);
    if (!in_range(pos + vd.vd_aux, sizeof va, avail))
      return fail(c, HM_EBADELF, "corrupt: DT_VERDEF aux entry runs past its segment");
    memcpy(&va, c->buf + off + pos + vd.vd_aux, sizeof va);
    if (va.vda_name >= strsz)
      return fail(c, HM_EBADELF, "corrupt: DT_VERDEF version name is outside the string table");
    if (vd.vd_next == 0)
      return 0;
    pos += vd.vd_next;
  }
}

/* Walk the dynamic section the way the loader does and record the entries we care about.
 * *doff is the file offset of the section as the loader sees it, *count the number of
 * entries before DT_NULL. */
static int read_dynamic(ck *c, const ElfW(Phdr) *dynph, dyninfo *d, uint64_t *doff,
                        uint64_t *count) {
  uint64_t davail;
  /* The loader reads the dynamic section at load base + p_vaddr, not at p_offset: translate
   * the address, and walk the bytes it will actually see. */
  if (dynph->p_filesz < sizeof(ElfW(Dyn)) ||
      !map_vaddr(c, dynph->p_vaddr, dynph->p_filesz, doff, &davail))
    return fail(c, HM_EBADELF,
                "corrupt: PT_DYNAMIC (0x%llx, %llu bytes) is outside the file-backed segments",
                (unsigned long long)dynph->p_vaddr, (unsigned long long)dynph->p_filesz);

  /* glibc walks the entries until DT_NULL with no other bound; require the terminator
   * within p_filesz so the walk stops inside the file. */
  memset(d, 0, sizeof *d);
  uint64_t n = dynph->p_filesz / sizeof(ElfW(Dyn));
  for (uint64_t i = 0; i < n; i++) {
    ElfW(Dyn) e;
    c->steps++;
    memcpy(&e, c->buf + *doff + i * sizeof e, sizeof e);
    if (e.d_tag == DT_NULL) {
      *count = i;
      return 0;
    }
    dyn_note(d, &e);
  }
  return fail(c, HM_EBADELF, "corrupt: dynamic section has no DT_NULL terminator");
}

/* Tables every dynamic object has, and the string table: in the file and ending with NUL,
 * so that any offset below DT_STRSZ names a terminated string and "offset < strsz" is all
 * the name checks need. */
static int check_strtab(ck *c, const dyninfo *d) {
  /* A zeroed dynamic section (DT_NULL first) lands here. */
  if (!d->has[DT_STRTAB] || d->val[DT_STRTAB] == 0)
    return fail(c, HM_EBADELF, "corrupt: no DT_STRTAB in the dynamic section");
  if (!d->has[DT_SYMTAB] || d->val[DT_SYMTAB] == 0)
    return fail(c, HM_EBADELF, "corrupt: no DT_SYMTAB in the dynamic section");
  if (!d->has[DT_STRSZ] || d->val[DT_STRSZ] == 0)
    return fail(c, HM_EBADELF, "corrupt: no DT_STRSZ in the dynamic section");
  uint64_t stroff, stravail, strsz = d->val[DT_STRSZ];
  if (!map_vaddr(c, d->val[DT_STRTAB], strsz, &stroff, &stravail))
    return fail(c, HM_EBADELF,
                "corrupt: string table at 0x%llx (%llu bytes) is outside the file-backed "
                "segments",
                (unsigned long long)d->val[DT_STRTAB], (unsigned long long)strsz);
  if (c->buf[stroff + strsz - 1] != 0)
    return fail(c, HM_EBADELF, "corrupt: string table does not end with NUL");
  return 0;
}

/* Names the loader reads straight from the string table while mapping. */
static int check_dyn_names(ck *c, uint64_t doff, uint64_t count, uint64_t strsz) {
  for (uint64_t i = 0; i < count; i++) {
    ElfW(Dyn) e;
    c->steps++;
    memcpy(&e, c->buf + doff + i * sizeof e, sizeof e);
    switch (e.d_tag) {
    case DT_NEEDED:
    case DT_SONAME:
    case DT_RPATH:
    case DT_RUNPATH:
    case DT_AUXILIARY:
    case DT_FILTER:
      if ((uint64_t)e.d_un.d_val >= strsz)
        return fail(c, HM_EBADELF,
                    "corrupt: dynamic entry %llu (tag %lld) names string %llu, table has %llu "
                    "bytes",
                    (unsigned long long)i, (long long)e.d_tag,
                    (unsigned long long)e.d_un.d_val, (unsigned long long)strsz);
      break;
    default:
      break;
    }
  }
  return 0;
}

/* Symbol count, from whichever hash tables exist (glibc follows their indices into the
 * symbol table); 0 without either. */
static int hash_count(ck *c, const dyninfo *d, symtab *st) {
  int rc;
  st->hashed = 0;
  if (d->has[DT_HASH] && d->val[DT_HASH] != 0) {
    if ((rc = check_sysv_hash(c, d->val[DT_HASH], &st->sysv_count)) != 0)
      return rc;
    st->hashed = st->sysv_count;
  }
  if (d->has_gnu_hash && d->gnu_hash != 0) {
    if ((rc = check_gnu_hash(c, d->gnu_hash, &st->gnu_count)) != 0)
      return rc;
    if (st->gnu_count > st->hashed)
      st->hashed = st->gnu_count;
  }
  return 0;
}

/* The number of section headers, once the first one is known to be in the file: e_shnum,
 * or for more than SHN_LORESERVE sections, section 0's sh_size. */
static uint64_t section_count(const ck *c) {
  uint64_t shnum = c->eh->e_shnum;
  if (shnum == 0) {
    ElfW(Shdr) s0;
    memcpy(&s0, c->buf + c->eh->e_shoff, sizeof s0);
    shnum = s0.sh_size;
  }
  return shnum;
}

/* .dynsym's number of symbols, from its section header: a SHT_DYNSYM of whole symbols at
 * DT_SYMTAB's address. 0 when the section headers are absent, not in the file, or do not
 * agree with the dynamic section (dlopen never reads them, so they are trusted only then). */
static uint64_t dynsym_count(ck *c, uint64_t symaddr) {
  const ElfW(Ehdr) *eh = c->eh;
  uint64_t shnum, bytes;
  if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(ElfW(Shdr)) ||
      !in_range(eh->e_shoff, sizeof(ElfW(Shdr)), c->len))
    return 0;
  shnum = section_count(c);
  if (!mul_ok(shnum, sizeof(ElfW(Shdr)), &bytes) || !in_range(eh->e_shoff, bytes, c->len))
    return 0;
  for (uint64_t i = 0; i < shnum; i++) {
    ElfW(Shdr) s;
    c->steps++;
    memcpy(&s, c->buf + eh->e_shoff + i * sizeof s, sizeof s);
    if (s.sh_type == SHT_DYNSYM && s.sh_addr == symaddr &&
        s.sh_entsize == sizeof(ElfW(Sym)) && s.sh_size % sizeof(ElfW(Sym)) == 0)
      return s.sh_size / sizeof(ElfW(Sym));
  }
  return 0;
}

/* How many symbols the relocations may name. The file records the count only in the hash
 * tables, so they give it when there are any. A file with neither still loads (nothing can
 * be looked up in it, but its relocations are processed), and then the count is .dynsym's
 * from its section header, or without one as many whole symbols as the file-backed part of
 * DT_SYMTAB's segment holds. That last may run past the real table, but every symbol read
 * stays in the file, and check_reloc_sym checks the name of each one a relocation names. */
static int check_symbols(ck *c, const dyninfo *d, symtab *st) {
  uint64_t addr = d->val[DT_SYMTAB], bytes, avail;
  int rc;
  memset(st, 0, sizeof *st);
  st->strsz = d->val[DT_STRSZ];
  if ((rc = hash_count(c, d, st)) != 0)
    return rc;
  if ((d->has[DT_HASH] && d->val[DT_HASH] != 0) || (d->has_gnu_hash && d->gnu_hash != 0)) {
    st->count = st->hashed;
    st->from = "the hash tables";
  } else if ((st->count = dynsym_count(c, addr)) != 0) {
    st->from = "the .dynsym section header";
  } else {
    st->from = "the room in its segment";
    if (map_vaddr(c, addr, sizeof(ElfW(Sym)), &st->off, &avail))
      st->count = avail / sizeof(ElfW(Sym));
  }
  if (st->count == 0)
    st->count = 1; /* the null symbol, which every table has */
  if (!mul_ok(st->count, sizeof(ElfW(Sym)), &bytes) ||
      !map_vaddr(c, addr, bytes, &st->off, &avail))
    return fail(c, HM_EBADELF,
                "corrupt: symbol table at 0x%llx (%llu symbols) is outside the file-backed "
                "segments",
                (unsigned long long)addr, (unsigned long long)st->count);
  /* glibc's lookups by name, from other objects, follow the hash chains to any of these. */
  for (uint64_t i = 0; i < st->hashed; i++) {
    ElfW(Sym) s;
    c->steps++;
    memcpy(&s, c->buf + st->off + i * sizeof s, sizeof s);
    if (s.st_name >= st->strsz)
      return fail(c, HM_EBADELF, "corrupt: symbol %llu's name is outside the string table",
                  (unsigned long long)i);
  }
  return 0;
}

/* glibc reads the version index of every symbol a relocation names (version[R_SYM] in
 * elf_dynamic_do_Rel) and of every symbol a lookup through the hash tables finds. */
static int check_versym(ck *c, const dyninfo *d, const symtab *st) {
  uint64_t n = st->hashed > st->named ? st->hashed : st->named, o, a;
  if (!d->has_versym || d->versym == 0 || n == 0)
    return 0;
  if (!map_vaddr(c, d->versym, n * sizeof(ElfW(Versym)), &o, &a))
    return fail(c, HM_EBADELF, "corrupt: DT_VERSYM is outside the file-backed segments");
  return 0;
}

/* Every relocation table the loader processes at dlopen. */
static int check_all_relocs(ck *c, const dyninfo *d, symtab *st) {
  int rc;
  if (d->has[DT_RELA] && (!d->has[DT_RELAENT] || d->val[DT_RELAENT] != sizeof(ElfW(Rela))))
    return fail(c, HM_EBADELF, "corrupt: DT_RELA without DT_RELAENT == %zu",
                sizeof(ElfW(Rela)));
  if (d->has[DT_REL] && (!d->has[DT_RELENT] || d->val[DT_RELENT] != sizeof(ElfW(Rel))))
    return fail(c, HM_EBADELF, "corrupt: DT_REL without DT_RELENT == %zu", sizeof(ElfW(Rel)));
  if ((rc = check_relocs(c, d, DT_RELA, DT_RELASZ, sizeof(ElfW(Rela)), 1, st, "DT_RELA")) ||
      (rc = check_relocs(c, d, DT_REL, DT_RELSZ, sizeof(ElfW(Rel)), 0, st, "DT_REL")))
    return rc;
  if (d->has[DT_JMPREL]) {
    if (!d->has[DT_PLTREL] || (d->val[DT_PLTREL] != DT_RELA && d->val[DT_PLTREL] != DT_REL))
      return fail(c, HM_EBADELF, "corrupt: DT_JMPREL without a valid DT_PLTREL");
    int rela = d->val[DT_PLTREL] == DT_RELA;
    if ((rc = check_relocs(c, d, DT_JMPREL, DT_PLTRELSZ,
                           rela ? sizeof(ElfW(Rela)) : sizeof(ElfW(Rel)), rela, st,
                           "DT_JMPREL")))
      return rc;
  }
#ifdef DT_RELR
  if (d->has[DT_RELR] && (!d->has[DT_RELRENT] || d->val[DT_RELRENT] != sizeof(ElfW(Addr))))
    return fail(c, HM_EBADELF, "corrupt: DT_RELR without DT_RELRENT == %zu",
                sizeof(ElfW(Addr)));
  if ((rc = check_table(c, d, DT_RELR, DT_RELRSZ, sizeof(ElfW(Addr)), "DT_RELR")) ||
      (rc = check_relr(c, d)))
    return rc;
#endif
  return 0;
}

/* Constructors and destructors: the arrays are read, their sizes read through a pointer;
 * DT_INIT / DT_FINI are called, so they must at least point into the file's code. */
static int check_init_fini(ck *c, const dyninfo *d) {
  int rc;
  if ((rc = check_table(c, d, DT_INIT_ARRAY, DT_INIT_ARRAYSZ, sizeof(ElfW(Addr)),
                        "DT_INIT_ARRAY")) ||
      (rc = check_table(c, d, DT_FINI_ARRAY, DT_FINI_ARRAYSZ, sizeof(ElfW(Addr)),
                        "DT_FINI_ARRAY")) ||
      (rc = check_table(c, d, DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, sizeof(ElfW(Addr)),
                        "DT_PREINIT_ARRAY")))
    return rc;
  const int fn_tags[] = {DT_INIT, DT_FINI};
  for (size_t i = 0; i < sizeof fn_tags / sizeof fn_tags[0]; i++) {
    uint64_t o, a;
    if (d->has[fn_tags[i]] && d->val[fn_tags[i]] != 0 &&
        !map_vaddr(c, d->val[fn_tags[i]], 1, &o, &a))
      return fail(c, HM_EBADELF, "corrupt: %s at 0x%llx is outside the file-backed segments",
                  fn_tags[i] == DT_INIT ? "DT_INIT" : "DT_FINI",
                  (unsigned long long)d->val[fn_tags[i]]);
  }
  return 0;
}

static int check_versions(ck *c, const dyninfo *d) {
  /* In a well-formed file each step visits a distinct entry of at least 16 bytes, so one
   * step per 8 bytes of file is never reached; it keeps the walks linear in small files. */
  unsigned budget = HM__WALK_BUDGET;
  if (c->len / 8 + 16 < budget)
    budget = (unsigned)(c->len / 8 + 16);
  uint64_t strsz = d->val[DT_STRSZ];
  int rc;
  if (d->has_verneed && d->verneed != 0 && (rc = check_verneed(c, d->verneed, strsz, &budget)))
    return rc;
  if (d->has_verdef && d->verdef != 0 && (rc = check_verdef(c, d->verdef, strsz, &budget)))
    return rc;
  return 0;
}

/* Libraries every version may share without harm: the C and C++ runtimes, the sanitizers'
 * runtimes, and hotmod itself (a module that calls its API directly). Any other DT_NEEDED
 * is loaded once, by SONAME, and shared by every version of the module: never reloaded. */
static int system_library(const char *name) {
  static const char *const prefixes[] = {
      "libc.so",    "libm.so",       "libdl.so",      "libpthread.so", "librt.so",
      "libutil.so", "libresolv.so",  "libanl.so",     "libcrypt.so",   "libstdc++.so",
      "libgcc_s.so", "libatomic.so", "ld-linux",      "libasan.so",    "libubsan.so",
      "libtsan.so", "liblsan.so",    "libclang_rt.",  "libhotmod.so",  "libmvec.so",
      "libc++.so",  "libc++abi.so",  "libunwind.so",  "ld64.so",       "libgomp.so"};
  size_t i;
  for (i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
    if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
      return 1;
  return 0;
}

/* One pass over the symbols the hash tables reach (one step per symbol): the module
 * descriptor's first two words (abi, size), read from the file's bytes so a module built
 * for another ABI is refused before dlopen runs any of its code (plain constants in an
 * initialised object: the file holds them as they will be); and what the lint looks for. */
static void scan_symbols(ck *c, const dyninfo *d, const symtab *st, hm__elf_info *info) {
  static const char desc[] = HM_MODULE_DESC_SYMBOL;
  uint64_t stroff, stravail;
  if (info == NULL || !map_vaddr(c, d->val[DT_STRTAB], st->strsz, &stroff, &stravail))
    return;
  for (uint64_t i = 1; i < st->hashed; i++) {
    ElfW(Sym) s;
    uint64_t off, avail;
    const char *name;
    c->steps++;
    memcpy(&s, c->buf + st->off + i * sizeof s, sizeof s);
    name = (const char *)c->buf + stroff + s.st_name; /* NUL-terminated: check_strtab */
    if (s.st_shndx == SHN_UNDEF) {
      /* The C++ compilers call the C++ runtime's __cxa_thread_atexit, which calls glibc's
       * __cxa_thread_atexit_impl; either pins the module while the thread lives. */
      if (strcmp(name, "__cxa_thread_atexit") == 0 ||
          strcmp(name, "__cxa_thread_atexit_impl") == 0)
        info->lint |= HM__LINT_THREAD_ATEXIT;
      else if (strcmp(name, "pthread_key_create") == 0)
        info->lint |= HM__LINT_KEY_CREATE;
      continue;
    }
    if (ELF64_ST_BIND((unsigned)s.st_info) == STB_GNU_UNIQUE) {
      info->lint |= HM__LINT_UNIQUE;
      if (info->unique_count < HM__LINT_UNIQUE_NAMES)
        info->unique_syms[info->unique_count] = name;
      info->unique_count++;
    }
    if (!info->has_desc && strcmp(name, desc) == 0 && s.st_size >= 2 * sizeof(uint32_t) &&
        map_vaddr(c, s.st_value, 8, &off, &avail)) {
      const uint64_t flags_at = offsetof(hm_module_desc, flags);
      info->has_desc = 1;
      info->desc_abi = get_u32(c, off);
      info->desc_size = get_u32(c, off + 4);
      /* A plain constant too, read where this library's layout has it (the loader uses the
       * descriptor only when its ABI is this one). */
      if (info->desc_abi == HM_MODULE_ABI && info->desc_size >= flags_at + sizeof(unsigned) &&
          s.st_size >= flags_at + sizeof(unsigned) &&
          map_vaddr(c, s.st_value + flags_at, sizeof(unsigned), &off, &avail))
        info->desc_flags = get_u32(c, off);
    }
  }
}

/* A search of a whole string costs a step per 16 bytes of it (and one for the call). */
static uint64_t scan_steps(const char *s) { return 1 + strlen(s) / 16; }

/* The lint's look at the dynamic section's strings: libraries it needs (one step each: the
 * names are compared with short prefixes), and the search path the loader will use. That is
 * one string, searched once: glibc keeps the last DT_RUNPATH, or without one the last
 * DT_RPATH (it ignores DT_RPATH when there is a DT_RUNPATH). Searching every entry would be
 * quadratic: a crafted file can hold millions of entries naming one long string. */
static void scan_dyn_strings(ck *c, const dyninfo *d, uint64_t doff, uint64_t count,
                             hm__elf_info *info) {
  uint64_t stroff, stravail;
  if (info == NULL || !map_vaddr(c, d->val[DT_STRTAB], d->val[DT_STRSZ], &stroff, &stravail))
    return;
  const char *strs = (const char *)c->buf + stroff; /* offsets checked: check_dyn_names */
  for (uint64_t i = 0; i < count && !((info->lint & HM__LINT_NEEDED) && info->hotmod_needed);
       i++) {
    ElfW(Dyn) e;
    c->steps++;
    memcpy(&e, c->buf + doff + i * sizeof e, sizeof e);
    if (e.d_tag == DT_NEEDED && info->hotmod_needed == NULL &&
        strncmp(strs + e.d_un.d_val, "libhotmod.so", 12) == 0)
      info->hotmod_needed = strs + e.d_un.d_val;
    if (e.d_tag == DT_NEEDED && !(info->lint & HM__LINT_NEEDED) &&
        !system_library(strs + e.d_un.d_val)) {
      info->lint |= HM__LINT_NEEDED;
      info->needed = strs + e.d_un.d_val;
    }
  }
  int tag = d->has[DT_RUNPATH] ? DT_RUNPATH : d->has[DT_RPATH] ? DT_RPATH : DT_NULL;
  if (tag != DT_NULL) {
    const char *path = strs + d->val[tag];
    c->steps += scan_steps(path);
    if (strstr(path, "$ORIGIN") != NULL) {
      info->lint |= HM__LINT_ORIGIN;
      info->runpath = path;
    }
  }
}

/* Where the symbols are, for lookups by name once the file is loaded (symbols.c): the
 * table glibc itself looks names up in (DT_GNU_HASH if there is one, else DT_HASH), with
 * the counts its checks above found. None when a table's tag is there with address 0, as
 * glibc would then read a table at the load base. */
static void note_syms(ck *c, const dyninfo *d, const symtab *st, const ElfW(Phdr) *dynph,
                      hm__elf_syms *s) {
  uint64_t off, avail;
  memset(s, 0, sizeof *s);
  if ((d->has_gnu_hash && d->gnu_hash == 0) || (d->has[DT_HASH] && d->val[DT_HASH] == 0) ||
      (d->has_versym && d->versym == 0))
    return;
  if (d->has_gnu_hash) {
    if (!map_vaddr(c, d->gnu_hash, 16, &off, &avail)) /* checked: always found */
      return;
    s->gnu_hash = d->gnu_hash;
    s->nbuckets = get_u32(c, off);
    s->symoffset = get_u32(c, off + 4);
    s->bloom_size = get_u32(c, off + 8);
    s->nsyms = st->gnu_count;
  } else if (d->has[DT_HASH]) {
    Elf_Symndx nb;
    if (!map_vaddr(c, d->val[DT_HASH], sizeof nb, &off, &avail))
      return;
    memcpy(&nb, c->buf + off, sizeof nb);
    s->sysv_hash = d->val[DT_HASH];
    s->nbuckets = (uint32_t)nb;
    s->nsyms = nb == s->nbuckets ? st->sysv_count : 0;
  }
  s->dynamic = dynph->p_vaddr;
  s->symtab = d->val[DT_SYMTAB];
  s->strtab = d->val[DT_STRTAB];
  s->strsz = d->val[DT_STRSZ];
  s->versym = d->has_versym ? d->versym : 0;
}

static int check_dynamic(ck *c, const ElfW(Phdr) *dynph, hm__elf_info *info) {
  dyninfo d;
  symtab st;
  uint64_t doff = 0, count = 0;
  int rc;
  if ((rc = read_dynamic(c, dynph, &d, &doff, &count)) || (rc = check_strtab(c, &d)) ||
      (rc = check_dyn_names(c, doff, count, d.val[DT_STRSZ])) ||
      (rc = check_symbols(c, &d, &st)) || (rc = check_all_relocs(c, &d, &st)) ||
      (rc = check_versym(c, &d, &st)) ||
      (rc = check_init_fini(c, &d)) || (rc = check_versions(c, &d)))
    return rc;

#ifdef DF_1_PIE
  /* A position-independent executable is ET_DYN too, but glibc refuses to dlopen it. */
  if (d.has_flags_1 && (d.flags_1 & DF_1_PIE) != 0)
    return fail(c, HM_ENOTELF, "not a shared object: a position-independent executable");
#endif

  scan_symbols(c, &d, &st, info);
  scan_dyn_strings(c, &d, doff, count, info);
  /* A module that deletes its keys in its unload hook, and says so, has dealt with them. */
  if (info != NULL && (info->desc_flags & HM_MODULE_KEYS_DELETED) != 0)
    info->lint &= ~(unsigned)HM__LINT_KEY_CREATE;
  if (info != NULL) {
    note_syms(c, &d, &st, dynph, &info->syms);
    info->nodelete = d.has_flags_1 && (d.flags_1 & DF_1_NODELETE) != 0;
    info->static_tls = d.has[DT_FLAGS] && (d.val[DT_FLAGS] & DF_STATIC_TLS) != 0;
    if (info->nodelete)
      info->lint |= HM__LINT_NODELETE;
    /* Only TLS it defines itself and reaches by offset from the thread pointer: a module
     * that uses an already-loaded library's initial-exec TLS (the live-call fast path does)
     * gets DF_STATIC_TLS too, harmlessly, and so does its own TLS of the default (dynamic)
     * model, which is not in the static area. */
#ifdef HM__TPOFF
    int own_static = c->own_tpoff;
#else
    int own_static = 1;
#endif
    if (info->static_tls && c->tls_size != 0 && own_static) {
      info->lint |= HM__LINT_STATIC_TLS;
      info->tls_size = c->tls_size;
    }
  }
  return 0;
}

/* ---- Section headers: optional, but if announced they must be in the file -------------- */

/* dlopen never reads section headers and a stripped file without them loads fine. But a
 * linker writes them last, after everything else, so a file whose announced section header
 * table (or a section it describes) runs past the end is one still being written or cut
 * short: exactly what this check exists to catch, even when the loadable part is already
 * complete. */
static int check_sections(ck *c, const ElfW(Ehdr) *eh) {
  if (eh->e_shoff == 0)
    return 0;
  if (eh->e_shentsize != sizeof(ElfW(Shdr)))
    return fail(c, HM_EBADELF, "corrupt: e_shentsize is %u, expected %zu",
                (unsigned)eh->e_shentsize, sizeof(ElfW(Shdr)));
  uint64_t shnum, bytes;
  if (!in_range(eh->e_shoff, sizeof(ElfW(Shdr)), c->len))
    return fail(c, HM_EBADELF, "truncated: section headers start at %llu, file has %llu bytes",
                (unsigned long long)eh->e_shoff, (unsigned long long)c->len);
  shnum = section_count(c);
  if (!mul_ok(shnum, sizeof(ElfW(Shdr)), &bytes) || !in_range(eh->e_shoff, bytes, c->len))
    return fail(c, HM_EBADELF,
                "truncated: %llu section headers at %llu run past the end (%llu bytes)",
                (unsigned long long)shnum, (unsigned long long)eh->e_shoff,
                (unsigned long long)c->len);
  for (uint64_t i = 0; i < shnum; i++) {
    ElfW(Shdr) s;
    c->steps++;
    memcpy(&s, c->buf + eh->e_shoff + i * sizeof s, sizeof s);
    if (s.sh_type == SHT_NULL || s.sh_type == SHT_NOBITS)
      continue;
    if (!in_range(s.sh_offset, s.sh_size, c->len))
      return fail(c, HM_EBADELF, "truncated: section %llu ends past the end (%llu bytes)",
                  (unsigned long long)i, (unsigned long long)c->len);
  }
  return 0;
}

/* Whether rustc built the file (or part of it): its .comment section says "rustc version",
 * which rustc writes and strip keeps. Asked only of a file whose imports the Rust finding
 * would replace, after check_sections found every section inside the file. A step per
 * section header, and one per 16 bytes of the first 4 KiB of .comment. */
static int built_by_rustc(ck *c) {
  static const char name[] = ".comment", mark[] = "rustc version ";
  const ElfW(Ehdr) *eh = c->eh;
  uint64_t shnum, stridx = eh->e_shstrndx, n, k;
  ElfW(Shdr) str;
  if (eh->e_shoff == 0)
    return 0;
  shnum = section_count(c);
  if (stridx == SHN_XINDEX) {
    ElfW(Shdr) s0;
    memcpy(&s0, c->buf + eh->e_shoff, sizeof s0);
    stridx = s0.sh_link;
  }
  if (stridx == SHN_UNDEF || stridx >= shnum)
    return 0;
  memcpy(&str, c->buf + eh->e_shoff + stridx * sizeof str, sizeof str);
  if (str.sh_type != SHT_STRTAB)
    return 0;
  for (uint64_t i = 0; i < shnum; i++) {
    ElfW(Shdr) s;
    c->steps++;
    memcpy(&s, c->buf + eh->e_shoff + i * sizeof s, sizeof s);
    if (s.sh_type != SHT_PROGBITS || !in_range(s.sh_name, sizeof name, str.sh_size) ||
        memcmp(c->buf + str.sh_offset + s.sh_name, name, sizeof name) != 0)
      continue;
    n = s.sh_size < 4096 ? s.sh_size : 4096;
    c->steps += 1 + n / 16;
    for (k = 0; k + (sizeof mark - 1) <= n; k++)
      if (memcmp(c->buf + s.sh_offset + k, mark, sizeof mark - 1) == 0)
        return 1;
    return 0;
  }
  return 0;
}

/* ---- Entry point ----------------------------------------------------------------------- */

/* The ELF header: a shared object for this machine, with a program header table inside the
 * file. */
static int check_ehdr(ck *c, const ElfW(Ehdr) *eh) {
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
    return fail(c, HM_ENOTELF, "not ELF: no ELF magic");
  if (eh->e_ident[EI_CLASS] != HM__ELFCLASS)
    return fail(c, HM_ENOTELF, "not for this machine: ELF class %u, expected %u",
                eh->e_ident[EI_CLASS], HM__ELFCLASS);
  if (eh->e_ident[EI_DATA] != HM__ELFDATA)
    return fail(c, HM_ENOTELF, "not for this machine: byte order %u, expected %u",
                eh->e_ident[EI_DATA], HM__ELFDATA);
  if (eh->e_ident[EI_VERSION] != EV_CURRENT || eh->e_version != EV_CURRENT)
    return fail(c, HM_ENOTELF, "not ELF: version %u, expected %u", eh->e_ident[EI_VERSION],
                EV_CURRENT);
  if (eh->e_ident[EI_OSABI] != ELFOSABI_SYSV && eh->e_ident[EI_OSABI] != ELFOSABI_GNU)
    return fail(c, HM_ENOTELF, "not for this system: OS ABI %u", eh->e_ident[EI_OSABI]);
#ifdef HM__MACHINE
  if (eh->e_machine != HM__MACHINE)
    return fail(c, HM_ENOTELF, "not for this machine: e_machine %u, expected %u",
                (unsigned)eh->e_machine, (unsigned)HM__MACHINE);
#endif
  if (eh->e_type != ET_DYN)
    return fail(c, HM_ENOTELF, "not a shared object: e_type %u", (unsigned)eh->e_type);

  /* Program headers: the loader's whole view of the file. */
  if (eh->e_phentsize != sizeof(ElfW(Phdr)))
    return fail(c, HM_EBADELF, "corrupt: e_phentsize is %u, expected %zu",
                (unsigned)eh->e_phentsize, sizeof(ElfW(Phdr)));
  if (eh->e_phnum == 0)
    return fail(c, HM_EBADELF, "corrupt: no program headers");
  if (!in_range(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(ElfW(Phdr)), c->len))
    return fail(c, HM_EBADELF,
                "truncated: %u program headers at %llu run past the end (%llu bytes)",
                (unsigned)eh->e_phnum, (unsigned long long)eh->e_phoff,
                (unsigned long long)c->len);
  c->phoff = eh->e_phoff;
  c->phnum = eh->e_phnum;
  return 0;
}

/* Record PT_LOAD number i (the nload-th) in c->load for the address lookups. The gABI
 * requires PT_LOADs in ascending p_vaddr order, and glibc relies on it: it reserves the
 * address range from the first segment's start to the last one's end, then maps each
 * segment at its own address with MAP_FIXED. A segment out of order is mapped outside the
 * reservation, over whatever the process has there; overlapping segments replace each
 * other's bytes, so the tables checked in one are not what the loader reads. So the
 * segments must be ascending, disjoint and not wrap around; that also lets a lookup use a
 * binary search. */
static int add_load(ck *c, unsigned i, const ElfW(Phdr) *ph, unsigned nload,
                    uint64_t *prev_end) {
  uint64_t vaddr = ph->p_vaddr, memsz = ph->p_memsz;
  if (ph->p_filesz > ph->p_memsz)
    return fail(c, HM_EBADELF, "corrupt: PT_LOAD segment %u has p_filesz %llu > p_memsz %llu",
                i, (unsigned long long)ph->p_filesz, (unsigned long long)ph->p_memsz);
  if (nload >= HM__MAX_LOADS)
    return fail(c, HM_EBADELF, "corrupt: more than %d PT_LOAD segments", HM__MAX_LOADS);
  if (memsz > (uint64_t)(ElfW(Addr))-1 - vaddr)
    return fail(c, HM_EBADELF, "corrupt: PT_LOAD segment %u wraps around the address space",
                i);
  if (nload > 0 && vaddr < *prev_end)
    return fail(c, HM_EBADELF,
                "corrupt: PT_LOAD segment %u (at 0x%llx) overlaps or precedes the one before "
                "it",
                i, (unsigned long long)vaddr);
  *prev_end = vaddr + memsz;
  if (memsz != 0) { /* an empty segment holds no address */
    seg *s = &c->load[c->nload++];
    s->vaddr = vaddr;
    s->end = vaddr + memsz;
    s->fileend = vaddr + ph->p_filesz;
    s->off = ph->p_offset;
  }
  return 0;
}

/* Mapping a PT_LOAD past the end of the file gives pages that SIGBUS when touched, and
 * other segments (PT_TLS's init image, PT_GNU_PROPERTY, notes) are read too: a segment
 * extending past the end means the file is incomplete. PT_LOADs first, so a cut file is
 * reported by the segment that matters. */
static int check_segments(ck *c, ElfW(Phdr) *dynph) {
  unsigned nload = 0, ndyn = 0;
  uint64_t prev_end = 0;
  int rc;
  memset(dynph, 0, sizeof *dynph);
  for (int pass = 0; pass < 2; pass++) {
    for (unsigned i = 0; i < c->phnum; i++) {
      ElfW(Phdr) ph;
      c->steps++;
      get_phdr(c, i, &ph);
      if (ph.p_type == PT_NULL || (ph.p_type == PT_LOAD) != (pass == 0))
        continue;
      if (!in_range(ph.p_offset, ph.p_filesz, c->len)) {
        unsigned long long end = (unsigned long long)ph.p_offset + ph.p_filesz;
        if (end < ph.p_offset)
          return fail(c, HM_EBADELF, "corrupt: segment %u's offset and size overflow", i);
        if (pass == 0)
          return fail(c, HM_EBADELF,
                      "truncated: PT_LOAD segment %u ends at %llu, file has %llu bytes", i, end,
                      (unsigned long long)c->len);
        return fail(c, HM_EBADELF,
                    "truncated: segment %u (type 0x%x) ends at %llu, file has %llu bytes", i,
                    (unsigned)ph.p_type, end, (unsigned long long)c->len);
      }
      if (ph.p_type == PT_LOAD) {
        if ((rc = add_load(c, i, &ph, nload, &prev_end)) != 0)
          return rc;
        nload++;
      } else if (ph.p_type == PT_DYNAMIC) {
        *dynph = ph;
        ndyn++;
      }
    }
  }
  if (nload == 0)
    return fail(c, HM_EBADELF, "corrupt: no PT_LOAD segment");
  if (ndyn != 1)
    return fail(c, HM_EBADELF, "corrupt: %u PT_DYNAMIC segments, expected 1", ndyn);
  return 0;
}

/* Segments read through the mapping rather than the file: their virtual range must be
 * file-backed as well. */
static int check_mapped_segments(ck *c) {
  for (unsigned i = 0; i < c->phnum; i++) {
    ElfW(Phdr) ph;
    uint64_t o, a;
    c->steps++;
    get_phdr(c, i, &ph);
    int via_mapping = ph.p_type == PT_TLS;
    if (ph.p_type == PT_TLS)
      c->tls_size = ph.p_memsz;
#ifdef PT_GNU_PROPERTY
    via_mapping = via_mapping || ph.p_type == PT_GNU_PROPERTY;
#endif
    if (via_mapping && ph.p_filesz != 0 && !map_vaddr(c, ph.p_vaddr, ph.p_filesz, &o, &a))
      return fail(c, HM_EBADELF, "corrupt: segment %u (type 0x%x) is outside the PT_LOADs", i,
                  (unsigned)ph.p_type);
  }
  return 0;
}

static int check_file(ck *c, hm__elf_info *info) {
  /* A short file that starts like ELF is one still being written; anything else is not
   * ELF at all. */
  if (c->len < sizeof(ElfW(Ehdr))) {
    size_t n = c->len < SELFMAG ? (size_t)c->len : SELFMAG;
    if (memcmp(c->buf, ELFMAG, n) == 0)
      return fail(c, HM_EBADELF, "truncated: %llu bytes, an ELF header needs %zu",
                  (unsigned long long)c->len, sizeof(ElfW(Ehdr)));
    return fail(c, HM_ENOTELF, "not ELF: no ELF magic");
  }
  ElfW(Ehdr) eh;
  ElfW(Phdr) dynph;
  int rc;
  memcpy(&eh, c->buf, sizeof eh);
  c->eh = &eh;
  if ((rc = check_ehdr(c, &eh)) || (rc = check_segments(c, &dynph)) ||
      (rc = check_mapped_segments(c)) || (rc = check_dynamic(c, &dynph, info)) ||
      (rc = check_sections(c, &eh)))
    return rc;
  /* Rust's std always imports both, used or not: one finding with a fix for Rust. */
  if (info != NULL && (info->lint & (HM__LINT_KEY_CREATE | HM__LINT_THREAD_ATEXIT)) != 0 &&
      built_by_rustc(c)) {
    info->lint &= ~(HM__LINT_KEY_CREATE | HM__LINT_THREAD_ATEXIT);
    info->lint |= HM__LINT_RUST_STD;
  }
  return 0;
}

int hm__elf_check(const unsigned char *buf, size_t len, hm__elf_info *info, char *why,
                  size_t whylen) {
  ck c;
  memset(&c, 0, offsetof(ck, load));
  c.buf = buf;
  c.len = len;
  c.why = why;
  c.whylen = whylen;
  if (why != NULL && whylen > 0)
    why[0] = '\0';
  if (info != NULL)
    memset(info, 0, sizeof *info);
  if (buf == NULL || len == 0)
    return fail(&c, HM_EBADELF, "empty file");
  int rc = check_file(&c, info);
  if (rc != 0 && info != NULL)
    memset(info, 0, sizeof *info);
  if (info != NULL)
    info->steps = c.steps;
  return rc;
}
