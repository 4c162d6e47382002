/* Rust modules: cdylibs built by rustc alone (tests/rust/, built by CMake). Rust's std leaves
 * destructors in a version's code for the threads that ran it: a pthread key's (the handle
 * of std::thread::current()) and thread_local! values' (Drop). A host thread that called a
 * version and exits after that version was unloaded would run the key's destructor in
 * unmapped code; so such versions stay mapped once retired, each reported once (LEAKED,
 * "kept because it left destructors behind", with the memory it keeps), and the lint says
 * "rust-std" once per module. #![no_std] modules have none of it. */
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int (*ifn)(void);

#ifdef HM_TEST_RUST

typedef hmt_events events;

static hm_registry *registry(events *e) { return hmt_registry_events(e, NULL); }

static const char *build(const char *module, int version) {
  char name[64];
  snprintf(name, sizeof name, "%s_v%d", module, version);
  return hmt_mod(name);
}

/* One of e's counters, read under its lock: the reclaimer's thread sends UNLOADED and
 * LEAKED. */
static int counted(events *e, const int *n) {
  int v;
  pthread_mutex_lock(&e->mu);
  v = *n;
  pthread_mutex_unlock(&e->mu);
  return v;
}

/* Warnings that name `finding` ("(name)"). */
static int warnings_naming(events *e, const char *finding) {
  char name[64];
  int i, n = 0;
  snprintf(name, sizeof name, "(%s)", finding);
  pthread_mutex_lock(&e->mu);
  for (i = 0; i < e->nwarn; i++)
    n += strstr(e->warn[i], name) != NULL;
  pthread_mutex_unlock(&e->mu);
  return n;
}

/* The size of the file behind a mapping of the registry's private directory whose file was
 * deleted (a kept version's copy), through /proc/self/map_files; -1 if there is none or
 * it cannot be read (that needs CAP_SYS_ADMIN on some kernels). */
static long long deleted_copy_size(const char *dir) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[4096];
  long long size = -1;
  assert_non_null(f);
  while (size < 0 && fgets(line, sizeof line, f) != NULL) {
    char range[64], link[128];
    struct stat st;
    if (strstr(line, dir) == NULL || strstr(line, "(deleted)") == NULL ||
        sscanf(line, "%63s", range) != 1)
      continue;
    snprintf(link, sizeof link, "/proc/self/map_files/%s", range);
    if (stat(link, &st) == 0)
      size = (long long)st.st_size;
  }
  fclose(f);
  return size;
}

/* ---- A host thread that calls three builds in turn, then exits ------------------------- */

/* The thread calls touch() once per step when told, and exits when told: in between, the
 * main thread reloads and waits until the version it replaced is gone from the registry. */
typedef struct caller {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  hm_live *live;
  int go;     /* steps the thread may run */
  int done;   /* steps it ran */
  int got[3]; /* what touch() returned at each step */
  int leave;  /* it may exit */
} caller;

static void *caller_main(void *arg) {
  caller *c = arg;
  pthread_mutex_lock(&c->mu);
  for (;;) {
    int v;
    while (c->go == c->done && !c->leave)
      pthread_cond_wait(&c->cv, &c->mu);
    if (c->go == c->done)
      break;
    pthread_mutex_unlock(&c->mu);
    v = HM_LIVE_CALL(c->live, ifn);
    pthread_mutex_lock(&c->mu);
    c->got[c->done++] = v;
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL; /* std's destructors for this thread run now, in every version it called */
}

static void caller_step(caller *c) {
  pthread_mutex_lock(&c->mu);
  c->go++;
  pthread_cond_broadcast(&c->cv);
  while (c->done != c->go)
    pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

/* Three builds of `module`, each called once by one host thread, which then exits. Before
 * versions that leave destructors behind were kept mapped, the thread's exit ran std's key
 * destructor in versions 1 and 2, unloaded by then: SIGSEGV, 3 of 3 runs (rust_current).
 * Now versions 1 and 2 are kept, each said once by a LEAKED event with its reason and
 * memory, and the lint warned once for the module, not once per load. */
static void three_builds_then_exit(const char *module) {
  events e;
  hm_registry *reg = registry(&e);
  hm_module *mod;
  hm_stats st;
  caller c;
  pthread_t t;
  char dir[4096];
  long long cut;
  int k;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.mu, NULL);
  pthread_cond_init(&c.cv, NULL);
  snprintf(dir, sizeof dir, "%s", hm_registry_dir(reg));
  assert_int_equal(hm_module_load(reg, "r", build(module, 1), &mod), 0);
  assert_int_equal(hm_live_get(reg, "r:touch", &c.live), 0);
  assert_int_equal(pthread_create(&t, NULL, caller_main, &c), 0);
  for (k = 1; k <= 3; k++) {
    caller_step(&c);
    assert_int_equal(c.got[k - 1], k);
    if (k < 3) {
      assert_int_equal(hm_module_reload_from(mod, build(module, k + 1)), 0);
      /* The version it replaced is no longer in use: the registry is done with it. */
      assert_true(hmt_wait_until(hmt_retired_zero, reg, 30));
    }
  }
  pthread_mutex_lock(&c.mu);
  c.leave = 1;
  pthread_cond_broadcast(&c.cv);
  pthread_mutex_unlock(&c.mu);
  assert_int_equal(pthread_join(t, NULL), 0);
  /* Not touch() on this thread: std would keep this thread's handle, never freed (the main
   * thread runs no key destructors), which valgrind reports. */
  assert_int_equal(hm_module_version(mod), 3);

  pthread_mutex_lock(&e.mu);
  assert_int_equal(e.nleaked, 2);
  assert_int_equal(e.nunloaded, 0);
  for (k = 0; k < 2; k++) {
    print_message("%s: LEAKED %s (%llu bytes)\n", module, e.leak[k], e.leak_bytes[k]);
    assert_int_equal(e.leak_why[k], HM_MAPPED_DESTRUCTORS);
    assert_true(strncmp(e.leak[k], "kept because it left destructors behind: ", 41) == 0);
    assert_non_null(strstr(e.leak[k], "(rust-std)"));
    assert_non_null(strstr(e.leak[k], "KiB stay mapped"));
    assert_true(e.leak_bytes[k] > 0);
  }
  pthread_mutex_unlock(&e.mu);
  assert_int_equal(hm_registry_stats(reg, &st), 0);
  assert_int_equal(st.leaked, 2);
  assert_int_equal(st.leaked_bytes, e.leak_bytes[0] + e.leak_bytes[1]);
  /* One finding, said once for the module, and not the two it replaces. */
  assert_int_equal(warnings_naming(&e, "rust-std"), 1);
  assert_int_equal(warnings_naming(&e, "pthread-keys"), 0);
  assert_int_equal(warnings_naming(&e, "thread-local-destructors"), 0);
  /* A kept version's copy is deleted, cut down to what its mapping uses: not the whole
   * file, whose debug sections are most of it. */
  cut = deleted_copy_size(dir);
  if (cut >= 0) {
    struct stat whole;
    assert_int_equal(stat(build(module, 1), &whole), 0);
    print_message("%s: kept copy %lld bytes of %lld\n", module, cut, (long long)whole.st_size);
    assert_true(cut < (long long)whole.st_size);
  }
  hmt_registry_events_free(reg, &e);
  /* The current version too, at the free. */
  assert_int_equal(e.nleaked, 3);
  pthread_cond_destroy(&c.cv);
  pthread_mutex_destroy(&c.mu);
}

static void t_thread_current_survives_reloads(void **state) {
  (void)state;
  three_builds_then_exit("rust_current");
}

static void t_thread_local_drop_survives_reloads(void **state) {
  (void)state;
  three_builds_then_exit("rust_tldrop");
}

/* ---- Plain and no_std modules, and the finding's policy --------------------------------- */

/* A Rust module that touches no thread state still has std's machinery: the same finding,
 * and its versions are kept all the same (nothing can tell whether its code reached it). */
static void t_plain_module(void **state) {
  events e;
  hm_registry *reg = registry(&e);
  hm_module *mod;
  hm_live *live;
  int k;
  (void)state;
  assert_int_equal(hm_module_load(reg, "r", build("rust_plain", 1), &mod), 0);
  assert_int_equal(hm_live_get(reg, "r:version", &live), 0);
  for (k = 2; k <= 3; k++) {
    assert_int_equal(hm_module_reload_from(mod, build("rust_plain", k)), 0);
    assert_int_equal(HM_LIVE_CALL(live, ifn), k);
  }
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 30));
  assert_int_equal(warnings_naming(&e, "rust-std"), 1);
  assert_int_equal(counted(&e, &e.nwarn), 1);
  assert_int_equal(counted(&e, &e.nleaked), 2);
  hmt_registry_events_free(reg, &e);
}

/* The host that knows no thread that runs the module's code exits early turns the finding
 * off: no warning, and versions unload. Per module, the finding can refuse the build. */
static void t_policy_off_unloads(void **state) {
  events e;
  hm_registry *reg = registry(&e);
  hm_module *mod;
  (void)state;
  assert_int_equal(hm_registry_set_lint_finding(reg, "rust-std", HM_LINT_OFF), 0);
  assert_int_equal(hm_module_load(reg, "r", build("rust_plain", 1), &mod), 0);
  assert_int_equal(hm_module_reload_from(mod, build("rust_plain", 2)), 0);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 30));
  assert_int_equal(counted(&e, &e.nwarn), 0);
  assert_int_equal(counted(&e, &e.nleaked), 0);
  assert_int_equal(counted(&e, &e.nunloaded), 1);
  /* This module refuses it; the version before serves on. */
  assert_int_equal(hm_module_set_lint_finding(mod, "rust-std", HM_LINT_REJECT), 0);
  assert_int_equal(hm_module_reload_from(mod, build("rust_plain", 3)), HM_ELINT);
  assert_non_null(strstr(hm_errmsg(), "(rust-std)"));
  assert_non_null(strstr(hm_errmsg(), "#![no_std]"));
  assert_int_equal(hm_module_version(mod), 2);
  hmt_registry_events_free(reg, &e);
}

/* #![no_std]: nothing for the lint, and versions unload as C modules' do. */
static void t_nostd_unloads(void **state) {
  events e;
  hm_registry *reg = registry(&e);
  hm_module *mod;
  hm_live *live;
  (void)state;
  assert_int_equal(hm_module_load(reg, "r", build("rust_nostd", 1), &mod), 0);
  assert_int_equal(hm_live_get(reg, "r:touch", &live), 0);
  assert_int_equal(HM_LIVE_CALL(live, ifn), 1);
  assert_int_equal(hm_module_reload_from(mod, build("rust_nostd", 2)), 0);
  assert_int_equal(HM_LIVE_CALL(live, ifn), 2);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 30));
  assert_int_equal(counted(&e, &e.nwarn), 0);
  assert_int_equal(counted(&e, &e.nleaked), 0);
  assert_int_equal(counted(&e, &e.nunloaded), 1);
  hmt_registry_events_free(reg, &e);
}

#else /* no rustc */

static void skip_without_rustc(void **state) {
  (void)state;
  print_message("rustc was not found when the tests were configured: Rust module tests "
                "skipped\n");
  skip();
}
#define t_thread_current_survives_reloads skip_without_rustc
#define t_thread_local_drop_survives_reloads skip_without_rustc
#define t_plain_module skip_without_rustc
#define t_policy_off_unloads skip_without_rustc
#define t_nostd_unloads skip_without_rustc

#endif

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_thread_current_survives_reloads),
      cmocka_unit_test(t_thread_local_drop_survives_reloads),
      cmocka_unit_test(t_plain_module),
      cmocka_unit_test(t_policy_off_unloads),
      cmocka_unit_test(t_nostd_unloads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
