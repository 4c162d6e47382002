/* hm_module_rollback: the previous build comes back with the current state, from the copy the
 * registry keeps or, while a snapshot keeps it loaded, as it is; nothing older than that; a
 * refusal changes nothing; no redo. */
#include "util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*ifn)(void);

typedef struct fx {
  hm_registry *reg;
  int rolled_back, loaded; /* events */
} fx;

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  fx *f = ud;
  (void)mod;
  (void)version;
  (void)err;
  if (ev == HM_EVENT_ROLLED_BACK)
    f->rolled_back++;
  if (ev == HM_EVENT_LOADED)
    f->loaded++;
}

static int setup(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  fx *f = calloc(1, sizeof *f);
  o.flags = HM_FLAG_QUIET;
  o.on_event = on_event;
  o.event_userdata = f;
  assert_int_equal(hm_registry_new(&f->reg, &o), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  hm_registry_free(f->reg);
  free(f);
  return 0;
}

static int call(hm_registry *reg, const char *q) {
  hm_live *l;
  assert_int_equal(hm_live_get(reg, q, &l), 0);
  return HM_LIVE_CALL(l, ifn);
}

static int no_retired(void *arg) {
  hm_stats st;
  return hm_registry_stats(arg, &st) == 0 && st.retired == 0;
}

/* v1 -> v2 -> rollback: v1's code runs, with the state v2 handed back, and its hook saw
 * rollback = 1 and v2's state version; then nothing older is left. */
static void t_rollback_from_kept_copy(void **state) {
  fx *f = *state;
  hm_module *m;
  assert_int_equal(hm_module_load(f->reg, "st", hmt_mod("stateful_v1"), &m), 0);
  assert_int_equal(call(f->reg, "st:bump"), 1);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  assert_int_equal(call(f->reg, "st:bump"), 2);
  assert_true(hmt_wait_until(no_retired, f->reg, 10.0)); /* v1 is unloaded: only its copy is */
  assert_int_equal(hmt_count_files(hm_registry_dir(f->reg)), 2);

  assert_int_equal(hm_module_rollback(m), 0);
  assert_int_equal(f->rolled_back, 1);
  assert_int_equal(hm_module_version(m), 3); /* a new number for the older build */
  assert_int_equal(call(f->reg, "st:version"), 1);
  assert_int_equal(call(f->reg, "st:bump"), 3); /* the state v2 handed back */
  assert_int_equal(call(f->reg, "st:generations"), 3);
  assert_int_equal(call(f->reg, "st:last_ctx_rollback"), 1);
  assert_int_equal(call(f->reg, "st:last_ctx_reused"), 0);
  assert_int_equal(call(f->reg, "st:last_ctx_prev_state_version"), 1);
  /* No redo, and nothing older than v1. */
  assert_int_equal(hm_module_rollback(m), HM_ENOPREV);
  assert_int_equal(hm_module_version(m), 3);
  assert_true(hmt_wait_until(no_retired, f->reg, 10.0));
  assert_int_equal(hmt_count_files(hm_registry_dir(f->reg)), 1); /* no copy kept */
}

/* A snapshot keeps v1 loaded: the rollback reuses that mapping (no second copy), the hook
 * sees reused = 1, and the snapshot keeps the number it was taken with. */
static void t_rollback_reuses_pinned_version(void **state) {
  fx *f = *state;
  hm_module *m;
  hm_snapshot *s;
  assert_int_equal(hm_module_load(f->reg, "st", hmt_mod("stateful_v1"), &m), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "st:version", &s), 0);
  assert_int_equal(call(f->reg, "st:bump"), 1);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  assert_int_equal(call(f->reg, "st:bump"), 2);
  assert_int_equal(hm_module_rollback(m), 0);
  assert_int_equal(call(f->reg, "st:version"), 1);
  assert_int_equal(call(f->reg, "st:last_ctx_reused"), 1);
  assert_int_equal(call(f->reg, "st:bump"), 3);
  assert_int_equal(hm_snapshot_version(s), 1);
  assert_int_equal(hm_module_version(m), 3);
  /* Its load hook was told the number it comes back under (it was told 1 before). */
  assert_int_equal(call(f->reg, "st:last_ctx_version"), 3);
  assert_true(hmt_wait_until(no_retired, f->reg, 10.0));
  assert_int_equal(hmt_mapped_copies(f->reg), 1); /* v1's one mapping, current again */
  hm_snapshot_release(s);
  assert_int_equal(call(f->reg, "st:bump"), 4);
}

/* A version brought back while still loaded is told whether its globals still point to state
 * it owns: its successor converted the state (so its own unload(0) never ran), rather than
 * adopting it (then it is not its own any more). The converting module frees it; ASan and
 * valgrind see the leak if it cannot know. */
static void t_rollback_reused_still_owned(void **state) {
  fx *f = *state;
  hm_module *m;
  hm_snapshot *s;
  assert_int_equal(hm_module_load(f->reg, "st", hmt_mod("stateful_v1_convert"), &m), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "st:version", &s), 0); /* keeps v1 loaded */
  assert_int_equal(call(f->reg, "st:bump"), 1);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2_convert")), 0);
  assert_int_equal(call(f->reg, "st:bump"), 2);
  assert_int_equal(hm_module_rollback(m), 0);
  assert_int_equal(call(f->reg, "st:last_ctx_reused"), 1);
  assert_int_equal(call(f->reg, "st:last_ctx_still_owned"), 1);
  assert_int_equal(call(f->reg, "st:bump"), 3);
  assert_int_equal(call(f->reg, "st:generations"), 3);
  hm_snapshot_release(s);
  /* The next module may be mapped where a version unloaded now was: TSan sees no order
   * between the reclaimer's dlclose and this thread's dlopen (glibc's loader lock orders
   * them, out of its sight), so wait for the unloads first. */
  assert_true(hmt_wait_until(no_retired, f->reg, 10.0));

  /* Adopted: the reused version's old state went on with its successor. */
  assert_int_equal(hm_module_load(f->reg, "ad", hmt_mod("stateful_v1"), &m), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "ad:version", &s), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  assert_int_equal(hm_module_rollback(m), 0);
  assert_int_equal(call(f->reg, "ad:last_ctx_reused"), 1);
  assert_int_equal(call(f->reg, "ad:last_ctx_still_owned"), 0);
  hm_snapshot_release(s);
}

/* Rolling back again goes one further back only while that build is still loaded. */
static void t_rollback_twice(void **state) {
  fx *f = *state;
  hm_module *m;
  hm_snapshot *s1;
  assert_int_equal(hm_module_load(f->reg, "st", hmt_mod("stateful_v1"), &m), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "st:version", &s1), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v3")), 0);
  assert_int_equal(hm_module_rollback(m), 0); /* to v2, from the kept copy */
  assert_int_equal(call(f->reg, "st:version"), 2);
  assert_int_equal(hm_module_rollback(m), 0); /* to v1, which the snapshot keeps loaded */
  assert_int_equal(call(f->reg, "st:version"), 1);
  assert_int_equal(hm_module_rollback(m), HM_ENOPREV);
  assert_int_equal(f->rolled_back, 2);
  hm_snapshot_release(s1);
}

/* The only file in `dir`, its name into name[n]. */
static void only_file(const char *dir, char *name, size_t n) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int found = 0;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      snprintf(name, n, "%s", e->d_name);
      found++;
    }
  closedir(d);
  assert_int_equal(found, 1);
}

/* A kept copy deleted from outside hotmod after the reload that kept it: the rollback finds
 * it gone and refuses (HM_ENOPREV, as for a copy never kept); the current build serves on. */
static void t_rollback_kept_copy_gone(void **state) {
  fx *f = *state;
  hm_module *m;
  char name[256], path[4400];
  assert_int_equal(hm_module_load(f->reg, "st", hmt_mod("stateful_v1"), &m), 0);
  only_file(hm_registry_dir(f->reg), name, sizeof name); /* v1's private copy */
  assert_int_equal(call(f->reg, "st:bump"), 1);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  assert_true(hmt_wait_until(no_retired, f->reg, 10.0)); /* v1 is unloaded: only its copy is */
  snprintf(path, sizeof path, "%s/%s", hm_registry_dir(f->reg), name);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(hm_module_rollback(m), HM_ENOPREV);
  assert_non_null(strstr(hm_errmsg(), "is gone"));
  assert_int_equal(f->rolled_back, 0);
  assert_int_equal(hm_module_version(m), 2);
  assert_int_equal(call(f->reg, "st:version"), 2);
  assert_int_equal(call(f->reg, "st:bump"), 2);
}

/* A version a rollback brought back while it was still loaded keeps its private copy: the
 * next reload keeps that copy for rollback, and a rollback once it is unloaded loads it. */
static void t_rollback_reused_copy_kept(void **state) {
  fx *f = *state;
  hm_module *m;
  hm_snapshot *s;
  assert_int_equal(hm_module_load(f->reg, "st", hmt_mod("stateful_v1"), &m), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "st:version", &s), 0); /* keeps v1 loaded */
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  assert_int_equal(hm_module_rollback(m), 0); /* v1 again, the same mapping */
  assert_int_equal(call(f->reg, "st:last_ctx_reused"), 1);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  hm_snapshot_release(s);
  assert_true(hmt_wait_until(no_retired, f->reg, 10.0)); /* v1 is unloaded: only its copy is */
  assert_int_equal(hmt_mapped_copies(f->reg), 1);
  assert_int_equal(hm_module_rollback(m), 0); /* from the copy kept of the reused version */
  assert_int_equal(call(f->reg, "st:version"), 1);
  assert_int_equal(call(f->reg, "st:last_ctx_reused"), 0);
}

/* Nothing to go back to, an unloaded module, a build that refuses to come back: nothing
 * changes. */
static void t_rollback_refusals(void **state) {
  fx *f = *state;
  hm_module *m;
  hm_stats st;
  assert_int_equal(hm_module_rollback(NULL), HM_EINVAL);
  assert_int_equal(hm_module_load(f->reg, "st", hmt_mod("stateful_v4_norollback"), &m), 0);
  assert_int_equal(hm_module_rollback(m), HM_ENOPREV);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  assert_int_equal(call(f->reg, "st:bump"), 1);
  assert_int_equal(call(f->reg, "st:bump"), 2);
  /* Build 4 refuses to be rolled back to: v2 serves on, with its state. */
  assert_int_equal(hm_module_rollback(m), HM_EHOOK);
  assert_int_equal(hm_module_version(m), 2);
  assert_int_equal(call(f->reg, "st:version"), 2);
  assert_int_equal(call(f->reg, "st:bump"), 3);
  assert_int_equal(call(f->reg, "st:generations"), 2);
  assert_int_equal(f->rolled_back, 0);
  assert_int_equal(hm_registry_stats(f->reg, &st), 0);
  assert_int_equal(st.rejects, 1);
  /* An unloaded module has nothing to roll back. */
  assert_int_equal(hm_module_unload(m), 0);
  assert_int_equal(hm_module_rollback(m), HM_ENOMOD);
}

/* After a rollback, the bytes at the module's path (the build rolled back from) are no
 * change to the watcher: a touch does not undo the rollback; a new build does load. */
static int version_is(void *arg) {
  void **a = arg;
  return hm_module_version(a[0]) == (unsigned)(size_t)a[1];
}

static void t_watcher_respects_rollback(void **state) {
  fx *f = *state;
  char *dir = hmt_tmpdir(), path[4096];
  hm_module *m;
  void *arg[2];
  snprintf(path, sizeof path, "%s/st.so", dir);
  hmt_install(hmt_mod("stateful_v1"), path);
  assert_int_equal(hm_module_load(f->reg, "st", path, &m), 0);
  hmt_install(hmt_mod("stateful_v2"), path);
  assert_int_equal(hm_module_reload(m), 0);
  assert_int_equal(hm_watch_start(f->reg), 0);
  assert_int_equal(hm_module_rollback(m), 0);
  assert_int_equal(call(f->reg, "st:version"), 1);
  /* v2's bytes are still at the path: touched and rewritten, they stay refused. */
  hmt_install(hmt_mod("stateful_v2"), path);
  hmt_install(hmt_mod("stateful_v3"), path); /* a new build loads */
  arg[0] = m;
  arg[1] = (void *)(size_t)4;
  assert_true(hmt_wait_until(version_is, arg, 30.0));
  assert_int_equal(call(f->reg, "st:version"), 3);
  hm_watch_stop(f->reg);
  hmt_rm_rf(dir);
  free(dir);
}

/* A rollback that reuses a pinned version renumbers it while other threads take snapshots
 * of whatever is current: a snapshot's number is the one its version had when it was taken
 * (ThreadSanitizer saw the acquire read the number while the publish rewrote it). */
typedef struct snapper {
  hm_registry *reg;
  int stop;
  long taken, bad;
} snapper;

static void *snap_loop(void *arg) {
  snapper *sp = arg;
  while (!__atomic_load_n(&sp->stop, __ATOMIC_ACQUIRE)) {
    hm_snapshot *s;
    if (hm_snapshot_acquire(sp->reg, "sq:version", &s) != 0) {
      sp->bad++;
      continue;
    }
    /* Versions 1, 3, 5 ... are square_v1 brought back; 2, 4 ... are square_v2. */
    if (((ifn)hm_snapshot_fn(s))() != (hm_snapshot_version(s) % 2 ? 1 : 2))
      sp->bad++;
    hm_snapshot_release(s);
    sp->taken++;
  }
  return NULL;
}

static void t_rollback_reuse_while_snapshots_taken(void **state) {
  fx *f = *state;
  hm_module *m;
  hm_snapshot *pin;
  snapper sp;
  pthread_t th;
  long i, n = hmt_scaled(300);
  memset(&sp, 0, sizeof sp);
  sp.reg = f->reg;
  assert_int_equal(hm_module_load(f->reg, "sq", hmt_mod("square_v1"), &m), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:version", &pin), 0); /* v1 stays loaded */
  assert_int_equal(pthread_create(&th, NULL, snap_loop, &sp), 0);
  for (i = 0; i < n; i++) {
    assert_int_equal(hm_module_reload_from(m, hmt_mod("square_v2")), 0);
    assert_int_equal(hm_module_rollback(m), 0);
  }
  __atomic_store_n(&sp.stop, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  assert_int_equal(sp.bad, 0);
  assert_true(sp.taken > 0);
  assert_int_equal(hm_module_version(m), (unsigned)(2 * n + 1));
  hm_snapshot_release(pin);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_rollback_from_kept_copy, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_reuses_pinned_version, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_reuse_while_snapshots_taken, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_reused_still_owned, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_twice, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_kept_copy_gone, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_reused_copy_kept, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_refusals, setup, teardown),
      cmocka_unit_test_setup_teardown(t_watcher_respects_rollback, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
