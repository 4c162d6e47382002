/*
 * Reload modes and queued reloads: what the watcher does with a finished build, decided per
 * module, and hm_registry_poll, which publishes queued reloads at the host's safe point. No
 * libuv here: the watcher prepares the new version (hm__prepare); polling publishes it.
 *
 * Layer 8 (docs/architecture.md): calls group.c, events.c, fork.c, qsbr.c and the leaves.
 */
#include "registry.h"

#include <limits.h>

int hm_module_set_reload_mode(hm_module *mod, hm_reload_mode mode) {
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "hm_module_set_reload_mode: NULL module");
  if (mode != HM_RELOAD_DEFAULT && mode != HM_RELOAD_IMMEDIATE && mode != HM_RELOAD_QUEUED)
    return hm__fail(HM_EINVAL, "unknown reload mode %d", (int)mode);
  pthread_mutex_lock(&mod->reg->lock);
  mod->mode = mode;
  pthread_mutex_unlock(&mod->reg->lock);
  return 0;
}

/* The modules with a queued reload, taken off the queue, into a new array (*n of them).
 * Taken in one pass under the lock: the module list may shift while a failed first load
 * removes its module, and a walk by index across several lock sections could skip one. */
static hm_module **take_pending(hm_registry *reg, size_t *n) {
  hm_module **due = NULL;
  size_t i, k = 0;
  pthread_mutex_lock(&reg->lock);
  for (i = 0; i < reg->nmods; i++)
    k += reg->mods[i]->prepared != NULL && reg->mods[i]->cur != NULL;
  if (k != 0 && (due = hm__malloc(&reg->a, k * sizeof *due)) != NULL) {
    k = 0;
    for (i = 0; i < reg->nmods; i++) {
      hm_module *mod = reg->mods[i];
      if (mod->prepared != NULL && mod->cur != NULL)
        due[k++] = mod; /* loaded modules are never freed before the registry */
    }
  }
  pthread_mutex_unlock(&reg->lock);
  *n = due != NULL ? k : 0;
  return due;
}

int hm_registry_poll(hm_registry *reg) {
  hm_module **due;
  size_t i, n;
  int applied = 0, retry = 0;
  if (reg == NULL)
    return hm__fail(HM_EINVAL, "hm_registry_poll: NULL registry");
  if (hm__in_module_code())
    return hm__refuse_in_module_code("hm_registry_poll");
  /* The host's safe point, outside every live call: a quiescent state (hotmod.h). */
  hm_thread_quiescent();
  if (reg->forked)
    return hm__check_forked(reg, "hm_registry_poll");
  due = take_pending(reg, &n);
  for (i = 0; i < n; i++) {
    /* As the watcher would: a transient failure is not reported yet; the watcher retries
     * it on its schedule (reading and preparing the file again) and queues it again. A
     * module prepared in a group is published with the whole group (the other members'
     * turns then find nothing), and a refused group tells the watcher itself. */
    unsigned published;
    int grouped, rc = hm__group_poll(due[i], &published, &grouped);
    if (rc == 0) {
      applied = applied > INT_MAX - (int)published ? INT_MAX : applied + (int)published;
    } else if (rc < 0 && !grouped && !hm__err_is_final(rc)) {
      pthread_mutex_lock(&reg->lock);
      due[i]->poll_rc = rc;
      pthread_mutex_unlock(&reg->lock);
      retry = 1;
    }
  }
  hm__free(&reg->a, due);
  if (retry)
    hm__watch_poke(reg);
  return applied;
}
