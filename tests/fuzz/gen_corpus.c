/* gen_corpus.c: the crafted inputs of the ELF check's fuzz corpus, and the large worst-case
 * files its time per megabyte is measured on.
 *
 *   gen_corpus DIR                 write the crafted files into DIR (tests/fuzz/corpus)
 *   gen_corpus --check DIR         exit 1 unless DIR holds exactly what would be written
 *   gen_corpus --big MB DIR [NAME] write the worst shapes (or the one named), MB each
 *                                  (or "64k": KB)
 *
 * Every file is built here from scratch, not cut from a real module, so that it stays small
 * and the same on every machine: a shared object for x86-64 (ELF64, little-endian) with
 * everything hm__elf_check walks (both hash tables, symbols, RELA and JMPREL relocations,
 * DT_RELR, version tables, TLS, init/fini arrays, section headers) and what the lint looks
 * for, then variants of it broken in one place each. A file's name says what the check must
 * answer, and replay.c holds it to that: pass-* (0), badelf-* (HM_EBADELF), notelf-*
 * (HM_ENOTELF). The output is written with the host's byte order: run it on a
 * little-endian machine. */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hotmod/module.h"

#ifndef DT_RELR
#define DT_RELRSZ 35
#define DT_RELR 36
#define DT_RELRENT 37
#endif
#ifndef DF_1_PIE
#define DF_1_PIE 0x08000000
#endif

/* sizeof(hm_module_desc) on x86-64, written as a constant so that the output does not
 * depend on the machine that runs this. */
#define DESC_SIZE 48u

#define MAXDYN 48u       /* room in the dynamic section, in entries */
#define DATA_SIZE 0x300u /* the data area: descriptor, relocation targets, TLS image */

/* ---- Output ------------------------------------------------------------------------------ */

static const char *out_dir;
static int checking; /* --check: compare instead of write */
static int mismatches, written;
static char names[256][64];
static unsigned nnames;

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "gen_corpus: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static void emit(const char *name, const void *buf, size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", out_dir, name);
  if (nnames < sizeof names / sizeof names[0])
    snprintf(names[nnames++], sizeof names[0], "%s", name);
  if (checking) {
    FILE *f = fopen(path, "rb");
    unsigned char *have = malloc(len + 1);
    size_t n = 0;
    if (have == NULL)
      die("out of memory");
    if (f != NULL) {
      n = fread(have, 1, len + 1, f);
      fclose(f);
    }
    if (f == NULL || n != len || memcmp(have, buf, len) != 0) {
      fprintf(stderr, "gen_corpus: %s is %s\n", path, f == NULL ? "missing" : "not current");
      mismatches++;
    }
    free(have);
    return;
  }
  FILE *f = fopen(path, "wb");
  if (f == NULL || (len > 0 && fwrite(buf, 1, len, f) != len) || fclose(f) != 0)
    die("cannot write %s: %s", path, strerror(errno));
  written++;
}

/* ---- Hashes ------------------------------------------------------------------------------ */

static uint32_t elf_hash(const char *s) {
  uint32_t h = 0, g;
  for (; *s; s++) {
    h = (h << 4) + (unsigned char)*s;
    g = h & 0xf0000000u;
    if (g)
      h ^= g >> 24;
    h &= ~g;
  }
  return h;
}

static uint32_t gnu_hash(const char *s) {
  uint32_t h = 5381;
  for (; *s; s++)
    h = h * 33 + (unsigned char)*s;
  return h;
}

/* ---- The shared object ------------------------------------------------------------------- */

typedef struct spec {
  unsigned nfill;    /* PT_NULL program headers before the real ones */
  unsigned ntiny;    /* extra PT_LOADs after the image: 8 bytes each, 16 apart */
  int sysv_hash, gnu_hash, shdrs;
  int relocs;        /* DT_RELA and DT_JMPREL */
  int relr;          /* DT_RELR: an address and a bitmap into the data area */
  int relr_across;   /* DT_RELR: a bitmap naming a word in each tiny PT_LOAD */
  int versions;      /* DT_VERSYM, DT_VERNEED, DT_VERDEF */
  int init;          /* DT_INIT, DT_FINI and the arrays */
  int tls;           /* PT_TLS and DF_STATIC_TLS */
  int lint;          /* what the lint reports: NEEDED, $ORIGIN, NODELETE, UNIQUE, imports */
  size_t payload;    /* zeroed bytes for the caller, in the image before the dynamic section */
  uint64_t bss;      /* memory past the file-backed part of the main PT_LOAD */
} spec;

/* What was built, for the variants to edit. Addresses equal file offsets: the main PT_LOAD
 * maps the file from offset 0 at address 0. */
typedef struct elf {
  unsigned char *buf;
  size_t len, cap;
  size_t phoff;
  unsigned phnum, load_ph, dyn_ph, tls_ph, stack_ph, tiny_ph;
  size_t dyn, strtab, strsz, symtab, hash, gnu, versym, verneed, verdef, rela, jmprel, relr,
      data, text, payload, load_end, shoff;
  unsigned nsyms;
  uint64_t image_end;
  size_t str_needed, str_runpath; /* string offsets of libhelper.so and the RUNPATH */
} elf;

static size_t reserve(elf *e, size_t n, size_t align) {
  size_t off = (e->len + align - 1) & ~(align - 1);
  if (off > e->cap || n > e->cap - off)
    die("image of %zu bytes is too small", e->cap);
  e->len = off + n; /* the buffer is zeroed */
  return off;
}

static size_t put(elf *e, const void *p, size_t n, size_t align) {
  size_t off = reserve(e, n, align);
  memcpy(e->buf + off, p, n);
  return off;
}

static void put_at(elf *e, size_t off, const void *p, size_t n) {
  if (off > e->len || n > e->len - off)
    die("write at %zu outside the image", off);
  memcpy(e->buf + off, p, n);
}

static Elf64_Phdr ph_get(const elf *e, unsigned i) {
  Elf64_Phdr ph;
  memcpy(&ph, e->buf + e->phoff + (size_t)i * sizeof ph, sizeof ph);
  return ph;
}

static void ph_put(elf *e, unsigned i, const Elf64_Phdr *ph) {
  memcpy(e->buf + e->phoff + (size_t)i * sizeof *ph, ph, sizeof *ph);
}

static Elf64_Ehdr eh_get(const elf *e) {
  Elf64_Ehdr eh;
  memcpy(&eh, e->buf, sizeof eh);
  return eh;
}

static void eh_put(elf *e, const Elf64_Ehdr *eh) { memcpy(e->buf, eh, sizeof *eh); }

/* Dynamic entries: the index of the first with this tag before DT_NULL, or -1. */
static long dyn_find(const elf *e, int64_t tag) {
  for (unsigned i = 0; i < MAXDYN; i++) {
    Elf64_Dyn d;
    memcpy(&d, e->buf + e->dyn + i * sizeof d, sizeof d);
    if (d.d_tag == tag)
      return (long)i;
    if (d.d_tag == DT_NULL)
      return -1;
  }
  return -1;
}

/* Set the first entry with this tag, or append one before DT_NULL. */
static void dyn_set(elf *e, int64_t tag, uint64_t val) {
  long i = dyn_find(e, tag);
  if (i < 0)
    i = dyn_find(e, DT_NULL);
  if (i < 0 || (unsigned)i + 1 >= MAXDYN)
    die("no room for dynamic tag %lld", (long long)tag);
  Elf64_Dyn d = {.d_tag = tag, .d_un.d_val = val};
  memcpy(e->buf + e->dyn + (size_t)i * sizeof d, &d, sizeof d);
}

static void dyn_del(elf *e, int64_t tag) {
  long i = dyn_find(e, tag);
  if (i < 0)
    die("no dynamic tag %lld to remove", (long long)tag);
  size_t at = e->dyn + (size_t)i * sizeof(Elf64_Dyn);
  memmove(e->buf + at, e->buf + at + sizeof(Elf64_Dyn),
          (MAXDYN - (size_t)i - 1) * sizeof(Elf64_Dyn));
  memset(e->buf + e->dyn + (MAXDYN - 1) * sizeof(Elf64_Dyn), 0, sizeof(Elf64_Dyn));
}

static Elf64_Sym sym_get(const elf *e, unsigned i) {
  Elf64_Sym s;
  memcpy(&s, e->buf + e->symtab + (size_t)i * sizeof s, sizeof s);
  return s;
}

static void sym_put(elf *e, unsigned i, const Elf64_Sym *s) {
  memcpy(e->buf + e->symtab + (size_t)i * sizeof *s, s, sizeof *s);
}

static Elf64_Rela rela_get(const elf *e, size_t off) {
  Elf64_Rela r;
  memcpy(&r, e->buf + off, sizeof r);
  return r;
}

static void rela_put(elf *e, size_t off, const Elf64_Rela *r) {
  memcpy(e->buf + off, r, sizeof *r);
}

/* The string table: names, then the strings the dynamic section points at. */
typedef struct strs {
  char buf[512];
  size_t len;
} strs;

static size_t str_add(strs *t, const char *s) {
  size_t n = strlen(s) + 1, off = t->len;
  if (n > sizeof t->buf - t->len)
    die("string table full");
  memcpy(t->buf + off, s, n);
  t->len += n;
  return off;
}

enum { SYM_UNDEF_A = 1, SYM_UNDEF_B, SYM_DESC, SYM_FN, SYM_VAR, NSYMS };

/* Offsets in the data area. */
enum {
  D_DESC = 0x000,   /* the module descriptor */
  D_RELA = 0x100,   /* RELA targets, 8 words */
  D_GOT = 0x140,    /* JMPREL target */
  D_RELR = 0x180,   /* RELR address; its bitmap names words up to 0x180 + 63 * 8 */
  D_RELR2 = 0x1c8,  /* a second RELR address */
  D_VAR = 0x280,    /* the unique (or plain) variable */
  D_TLS = 0x2c0,    /* the TLS image, 8 bytes (16 in memory) */
  D_INIT = 0x2d0,   /* DT_INIT_ARRAY, one word */
  D_FINI = 0x2d8    /* DT_FINI_ARRAY, one word */
};

static elf build(const spec *sp, size_t cap) {
  elf e;
  memset(&e, 0, sizeof e);
  e.cap = cap;
  e.buf = calloc(cap, 1);
  if (e.buf == NULL)
    die("out of memory for %zu bytes", cap);

  reserve(&e, sizeof(Elf64_Ehdr), 8);
  e.phnum = sp->nfill + 3 + (sp->tls ? 1 : 0) + sp->ntiny;
  if (e.phnum > 0xffff)
    die("%u program headers", e.phnum);
  e.phoff = reserve(&e, (size_t)e.phnum * sizeof(Elf64_Phdr), 8);
  e.load_ph = sp->nfill;
  e.dyn_ph = e.load_ph + 1;
  e.tls_ph = sp->tls ? e.dyn_ph + 1 : 0;
  e.stack_ph = e.dyn_ph + 1 + (sp->tls ? 1 : 0);
  e.tiny_ph = e.stack_ph + 1;

  /* Strings. */
  strs t = {.buf = {0}, .len = 1};
  const char *undef_a = sp->lint ? "pthread_key_create" : "malloc";
  const char *undef_b = sp->lint ? "__cxa_thread_atexit_impl" : "free";
  const char *var = sp->lint ? "crafted_unique" : "crafted_var";
  const char *symname[NSYMS] = {"", undef_a, undef_b, HM_MODULE_DESC_SYMBOL, "crafted_fn", var};
  size_t symstr[NSYMS] = {0};
  for (unsigned i = 1; i < NSYMS; i++)
    symstr[i] = str_add(&t, symname[i]);
  size_t s_libc = str_add(&t, "libc.so.6"), s_soname = str_add(&t, "libcrafted.so");
  size_t s_glibc = str_add(&t, "GLIBC_2.2.5"), s_glibc34 = str_add(&t, "GLIBC_2.34");
  size_t s_ver = str_add(&t, "CRAFTED_1.0");
  e.str_needed = str_add(&t, "libhelper.so");
  e.str_runpath = str_add(&t, "$ORIGIN/../lib");
  e.strsz = t.len;
  e.strtab = put(&e, t.buf, t.len, 1);

  /* Symbols; addresses are filled in once the data and text are placed. */
  e.nsyms = NSYMS;
  e.symtab = reserve(&e, NSYMS * sizeof(Elf64_Sym), 8);

  /* DT_HASH: 3 buckets, one chain per symbol. */
  if (sp->sysv_hash) {
    uint32_t h[2 + 3 + NSYMS] = {3, NSYMS};
    for (unsigned i = 1; i < NSYMS; i++) {
      uint32_t b = elf_hash(symname[i]) % 3;
      h[2 + 3 + i] = h[2 + b];
      h[2 + b] = i;
    }
    e.hash = put(&e, h, sizeof h, 8);
  }
  /* DT_GNU_HASH: the defined symbols (from SYM_DESC) in one bucket. */
  if (sp->gnu_hash) {
    uint32_t head[4] = {1, SYM_DESC, 1, 6};
    uint64_t bloom = 0;
    uint32_t bucket = SYM_DESC, chain[NSYMS - SYM_DESC];
    for (unsigned i = SYM_DESC; i < NSYMS; i++) {
      uint32_t h = gnu_hash(symname[i]);
      bloom |= (uint64_t)1 << (h % 64) | (uint64_t)1 << ((h >> 6) % 64);
      chain[i - SYM_DESC] = (h & ~1u) | (i + 1 == NSYMS ? 1u : 0u);
    }
    e.gnu = put(&e, head, sizeof head, 8);
    put(&e, &bloom, sizeof bloom, 8);
    put(&e, &bucket, sizeof bucket, 4);
    put(&e, chain, sizeof chain, 4);
  }
  /* Versions: 1 the file itself, 2 CRAFTED_1.0 (defined), 3 and 4 from libc (needed). */
  if (sp->versions) {
    Elf64_Half vs[NSYMS] = {0, 3, 4, 2, 2, 2};
    e.versym = put(&e, vs, sizeof vs, 2);
    Elf64_Verneed vn = {.vn_version = 1, .vn_cnt = 2, .vn_file = (Elf64_Word)s_libc,
                        .vn_aux = sizeof(Elf64_Verneed), .vn_next = 0};
    Elf64_Vernaux va[2] = {
        {.vna_hash = elf_hash("GLIBC_2.2.5"), .vna_other = 3, .vna_name = (Elf64_Word)s_glibc,
         .vna_next = sizeof(Elf64_Vernaux)},
        {.vna_hash = elf_hash("GLIBC_2.34"), .vna_other = 4, .vna_name = (Elf64_Word)s_glibc34,
         .vna_next = 0}};
    e.verneed = put(&e, &vn, sizeof vn, 8);
    put(&e, va, sizeof va, 4);
    const size_t one = sizeof(Elf64_Verdef) + sizeof(Elf64_Verdaux);
    Elf64_Verdef vd[2] = {
        {.vd_version = 1, .vd_flags = VER_FLG_BASE, .vd_ndx = 1, .vd_cnt = 1,
         .vd_hash = elf_hash("libcrafted.so"), .vd_aux = sizeof(Elf64_Verdef),
         .vd_next = (Elf64_Word)one},
        {.vd_version = 1, .vd_ndx = 2, .vd_cnt = 1, .vd_hash = elf_hash("CRAFTED_1.0"),
         .vd_aux = sizeof(Elf64_Verdef), .vd_next = 0}};
    Elf64_Verdaux vda[2] = {{.vda_name = (Elf64_Word)s_soname}, {.vda_name = (Elf64_Word)s_ver}};
    e.verdef = put(&e, &vd[0], sizeof vd[0], 8);
    put(&e, &vda[0], sizeof vda[0], 4);
    put(&e, &vd[1], sizeof vd[1], 4);
    put(&e, &vda[1], sizeof vda[1], 4);
  }
  if (sp->relocs) {
    e.rela = reserve(&e, 4 * sizeof(Elf64_Rela), 8);
    e.jmprel = reserve(&e, sizeof(Elf64_Rela), 8);
  }
  if (sp->relr || sp->relr_across)
    e.relr = reserve(&e, (sp->relr ? 3 : 0) * 8 + (sp->relr_across ? 2 : 0) * 8, 8);
  e.data = reserve(&e, DATA_SIZE, 16);
  e.text = reserve(&e, 16, 16);
  memset(e.buf + e.text, 0xc3, 16); /* ret */
  if (sp->payload)
    e.payload = reserve(&e, sp->payload, 8);
  e.dyn = reserve(&e, MAXDYN * sizeof(Elf64_Dyn), 8);
  e.load_end = e.len;
  e.image_end = ((e.load_end + 7) & ~(uint64_t)7) + sp->bss;

  /* Now that the addresses are known: symbols, data, relocations. */
  for (unsigned i = 1; i < NSYMS; i++) {
    Elf64_Sym s = {.st_name = (Elf64_Word)symstr[i]};
    switch (i) {
    case SYM_UNDEF_A: s.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC); break;
    case SYM_UNDEF_B: s.st_info = ELF64_ST_INFO(STB_WEAK, STT_FUNC); break;
    case SYM_DESC:
      s.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_OBJECT);
      s.st_shndx = 1, s.st_value = e.data + D_DESC, s.st_size = DESC_SIZE;
      break;
    case SYM_FN:
      s.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
      s.st_shndx = 1, s.st_value = e.text, s.st_size = 16;
      break;
    default:
      s.st_info = ELF64_ST_INFO(sp->lint ? STB_GNU_UNIQUE : STB_GLOBAL, STT_OBJECT);
      s.st_shndx = 1, s.st_value = e.data + D_VAR, s.st_size = 8;
      break;
    }
    sym_put(&e, i, &s);
  }
  uint32_t desc[2] = {HM_MODULE_ABI, DESC_SIZE};
  put_at(&e, e.data + D_DESC, desc, sizeof desc);
  uint64_t w = e.text;
  put_at(&e, e.data + D_INIT, &w, 8);
  put_at(&e, e.data + D_FINI, &w, 8);
  w = 0x1122334455667788u;
  put_at(&e, e.data + D_TLS, &w, 8);
  if (sp->relocs) {
    Elf64_Rela r[4] = {
        {e.data + D_RELA, ELF64_R_INFO(0, R_X86_64_RELATIVE), (int64_t)e.text},
        {e.data + D_RELA + 8, ELF64_R_INFO(0, R_X86_64_RELATIVE), (int64_t)e.data},
        {e.data + D_RELA + 16, ELF64_R_INFO(SYM_UNDEF_A, R_X86_64_GLOB_DAT), 0},
        {e.data + D_RELA + 24, ELF64_R_INFO(SYM_DESC, R_X86_64_64), 0}};
    put_at(&e, e.rela, r, sizeof r);
    Elf64_Rela j = {e.data + D_GOT, ELF64_R_INFO(SYM_UNDEF_B, R_X86_64_JUMP_SLOT), 0};
    put_at(&e, e.jmprel, &j, sizeof j);
  }
  size_t relr_len = 0;
  if (sp->relr) {
    /* Words D_RELR, then D_RELR + 8, + 16, + 32 (bits 0, 1, 3), then D_RELR2. */
    uint64_t r[3] = {e.data + D_RELR, 1 | 0xbu << 1, e.data + D_RELR2};
    put_at(&e, e.relr, r, sizeof r);
    relr_len += sizeof r;
  }
  if (sp->relr_across) {
    /* The last word of the image, then every other word after it: one in each tiny
     * PT_LOAD, so no bitmap range lies in one segment. */
    uint64_t bits = 0;
    for (unsigned i = 0; i < sp->ntiny && 2 * i < 63; i++)
      bits |= (uint64_t)1 << (2 * i);
    uint64_t r[2] = {e.image_end - 8, 1 | bits << 1};
    put_at(&e, e.relr + relr_len, r, sizeof r);
    relr_len += sizeof r;
  }

  /* The dynamic section, in the order GNU ld writes it. */
  dyn_set(&e, DT_NEEDED, s_libc);
  if (sp->lint) {
    Elf64_Dyn d = {.d_tag = DT_NEEDED, .d_un.d_val = e.str_needed};
    memcpy(e.buf + e.dyn + sizeof d, &d, sizeof d); /* a second DT_NEEDED */
  }
  dyn_set(&e, DT_SONAME, s_soname);
  if (sp->lint)
    dyn_set(&e, DT_RUNPATH, e.str_runpath);
  if (sp->init) {
    dyn_set(&e, DT_INIT, e.text);
    dyn_set(&e, DT_FINI, e.text + 1);
    dyn_set(&e, DT_INIT_ARRAY, e.data + D_INIT);
    dyn_set(&e, DT_INIT_ARRAYSZ, 8);
    dyn_set(&e, DT_FINI_ARRAY, e.data + D_FINI);
    dyn_set(&e, DT_FINI_ARRAYSZ, 8);
  }
  if (sp->sysv_hash)
    dyn_set(&e, DT_HASH, e.hash);
  if (sp->gnu_hash)
    dyn_set(&e, DT_GNU_HASH, e.gnu);
  dyn_set(&e, DT_STRTAB, e.strtab);
  dyn_set(&e, DT_SYMTAB, e.symtab);
  dyn_set(&e, DT_STRSZ, e.strsz);
  dyn_set(&e, DT_SYMENT, sizeof(Elf64_Sym));
  if (sp->relocs) {
    dyn_set(&e, DT_PLTGOT, e.data + D_GOT);
    dyn_set(&e, DT_PLTRELSZ, sizeof(Elf64_Rela));
    dyn_set(&e, DT_PLTREL, DT_RELA);
    dyn_set(&e, DT_JMPREL, e.jmprel);
    dyn_set(&e, DT_RELA, e.rela);
    dyn_set(&e, DT_RELASZ, 4 * sizeof(Elf64_Rela));
    dyn_set(&e, DT_RELAENT, sizeof(Elf64_Rela));
    dyn_set(&e, DT_RELACOUNT, 2);
  }
  if (relr_len) {
    dyn_set(&e, DT_RELR, e.relr);
    dyn_set(&e, DT_RELRSZ, relr_len);
    dyn_set(&e, DT_RELRENT, 8);
  }
  if (sp->tls)
    dyn_set(&e, DT_FLAGS, DF_STATIC_TLS);
  dyn_set(&e, DT_FLAGS_1, sp->lint ? DF_1_NODELETE : 0);
  if (sp->versions) {
    dyn_set(&e, DT_VERSYM, e.versym);
    dyn_set(&e, DT_VERNEED, e.verneed);
    dyn_set(&e, DT_VERNEEDNUM, 1);
    dyn_set(&e, DT_VERDEF, e.verdef);
    dyn_set(&e, DT_VERDEFNUM, 2);
  }

  /* Section headers, after the loadable part: .dynsym, .dynstr and .dynamic. */
  if (sp->shdrs) {
    Elf64_Shdr sh[4];
    memset(sh, 0, sizeof sh);
    sh[1] = (Elf64_Shdr){.sh_type = SHT_DYNSYM, .sh_flags = SHF_ALLOC, .sh_addr = e.symtab,
                         .sh_offset = e.symtab, .sh_size = NSYMS * sizeof(Elf64_Sym),
                         .sh_link = 2, .sh_info = SYM_UNDEF_A, .sh_addralign = 8,
                         .sh_entsize = sizeof(Elf64_Sym)};
    sh[2] = (Elf64_Shdr){.sh_type = SHT_STRTAB, .sh_flags = SHF_ALLOC, .sh_addr = e.strtab,
                         .sh_offset = e.strtab, .sh_size = e.strsz, .sh_addralign = 1};
    sh[3] = (Elf64_Shdr){.sh_type = SHT_DYNAMIC, .sh_flags = SHF_ALLOC | SHF_WRITE,
                         .sh_addr = e.dyn, .sh_offset = e.dyn,
                         .sh_size = MAXDYN * sizeof(Elf64_Dyn), .sh_link = 2,
                         .sh_addralign = 8, .sh_entsize = sizeof(Elf64_Dyn)};
    e.shoff = put(&e, sh, sizeof sh, 8);
  }

  /* Program headers. */
  Elf64_Phdr ph;
  memset(&ph, 0, sizeof ph);
  for (unsigned i = 0; i < sp->nfill; i++)
    ph_put(&e, i, &ph); /* PT_NULL */
  ph = (Elf64_Phdr){.p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X, .p_filesz = e.load_end,
                    .p_memsz = e.image_end, .p_align = 0x1000};
  ph_put(&e, e.load_ph, &ph);
  ph = (Elf64_Phdr){.p_type = PT_DYNAMIC, .p_flags = PF_R | PF_W, .p_offset = e.dyn,
                    .p_vaddr = e.dyn, .p_paddr = e.dyn,
                    .p_filesz = MAXDYN * sizeof(Elf64_Dyn),
                    .p_memsz = MAXDYN * sizeof(Elf64_Dyn), .p_align = 8};
  ph_put(&e, e.dyn_ph, &ph);
  if (sp->tls) {
    ph = (Elf64_Phdr){.p_type = PT_TLS, .p_flags = PF_R, .p_offset = e.data + D_TLS,
                      .p_vaddr = e.data + D_TLS, .p_paddr = e.data + D_TLS, .p_filesz = 8,
                      .p_memsz = 16, .p_align = 8};
    ph_put(&e, e.tls_ph, &ph);
  }
  ph = (Elf64_Phdr){.p_type = PT_GNU_STACK, .p_flags = PF_R | PF_W, .p_align = 16};
  ph_put(&e, e.stack_ph, &ph);
  for (unsigned i = 0; i < sp->ntiny; i++) {
    ph = (Elf64_Phdr){.p_type = PT_LOAD, .p_flags = PF_R | PF_W,
                      .p_vaddr = e.image_end + 16 * i, .p_paddr = e.image_end + 16 * i,
                      .p_memsz = 8, .p_align = 8};
    ph_put(&e, e.tiny_ph + i, &ph);
  }

  Elf64_Ehdr eh;
  memset(&eh, 0, sizeof eh);
  memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_ident[EI_OSABI] = ELFOSABI_SYSV;
  eh.e_type = ET_DYN;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_phoff = e.phoff;
  eh.e_shoff = e.shoff;
  eh.e_ehsize = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = (Elf64_Half)e.phnum;
  eh.e_shentsize = sp->shdrs ? sizeof(Elf64_Shdr) : 0;
  eh.e_shnum = sp->shdrs ? 4 : 0;
  eh_put(&e, &eh);
  return e;
}

/* Everything at once: what the lint reports, both hash tables, every table the check
 * walks. */
static const spec full = {.sysv_hash = 1, .gnu_hash = 1, .shdrs = 1, .relocs = 1, .relr = 1,
                          .versions = 1, .init = 1, .tls = 1, .lint = 1};

static elf build_small(const spec *sp) { return build(sp, 64 * 1024); }

static void emit_elf(const char *name, const elf *e) { emit(name, e->buf, e->len); }

/* ---- The crafted files ------------------------------------------------------------------- */

static void passing(void) {
  elf e = build_small(&full);
  emit_elf("pass-full", &e);
  free(e.buf);

  spec s = full;
  s.shdrs = 0;
  e = build_small(&s);
  emit_elf("pass-full-noshdrs", &e);
  free(e.buf);

  s = (spec){.sysv_hash = 1};
  e = build_small(&s);
  emit_elf("pass-minimal", &e);
  free(e.buf);

  s = (spec){.gnu_hash = 1, .relocs = 1, .shdrs = 1};
  e = build_small(&s);
  emit_elf("pass-gnuhash-only", &e);
  free(e.buf);

  /* No hash tables: the symbol count comes from .dynsym's section header, or without one
   * from the room in DT_SYMTAB's segment. */
  s = (spec){.relocs = 1, .versions = 1, .shdrs = 1};
  e = build_small(&s);
  emit_elf("pass-nohash-shdrs", &e);
  free(e.buf);
  s.shdrs = 0;
  e = build_small(&s);
  emit_elf("pass-nohash-noshdrs", &e);
  free(e.buf);

  s = full;
  s.nfill = 64;
  e = build_small(&s);
  emit_elf("pass-many-phdrs", &e);
  free(e.buf);

  s = (spec){.sysv_hash = 1, .relr = 1, .relr_across = 1, .ntiny = 30, .bss = 8};
  e = build_small(&s);
  emit_elf("pass-relr-across-loads", &e);
  free(e.buf);

  /* DT_RPATH instead of DT_RUNPATH, and the lint's strings elsewhere. */
  e = build_small(&full);
  Elf64_Dyn d;
  long i = dyn_find(&e, DT_RUNPATH);
  memcpy(&d, e.buf + e.dyn + (size_t)i * sizeof d, sizeof d);
  d.d_tag = DT_RPATH;
  memcpy(e.buf + e.dyn + (size_t)i * sizeof d, &d, sizeof d);
  emit_elf("pass-rpath", &e);
  free(e.buf);

  /* A descriptor for another ABI passes the check: the loader refuses it with HM_EABI. */
  e = build_small(&full);
  uint32_t abi = 99;
  put_at(&e, e.data + D_DESC, &abi, sizeof abi);
  emit_elf("pass-desc-abi-99", &e);
  free(e.buf);
}

/* One file, cut to n bytes. */
static void emit_cut(const char *name, const elf *e, size_t n) { emit(name, e->buf, n); }

static void truncated(void) {
  elf e = build_small(&full);
  emit("badelf-empty", "", 0);
  emit("badelf-magic-only", "\177EL", 3);
  emit_cut("badelf-trunc-ehdr", &e, 40);
  emit_cut("badelf-trunc-phdrs", &e, e.phoff + sizeof(Elf64_Phdr) + 10);
  emit_cut("badelf-trunc-tables", &e, e.load_end / 2);
  emit_cut("badelf-trunc-dynamic", &e, e.dyn + 40);
  emit_cut("badelf-trunc-shdrs", &e, e.len - 10);
  free(e.buf);
}

/* The program headers and segments. */
static void headers(void) {
  elf e = build_small(&full);
  Elf64_Ehdr eh = eh_get(&e), orig = eh;
  eh.e_phnum = 0xffff; /* the table runs far past the end */
  eh_put(&e, &eh);
  emit_elf("badelf-phnum-65535", &e);
  eh = orig;
  eh.e_phnum = 0;
  eh_put(&e, &eh);
  emit_elf("badelf-no-phdrs", &e);
  eh = orig;
  eh.e_phentsize = 32;
  eh_put(&e, &eh);
  emit_elf("badelf-phentsize", &e);
  eh = orig;
  eh.e_shoff = e.len - 8;
  eh_put(&e, &eh);
  emit_elf("badelf-shdrs-past-end", &e);
  eh = orig;
  eh.e_shentsize = 40;
  eh_put(&e, &eh);
  emit_elf("badelf-shentsize", &e);
  eh_put(&e, &orig);
  free(e.buf);

  e = build_small(&full);
  Elf64_Shdr sh;
  memcpy(&sh, e.buf + e.shoff + sizeof sh, sizeof sh);
  sh.sh_size = 0x100000;
  memcpy(e.buf + e.shoff + sizeof sh, &sh, sizeof sh);
  emit_elf("badelf-section-past-end", &e);
  free(e.buf);

  e = build_small(&full);
  Elf64_Phdr ph = ph_get(&e, e.load_ph);
  ph.p_type = PT_NULL;
  ph_put(&e, e.load_ph, &ph);
  emit_elf("badelf-no-load", &e);
  ph.p_type = PT_LOAD;
  ph.p_filesz = e.len + 1;
  ph.p_memsz = e.len + 1;
  ph_put(&e, e.load_ph, &ph);
  emit_elf("badelf-load-past-end", &e);
  ph = ph_get(&e, e.dyn_ph);
  ph_put(&e, e.stack_ph, &ph); /* a second PT_DYNAMIC */
  ph = ph_get(&e, e.load_ph);
  ph.p_filesz = e.load_end;
  ph.p_memsz = e.load_end;
  ph_put(&e, e.load_ph, &ph);
  emit_elf("badelf-two-dynamic", &e);
  free(e.buf);

  e = build_small(&full);
  ph = ph_get(&e, e.load_ph);
  ph.p_memsz = ph.p_filesz - 1;
  ph_put(&e, e.load_ph, &ph);
  emit_elf("badelf-filesz-over-memsz", &e);
  free(e.buf);

  e = build_small(&full);
  ph = ph_get(&e, e.tls_ph);
  ph.p_vaddr = e.image_end + 0x1000;
  ph_put(&e, e.tls_ph, &ph);
  emit_elf("badelf-tls-outside", &e);
  free(e.buf);

  /* The tiny PT_LOADs of the RELR file: out of order, overlapping, wrapping around. */
  spec s = {.sysv_hash = 1, .relr = 1, .relr_across = 1, .ntiny = 30, .bss = 8};
  e = build_small(&s);
  Elf64_Phdr a = ph_get(&e, e.tiny_ph + 3), b = ph_get(&e, e.tiny_ph + 4);
  ph_put(&e, e.tiny_ph + 3, &b);
  ph_put(&e, e.tiny_ph + 4, &a);
  emit_elf("badelf-loads-out-of-order", &e);
  ph_put(&e, e.tiny_ph + 3, &a);
  b.p_vaddr = a.p_vaddr + 4;
  ph_put(&e, e.tiny_ph + 4, &b);
  emit_elf("badelf-loads-overlap", &e);
  b.p_vaddr = a.p_vaddr + 16;
  ph_put(&e, e.tiny_ph + 4, &b);
  Elf64_Phdr last = ph_get(&e, e.tiny_ph + s.ntiny - 1);
  last.p_memsz = 0 - last.p_vaddr; /* ends at 2^64 */
  ph_put(&e, e.tiny_ph + s.ntiny - 1, &last);
  emit_elf("badelf-load-wraps", &e);
  free(e.buf);
}

/* The dynamic section and the tables it points at. */
static void dynamic(void) {
  elf e = build_small(&full);
  memset(e.buf + e.dyn, 0, MAXDYN * sizeof(Elf64_Dyn));
  emit_elf("badelf-dynamic-zeroed", &e);
  free(e.buf);

  e = build_small(&full);
  for (long i = dyn_find(&e, DT_NULL); i < (long)MAXDYN; i++) {
    Elf64_Dyn d = {.d_tag = DT_DEBUG};
    memcpy(e.buf + e.dyn + (size_t)i * sizeof d, &d, sizeof d);
  }
  emit_elf("badelf-dynamic-no-null", &e);
  free(e.buf);

  e = build_small(&full);
  dyn_del(&e, DT_STRTAB);
  emit_elf("badelf-no-strtab", &e);
  free(e.buf);

  e = build_small(&full);
  e.buf[e.strtab + e.strsz - 1] = 'x';
  emit_elf("badelf-strtab-no-nul", &e);
  free(e.buf);

  e = build_small(&full);
  dyn_set(&e, DT_SONAME, e.strsz);
  emit_elf("badelf-soname-outside-strtab", &e);
  free(e.buf);

  e = build_small(&full);
  Elf64_Sym sym = sym_get(&e, SYM_FN);
  sym.st_name = (Elf64_Word)e.strsz;
  sym_put(&e, SYM_FN, &sym);
  emit_elf("badelf-symbol-name-outside", &e);
  free(e.buf);

  /* Hash tables. */
  e = build_small(&full);
  uint32_t v = 0;
  put_at(&e, e.hash, &v, 4);
  emit_elf("badelf-sysv-no-buckets", &e);
  free(e.buf);

  e = build_small(&full);
  v = NSYMS;
  put_at(&e, e.hash + 4 * (2 + 3 + 1), &v, 4);
  emit_elf("badelf-sysv-chain-past-symbols", &e);
  free(e.buf);

  e = build_small(&full);
  v = 0;
  put_at(&e, e.gnu, &v, 4);
  emit_elf("badelf-gnuhash-no-buckets", &e);
  free(e.buf);

  e = build_small(&full);
  v = 1; /* below symoffset */
  put_at(&e, e.gnu + 16 + 8, &v, 4);
  emit_elf("badelf-gnuhash-bucket-below-symoffset", &e);
  free(e.buf);

  e = build_small(&full);
  v = 0x7fffffff; /* its chain starts far past the end */
  put_at(&e, e.gnu + 16 + 8, &v, 4);
  emit_elf("badelf-gnuhash-chain-past-end", &e);
  free(e.buf);

  /* Relocations. */
  e = build_small(&full);
  dyn_del(&e, DT_RELASZ);
  emit_elf("badelf-rela-without-size", &e);
  free(e.buf);

  e = build_small(&full);
  dyn_set(&e, DT_RELAENT, 16);
  emit_elf("badelf-rela-entsize", &e);
  free(e.buf);

  e = build_small(&full);
  Elf64_Rela r = rela_get(&e, e.rela);
  r.r_offset = e.image_end;
  rela_put(&e, e.rela, &r);
  emit_elf("badelf-rela-target-outside", &e);
  free(e.buf);

  e = build_small(&full);
  r = rela_get(&e, e.rela + 2 * sizeof r);
  r.r_info = ELF64_R_INFO(NSYMS, R_X86_64_GLOB_DAT);
  rela_put(&e, e.rela + 2 * sizeof r, &r);
  emit_elf("badelf-rela-symbol-past-end", &e);
  free(e.buf);

  e = build_small(&full);
  dyn_del(&e, DT_PLTREL);
  emit_elf("badelf-jmprel-without-pltrel", &e);
  free(e.buf);

  /* Without hash tables: one symbol past .dynsym (only its section header tells), and a
   * symbol far past everything. */
  spec s = {.relocs = 1, .versions = 1, .shdrs = 1};
  e = build_small(&s);
  r = rela_get(&e, e.rela + 2 * sizeof r);
  r.r_info = ELF64_R_INFO(NSYMS, R_X86_64_GLOB_DAT);
  rela_put(&e, e.rela + 2 * sizeof r, &r);
  emit_elf("badelf-nohash-symbol-past-dynsym", &e);
  free(e.buf);
  s.shdrs = 0;
  e = build_small(&s);
  r = rela_get(&e, e.rela + 2 * sizeof r);
  r.r_info = ELF64_R_INFO(0x100000, R_X86_64_GLOB_DAT);
  rela_put(&e, e.rela + 2 * sizeof r, &r);
  emit_elf("badelf-nohash-symbol-huge", &e);
  free(e.buf);

  /* DT_RELR. */
  e = build_small(&full);
  uint64_t ones = ~(uint64_t)0; /* names the 63 words after D_RELR, past the image */
  put_at(&e, e.relr + 16, &ones, 8);
  dyn_set(&e, DT_RELRSZ, 24);
  uint64_t near_end = e.image_end - 16;
  put_at(&e, e.relr + 0, &near_end, 8);
  put_at(&e, e.relr + 8, &ones, 8);
  emit_elf("badelf-relr-all-ones", &e);
  free(e.buf);

  e = build_small(&full);
  uint64_t past = e.image_end;
  put_at(&e, e.relr, &past, 8);
  emit_elf("badelf-relr-address-outside", &e);
  free(e.buf);

  e = build_small(&full);
  dyn_set(&e, DT_RELRENT, 16);
  emit_elf("badelf-relr-entsize", &e);
  free(e.buf);

  /* Versions. */
  e = build_small(&full);
  Elf64_Verneed vn;
  memcpy(&vn, e.buf + e.verneed, sizeof vn);
  vn.vn_next = 0x10000;
  memcpy(e.buf + e.verneed, &vn, sizeof vn);
  emit_elf("badelf-verneed-past-segment", &e);
  free(e.buf);

  e = build_small(&full);
  Elf64_Vernaux va;
  memcpy(&va, e.buf + e.verneed + sizeof vn + sizeof va, sizeof va);
  va.vna_name = (Elf64_Word)e.strsz;
  memcpy(e.buf + e.verneed + sizeof vn + sizeof va, &va, sizeof va);
  emit_elf("badelf-vernaux-name-outside", &e);
  free(e.buf);

  e = build_small(&full);
  Elf64_Verdef vd;
  memcpy(&vd, e.buf + e.verdef, sizeof vd);
  vd.vd_aux = 0x100000;
  memcpy(e.buf + e.verdef, &vd, sizeof vd);
  emit_elf("badelf-verdef-aux-outside", &e);
  free(e.buf);

  e = build_small(&full);
  dyn_set(&e, DT_VERSYM, e.load_end - 2);
  emit_elf("badelf-versym-outside", &e);
  free(e.buf);

  /* Constructors. */
  e = build_small(&full);
  dyn_set(&e, DT_INIT, e.image_end + 0x1000);
  emit_elf("badelf-init-outside", &e);
  free(e.buf);

  e = build_small(&full);
  dyn_del(&e, DT_INIT_ARRAYSZ);
  emit_elf("badelf-init-array-without-size", &e);
  free(e.buf);
}

/* A 32-bit shared object for i386: refused for its class before anything else is read. */
static void elf32(void) {
  unsigned char buf[512];
  Elf32_Ehdr eh;
  Elf32_Phdr ph[2];
  Elf32_Dyn dyn[4];
  memset(buf, 0, sizeof buf);
  memset(&eh, 0, sizeof eh);
  memset(ph, 0, sizeof ph);
  memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS32;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_DYN;
  eh.e_machine = EM_386;
  eh.e_version = EV_CURRENT;
  eh.e_phoff = sizeof eh;
  eh.e_ehsize = sizeof eh;
  eh.e_phentsize = sizeof ph[0];
  eh.e_phnum = 2;
  const uint32_t dynoff = 0x80, stroff = 0xc0, symoff = 0xd0;
  ph[0] = (Elf32_Phdr){.p_type = PT_LOAD, .p_filesz = sizeof buf, .p_memsz = sizeof buf,
                       .p_flags = PF_R | PF_W, .p_align = 0x1000};
  ph[1] = (Elf32_Phdr){.p_type = PT_DYNAMIC, .p_offset = dynoff, .p_vaddr = dynoff,
                       .p_filesz = sizeof dyn, .p_memsz = sizeof dyn, .p_flags = PF_R | PF_W,
                       .p_align = 4};
  dyn[0] = (Elf32_Dyn){.d_tag = DT_STRTAB, .d_un.d_ptr = stroff};
  dyn[1] = (Elf32_Dyn){.d_tag = DT_SYMTAB, .d_un.d_ptr = symoff};
  dyn[2] = (Elf32_Dyn){.d_tag = DT_STRSZ, .d_un.d_val = 1};
  dyn[3] = (Elf32_Dyn){.d_tag = DT_NULL};
  memcpy(buf, &eh, sizeof eh);
  memcpy(buf + sizeof eh, ph, sizeof ph);
  memcpy(buf + dynoff, dyn, sizeof dyn);
  emit("notelf-elf32-i386", buf, symoff + sizeof(Elf32_Sym));
}

static void not_elf(void) {
  static const char script[] =
      "#!/bin/sh\n# A shell script, long enough to hold a whole ELF header.\nexit 0\n";
  emit("notelf-script", script, sizeof script - 1);
  emit("notelf-short", "MZ", 2);
  elf32();

  elf e = build_small(&full);
  Elf64_Ehdr orig = eh_get(&e), eh = orig;
  eh.e_ident[EI_DATA] = ELFDATA2MSB;
  eh_put(&e, &eh);
  emit_elf("notelf-big-endian", &e);
  eh = orig;
  eh.e_machine = EM_AARCH64;
  eh_put(&e, &eh);
  emit_elf("notelf-aarch64", &e);
  eh = orig;
  eh.e_type = ET_EXEC;
  eh_put(&e, &eh);
  emit_elf("notelf-executable", &e);
  eh = orig;
  eh.e_ident[EI_OSABI] = ELFOSABI_ARM;
  eh_put(&e, &eh);
  emit_elf("notelf-osabi", &e);
  eh = orig;
  eh.e_version = 0;
  eh_put(&e, &eh);
  emit_elf("notelf-version", &e);
  eh_put(&e, &orig);
  dyn_set(&e, DT_FLAGS_1, DF_1_PIE);
  emit_elf("notelf-pie", &e);
  free(e.buf);
}

/* ---- Large worst cases ------------------------------------------------------------------- */

/* PT_NULL headers for a big file: 65,535 in all when the file has room (a quarter of it). */
static unsigned fill_for(size_t size) {
  size_t n = size / 4 / sizeof(Elf64_Phdr);
  return n > 0xffff - 8 ? 0xffff - 8 : (unsigned)n;
}

/* 65,535 program headers, nearly all PT_NULL, then all-ones DT_RELR bitmaps: every word
 * after one address, 63 per bitmap, in one PT_LOAD whose memory covers them. */
static elf big_relr_ones(size_t size) {
  spec s = {.sysv_hash = 1, .nfill = fill_for(size)};
  size_t fixed = 8192 + (size_t)(s.nfill + 8) * sizeof(Elf64_Phdr);
  s.payload = (size - fixed) & ~(size_t)7;
  s.bss = (uint64_t)(s.payload / 8) * 63 * 8 + 8;
  elf e = build(&s, size);
  uint64_t at = ((e.load_end + 7) & ~(uint64_t)7), ones = ~(uint64_t)0;
  put_at(&e, e.payload, &at, 8);
  for (size_t p = 8; p < s.payload; p += 8)
    put_at(&e, e.payload + p, &ones, 8);
  dyn_set(&e, DT_RELR, e.payload);
  dyn_set(&e, DT_RELRSZ, s.payload);
  dyn_set(&e, DT_RELRENT, 8);
  return e;
}

/* The worst case of the segment lookups (as test_elf's relr_across_many_loads_is_linear):
 * 256 PT_LOADs, 253 of them one byte long, and DT_RELR pairs (an address, then a bitmap of
 * its first and last word) whose two words lie on either side of all the one-byte
 * segments. */
static elf big_relr_across(size_t size) {
  enum { TINY = 253 };
  spec s = {.sysv_hash = 1, .ntiny = TINY + 1, .bss = 8};
  s.payload = (size - 16384) & ~(size_t)15;
  elf e = build(&s, size);
  uint64_t where = e.image_end - 8;
  for (unsigned i = 0; i <= TINY; i++) {
    Elf64_Phdr ph = ph_get(&e, e.tiny_ph + i);
    ph.p_vaddr = ph.p_paddr = i < TINY ? e.image_end + i : where + 62 * 8;
    ph.p_memsz = i < TINY ? 1 : 8;
    ph_put(&e, e.tiny_ph + i, &ph);
  }
  uint64_t pair[2] = {where - 8, 1 | 1u << 1 | (uint64_t)1 << 63};
  for (size_t p = 0; p < s.payload; p += sizeof pair)
    put_at(&e, e.payload + p, pair, sizeof pair);
  dyn_set(&e, DT_RELR, e.payload);
  dyn_set(&e, DT_RELRSZ, s.payload);
  dyn_set(&e, DT_RELRENT, 8);
  return e;
}

/* The worst case of the segment walk once segments too small for a word are skipped: after
 * an address, a bitmap of all 63 words, each word in a PT_LOAD of its own (the last of the
 * image, then 62 word-sized segments side by side), so every bit is a step and a segment
 * passed. */
static elf big_relr_words(size_t size) {
  enum { WORDS = 62 };
  spec s = {.sysv_hash = 1, .ntiny = WORDS, .bss = 8};
  s.payload = (size - 16384) & ~(size_t)15;
  elf e = build(&s, size);
  for (unsigned i = 0; i < WORDS; i++) {
    Elf64_Phdr ph = ph_get(&e, e.tiny_ph + i);
    ph.p_vaddr = ph.p_paddr = e.image_end + 8 * i;
    ph_put(&e, e.tiny_ph + i, &ph);
  }
  uint64_t pair[2] = {e.image_end - 16, ~(uint64_t)0};
  for (size_t p = 0; p < s.payload; p += sizeof pair)
    put_at(&e, e.payload + p, pair, sizeof pair);
  dyn_set(&e, DT_RELR, e.payload);
  dyn_set(&e, DT_RELRSZ, s.payload);
  dyn_set(&e, DT_RELRENT, 8);
  return e;
}

/* 65,535 program headers, then DT_RELA, DT_REL and DT_JMPREL all over the same bytes, each
 * word both a target in the image (above 4 GiB, in the PT_LOAD's memory) and an r_info
 * naming symbol 1. */
static elf big_relocs(size_t size) {
  spec s = {.sysv_hash = 1, .nfill = fill_for(size), .bss = (uint64_t)1 << 33};
  size_t fixed = 8192 + (size_t)(s.nfill + 8) * sizeof(Elf64_Phdr);
  s.payload = (size - fixed) / 48 * 48;
  elf e = build(&s, size);
  uint64_t w = ((uint64_t)1 << 32) | 0x1000;
  for (size_t p = 0; p < s.payload; p += 8)
    put_at(&e, e.payload + p, &w, 8);
  dyn_set(&e, DT_RELA, e.payload);
  dyn_set(&e, DT_RELASZ, s.payload);
  dyn_set(&e, DT_RELAENT, sizeof(Elf64_Rela));
  dyn_set(&e, DT_REL, e.payload);
  dyn_set(&e, DT_RELSZ, s.payload);
  dyn_set(&e, DT_RELENT, sizeof(Elf64_Rel));
  dyn_set(&e, DT_JMPREL, e.payload);
  dyn_set(&e, DT_PLTRELSZ, s.payload);
  dyn_set(&e, DT_PLTREL, DT_RELA);
  return e;
}

/* Half the file a string table holding one long string, the other half a dynamic section of
 * DT_RUNPATH entries that all name it. */
static elf big_runpaths(size_t size) {
  spec s = {.sysv_hash = 1};
  s.payload = (size - 8192) & ~(size_t)15;
  elf e = build(&s, size);
  size_t half = s.payload / 2 & ~(size_t)15, strsz = half;
  /* The new string table: the old one, then "aaa...a$ORIGIN" and its NUL. */
  memcpy(e.buf + e.payload, e.buf + e.strtab, e.strsz);
  size_t longstr = e.strsz;
  memset(e.buf + e.payload + longstr, 'a', strsz - longstr - 1);
  memcpy(e.buf + e.payload + strsz - 1 - 7, "$ORIGIN", 7);
  e.buf[e.payload + strsz - 1] = 0;
  dyn_set(&e, DT_STRTAB, e.payload);
  dyn_set(&e, DT_STRSZ, strsz);
  /* The new dynamic section: the old entries, then the RUNPATHs, then DT_NULL. */
  size_t dyn = e.payload + half, n = (s.payload - half) / sizeof(Elf64_Dyn);
  long old = dyn_find(&e, DT_NULL);
  memcpy(e.buf + dyn, e.buf + e.dyn, (size_t)old * sizeof(Elf64_Dyn));
  for (size_t i = (size_t)old; i + 1 < n; i++) {
    Elf64_Dyn d = {.d_tag = DT_RUNPATH, .d_un.d_val = longstr};
    memcpy(e.buf + dyn + i * sizeof d, &d, sizeof d);
  }
  Elf64_Phdr ph = ph_get(&e, e.dyn_ph);
  ph.p_offset = ph.p_vaddr = ph.p_paddr = dyn;
  ph.p_filesz = ph.p_memsz = n * sizeof(Elf64_Dyn);
  ph_put(&e, e.dyn_ph, &ph);
  return e;
}

/* The largest symbol table the file holds, reached through DT_HASH (one bucket, every
 * chain link 0), each symbol's name one the lint compares in full before it differs: an
 * undefined "__cxa_thread_atexit_imp" (against both thread-exit names and
 * pthread_key_create) or a defined STB_GNU_UNIQUE "hm_module_descriptoX" (against the
 * descriptor's name). */
static elf big_symbols(size_t size) {
  spec s = {.sysv_hash = 1};
  s.payload = (size - 8192) & ~(size_t)7;
  elf e = build(&s, size);
  /* The string table: the old one (the dynamic section's names), then the two names. */
  static const char names[] = "__cxa_thread_atexit_imp\0hm_module_descriptoX";
  const size_t undef_name = e.strsz, def_name = e.strsz + strlen(names) + 1;
  const size_t strsz = e.strsz + sizeof names;
  size_t strtab = e.payload, hash = (strtab + strsz + 7) & ~(size_t)7;
  size_t n = (e.payload + s.payload - hash - 12) / (4 + sizeof(Elf64_Sym));
  size_t symtab = (hash + 12 + 4 * n + 7) & ~(size_t)7;
  if (n > 0xffffffffu)
    n = 0xffffffffu;
  memcpy(e.buf + strtab, e.buf + e.strtab, e.strsz);
  memcpy(e.buf + strtab + e.strsz, names, sizeof names);
  uint32_t head[3] = {1, (uint32_t)n, 0}; /* 1 bucket, n chains, the bucket: symbol 0 */
  put_at(&e, hash, head, sizeof head);    /* the chains: zeros already */
  for (size_t i = 1; i < n; i++) {
    Elf64_Sym sym = {.st_name = (Elf64_Word)undef_name,
                     .st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC)};
    if (i % 2 == 0) {
      sym.st_name = (Elf64_Word)def_name;
      sym.st_info = ELF64_ST_INFO(STB_GNU_UNIQUE, STT_OBJECT);
      sym.st_shndx = 1, sym.st_value = e.data + D_VAR, sym.st_size = 8;
    }
    memcpy(e.buf + symtab + i * sizeof sym, &sym, sizeof sym);
  }
  dyn_set(&e, DT_STRTAB, strtab);
  dyn_set(&e, DT_STRSZ, strsz);
  dyn_set(&e, DT_HASH, hash);
  dyn_set(&e, DT_SYMTAB, symtab);
  return e;
}

static const struct {
  const char *name;
  elf (*make)(size_t size);
} bigs[] = {{"symbols", big_symbols},
            {"relr-ones", big_relr_ones},
            {"relr-across-loads", big_relr_across},
            {"relr-words", big_relr_words},
            {"relocs-x3", big_relocs},
            {"runpaths", big_runpaths}};

static int big(const char *mb, const char *only) {
  char *end;
  unsigned long n = strtoul(mb, &end, 10);
  int kb = *end == 'k'; /* "64k": a small one, for the regression corpus */
  if (*(end + kb) != '\0' || n == 0 || n > 1024 || (kb && n < 64))
    die("--big takes a size in MB, 1 to 1024, or in KB, 64k to 1024k");
  size_t size = (size_t)n << (kb ? 10 : 20);
  int found = 0;
  for (size_t i = 0; i < sizeof bigs / sizeof bigs[0]; i++) {
    if (only != NULL && strcmp(only, bigs[i].name) != 0)
      continue;
    found = 1;
    elf e = bigs[i].make(size);
    char name[128];
    snprintf(name, sizeof name, "big-%s-%lu%s", bigs[i].name, n, kb ? "kb" : "mb");
    emit(name, e.buf, e.cap); /* the whole size asked for: zeros after the tables */
    free(e.buf);
  }
  if (!found)
    die("no shape named %s", only);
  return 0;
}

/* ---- Main -------------------------------------------------------------------------------- */

static int listed(const char *name) {
  for (unsigned i = 0; i < nnames; i++)
    if (strcmp(names[i], name) == 0)
      return 1;
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "--big") == 0) {
    out_dir = argv[3];
    return big(argv[2], argc > 4 ? argv[4] : NULL);
  }
  if (argc == 3 && strcmp(argv[1], "--check") == 0) {
    checking = 1;
    out_dir = argv[2];
  } else if (argc == 2 && argv[1][0] != '-') {
    out_dir = argv[1];
  } else {
    fprintf(stderr, "usage: gen_corpus DIR | --check DIR | --big MB DIR [SHAPE]\n");
    return 2;
  }
  passing();
  truncated();
  headers();
  dynamic();
  not_elf();
  if (checking) {
    /* Files this program does not write are stale, unless they are found inputs. */
    DIR *d = opendir(out_dir);
    struct dirent *de;
    if (d == NULL)
      die("cannot open %s: %s", out_dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
      if (de->d_name[0] == '.' || listed(de->d_name))
        continue;
      fprintf(stderr, "gen_corpus: %s/%s is not written by gen_corpus\n", out_dir, de->d_name);
      mismatches++;
    }
    closedir(d);
    if (mismatches) {
      fprintf(stderr, "gen_corpus: regenerate with: gen_corpus %s\n", out_dir);
      return 1;
    }
    printf("gen_corpus: %u files in %s are current\n", nnames, out_dir);
    return 0;
  }
  printf("gen_corpus: wrote %d files into %s\n", written, out_dir);
  return 0;
}
