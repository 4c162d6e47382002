/* A small shared library of the test tree that a lint test module needs (DT_NEEDED). */
__attribute__((visibility("default"))) int hm_lintdep_value(void) { return 42; }
