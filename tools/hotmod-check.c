/*
 * hotmod-check: the loader's preflight and reloadability lint on module files, without a
 * registry and without loading anything. Each file is read as the loader reads it (file.c),
 * checked by the same ELF check and descriptor check, and its lint findings are printed one
 * per line with the fix, or as JSON for tools.
 *
 * Exit status: 0 every file is clean, 1 some file has findings, 2 some file cannot be used
 * (missing, not a regular file, not an ELF shared object for this machine, truncated, built
 * for another module ABI, ...) or the command line is wrong.
 *
 * With --verify KEYFILE it checks build signatures instead, as a registry with that trusted
 * key does (minisig.c, file.c): 0 every file is signed by the key, 1 some file is refused,
 * 2 some file or the key cannot be used.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define EXIT_FINDINGS 1
#define EXIT_UNUSABLE 2

static void usage(FILE *out) {
  fprintf(out,
          "usage: hotmod-check [--json] [--allow-writable] FILE.so...\n"
          "       hotmod-check --verify KEYFILE [--allow-writable] FILE.so...\n"
          "\n"
          "Checks hotmod modules the way the loader does before dlopen (the file, its ELF\n"
          "structure, its module descriptor) and reports what keeps them from reloading\n"
          "cleanly, one line per problem with its fix:\n"
          "  FILE: finding: what it does \xe2\x80\x94 how to fix it\n"
          "\n"
          "  --json   print a JSON array instead: one object per file, with \"findings\"\n"
          "           ({\"name\", \"what\", \"fix\"}) and \"error\" (null, or why the file\n"
          "           cannot be loaded)\n"
          "  --allow-writable  check files that others could have written (a build\n"
          "           directory shared with a group), as a registry with\n"
          "           HM_FLAG_ALLOW_WRITABLE loads them; without it they are unusable (2)\n"
          "  --verify KEYFILE  check instead that each file is a build signed by the\n"
          "           minisign public key in KEYFILE, with its signature FILE.so.minisig\n"
          "           beside it, as a registry that trusts that key loads it (the signed\n"
          "           file name too; a library that is not a system one, or $ORIGIN, is\n"
          "           refused): prints the trusted comment of each good one. Exit status:\n"
          "           0 all signed, 1 some refused, 2 a file or the key cannot be used\n"
          "  --help   print this and exit\n"
          "\n"
          "Exit status: 0 all files clean, 1 findings, 2 a file cannot be used (or usage).\n");
}

/* ---- Output ---------------------------------------------------------------------------- */

/* Text for a terminal: control characters (from a crafted file's strings) become '?'. */
static void put_text(const char *s) {
  for (; *s; s++)
    putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

/* Length of the valid UTF-8 sequence at s, or 0 if it is not one (overlong forms,
 * surrogates and code points above U+10FFFF are not valid). */
static size_t utf8_len(const unsigned char *s) {
  size_t n, i;
  unsigned long cp;
  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf)
    n = 2, cp = s[0] & 0x1fu;
  else if (s[0] >= 0xe0 && s[0] <= 0xef)
    n = 3, cp = s[0] & 0x0fu;
  else if (s[0] >= 0xf0 && s[0] <= 0xf4)
    n = 4, cp = s[0] & 0x07u;
  else
    return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3fu);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

/* A JSON string: quotes, backslashes and control characters escaped; bytes that are not
 * UTF-8 (file names and a crafted file's strings may have any) become U+FFFD. */
static void put_json(const char *str) {
  const unsigned char *s = (const unsigned char *)str;
  putchar('"');
  while (*s) {
    size_t n = utf8_len(s);
    if (n == 0) {
      fputs("\\ufffd", stdout);
      s++;
    } else if (*s == '"' || *s == '\\') {
      putchar('\\');
      putchar(*s++);
    } else if (*s == '\n') {
      fputs("\\n", stdout), s++;
    } else if (*s == '\t') {
      fputs("\\t", stdout), s++;
    } else if (*s < 0x20 || *s == 0x7f) {
      printf("\\u%04x", *s++);
    } else {
      fwrite(s, 1, n, stdout);
      s += n;
    }
  }
  putchar('"');
}

/* ---- One file -------------------------------------------------------------------------- */

/* Check one file and print what it has. Returns 0, EXIT_FINDINGS or EXIT_UNUSABLE. */
static int check_file(const char *path, int json, int first, unsigned read_flags) {
  hm__allocator a = {NULL, NULL};
  hm__file f;
  hm__elf_info info;
  char why[256], msg[1024];
  int rc, nfound = 0;
  unsigned i;

  memset(&info, 0, sizeof info);
  msg[0] = '\0';
  rc = hm__file_read(&a, path, read_flags, &f, NULL);
  if (rc != 0) {
    snprintf(msg, sizeof msg, "%s", hm_errmsg());
  } else {
    why[0] = '\0';
    rc = hm__elf_check(f.buf, f.len, &info, why, sizeof why);
    if (rc != 0)
      snprintf(msg, sizeof msg, "%s: %s", path, why[0] ? why : hm_strerror(rc));
    else if ((rc = hm__desc_check(path, &info)) != 0)
      snprintf(msg, sizeof msg, "%s", hm_errmsg());
  }

  if (json) {
    fputs(first ? "[\n" : ",\n", stdout);
    fputs("  {\"file\": ", stdout);
    put_json(path);
    fputs(", \"error\": ", stdout);
    if (rc != 0) {
      put_json(msg);
      fputs(", \"code\": ", stdout);
      put_json(hm_err_name(rc));
    } else {
      fputs("null", stdout);
    }
    fputs(", \"findings\": [", stdout);
  } else if (rc != 0) {
    fprintf(stderr, "hotmod-check: %s (%s)\n", msg, hm_err_name(rc));
  }

  for (i = 0; rc == 0 && i < hm__lint_count(); i++) {
    unsigned bit = hm__lint_bit(i);
    char what[512];
    if (!(info.lint & bit))
      continue;
    hm__lint_what(&info, bit, what, sizeof what);
    if (json) {
      fputs(nfound ? ",\n    {\"name\": " : "\n    {\"name\": ", stdout);
      put_json(hm__lint_name(bit));
      fputs(", \"what\": ", stdout);
      put_json(what);
      fputs(", \"fix\": ", stdout);
      put_json(hm__lint_fix(bit));
      fputs("}", stdout);
    } else {
      put_text(path);
      printf(": %s: ", hm__lint_name(bit));
      put_text(what);
      fputs(" \xe2\x80\x94 ", stdout);
      put_text(hm__lint_fix(bit));
      putchar('\n');
    }
    nfound++;
  }
  if (json)
    fputs(nfound ? "\n  ]}" : "]}", stdout);

  /* The strings of `info` point into the bytes: release them only now. */
  hm__file_release(&a, &f);
  return rc != 0 ? EXIT_UNUSABLE : nfound ? EXIT_FINDINGS : 0;
}

/* ---- --verify --------------------------------------------------------------------------- */

/* The key in `path`, read under the trust rules of key files. 0, or EXIT_UNUSABLE. */
static int read_key(const char *path, hm__pubkey *key) {
  hm__allocator a = {NULL, NULL};
  char *text, why[256];
  size_t len;
  int rc = hm__keyfile_read(&a, path, &text, &len);
  if (rc != 0) {
    fprintf(stderr, "hotmod-check: %s (%s)\n", hm_errmsg(), hm_err_name(rc));
    return EXIT_UNUSABLE;
  }
  rc = hm__minisign_key(text, len, key, why, sizeof why);
  hm__free(&a, text);
  if (rc != 0) {
    fprintf(stderr, "hotmod-check: %s: %s (%s)\n", path, why, hm_err_name(rc));
    return EXIT_UNUSABLE;
  }
  return 0;
}

/* Is the signed file name (file: in the trusted comment) the module's, when it says one?
 * If not, the name it says into why[wn]. */
static int name_ok(const hm__minisig *ms, const char *path, const char *real, char *why,
                   size_t wn) {
  const char *file, *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  size_t n;
  if (hm__minisig_field(ms->comment, ms->comment_len, "file:", &file, &n) != 0 ||
      (n == strlen(base) && memcmp(file, base, n) == 0) ||
      (n == strlen(real) && memcmp(file, real, n) == 0))
    return 1;
  snprintf(why, wn, "name mismatch: it was signed as file:%.*s, but is %s",
           (int)(n < 255 ? n : 255), file, base);
  return 0;
}

/* Verify one file's build signature. Returns 0, EXIT_FINDINGS (refused) or EXIT_UNUSABLE. */
static int verify_file(const char *path, const hm__pubkey *key, unsigned read_flags) {
  hm__allocator a = {NULL, NULL};
  hm__file f;
  hm__minisig ms;
  hm__elf_info info;
  char why[512], id[17];
  int rc = hm__file_read(&a, path, read_flags | HM__READ_SIGNED, &f, NULL), status = 0;
  if (rc != 0) {
    fprintf(stderr, "hotmod-check: %s (%s)\n", hm_errmsg(), hm_err_name(rc));
    return EXIT_UNUSABLE;
  }
  if (f.sig.rc != 0) {
    snprintf(why, sizeof why, "no signature file %s.minisig beside it (%s)", f.sig.name,
             hm_strerror(f.sig.rc));
    status = EXIT_FINDINGS;
  } else if ((rc = hm__minisig_parse(f.sig.buf, f.sig.len, &ms, why, sizeof why)) != 0 ||
             (rc = hm__minisig_verify(&ms, key, 1, f.buf, f.len, why, sizeof why)) < 0) {
    status = rc == HM_EUNTRUSTED ? EXIT_FINDINGS : EXIT_UNUSABLE;
  } else if (!name_ok(&ms, path, f.sig.name, why, sizeof why)) {
    status = EXIT_FINDINGS;
  } else if (hm__elf_check(f.buf, f.len, &info, why, sizeof why) != 0) {
    status = EXIT_UNUSABLE;
  } else if (info.lint & (HM__LINT_NEEDED | HM__LINT_ORIGIN)) {
    unsigned bit = info.lint & HM__LINT_NEEDED ? HM__LINT_NEEDED : HM__LINT_ORIGIN;
    char what[400];
    hm__lint_what(&info, bit, what, sizeof what);
    snprintf(why, sizeof why, "%s (%s), code its signature does not cover", what,
             hm__lint_name(bit));
    status = EXIT_FINDINGS;
  }
  if (status == 0) {
    hm__key_id_hex(ms.key_id, id);
    put_text(path);
    printf(": signed by key %s: ", id);
    fwrite(ms.comment, 1, ms.comment_len, stdout); /* verified, and one line */
    putchar('\n');
  } else {
    fprintf(stderr, "hotmod-check: %s: %s%s\n", path,
            status == EXIT_FINDINGS ? "untrusted build: " : "", why);
  }
  hm__file_release(&a, &f);
  return status;
}

int main(int argc, char **argv) {
  int json = 0, status = 0, nfiles = 0, i, opts = 1;
  unsigned read_flags = 0;
  const char *keyfile = NULL;
  hm__pubkey key;
  for (i = 1; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
    } else if (opts && strcmp(argv[i], "--verify") == 0 && i + 1 < argc) {
      keyfile = argv[++i];
    } else if (opts && strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (opts && strcmp(argv[i], "--allow-writable") == 0) {
      read_flags |= HM__READ_ALLOW_WRITABLE;
    } else if (opts && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)) {
      usage(stdout);
      return 0;
    } else if (opts && argv[i][0] == '-' && argv[i][1] != '\0') {
      fprintf(stderr, "hotmod-check: unknown option %s\n", argv[i]);
      usage(stderr);
      return EXIT_UNUSABLE;
    } else {
      nfiles++;
    }
  }
  if (nfiles == 0 || (keyfile != NULL && json)) {
    if (keyfile != NULL && json)
      fprintf(stderr, "hotmod-check: --json does not apply to --verify\n");
    usage(stderr);
    return EXIT_UNUSABLE;
  }
  if (keyfile != NULL && (status = read_key(keyfile, &key)) != 0)
    return status;
  nfiles = 0;
  opts = 1;
  for (i = 1; i < argc; i++) {
    int rc;
    if (opts && argv[i][0] == '-' && argv[i][1] != '\0') {
      opts = strcmp(argv[i], "--") != 0;
      i += opts && strcmp(argv[i], "--verify") == 0; /* its KEYFILE */
      continue;
    }
    rc = keyfile != NULL ? verify_file(argv[i], &key, read_flags)
                         : check_file(argv[i], json, nfiles++ == 0, read_flags);
    if (rc > status)
      status = rc;
  }
  if (json)
    fputs("\n]\n", stdout);
  if (fflush(stdout) != 0) {
    perror("hotmod-check: writing the report");
    return EXIT_UNUSABLE;
  }
  return status;
}
