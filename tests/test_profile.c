/* Debugging and profiling across reloads: the split debug file a build's .gnu_debuglink names
 * goes with its version (copied beside the private copy, the version's own, removed with it
 * and by the sweep), and profiling mode (HM_FLAG_PROFILE, HOTMOD_PROFILE=1) keeps every
 * version mapped and its copy on disk, within a cap, after the registry. The tools
 * themselves (perf, gdb, LSan, valgrind) run in tests/profile_tools.sh. */
#include "util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Split build `mod` (a test module's name) into dir/name and dir/name.debug as a user
 * would: the debug file beside the stripped module, which names it. */
static void split(const char *mod, const char *dir, const char *name) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && cp '%s' '%s' && '%s' --only-keep-debug '%s' '%s.debug' && "
           "'%s' --strip-debug --add-gnu-debuglink='%s.debug' '%s'",
           dir, hmt_mod(mod), name, HM_TEST_OBJCOPY, name, name, HM_TEST_OBJCOPY, name, name);
  assert_int_equal(system(cmd), 0);
}

static int same_bytes(const char *a, const char *b) {
  size_t na, nb;
  unsigned char *x = hmt_read(a, &na), *y = hmt_read(b, &nb);
  int same = x != NULL && y != NULL && na == nb && memcmp(x, y, na) == 0;
  free(x);
  free(y);
  return same;
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static int gone(void *path) { return !exists(path); }

/* The debug file is copied beside the version's copy, in a directory of the version's own;
 * the next build's debug file, written over the first one's, goes with the next version and
 * leaves the loaded one's alone; both go with their versions. */
static void t_debug_file_goes_with_its_version(void **state) {
  char *src = hmt_tmpdir(), *next = hmt_tmpdir(), d1[4096], d2[4096], d3[4096];
  unsigned char *v1debug, *back;
  size_t v1len, backlen;
  hm_registry *reg = hmt_registry(0);
  hm_module *mod;
  hm_snapshot *snap;
  (void)state;
  split("square_v1", src, "sq.so");
  split("square_v2", next, "sq.so");
  assert_int_equal(hm_module_load(reg, "sq", hmt_path(src, "sq.so"), &mod), 0);
  snprintf(d1, sizeof d1, "%s/sq.1.d", hm_registry_dir(reg));
  assert_true(exists(hmt_path(d1, "sq.1.so")));
  assert_true(same_bytes(hmt_path(d1, "sq.so.debug"), hmt_path(src, "sq.so.debug")));
  assert_true(hmt_maps_count("/sq.1.d/sq.1.so") > 0);
  assert_int_equal(hm_snapshot_acquire(reg, "sq:my_function", &snap), 0);
  /* The next build, as a build writes it: the debug file first, then the module. */
  hmt_install(hmt_path(next, "sq.so.debug"), hmt_path(src, "sq.so.debug"));
  hmt_install(hmt_path(next, "sq.so"), hmt_path(src, "sq.so"));
  assert_int_equal(hm_module_reload(mod), 0);
  snprintf(d2, sizeof d2, "%s/sq.2.d", hm_registry_dir(reg));
  assert_true(same_bytes(hmt_path(d2, "sq.so.debug"), hmt_path(next, "sq.so.debug")));
  /* Version 1 keeps its own. */
  assert_false(same_bytes(hmt_path(d1, "sq.so.debug"), hmt_path(next, "sq.so.debug")));
  assert_true(exists(hmt_path(d1, "sq.so.debug")));
  hm_snapshot_release(snap);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 10));
  /* Version 1's copy is the one kept for rollback, with its debug file: a rollback loads
   * it again, and takes the debug file from beside it. */
  assert_true(exists(hmt_path(d1, "sq.so.debug")));
  v1debug = hmt_read(hmt_path(d1, "sq.so.debug"), &v1len);
  assert_int_equal(hm_module_rollback(mod), 0);
  snprintf(d3, sizeof d3, "%s/sq.3.d", hm_registry_dir(reg));
  back = hmt_read(hmt_path(d3, "sq.so.debug"), &backlen);
  assert_non_null(back);
  assert_int_equal(backlen, v1len);
  assert_memory_equal(back, v1debug, v1len);
  free(back);
  free(v1debug);
  /* The others go, each with its directory. */
  assert_true(hmt_wait_until(gone, d1, 10));
  assert_true(hmt_wait_until(gone, d2, 10));
  hm_registry_free(reg);
  assert_false(exists(d3));
  hmt_rm_rf(src);
  hmt_rm_rf(next);
  free(src);
  free(next);
}

/* A debug file of another build (its CRC differs: the next build wrote it already) is not
 * copied, and the build loads all the same. One in .debug/ beside the build is found. */
static void t_debug_file_checked_and_looked_for(void **state) {
  char *src = hmt_tmpdir(), *other = hmt_tmpdir(), dot[4096];
  hm_registry *reg = hmt_registry(0);
  hm_module *mod;
  const char *d = NULL;
  (void)state;
  split("square_v1", src, "sq.so");
  split("square_v2", other, "sq.so");
  hmt_install(hmt_path(other, "sq.so.debug"), hmt_path(src, "sq.so.debug"));
  assert_int_equal(hm_module_load(reg, "sq", hmt_path(src, "sq.so"), &mod), 0);
  d = hmt_path(hm_registry_dir(reg), "sq.1.d");
  assert_true(exists(hmt_path(d, "sq.1.so")));
  assert_false(exists(hmt_path(d, "sq.so.debug")));
  /* Now the right one, in .debug/ (and a stale one beside the build, looked at first). */
  split("square_v1", src, "sq.so");
  snprintf(dot, sizeof dot, "%s/.debug", src);
  assert_int_equal(mkdir(dot, 0700), 0);
  assert_int_equal(rename(hmt_path(src, "sq.so.debug"), hmt_path(dot, "sq.so.debug")), 0);
  hmt_install(hmt_path(other, "sq.so.debug"), hmt_path(src, "sq.so.debug"));
  assert_int_equal(hm_module_reload(mod), 0);
  d = hmt_path(hm_registry_dir(reg), "sq.2.d");
  assert_true(same_bytes(hmt_path(d, "sq.so.debug"), hmt_path(dot, "sq.so.debug")));
  hm_registry_free(reg);
  hmt_rm_rf(src);
  hmt_rm_rf(other);
  free(src);
  free(other);
}

/* A build without a debuglink is copied as before: no directory of its own. */
static void t_plain_build_has_no_directory(void **state) {
  hm_registry *reg = hmt_registry(0);
  (void)state;
  assert_int_equal(hm_module_load(reg, "sq", hmt_mod("square_v1"), NULL), 0);
  assert_true(exists(hmt_path(hm_registry_dir(reg), "sq.1.so")));
  assert_false(exists(hmt_path(hm_registry_dir(reg), "sq.1.d")));
  hm_registry_free(reg);
}

/* A registry killed with a split build loaded leaves its copy's directory; the next
 * registry's sweep removes it with the rest. */
static void t_sweep_removes_copy_directories(void **state) {
  char *root = hmt_tmpdir(), *src = hmt_tmpdir(), dir[4096];
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  int fds[2], status;
  pid_t pid;
  (void)state;
  split("square_v1", src, "sq.so");
  o.flags = HM_FLAG_QUIET;
  o.private_root = root;
  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    hm_registry *r;
    if (hm_registry_new(&r, &o) != 0 || hm_module_load(r, "sq", hmt_path(src, "sq.so"), NULL)) {
      fprintf(stderr, "child: %s\n", hm_errmsg());
      _exit(1);
    }
    if (write(fds[1], hm_registry_dir(r), strlen(hm_registry_dir(r)) + 1) < 0)
      _exit(1);
    pause(); /* killed, with nothing freed */
    _exit(1);
  }
  close(fds[1]);
  memset(dir, 0, sizeof dir);
  assert_true(read(fds[0], dir, sizeof dir - 1) > 0);
  close(fds[0]);
  kill(pid, SIGKILL);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_true(exists(hmt_path(dir, "sq.1.d/sq.so.debug")));
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  assert_false(exists(dir));
  hm_registry_free(reg);
  hmt_rm_rf(root);
  hmt_rm_rf(src);
  free(root);
  free(src);
}

/* What the event callback says about the versions profiling mode keeps. */
typedef struct prof_events {
  pthread_mutex_t mu;
  int unloaded, kept, leaked;
  unsigned long long bytes;
  char detail[512];
} prof_events;

static void on_prof_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  prof_events *e = ud;
  int why = 0;
  unsigned long long bytes = 0;
  (void)mod;
  (void)version;
  (void)err;
  pthread_mutex_lock(&e->mu);
  if (ev == HM_EVENT_UNLOADED) {
    e->unloaded++;
    if (hm_event_mapped(&why, &bytes) == 0 && why == HM_MAPPED_PROFILING) {
      e->kept++;
      e->bytes = bytes;
      snprintf(e->detail, sizeof e->detail, "%s", hm_event_detail());
    }
  }
  if (ev == HM_EVENT_LEAKED)
    e->leaked++;
  pthread_mutex_unlock(&e->mu);
}

static hm_registry *prof_registry(prof_events *e, const char *root, unsigned flags) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  memset(e, 0, sizeof *e);
  pthread_mutex_init(&e->mu, NULL);
  o.flags = flags | HM_FLAG_QUIET;
  o.private_root = root;
  o.on_event = on_prof_event;
  o.event_userdata = e;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  return reg;
}

/* Every version that became current stays mapped after its unload, reported as kept for
 * profiling (not leaked), and its copy stays after the registry, on disk; a build that was
 * refused does not stay. */
static void t_profile_keeps_every_version(void **state) {
  char *root = hmt_tmpdir(), dir[4096];
  prof_events e;
  hm_registry *reg = prof_registry(&e, root, HM_FLAG_PROFILE);
  hm_module *mod;
  hm_live *live;
  hm_stats st;
  (void)state;
  snprintf(dir, sizeof dir, "%s", hm_registry_dir(reg));
  assert_non_null(strstr(dir, "/hotmod-prof-"));
  assert_int_equal(hm_module_load(reg, "pk", hmt_mod("square_v1"), &mod), 0);
  assert_int_equal(hm_live_get(reg, "pk:bonus", &live), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("square_v2")), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("square_v3")), HM_ENOSYM); /* refused */
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("square_v1")), 0);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 10));
  assert_int_equal(hm_registry_stats(reg, &st), 0);
  assert_int_equal(st.leaked, 0);
  assert_int_equal(st.unloads, 2);
  pthread_mutex_lock(&e.mu);
  assert_int_equal(e.kept, 2);
  assert_int_equal(e.leaked, 0);
  assert_true(e.bytes > 0);
  assert_non_null(strstr(e.detail, "kept for profiling"));
  pthread_mutex_unlock(&e.mu);
  assert_true(hmt_maps_count("/pk.1.so") > 0);
  assert_true(hmt_maps_count("/pk.2.so") > 0);
  assert_int_equal(hmt_maps_count("/pk.3.so"), 0); /* the refused build */
  assert_false(exists(hmt_path(dir, "pk.3.so")));
  hm_registry_free(reg);
  pthread_mutex_destroy(&e.mu);
  /* After the registry: mapped still, the copies where profilers read them. */
  assert_true(hmt_maps_count("/pk.4.so") > 0);
  assert_true(exists(hmt_path(dir, "pk.1.so")));
  assert_true(exists(hmt_path(dir, "pk.2.so")));
  assert_true(exists(hmt_path(dir, "pk.4.so")));
  hmt_rm_rf(root);
  free(root);
}

/* HOTMOD_PROFILE=1 turns it on for a registry whose code did not: the directory is on disk
 * in the user's cache ($XDG_CACHE_HOME/hotmod), 0700. */
static void t_profile_from_the_environment(void **state) {
  char *cache = hmt_tmpdir(), want[4096];
  hm_registry *reg;
  struct stat st;
  (void)state;
  setenv("XDG_CACHE_HOME", cache, 1);
  setenv("HOTMOD_PROFILE", "1", 1);
  reg = hmt_registry(0);
  unsetenv("HOTMOD_PROFILE");
  unsetenv("XDG_CACHE_HOME");
  snprintf(want, sizeof want, "%s/hotmod/hotmod-prof-", cache);
  assert_memory_equal(hm_registry_dir(reg), want, strlen(want));
  assert_int_equal(stat(hm_registry_dir(reg), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  assert_int_equal(stat(hmt_path(cache, "hotmod"), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  hm_registry_free(reg);
  /* Without it, nothing lingers: the default directory goes with its registry. */
  reg = hmt_registry(0);
  snprintf(want, sizeof want, "%s", hm_registry_dir(reg));
  assert_null(strstr(want, "hotmod-prof-"));
  hm_registry_free(reg);
  assert_false(exists(want));
  hmt_rm_rf(cache);
  free(cache);
}

/* Past the cap (HOTMOD_PROFILE_MAX_MB), the oldest copies of unloaded versions go first. */
static void t_profile_cap_oldest_first(void **state) {
  char *root = hmt_tmpdir(), dir[4096], name[64];
  prof_events e;
  hm_registry *reg;
  hm_module *mod;
  size_t len;
  unsigned char *bytes = hmt_read(hmt_mod("square_v1"), &len);
  long i, n, fit;
  (void)state;
  free(bytes);
  setenv("HOTMOD_PROFILE_MAX_MB", "1", 1);
  reg = prof_registry(&e, root, HM_FLAG_PROFILE);
  unsetenv("HOTMOD_PROFILE_MAX_MB");
  snprintf(dir, sizeof dir, "%s", hm_registry_dir(reg));
  fit = (1L << 20) / (long)len;
  n = fit + 20;
  assert_int_equal(hm_module_load(reg, "pc", hmt_mod("square_v1"), &mod), 0);
  for (i = 0; i < n; i++)
    assert_int_equal(hm_module_reload_from(mod, hmt_mod(i % 2 ? "square_v1" : "square_v2")), 0);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 10));
  /* The current version's copy, and as many unloaded ones as fit in 1 MiB (the two builds
   * differ by a few bytes): the newest. */
  assert_in_range(hmt_count_files(dir), fit - 1, fit + 2);
  assert_false(exists(hmt_path(dir, "pc.1.so")));
  assert_false(exists(hmt_path(dir, "pc.20.so")));
  snprintf(name, sizeof name, "pc.%ld.so", n);
  assert_true(exists(hmt_path(dir, name)));
  snprintf(name, sizeof name, "pc.%ld.so", n + 1);
  assert_true(exists(hmt_path(dir, name)));
  hm_registry_free(reg);
  pthread_mutex_destroy(&e.mu);
  hmt_rm_rf(root);
  free(root);
}

/* A later registry removes a profiling directory only once no registry holds it and nothing
 * changed it for a minute (perf record reads the copies just after the host exits). */
static void t_profile_directory_swept_when_idle(void **state) {
  char *root = hmt_tmpdir(), left[4096], held[4096];
  prof_events e;
  hm_registry *reg = prof_registry(&e, root, HM_FLAG_PROFILE), *live, *later;
  struct timespec old[2];
  (void)state;
  assert_int_equal(hm_module_load(reg, "ps", hmt_mod("square_v1"), NULL), 0);
  snprintf(left, sizeof left, "%s", hm_registry_dir(reg));
  hm_registry_free(reg);
  pthread_mutex_destroy(&e.mu);
  live = prof_registry(&e, root, HM_FLAG_PROFILE);
  snprintf(held, sizeof held, "%s", hm_registry_dir(live));
  later = hmt_registry(0);
  hm_registry_free(later);
  assert_true(exists(hmt_path(left, "ps.1.so"))); /* left just now */
  /* Two minutes later, as far as the sweep can tell. */
  clock_gettime(CLOCK_REALTIME, &old[0]);
  old[0].tv_sec -= 120;
  old[1] = old[0];
  assert_int_equal(utimensat(AT_FDCWD, left, old, 0), 0);
  assert_int_equal(utimensat(AT_FDCWD, held, old, 0), 0);
  {
    hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
    o.flags = HM_FLAG_QUIET;
    o.private_root = root;
    assert_int_equal(hm_registry_new(&later, &o), 0);
  }
  assert_false(exists(left));
  assert_true(exists(held)); /* its registry still holds it */
  hm_registry_free(later);
  hm_registry_free(live);
  pthread_mutex_destroy(&e.mu);
  hmt_rm_rf(root);
  free(root);
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_debug_file_goes_with_its_version),
      cmocka_unit_test(t_debug_file_checked_and_looked_for),
      cmocka_unit_test(t_plain_build_has_no_directory),
      cmocka_unit_test(t_sweep_removes_copy_directories),
      cmocka_unit_test(t_profile_keeps_every_version),
      cmocka_unit_test(t_profile_from_the_environment),
      cmocka_unit_test(t_profile_cap_oldest_first),
      cmocka_unit_test(t_profile_directory_swept_when_idle),
  };
  if (argc > 1)
    cmocka_set_test_filter(argv[1]); /* one test, e.g. under valgrind */
  return cmocka_run_group_tests(tests, NULL, NULL);
}
