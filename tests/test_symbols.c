/* test_symbols.c: lookups by name in a loaded object's own tables (src/symbols.c), which
 * snapshots, live handles and the poll use instead of dlsym so that they never wait for the
 * dynamic loader's lock.
 *
 * The promise is exactness: whenever a lookup answers, its answer is the address dlsym gives
 * for the same handle and name, and where it cannot be sure it leaves the name to dlsym. Each
 * object below is opened with dlopen, and every name in its .dynsym (read here from the
 * section headers, independently of the tables the lookup uses) is asked both ways. The
 * objects: every test module, a module with one symbol of each kind (weak, thread-local,
 * indirect, protected, versioned; GNU and SysV hash tables), C++ modules (unique symbols),
 * Rust cdylibs when rustc is there, and system libraries with versions and indirect
 * functions (libm, libstdc++, libz, libuv). The common case must not need dlsym: every
 * plain function and object a test module exports is found by hand. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- An object opened both ways --------------------------------------------------------- */

typedef struct obj {
  char path[4096];
  unsigned char *buf; /* the file */
  size_t len;
  void *dl;
  hm__symtab t;
} obj;

static unsigned char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  long n;
  if (f == NULL)
    return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  buf = malloc((size_t)n);
  if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* Open `name` (a path, or a soname the loader finds) and set up its lookup as the loader
 * does. 0 if dlopen refuses it (the caller decides whether that matters). */
static int obj_open(obj *o, const char *name) {
  hm__elf_info info;
  struct link_map *lm = NULL;
  char why[256];
  memset(o, 0, sizeof *o);
  o->dl = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (o->dl == NULL)
    return 0;
  assert_int_equal(dlinfo(o->dl, RTLD_DI_LINKMAP, &lm), 0);
  snprintf(o->path, sizeof o->path, "%s", lm->l_name);
  o->buf = read_all(o->path, &o->len);
  if (o->buf == NULL)
    fail_msg("cannot read %s", o->path);
  if (hm__elf_check(o->buf, o->len, &info, why, sizeof why) != 0)
    fail_msg("%s: the ELF check refuses it: %s", o->path, why);
  hm__symtab_init(&o->t, &info, (uintptr_t)lm->l_addr, lm->l_ld);
  if (o->t.syms == NULL)
    fail_msg("%s: no lookup without dlsym set up", o->path);
  return 1;
}

static void obj_close(obj *o) {
  if (o->dl != NULL)
    dlclose(o->dl);
  free(o->buf);
  memset(o, 0, sizeof *o);
}

/* What a lookup by hand answers for `name`: its address, or NULL for "ask dlsym". */
static void *by_hand(const obj *o, const char *name) {
  void *p = NULL;
  return hm__symtab_find(&o->t, name, &p) == 1 ? p : NULL;
}

/* ---- .dynsym, read from the section headers -------------------------------------------- */

typedef struct counts {
  unsigned names;   /* named entries in .dynsym */
  unsigned by_hand; /* names the lookup answered, each equal to dlsym's address */
  unsigned plain;   /* global functions and objects defined here, unversioned */
  unsigned plain_by_hand;
  unsigned ifuncs, tls, weak, unique, versioned; /* defined ones of each kind */
} counts;

static void compare_all(const obj *o, counts *c) {
  ElfW(Ehdr) eh;
  ElfW(Shdr) dynsym, strtab, versym;
  int have_dynsym = 0, have_versym = 0;
  memset(c, 0, sizeof *c);
  memset(&dynsym, 0, sizeof dynsym);
  memset(&strtab, 0, sizeof strtab);
  memset(&versym, 0, sizeof versym);
  memcpy(&eh, o->buf, sizeof eh);
  assert_true(eh.e_shoff != 0 && eh.e_shoff + (size_t)eh.e_shnum * sizeof(ElfW(Shdr)) <= o->len);
  for (unsigned i = 0; i < eh.e_shnum; i++) {
    ElfW(Shdr) s;
    memcpy(&s, o->buf + eh.e_shoff + i * sizeof s, sizeof s);
    if (s.sh_type == SHT_DYNSYM) {
      dynsym = s;
      have_dynsym = 1;
      memcpy(&strtab, o->buf + eh.e_shoff + s.sh_link * sizeof s, sizeof s);
    } else if (s.sh_type == SHT_GNU_versym) {
      versym = s;
      have_versym = 1;
    }
  }
  assert_true(have_dynsym);
  for (size_t i = 1; i < dynsym.sh_size / sizeof(ElfW(Sym)); i++) {
    ElfW(Sym) s;
    ElfW(Versym) ver = VER_NDX_GLOBAL;
    const char *name;
    void *hand, *dl;
    unsigned type, bind;
    int defined;
    memcpy(&s, o->buf + dynsym.sh_offset + i * sizeof s, sizeof s);
    if (s.st_name == 0)
      continue;
    name = (const char *)o->buf + strtab.sh_offset + s.st_name;
    if (have_versym)
      memcpy(&ver, o->buf + versym.sh_offset + i * sizeof ver, sizeof ver);
    c->names++;
    type = ELF64_ST_TYPE(s.st_info);
    bind = ELF64_ST_BIND(s.st_info);
    defined = s.st_shndx != SHN_UNDEF && s.st_shndx != SHN_ABS;
    hand = by_hand(o, name);
    if (hand != NULL) {
      dl = dlsym(o->dl, name);
      if (hand != dl)
        fail_msg("%s: %s by hand is %p, dlsym says %p", o->path, name, hand, dl);
      c->by_hand++;
    }
    if (!defined)
      continue;
    c->ifuncs += type == STT_GNU_IFUNC;
    c->tls += type == STT_TLS;
    c->weak += bind == STB_WEAK;
    c->unique += bind == STB_GNU_UNIQUE;
    c->versioned += (ver & 0x7fff) > VER_NDX_GLOBAL;
    if (bind == STB_GLOBAL && (type == STT_FUNC || type == STT_OBJECT) &&
        (ver & 0x7fff) <= VER_NDX_GLOBAL && s.st_value != 0) {
      c->plain++;
      c->plain_by_hand += hand != NULL;
      if (hand == NULL)
        fail_msg("%s: %s, a plain exported %s, was left to dlsym", o->path, name,
                 type == STT_FUNC ? "function" : "object");
    }
  }
}

/* Compare every name of `name` (path or soname); 0 if dlopen refused it. */
static int compare_object(const char *name, counts *c) {
  obj o;
  if (!obj_open(&o, name))
    return 0;
  compare_all(&o, c);
  print_message("  %-60s %4u names, %4u by hand (%u plain), left to dlsym: %u ifunc, %u tls, "
                "%u weak, %u unique, %u versioned\n",
                strrchr(o.path, '/') ? strrchr(o.path, '/') + 1 : o.path, c->names, c->by_hand,
                c->plain, c->ifuncs, c->tls, c->weak, c->unique, c->versioned);
  obj_close(&o);
  return 1;
}

static const char *mod(const char *file) {
  static char path[4096];
  snprintf(path, sizeof path, "%s/%s", HM_TEST_MODDIR, file);
  return path;
}

/* ---- Tests ---------------------------------------------------------------------------- */

/* Every test module: whatever the lookup answers is dlsym's address, and every plain
 * function and object they export is answered (no loader lock for the common case). The
 * probe's crashing builds are not opened: their constructors crash or exit by design. */
static void t_every_test_module(void **state) {
  DIR *d = opendir(HM_TEST_MODDIR);
  struct dirent *e;
  unsigned opened = 0, plain = 0;
  (void)state;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    counts c;
    if (n < 4 || strcmp(e->d_name + n - 3, ".so") != 0 || strncmp(e->d_name, "probed_v2_", 10) == 0)
      continue;
    if (compare_object(mod(e->d_name), &c)) {
      opened++;
      plain += c.plain;
    } else {
      print_message("  %s: dlopen refused it here (%s)\n", e->d_name, dlerror());
    }
  }
  closedir(d);
  assert_true(opened >= 40);
  assert_true(plain >= 100);
}

/* One symbol of each kind, with each hash table style. */
static void each_kind(const char *file) {
  obj o;
  int (*f)(void);
  void *p;
  assert_true(obj_open(&o, mod(file)));
  /* Found by hand. */
  assert_non_null(by_hand(&o, "plain_fn"));
  assert_ptr_equal(by_hand(&o, "plain_fn"), dlsym(o.dl, "plain_fn"));
  assert_ptr_equal(by_hand(&o, "plain_data"), dlsym(o.dl, "plain_data"));
  assert_int_equal(*(int *)by_hand(&o, "plain_data"), 7);
  assert_string_equal((const char *)by_hand(&o, "plain_const"), "plain");
  assert_ptr_equal(by_hand(&o, "protected_fn"), dlsym(o.dl, "protected_fn"));
  assert_non_null(by_hand(&o, "xxxxybjz")); /* the 32-bit hash's bucket */
  assert_ptr_equal(by_hand(&o, "xxxxybjz"), dlsym(o.dl, "xxxxybjz"));
  p = by_hand(&o, "plain_fn");
  memcpy(&f, &p, sizeof p);
  assert_int_equal(f(), 1);
  /* Left to dlsym: weak (LD_DYNAMIC_WEAK), thread-local (this thread's copy), indirect (the
   * resolver's answer), none at all. */
  assert_null(by_hand(&o, "weak_fn"));
  assert_non_null(dlsym(o.dl, "weak_fn"));
  assert_null(by_hand(&o, "tls_var"));
  assert_int_equal(*(int *)dlsym(o.dl, "tls_var"), 5);
  assert_null(by_hand(&o, "ifunc_fn"));
  p = dlsym(o.dl, "ifunc_fn");
  memcpy(&f, &p, sizeof p);
  assert_int_equal(f(), 4);
  assert_null(by_hand(&o, "no_such_symbol"));
  assert_null(by_hand(&o, ""));
  /* Not defined here at all: the loader takes that as "no descriptor" (dlsym would look in
   * the libraries it needs). A reference to another library's symbol is not a definition,
   * in a SysV table (which hashes it) as in a GNU one (which does not). */
  assert_int_equal(hm__symtab_find(&o.t, "no_such_symbol", &p), -1);
  assert_int_equal(hm__symtab_find(&o.t, "__cxa_finalize", &p), -1);
  assert_int_equal(hm__symtab_find(&o.t, "weak_fn", &p), 0);
  obj_close(&o);
}

static void t_each_kind_gnu_hash(void **state) {
  counts c;
  (void)state;
  each_kind("symkinds_v1.so");
  assert_true(compare_object(mod("symkinds_v1.so"), &c));
  assert_int_equal(c.plain, 5); /* plain_fn, _data, _const, protected_fn, xxxxybjz */
  assert_int_equal(c.by_hand, 5);
}

static void t_each_kind_sysv_hash(void **state) {
  obj o;
  counts c;
  (void)state;
  assert_true(obj_open(&o, mod("symkinds_v1_sysv.so")));
  assert_int_equal(o.t.gnu, 0); /* the file really has only DT_HASH */
  obj_close(&o);
  each_kind("symkinds_v1_sysv.so");
  assert_true(compare_object(mod("symkinds_v1_sysv.so"), &c));
  assert_int_equal(c.by_hand, 5);
}

/* A name the object only imports is left to dlsym, which finds it in a library it needs. */
static void t_needed_library_left_to_dlsym(void **state) {
  obj o;
  void *m = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
  (void)state;
  assert_non_null(m);
  assert_true(obj_open(&o, mod("square_v2.so"))); /* sqrt() */
  assert_int_equal(hm__symtab_find(&o.t, "sqrt", &(void *){NULL}), -1);
  assert_non_null(dlsym(o.dl, "sqrt"));
  assert_ptr_equal(dlsym(o.dl, "sqrt"), dlsym(m, "sqrt"));
  obj_close(&o);
  dlclose(m);
}

/* Versioned symbols go to dlsym, which picks the default version (@@) of the two. */
static void t_versions_left_to_dlsym(void **state) {
  obj o;
  counts c;
  int (*f)(void);
  void *p;
  (void)state;
  assert_true(obj_open(&o, mod("symkinds_v1_versioned.so")));
  assert_null(by_hand(&o, "versioned_fn"));
  assert_null(by_hand(&o, "plain_fn")); /* HM_SYM_1, not "global" */
  p = dlsym(o.dl, "versioned_fn");
  memcpy(&f, &p, sizeof p);
  assert_int_equal(f(), 11);
  obj_close(&o);
  assert_true(compare_object(mod("symkinds_v1_versioned.so"), &c));
  assert_int_equal(c.by_hand, 0);
  assert_true(c.versioned >= 8);
}

/* C++: g++'s unique symbols (inline statics) go to dlsym, whose unique table may hold
 * another object's definition; extern "C" functions are found by hand. */
static void t_cxx_modules(void **state) {
  counts c;
  (void)state;
  if (compare_object(mod("lint_unique.so"), &c))
    assert_true(c.unique > 0);
  if (compare_object(mod("thrower_v1.so"), &c))
    assert_int_equal(c.plain_by_hand, c.plain);
}

/* A Rust cdylib: its #[no_mangle] exports are plain (rustc's version script is anonymous). */
static void t_rust_module(void **state) {
  (void)state;
#ifndef HM_TEST_RUST
  skip();
#else
  counts c;
  obj o;
  assert_true(obj_open(&o, mod("rust_plain_v2.so")));
  assert_non_null(by_hand(&o, "version"));
  assert_non_null(by_hand(&o, "touch"));
  assert_ptr_equal(by_hand(&o, "version"), dlsym(o.dl, "version"));
  {
    int (*f)(void);
    void *p = by_hand(&o, "version");
    memcpy(&f, &p, sizeof p);
    assert_int_equal(f(), 2);
  }
  obj_close(&o);
  assert_true(compare_object(mod("rust_plain_v2.so"), &c));
  assert_int_equal(c.plain_by_hand, c.plain);
  assert_true(c.plain >= 2);
#endif
}

/* System libraries: symbol versions everywhere, indirect functions (libm), unique and weak
 * symbols (libstdc++). Every answer must be dlsym's. */
static void t_system_libraries(void **state) {
  static const char *libs[] = {"libm.so.6", "libstdc++.so.6", "libz.so.1", "libuv.so.1",
                               "libc.so.6"};
  unsigned opened = 0, ifuncs = 0, versioned = 0;
  (void)state;
  for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
    counts c;
    if (compare_object(libs[i], &c)) {
      opened++;
      ifuncs += c.ifuncs;
      versioned += c.versioned;
    }
  }
  assert_true(opened >= 2);
  assert_true(ifuncs > 0);
  assert_true(versioned > 0);
}

/* Tables that loop or run off their end (as a crafted object's relocations could make
 * them in memory) end the lookup with "ask dlsym", never a read outside them. */
static void t_bad_chains_stop(void **state) {
  ElfW(Sym) syms[3];
  Elf_Symndx sysv[1 + 3];     /* bucket, then chains */
  uint32_t gnu[1 + 2];        /* bucket, then the hash values of symbols 1 and 2 */
  const char strtab[] = "\0a\0b";
  hm__symtab t;
  void *p = NULL;
  (void)state;
  memset(syms, 0, sizeof syms);
  for (int i = 1; i < 3; i++) {
    syms[i].st_name = (Elf32_Word)(2 * i - 1); /* "a", "b" */
    syms[i].st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
    syms[i].st_shndx = 1;
    syms[i].st_value = 0x1000u * (unsigned)i;
  }
  memset(&t, 0, sizeof t);
  t.syms = (const unsigned char *)syms;
  t.strtab = strtab;
  t.strsz = sizeof strtab;
  t.nsyms = 3;
  t.nbuckets = 1;
  t.bias = 0x10000;
  /* SysV: bucket -> 1, and 1's chain points back at itself. */
  sysv[0] = 1;
  sysv[1] = 0;
  sysv[2] = 1;
  sysv[3] = 0;
  t.buckets = (const unsigned char *)sysv;
  t.chains = (const unsigned char *)&sysv[1];
  assert_int_equal(hm__symtab_find(&t, "b", &p), 0); /* loops: cut at nsyms steps */
  assert_int_equal(hm__symtab_find(&t, "a", &p), 0); /* "a" twice: not trusted */
  sysv[2] = 2;                                        /* 1 -> 2 -> end: sound again */
  assert_int_equal(hm__symtab_find(&t, "a", &p), 1);
  assert_ptr_equal(p, (void *)0x11000);
  assert_int_equal(hm__symtab_find(&t, "b", &p), 1);
  assert_ptr_equal(p, (void *)0x12000);
  /* GNU: bucket -> 1, hash values with no end bit: the chain runs off the table. */
  t.gnu = 1;
  t.symoffset = 1;
  gnu[0] = 1;
  gnu[1] = 0x2b5a8u & ~1u; /* any value without the end bit */
  gnu[2] = 0x2b5aau & ~1u;
  t.buckets = (const unsigned char *)gnu;
  t.chains = (const unsigned char *)&gnu[1];
  assert_int_equal(hm__symtab_find(&t, "b", &p), 0);
  /* A bucket below symoffset is refused too; an empty one means "no such name". */
  t.symoffset = 2;
  assert_int_equal(hm__symtab_find(&t, "a", &p), 0);
  gnu[0] = 0;
  assert_int_equal(hm__symtab_find(&t, "a", &p), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_every_test_module),    cmocka_unit_test(t_each_kind_gnu_hash),
      cmocka_unit_test(t_each_kind_sysv_hash),  cmocka_unit_test(t_needed_library_left_to_dlsym),
      cmocka_unit_test(t_versions_left_to_dlsym),
      cmocka_unit_test(t_cxx_modules),          cmocka_unit_test(t_rust_module),
      cmocka_unit_test(t_system_libraries),     cmocka_unit_test(t_bad_chains_stop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
