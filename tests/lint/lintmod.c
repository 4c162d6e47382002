/* Test module for the reloadability lint: a plain C module, clean unless one finding is
 * compiled in (-DIE_TLS, -DKEYS, -DDEP, -DLIVE_TLS) or linked in (nodelete, $ORIGIN, by
 * tests/CMakeLists.txt). -DVERSION=n tells the versions apart. */
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
static void drop(void *p) { (void)p; }
HM_MODULE_EXPORT int make_key(void) {
  pthread_key_t k;
  return pthread_key_create(&k, drop);
}
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
