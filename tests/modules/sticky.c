/* Test module linked with -z nodelete: dlclose returns 0 but keeps it mapped. hotmod must
 * notice, count it and say so, not pretend it was unloaded. */
int version(void) { return VERSION; }
