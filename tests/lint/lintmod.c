/* Test module for the reloadability lint: a plain C module, clean unless one finding is
 * compiled in (-DIE_TLS, -DKEYS, -DDEP, -DLIVE_TLS) or linked in (nodelete, $ORIGIN, by
 * tests/CMakeLists.txt). -DKEYS_DELETED adds a descriptor whose unload hook deletes the key
 * and says so (HM_MODULE_KEYS_DELETED). -DVERSION=n tells the versions apart. */
#include "hotmod/module.h"

#ifdef KEYS
#include <pthread.h>
#endif

HM_MODULE_EXPORT int version(void) { return VERSION; }

#ifdef IE_TLS
/* Initial-exec TLS the module defines: each loaded version takes static TLS space. */
static __thread int ie_calls __attribute__((tls_model("initial-exec")));
HM_MODULE_EXPORT int calls(void) { return ++ie_calls; }
#endif

#ifdef KEYS
/* A key with a destructor, and a value under it for the calling thread: glibc runs the
 * destructor, in this version's code, when that thread exits. */
static pthread_key_t key;
static int have_key;
static void drop(void *p) { *(int *)p = 0; }
static int stored = 1;
HM_MODULE_EXPORT int make_key(void) {
  if (!have_key) {
    if (pthread_key_create(&key, drop) != 0)
      return -1;
    have_key = 1;
  }
  return pthread_setspecific(key, &stored);
}
#endif

#ifdef KEYS_DELETED
static void unload(int handed_over) {
  (void)handed_over;
  if (have_key)
    pthread_key_delete(key);
}
HM_MODULE_DESCRIBE_FLAGS(0, NULL, NULL, unload, NULL, HM_MODULE_KEYS_DELETED);
#endif

#ifdef DEP
int hm_lintdep_value(void); /* libhmlintdep.so, a library of the test tree */
HM_MODULE_EXPORT int dep_value(void) { return hm_lintdep_value(); }
#endif

#ifdef LIVE_TLS
/* Only uses initial-exec TLS that an already-loaded library defines (libhotmod's live-call
 * fast path), and has TLS of its own in the default (dynamic) model: nothing to flag. */
static __thread int own_calls;
HM_MODULE_EXPORT int through(hm_live *live) {
  own_calls++;
  return HM_LIVE_CALL(live, int (*)(void));
}
HM_MODULE_EXPORT int own(void) { return own_calls; }
#endif
