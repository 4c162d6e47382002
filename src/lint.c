/*
 * The reloadability lint: what the ELF check found (hm__elf_info.lint) in words, each with
 * the one-line fix. The findings are facts about the file; what to do with them (warn,
 * refuse, ignore) is the registry's policy, and hotmod-check prints them. A pure function.
 *
 * Layer 1 (docs/architecture.md): calls only the leaves.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

typedef struct finding {
  unsigned bit;
  const char *name; /* short, stable: for --json and tests */
  const char *fix;
} finding;

static const finding findings[] = {
    {HM__LINT_NODELETE, "nodelete", "drop -z nodelete (and RTLD_NODELETE) from the module's link"},
    {HM__LINT_UNIQUE, "unique-symbols",
     "C++ inline statics are STB_GNU_UNIQUE: build with -fvisibility=hidden "
     "-fvisibility-inlines-hidden, or -fno-gnu-unique (GCC)"},
    {HM__LINT_STATIC_TLS, "initial-exec-tls",
     "use the default TLS model: drop -ftls-model=initial-exec and tls_model attributes"},
    {HM__LINT_THREAD_ATEXIT, "thread-local-destructors",
     "avoid thread_local objects with destructors in modules (keep them in the host)"},
    {HM__LINT_KEY_CREATE, "pthread-keys",
     "delete the module's pthread keys in its unload hook (pthread_key_delete) and declare "
     "HM_MODULE_KEYS_DELETED in its descriptor, or keep keys in the host"},
    {HM__LINT_RUST_STD, "rust-std",
     "build the crate #![no_std] (with alloc) for versions that unload, or set this "
     "finding's policy to off if no thread that ran its code exits before the process does"},
    {HM__LINT_ORIGIN, "origin-runpath",
     "use an absolute RUNPATH, or have the host load the libraries it needs"},
    {HM__LINT_NEEDED, "shared-dependency",
     "link the library statically into the module, or make it a module of its own"},
};

_Static_assert(sizeof findings / sizeof findings[0] <= HM__LINT_KINDS, "HM__LINT_KINDS");

unsigned hm__lint_count(void) { return sizeof findings / sizeof findings[0]; }

int hm__lint_index(const char *name) {
  unsigned i;
  for (i = 0; name != NULL && i < hm__lint_count(); i++)
    if (strcmp(findings[i].name, name) == 0)
      return (int)i;
  return -1;
}

unsigned hm__lint_bit(unsigned i) { return i < hm__lint_count() ? findings[i].bit : 0; }

const char *hm__lint_name(unsigned bit) {
  unsigned i;
  for (i = 0; i < hm__lint_count(); i++)
    if (findings[i].bit == bit)
      return findings[i].name;
  return "?";
}

const char *hm__lint_fix(unsigned bit) {
  unsigned i;
  for (i = 0; i < hm__lint_count(); i++)
    if (findings[i].bit == bit)
      return findings[i].fix;
  return "";
}

/* The unique symbols the check kept, "a, b, c and 9 more": a C++ module usually has many,
 * and the first one alone does not say which inline functions or templates to look at. */
static void unique_names(const hm__elf_info *info, char *out, size_t n) {
  size_t used = 0;
  unsigned i, kept = info->unique_count < HM__LINT_UNIQUE_NAMES ? info->unique_count
                                                                 : HM__LINT_UNIQUE_NAMES;
  out[0] = '\0';
  for (i = 0; i < kept && used < n; i++) {
    int w = snprintf(out + used, n - used, "%s%.60s", i == 0 ? "" : ", ",
                     info->unique_syms[i] ? info->unique_syms[i] : "?");
    used += w > 0 ? (size_t)w : 0;
  }
  if (info->unique_count > kept && used < n)
    snprintf(out + used, n - used, " and %u more", info->unique_count - kept);
}

void hm__lint_what(const hm__elf_info *info, unsigned bit, char *out, size_t n) {
  char names[256];
  switch (bit) {
  case HM__LINT_NODELETE:
    snprintf(out, n, "linked with -z nodelete: no version of it is ever unloaded");
    break;
  case HM__LINT_UNIQUE:
    unique_names(info, names, sizeof names);
    snprintf(out, n,
             "defines %u STB_GNU_UNIQUE symbol%s (%s): its first version is never unloaded and "
             "later versions share that version's objects instead of fresh globals",
             info->unique_count, info->unique_count == 1 ? "" : "s", names);
    break;
  case HM__LINT_STATIC_TLS:
    snprintf(out, n,
             "defines %llu bytes of initial-exec TLS: every loaded version takes static TLS "
             "space, which runs out after a few reloads (then dlopen fails)",
             (unsigned long long)info->tls_size);
    break;
  case HM__LINT_THREAD_ATEXIT:
    snprintf(out, n, "registers thread_local destructors (__cxa_thread_atexit): a version "
                     "a live thread touched cannot be unloaded");
    break;
  case HM__LINT_KEY_CREATE:
    snprintf(out, n, "creates pthread keys: a key's destructor stays in the version for every "
                     "thread that stored a value under it, and runs when that thread exits, "
                     "unloaded or not: its retired versions stay mapped");
    break;
  case HM__LINT_RUST_STD:
    snprintf(out, n, "is a Rust cdylib with std, which leaves destructors in the version for "
                     "the threads that ran its code (std::thread::current, thread_local! with "
                     "Drop): its retired versions stay mapped");
    break;
  case HM__LINT_ORIGIN:
    snprintf(out, n,
             "has RUNPATH \"%.80s\", whose $ORIGIN is the private copy's directory: "
             "libraries beside the module's file are not found",
             info->runpath ? info->runpath : "?");
    break;
  case HM__LINT_NEEDED:
    snprintf(out, n,
             "needs %.80s, which is loaded once and shared by every version of the module: "
             "it is never reloaded",
             info->needed ? info->needed : "?");
    break;
  default:
    snprintf(out, n, "unknown finding");
  }
}
