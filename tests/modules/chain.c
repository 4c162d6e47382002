/* Test module for invariant I3: entry() calls the module's own exported helper(). Built with
 * default visibility and no -Bsymbolic, so only hotmod's RTLD_LOCAL keeps each version's
 * call inside that version. */
int helper(void) { return VERSION * 10; }

int entry(void) { return helper() + VERSION; }
