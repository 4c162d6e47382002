/*
 * hm_module_rollback: the build before the current one comes back, as it is while something
 * still keeps it loaded, else from the kept copy, through the reload's steps (reload.c) with
 * the state handed over as for any reload; with trusted keys, checked again (signed.c); or,
 * for the control socket in queued mode, prepared for the poll (prepared.c).
 */
#include "reload.h"

#include <stdio.h>
#include <string.h>

/* The build to go back to: a loaded version of it (referenced), else the kept copy's path
 * (copied). Under reg->lock. */
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
     * unloaded already. Not one whose load hook took live handles: they reach what they
     * reached when it was retired, or nothing; its kept copy is loaded afresh instead. */
    while (v->build == want && refs > 0 && v->cells == NULL) {
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

int hm__rollback_take(hm_module *mod, hm__rollback *rb) {
  hm_registry *reg = mod->reg;
  int rc = rollback_target(mod, &rb->reuse, &rb->kept);
  if (rc != 0)
    return rc;
  rb->target = mod->hist[mod->nhist - 1];
  rb->path = hm__strdup(&reg->a, mod->path);
  if (rb->kept != NULL && mod->kept_sig != NULL)
    rb->ksig = hm__signed_dup(&reg->a, mod->kept_sig);
  if (rb->path == NULL || (rb->kept != NULL && mod->kept_sig != NULL && rb->ksig == NULL))
    return hm__fail(HM_ENOMEM, "out of memory rolling back %s", mod->name);
  return 0;
}

/* Is the kept copy no longer the one rb took? A reload on another thread published since,
 * and deleted it (the copy is read outside the locks): the rollback lost to that reload, as
 * the job's own check would say, not to a missing file. */
static int kept_replaced(hm_module *mod, const hm__rollback *rb) {
  int replaced;
  pthread_mutex_lock(&mod->reg->lock);
  replaced = mod->kept_path == NULL || strcmp(mod->kept_path, rb->kept) != 0;
  pthread_mutex_unlock(&mod->reg->lock);
  return replaced;
}

/* Signed builds: the build comes back only with a signature by a key trusted now, over its
 * bytes: a version still loaded is checked over its private copy here; the kept copy is
 * read with the signature it was verified with, and checked on the way like any load. */
int hm__rollback_read(hm_module *mod, hm__rollback *rb) {
  hm_registry *reg = mod->reg;
  const char *slash;
  int rc;
  if (rb->reuse != NULL)
    return hm__signed_recheck(mod, rb->reuse->build, rb->reuse->copy_path, rb->reuse->sig,
                              rb->path);
  /* Loaded again from the kept copy, under a fresh private name (the kept path may still
   * name a mapped object, which dlopen would hand back). */
  if ((rc = hm__signed_recheck(mod, rb->target, NULL, rb->ksig, rb->path)) != 0)
    return rc;
  rc = hm__file_read(&reg->a, rb->kept, HM__READ_ALLOW_WRITABLE, &rb->file, NULL);
  if (rc != 0 && kept_replaced(mod, rb))
    return hm__fail(HM_EAGAIN, "module %s was reloaded while its rollback read the kept copy; "
                    "try again", mod->name);
  /* Deleted from outside hotmod since (a reload no longer looks for it): as if not kept. */
  if (rc == HM_ENOENT)
    return hm__fail(HM_ENOPREV,
                    "module %s: the build to roll back to is no longer loaded and its kept copy "
                    "%s is gone",
                    mod->name, rb->kept);
  if (rc != 0)
    return rc;
  if (rb->ksig != NULL) {
    rb->file.sig.asked = 1;
    rb->file.sig.buf = rb->ksig->raw; /* borrowed: hm__rollback_drop gives it back */
    rb->file.sig.len = rb->ksig->raw_len;
    slash = strrchr(rb->path, '/');
    snprintf(rb->file.sig.name, sizeof rb->file.sig.name, "%s",
             slash != NULL ? slash + 1 : rb->path);
  }
  return 0;
}

void hm__rollback_drop(hm_registry *reg, hm__rollback *rb) {
  if (rb->reuse != NULL)
    hm__version_unref(reg, rb->reuse);
  rb->reuse = NULL;
  if (rb->ksig != NULL && rb->file.sig.buf == rb->ksig->raw)
    rb->file.sig.buf = NULL; /* rb->ksig's */
  hm__file_release(&reg->a, &rb->file);
  hm__free(&reg->a, rb->kept);
  hm__free(&reg->a, rb->ksig);
  hm__free(&reg->a, rb->path);
  memset(rb, 0, sizeof *rb);
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
  hm__rollback rb;
  int rc;
  reg = mod->reg;
  memset(&j, 0, sizeof j);
  memset(&rb, 0, sizeof rb);
  j.mod = mod;
  j.reg = reg;
  j.flags = HM__RELOAD_ROLLBACK;
  /* The reload lock is taken again by the job; holding it here would deadlock, and the
   * target is re-checked there through the history under the registry lock. */
  pthread_mutex_lock(&reg->lock);
  rc = hm__rollback_take(mod, &rb);
  pthread_mutex_unlock(&reg->lock);
  if (rc == 0)
    rc = hm__rollback_read(mod, &rb);
  if (rc == 0) {
    j.target = rb.target;
    j.v = rb.reuse; /* the job takes the reference over */
    j.reused = j.v != NULL;
    rb.reuse = NULL;
    j.from = rb.kept; /* its debug file is beside the kept copy */
    rc = rollback_job(&j, j.reused ? NULL : &rb.file, queued);
  }
  hm__rollback_drop(reg, &rb);
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
