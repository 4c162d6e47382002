/*
 * hm_module_rollback: the build before the current one comes back, as it is while something
 * still keeps it loaded, else from the kept copy, through the reload's steps (reload.c) with
 * the state handed over as for any reload; with trusted keys, checked again (signed.c).
 */
#include "reload.h"

#include <stdio.h>
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

/* Signed builds: the build comes back only with a signature by a key trusted now, over its
 * bytes: a version still loaded is checked over its private copy here; the kept copy is
 * read with the signature it was verified with (`ksig`, taken over), and checked on the way
 * like any load. */
static int rollback_signed(hm__job *j, char *kept, hm__signed *ksig, const char *path) {
  hm_registry *reg = j->reg;
  hm__file f;
  int rc;
  if (j->v != NULL) {
    rc = hm__signed_recheck(j->mod, j->v->build, j->v->copy_path, j->v->sig, path);
    if (rc != 0)
      hm__version_unref(reg, j->v);
    return rc != 0 ? rc : hm__job_run(j, NULL, NULL);
  }
  memset(&f, 0, sizeof f);
  /* Loaded again from the kept copy, under a fresh private name (the kept path may still
   * name a mapped object, which dlopen would hand back). */
  if ((rc = hm__signed_recheck(j->mod, j->target, NULL, ksig, path)) == 0 &&
      (rc = hm__file_read(&reg->a, kept, HM__READ_ALLOW_WRITABLE, &f, NULL)) == 0) {
    if (ksig != NULL) {
      f.sig.asked = 1;
      f.sig.buf = ksig->raw;
      f.sig.len = ksig->raw_len;
      snprintf(f.sig.name, sizeof f.sig.name, "%s", strrchr(path, '/') ? strrchr(path, '/') + 1
                                                                       : path);
    }
    j->from = kept; /* its debug file is beside the kept copy */
    rc = hm__job_run(j, NULL, &f);
    f.sig.buf = NULL; /* ksig's */
  }
  hm__file_release(&reg->a, &f);
  return rc;
}

int hm_module_rollback(hm_module *mod) {
  hm_registry *reg;
  hm__job j;
  hm__signed *ksig = NULL;
  char *kept = NULL, *path = NULL;
  int rc = hm__reload_checks(mod, "hm_module_rollback");
  if (rc != 0)
    return rc;
  reg = mod->reg;
  memset(&j, 0, sizeof j);
  j.mod = mod;
  j.reg = reg;
  j.flags = HM__RELOAD_ROLLBACK;
  /* The reload lock is taken again by the job; holding it here would deadlock, and the
   * target is re-checked there through the history under the registry lock. */
  pthread_mutex_lock(&reg->lock);
  rc = rollback_target(mod, &j.v, &kept);
  if (rc == 0) {
    j.target = mod->hist[mod->nhist - 1];
    path = hm__strdup(&reg->a, mod->path);
    if (kept != NULL && mod->kept_sig != NULL &&
        (ksig = hm__signed_dup(&reg->a, mod->kept_sig)) == NULL)
      hm__free(&reg->a, path), path = NULL;
    if (path == NULL)
      rc = hm__fail(HM_ENOMEM, "out of memory rolling back %s", mod->name);
  }
  pthread_mutex_unlock(&reg->lock);
  if (rc != 0) {
    if (j.v != NULL)
      hm__version_unref(reg, j.v);
    hm__free(&reg->a, kept);
    return rc;
  }
  j.reused = j.v != NULL;
  rc = rollback_signed(&j, kept, ksig, path);
  hm__free(&reg->a, kept);
  hm__free(&reg->a, ksig);
  hm__free(&reg->a, path);
  return rc;
}
