/*
 * The QSBR flavour (hm_thread_qsbr): threads whose live calls do no read-side work and that
 * report quiescent states instead, going offline around blocking. Layer 5
 * (docs/architecture.md): calls fork.c, reclaim.c and the leaves.
 *
 * Such a thread's word (hm__rdw, see reclaim.c) has HM__RD_QSBR and HM__RD_SLOW in its low
 * half, and HM__RD_OFFLINE while offline; its high half holds the grace period of its last
 * quiescent state. The reclaimer waits for every online QSBR thread whose grace period is
 * older than its target. The stores here are sequentially consistent: a quiescent state
 * releases the thread's earlier calls (the reclaimer's load of the word acquires them),
 * and the grace period it copies was read after the writer's publish and increment, so every
 * later call of the thread loads the new table. No membarrier() is involved, so the
 * flavour is the same on the fenced path and under ThreadSanitizer.
 */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>

#define GP_PART (~HM__RD_LOW)

/* Store the current grace period into the word, keeping its flags. */
static void take_gp(unsigned long flags) {
  unsigned long gp = __atomic_load_n(&hm__gpw, __ATOMIC_SEQ_CST) & GP_PART;
  __atomic_store_n(&hm__rdw, gp | flags, __ATOMIC_SEQ_CST);
}

int hm_thread_qsbr(int on) {
  unsigned long w;
  if (on != 0 && on != 1)
    return hm__fail(HM_EINVAL, "hm_thread_qsbr: %d is neither 0 nor 1", on);
  /* Before the thread is on the reader list: a forked child must forget the parent's
   * other QSBR threads, or its grace periods would wait for them forever. */
  hm__fork_handlers_install();
  hm__reader_register_self();
  w = __atomic_load_n(&hm__rdw, __ATOMIC_RELAXED);
  if ((w & HM__RD_DEPTH) != 0)
    return hm__fail(HM_EBUSY, "hm_thread_qsbr: inside a live call on this thread");
  if (on)
    take_gp(HM__RD_QSBR | HM__RD_SLOW);
  else
    /* An ordinary registered thread between calls: its next enter takes the slow path,
     * which copies hm__gpw as it is (fenced or not). */
    __atomic_store_n(&hm__rdw, HM__RD_SLOW, __ATOMIC_SEQ_CST);
  return 0;
}

/* HM_LIVE_CALL_QSBR_ONLY on a thread that is not an online QSBR thread (builds without
 * NDEBUG check this): its call would mark nothing, so stop before it runs. */
void hm__rdw_not_qsbr(void) {
  fputs("hotmod: HM_LIVE_CALL_QSBR_ONLY on a thread that is not an online QSBR thread "
        "(hm_thread_qsbr)\n",
        stderr);
  abort();
}

void hm_thread_quiescent(void) {
  unsigned long w = __atomic_load_n(&hm__rdw, __ATOMIC_RELAXED);
  if (!HM__RD_QSBR_ON(w))
    return;
  /* Nothing waits for this thread while its grace period is the current one: then every
   * call since its last store loaded the tables published before that grace period began,
   * and the store that said so has released what came before. */
  if (((__atomic_load_n(&hm__gpw, __ATOMIC_SEQ_CST) ^ w) & GP_PART) == 0)
    return;
  take_gp(w & HM__RD_LOW);
}

int hm_thread_offline(void) {
  unsigned long w = __atomic_load_n(&hm__rdw, __ATOMIC_RELAXED);
  if (!(w & HM__RD_QSBR))
    return hm__fail(HM_EINVAL, "hm_thread_offline: not a QSBR thread (hm_thread_qsbr)");
  if (!(w & HM__RD_OFFLINE)) /* a release: the thread's calls so far come before it */
    __atomic_store_n(&hm__rdw, w | HM__RD_OFFLINE, __ATOMIC_SEQ_CST);
  return 0;
}

int hm_thread_online(void) {
  unsigned long w = __atomic_load_n(&hm__rdw, __ATOMIC_RELAXED);
  if (!(w & HM__RD_QSBR))
    return hm__fail(HM_EINVAL, "hm_thread_online: not a QSBR thread (hm_thread_qsbr)");
  if ((w & HM__RD_DEPTH) != 0)
    return hm__fail(HM_EBUSY, "hm_thread_online: inside a live call made while offline");
  /* Sequentially consistent: a writer that read the word before this store (and skipped
   * the thread as offline) published its table before, so the calls after it load the new
   * one. */
  take_gp(HM__RD_QSBR | HM__RD_SLOW);
  return 0;
}
