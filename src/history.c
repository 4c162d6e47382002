/*
 * Rollback's memory: the builds that were current before the current one, the private copy
 * kept of the last of them, and the content hash that tells the watcher a file is what
 * serves. The reload updates it when it publishes; rollback.c reads it. Calls only the
 * reclaimer, file.c, signed.c and the leaves.
 */
#include "reload.h"

#include <string.h>
#include <unistd.h>

#define HM__HISTORY_MAX 64

/* The reclaimer deletes a kept copy that nothing maps any more: the unlink is a system call
 * that a reload (or a poll) need not wait for. */
typedef struct kept_unlink {
  hm__defer_node node;
  hm__allocator a;
  char *path;
} kept_unlink;

static void kept_unlink_run(void *arg) {
  kept_unlink *k = arg;
  hm__allocator a = k->a;
  hm__copy_remove(k->path); /* its version may be kept mapped */
  hm__free(&a, k->path);
  hm__free(&a, k);
}

/* Forget the kept copy. Under reg->lock. A version still loaded keeps its file until it is
 * unloaded (gdb and perf read it); one already unloaded left it here to delete. */
void hm__kept_drop(hm_module *mod) {
  hm__version *v;
  kept_unlink *k;
  if (mod->kept_path == NULL)
    return;
  for (v = mod->versions; v != NULL; v = v->next)
    if (v->build == mod->kept_build)
      break;
  /* Still on the list means its unload has not begun (the list goes first, under this
   * lock), so it will see copy_kept cleared and delete its file itself. */
  if (v != NULL) {
    __atomic_store_n(&v->copy_kept, 0, __ATOMIC_RELEASE);
  } else if (mod->reg->flags & HM_FLAG_PROFILE) {
    /* Its version was kept for profiling, and the copy with it (profile.c deletes it). */
  } else if (mod->reg->rc != NULL && (k = hm__malloc(&mod->reg->a, sizeof *k)) != NULL) {
    k->a = mod->reg->a;
    k->path = mod->kept_path; /* the reclaimer's now */
    mod->kept_path = NULL;
    hm__defer(mod->reg->rc, &k->node, kept_unlink_run, k, 0);
  } else {
    hm__copy_remove(mod->kept_path);
  }
  hm__free(&mod->reg->a, mod->kept_path);
  mod->kept_path = NULL;
  mod->kept_build = 0;
  hm__free(&mod->reg->a, mod->kept_sig);
  mod->kept_sig = NULL;
}

/* A reload replaced `old` (NULL on a first load): it joins the history, and its private copy
 * (when `old_copy` says it is still there) becomes the one kept for rollback (the one kept
 * before goes). Under reg->lock. */
void hm__history_superseded(hm_module *mod, hm__version *old, int old_copy) {
  hm_registry *reg = mod->reg;
  mod->have_rolled_back = 0;
  hm__kept_drop(mod);
  if (old == NULL)
    return;
  if (mod->nhist == mod->caphist && mod->nhist < HM__HISTORY_MAX) {
    size_t cap = mod->caphist ? mod->caphist * 2 : 4;
    unsigned *h = hm__realloc(&reg->a, mod->hist, cap * sizeof *h);
    if (h != NULL) {
      mod->hist = h;
      mod->caphist = cap;
    }
  }
  if (mod->nhist == mod->caphist && mod->nhist > 0) {
    /* Full (or out of memory): the oldest entry goes. */
    memmove(mod->hist, mod->hist + 1, (mod->nhist - 1) * sizeof *mod->hist);
    mod->nhist--;
  }
  if (mod->nhist < mod->caphist)
    mod->hist[mod->nhist++] = old->build;
  if (old_copy && (mod->kept_path = hm__strdup(&reg->a, old->copy_path)) != NULL) {
    mod->kept_build = old->build;
    /* The signature file at the path belongs to the newer build by now: the copy keeps the
     * one it was verified with (out of memory: none, and a rollback with keys is refused). */
    mod->kept_sig = hm__signed_dup(&reg->a, old->sig);
    mod->kept_num = old->num;
    __atomic_store_n(&old->copy_kept, 1, __ATOMIC_RELEASE);
  }
}

/* A rollback replaced `old` with the last build of the history: that entry goes, `old` does
 * not join (no redo), and neither copy is kept. The watcher takes old's bytes at the module's
 * path as no change (when their hash is known: see hm__version_hash). Under reg->lock. */
void hm__history_rolled_back(hm_module *mod, hm__version *old) {
  if (mod->nhist > 0)
    mod->nhist--;
  hm__kept_drop(mod);
  mod->have_rolled_back = old->id.hashed;
  mod->rolled_back_hash = old->id.hash;
}

/* v's content hash, from its private copy (the bytes that were loaded) if its reload did not
 * compute it. The caller keeps v loaded; no lock held. */
void hm__version_hash(hm_registry *reg, hm__version *v) {
  hm__file f;
  int known;
  pthread_mutex_lock(&reg->lock);
  known = v->id.hashed;
  pthread_mutex_unlock(&reg->lock);
  if (known || v->copy_path == NULL ||
      hm__file_read(&reg->a, v->copy_path, HM__READ_ALLOW_WRITABLE | HM__READ_HASH, &f, NULL) != 0)
    return;
  pthread_mutex_lock(&reg->lock);
  v->id.hash = f.id.hash;
  v->id.hashed = 1;
  pthread_mutex_unlock(&reg->lock);
  hm__file_release(&reg->a, &f);
}

void hm__hash_current(hm_module *mod) {
  hm_registry *reg = mod->reg;
  hm__version *v;
  pthread_mutex_lock(&reg->lock);
  v = mod->cur;
  if (v == NULL || v->id.hashed) {
    pthread_mutex_unlock(&reg->lock);
    return;
  }
  hm__version_ref(v);
  pthread_mutex_unlock(&reg->lock);
  hm__version_hash(reg, v);
  hm__version_unref(reg, v);
}
