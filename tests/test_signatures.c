/* Typed handles: a declared signature is checked when a typed handle is taken, and at every
 * later reload (and rollback) for as long as the handle is typed; untyped handles behave as
 * before. */
#include "util.h"

#include <stdio.h>
#include <string.h>

typedef double (*dfn)(double);

static int setup(void **state) {
  *state = hmt_registry(0);
  return 0;
}

static int teardown(void **state) {
  hm_registry_free(*state);
  return 0;
}

static void t_typed_live_handle(void **state) {
  hm_registry *reg = *state;
  hm_module *m;
  hm_live *l, *same, *untyped;
  assert_int_equal(hm_module_load(reg, "s", hmt_mod("sig_v1"), &m), 0);
  /* The declaration has a space the host does not write: whitespace does not count. */
  assert_int_equal(hm_live_get_typed(reg, "s:my_function", "double(double)", &l), 0);
  assert_true(HM_LIVE_CALL(l, dfn, 2.0) == 2.0);
  assert_int_equal(hm_live_get_typed(reg, "s:my_function", " double ( double ) ", &same), 0);
  assert_ptr_equal(same, l);
  assert_int_equal(hm_live_get(reg, "s:my_function", &untyped), 0);
  assert_ptr_equal(untyped, l);
  /* Another signature for a typed handle, or one the module does not declare. */
  assert_int_equal(hm_live_get_typed(reg, "s:my_function", "float(float)", &same), HM_ESIG);
  assert_null(same);
  assert_int_equal(hm_live_get_typed(reg, "s:version", "long(void)", &same), HM_ESIG);
  assert_non_null(strstr(hm_errmsg(), "int(void)"));
  assert_non_null(strstr(hm_errmsg(), "long(void)"));

  /* A reload with the same declaration goes through. */
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v2")), 0);
  assert_true(HM_LIVE_CALL(l, dfn, 2.0) == 4.0);
  /* One that declares another type is refused; the old version serves on. */
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v3")), HM_ESIG);
  assert_non_null(strstr(hm_errmsg(), "my_function"));
  assert_non_null(strstr(hm_errmsg(), "float(float)"));
  assert_non_null(strstr(hm_errmsg(), "double(double)"));
  assert_int_equal(hm_module_version(m), 2);
  assert_true(HM_LIVE_CALL(l, dfn, 2.0) == 4.0);
  /* So is one that declares nothing. */
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v4")), HM_ESIG);
  assert_non_null(strstr(hm_errmsg(), "declares no signature"));
  assert_int_equal(hm_module_version(m), 2);
}

/* Untyped handles do not care; typing one later checks the current version then. */
static void t_untyped_then_typed(void **state) {
  hm_registry *reg = *state;
  hm_module *m;
  hm_live *l;
  assert_int_equal(hm_module_load(reg, "s", hmt_mod("sig_v1"), &m), 0);
  assert_int_equal(hm_live_get(reg, "s:my_function", &l), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v4")), 0); /* undeclared: fine */
  assert_int_equal(hm_live_get_typed(reg, "s:my_function", "double(double)", &l), HM_ESIG);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v2")), 0);
  assert_int_equal(hm_live_get_typed(reg, "s:my_function", "double(double)", &l), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v4")), HM_ESIG);
}

/* A typed snapshot checks once, in the version it pins. */
static void t_typed_snapshot(void **state) {
  hm_registry *reg = *state;
  hm_module *m;
  hm_snapshot *s;
  assert_int_equal(hm_module_load(reg, "s", hmt_mod("sig_v1"), &m), 0);
  assert_int_equal(hm_snapshot_acquire_typed(reg, "s:my_function", "double(double)", &s), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v3")), 0); /* no typed live handle */
  assert_true(((dfn)hm_snapshot_fn(s))(3.0) == 3.0);
  hm_snapshot_release(s);
  assert_int_equal(hm_snapshot_acquire_typed(reg, "s:my_function", "double(double)", &s),
                   HM_ESIG);
  assert_null(s);
  assert_int_equal(hm_snapshot_acquire_typed(reg, "s:my_function", NULL, &s), HM_EINVAL);
  assert_int_equal(hm_live_get_typed(reg, "s:my_function", NULL, NULL), HM_EINVAL);
}

/* A rollback to a build with another signature is refused like a reload. */
static void t_rollback_checked(void **state) {
  hm_registry *reg = *state;
  hm_module *m;
  hm_live *l;
  assert_int_equal(hm_module_load(reg, "s", hmt_mod("sig_v4"), &m), 0);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v2")), 0);
  assert_int_equal(hm_live_get_typed(reg, "s:my_function", "double(double)", &l), 0);
  assert_int_equal(hm_module_rollback(m), HM_ESIG); /* v4 declares nothing */
  assert_int_equal(hm_module_version(m), 2);
  assert_true(HM_LIVE_CALL(l, dfn, 1.0) == 2.0);
}

/* Long signatures are compared whole: ones that differ only after 255 characters differ. */
static void t_long_signature(void **state) {
  hm_registry *reg = *state;
  hm_module *m;
  hm_live *l;
  hm_snapshot *s;
  char want[1024], other[1024];
  const char *args = "struct very_long_type_name_number_one *, struct very_long_type_name_number_two *, ";
  snprintf(want, sizeof want, "int(%s%s%s%sint)", args, args, args, args);
  snprintf(other, sizeof other, "int(%s%s%s%slong)", args, args, args, args);
  assert_true(strlen(want) > 330);
  assert_int_equal(hm_module_load(reg, "s", hmt_mod("sig_v1"), &m), 0);
  assert_int_equal(hm_live_get_typed(reg, "s:long_sig", other, &l), HM_ESIG);
  assert_int_equal(hm_snapshot_acquire_typed(reg, "s:long_sig", other, &s), HM_ESIG);
  assert_int_equal(hm_live_get_typed(reg, "s:long_sig", want, &l), 0);
  assert_int_equal(HM_LIVE_CALL(l, int (*)(void)), 1);
  assert_int_equal(hm_snapshot_acquire_typed(reg, "s:long_sig", want, &s), 0);
  hm_snapshot_release(s);
  assert_int_equal(hm_module_reload_from(m, hmt_mod("sig_v2")), 0);
  assert_int_equal(HM_LIVE_CALL(l, int (*)(void)), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_typed_live_handle, setup, teardown),
      cmocka_unit_test_setup_teardown(t_untyped_then_typed, setup, teardown),
      cmocka_unit_test_setup_teardown(t_typed_snapshot, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_checked, setup, teardown),
      cmocka_unit_test_setup_teardown(t_long_signature, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
