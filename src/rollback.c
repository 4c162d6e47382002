/*
 * hm_module_rollback: the build before the current one comes back, as it is while something
 * still keeps it loaded, else from the kept copy, through the reload's steps (reload.c) with
 * the state handed over as for any reload; or, for the control socket in queued mode,
 * prepared for the poll (prepared.c).
 */
#include "reload.h"

#include <string.h>

/* The build to go back to, under reg->lock: a loaded version of it (referenced), else the
 * kept copy's path (copied), else HM_ENOPREV. */
static int rollback_target(hm_module *mod, hm__version **reuse, char **kept) {
  hm_registry *reg = mod->reg;
  unsigned want;
  hm__version *v;
  *reuse = NULL;
  *kept = NULL;
  if (mod->cur == NULL)
    return hm__fail(HM_ENOMOD, "module %s is not loaded", mod->name);
  if (mod->nhist == 0)
    return hm__fail(HM_ENOPREV, "module %s has no earlier version to roll back to",
                    mod->name);
  want = mod->hist[mod->nhist - 1];
  for (v = mod->versions; v != NULL; v = v->next) {
    int refs = __atomic_load_n(&v->refs, __ATOMIC_ACQUIRE);
    /* Only while something still holds it: a version whose last reference went is being
     * unloaded already. */
    while (v->build == want && refs > 0) {
      if (__atomic_compare_exchange_n(&v->refs, &refs, refs + 1, 0, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE)) {
        *reuse = v;
        return 0;
      }
    }
  }
  if (mod->kept_path != NULL && mod->kept_build == want) {
    *kept = hm__strdup(&reg->a, mod->kept_path);
    return *kept != NULL ? 0 : hm__fail(HM_ENOMEM, "out of memory rolling back %s", mod->name);
  }
  return hm__fail(HM_ENOPREV,
                  "module %s: the build to roll back to is no longer loaded and its copy was "
                  "not kept (only the version before the current one is)",
                  mod->name);
}

/* Run the job now, or (queued) prepare it for the poll. */
static int rollback_job(hm__job *j, const hm__file *f, int queued) {
  hm__job *p;
  if (!queued)
    return hm__job_run(j, NULL, f);
  p = hm__malloc(&j->reg->a, sizeof *p);
  if (p == NULL) {
    if (j->reused)
      hm__version_unref(j->reg, j->v);
    return hm__fail(HM_ENOMEM, "out of memory rolling back %s", j->mod->name);
  }
  *p = *j;
  return hm__prepare_job(p, NULL, f);
}

static int rollback(hm_module *mod, int queued) {
  hm_registry *reg;
  hm__job j;
  hm__file f;
  char *kept = NULL;
  int rc;
  reg = mod->reg;
  memset(&j, 0, sizeof j);
  memset(&f, 0, sizeof f);
  j.mod = mod;
  j.reg = reg;
  j.flags = HM__RELOAD_ROLLBACK;
  /* The reload lock is taken again by the job; holding it here would deadlock, and the
   * target is re-checked there through the history under the registry lock. */
  pthread_mutex_lock(&reg->lock);
  rc = rollback_target(mod, &j.v, &kept);
  if (rc == 0)
    j.target = mod->hist[mod->nhist - 1];
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0)
    return rc;
  if (j.v != NULL) {
    j.reused = 1;
    return rollback_job(&j, NULL, queued);
  }
  /* Loaded again from the kept copy, under a fresh private name (the kept path may still
   * name a mapped object, which dlopen would hand back). */
  rc = hm__file_read(&reg->a, kept, HM__READ_ALLOW_WRITABLE, &f, NULL);
  hm__free(&reg->a, kept);
  if (rc == 0)
    rc = rollback_job(&j, &f, queued);
  hm__file_release(&reg->a, &f);
  return rc;
}

int hm_module_rollback(hm_module *mod) {
  int rc = hm__reload_checks(mod, "hm_module_rollback");
  return rc != 0 ? rc : rollback(mod, 0);
}

int hm__rollback_prepare(hm_module *mod) {
  int rc = hm__reload_checks(mod, "hm_module_rollback");
  return rc != 0 ? rc : rollback(mod, 1);
}
