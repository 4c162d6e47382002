/* fork(): the child may keep calling what registries made before the fork have loaded, may
 * not change or reclaim anything through them (HM_EFORKED), and gets fully working
 * registries of its own, whose grace periods are not held up by the parent's threads that
 * were inside live calls at the fork. The parent carries on as if nothing happened. */
#include "util.h"
#include "watchutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef int (*ifn)(void);
typedef int (*host_cb)(void *arg);
typedef int (*through_fn)(host_cb cb, void *arg);

typedef struct gate {
  int inside;  /* atomic: the blocked caller is inside the module */
  int release; /* atomic: let it return */
} gate;

static int wait_at_gate(void *arg) {
  gate *g = arg;
  struct timespec ms = {0, 1000000};
  __atomic_store_n(&g->inside, 1, __ATOMIC_SEQ_CST);
  while (!__atomic_load_n(&g->release, __ATOMIC_SEQ_CST))
    nanosleep(&ms, NULL);
  return 7;
}

typedef struct blocked {
  hm_live *live;
  gate g;
  int result;
} blocked;

static void *blocked_caller(void *arg) {
  blocked *b = arg;
  b->result = HM_LIVE_CALL(b->live, through_fn, wait_at_gate, &b->g);
  return NULL;
}

static int retired_zero(void *arg) {
  hm_stats st;
  return hm_registry_stats(arg, &st) == 0 && st.retired == 0;
}

/* The child's checks; returns the number of the first that failed, 0 if all passed. */
static int child_checks(hm_registry *reg, hm_live *sq_live, hm_snapshot *sq_snap,
                        const char *dir) {
  hm_module *sq = NULL, *m2 = NULL;
  hm_live *l = NULL, *l2 = NULL;
  hm_snapshot *s = NULL;
  hm_registry *r2 = NULL;
  char path[4096];

  /* What the parent loaded stays callable. */
  if (HM_LIVE_CALL(sq_live, ifn) != 1)
    return 1;
  if (((ifn)hm_snapshot_fn(sq_snap))() != 1)
    return 2;
  if (hm_snapshot_acquire(reg, "sq:version", &s) != 0 || ((ifn)hm_snapshot_fn(s))() != 1)
    return 3;
  hm_snapshot_release(s);
  if (hm_live_get(reg, "sq:version", &l) != 0 || l != sq_live)
    return 4;
  if (hm_module_find(reg, "sq", &sq) != 0)
    return 5;
  /* Nothing may change through it. */
  if (hm_module_reload(sq) != HM_EFORKED || hm_module_unload(sq) != HM_EFORKED)
    return 6;
  if (hm_module_load(reg, "x", hmt_mod("square_v2"), NULL) != HM_EFORKED)
    return 7;
  if (hm_watch_start(reg) != HM_EFORKED || hm_registry_poll(reg) != HM_EFORKED)
    return 8;
  if (hm_live_get(reg, "sq:bonus", &l) != HM_EFORKED)
    return 9;
  if (strstr(hm_errmsg(), "fork") == NULL)
    return 10;
  /* A registry of the child's own works fully: a reload retires the old version, which is
   * unloaded although a parent thread was inside a live call at the fork. */
  r2 = hmt_registry(0);
  snprintf(path, sizeof path, "%s/child.so", dir);
  hmt_install(hmt_mod("square_v1"), path);
  if (hm_module_load(r2, "c", path, &m2) != 0 || hm_live_get(r2, "c:version", &l2) != 0)
    return 11;
  hmt_install(hmt_mod("square_v2"), path);
  if (hm_module_reload(m2) != 0 || HM_LIVE_CALL(l2, ifn) != 2)
    return 12;
  if (!hmt_wait_until(retired_zero, r2, 20.0))
    return 13;
  hm_registry_free(r2);
  /* Freeing the inherited registry frees memory only: the parent's files stay. */
  {
    char d[4096];
    snprintf(d, sizeof d, "%s", hm_registry_dir(reg));
    hm_registry_free(reg);
    if (hmt_count_files(d) < 1)
      return 14;
  }
  /* The snapshot taken before the fork outlives its registry, as any snapshot does. */
  if (((ifn)hm_snapshot_fn(sq_snap))() != 1)
    return 15;
  hm_snapshot_release(sq_snap);
  return 0;
}

static void t_fork_with_caller_inside(void **state) {
  char *dir = hmt_tmpdir(), path[4096], bpath[4096];
  hm_registry *reg = hmt_registry(0);
  hm_module *sq, *bm;
  hm_live *sq_live, *bl;
  hm_snapshot *snap;
  blocked b[2];
  pthread_t t[2];
  pid_t pid;
  int status = -1, i, files_before;
  (void)state;

  snprintf(path, sizeof path, "%s/sq.so", dir);
  hmt_install(hmt_mod("square_v1"), path);
  assert_int_equal(hm_module_load(reg, "sq", path, &sq), 0);
  assert_int_equal(hm_live_get(reg, "sq:version", &sq_live), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "sq:version", &snap), 0);
  snprintf(bpath, sizeof bpath, "%s/bl.so", dir);
  hmt_install(hmt_mod("blocker_v1"), bpath);
  assert_int_equal(hm_module_load(reg, "bl", bpath, &bm), 0);
  assert_int_equal(hm_live_get(reg, "bl:through", &bl), 0);

  /* Two threads sit inside live calls when the process forks. (glibc reuses a vanished
   * thread's stack, and zeroes its TLS, when the child starts a thread: with one blocked
   * thread, the child's first new thread could wipe its reader by chance.) */
  memset(b, 0, sizeof b);
  for (i = 0; i < 2; i++) {
    b[i].live = bl;
    assert_int_equal(pthread_create(&t[i], NULL, blocked_caller, &b[i]), 0);
    while (!__atomic_load_n(&b[i].g.inside, __ATOMIC_SEQ_CST))
      usleep(1000);
  }

  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(child_checks(reg, sq_live, snap, dir));

  /* A child that hangs (a grace period waiting for the parent's thread) fails, in time. */
  for (i = 0; i < 600; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    usleep(100000);
  }
  if (i == 600) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fail_msg("the child hung");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("the child failed check %d (status 0x%x)", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
             status);

  /* The parent goes on: the child wrote nothing into its private directory, so reloads do
   * not collide with copies the child made. */
  files_before = hmt_count_files(hm_registry_dir(reg));
  assert_true(files_before >= 2);
  for (i = 0; i < 2; i++) {
    __atomic_store_n(&b[i].g.release, 1, __ATOMIC_SEQ_CST);
    pthread_join(t[i], NULL);
    assert_int_equal(b[i].result, 1007);
  }
  for (i = 0; i < 5; i++) {
    hmt_install(hmt_mod(i % 2 ? "square_v1" : "square_v2"), path);
    assert_int_equal(hm_module_reload(sq), 0);
  }
  assert_int_equal(HM_LIVE_CALL(sq_live, ifn), 2);
  assert_int_equal(((ifn)hm_snapshot_fn(snap))(), 1);
  hm_snapshot_release(snap);
  hm_registry_free(reg);
  hmt_rm_rf(dir);
  free(dir);
}

/* A child that forks while it is itself inside a live call keeps its own read section: the
 * child's grace periods wait for it to leave, then pass. */
static void t_fork_inside_live_call(void **state) {
  hm_registry *reg = hmt_registry(0);
  char *dir = hmt_tmpdir(), path[4096];
  hm_module *sq;
  hm_live *l;
  pid_t pid;
  int status = -1;
  ifn f;
  (void)state;
  snprintf(path, sizeof path, "%s/sq.so", dir);
  hmt_install(hmt_mod("square_v1"), path);
  assert_int_equal(hm_module_load(reg, "sq", path, &sq), 0);
  assert_int_equal(hm_live_get(reg, "sq:version", &l), 0);
  f = (ifn)hm_live_enter(l);
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int rc = f() == 1 ? 0 : 1;
    hm_live_leave(l);
    if (rc == 0) {
      hm_registry *r2 = hmt_registry(0);
      char p2[4096];
      hm_module *m;
      snprintf(p2, sizeof p2, "%s/c.so", dir);
      hmt_install(hmt_mod("square_v1"), p2);
      if (hm_module_load(r2, "c", p2, &m) != 0)
        rc = 2;
      hmt_install(hmt_mod("square_v2"), p2);
      if (rc == 0 && hm_module_reload(m) != 0)
        rc = 3;
      if (rc == 0 && !hmt_wait_until(retired_zero, r2, 20.0))
        rc = 4;
      hm_registry_free(r2);
    }
    _exit(rc);
  }
  hm_live_leave(l);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  hm_registry_free(reg);
  hmt_rm_rf(dir);
  free(dir);
}

/* A reload the watcher prepared (queued mode) when the process forks: the child frees the
 * registry without touching the mapping or the copy (the parent's), and the parent's poll
 * still publishes the build. */
static void t_fork_with_prepared_reload(void **state) {
  wt *f = wt_new(HM_RELOAD_QUEUED, 0, 0);
  pid_t pid;
  int status = 0, files;
  (void)state;
  wt_load(f, hmt_mod("square_v1"));
  wt_start(f);
  hmt_install(hmt_mod("square_v2"), f->path);
  wt_wait_count(f, HM_EVENT_CHANGED, 1);
  wt_sync(f);
  files = hmt_count_files(hm_registry_dir(f->reg));
  assert_true(files >= 2); /* the current version's copy and the prepared one's */
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int rc = hm_registry_poll(f->reg) == HM_EFORKED ? 0 : 1;
    if (rc == 0 && wt_live(f->live) != 1)
      rc = 2;
    hm_registry_free(f->reg);
    _exit(rc);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(hmt_count_files(hm_registry_dir(f->reg)), files);
  assert_int_equal(hm_registry_poll(f->reg), 1);
  assert_int_equal(wt_live(f->live), 2);
  wt_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_fork_with_caller_inside),
      cmocka_unit_test(t_fork_inside_live_call),
      cmocka_unit_test(t_fork_with_prepared_reload),
  };
#if defined(__SANITIZE_THREAD__)
  /* ThreadSanitizer cannot follow a multi-threaded process's child that starts threads of
   * its own ("dup thread with used id"), which is what these tests do on purpose. */
  puts("test_fork: skipped under ThreadSanitizer");
  return 0;
#endif
  return cmocka_run_group_tests(tests, NULL, NULL);
}
