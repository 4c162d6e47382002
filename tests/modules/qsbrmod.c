/* Test module for threads that report quiescent states (test_qsbr): call() counts itself in
 * and out of this version around a callback into the host, and the unload hook records, in
 * the host's record that the last call passed, whether a call was still inside. */
#include "hotmod/module.h"

struct qsbr_watch {
  int inside_at_unload; /* unloads that found a call inside their version: must stay 0 */
  int unloads;
};
typedef int (*host_cb)(void *arg);

static int inside;
static struct qsbr_watch *watch;

HM_MODULE_EXPORT int call(struct qsbr_watch *w, host_cb cb, void *arg) {
  int r;
  __atomic_store_n(&watch, w, __ATOMIC_RELAXED);
  __atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST);
  r = cb != NULL ? cb(arg) : 0;
  __atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
  return r + VERSION * 1000;
}

HM_MODULE_EXPORT int version(void) { return VERSION; }

static void unload(int handed_over) {
  struct qsbr_watch *w = __atomic_load_n(&watch, __ATOMIC_RELAXED);
  (void)handed_over;
  if (w == NULL)
    return;
  if (__atomic_load_n(&inside, __ATOMIC_SEQ_CST) != 0)
    __atomic_add_fetch(&w->inside_at_unload, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&w->unloads, 1, __ATOMIC_SEQ_CST);
}

HM_MODULE_DESCRIBE(1, NULL, NULL, unload);
