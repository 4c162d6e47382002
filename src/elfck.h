/* The ELF check's private pieces, shared by elfcheck.c (the file as a whole: its header,
 * segments and sections), elftables.c (the dynamic section and every table the loader
 * follows from it) and elffacts.c (what the lint and the lookups learn from it): the
 * machine this build is for, the check's context, and bounds-checked accessors. Nothing
 * here does I/O or allocates: elfcheck.c says why, and "Work bound" below how much it does. */
#ifndef HM_ELFCK_H
#define HM_ELFCK_H

#include "internal.h"

#include <elf.h>
#include <link.h>
#include <stdarg.h>
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

__attribute__((format(printf, 3, 4))) static inline int fail(ck *c, int err, const char *fmt, ...) {
  if (c->why != NULL && c->whylen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, c->whylen, fmt, ap);
    va_end(ap);
  }
  return err;
}

/* [off, off+size) inside [0, len), without computing off+size (which may wrap). */
static inline int in_range(uint64_t off, uint64_t size, uint64_t len) {
  return off <= len && size <= len - off;
}

/* n * size without wrapping; 0 when it would. */
static inline int mul_ok(uint64_t n, uint64_t size, uint64_t *out) {
  if (size != 0 && n > UINT64_MAX / size)
    return 0;
  *out = n * size;
  return 1;
}

static inline void get_phdr(const ck *c, unsigned i, ElfW(Phdr) *ph) {
  /* Bounds were checked once for the whole table in check_ehdr. */
  memcpy(ph, c->buf + c->phoff + (uint64_t)i * sizeof *ph, sizeof *ph);
}

static inline uint32_t get_u32(const ck *c, uint64_t off) {
  uint32_t v;
  memcpy(&v, c->buf + off, sizeof v);
  return v;
}

/* The segment whose memory holds the byte at addr, if any. Lookups come in runs on one table,
 * so the last hit is tried first; otherwise a binary search (the segments are sorted and
 * disjoint, so at most one can hold addr). */
static inline const seg *find_seg(ck *c, uint64_t addr) {
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
static inline int map_vaddr(ck *c, uint64_t addr, uint64_t size, uint64_t *off, uint64_t *avail) {
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
static inline int in_image(ck *c, uint64_t addr, uint64_t size) {
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

/* The number of section headers, once the first one is known to be in the file: e_shnum,
 * or for more than SHN_LORESERVE sections, section 0's sh_size. */
static inline uint64_t section_count(const ck *c) {
  uint64_t shnum = c->eh->e_shnum;
  if (shnum == 0) {
    ElfW(Shdr) s0;
    memcpy(&s0, c->buf + c->eh->e_shoff, sizeof s0);
    shnum = s0.sh_size;
  }
  return shnum;
}

/* ---- Across the files ------------------------------------------------------------------ */

/* The dynamic section and its tables (elftables.c): everything the loader follows from it
 * lies in the file, and what the lint needs is noted in info (may be NULL). */
HM__HIDDEN int hm__elf_check_dynamic(ck *c, const ElfW(Phdr) *dynph, hm__elf_info *info);
/* The facts (elffacts.c): the lint's findings from the symbols and from the dynamic
 * section's strings, where the symbols are for lookups by hand, and whether rustc built it. */
HM__HIDDEN void hm__elf_scan_symbols(ck *c, const dyninfo *d, const symtab *st,
                                     hm__elf_info *info);
HM__HIDDEN void hm__elf_scan_strings(ck *c, const dyninfo *d, uint64_t doff, uint64_t count,
                                     hm__elf_info *info);
HM__HIDDEN void hm__elf_note_syms(ck *c, const dyninfo *d, const symtab *st,
                                  const ElfW(Phdr) *dynph, hm__elf_syms *s);
HM__HIDDEN int hm__elf_built_by_rustc(ck *c);
/* If section number i (inside the file, as every section is by then) is a well-formed
 * .gnu_debuglink, note its file name and CRC in info. */
HM__HIDDEN void hm__elf_note_debuglink(ck *c, uint64_t i, hm__elf_info *info);

#endif
