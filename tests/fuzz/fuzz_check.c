/* fuzz_check.c: see fuzz_check.h. Every check aborts rather than returns: under libFuzzer an
 * abort is a finding with its input saved, and in the replay it fails the test. Plain
 * assert() would not do: release builds define NDEBUG. */
#include "fuzz_check.h"

#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void require(int ok, const char *what, int rc, const char *why) {
  if (ok)
    return;
  fprintf(stderr, "hmf_check: %s (result %s: %s)\n", what, hm_err_name(rc),
          why != NULL && why[0] != '\0' ? why : "no reason given");
  abort();
}

/* A string the check returned: it must point into the input and end there, since the info
 * struct borrows the caller's buffer. Its length is read, so that a sanitizer sees every
 * byte of it. */
static size_t input_string(const uint8_t *data, size_t size, const char *s, const char *name,
                           int rc) {
  char what[96];
  uintptr_t b = (uintptr_t)data, p = (uintptr_t)s;
  snprintf(what, sizeof what, "info->%s points outside the input", name);
  require(p >= b && p - b < size, what, rc, NULL);
  snprintf(what, sizeof what, "info->%s is not terminated inside the input", name);
  require(memchr(s, 0, size - (p - b)) != NULL, what, rc, NULL);
  return strlen(s);
}

/* Every finding the check reported, in words, as the loader's warning and hotmod-check
 * print it (lint.c): into a buffer of the loader's size and into a short one, which must
 * hold the same text cut short. The finding's strings come from the input, so this is
 * where a crafted name meets snprintf. */
static void lint_words(const hm__elf_info *info, int rc) {
  char what[512], cut[24];
  for (unsigned i = 0; i < hm__lint_count(); i++) {
    unsigned bit = hm__lint_bit(i);
    if (!(info->lint & bit))
      continue;
    require(strcmp(hm__lint_name(bit), "?") != 0, "a finding without a name", rc, NULL);
    require(hm__lint_fix(bit)[0] != '\0', "a finding without a fix", rc, NULL);
    memset(what, 0x55, sizeof what);
    memset(cut, 0x55, sizeof cut);
    hm__lint_what(info, bit, what, sizeof what);
    hm__lint_what(info, bit, cut, sizeof cut);
    require(memchr(what, 0, sizeof what) != NULL, "a finding's text is not terminated", rc,
            NULL);
    require(what[0] != '\0' && strcmp(what, "unknown finding") != 0,
            "a finding without its text", rc, NULL);
    require(memchr(cut, 0, sizeof cut) != NULL && strncmp(cut, what, strlen(cut)) == 0,
            "a finding's text cut short is not its prefix", rc, what);
  }
}

int hmf_check(const uint8_t *data, size_t size, uint64_t *steps) {
  char why[256], brief[16];
  hm__elf_info info, cleared;
  volatile size_t touched = 0;

  /* Garbage in every out-parameter: the check must write all of it. */
  memset(why, 0x55, sizeof why);
  memset(&info, 0xa5, sizeof info);
  int rc = hm__elf_check(data, size, &info, why, sizeof why);
  if (steps != NULL)
    *steps = info.steps;

  require(rc == 0 || rc == HM_EBADELF || rc == HM_ENOTELF, "unexpected result", rc, NULL);
  require(memchr(why, 0, sizeof why) != NULL, "the reason is not terminated", rc, NULL);
  require(info.steps <= (uint64_t)HMF_STEPS_PER_BYTE * size + HMF_STEPS_FIXED,
          "more work than the bound (24 steps per byte + 1024)", rc, why);

  if (rc != 0) {
    require(why[0] != '\0', "a failure without a reason", rc, NULL);
    memset(&cleared, 0, sizeof cleared);
    cleared.steps = info.steps;
    require(memcmp(&info, &cleared, sizeof info) == 0, "info not cleared on failure", rc, why);
  } else {
    require(why[0] == '\0', "a success with a reason", rc, why);
    require((info.lint & ~0xffu) == 0, "unknown lint bits", rc, NULL);
    require(!(info.lint & HM__LINT_RUST_STD) ||
                !(info.lint & (HM__LINT_KEY_CREATE | HM__LINT_THREAD_ATEXIT)),
            "rust-std reported beside the findings it replaces", rc, NULL);
    require(!!(info.lint & HM__LINT_NODELETE) == !!info.nodelete,
            "HM__LINT_NODELETE disagrees with nodelete", rc, NULL);
    require(!(info.lint & HM__LINT_STATIC_TLS) || (info.static_tls && info.tls_size != 0),
            "HM__LINT_STATIC_TLS without static_tls and a TLS size", rc, NULL);
    require((info.lint & HM__LINT_STATIC_TLS) || info.tls_size == 0,
            "a TLS size without HM__LINT_STATIC_TLS", rc, NULL);
    require(!!(info.lint & HM__LINT_UNIQUE) == (info.unique_count != 0),
            "HM__LINT_UNIQUE disagrees with unique_count", rc, NULL);
    for (unsigned k = 0; k < HM__LINT_UNIQUE_NAMES; k++)
      require((info.unique_syms[k] != NULL) == (k < info.unique_count),
              "unique_syms disagrees with unique_count", rc, NULL);
    require(!!(info.lint & HM__LINT_NEEDED) == (info.needed != NULL),
            "HM__LINT_NEEDED disagrees with needed", rc, NULL);
    require(!!(info.lint & HM__LINT_ORIGIN) == (info.runpath != NULL),
            "HM__LINT_ORIGIN disagrees with runpath", rc, NULL);
    require(info.has_desc || (info.desc_abi == 0 && info.desc_size == 0 && info.desc_flags == 0),
            "descriptor facts without a descriptor", rc, NULL);
    for (unsigned k = 0; k < HM__LINT_UNIQUE_NAMES && info.unique_syms[k] != NULL; k++)
      touched += input_string(data, size, info.unique_syms[k], "unique_syms", rc);
    if (info.needed != NULL)
      touched += input_string(data, size, info.needed, "needed", rc);
    if (info.runpath != NULL) {
      touched += input_string(data, size, info.runpath, "runpath", rc);
      require(strstr(info.runpath, "$ORIGIN") != NULL, "a runpath without $ORIGIN", rc, NULL);
    }
    touched += info.desc_abi + info.desc_size + (size_t)info.tls_size;
    lint_words(&info, rc);
  }
  (void)touched;

  /* The watcher's call: no info, a reason cut short. Same answer, the same reason cut. */
  memset(brief, 0x55, sizeof brief);
  int rc2 = hm__elf_check(data, size, NULL, brief, sizeof brief);
  require(rc2 == rc, "a different result without info", rc2, brief);
  require(memchr(brief, 0, sizeof brief) != NULL, "a short reason is not terminated", rc, NULL);
  require(strncmp(brief, why, strlen(brief)) == 0 && strlen(brief) == strnlen(why, sizeof brief - 1),
          "the short reason is not the reason cut short", rc, why);
  return rc;
}
