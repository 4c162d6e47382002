// C++ hosts and modules: a C++ exception thrown by a module through a live call, and caught
// by the host around HM_LIVE_CALL, still ends the call. Before, the thread stayed inside a
// read section for good: no retired version was ever unloaded again, in any registry, and
// hm_registry_free hung. Also through C code built with -fexceptions (cxx_helper.c).
extern "C" {
#include "util.h"
}

#include <stdexcept>

typedef int (*ifn)(int);
typedef int (*vfn)(void);

extern "C" int hmt_c_live_call(hm_live *live, int x); // cxx_helper.c, C with -fexceptions

static int retired_zero(void *arg) {
  hm_stats st;
  return hm_registry_stats(static_cast<hm_registry *>(arg), &st) == 0 && st.retired == 0;
}

// Reload `mod` from `file` and wait until the version it replaced is unloaded: only possible
// if no thread is left inside a live call that started before the reload.
static void reload_and_wait_unloaded(hm_registry *reg, hm_module *mod, const char *file) {
  assert_int_equal(hm_module_reload_from(mod, hmt_mod(file)), 0);
  if (!hmt_wait_until(retired_zero, reg, 20.0))
    fail_msg("the retired version was never unloaded: a live call was left open");
}

static void t_exception_through_live_call(void **state) {
  (void)state;
  hm_registry *reg = hmt_registry(0);
  hm_module *mod = nullptr;
  hm_live *live = nullptr;
  int caught = 0;
  assert_int_equal(hm_module_load(reg, "thr", hmt_mod("thrower_v1"), &mod), 0);
  assert_int_equal(hm_live_get(reg, "thr:maybe_throw", &live), 0);
  assert_int_equal(HM_LIVE_CALL(live, ifn, 3), 3);
  for (int i = 0; i < 3; i++) {
    try {
      (void)HM_LIVE_CALL(live, ifn, -1);
    } catch (const std::runtime_error &) {
      caught++;
    }
  }
  assert_int_equal(caught, 3);
  reload_and_wait_unloaded(reg, mod, "thrower_v2");
  assert_int_equal(HM_LIVE_CALL(live, ifn, 3), 6);
  // Through C code built with -fexceptions: its HM_LIVE_CALL leaves on unwinding too.
  try {
    (void)hmt_c_live_call(live, -5);
  } catch (const std::runtime_error &) {
    caught++;
  }
  assert_int_equal(caught, 4);
  assert_int_equal(hmt_c_live_call(live, 2), 4);
  reload_and_wait_unloaded(reg, mod, "thrower_v1");
  hm_registry_free(reg); // used to hang
}

// HM_LIVE_CALL_QSBR and HM_LIVE_CALL on an ordinary thread and on a QSBR thread: an exception
// leaves every call (an ordinary call left open would refuse hm_thread_qsbr with HM_EBUSY,
// and hang the wait for the unload).
static void t_exception_qsbr(void **state) {
  (void)state;
  hm_registry *reg = hmt_registry(0);
  hm_module *mod = nullptr;
  hm_live *live = nullptr;
  int caught = 0;
  assert_int_equal(hm_module_load(reg, "thr", hmt_mod("thrower_v1"), &mod), 0);
  assert_int_equal(hm_live_get(reg, "thr:maybe_throw", &live), 0);
  for (int q = 0; q < 2; q++) {
    assert_int_equal(hm_thread_qsbr(q), 0);
    assert_int_equal(HM_LIVE_CALL_QSBR(live, ifn, 3), 3);
    for (int i = 0; i < 2; i++) {
      try {
        (void)HM_LIVE_CALL_QSBR(live, ifn, -1);
      } catch (const std::runtime_error &) {
        caught++;
      }
      try {
        (void)HM_LIVE_CALL(live, ifn, -1);
      } catch (const std::runtime_error &) {
        caught++;
      }
    }
  }
  assert_int_equal(hm_thread_qsbr(0), 0);
  assert_int_equal(caught, 8);
  reload_and_wait_unloaded(reg, mod, "thrower_v2");
  assert_int_equal(HM_LIVE_CALL_QSBR(live, ifn, 3), 6);
  hm_registry_free(reg);
}

// The value form and the void form are one macro; `live` is evaluated once.
static void t_live_call_forms(void **state) {
  (void)state;
  hm_registry *reg = hmt_registry(0);
  hm_live *live = nullptr;
  hm_live *lives[1];
  int n = 0;
  assert_int_equal(hm_module_load(reg, "thr", hmt_mod("thrower_v1"), nullptr), 0);
  assert_int_equal(hm_live_get(reg, "thr:version", &live), 0);
  lives[0] = live;
  assert_int_equal(HM_LIVE_CALL(lives[n++], vfn), 1);
  assert_int_equal(n, 1);
  HM_LIVE_CALL_VOID(live, vfn);
  hm_registry_free(reg);
}

// A C++ module's descriptor and signatures, made by the module header's macros, are
// exported: the state goes from version to version and a typed handle takes. (In C++ a
// const at namespace scope has internal linkage: the macros exported nothing, so the load
// hook never ran and the typed get found no signature.)
static void t_cxx_module_describes_itself(void **state) {
  (void)state;
  hm_registry *reg = hmt_registry(0);
  hm_module *mod = nullptr;
  hm_live *held = nullptr, *typed = nullptr;
  assert_int_equal(hm_module_load(reg, "thr", hmt_mod("thrower_v1"), &mod), 0);
  assert_int_equal(hm_live_get(reg, "thr:held_by", &held), 0);
  assert_int_equal(hm_live_get_typed(reg, "thr:maybe_throw", "int (int)", &typed), 0);
  assert_int_equal(HM_LIVE_CALL(held, vfn), 1);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("thrower_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(held, vfn), 2);
  assert_int_equal(HM_LIVE_CALL(typed, int (*)(int), 5), 10);
  hm_registry_free(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_exception_through_live_call),
      cmocka_unit_test(t_exception_qsbr),
      cmocka_unit_test(t_live_call_forms),
      cmocka_unit_test(t_cxx_module_describes_itself),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
