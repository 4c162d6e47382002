/* The watcher against real toolchains writing the watched file: ld.bfd (Debian's default,
 * which truncates the output and reads its inputs for a long time before writing), gold
 * (which writes through a shared mapping, here with a 5 ms quiet period), lld and mold
 * (which rename a finished file into place), g++ with a C++ module, and `cmake --build` of a
 * hotmod_add_module() target with Make and Ninja. Every build ends with exactly one LOADED of
 * that complete build and no REJECTED. Also: a dependency that appears after the module (a
 * transient failure, retried), one that never does (reported once its retries run out), and
 * a post-link strip folded into one version by the settle delay.
 *
 * A toolchain that is not installed skips its test, saying so. */
#include "watchutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef HM_TEST_CC
#define HM_TEST_CC "cc"
#endif
#ifndef HM_TEST_CXX
#define HM_TEST_CXX "c++"
#endif

/* Builds per toolchain. Each is checked on its own: one LOADED, the right build, no
 * REJECTED. */
#define BUILDS 3

static int teardown(void **state) {
  wt_free(*state);
  return 0;
}

static int setup(void **state) {
  *state = wt_new(HM_RELOAD_DEFAULT, 0, 0);
  return 0;
}

/* A 5 ms quiet period: a watcher that guessed from timing took ld.bfd's empty output and
 * gold's unfinished mapping for finished files. With the kernel's facts it changes nothing
 * (only the timing fallback uses it). */
static int setup_quiet5(void **state) {
  *state = wt_new(HM_RELOAD_DEFAULT, 5, 0);
  return 0;
}

static int setup_queued(void **state) {
  *state = wt_new(HM_RELOAD_QUEUED, 0, 0);
  return 0;
}

static int setup_settle(void **state) {
  *state = wt_new(HM_RELOAD_DEFAULT, 0, 300);
  return 0;
}

static void write_text(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
}

static const char *tmp_path(wt *f, const char *name) { return hmt_path(f->tmp, name); }

/* wt_run with the command's standard output on /dev/null (cmake's progress lines). */
static int run_quiet(char *const argv[]) {
  int devnull = open("/dev/null", O_WRONLY), saved = dup(1), rc;
  dup2(devnull, 1);
  rc = wt_run(argv);
  dup2(saved, 1);
  close(saved);
  close(devnull);
  return rc;
}

static void run_or_fail(char *const argv[]) {
  if (wt_run(argv) != 0)
    fail_msg("%s failed", argv[0]);
}

/* ---- A large module: a few megabytes of data beside version() --------------------------- */

#define BLOB_SIZE (4600 * 1024)

/* Compile the blob once (an .incbin, so it costs nothing to compile); each build links it
 * with a small object that carries the version. Linking megabytes is what makes ld.bfd spend
 * a long time between truncating its output and writing it. */
static void make_blob(wt *f) {
  char asmfile[4200], bin[4200], obj[4200], text[8400];
  unsigned char *buf = malloc(BLOB_SIZE);
  uint32_t x = 12345;
  size_t i;
  assert_non_null(buf);
  for (i = 0; i < BLOB_SIZE; i++) {
    x = x * 1103515245u + 12345u;
    buf[i] = (unsigned char)(x >> 24);
  }
  snprintf(bin, sizeof bin, "%s", tmp_path(f, "blob.bin"));
  hmt_write(bin, buf, BLOB_SIZE);
  free(buf);
  snprintf(asmfile, sizeof asmfile, "%s", tmp_path(f, "blob.S"));
  snprintf(text, sizeof text,
           ".section .rodata.hmblob,\"a\"\n.globl hm_blob\n.type hm_blob,@object\n"
           "hm_blob:\n.incbin \"%s\"\n.size hm_blob,%d\n.section .note.GNU-stack,\"\",@progbits\n",
           bin, BLOB_SIZE);
  write_text(asmfile, text);
  snprintf(obj, sizeof obj, "%s", tmp_path(f, "blob.o"));
  {
    char *argv[] = {HM_TEST_CC, "-c", "-fPIC", "-o", obj, asmfile, NULL};
    run_or_fail(argv);
  }
  write_text(tmp_path(f, "big.c"), "extern const unsigned char hm_blob[];\n"
                                   "int version(void) { return VERSION; }\n"
                                   "int blob_at(int i) { return hm_blob[i]; }\n");
}

/* Link build `n` of the large module straight to `out` with -fuse-ld=`ld` (NULL: the
 * compiler's default). */
static void link_big(wt *f, const char *ld, int n, const char *out) {
  char def[32], fuse[32], src[4200], obj[4200];
  snprintf(def, sizeof def, "-DVERSION=%d", n);
  snprintf(fuse, sizeof fuse, "-fuse-ld=%s", ld ? ld : "bfd");
  snprintf(src, sizeof src, "%s", tmp_path(f, "big.c"));
  snprintf(obj, sizeof obj, "%s", tmp_path(f, "blob.o"));
  {
    char *argv[] = {HM_TEST_CC, "-shared", "-fPIC", "-O1", def, fuse, "-o", (char *)out,
                    src, obj, NULL};
    run_or_fail(argv);
  }
}

/* Load build 1 from the real toolchain, start the watcher, then BUILDS more builds, each
 * checked. `build` writes build n to the given path. */
typedef void (*build_fn)(wt *f, int n, const char *out, void *arg);

static void builds_each_load_once(wt *f, build_fn build, void *arg) {
  int n;
  build(f, 1, f->path, arg);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  assert_int_equal(hm_live_get(f->reg, "sq:version", &f->live), 0);
  wt_start(f);
  for (n = 2; n <= BUILDS + 1; n++) {
    unsigned before = hm_module_version(f->mod);
    int loads = wt_count(f, HM_EVENT_LOADED);
    build(f, n, f->path, arg);
    wt_expect_one_new(f, before, loads, n);
    if (wt_count(f, HM_EVENT_REJECTED) != 0) {
      pthread_mutex_lock(&f->log.mu);
      fail_msg("build %d: spurious REJECTED (%s)", n, f->log.last_reject);
    }
  }
}

static void big_with(wt *f, int n, const char *out, void *ld) {
  link_big(f, ld, n, out);
}

static void need_linker(const char *ld) {
  if (!wt_have_linker(HM_TEST_CC, ld)) {
    fprintf(stderr, "    %s cannot link with -fuse-ld=%s: skipped\n", HM_TEST_CC, ld);
    skip();
  }
}

/* The large module, 3 builds linked by `ld`, each one LOADED and no REJECTED. */
static void large_module_with(void **state, const char *ld) {
  wt *f = *state;
  need_linker(ld);
  make_blob(f);
  builds_each_load_once(f, big_with, (void *)ld);
}

static void t_bfd_large_module(void **state) { large_module_with(state, "bfd"); }

/* gold writes through a shared mapping; with a 5 ms quiet period a guess from timing loaded
 * half-written files. */
static void t_gold_large_module_quiet5(void **state) { large_module_with(state, "gold"); }

static void t_lld(void **state) { large_module_with(state, "lld"); }

static void t_mold(void **state) { large_module_with(state, "mold"); }

/* ---- C++ ------------------------------------------------------------------------------- */

static void cxx_build(wt *f, int n, const char *out, void *arg) {
  char def[32], src[4200];
  (void)arg;
  snprintf(def, sizeof def, "-DVERSION=%d", n);
  snprintf(src, sizeof src, "%s", tmp_path(f, "mod.cpp"));
  {
    char *argv[] = {HM_TEST_CXX, "-shared", "-fPIC", "-O1", "-fvisibility=hidden",
                    "-fvisibility-inlines-hidden", def, "-o", (char *)out, src, NULL};
    run_or_fail(argv);
  }
}

static void t_cxx_module(void **state) {
  wt *f = *state;
  char probe[] = HM_TEST_CXX;
  char *argv[] = {probe, "--version", NULL};
  int devnull = open("/dev/null", O_WRONLY), saved = dup(1), ok;
  dup2(devnull, 1);
  ok = wt_run(argv) == 0;
  dup2(saved, 1);
  close(saved);
  close(devnull);
  if (!ok) {
    fprintf(stderr, "    no C++ compiler: skipped\n");
    skip();
  }
  /* Enough of the standard library to make the link slow; no shared state, since the
   * watcher's thread and the test's call it at once. */
  write_text(tmp_path(f, "mod.cpp"),
             "#include <map>\n#include <string>\n#include <vector>\n"
             "extern \"C\" __attribute__((visibility(\"default\"))) int version(void) {\n"
             "  std::map<std::string, std::vector<int>> table;\n"
             "  table[\"v\"].push_back(VERSION);\n"
             "  return table[\"v\"].back();\n}\n");
  builds_each_load_once(f, cxx_build, NULL);
}

/* ---- cmake --build of a hotmod_add_module() target ------------------------------------- */

typedef struct cmake_proj {
  char src[4200], bin[4200];
} cmake_proj;

static void cmake_source(cmake_proj *p, int n) {
  char mod[4300], text[256];
  snprintf(mod, sizeof mod, "%s/mod.c", p->src);
  snprintf(text, sizeof text,
           "#include \"hotmod/module.h\"\nHM_MODULE_EXPORT int version(void) { return %d; }\n",
           n);
  write_text(mod, text);
}

static void cmake_build(wt *f, int n, const char *out, void *arg) {
  cmake_proj *p = arg;
  (void)out; /* the project's LIBRARY_OUTPUT_DIRECTORY is the watched directory */
  (void)f;
  cmake_source(p, n);
  {
    char *argv[] = {"cmake", "--build", p->bin, NULL};
    if (run_quiet(argv) != 0)
      fail_msg("cmake --build %s failed", p->bin);
  }
}

static void cmake_project(wt *f, const char *generator) {
  cmake_proj p;
  char lists[4300], text[8192];
  snprintf(p.src, sizeof p.src, "%s", tmp_path(f, "proj"));
  snprintf(p.bin, sizeof p.bin, "%s", tmp_path(f, "proj-build"));
  assert_int_equal(mkdir(p.src, 0700), 0);
  snprintf(lists, sizeof lists, "%s/CMakeLists.txt", p.src);
  snprintf(text, sizeof text,
           "cmake_minimum_required(VERSION 3.16)\nproject(m C)\n"
           "include(%s/cmake/HotmodModule.cmake)\n"
           "hotmod_add_module(sq mod.c)\n"
           "target_include_directories(sq PRIVATE %s/include)\n"
           "set_target_properties(sq PROPERTIES LIBRARY_OUTPUT_DIRECTORY %s)\n",
           HM_TEST_SRCDIR, HM_TEST_SRCDIR, f->src);
  write_text(lists, text);
  cmake_source(&p, 1);
  {
    char gen[64];
    char *argv[] = {"cmake", "-S", p.src, "-B", p.bin, "-G", gen, NULL};
    snprintf(gen, sizeof gen, "%s", generator);
    if (run_quiet(argv) != 0) {
      fprintf(stderr, "    cmake -G \"%s\" cannot configure: skipped\n", generator);
      skip();
    }
  }
  builds_each_load_once(f, cmake_build, &p);
}

static void t_cmake_make(void **state) { cmake_project(*state, "Unix Makefiles"); }

static void t_cmake_ninja(void **state) { cmake_project(*state, "Ninja"); }

/* ---- cmake --build of two modules in a group ------------------------------------------ */

/* Module b exports value(), of the type iface.h says; module a takes a typed handle on it
 * in its load hook (ctx->api) and answers 10 * value() + its build. Changing the type in
 * iface.h rebuilds both targets in one `cmake --build` (Make: a, then b); the watcher
 * applies them as one group. Apart, each would be refused. */
static void pair_sources(cmake_proj *p, const char *type, int n) {
  char path[4300], text[512];
  snprintf(path, sizeof path, "%s/iface.h", p->src);
  snprintf(text, sizeof text, "typedef %s value_t;\n#define VALUE_SIG \"%s(void)\"\n"
                              "#define BUILD %d\n", type, type, n);
  write_text(path, text);
}

static void pair_project(wt *f, cmake_proj *p) {
  char path[4300], text[8192];
  snprintf(p->src, sizeof p->src, "%s", tmp_path(f, "pair"));
  snprintf(p->bin, sizeof p->bin, "%s", tmp_path(f, "pair-build"));
  assert_int_equal(mkdir(p->src, 0700), 0);
  snprintf(path, sizeof path, "%s/b.c", p->src);
  write_text(path, "#include \"hotmod/module.h\"\n#include \"iface.h\"\n"
                   "HM_MODULE_EXPORT value_t value(void) { return BUILD; }\n"
                   "HM_MODULE_SIGNATURE(value, VALUE_SIG);\n");
  snprintf(path, sizeof path, "%s/a.c", p->src);
  write_text(path,
             "#include \"hotmod/module.h\"\n#include \"iface.h\"\n"
             "static const hm_module_api *api;\nstatic hm_live *b_value;\n"
             "HM_MODULE_EXPORT int entry(void) {\n"
             "  value_t v = ((value_t(*)(void))api->live_enter(b_value))();\n"
             "  api->live_leave(b_value);\n  return (int)v * 10 + BUILD;\n}\n"
             "static int load(const hm_load_ctx *ctx) {\n  api = ctx->api;\n"
             "  return api->live_get_typed(ctx->reg, \"b:value\", VALUE_SIG, &b_value) == 0 ? "
             "HM_LOAD_CONVERTED : -1;\n}\nHM_MODULE_DESCRIBE(0, NULL, load, NULL);\n");
  snprintf(path, sizeof path, "%s/CMakeLists.txt", p->src);
  snprintf(text, sizeof text,
           "cmake_minimum_required(VERSION 3.16)\nproject(pair C)\n"
           "include(%s/cmake/HotmodModule.cmake)\n"
           "hotmod_add_module(a a.c)\nhotmod_add_module(b b.c)\n"
           "foreach(t a b)\n  target_include_directories(${t} PRIVATE %s/include)\n"
           "  set_target_properties(${t} PROPERTIES LIBRARY_OUTPUT_DIRECTORY %s)\nendforeach()\n",
           HM_TEST_SRCDIR, HM_TEST_SRCDIR, f->src);
  write_text(path, text);
  pair_sources(p, "int", 1);
  {
    char *argv[] = {"cmake", "-S", p->src, "-B", p->bin, "-G", "Unix Makefiles", NULL};
    if (run_quiet(argv) != 0) {
      fprintf(stderr, "    cmake cannot configure: skipped\n");
      skip();
    }
  }
  cmake_build(f, 1, NULL, p);
}

static int pair_at(hm_module *a, hm_module *b, unsigned v) {
  return hm_module_version(a) == v && hm_module_version(b) == v;
}

typedef struct pair_wait {
  hm_module *a, *b;
} pair_wait;

static int pair_at_2(void *arg) {
  pair_wait *w = arg;
  return pair_at(w->a, w->b, 2);
}

static void cmake_group(wt *f, int queued) {
  cmake_proj p;
  pair_wait w;
  hm_live *entry;
  hm_stats st;
  char a_path[4300], b_path[4300];
  int polls = 0;
  pair_project(f, &p);
  snprintf(a_path, sizeof a_path, "%s/a.so", f->src);
  snprintf(b_path, sizeof b_path, "%s/b.so", f->src);
  assert_int_equal(hm_module_load(f->reg, "b", b_path, &w.b), 0);
  assert_int_equal(hm_module_load(f->reg, "a", a_path, &w.a), 0);
  assert_int_equal(hm_module_set_group(w.a, "pair"), 0);
  assert_int_equal(hm_module_set_group(w.b, "pair"), 0);
  assert_int_equal(hm_live_get(f->reg, "a:entry", &entry), 0);
  assert_int_equal(wt_live(entry), 11);
  wt_start(f);
  while (hm_module_watch_method(w.a) == 0 || hm_module_watch_method(w.b) == 0)
    wt_sleep_ms(1);
  pair_sources(&p, "long", 2);
  cmake_build(f, 2, NULL, &p);
  while (!pair_at_2(&w)) {
    /* Queued: the poll, on this thread, publishes both or neither. (Immediate: the
     * watcher's thread publishes them in one step, which this thread may see half done;
     * that neither was applied alone shows in the REJECTED count: alone, each is refused.) */
    if (queued) {
      int n = hm_registry_poll(f->reg);
      assert_true(n == 0 || n == 2);
      assert_int_equal(hm_module_version(w.a), hm_module_version(w.b));
    }
    assert_true(++polls < (int)(WT_DEADLINE * 1000));
    wt_sleep_ms(1);
  }
  assert_int_equal(wt_live(entry), 22);
  assert_int_equal(hm_registry_stats(f->reg, &st), 0);
  assert_int_equal(st.rejects, 0);
}

/* Long enough for Make to compile and link b after a on a loaded machine. */
static int setup_group(void **state) {
  *state = wt_new_group(HM_RELOAD_DEFAULT, 3000);
  return 0;
}

static int setup_group_queued(void **state) {
  *state = wt_new_group(HM_RELOAD_QUEUED, 3000);
  return 0;
}

static void t_cmake_group(void **state) { cmake_group(*state, 0); }

static void t_cmake_group_queued(void **state) { cmake_group(*state, 1); }

/* ---- Dependencies, post-link steps ----------------------------------------------------- */

/* Build a module that needs libhmdep.so, found through its RUNPATH in `rundir`; the library
 * itself is built into tmp/libbuild. */
static void build_with_dependency(wt *f, const char *rundir, const char *out) {
  char libdir[4200], lib[4300], libsrc[4200], modsrc[4200], rpath[4300], ldir[4300];
  snprintf(libdir, sizeof libdir, "%s", tmp_path(f, "libbuild"));
  mkdir(libdir, 0700);
  snprintf(lib, sizeof lib, "%s/libhmdep.so", libdir);
  snprintf(libsrc, sizeof libsrc, "%s", tmp_path(f, "dep.c"));
  snprintf(modsrc, sizeof modsrc, "%s", tmp_path(f, "needs.c"));
  write_text(libsrc, "int hmdep_value(void) { return 40; }\n");
  write_text(modsrc, "extern int hmdep_value(void);\n"
                     "int version(void) { return hmdep_value() + 2; }\n");
  {
    char *argv[] = {HM_TEST_CC, "-shared", "-fPIC", "-o", lib, libsrc, NULL};
    run_or_fail(argv);
  }
  snprintf(rpath, sizeof rpath, "-Wl,-rpath,%s", rundir);
  snprintf(ldir, sizeof ldir, "-L%s", libdir);
  {
    char *argv[] = {HM_TEST_CC, "-shared", "-fPIC", "-o", (char *)out, modsrc, ldir,
                    "-lhmdep", rpath, NULL};
    run_or_fail(argv);
  }
}

/* Load v1, watch it, then install at the module's path a build that needs libhmdep.so from
 * tmp/run, which has no such library yet. */
static void install_needing_dependency(wt *f) {
  char rundir[4200], built[4300];
  wt_load(f, hmt_mod("square_v1"));
  wt_start(f);
  snprintf(rundir, sizeof rundir, "%s", tmp_path(f, "run"));
  assert_int_equal(mkdir(rundir, 0700), 0);
  snprintf(built, sizeof built, "%s", tmp_path(f, "needs.so"));
  build_with_dependency(f, rundir, built);
  hmt_install(built, f->path);
}

/* The library the build needs arrives in tmp/run. */
static void install_dependency(wt *f) {
  char lib[4300], dest[4300];
  snprintf(lib, sizeof lib, "%s/libhmdep.so", tmp_path(f, "libbuild"));
  snprintf(dest, sizeof dest, "%s/libhmdep.so", tmp_path(f, "run"));
  hmt_install(lib, dest);
}

/* The module is finished before the library it needs: dlopen fails, which a later try may
 * not meet. It is retried quietly, and loads once the library is there, 300 ms later. */
static void t_dependency_appears_later(void **state) {
  wt *f = *state;
  unsigned before;
  int loads;
  install_needing_dependency(f);
  before = hm_module_version(f->mod); /* the build cannot load yet */
  loads = wt_count(f, HM_EVENT_LOADED);
  wt_sleep_ms(300);
  install_dependency(f);
  wt_wait_live(f->live, 42);
  wt_sync(f);
  assert_int_equal(hm_module_version(f->mod), before + 1);
  assert_int_equal(wt_count(f, HM_EVENT_LOADED), loads + 1);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 0);
}

/* The same in queued mode: hm_registry_poll meets the missing library, reports nothing, and
 * the watcher queues the build again once it has waited; a poll after the library appeared
 * applies it. */
static int poll_applies(void *arg) {
  wt *f = arg;
  return hm_registry_poll(f->reg) == 1;
}

static void t_queued_dependency_appears_later(void **state) {
  wt *f = *state;
  install_needing_dependency(f);
  wt_wait_count(f, HM_EVENT_CHANGED, 1);
  assert_int_equal(hm_registry_poll(f->reg), 0); /* dlopen fails: not yet */
  install_dependency(f);
  assert_true(hmt_wait_until(poll_applies, f, WT_DEADLINE));
  assert_int_equal(wt_live(f->live), 42);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 0);
}

/* A dependency that never comes: after the retries (0.1 + 0.2 + 0.4 + 0.8 + 1.6 s) one
 * REJECTED, with dlopen's reason; then nothing more until the file changes. */
static void t_dependency_never_appears(void **state) {
  wt *f = *state;
  install_needing_dependency(f);
  wt_wait_count(f, HM_EVENT_REJECTED, 1);
  pthread_mutex_lock(&f->log.mu);
  assert_int_equal(f->log.last_err, HM_EDLOPEN);
  assert_non_null(strstr(f->log.last_reject, "libhmdep.so"));
  pthread_mutex_unlock(&f->log.mu);
  wt_sleep_ms(500);
  wt_sync(f);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 1);
  assert_int_equal(wt_live(f->live), 1);
}

/* The linker writes the output, then strip rewrites it (a temporary file renamed over): two
 * finished files. With settle_ms, one version: the stripped one. */
static void t_strip_after_link_settles(void **state) {
  wt *f = *state;
  char src[4200], def[32];
  unsigned before;
  int loads;
  wt_load(f, hmt_mod("square_v1"));
  wt_start(f);
  before = hm_module_version(f->mod);
  loads = wt_count(f, HM_EVENT_LOADED);
  snprintf(src, sizeof src, "%s", tmp_path(f, "s.c"));
  write_text(src, "int version(void) { return VERSION; }\n");
  snprintf(def, sizeof def, "-DVERSION=%d", 9);
  {
    char *cc[] = {HM_TEST_CC, "-shared", "-fPIC", "-g", def, "-o", f->path, src, NULL};
    char *strip[] = {"strip", "--strip-all", f->path, NULL};
    run_or_fail(cc);
    run_or_fail(strip);
  }
  wt_expect_one_new(f, before, loads, 9);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 0);
  /* The version is the stripped file: its private copy has the same bytes. */
  {
    size_t len, clen;
    unsigned char *want = hmt_read(f->path, &len);
    char copy[4300];
    unsigned char *got;
    int found = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    assert_non_null(maps);
    while (!found && fgets(line, sizeof line, maps) != NULL) {
      char *p = strstr(line, hm_registry_dir(f->reg));
      if (p == NULL || strstr(p, "/sq.") == NULL)
        continue;
      p[strcspn(p, "\n")] = '\0';
      snprintf(copy, sizeof copy, "%s", p);
      got = hmt_read(copy, &clen);
      found = clen == len && memcmp(got, want, len) == 0;
      free(got);
    }
    fclose(maps);
    free(want);
    assert_true(found);
  }
}

#define T(name, s) cmocka_unit_test_setup_teardown(name, s, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(t_bfd_large_module, setup_quiet5),
      T(t_gold_large_module_quiet5, setup_quiet5),
      T(t_lld, setup_quiet5),
      T(t_mold, setup_quiet5),
      T(t_cxx_module, setup_quiet5),
      T(t_cmake_make, setup_quiet5),
      T(t_cmake_ninja, setup_quiet5),
      T(t_cmake_group, setup_group),
      T(t_cmake_group_queued, setup_group_queued),
      T(t_dependency_appears_later, setup),
      T(t_queued_dependency_appears_later, setup_queued),
      T(t_dependency_never_appears, setup),
      T(t_strip_after_link_settles, setup_settle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
