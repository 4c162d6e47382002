/* Test module for calls that stay inside a version: through() calls back into the host,
 * which may block there, and returns through this version's code afterwards. */
typedef int (*host_cb)(void *arg);

int through(host_cb cb, void *arg) { return cb(arg) + VERSION * 1000; }

int version(void) { return VERSION; }
