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
  hm__elf_info info = {-1, -1, 0};
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
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  free(sample);
  return failed;
}
