/* A do-nothing audit module (rtld-audit(7)): with LD_AUDIT set, hotmod looks every symbol
 * up with dlsym, as audit modules may change what dlsym returns. test_state runs once that
 * way, so the path that machines without lookups by hand take is tested here too. */
unsigned int la_version(unsigned int version);
unsigned int la_version(unsigned int version) { return version; }
