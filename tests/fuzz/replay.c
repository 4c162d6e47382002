/* replay.c: the ELF check's regression corpus, without libFuzzer (CTest's fuzz_regress).
 *
 *   hm_fuzz_replay [--verbose] [--time] [--pass] [--lint NAMES] PATH...
 *
 * Each PATH is a file or a directory of files (hidden ones skipped). Each file goes through
 * the same checks as the fuzz target (fuzz_check.c, which aborts on a breach), in a buffer
 * of exactly its size. Its name says what the result must be: pass-* 0, badelf-* HM_EBADELF,
 * notelf-* HM_ENOTELF (gen_corpus.c writes such files; the names describe x86-64, so other
 * machines only get the safety checks); any other name may have any result. After --pass,
 * every file must pass (the real modules the build makes). After --lint NAMES, every file
 * must pass with exactly the findings NAMES lists (hm__lint_name, comma-separated; "none"
 * for none): the seeds/ modules, whose findings the linker put there.
 *
 * --verbose prints each file's result with its reason, or on success the lint facts.
 * --time checks each file repeatedly and prints its time per megabyte and steps per byte:
 * the figures tests/fuzz/README.md reports for the slowest shapes. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "internal.h"

#if defined(__x86_64__) && !defined(__ILP32__)
#define NAMES_APPLY 1
#else
#define NAMES_APPLY 0
#endif

static int timing, all_pass, verbose, lint_given;
static unsigned lint_want;
static unsigned nfiles, failures, counts[3];
static double slowest_ms_per_mb;
static char slowest[4096];

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The result a file's name asks for, or 1 if it asks for none. */
static int expected(const char *path) {
  const char *base = strrchr(path, '/');
  base = base != NULL ? base + 1 : path;
  if (all_pass || lint_given)
    return 0;
  if (!NAMES_APPLY)
    return 1;
  if (strncmp(base, "pass-", 5) == 0)
    return 0;
  if (strncmp(base, "badelf-", 7) == 0)
    return HM_EBADELF;
  if (strncmp(base, "notelf-", 7) == 0)
    return HM_ENOTELF;
  return 1;
}

/* The HM__LINT_* bits of a comma-separated list of finding names; 0 with a message if one
 * is unknown, with *ok cleared. */
static unsigned lint_bits(const char *names, int *ok) {
  unsigned bits = 0;
  *ok = 1;
  if (strcmp(names, "none") == 0)
    return 0;
  while (*names != '\0') {
    size_t n = strcspn(names, ",");
    unsigned i, found = 0;
    for (i = 0; i < hm__lint_count(); i++) {
      const char *name = hm__lint_name(hm__lint_bit(i));
      if (strlen(name) == n && strncmp(name, names, n) == 0)
        found = hm__lint_bit(i);
    }
    if (found == 0) {
      fprintf(stderr, "replay: unknown finding %.*s\n", (int)n, names);
      *ok = 0;
    }
    bits |= found;
    names += n + (names[n] == ',');
  }
  return bits;
}

/* The names of the findings in `bits`, for messages. */
static void lint_names(unsigned bits, char *out, size_t n) {
  size_t used = 0;
  out[0] = '\0';
  for (unsigned i = 0; i < hm__lint_count(); i++)
    if (bits & hm__lint_bit(i))
      used += (size_t)snprintf(out + used, used < n ? n - used : 0, "%s%s", used ? "," : "",
                               hm__lint_name(hm__lint_bit(i)));
  if (used == 0)
    snprintf(out, n, "none");
}

static void check_lint(const char *path, const unsigned char *buf, size_t len) {
  char why[256], have[256], want[256];
  hm__elf_info info;
  if (hm__elf_check(buf, len, &info, why, sizeof why) != 0 || info.lint == lint_want)
    return; /* a failure is reported as such */
  lint_names(info.lint, have, sizeof have);
  lint_names(lint_want, want, sizeof want);
  fprintf(stderr, "replay: %s: findings %s, expected %s\n", path, have, want);
  failures++;
}

/* hmf_check aborts on a breach: name the file it was checking, then abort as it meant to. */
static const char *current;

static void on_abort(int sig) {
  static const char pre[] = "replay: the breach above is in ";
  if (current != NULL && write(2, pre, sizeof pre - 1) > 0 &&
      write(2, current, strlen(current)) > 0 && write(2, "\n", 1) > 0) {
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (f == NULL || fstat(fileno(f), &st) != 0) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    if (f != NULL)
      fclose(f);
    return NULL;
  }
  /* Exactly the file's size (at least one byte to allocate): a sanitizer then flags any
   * read past the end. */
  size_t n = (size_t)st.st_size;
  unsigned char *buf = malloc(n ? n : 1);
  if (buf == NULL || fread(buf, 1, n, f) != n) {
    fprintf(stderr, "replay: %s: cannot read %zu bytes\n", path, n);
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* Check it again and again for at least 0.2 s (3 times at least); the fastest round. */
static void time_one(const char *path, const unsigned char *buf, size_t len, uint64_t steps) {
  double best = 1e30, start = now_s();
  char why[256];
  hm__elf_info info;
  for (unsigned round = 0; round < 3 || now_s() - start < 0.2; round++) {
    double t0 = now_s();
    hm__elf_check(buf, len, &info, why, sizeof why);
    double t = now_s() - t0;
    if (t < best)
      best = t;
  }
  double mb = (double)len / (1024.0 * 1024.0), ms_per_mb = len ? best * 1e3 / mb : 0;
  printf("%-48s %10zu bytes %9.3f ms %8.2f ms/MB %6.2f steps/byte\n", path, len, best * 1e3,
         ms_per_mb, len ? (double)steps / (double)len : 0.0);
  if (len >= 4096 && ms_per_mb > slowest_ms_per_mb) {
    slowest_ms_per_mb = ms_per_mb;
    snprintf(slowest, sizeof slowest, "%s", path);
  }
}

static void describe(const char *path, const unsigned char *buf, size_t len) {
  char why[256];
  hm__elf_info info;
  int rc = hm__elf_check(buf, len, &info, why, sizeof why);
  if (rc != 0) {
    printf("%s: %s: %s\n", path, hm_err_name(rc), why);
    return;
  }
  printf("%s: passes; lint 0x%02x, tls %llu, unique %s, needed %s, runpath %s, "
         "descriptor %s (abi %u, size %u)\n",
         path, info.lint, (unsigned long long)info.tls_size,
         info.unique_syms[0] ? info.unique_syms[0] : "-", info.needed ? info.needed : "-",
         info.runpath ? info.runpath : "-", info.has_desc ? "yes" : "no", info.desc_abi,
         info.desc_size);
}

static void replay_file(const char *path) {
  size_t len = 0;
  unsigned char *buf = read_file(path, &len);
  if (buf == NULL) {
    failures++;
    return;
  }
  uint64_t steps = 0;
  current = path;
  int rc = hmf_check(buf, len, &steps), want = expected(path);
  current = NULL;
  nfiles++;
  counts[rc == 0 ? 0 : rc == HM_EBADELF ? 1 : 2]++;
  if (want != 1 && rc != want) {
    char why[256];
    hm__elf_check(buf, len, NULL, why, sizeof why);
    fprintf(stderr, "replay: %s: %s, expected %s%s%s\n", path, hm_err_name(rc),
            hm_err_name(want), rc != 0 ? ": " : "", rc != 0 ? why : "");
    failures++;
  }
  if (lint_given)
    check_lint(path, buf, len);
  if (verbose)
    describe(path, buf, len);
  if (timing)
    time_one(path, buf, len, steps);
  free(buf);
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

static int visible(const struct dirent *d) { return d->d_name[0] != '.'; }

static void replay_path(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    failures++;
    return;
  }
  if (!S_ISDIR(st.st_mode)) {
    replay_file(path);
    return;
  }
  struct dirent **list;
  int n = scandir(path, &list, visible, by_name);
  if (n < 0) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    failures++;
    return;
  }
  for (int i = 0; i < n; i++) {
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", path, list[i]->d_name);
    if (stat(sub, &st) == 0 && S_ISREG(st.st_mode))
      replay_file(sub);
    free(list[i]);
  }
  free(list);
}

int main(int argc, char **argv) {
  int paths = 0;
  signal(SIGABRT, on_abort);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--verbose") == 0) {
      verbose = 1;
    } else if (strcmp(argv[i], "--time") == 0) {
      timing = 1;
    } else if (strcmp(argv[i], "--pass") == 0) {
      all_pass = 1;
    } else if (strcmp(argv[i], "--lint") == 0 && i + 1 < argc) {
      int ok;
      lint_given = 1;
      lint_want = lint_bits(argv[++i], &ok);
      if (!ok)
        return 2;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: hm_fuzz_replay [--verbose] [--time] [--pass] [--lint NAMES] PATH...\n");
      return 2;
    } else {
      replay_path(argv[i]);
      paths++;
    }
  }
  if (paths == 0) {
    fprintf(stderr, "usage: hm_fuzz_replay [--verbose] [--time] [--pass] [--lint NAMES] PATH...\n");
    return 2;
  }
  printf("replay: %u files: %u passed, %u HM_EBADELF, %u HM_ENOTELF; %u failures\n", nfiles,
         counts[0], counts[1], counts[2], failures);
  if (timing && slowest[0] != '\0')
    printf("replay: slowest per MB: %s, %.2f ms/MB\n", slowest, slowest_ms_per_mb);
  return failures != 0;
}
