/* test_elf.c: hm__elf_check against a real shared object and mangled copies of it.
 *
 * The sample is argv[1] when given, else HM_TEST_ELF_SAMPLE (set by the build). Every
 * mangled input is copied into a buffer of exactly its length, so that under AddressSanitizer
 * a read one byte past the end is reported rather than landing in the rest of the sample. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#ifndef HM_TEST_ELF_SAMPLE
#define HM_TEST_ELF_SAMPLE "/lib/x86_64-linux-gnu/libm.so.6"
#endif

static const char *sample_path = HM_TEST_ELF_SAMPLE;
static unsigned char *sample;
static size_t sample_len;

/* ---- Helpers --------------------------------------------------------------------------- */

/* A heap copy of exactly n bytes (ASan then flags any read at buf[n]). */
static unsigned char *copy_of(const unsigned char *src, size_t n) {
  unsigned char *p = malloc(n ? n : 1);
  assert_non_null(p);
  if (n)
    memcpy(p, src, n);
  return p;
}

static int check(const unsigned char *buf, size_t n, hm__elf_info *info) {
  char why[256];
  hm__elf_info tmp;
  int rc = hm__elf_check(buf, n, info ? info : &tmp, why, sizeof why);
  if (rc == 0)
    assert_string_equal(why, "");
  else
    assert_true(why[0] != '\0'); /* every failure says why */
  return rc;
}

static ElfW(Ehdr) ehdr_of(const unsigned char *buf) {
  ElfW(Ehdr) eh;
  memcpy(&eh, buf, sizeof eh);
  return eh;
}

/* The sample's PT_DYNAMIC, found through the program headers (the sample is known good). */
static void find_dynamic(size_t *off, size_t *size) {
  ElfW(Ehdr) eh = ehdr_of(sample);
  /* fail_msg does not return, but the compiler cannot know that at every level. */
  *off = *size = 0;
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    memcpy(&ph, sample + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_DYNAMIC) {
      *off = ph.p_offset;
      *size = ph.p_filesz;
      return;
    }
  }
  fail_msg("%s has no PT_DYNAMIC", sample_path);
}

/* The file-backed size of the first PT_LOAD: headers and all the dynamic linking tables. */
static size_t first_load_size(void) {
  ElfW(Ehdr) eh = ehdr_of(sample);
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    memcpy(&ph, sample + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_LOAD)
      return ph.p_offset + ph.p_filesz < sample_len ? ph.p_offset + ph.p_filesz : sample_len;
  }
  return sample_len;
}

/* Index of the first dynamic entry with this tag before DT_NULL, or -1. */
static long dyn_find(const unsigned char *buf, long tag) {
  size_t off, size;
  find_dynamic(&off, &size);
  for (size_t i = 0; i < size / sizeof(ElfW(Dyn)); i++) {
    ElfW(Dyn) d;
    memcpy(&d, buf + off + i * sizeof d, sizeof d);
    if (d.d_tag == tag)
      return (long)i;
    if (d.d_tag == DT_NULL)
      return -1;
  }
  return -1;
}

static ElfW(Dyn) dyn_get(const unsigned char *buf, long i) {
  size_t off, size;
  ElfW(Dyn) d;
  find_dynamic(&off, &size);
  memcpy(&d, buf + off + (size_t)i * sizeof d, sizeof d);
  return d;
}

static void dyn_put(unsigned char *buf, long i, ElfW(Dyn) d) {
  size_t off, size;
  find_dynamic(&off, &size);
  memcpy(buf + off + (size_t)i * sizeof d, &d, sizeof d);
}

/* ---- Crafted files --------------------------------------------------------------------- */

/* The work the check may do: hm__elf_info.steps per byte of file, plus a fixed part.
 * elfcheck.c derives the bound ("Work bound"); each crafted file below is the worst case of
 * one of its loops, and megabytes long. Steps are counted, not timed: the machines the tests
 * run on are shared and noisy. */
#define STEPS_PER_BYTE 24
#define STEPS_FIXED 1024

/* Where a crafted file's extra PT_LOAD maps the whole file: far above the sample's own
 * segments, so that the PT_LOADs stay in ascending order. */
#define CRAFT_VADDR ((ElfW(Addr))0x10000000)

/* The sample, grown: its dynamic section copied to the end with room for more entries, then
 * `tables` zeroed bytes for the caller, then a new program header table of `phnum` entries.
 * That table starts with PT_NULLs (the caller may overwrite them), then come the sample's
 * own headers (PT_DYNAMIC pointing at the copy), one PT_LOAD mapping the whole file at
 * CRAFT_VADDR followed by `bss` bytes of memory, and `nextra` zeroed headers for the caller
 * at the end. Fillers first: a lookup that walks the headers in order walks all of them
 * before it finds a PT_LOAD. File offset o is at address CRAFT_VADDR + o. */
typedef struct crafted {
  unsigned char *buf;
  size_t len;
  size_t dyn, ndyn, dynroom; /* the dynamic section: offset, entries before DT_NULL, room */
  size_t tables;             /* offset of the caller's bytes */
  size_t phoff;
  unsigned phnum;
  unsigned nfill; /* fillers at [0, nfill), the caller's extra headers at [extra, phnum) */
  unsigned extra;
  uint64_t image_end;   /* end of the new PT_LOAD's memory */
} crafted;

static size_t align8(size_t n) {
  return (n + 7) & ~(size_t)7;
}

static void craft_put_phdr(crafted *f, unsigned i, ElfW(Phdr) ph) {
  assert_true(i < f->phnum);
  memcpy(f->buf + f->phoff + (size_t)i * sizeof ph, &ph, sizeof ph);
}

static crafted craft(size_t tables, unsigned phnum, unsigned nextra, uint64_t bss) {
  crafted f;
  ElfW(Ehdr) eh = ehdr_of(sample);
  size_t dynoff, dynsize;
  find_dynamic(&dynoff, &dynsize);
  memset(&f, 0, sizeof f);
  long nul = dyn_find(sample, DT_NULL);
  assert_true(nul >= 0);
  f.ndyn = (size_t)nul;
  f.dynroom = f.ndyn + 8;
  f.dyn = align8(sample_len);
  f.tables = align8(f.dyn + f.dynroom * sizeof(ElfW(Dyn)));
  f.phoff = align8(f.tables + tables);
  f.phnum = phnum;
  assert_true(phnum >= eh.e_phnum + 1u + nextra && phnum <= 0xffff);
  f.extra = phnum - nextra;
  f.nfill = f.extra - eh.e_phnum - 1u;
  f.len = f.phoff + (size_t)phnum * sizeof(ElfW(Phdr));
  f.image_end = CRAFT_VADDR + f.len + bss;
  f.buf = calloc(f.len, 1); /* exactly len bytes: ASan flags any read past the end */
  assert_non_null(f.buf);
  memcpy(f.buf, sample, sample_len);
  memcpy(f.buf + f.dyn, sample + dynoff, f.ndyn * sizeof(ElfW(Dyn)));
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    memcpy(&ph, sample + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_DYNAMIC) {
      ph.p_offset = f.dyn;
      ph.p_vaddr = ph.p_paddr = CRAFT_VADDR + f.dyn;
      ph.p_filesz = ph.p_memsz = f.dynroom * sizeof(ElfW(Dyn));
    }
    craft_put_phdr(&f, f.nfill + i, ph);
  }
  ElfW(Phdr) load;
  memset(&load, 0, sizeof load);
  load.p_type = PT_LOAD;
  load.p_flags = PF_R | PF_W;
  load.p_vaddr = load.p_paddr = CRAFT_VADDR;
  load.p_filesz = f.len;
  load.p_memsz = f.image_end - CRAFT_VADDR;
  load.p_align = 0x1000;
  craft_put_phdr(&f, f.extra - 1, load);
  eh.e_phoff = f.phoff;
  eh.e_phnum = (ElfW(Half))phnum;
  memcpy(f.buf, &eh, sizeof eh);
  return f;
}

/* Set a dynamic entry of a crafted file, appending it when the tag is new. */
static void craft_dyn_set(crafted *f, ElfW(Sxword) tag, uint64_t val) {
  ElfW(Dyn) d;
  size_t i;
  for (i = 0; i < f->ndyn; i++) {
    memcpy(&d, f->buf + f->dyn + i * sizeof d, sizeof d);
    if (d.d_tag == tag)
      break;
  }
  if (i == f->ndyn) {
    assert_true(f->ndyn + 1 < f->dynroom); /* keep a DT_NULL */
    f->ndyn++;
  }
  d.d_tag = tag;
  d.d_un.d_val = (ElfW(Xword))val;
  memcpy(f->buf + f->dyn + i * sizeof d, &d, sizeof d);
}

/* A crafted file must pass, within the work bound. */
static void assert_linear(crafted *f, const char *what) {
  char why[256];
  hm__elf_info info;
  int rc = hm__elf_check(f->buf, f->len, &info, why, sizeof why);
  if (rc != 0)
    fail_msg("%s: rejected: %s", what, why);
  print_message("  %s: %zu bytes, %llu steps (%.2f per byte)\n", what, f->len,
                (unsigned long long)info.steps, (double)info.steps / (double)f->len);
  assert_true(info.steps <= (uint64_t)STEPS_PER_BYTE * f->len + STEPS_FIXED);
}

/* Phdr index of the sample's n-th PT_LOAD (from 0), or -1. */
static long nth_load(const unsigned char *buf, unsigned n) {
  ElfW(Ehdr) eh = ehdr_of(buf);
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    memcpy(&ph, buf + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_LOAD && n-- == 0)
      return (long)i;
  }
  return -1;
}

static ElfW(Phdr) phdr_get(const unsigned char *buf, long i) {
  ElfW(Ehdr) eh = ehdr_of(buf);
  ElfW(Phdr) ph;
  memcpy(&ph, buf + eh.e_phoff + (size_t)i * sizeof ph, sizeof ph);
  return ph;
}

static void phdr_put(unsigned char *buf, long i, ElfW(Phdr) ph) {
  ElfW(Ehdr) eh = ehdr_of(buf);
  memcpy(buf + eh.e_phoff + (size_t)i * sizeof ph, &ph, sizeof ph);
}

/* Deterministic PRNG (PCG's LCG step): the fuzz loop must be reproducible. */
static uint64_t rng_state = 0x853c49e6748fea9bULL;
static uint32_t rnd(void) {
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(rng_state >> 33);
}

/* ---- Tests ----------------------------------------------------------------------------- */

static void whole_file_passes(void **state) {
  (void)state;
  char why[256] = "untouched";
  hm__elf_info info;
  memset(&info, 0xff, sizeof info);
  int rc = hm__elf_check(sample, sample_len, &info, why, sizeof why);
  if (rc != 0)
    fail_msg("%s rejected: %s", sample_path, why);
  assert_string_equal(why, "");
  /* NULL info and no room for a reason are allowed. */
  assert_int_equal(hm__elf_check(sample, sample_len, NULL, NULL, 0), 0);
}

static void truncations_fail(void **state) {
  (void)state;
  size_t fixed[] = {0, 1, 16, 63, 64, sizeof(ElfW(Ehdr)), 4096, sample_len / 2, sample_len - 1};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    if (fixed[i] >= sample_len)
      continue;
    unsigned char *p = copy_of(sample, fixed[i]);
    int rc = check(p, fixed[i], NULL);
    if (rc != HM_EBADELF && rc != HM_ENOTELF)
      fail_msg("truncated to %zu bytes: rc %d", fixed[i], rc);
    free(p);
  }
  /* Every 97th length; a sample of many megabytes gets a coarser step so the copies stay
   * within a few seconds under ASan. */
  size_t step = sample_len / 97 > 20000 ? sample_len / 20000 : 97;
  for (size_t n = 0; n < sample_len; n += step) {
    unsigned char *p = copy_of(sample, n);
    int rc = check(p, n, NULL);
    if (rc != HM_EBADELF && rc != HM_ENOTELF)
      fail_msg("truncated to %zu bytes: rc %d", n, rc);
    free(p);
  }
  /* A prefix of the ELF magic is a file being written, not a foreign file. */
  assert_int_equal(check(sample, 0, NULL), HM_EBADELF);
  assert_int_equal(check(sample, 3, NULL), HM_EBADELF);
  assert_int_equal(check(sample, 63, NULL), HM_EBADELF);

  char why[128];
  unsigned char *p = copy_of(sample, 4096);
  assert_int_equal(hm__elf_check(p, 4096, NULL, why, sizeof why), HM_EBADELF);
  print_message("  4096-byte prefix: %s\n", why);
  /* A reason that does not fit is cut, still terminated; no room at all is fine. */
  assert_int_equal(hm__elf_check(p, 4096, NULL, why, 8), HM_EBADELF);
  assert_int_equal(strlen(why), 7);
  assert_int_equal(hm__elf_check(p, 4096, NULL, NULL, 0), HM_EBADELF);
  assert_int_equal(hm__elf_check(p, 4096, NULL, why, 0), HM_EBADELF);
  free(p);
}

/* Where the file-backed part of the last PT_LOAD ends: beyond it lie only debug info and
 * section headers, which dlopen never reads. */
static size_t loadable_end(void) {
  ElfW(Ehdr) eh = ehdr_of(sample);
  size_t end = 0;
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    memcpy(&ph, sample + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_LOAD && ph.p_offset + ph.p_filesz > end)
      end = ph.p_offset + ph.p_filesz;
  }
  return end < sample_len ? end : sample_len;
}

/* A build that reached full size with its second half still unwritten (zeros). "Half" is of
 * what dlopen maps: zeroing only trailing debug info is harmless, and passes. */
static void second_half_zeroed(void **state) {
  (void)state;
  size_t end = loadable_end();
  unsigned char *p = copy_of(sample, sample_len);
  memset(p + end / 2, 0, end - end / 2);
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);
  free(p);
}

static void dynamic_zeroed(void **state) {
  (void)state;
  size_t off, size;
  find_dynamic(&off, &size);
  unsigned char *p = copy_of(sample, sample_len);
  memset(p + off, 0, size);
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);
  free(p);
}

static void not_elf(void **state) {
  (void)state;
  static const char text[] =
      "#!/bin/sh\n# This is a shell script, long enough to hold a whole ELF header.\n"
      "exit 0\n";
  assert_int_equal(check((const unsigned char *)text, sizeof text - 1, NULL), HM_ENOTELF);
  assert_int_equal(check((const unsigned char *)text, 10, NULL), HM_ENOTELF);

  unsigned char *p = copy_of(sample, sample_len);
  ElfW(Ehdr) eh = ehdr_of(sample);

  /* Wrong machine. */
  ElfW(Ehdr) m = eh;
  m.e_machine = eh.e_machine == EM_SPARCV9 ? EM_MIPS : EM_SPARCV9;
  memcpy(p, &m, sizeof m);
  assert_int_equal(check(p, sample_len, NULL), HM_ENOTELF);

  /* Other class. */
  memcpy(p, &eh, sizeof eh);
  p[EI_CLASS] = eh.e_ident[EI_CLASS] == ELFCLASS64 ? ELFCLASS32 : ELFCLASS64;
  assert_int_equal(check(p, sample_len, NULL), HM_ENOTELF);

  /* Other byte order. */
  memcpy(p, &eh, sizeof eh);
  p[EI_DATA] = eh.e_ident[EI_DATA] == ELFDATA2LSB ? ELFDATA2MSB : ELFDATA2LSB;
  assert_int_equal(check(p, sample_len, NULL), HM_ENOTELF);

  /* An executable, not a shared object. */
  ElfW(Ehdr) x = eh;
  x.e_type = ET_EXEC;
  memcpy(p, &x, sizeof x);
  assert_int_equal(check(p, sample_len, NULL), HM_ENOTELF);

  /* Bad magic. */
  memcpy(p, &eh, sizeof eh);
  p[1] = 'X';
  assert_int_equal(check(p, sample_len, NULL), HM_ENOTELF);
  free(p);
}

static void no_section_headers_pass(void **state) {
  (void)state;
  unsigned char *p = copy_of(sample, sample_len);
  ElfW(Ehdr) eh = ehdr_of(sample);
  assert_true(eh.e_shoff != 0); /* otherwise this test proves nothing */
  size_t shbytes = (size_t)eh.e_shnum * eh.e_shentsize;
  eh.e_shoff = 0;
  eh.e_shnum = 0;
  eh.e_shstrndx = SHN_UNDEF;
  memcpy(p, &eh, sizeof eh);
  assert_int_equal(check(p, sample_len, NULL), 0);
  /* ... and then the section header table, usually last in the file, can go too. */
  ElfW(Ehdr) orig = ehdr_of(sample);
  if (orig.e_shoff + shbytes == sample_len) {
    assert_int_equal(check(p, (size_t)orig.e_shoff, NULL), 0);
    /* With the headers announced, the same cut is a truncated file. */
    assert_int_equal(check(sample, (size_t)orig.e_shoff, NULL), HM_EBADELF);
  }
  free(p);
}

static void flags_reported(void **state) {
  (void)state;
  hm__elf_info info;
  long f1 = dyn_find(sample, DT_FLAGS_1), f = dyn_find(sample, DT_FLAGS);
  int want_nodelete = f1 >= 0 && (dyn_get(sample, f1).d_un.d_val & DF_1_NODELETE) != 0;
  int want_static_tls = f >= 0 && (dyn_get(sample, f).d_un.d_val & DF_STATIC_TLS) != 0;
  assert_int_equal(check(sample, sample_len, &info), 0);
  assert_int_equal(info.nodelete, want_nodelete);
  assert_int_equal(info.static_tls, want_static_tls);
  print_message("  %s: nodelete=%d static_tls=%d\n", sample_path, info.nodelete,
                info.static_tls);

  /* Give the copy DF_1_NODELETE: patch an existing DT_FLAGS_1, or else turn the DT_NULL
   * terminator into one when the linker left a spare DT_NULL after it (GNU ld does). */
  unsigned char *p = copy_of(sample, sample_len);
  ElfW(Dyn) d;
  int patched = 0;
  if (f1 >= 0) {
    d = dyn_get(p, f1);
    d.d_un.d_val |= DF_1_NODELETE;
    dyn_put(p, f1, d);
    patched = 1;
  } else {
    long t = dyn_find(p, DT_NULL);
    size_t off, size;
    find_dynamic(&off, &size);
    if (t >= 0 && (size_t)(t + 2) * sizeof(ElfW(Dyn)) <= size && dyn_get(p, t + 1).d_tag == DT_NULL) {
      d.d_tag = DT_FLAGS_1;
      d.d_un.d_val = DF_1_NODELETE;
      dyn_put(p, t, d);
      patched = 1;
    }
  }
  if (patched) {
    assert_int_equal(check(p, sample_len, &info), 0);
    assert_int_equal(info.nodelete, 1);
    assert_int_equal(info.static_tls, want_static_tls);
  } else {
    print_message("  no DT_FLAGS_1 and no spare DT_NULL: NODELETE sub-check skipped\n");
  }
  free(p);

  /* Flip DF_STATIC_TLS both ways through an existing DT_FLAGS. */
  if (f >= 0) {
    p = copy_of(sample, sample_len);
    d = dyn_get(p, f);
    d.d_un.d_val |= DF_STATIC_TLS;
    dyn_put(p, f, d);
    assert_int_equal(check(p, sample_len, &info), 0);
    assert_int_equal(info.static_tls, 1);
    d.d_un.d_val &= ~(ElfW(Xword))DF_STATIC_TLS;
    dyn_put(p, f, d);
    assert_int_equal(check(p, sample_len, &info), 0);
    assert_int_equal(info.static_tls, 0);
    free(p);
  }

  /* On failure info is cleared, not left half-filled. */
  p = copy_of(sample, 4096 < sample_len ? 4096 : sample_len - 1);
  info.nodelete = info.static_tls = 7;
  assert_int_not_equal(check(p, 4096 < sample_len ? 4096 : sample_len - 1, &info), 0);
  assert_int_equal(info.nodelete, 0);
  assert_int_equal(info.static_tls, 0);
  free(p);
}

/* Flip 1 to 8 random bytes and check: the result does not matter, only that it returns.
 * Half the flips land in the first PT_LOAD (headers and every table the check walks), a
 * quarter in the dynamic section, the rest anywhere. Every 16th round works on a prefix of
 * random length in an exact-size buffer, to combine corruption with truncation. */
static void fuzz_never_crashes(void **state) {
  (void)state;
  enum { ROUNDS = 20000 };
  size_t dynoff, dynsize, hot = first_load_size();
  find_dynamic(&dynoff, &dynsize);
  unsigned char *work = copy_of(sample, sample_len);
  unsigned counts[3] = {0, 0, 0};
  for (unsigned round = 0; round < ROUNDS; round++) {
    int cut = round % 16 == 15;
    size_t n = cut ? rnd() % sample_len : sample_len;
    unsigned char *buf = cut ? copy_of(sample, n) : work;
    size_t pos[8];
    unsigned char old[8];
    unsigned k = 1 + rnd() % 8;
    for (unsigned j = 0; j < k && n > 0; j++) {
      uint32_t r = rnd();
      size_t at;
      if (r % 4 < 2)
        at = rnd() % hot;
      else if (r % 4 == 2)
        at = dynoff + rnd() % dynsize;
      else
        at = rnd() % n;
      if (at >= n)
        at = rnd() % n;
      pos[j] = at;
      old[j] = buf[at];
      switch (rnd() % 4) {
      case 0: buf[at] = 0; break;
      case 1: buf[at] = 0xff; break;
      default: buf[at] ^= (unsigned char)(1 + rnd() % 255); break;
      }
    }
    char why[64];
    hm__elf_info info;
    int rc = hm__elf_check(buf, n, &info, why, sizeof why);
    counts[rc == 0 ? 0 : rc == HM_EBADELF ? 1 : 2]++;
    assert_true(rc == 0 || rc == HM_EBADELF || rc == HM_ENOTELF);
    if (cut) {
      free(buf);
    } else {
      for (unsigned j = k; j-- > 0;) /* restore in reverse: a byte may be hit twice */
        work[pos[j]] = old[j];
    }
  }
  assert_memory_equal(work, sample, sample_len);
  print_message("  %d rounds: %u passed, %u HM_EBADELF, %u HM_ENOTELF\n", ROUNDS, counts[0],
                counts[1], counts[2]);
  free(work);
}

/* ---- Work bounded by the file size ----------------------------------------------------- */

#ifdef DT_RELR
/* The reviewer's file: 65,535 program headers, nearly all PT_NULL, and 8,191 all-ones
 * DT_RELR bitmap words. Each of the 516,033 words they name used to be looked up through
 * every program header: 3.4e10 steps, 37 s. */
static void relr_with_many_headers_is_linear(void **state) {
  (void)state;
  enum { WORDS = 8191 };
  const size_t A = sizeof(ElfW(Addr));
  const uint64_t span = (8 * A - 1) * A; /* bytes one bitmap word covers */
  crafted f = craft((1 + WORDS) * A, 0xffff, 0, A + WORDS * span);
  ElfW(Addr) w = (ElfW(Addr))(CRAFT_VADDR + f.len); /* the first byte past the file */
  memcpy(f.buf + f.tables, &w, A);
  w = ~(ElfW(Addr))0;
  for (size_t i = 1; i <= WORDS; i++)
    memcpy(f.buf + f.tables + i * A, &w, A);
  craft_dyn_set(&f, DT_RELR, CRAFT_VADDR + f.tables);
  craft_dyn_set(&f, DT_RELRSZ, (1 + WORDS) * A);
  craft_dyn_set(&f, DT_RELRENT, A);
  assert_linear(&f, "65535 headers, 8191 all-ones RELR words");
  free(f.buf);
}
#endif

/* 100,000 relocations and 65,535 program headers: one lookup per relocation. */
static void relocs_with_many_headers_are_linear(void **state) {
  (void)state;
  enum { RELOCS = 100000 };
  const size_t A = sizeof(ElfW(Addr));
  int rela = dyn_find(sample, DT_RELA) >= 0 || dyn_find(sample, DT_REL) < 0;
  size_t ent = rela ? sizeof(ElfW(Rela)) : sizeof(ElfW(Rel));
  crafted f = craft(RELOCS * ent, 0xffff, 0, RELOCS * A);
  for (size_t i = 0; i < RELOCS; i++) {
    ElfW(Rela) r; /* a Rel is a Rela without its last field */
    memset(&r, 0, sizeof r);
    r.r_offset = (ElfW(Addr))(CRAFT_VADDR + f.len + i * A); /* R_*_NONE, symbol 0 */
    memcpy(f.buf + f.tables + i * ent, &r, ent);
  }
  craft_dyn_set(&f, rela ? DT_RELA : DT_REL, CRAFT_VADDR + f.tables);
  craft_dyn_set(&f, rela ? DT_RELASZ : DT_RELSZ, RELOCS * ent);
  craft_dyn_set(&f, rela ? DT_RELAENT : DT_RELENT, ent);
  assert_linear(&f, "65535 headers, 100000 relocations");
  free(f.buf);
}

/* 65,535 program headers, nearly all PT_TLS: each one's image is looked up in the PT_LOADs. */
static void tls_headers_are_linear(void **state) {
  (void)state;
  crafted f = craft(8, 0xffff, 0, 0);
  ElfW(Phdr) tls;
  memset(&tls, 0, sizeof tls);
  tls.p_type = PT_TLS;
  tls.p_offset = f.tables;
  tls.p_vaddr = tls.p_paddr = CRAFT_VADDR + f.tables;
  tls.p_filesz = tls.p_memsz = 8;
  tls.p_align = 8;
  for (unsigned i = 0; i < f.nfill; i++)
    craft_put_phdr(&f, i, tls);
  assert_linear(&f, "65535 headers, nearly all PT_TLS");
  free(f.buf);
}

#ifdef DT_RELR
/* The worst case of the segment lookups themselves: 256 PT_LOADs, most of them one byte
 * long, and DT_RELR pairs (an address, then a bitmap of its first and last word) whose
 * two words lie on either side of all the one-byte segments. No bitmap fits in one segment,
 * and every pair starts again from the bottom. */
static void relr_across_many_loads_is_linear(void **state) {
  (void)state;
  enum { PAIRS = 65536 };
  const size_t A = sizeof(ElfW(Addr));
  const unsigned B = 8 * (unsigned)A - 1; /* words a bitmap covers */
  unsigned own = 0;
  while (nth_load(sample, own) >= 0)
    own++;
  unsigned tiny = 256 - own - 2; /* the file's, the crafted one, the last one */
  if (tiny > (B - 2) * A)
    tiny = (B - 2) * (unsigned)A;
  crafted f = craft(PAIRS * 2 * A, ehdr_of(sample).e_phnum + 1u + tiny + 1u, tiny + 1u, 2 * A);
  uint64_t where = f.image_end - A; /* bit 1: the last word of the crafted PT_LOAD */
  ElfW(Phdr) ph;
  memset(&ph, 0, sizeof ph);
  ph.p_type = PT_LOAD;
  ph.p_flags = PF_R | PF_W;
  ph.p_align = 1;
  ph.p_memsz = 1;
  for (unsigned i = 0; i < tiny; i++) {
    ph.p_vaddr = ph.p_paddr = (ElfW(Addr))(f.image_end + i);
    craft_put_phdr(&f, f.extra + i, ph);
  }
  ph.p_vaddr = ph.p_paddr = (ElfW(Addr))(where + (B - 1) * A); /* bit B: the last word */
  ph.p_memsz = A;
  craft_put_phdr(&f, f.extra + tiny, ph);
  for (size_t i = 0; i < PAIRS; i++) {
    ElfW(Addr) pair[2] = {(ElfW(Addr))(where - A),
                          (ElfW(Addr))1 | (ElfW(Addr))1 << 1 | (ElfW(Addr))1 << B};
    memcpy(f.buf + f.tables + i * sizeof pair, pair, sizeof pair);
  }
  craft_dyn_set(&f, DT_RELR, CRAFT_VADDR + f.tables);
  craft_dyn_set(&f, DT_RELRSZ, PAIRS * 2 * A);
  craft_dyn_set(&f, DT_RELRENT, A);
  assert_linear(&f, "256 PT_LOADs, RELR bitmaps across them");
  free(f.buf);
}
#endif

/* glibc sets no limit on PT_LOADs, but real files have 2 to 5; the check takes at most 256. */
static void too_many_loads_refused(void **state) {
  (void)state;
  unsigned own = 0;
  while (nth_load(sample, own) >= 0)
    own++;
  for (unsigned total = 256; total <= 257; total++) {
    unsigned extra = total - own - 1;
    crafted f = craft(0, ehdr_of(sample).e_phnum + 1u + extra, extra, 0);
    ElfW(Phdr) ph;
    memset(&ph, 0, sizeof ph);
    ph.p_type = PT_LOAD;
    ph.p_flags = PF_R;
    ph.p_align = 0x1000;
    ph.p_memsz = 1;
    for (unsigned i = 0; i < extra; i++) {
      ph.p_vaddr = ph.p_paddr = (ElfW(Addr))(f.image_end + 0x1000 * i);
      craft_put_phdr(&f, f.extra + i, ph);
    }
    assert_int_equal(check(f.buf, f.len, NULL), total <= 256 ? 0 : HM_EBADELF);
    free(f.buf);
  }
}

/* PT_LOADs out of order or overlapping: glibc reserves the range from the first to the
 * last and maps each one at its own address, so these land outside the reservation or over
 * each other. */
static void loads_out_of_order_refused(void **state) {
  (void)state;
  long a = nth_load(sample, 0), b = nth_load(sample, 1);
  if (b < 0) {
    print_message("  one PT_LOAD only: skipped\n");
    return;
  }
  ElfW(Phdr) pa = phdr_get(sample, a), pb = phdr_get(sample, b);
  unsigned char *p = copy_of(sample, sample_len);
  phdr_put(p, a, pb); /* swapped */
  phdr_put(p, b, pa);
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);

  memcpy(p, sample, sample_len);
  pa.p_memsz = pb.p_vaddr - pa.p_vaddr + 1; /* one byte into the next */
  phdr_put(p, a, pa);
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);
  pa.p_memsz--; /* touching is fine */
  phdr_put(p, a, pa);
  assert_int_equal(check(p, sample_len, NULL), 0);

  memcpy(p, sample, sample_len);
  long last = a;
  for (unsigned n = 1; nth_load(sample, n) >= 0; n++)
    last = nth_load(sample, n);
  ElfW(Phdr) pl = phdr_get(sample, last);
  pl.p_memsz = (ElfW(Addr))0 - pl.p_vaddr; /* ends at 2^bits: wraps to 0 */
  phdr_put(p, last, pl);
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);
  free(p);
}

/* ---- Symbol indices without hash tables ------------------------------------------------ */

/* Remove dynamic entry i: the rest, DT_NULL included, moves up one place. */
static void dyn_remove(unsigned char *buf, long i) {
  size_t off, size;
  find_dynamic(&off, &size);
  size_t n = size / sizeof(ElfW(Dyn)), e = sizeof(ElfW(Dyn));
  memmove(buf + off + (size_t)i * e, buf + off + (size_t)(i + 1) * e, (n - (size_t)i - 1) * e);
  memset(buf + off + (n - 1) * e, 0, e);
}

/* A copy of the sample with neither DT_HASH nor DT_GNU_HASH. glibc loads such a file:
 * nothing can be looked up in it, but its relocations are processed. */
static unsigned char *without_hash(void) {
  unsigned char *p = copy_of(sample, sample_len);
  long i;
  while ((i = dyn_find(p, DT_GNU_HASH)) >= 0 || (i = dyn_find(p, DT_HASH)) >= 0)
    dyn_remove(p, i);
  return p;
}

/* File offset of the sample's address addr, through its PT_LOADs. */
static size_t file_offset(uint64_t addr) {
  ElfW(Ehdr) eh = ehdr_of(sample);
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    memcpy(&ph, sample + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_LOAD && addr >= ph.p_vaddr && addr - ph.p_vaddr < ph.p_filesz)
      return (size_t)(ph.p_offset + (addr - ph.p_vaddr));
  }
  fail_msg("address 0x%llx is not in the sample's file", (unsigned long long)addr);
  return 0;
}

/* The first relocation of the sample that names a symbol: its file offset, and whether it
 * is a Rela. */
static size_t named_reloc(int *rela) {
  static const long tables[][3] = {{DT_RELA, DT_RELASZ, 1}, {DT_REL, DT_RELSZ, 0},
                                   {DT_JMPREL, DT_PLTRELSZ, -1}};
  for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
    long a = dyn_find(sample, tables[t][0]), s = dyn_find(sample, tables[t][1]);
    if (a < 0 || s < 0)
      continue;
    *rela = (int)tables[t][2];
    if (*rela < 0)
      *rela = dyn_get(sample, dyn_find(sample, DT_PLTREL)).d_un.d_val == DT_RELA;
    size_t ent = *rela ? sizeof(ElfW(Rela)) : sizeof(ElfW(Rel));
    size_t off = file_offset(dyn_get(sample, a).d_un.d_ptr);
    for (size_t p = 0; p < dyn_get(sample, s).d_un.d_val; p += ent) {
      ElfW(Rel) r; /* a Rela starts like a Rel */
      memcpy(&r, sample + off + p, sizeof r);
#if __ELF_NATIVE_CLASS == 64
      if (ELF64_R_SYM(r.r_info) != 0)
#else
      if (ELF32_R_SYM(r.r_info) != 0)
#endif
        return off + p;
    }
  }
  fail_msg("%s has no relocation that names a symbol", sample_path);
  return 0;
}

/* Make the relocation at file offset off name symbol sym, keeping its type. */
static void set_reloc_sym(unsigned char *buf, size_t off, uint64_t sym) {
  ElfW(Rel) r;
  memcpy(&r, buf + off, sizeof r);
#if __ELF_NATIVE_CLASS == 64
  r.r_info = ELF64_R_INFO(sym, ELF64_R_TYPE(r.r_info));
#else
  r.r_info = ELF32_R_INFO(sym, ELF32_R_TYPE(r.r_info));
#endif
  memcpy(buf + off, &r, sizeof r);
}

static uint64_t reloc_sym(const unsigned char *buf, size_t off) {
  ElfW(Rel) r;
  memcpy(&r, buf + off, sizeof r);
#if __ELF_NATIVE_CLASS == 64
  return ELF64_R_SYM(r.r_info);
#else
  return ELF32_R_SYM(r.r_info);
#endif
}

/* .dynsym's entry count, from the sample's section headers. */
static uint64_t dynsym_entries(void) {
  ElfW(Ehdr) eh = ehdr_of(sample);
  for (unsigned i = 0; i < eh.e_shnum; i++) {
    ElfW(Shdr) s;
    memcpy(&s, sample + eh.e_shoff + i * sizeof s, sizeof s);
    if (s.sh_type == SHT_DYNSYM)
      return s.sh_size / sizeof(ElfW(Sym));
  }
  fail_msg("%s has no .dynsym section", sample_path);
  return 0;
}

static void drop_section_headers(unsigned char *buf) {
  ElfW(Ehdr) eh = ehdr_of(buf);
  eh.e_shoff = 0;
  eh.e_shnum = 0;
  eh.e_shstrndx = SHN_UNDEF;
  memcpy(buf, &eh, sizeof eh);
}

/* Without hash tables the symbol count used to be unknown (0), and relocation symbol indices
 * went unchecked: a GLOB_DAT naming symbol 0x100000 passed, and dlopen read far past the
 * symbol table. The count now comes from .dynsym's section header, or without section
 * headers from the room in DT_SYMTAB's segment. */
static void no_hash_huge_symbol_refused(void **state) {
  (void)state;
  int rela;
  size_t at = named_reloc(&rela);
  unsigned char *p = without_hash();
  set_reloc_sym(p, at, 0x100000);
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);
  drop_section_headers(p);
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);
  free(p);
}

/* One past .dynsym's last symbol: still inside the segment, so only the section header
 * tells that it is not a symbol. */
static void no_hash_symbol_past_dynsym_refused(void **state) {
  (void)state;
  int rela;
  size_t at = named_reloc(&rela);
  unsigned char *p = without_hash();
  set_reloc_sym(p, at, dynsym_entries());
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);
  free(p);
}

/* The same files with valid indices still pass, with and without section headers. */
static void no_hash_valid_symbol_passes(void **state) {
  (void)state;
  int rela;
  size_t at = named_reloc(&rela);
  unsigned char *p = without_hash();
  assert_int_equal(check(p, sample_len, NULL), 0);
  set_reloc_sym(p, at, dynsym_entries() - 1); /* the last symbol */
  assert_int_equal(check(p, sample_len, NULL), 0);
  drop_section_headers(p);
  assert_int_equal(check(p, sample_len, NULL), 0);
  free(p);
}

/* glibc reads the name of each symbol a relocation names, to look it up. */
static void no_hash_symbol_name_checked(void **state) {
  (void)state;
  int rela;
  size_t at = named_reloc(&rela);
  uint64_t sym = reloc_sym(sample, at);
  long st = dyn_find(sample, DT_SYMTAB), sz = dyn_find(sample, DT_STRSZ);
  size_t symoff = file_offset(dyn_get(sample, st).d_un.d_ptr) + sym * sizeof(ElfW(Sym));
  unsigned char *p = without_hash();
  ElfW(Sym) s;
  memcpy(&s, p + symoff, sizeof s);
  s.st_name = (ElfW(Word))dyn_get(sample, sz).d_un.d_val; /* one past the table */
  memcpy(p + symoff, &s, sizeof s);
  assert_int_equal(check(p, sample_len, NULL), HM_EBADELF);
  s.st_name--; /* the table's last byte: its terminating NUL, an empty name */
  memcpy(p + symoff, &s, sizeof s);
  assert_int_equal(check(p, sample_len, NULL), 0);
  free(p);
}

/* ---- Main ------------------------------------------------------------------------------ */

static int load_sample(void) {
  FILE *f = fopen(sample_path, "rb");
  if (f == NULL) {
    perror(sample_path);
    return -1;
  }
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  for (;;) {
    if (buf == NULL)
      break;
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap)
      break;
    unsigned char *bigger = realloc(buf, cap * 2);
    if (bigger == NULL) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = bigger;
    cap *= 2;
  }
  int err = ferror(f);
  fclose(f);
  if (buf == NULL || err || n < sizeof(ElfW(Ehdr))) {
    fprintf(stderr, "%s: cannot read a sample ELF file\n", sample_path);
    free(buf);
    return -1;
  }
  /* Exactly n bytes, so ASan sees reads past the end of the whole-file checks too. */
  sample = malloc(n);
  if (sample == NULL) {
    free(buf);
    return -1;
  }
  memcpy(sample, buf, n);
  sample_len = n;
  free(buf);
  return 0;
}

/* ---- FAST_RELOAD (cmake/HotmodModule.cmake) ---------------------------------------------- */

#ifdef HM_TEST_MODDIR
/* PT_LOAD and PT_GNU_RELRO headers of a built module. */
static void segments(const char *name, int *loads, int *relro) {
  char path[4096];
  FILE *f;
  ElfW(Ehdr) eh;
  snprintf(path, sizeof path, "%s/%s", HM_TEST_MODDIR, name);
  f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fread(&eh, sizeof eh, 1, f), 1);
  *loads = *relro = 0;
  for (unsigned i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    assert_int_equal(fseek(f, (long)(eh.e_phoff + (ElfW(Off))i * eh.e_phentsize), SEEK_SET), 0);
    assert_int_equal(fread(&ph, sizeof ph, 1, f), 1);
    *loads += ph.p_type == PT_LOAD;
    *relro += ph.p_type == PT_GNU_RELRO;
  }
  fclose(f);
}

/* The same source built by hotmod_add_module with and without FAST_RELOAD: the fast one has
 * no RELRO segment and no more mappings, and loads. */
static void fast_reload_layout(void **state) {
  int loads, relro, fast_loads, fast_relro;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  hm_module *mod;
  hm_snapshot *snap;
  char path[4096];
  (void)state;
  segments("lint_clean.so", &loads, &relro);
  segments("lint_fast.so", &fast_loads, &fast_relro);
  print_message("default: %d PT_LOAD, %d RELRO; FAST_RELOAD: %d PT_LOAD, %d RELRO\n", loads,
                relro, fast_loads, fast_relro);
  assert_int_equal(relro, 1);
  assert_int_equal(fast_relro, 0);
  assert_true(fast_loads <= loads);
  o.flags = HM_FLAG_QUIET;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  snprintf(path, sizeof path, "%s/lint_fast.so", HM_TEST_MODDIR);
  assert_int_equal(hm_module_load(reg, "fast", path, &mod), 0);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "fast:version", &snap), 0);
  assert_int_equal(((int (*)(void))hm_snapshot_fn(snap))(), 1);
  hm_snapshot_release(snap);
  hm_registry_free(reg);
}
#endif

/* The unique-symbols finding in words: every name up to three, then how many more. */
static void unique_names_counted(void **state) {
  static const char *const names[] = {"_ZZ1avE1n", "_ZZ1bvE1n", "_ZZ1cvE1n"};
  hm__elf_info info;
  char what[512];
  (void)state;
  memset(&info, 0, sizeof info);
  info.lint = HM__LINT_UNIQUE;
  info.unique_count = 1;
  info.unique_syms[0] = names[0];
  hm__lint_what(&info, HM__LINT_UNIQUE, what, sizeof what);
  assert_non_null(strstr(what, "defines 1 STB_GNU_UNIQUE symbol (_ZZ1avE1n)"));
  info.unique_count = 5;
  info.unique_syms[1] = names[1];
  info.unique_syms[2] = names[2];
  hm__lint_what(&info, HM__LINT_UNIQUE, what, sizeof what);
  assert_non_null(strstr(what, "defines 5 STB_GNU_UNIQUE symbols (_ZZ1avE1n, _ZZ1bvE1n, "
                               "_ZZ1cvE1n and 2 more)"));
}

#ifdef HM_TEST_OBJCOPY
/* A split build's .gnu_debuglink: its file name and the CRC-32 of that file's bytes; a name
 * that is not a plain file name, or not terminated inside its section, is not taken (and
 * the file is fine all the same); a build without one has none. */
static void debuglink_noted(void **state) {
  char cmd[4096], dir[] = "/tmp/hm_test_elf_XXXXXX", path[256], dpath[256];
  unsigned char *buf, *dbg, *at;
  size_t len, dlen, k;
  FILE *f;
  hm__elf_info info;
  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(cmd, sizeof cmd,
           "cd %s && cp %s/square_v1.so sq.so && %s --only-keep-debug sq.so sq.so.debug && "
           "%s --strip-debug --add-gnu-debuglink=sq.so.debug sq.so",
           dir, HM_TEST_MODDIR, HM_TEST_OBJCOPY, HM_TEST_OBJCOPY);
  assert_int_equal(system(cmd), 0);
  snprintf(path, sizeof path, "%s/sq.so", dir);
  snprintf(dpath, sizeof dpath, "%s/sq.so.debug", dir);
  for (int i = 0; i < 2; i++) {
    f = fopen(i ? dpath : path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    k = (size_t)ftell(f);
    rewind(f);
    at = malloc(k);
    assert_non_null(at);
    assert_int_equal(fread(at, 1, k, f), k);
    fclose(f);
    if (i) {
      dbg = at;
      dlen = k;
    } else {
      buf = at;
      len = k;
    }
  }
  assert_int_equal(check(buf, len, &info), 0);
  assert_non_null(info.debuglink);
  assert_string_equal(info.debuglink, "sq.so.debug");
  assert_int_equal(info.debuglink_crc, hm__crc32(0, dbg, dlen));
  assert_int_equal(check(sample, sample_len, &info), 0);
  assert_null(info.debuglink);
  /* Every cut of the split build is refused or passes without reading past its end. */
  for (k = 0; k < len; k += k < 256 ? 1 : 61) {
    unsigned char *cut = copy_of(buf, k);
    check(cut, k, &info);
    free(cut);
  }
  at = memmem(buf, len, "sq.so.debug", 12);
  assert_non_null(at);
  at[2] = '/'; /* "sq/so.debug": could name a file elsewhere */
  assert_int_equal(check(buf, len, &info), 0);
  assert_null(info.debuglink);
  memset(at, 'a', 16); /* the name, its NUL and padding, as far as the CRC: unterminated */
  assert_int_equal(check(buf, len, &info), 0);
  assert_null(info.debuglink);
  free(buf);
  free(dbg);
  unlink(path);
  unlink(dpath);
  rmdir(dir);
}
#endif

int main(int argc, char **argv) {
  if (argc > 1)
    sample_path = argv[1];
  if (load_sample() != 0)
    return 1;
  print_message("sample: %s (%zu bytes)\n", sample_path, sample_len);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(whole_file_passes),  cmocka_unit_test(truncations_fail),
      cmocka_unit_test(second_half_zeroed), cmocka_unit_test(dynamic_zeroed),
      cmocka_unit_test(not_elf),            cmocka_unit_test(no_section_headers_pass),
      cmocka_unit_test(flags_reported),     cmocka_unit_test(fuzz_never_crashes),
#ifdef DT_RELR
      cmocka_unit_test(relr_with_many_headers_is_linear),
      cmocka_unit_test(relr_across_many_loads_is_linear),
#endif
      cmocka_unit_test(relocs_with_many_headers_are_linear),
      cmocka_unit_test(tls_headers_are_linear),
      cmocka_unit_test(too_many_loads_refused),
#ifdef HM_TEST_MODDIR
      cmocka_unit_test(fast_reload_layout),
#endif
      cmocka_unit_test(loads_out_of_order_refused),
      cmocka_unit_test(no_hash_huge_symbol_refused),
      cmocka_unit_test(no_hash_symbol_past_dynsym_refused),
      cmocka_unit_test(no_hash_valid_symbol_passes),
      cmocka_unit_test(no_hash_symbol_name_checked),
      cmocka_unit_test(unique_names_counted),
#ifdef HM_TEST_OBJCOPY
      cmocka_unit_test(debuglink_noted),
#endif
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  free(sample);
  return failed;
}
