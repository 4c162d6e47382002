/*
 * Prepared reloads, for queued mode: the watcher's thread does every step of a reload that
 * callers cannot see (read, check, copy, dlopen, resolve, signatures) and keeps the result;
 * hm_registry_poll then runs only the hooks and the publish on the host's thread. Calls the
 * reload's steps (reload.c).
 */
#include "reload.h"

#include <string.h>

int hm__prepare_job(hm__job *j, const char *path, const hm__file *file) {
  hm_module *mod = j->mod;
  hm_registry *reg = j->reg;
  hm__job *prev;
  int rc;
  pthread_mutex_lock(&mod->reload_lock);
  rc = hm__job_begin(j, path);
  if (rc != 0) {
    pthread_mutex_unlock(&mod->reload_lock);
    if (j->reused)
      hm__version_unref(reg, j->v);
    hm__free(&reg->a, j);
    return rc;
  }
  /* The build a rollback leaves stays "no change" for the watcher once the poll publishes
   * it (as hm__job_run does): its hash is needed, and j->old is alive now. */
  if (j->flags & HM__RELOAD_ROLLBACK)
    hm__version_hash(reg, j->old);
  rc = hm__job_load(j, file);
  j->from = NULL; /* borrowed for the load only: the job outlives the caller's string */
  /* Every live slot known now, resolved and type-checked here: a build that lacks one is
   * refused on this thread. The table goes back to the job until the poll resumes it. */
  if (rc == 0 && (rc = hm__job_resolve(j)) == 0) {
    pthread_mutex_lock(&reg->lock);
    j->table = mod->incoming_table;
    mod->incoming = NULL;
    mod->incoming_table = NULL;
    pthread_mutex_unlock(&reg->lock);
    rc = hm__job_check_signatures(j);
  }
  if (rc != 0) {
    rc = hm__job_reject(j, rc); /* releases reload_lock */
    hm__free(&reg->a, j);
    return rc;
  }
  /* Installed before reload_lock goes, so an unload or reload that follows sees it. The
   * current version's copy is looked at here, off the poller's thread; the poll publishes
   * only over that same version. */
  j->old_copy = hm__copy_present(j->old);
  j->old = NULL; /* not kept alive: the poll checks that the version it replaces is current */
  pthread_mutex_lock(&reg->lock);
  prev = hm__prepared_take(mod);
  mod->prepared = j;
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&mod->reload_lock);
  hm__prepared_discard(prev); /* hm__history_superseded by the newer build */
  return 0;
}

static int prepare_new(hm_module *mod, const char *path, const hm__file *file,
                       unsigned flags) {
  hm_registry *reg = mod->reg;
  hm__job *j = hm__calloc(&reg->a, 1, sizeof *j);
  if (j == NULL)
    return hm__fail(HM_ENOMEM, "out of memory preparing a reload of %s", mod->name);
  j->mod = mod;
  j->reg = reg;
  j->flags = flags;
  return hm__prepare_job(j, path, file);
}

int hm__prepare(hm_module *mod, const char *path, const hm__file *file) {
  return prepare_new(mod, path, file, HM__RELOAD_WATCHER);
}

int hm__prepare_request(hm_module *mod, const char *path) {
  return prepare_new(mod, path, NULL, 0);
}

int hm__prepared_apply(hm_module *mod) {
  hm_registry *reg = mod->reg;
  hm__job *p, j;
  /* Never wait for a load: the lock is held while the watcher prepares a newer build (the
   * read, the copy, dlopen, a probe) or another thread reloads the module. Either replaces
   * what is prepared now; what is left, the next poll publishes. */
  if (pthread_mutex_trylock(&mod->reload_lock) != 0)
    return 1;
  pthread_mutex_lock(&reg->lock);
  p = mod->prepared;
  if (p == NULL) {
    pthread_mutex_unlock(&reg->lock);
    pthread_mutex_unlock(&mod->reload_lock);
    return 1; /* another poller took it, or it was dropped */
  }
  (void)hm__prepared_take(mod);
  /* If it is not published after all, the reclaimer unloads it: not this thread. (A
   * rollback's reused version is only unreferenced.) */
  if (!p->reused)
    p->v->discard_later = 1;
  /* Prepared for the version that is current, at the module's path (unless it was asked
   * for from another path)? Numbers are never reused, so a version retired since cannot
   * pass for it. */
  if (mod->cur == NULL || mod->cur->num != p->oldnum ||
      (!p->new_path && strcmp(p->path, mod->path) != 0)) {
    pthread_mutex_unlock(&reg->lock);
    pthread_mutex_unlock(&mod->reload_lock);
    hm__prepared_discard(p);
    return 1;
  }
  j = *p;
  j.old = mod->cur; /* kept current, and alive, by reload_lock */
  j.pgroup = NULL;
  pthread_mutex_unlock(&reg->lock);
  hm__prepared_free(p);
  return hm__job_complete(&j);
}

void hm__prepared_drop(hm_module *mod, int forked) {
  hm__job *p;
  pthread_mutex_lock(&mod->reg->lock);
  p = hm__prepared_take(mod);
  pthread_mutex_unlock(&mod->reg->lock);
  if (p == NULL)
    return;
  if (!forked) {
    hm__prepared_discard(p);
    return;
  }
  /* A forked child frees memory only: the mapping and the copy are the parent's (and a
   * rollback's reused version stays on the module's list). */
  {
    hm__allocator a = p->v->a;
    hm__free(&p->reg->a, p->table);
    if (!p->reused) {
      hm__free(&a, p->v->copy_path);
      hm__free(&a, p->v);
    }
    hm__free(&p->reg->a, p->path);
    hm__prepared_free(p);
  }
}
