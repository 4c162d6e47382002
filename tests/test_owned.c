/* Owned live handles: hm_live_acquire / hm_live_release (the host's), and the handles a
 * module version takes in its load hook, which are that version's own: they constrain the
 * module they reach only while they are held, a version's only while it is current; a
 * released handle answers NULL; a retired version keeps reaching what it reached. */
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef int (*ifn)(void);

static int setup(void **state) {
  *state = hmt_registry(0);
  return 0;
}

static int teardown(void **state) {
  hm_registry_free(*state);
  return 0;
}

/* The host's owned handle: it constrains b while held, and not once released. */
static void t_host_acquire_release(void **state) {
  hm_registry *reg = *state;
  hm_module *b;
  hm_live *extra, *again;
  assert_int_equal(hm_module_load(reg, "b", hmt_mod("pb_v1"), &b), 0);
  assert_int_equal(hm_live_acquire(reg, "b:extra", NULL, &extra), 0);
  assert_int_equal(HM_LIVE_CALL(extra, ifn), 7);
  /* pb_v3 has no extra(): refused while the handle is held. */
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v3")), HM_ENOSYM);
  assert_non_null(strstr(hm_errmsg(), "extra"));
  assert_int_equal(hm_module_version(b), 1);
  hm_live_release(extra);
  assert_null(hm_live_enter(extra)); /* released: NULL (a call all the same: leave it) */
  hm_live_leave(extra);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v3")), 0);
  assert_int_equal(hm_live_acquire(reg, "b:extra", NULL, &again), HM_ENOSYM);
  assert_null(again);
  hm_live_release(NULL);
}

/* A typed owned handle constrains the type while held; each acquire is a handle of its own. */
static void t_host_typed(void **state) {
  hm_registry *reg = *state;
  hm_module *b;
  hm_live *l1, *l2, *borrowed;
  assert_int_equal(hm_module_load(reg, "b", hmt_mod("pb_v1"), &b), 0);
  assert_int_equal(hm_live_acquire(reg, "b:value", "int (void)", &l1), 0);
  assert_int_equal(hm_live_acquire(reg, "b:value", NULL, &l2), 0);
  assert_ptr_not_equal(l1, l2);
  assert_int_equal(hm_live_acquire(reg, "b:value", "long(void)", &borrowed), HM_ESIG);
  assert_int_equal(HM_LIVE_CALL(l1, ifn), 1);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v2")), HM_ESIG);
  hm_live_release(l1);
  /* l2 is untyped: it needs the symbol only. */
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(l2, long (*)(void)), 2);
  hm_live_release(l2);
  /* The registry's handle is not released by hm_live_release, and constrains for good. */
  assert_int_equal(hm_live_get(reg, "b:value", &borrowed), 0);
  hm_live_release(borrowed);
  assert_int_equal(HM_LIVE_CALL(borrowed, long (*)(void)), 2);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v4_novalue")), HM_ENOSYM);
}

/* Acquire and release in a loop reuse the released handle: memory stays flat. */
static void t_host_reuse(void **state) {
  hm_registry *reg = *state;
  hm_live *first, *l;
  long i, n = hmt_scaled(20000), rss0;
  assert_int_equal(hm_module_load(reg, "b", hmt_mod("pb_v1"), NULL), 0);
  assert_int_equal(hm_live_acquire(reg, "b:value", NULL, &first), 0);
  hm_live_release(first);
  rss0 = hmt_rss_kib();
  for (i = 0; i < n; i++) {
    assert_int_equal(hm_live_acquire(reg, "b:value", NULL, &l), 0);
    assert_ptr_equal(l, first);
    assert_int_equal(HM_LIVE_CALL(l, ifn), 1);
    hm_live_release(l);
  }
  print_message("# %ld acquire/release pairs: RSS %+ld KiB\n", n, hmt_rss_kib() - rss0);
  if (hmt_rss_meaningful())
    assert_true(hmt_rss_kib() - rss0 < 512);
}

/* b (pb_v1), then a (pa_v1, whose load hook takes b:value typed int(void)), and a:entry. */
static void load_pair(hm_registry *reg, hm_module **a, hm_module **b, hm_live **entry) {
  assert_int_equal(hm_module_load(reg, "b", hmt_mod("pb_v1"), b), 0);
  assert_int_equal(hm_module_load(reg, "a", hmt_mod("pa_v1"), a), 0);
  assert_int_equal(hm_live_get(reg, "a:entry", entry), 0);
}

/* Apart, each half of an interface change is refused: b's new type against a's typed handle,
 * a's new handle type against b's current version. Nothing changes. */
static void t_apart_each_refused(void **state) {
  hm_registry *reg = *state;
  hm_module *a, *b;
  hm_live *entry;
  load_pair(reg, &a, &b, &entry);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 11);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v2")), HM_ESIG);
  assert_non_null(strstr(hm_errmsg(), "int(void)"));
  assert_int_equal(hm_module_reload_from(a, hmt_mod("pa_v2")), HM_EHOOK);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v2")), HM_ESIG);
  assert_int_equal(hm_module_version(a), 1);
  assert_int_equal(hm_module_version(b), 1);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 11);
}

/* A version's handles constrain only while it is current: once a is reloaded to a build
 * that takes none, b may change the type. */
static void t_version_handles_go_with_it(void **state) {
  hm_registry *reg = *state;
  hm_module *a, *b;
  hm_live *entry;
  load_pair(reg, &a, &b, &entry);
  assert_int_equal(hm_module_reload_from(a, hmt_mod("pa_v6_plain")), 0);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 6);
  /* And a build of a that takes the handle with the new type loads now. */
  assert_int_equal(hm_module_reload_from(a, hmt_mod("pa_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 22);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 20.0));
}

static int retired_two(void *reg) {
  hm_stats st;
  return hm_registry_stats(reg, &st) == 0 && st.retired == 2;
}

/* While a is current its handle follows b; once a is retired, a snapshot of it keeps
 * reaching the b it reached then (kept mapped for it), until the snapshot goes. */
static void t_retired_keeps_what_it_reached(void **state) {
  hm_registry *reg = *state;
  hm_module *a, *b;
  hm_snapshot *old_entry;
  hm_live *entry;
  hm_stats st;
  assert_int_equal(hm_module_load(reg, "b", hmt_mod("pb_v1"), &b), 0);
  assert_int_equal(hm_module_load(reg, "a", hmt_mod("pa_v1"), &a), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "a:entry", &old_entry), 0);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v3")), 0);
  /* Current a follows b; that b's own handle on a reaches a v1: 100 added for "not mine". */
  assert_int_equal(((ifn)hm_snapshot_fn(old_entry))(), 1031);
  assert_int_equal(hm_module_reload_from(a, hmt_mod("pa_v3")), 0);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("pb_v1")), 0);
  assert_int_equal(hm_live_get(reg, "a:entry", &entry), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 1013);
  /* a v1 was retired while b v2 (pb_v3) was current: it still reaches that one, mapped for
   * it, once every version nothing reaches is gone (b v1); and b v2, retired while a v2 was
   * current, reaches that a (its partner by number: 31). */
  assert_true(hmt_wait_until(retired_two, reg, 20.0));
  assert_int_equal(((ifn)hm_snapshot_fn(old_entry))(), 31);
  assert_int_equal(hm_registry_stats(reg, &st), 0);
  assert_int_equal(st.retired, 2); /* a v1 (pinned) and b v2 (reached by it) */
  hm_snapshot_release(old_entry);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 20.0));
}

/* Reloads of a, each version taking its own handle, while a thread calls it: every call is
 * whole, and the handles go with their versions (nothing stays mapped, memory is flat). */
static void t_reloads_flat(void **state) {
  hm_registry *reg = *state;
  hm_module *a;
  hmt_caller c;
  pthread_t t;
  long i, n = hmt_scaled(1000), rss0 = 0;
  memset(&c, 0, sizeof c);
  assert_int_equal(hm_module_load(reg, "b", hmt_mod("pb_v1"), NULL), 0);
  assert_int_equal(hm_module_load(reg, "a", hmt_mod("pa_v1"), &a), 0);
  assert_int_equal(hm_live_get(reg, "a:entry", &c.entry), 0);
  c.ok[0] = 11;
  c.ok[1] = 13;
  assert_int_equal(pthread_create(&t, NULL, hmt_caller_main, &c), 0);
  for (i = 0; i < n; i++) {
    assert_int_equal(hm_module_reload_from(a, hmt_mod(i % 2 ? "pa_v1" : "pa_v3")), 0);
    if (i == n / 4)
      rss0 = hmt_rss_kib();
  }
  hmt_caller_stop(&c, t);
  assert_int_equal(c.bad, 0);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 20.0));
  /* b, a and a's kept copy. */
  assert_int_equal(hmt_count_files(hm_registry_dir(reg)), 3);
  print_message("# %ld reloads of a under %ld calls; RSS %+ld KiB after the first quarter\n", n,
                c.calls, hmt_rss_kib() - rss0);
  if (hmt_rss_meaningful())
    assert_true(hmt_rss_kib() - rss0 < 2048);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_host_acquire_release, setup, teardown),
      cmocka_unit_test_setup_teardown(t_host_typed, setup, teardown),
      cmocka_unit_test_setup_teardown(t_host_reuse, setup, teardown),
      cmocka_unit_test_setup_teardown(t_apart_each_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(t_version_handles_go_with_it, setup, teardown),
      cmocka_unit_test_setup_teardown(t_retired_keeps_what_it_reached, setup, teardown),
      cmocka_unit_test_setup_teardown(t_reloads_flat, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
