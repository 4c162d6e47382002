/*
 * The loader gate: every call hotmod makes into glibc's loader that can take the loader's
 * list lock (dlopen, dlclose, dl_iterate_phdr) passes through here, so that fork() can wait
 * until none is in progress.
 *
 * Why: glibc 2.36's fork resets the loader's main lock in the child, but not the second lock
 * it holds while it adds an object to the list, takes one off, or walks the list for
 * dl_iterate_phdr. A thread holding that lock at the fork leaves the child's first dlopen
 * blocked forever. hotmod's reclaimer unloads in the background, its watcher prepares
 * builds on a thread of its own: a host that forks while they work hit it 2-3 times in
 * 1,000 forks. dlsym and dladdr take only the main lock, which the child gets back clean.
 *
 * The gate is a count of threads inside such calls and a count of forks waiting. The
 * registry's prepare handler closes it and waits until the count is 0, for at most
 * GATE_WAIT_NS: a thread that stays inside longer is running module code (a constructor or
 * destructor), which glibc never runs under the list lock, or it waits for something the
 * forking thread holds; the fork goes ahead then rather than hang the parent. A thread that
 * forks from inside a call it made through the gate (module code that forks from a
 * constructor or destructor) does not wait for the gate at all, or it would wait for
 * itself. Loader calls the host makes itself are not gated: hotmod cannot see them.
 *
 * This file knows nothing of registries; it calls only glibc and pthreads.
 */
#include "internal.h"

#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <time.h>

/* 2 s: module code may delay a fork by this much at most; no thread is ever descheduled for
 * that long inside the few instructions glibc runs under the list lock. */
#define GATE_WAIT_NS 2000000000LL

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER; /* users or forks changed */
static int users;  /* threads inside a gated call (under gate_lock) */
static int forks;  /* forks between their prepare and parent handlers (under gate_lock) */
/* This thread's gated calls, nested (module code may load another registry's module from a
 * constructor). Only the outermost counts as a user. */
static __thread unsigned depth;

static void gate_enter(void) {
  if (depth++ > 0)
    return;
  pthread_mutex_lock(&gate_lock);
  while (forks > 0)
    pthread_cond_wait(&gate_cond, &gate_lock);
  users++;
  pthread_mutex_unlock(&gate_lock);
}

static void gate_leave(void) {
  if (--depth > 0)
    return;
  pthread_mutex_lock(&gate_lock);
  if (--users == 0 && forks > 0)
    pthread_cond_broadcast(&gate_cond);
  pthread_mutex_unlock(&gate_lock);
}

void *hm__dlopen(const char *path, int flags) {
  void *dl;
  gate_enter();
  dl = dlopen(path, flags);
  gate_leave();
  return dl;
}

int hm__dlclose(void *dl) {
  int rc;
  gate_enter();
  rc = dlclose(dl);
  gate_leave();
  return rc;
}

int hm__dl_iterate_phdr(int (*cb)(struct dl_phdr_info *, size_t, void *), void *arg) {
  int rc;
  gate_enter();
  rc = dl_iterate_phdr(cb, arg);
  gate_leave();
  return rc;
}

void hm__dlgate_prefork(void) {
  struct timespec until;
  int late = 0;
  pthread_mutex_lock(&gate_lock);
  /* Held until the fork is over, so the child gets it in a known state. A thread inside
   * the gate itself forks without waiting: the others may be blocked behind its call. */
  if (depth > 0)
    return;
  forks++;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += GATE_WAIT_NS / 1000000000LL;
  until.tv_nsec += GATE_WAIT_NS % 1000000000LL;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  while (users > 0 && !late)
    late = pthread_cond_clockwait(&gate_cond, &gate_lock, CLOCK_MONOTONIC, &until) != 0 &&
           users > 0;
  if (late)
    fprintf(stderr,
            "hotmod: fork() goes ahead while %d thread(s) are still inside dlopen or dlclose "
            "for hotmod after %lld s (module code running there, or waiting for this thread)"
            "\n",
            users, GATE_WAIT_NS / 1000000000LL);
}

void hm__dlgate_postfork(int child) {
  if (child) {
    /* Only this thread came along: it is the only user left, if it was one. Threads that
     * waited on the condition in the parent are gone; start it afresh. */
    users = depth > 0;
    forks = 0;
    pthread_cond_init(&gate_cond, NULL);
  } else if (depth == 0 && --forks == 0) {
    pthread_cond_broadcast(&gate_cond);
  }
  pthread_mutex_unlock(&gate_lock);
}
