/* State across versions (I6, I5): a module with a descriptor keeps its state, a plain one
 * starts afresh; a state whose layout changes is converted by the new version, and a
 * version that refuses the old layout changes nothing. ASan and valgrind check that no
 * ownership case leaks or frees twice. */
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*ifn)(void);
typedef int (*addfn)(int);
typedef long (*lfn)(void);
typedef double (*dfn)(void);

static int setup(void **state) {
  *state = hmt_registry(0);
  return 0;
}

static int teardown(void **state) {
  hm_registry_free(*state); /* frees the last version's state through its unload hook */
  return 0;
}

static int call_i(hm_live *l) { return HM_LIVE_CALL(l, ifn); }

/* The same source, with and without a descriptor, reloaded 100 times. */
static void t_counter_kept_or_reset(void **state) {
  hm_registry *reg = *state;
  hm_module *kept, *plain;
  hm_live *kn, *pn;
  int i;
  assert_int_equal(hm_module_load(reg, "kept", hmt_mod("counter_v1"), &kept), 0);
  assert_int_equal(hm_module_load(reg, "plain", hmt_mod("counter_v1_plain"), &plain), 0);
  assert_int_equal(hm_live_get(reg, "kept:next", &kn), 0);
  assert_int_equal(hm_live_get(reg, "plain:next", &pn), 0);
  for (i = 1; i <= 100; i++) {
    assert_int_equal(call_i(kn), i);
    assert_int_equal(call_i(pn), 1); /* fresh globals in every version */
    assert_int_equal(hm_module_reload_from(kept, hmt_mod(i % 2 ? "counter_v2" : "counter_v1")), 0);
    assert_int_equal(
        hm_module_reload_from(plain, hmt_mod(i % 2 ? "counter_v2_plain" : "counter_v1_plain")),
        0);
  }
  assert_int_equal(call_i(kn), 101);
  assert_int_equal(hm_module_version(kept), 101);
}

typedef struct list_view {
  hm_live *layout, *count, *add, *keys, *weights;
} list_view;

static void view_of(hm_registry *reg, list_view *v) {
  assert_int_equal(hm_live_get(reg, "m:layout", &v->layout), 0);
  assert_int_equal(hm_live_get(reg, "m:count", &v->count), 0);
  assert_int_equal(hm_live_get(reg, "m:add", &v->add), 0);
  assert_int_equal(hm_live_get(reg, "m:sum_keys", &v->keys), 0);
  assert_int_equal(hm_live_get(reg, "m:sum_weights", &v->weights), 0);
}

static void expect_list(list_view *v, int layout, int n, long keys, double weights) {
  assert_int_equal(call_i(v->layout), layout);
  assert_int_equal(call_i(v->count), n);
  assert_int_equal(HM_LIVE_CALL(v->keys, lfn), keys);
  assert_true(fabs(HM_LIVE_CALL(v->weights, dfn) - weights) < 1e-9);
}

/* v1 holds a list of {key}; v2 converts it into {key, weight} and extends it; v3 adopts v2's
 * as it is. Consistent at every step. */
static void t_migration(void **state) {
  hm_registry *reg = *state;
  hm_module *m;
  list_view v;
  int k;
  assert_int_equal(hm_module_load(reg, "m", hmt_mod("migrate_v1"), &m), 0);
  view_of(reg, &v);
  for (k = 1; k <= 10; k++)
    assert_int_equal(HM_LIVE_CALL(v.add, addfn, k), k);
  expect_list(&v, 1, 10, 55, 0.0);

  assert_int_equal(hm_module_reload_from(m, hmt_mod("migrate_v2")), 0);
  expect_list(&v, 2, 10, 55, 27.5); /* converted: weight = key / 2 */
  assert_int_equal(HM_LIVE_CALL(v.add, addfn, 100), 11);
  expect_list(&v, 2, 11, 155, 77.5);

  assert_int_equal(hm_module_reload_from(m, hmt_mod("migrate_v3")), 0);
  expect_list(&v, 2, 11, 155, 77.5); /* adopted as it is */
  assert_int_equal(HM_LIVE_CALL(v.add, addfn, 2), 12);
  expect_list(&v, 2, 12, 157, 78.5);
}

/* A v2 build that cannot read v1's layout refuses: v1 serves on with its list intact. */
static void t_refused_migration_changes_nothing(void **state) {
  hm_registry *reg = *state;
  hm_module *m;
  list_view v;
  hm_stats st;
  int k;
  assert_int_equal(hm_module_load(reg, "m", hmt_mod("migrate_v1"), &m), 0);
  view_of(reg, &v);
  for (k = 1; k <= 5; k++)
    HM_LIVE_CALL(v.add, addfn, k);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("migrate_v2_refuse")), HM_EHOOK);
  assert_non_null(strstr(hm_errmsg(), "refused"));
  assert_int_equal(hm_module_version(m), 1);
  expect_list(&v, 1, 5, 15, 0.0);
  HM_LIVE_CALL(v.add, addfn, 6);
  expect_list(&v, 1, 6, 21, 0.0);
  /* A build that can migrate still can. */
  assert_int_equal(hm_module_reload_from(m, hmt_mod("migrate_v2")), 0);
  expect_list(&v, 2, 6, 21, 10.5);
  assert_int_equal(hm_registry_stats(reg, &st), 0);
  assert_int_equal(st.rejects, 1);
}

/* The load context: the version number being loaded and the outgoing state's layout. */
static void t_load_context(void **state) {
  hm_registry *reg = *state;
  hm_module *m;
  hm_live *sv, *rb;
  assert_int_equal(hm_module_load(reg, "st", hmt_mod("stateful_v1"), &m), 0);
  assert_int_equal(hm_live_get(reg, "st:last_ctx_prev_state_version", &sv), 0);
  assert_int_equal(hm_live_get(reg, "st:last_ctx_rollback", &rb), 0);
  assert_int_equal(call_i(sv), 0); /* first load: nothing handed over */
  assert_int_equal(hm_module_reload_from(m, hmt_mod("stateful_v2")), 0);
  assert_int_equal(call_i(sv), 1);
  assert_int_equal(call_i(rb), 0);
}

/* A module built for another ABI is refused before dlopen runs any of its code: its
 * constructor never leaves its mark. */
static void t_wrong_abi_refused_before_code_runs(void **state) {
  hm_registry *reg = *state;
  char *dir = hmt_tmpdir(), mark[4200];
  snprintf(mark, sizeof mark, "%s/constructor-ran", dir);
  setenv("HMT_CTOR_MARK", mark, 1);
  assert_int_equal(hm_module_load(reg, "bad", hmt_mod("stateful_v8_badabi"), NULL), HM_EABI);
  unsetenv("HMT_CTOR_MARK");
  assert_non_null(strstr(hm_errmsg(), "ABI"));
  assert_int_equal(access(mark, F_OK), -1);
  hmt_rm_rf(dir);
  free(dir);
}

/* The descriptor is the module's own: one that only a library the module links exports
 * (for a module ABI no hotmod has, which would refuse it) is not looked for, whether the
 * lookup is by hand or by dlsym (test_state_dlsym). The module loads as a plain one. */
static void t_descriptor_of_a_linked_library_ignored(void **state) {
  hm_registry *reg = *state;
  hm_module *m = NULL;
  hm_snapshot *s = NULL;
  assert_int_equal(hm_module_load(reg, "dd", hmt_mod("descdep_v1"), &m), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "dd:version", &s), 0);
  assert_int_equal(((int (*)(void))hm_snapshot_fn(s))(), 1);
  hm_snapshot_release(s);
  assert_int_equal(hm_module_reload(m), 0);
}

/* A module linked against another libhotmod than the host's (here a stand-in with the
 * soname of 0.2) would bring a second copy of the library, whose live calls this one's
 * grace periods never see: refused, and the module that serves keeps serving. */
static void t_other_libhotmod_refused(void **state) {
  hm_registry *reg = *state;
  hm_module *m = NULL;
  assert_int_equal(hm_module_load(reg, "oh", hmt_mod("square_v2_other_hotmod"), NULL), HM_EABI);
  assert_non_null(strstr(hm_errmsg(), "libhotmod.so.0.2"));
  assert_int_equal(hm_module_load(reg, "oh", hmt_mod("square_v1"), &m), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("square_v2_other_hotmod")), HM_EABI);
  assert_int_equal(hm_module_version(m), 1);
  /* A module linked against this very library is taken. */
  assert_int_equal(hm_module_load(reg, "lt", hmt_mod("lint_livetls"), NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_other_libhotmod_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(t_counter_kept_or_reset, setup, teardown),
      cmocka_unit_test_setup_teardown(t_migration, setup, teardown),
      cmocka_unit_test_setup_teardown(t_refused_migration_changes_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(t_load_context, setup, teardown),
      cmocka_unit_test_setup_teardown(t_wrong_abi_refused_before_code_runs, setup, teardown),
      cmocka_unit_test_setup_teardown(t_descriptor_of_a_linked_library_ignored, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
