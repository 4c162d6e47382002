/* Modules calling modules: A calls B's value() through a live handle it took in its load
 * hook (with the API table of its load context): reloading B changes what A calls, without
 * reloading A, and a call never sees half of a B version; and, as Python's reload leaves a
 * module that imported another with the old one, a module holding a snapshot of B keeps
 * calling the B it pinned until it is reloaded itself, after which that B goes. */
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef int (*ifn)(void);

typedef struct fx {
  hm_registry *reg;
  int unloaded_b[16]; /* UNLOADED events of module b, per version number; atomic */
} fx;

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  fx *f = ud;
  (void)err;
  if (ev == HM_EVENT_UNLOADED && strcmp(hm_module_name(mod), "b") == 0 && version < 16)
    __atomic_store_n(&f->unloaded_b[version], 1, __ATOMIC_SEQ_CST);
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

static void t_live_handle_follows_b(void **state) {
  fx *f = *state;
  hm_module *a, *b;
  hm_live *entry;
  assert_int_equal(hm_module_load(f->reg, "b", hmt_mod("xb_v1"), &b), 0);
  assert_int_equal(hm_module_load(f->reg, "a", hmt_mod("xa_v1"), &a), 0);
  assert_int_equal(hm_live_get(f->reg, "a:entry", &entry), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 11);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("xb_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 21); /* A was not reloaded */
  assert_int_equal(hm_module_version(a), 1);
  /* A's own reload keeps its handle on B working. */
  assert_int_equal(hm_module_reload_from(a, hmt_mod("xa_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 22);
}

/* The same with a module that calls the public API itself (linked with the shared library,
 * which the host links too). */
static void t_direct_api_module(void **state) {
  fx *f = *state;
  hm_module *b;
  hm_live *entry;
  assert_int_equal(hm_module_load(f->reg, "b", hmt_mod("xb_v1"), &b), 0);
  assert_int_equal(hm_module_load(f->reg, "d", hmt_mod("xd_v1"), NULL), 0);
  assert_int_equal(hm_live_get(f->reg, "d:entry", &entry), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 110);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("xb_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 120);
}

/* Two threads call A while B is reloaded 2,000 times: every answer is a whole B version. */
static void t_reload_b_under_callers(void **state) {
  fx *f = *state;
  hm_module *b;
  hm_live *entry;
  hmt_caller c[2];
  pthread_t t[2];
  int i, n = (int)hmt_scaled(2000);
  assert_int_equal(hm_module_load(f->reg, "b", hmt_mod("xb_v1"), &b), 0);
  assert_int_equal(hm_module_load(f->reg, "a", hmt_mod("xa_v1"), NULL), 0);
  assert_int_equal(hm_live_get(f->reg, "a:entry", &entry), 0);
  memset(c, 0, sizeof c);
  for (i = 0; i < 2; i++) {
    c[i].entry = entry;
    c[i].ok[0] = 11;
    c[i].ok[1] = 21;
    assert_int_equal(pthread_create(&t[i], NULL, hmt_caller_main, &c[i]), 0);
  }
  for (i = 0; i < n; i++)
    assert_int_equal(hm_module_reload_from(b, hmt_mod(i % 2 ? "xb_v1" : "xb_v2")), 0);
  for (i = 0; i < 2; i++) {
    hmt_caller_stop(&c[i], t[i]);
    assert_int_equal(c[i].bad, 0);
    assert_true(c[i].calls > 0);
  }
  print_message("# %d reloads of B under %ld + %ld calls of A, 0 mixed\n", n, c[0].calls,
                c[1].calls);
}

static int b1_unloaded(void *arg) {
  fx *f = arg;
  return __atomic_load_n(&f->unloaded_b[1], __ATOMIC_SEQ_CST);
}

/* A holds a snapshot of b:value (taken in load, released in unload). */
static void t_snapshot_keeps_old_b(void **state) {
  fx *f = *state;
  hm_module *a, *b;
  hm_live *entry;
  assert_int_equal(hm_module_load(f->reg, "b", hmt_mod("xb_v1"), &b), 0);
  assert_int_equal(hm_module_load(f->reg, "a", hmt_mod("xa_v1_snap"), &a), 0);
  assert_int_equal(hm_live_get(f->reg, "a:entry", &entry), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 11);
  assert_int_equal(hm_module_reload_from(b, hmt_mod("xb_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 11); /* still B's version 1 */
  assert_false(b1_unloaded(f));                   /* A's snapshot pins it */
  assert_int_equal(hm_module_reload_from(a, hmt_mod("xa_v2_snap")), 0);
  assert_int_equal(HM_LIVE_CALL(entry, ifn), 22); /* reloaded itself: B's current version */
  /* A's old version released its snapshot in its unload hook: B's version 1 goes. */
  assert_true(hmt_wait_until(b1_unloaded, f, 20.0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_live_handle_follows_b, setup, teardown),
      cmocka_unit_test_setup_teardown(t_direct_api_module, setup, teardown),
      cmocka_unit_test_setup_teardown(t_reload_b_under_callers, setup, teardown),
      cmocka_unit_test_setup_teardown(t_snapshot_keeps_old_b, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
