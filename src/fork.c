/*
 * fork(): every registry of the process on one list, so that the prepare handler can take
 * each registry's lock (and the reader list's, and the loader gate's) and the child can mark
 * the registries it inherited. Calls only dlgate.c, reclaim.c and the leaves.
 */
#include "registry.h"

#include <unistd.h>

int hm__check_forked(hm_registry *reg, const char *what) {
  if (!reg->forked)
    return 0;
  return hm__fail(HM_EFORKED,
                  "%s: this registry was made before fork(); in the child its versions stay "
                  "callable but nothing may change (make a new registry in the child)",
                  what);
}

/* The prepare handler first waits until no loader call hotmod makes, on any thread, is in
 * progress (dlgate.c: glibc's child would inherit the loader's list lock held, and block in
 * its first dlopen); that wait comes before any lock, because module code running inside
 * the loader may take reg->lock. Then it takes every registry's lock (and the reader
 * list's), so the child starts with each of them in a known state; reg->lock is only ever
 * held briefly, never around module code. The child then marks the registries it
 * inherited: their reclaimer and watcher threads did not come along, so they may not change
 * or reclaim anything. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static hm_registry *all_regs;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void prefork(void) {
  hm_registry *r;
  hm__dlgate_prefork();
  pthread_mutex_lock(&all_lock);
  for (r = all_regs; r != NULL; r = r->all_next)
    pthread_mutex_lock(&r->lock);
  hm__readers_prefork();
}

static void postfork(int child) {
  hm_registry *r;
  hm__readers_postfork(child);
  for (r = all_regs; r != NULL; r = r->all_next) {
    if (child) {
      r->forked = 1;
      /* The child shares the parent's lock on the private directory through this
       * descriptor: close it (never unlock, which would unlock the parent's), so the lock
       * lives as long as the parent's registry and no longer. */
      if (r->lock_fd >= 0)
        close(r->lock_fd);
      r->lock_fd = -1;
      if (r->spill_lock_fd >= 0)
        close(r->spill_lock_fd);
      r->spill_lock_fd = -1;
    }
    pthread_mutex_unlock(&r->lock);
  }
  pthread_mutex_unlock(&all_lock);
  hm__dlgate_postfork(child);
}

static void postfork_parent(void) { postfork(0); }

static void postfork_child(void) { postfork(1); }

static void install_atfork(void) { pthread_atfork(prefork, postfork_parent, postfork_child); }

void hm__fork_handlers_install(void) { pthread_once(&atfork_once, install_atfork); }

void hm__registries_lock(void) {
  hm__fork_handlers_install();
  pthread_mutex_lock(&all_lock);
}

void hm__registries_unlock(void) { pthread_mutex_unlock(&all_lock); }

void hm__registries_add_locked(hm_registry *reg) {
  reg->all_next = all_regs;
  if (all_regs != NULL)
    all_regs->all_prev = reg;
  all_regs = reg;
}

void hm__registries_remove(hm_registry *reg) {
  pthread_mutex_lock(&all_lock);
  if (reg->all_prev != NULL)
    reg->all_prev->all_next = reg->all_next;
  else
    all_regs = reg->all_next;
  if (reg->all_next != NULL)
    reg->all_next->all_prev = reg->all_prev;
  pthread_mutex_unlock(&all_lock);
}
