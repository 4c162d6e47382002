/*
 * The reload, as the sequence it is: begin (is the module in the state the caller expects),
 * load (read, check, copy, dlopen), resolve (every live slot in the new version), check the
 * typed handles' signatures, hand over state, publish, and report; or reject, taking back
 * what was made. An explicit reload, the watcher's, a prepared one (prepared.c) and a
 * rollback (rollback.c) all run these steps. Calls the tables, the loader, history.c,
 * signed.c and everything below; never the modules or the registry above it.
 */
#include "reload.h"

#include "hotmod/module.h"

#include <stdio.h>
#include <string.h>

/* Has old a private copy to keep for rollback? Asked under reload_lock, which keeps old
 * current. A loaded version's copy is there: hotmod deletes it only when the version is
 * unloaded (a version reused by a rollback is still loaded, so its copy is too). One deleted
 * from outside is found when a rollback reads it (hm__rollback_read), not looked for here:
 * that look was a system call on every reload. */
int hm__copy_present(const hm__version *old) {
  return old != NULL && old->copy_path != NULL;
}

/* The table an unload will publish, made before a version can become current (see
 * hm_module.spare). Under reg->lock. */
static int spare_ready(hm_module *mod) {
  if (mod->spare == NULL && (mod->spare = hm__table_new(mod->reg, NULL, 0)) == NULL)
    return HM_ENOMEM;
  return hm__table_grow(mod->reg, &mod->spare, mod->nsyms);
}

/* Under the module's reload_lock: is the module in the state the caller expects? */
int hm__job_begin(hm__job *j, const char *path) {
  hm_module *mod = j->mod;
  hm_registry *reg = j->reg;
  char *anchored = NULL;
  int rc = 0;
  /* A path from the host is taken against the current directory now, once (before the
   * lock: it asks the filesystem); the watcher's is the module's own. */
  if (path != NULL && !(j->flags & HM__RELOAD_WATCHER) &&
      (anchored = hm__path_anchor(&reg->a, path, &rc)) == NULL)
    return rc;
  pthread_mutex_lock(&reg->lock);
  j->old = mod->cur;
  j->oldnum = mod->cur != NULL ? mod->cur->num : 0;
  if ((j->flags & HM__RELOAD_REVIVE) && j->old != NULL) {
    rc = hm__fail(HM_EEXIST, "a module named %s is already loaded", mod->name);
  } else if (!(j->flags & HM__RELOAD_REVIVE) && j->old == NULL) {
    rc = hm__fail(HM_ENOMOD, "module %s is not loaded", mod->name);
  } else if ((j->flags & HM__RELOAD_ROLLBACK) &&
             (mod->nhist == 0 || mod->hist[mod->nhist - 1] != j->target)) {
    rc = hm__fail(HM_EAGAIN, "module %s was reloaded while its rollback was prepared; try again",
                  mod->name);
  } else if ((j->flags & HM__RELOAD_WATCHER) && path != NULL && strcmp(path, mod->path) != 0) {
    /* The watcher read a path the module has left meanwhile (hm_module_reload_from); it
     * moves its watch next. */
    rc = hm__fail(HM_EAGAIN, "module %s moved from %s to %s", mod->name, path, mod->path);
  } else if (spare_ready(mod) != 0) {
    rc = hm__fail(HM_ENOMEM, "out of memory loading %s", mod->name);
  } else {
    j->path = anchored != NULL ? anchored : hm__path_dup(&reg->a, mod->path);
    anchored = NULL;
    if (j->path == NULL)
      rc = hm__fail(HM_ENOMEM, "out of memory");
    j->new_path = j->old == NULL || (path != NULL && !(j->flags & HM__RELOAD_WATCHER));
    j->seq = ++reg->seq;
  }
  pthread_mutex_unlock(&reg->lock);
  hm__free(&reg->a, anchored);
  return rc;
}

/* Where a copy goes when the tmpfs chosen by default is full: the spill directory, made
 * now if it is not there yet. 0 with *dir set; 1 if the registry's directory was not chosen
 * that way (nowhere else to go); or the error making it (detail recorded). Made under
 * reg->lock, so a fork() sees it whole (the fork handler closes its lock). */
static int spill_dir(hm_registry *reg, const char **dir) {
  int rc = 1;
  pthread_mutex_lock(&reg->lock);
  if (reg->tmpfs_default) {
    rc = reg->spill_dir != NULL ? 0
                                : hm__privdir_make(&reg->a, hm__privdir_spill_root(),
                                                   &reg->spill_dir, &reg->spill_lock_fd);
    *dir = reg->spill_dir;
  }
  pthread_mutex_unlock(&reg->lock);
  return rc;
}

/* hm__load_bytes into the registry's directory, or into the spill directory when the
 * default tmpfs has no room for the copy. */
static int load_into_privdir(hm_registry *reg, hm__job *j, const hm__file *f,
                             const hm__load_opts *lo, hm__elf_info *elf) {
  char first[512];
  const char *spill = NULL;
  int rc = hm__load_bytes(&reg->a, reg->dir, j->mod->name, j->seq, j->path, f, lo, elf, &j->v),
      src;
  if (!HM__ERR_FULL(rc))
    return rc;
  snprintf(first, sizeof first, "%s", hm_errmsg());
  src = spill_dir(reg, &spill);
  if (src == 0)
    return hm__load_bytes(&reg->a, spill, j->mod->name, j->seq, j->path, f, lo, elf, &j->v);
  if (src < 0) {
    char second[400];
    snprintf(second, sizeof second, "%s", hm_errmsg());
    hm__fail(rc, "%s; and no directory to spill over to: %s", first, second);
  }
  return rc;
}

/* The policy for finding number i (lint.c's order) on `mod`: the first set of the module's
 * for the finding, the module's, the registry's for the finding, the registry's. Under
 * reg->lock. */
static hm_lint_policy lint_policy(const hm_module *mod, unsigned i) {
  const hm_registry *reg = mod->reg;
  if (mod->lint_finding[i] != HM_LINT_DEFAULT)
    return (hm_lint_policy)mod->lint_finding[i];
  if (mod->lint != HM_LINT_DEFAULT)
    return mod->lint;
  if (reg->lint_finding[i] != HM_LINT_DEFAULT)
    return (hm_lint_policy)reg->lint_finding[i];
  return reg->lint;
}

/* Read (unless the watcher did), check, copy and dlopen. The module's constructors run. A
 * rollback that reuses a loaded version has nothing to load. */
int hm__job_load(hm__job *j, const hm__file *given) {
  hm_registry *reg = j->reg;
  hm__file own;
  hm__signed *sig = NULL;
  hm_module *prev;
  unsigned untrusted_lint = 0;
  int rc;
  if (j->reused)
    return 0;
  if (given == NULL) {
    /* The hash tells a watcher whether a file is still what was loaded: computed now only
     * while one watches the module; one started later hashes the copy when it asks. */
    unsigned hash = __atomic_load_n(&j->mod->watch_method, __ATOMIC_RELAXED) ? HM__READ_HASH : 0;
    unsigned sign = __atomic_load_n(&reg->signing, __ATOMIC_ACQUIRE) ? HM__READ_SIGNED : 0;
    rc = hm__file_read(&reg->a, j->path,
                       (reg->flags & HM__READ_ALLOW_WRITABLE) | HM__READ_PROBE | hash | sign,
                       &own, NULL);
    if (rc != 0)
      return rc;
  }
  /* Signed builds: the signature over these very bytes before any of them is used. */
  rc = hm__signed_check(j, given != NULL ? given : &own, &untrusted_lint, &sig);
  if (rc != 0) {
    if (given == NULL)
      hm__file_release(&reg->a, &own);
    return rc;
  }
  {
    unsigned warn_lint = 0, look_lint = 0, warned;
    hm__elf_info elf;
    hm__load_opts lo = {0, NULL, 0, NULL, 0};
    hm__probe_req probe;
    const char *syms[HM__PROBE_MAX_SYMS];
    unsigned i;
    pthread_mutex_lock(&reg->lock);
    for (i = 0; i < hm__lint_count(); i++) {
      hm_lint_policy policy = lint_policy(j->mod, i);
      if (policy == HM_LINT_REJECT)
        lo.reject_lint |= hm__lint_bit(i);
      if (policy == HM_LINT_WARN)
        warn_lint |= hm__lint_bit(i);
      if (policy != HM_LINT_OFF)
        look_lint |= hm__lint_bit(i);
    }
    /* Versions that leave destructors behind stay mapped, unless the host does not look. */
    lo.keep_lint = look_lint & HM__LINT_LEAVES_DTORS;
    lo.debug_from = j->from;
    lo.untrusted_lint = untrusted_lint;
    warned = j->mod->lint_warned;
    if (j->mod->probe == 1 || (j->mod->probe == 0 && (reg->flags & HM_FLAG_PROBE))) {
      memset(&probe, 0, sizeof probe);
      probe.helper = reg->probe_helper; /* set before the probe could be asked for */
      probe.path = j->path;
      probe.timeout_ms = reg->probe_timeout_ms;
      probe.version = j->mod->next_num;
      /* The names live as long as the module; the array may grow meanwhile. */
      for (; probe.nsyms < j->mod->nsyms && probe.nsyms < HM__PROBE_MAX_SYMS; probe.nsyms++)
        syms[probe.nsyms] = j->mod->syms[probe.nsyms];
      probe.syms = syms;
      lo.probe = &probe;
    }
    pthread_mutex_unlock(&reg->lock);
    memset(&elf, 0, sizeof elf);
    prev = hm__module_code_enter(j->mod);
    rc = load_into_privdir(reg, j, given != NULL ? given : &own, &lo, &elf);
    hm__module_code_leave(prev);
    j->lint = elf.lint & look_lint;
    /* The findings' strings point into the bytes: put them in words now, those not sent for
     * the module yet (job_publish looks again, under the lock). */
    for (i = 0; rc == 0 && i < hm__lint_count(); i++) {
      unsigned bit = hm__lint_bit(i);
      char what[512];
      if (!(elf.lint & warn_lint & bit) || (warned & bit) ||
          j->nwarn >= sizeof j->warn / sizeof j->warn[0])
        continue;
      hm__lint_what(&elf, bit, what, sizeof what);
      j->warn_bit[j->nwarn] = bit;
      snprintf(j->warn[j->nwarn++], sizeof j->warn[0], "%s: %s (%s); fix: %s", j->path, what,
               hm__lint_name(bit), hm__lint_fix(bit));
    }
  }
  if (given == NULL)
    hm__file_release(&reg->a, &own);
  if (rc == 0) {
    j->v->mod = j->mod;
    j->v->num = j->mod->next_num;
    j->v->build = ++j->mod->builds;
    j->v->profile = (reg->flags & HM_FLAG_PROFILE) != 0;
    j->v->sig = sig;
  } else {
    hm__free(&reg->a, sig);
  }
  return rc;
}

/* Resolve every live slot in the new version, before any hook runs, so a missing symbol
 * rejects it while nothing has changed. From here until publishing, hm_live_get makes sure
 * a slot it adds resolves in the new version too, and completes the incoming table. */
int hm__job_resolve(hm__job *j) {
  hm_registry *reg = j->reg;
  hm__table *t = j->table;
  int rc;
  /* A prepared reload resumes the table its preparation filled: only slots added since are
   * left to resolve. */
  j->table = NULL;
  if (t == NULL && (t = hm__table_new(reg, j->v, 0)) != NULL)
    t->n = 0;
  if (t == NULL)
    return hm__fail(HM_ENOMEM, "out of memory loading %s", j->path);
  pthread_mutex_lock(&reg->lock);
  j->mod->incoming = j->v;
  j->mod->incoming_table = t;
  pthread_mutex_unlock(&reg->lock);
  rc = hm__table_fill(j->mod, j->path);
  if (rc == 0)
    pthread_mutex_unlock(&reg->lock);
  return rc;
}

/* The owned typed handles that constrain the new version, as (symbol, signature) pairs,
 * copied under the lock (handles may be released meanwhile): *out, *n of them. */
static int owned_sigs(hm__job *j, char ***out, size_t *n) {
  hm_registry *reg = j->reg;
  const hm_live *l;
  size_t k = 0, cap = 0;
  char **pairs = NULL;
  int rc = 0;
  pthread_mutex_lock(&reg->lock);
  for (l = j->mod->owned; l != NULL; l = l->next_owned)
    cap += l->sig != NULL && hm__owned_constrains(l, j->mod->grp);
  if (cap != 0 && (pairs = hm__calloc(&reg->a, cap * 2, sizeof *pairs)) == NULL)
    rc = hm__fail(HM_ENOMEM, "out of memory checking the signatures of %s", j->mod->name);
  for (l = j->mod->owned; rc == 0 && l != NULL && k < cap; l = l->next_owned) {
    if (l->sig == NULL || !hm__owned_constrains(l, j->mod->grp))
      continue;
    pairs[2 * k] = j->mod->syms[l->slot]; /* set once, freed with the module */
    if ((pairs[2 * k + 1] = hm__strdup(&reg->a, l->sig)) == NULL)
      rc = hm__fail(HM_ENOMEM, "out of memory checking the signatures of %s", j->mod->name);
    k++;
  }
  pthread_mutex_unlock(&reg->lock);
  *out = pairs;
  *n = k;
  return rc;
}

/* Typed live handles: the new version must declare the same signatures. A handle typed from
 * here on is checked against the incoming version by the get itself. */
int hm__job_check_signatures(hm__job *j) {
  hm_registry *reg = j->reg;
  hm_module *mod = j->mod;
  char **pairs;
  size_t i, n;
  int rc = 0;
  for (i = 0; rc == 0; i++) {
    const char *sym, *sig;
    pthread_mutex_lock(&reg->lock);
    if (i >= mod->nsyms) {
      pthread_mutex_unlock(&reg->lock);
      break;
    }
    sym = mod->syms[i]; /* both set once and never freed before the module */
    sig = mod->sigs[i];
    pthread_mutex_unlock(&reg->lock);
    if (sig != NULL)
      rc = hm__sig_check(j->v, sym, sig);
  }
  if (rc == 0)
    rc = owned_sigs(j, &pairs, &n);
  else
    pairs = NULL, n = 0;
  for (i = 0; i < n; i++) {
    if (rc == 0)
      rc = hm__sig_check(j->v, pairs[2 * i], pairs[2 * i + 1]);
    hm__free(&reg->a, pairs[2 * i + 1]);
  }
  hm__free(&reg->a, pairs);
  return rc;
}

/* Hand over state: the old version keeps owning it unless the new one adopts it, which
 * hm__job_handed_over records once the reload commits (a group may still undo it). */
int hm__job_handover(hm__job *j) {
  hm_module *mod = j->mod, *prev;
  hm__version *old = j->old, *v = j->v;
  hm_load_ctx ctx;
  int hr = HM_LOAD_CONVERTED;
  if ((old == NULL || old->desc == NULL || old->desc->save == NULL) &&
      (v->desc == NULL || v->desc->load == NULL))
    return 0; /* plain modules: no hook, no lock */
  memset(&ctx, 0, sizeof ctx);
  ctx.size = sizeof ctx;
  /* The number job_publish gives it: a reused version still has its old one until then.
   * next_num changes only under reload_lock, which this job holds. */
  ctx.version = j->mod->next_num;
  ctx.rollback = (j->flags & HM__RELOAD_ROLLBACK) != 0;
  ctx.reused = j->reused;
  /* Reused after its successor converted: its unload(0) never ran, so what its globals
   * point to is still its own. */
  ctx.still_owned = j->reused && !v->handed_over;
  ctx.reg = j->reg;
  ctx.api = &hm__module_api;
  pthread_mutex_lock(&mod->hook_lock);
  prev = hm__module_code_enter(mod);
  if (old != NULL && old->desc != NULL && old->desc->save != NULL) {
    ctx.prev = old->desc->save();
    if (ctx.prev != NULL)
      ctx.prev_state_version = old->desc->state_version;
  }
  if (v->desc != NULL && v->desc->load != NULL) {
    /* The handles it takes in there are its own (hm_live_acquire, ctx->api). */
    hm__version *was = hm__loading_set(v);
    hr = v->desc->load(&ctx);
    hm__loading_set(was);
  }
  hm__module_code_leave(prev);
  pthread_mutex_unlock(&mod->hook_lock);
  if (hr != HM_LOAD_ADOPTED && hr != HM_LOAD_CONVERTED) {
    /* Refused: its unload hook must not run; the old version keeps its state. */
    v->desc = NULL;
    return hm__fail(HM_EHOOK, "load hook of %s (version %u of %s) %s %d", j->path, ctx.version,
                    mod->name, hr < 0 ? "refused it with" : "returned the unknown answer",
                    hr);
  }
  j->hooked = v->desc != NULL && v->desc->load != NULL;
  j->adopted = hr == HM_LOAD_ADOPTED && ctx.prev != NULL;
  return 0;
}

void hm__job_handed_over(hm__job *j) {
  j->v->handed_over = 0; /* it owns what it has now, whatever it handed over before */
  if (j->old != NULL)
    j->old->handed_over = j->adopted;
}

void hm__job_undo_handover(hm__job *j) {
  hm_module *prev;
  const hm_module_desc *d = j->v->desc;
  if (!j->hooked || d == NULL || d->unload == NULL)
    return;
  /* As if it handed its state straight back: what it adopted is the old version's again
   * (unload(1): not to be freed), what it converted into is its own to free (unload(0)). */
  pthread_mutex_lock(&j->mod->hook_lock);
  prev = hm__module_code_enter(j->mod);
  d->unload(j->adopted);
  hm__module_code_leave(prev);
  pthread_mutex_unlock(&j->mod->hook_lock);
  j->v->desc = NULL; /* its unload hook has run */
}

/* One warning per finding and module: drop from the job's warnings those the module sent
 * already, and note the ones it sends now. A finding the new version lacks is forgotten, so
 * that it is reported again if it comes back. Under reg->lock. */
static void lint_sent(hm_module *mod, hm__job *j) {
  unsigned i, n = 0, sent = mod->lint_warned & j->lint;
  for (i = 0; i < j->nwarn; i++) {
    if (sent & j->warn_bit[i])
      continue;
    sent |= j->warn_bit[i];
    if (n != i) {
      j->warn_bit[n] = j->warn_bit[i];
      memcpy(j->warn[n], j->warn[i], sizeof j->warn[0]);
    }
    n++;
  }
  j->nwarn = n;
  mod->lint_warned = sent;
}

/* Publish: one atomic store switches every live handle of the module together. Nothing
 * here can fail: the incoming table is complete (every slot added since hm__job_resolve was
 * appended by hm_live_get), and the hooks have run. Under reg->lock, with the old version
 * retired already (hm__version_retire). */
void hm__job_publish_locked(hm__job *j) {
  hm_module *mod = j->mod;
  hm_registry *reg = j->reg;
  hm__version *v = j->v;
  hm__table *t;
  t = mod->incoming_table;
  mod->incoming = NULL;
  mod->incoming_table = NULL;
  /* Atomic: a reused version may be renumbered while a snapshot taken on it earlier reads
   * its number for a message. */
  __atomic_store_n(&v->num, mod->next_num++, __ATOMIC_RELAXED);
  if (j->new_path) {
    hm__free(&reg->a, mod->path);
    mod->path = j->path;
    j->path = NULL;
  }
  if (j->flags & HM__RELOAD_ROLLBACK)
    hm__history_rolled_back(mod, j->old);
  else
    hm__history_superseded(mod, j->old, j->old_copy);
  if (!j->reused) {
    v->published = 1;
    v->next = mod->versions;
    mod->versions = v;
    reg->nloaded++;
    lint_sent(mod, j);
  }
  /* The new version's handles follow from now on. */
  v->frozen = 0;
  mod->cur = v;
  hm__signed_published(mod, v);
  __atomic_store_n(&mod->cur_num, v->num, __ATOMIC_RELEASE);
  hm__publish(mod, t);
  reg->stats.loads++;
  if (j->flags & HM__RELOAD_ROLLBACK)
    mod->n_rollbacks++;
  else if (j->old != NULL)
    mod->n_reloads++;
  /* The loader's reference on v becomes its "current" reference. */
}

/* Nothing changed: take back what the reload made, and report it. Called with the module's
 * reload_lock held, and releases it: the incoming version and table are this job's only
 * while it holds the lock (a reload that starts once it is released installs its own). */
int hm__job_reject(hm__job *j, int rc) {
  hm_registry *reg = j->reg;
  hm__table *t = NULL;
  int report = !(j->flags & HM__RELOAD_QUIET) &&
               (!(j->flags & HM__RELOAD_WATCHER) || hm__err_is_final(rc));
  char detail[1024];
  pthread_mutex_lock(&reg->lock);
  if (j->v != NULL && j->mod->incoming == j->v) {
    t = j->mod->incoming_table;
    j->mod->incoming = NULL;
    j->mod->incoming_table = NULL;
  }
  if (report)
    reg->stats.rejects++;
  pthread_mutex_unlock(&reg->lock);
  pthread_mutex_unlock(&j->mod->reload_lock);
  /* The refused version's destructors run in the discard and may fail calls of their own:
   * keep the detail of this failure for the event. */
  snprintf(detail, sizeof detail, "%s", hm_errmsg());
  hm__table_discard(t);
  hm__table_discard(j->table);
  if (j->v != NULL && j->reused)
    hm__version_unref(reg, j->v); /* still loaded for whoever pins it */
  else if (j->v != NULL)
    hm__version_discard(reg, j->v);
  hm__free(&reg->a, j->path);
  hm__fail(rc, "%s", detail);
  if (report)
    hm__emit(reg, HM_EVENT_REJECTED, j->mod, j->oldnum, rc);
  return rc;
}

/* Take the module's prepared reload off it, if any. Under reg->lock. */
hm__job *hm__prepared_take(hm_module *mod) {
  hm__job *p = mod->prepared;
  mod->prepared = NULL;
  return p;
}

/* A prepared reload that will not be published: unloaded now, quietly (its load hook never
 * ran, and nobody was told it would come). No lock held. */
void hm__prepared_discard(hm__job *p) {
  hm_registry *reg;
  if (p == NULL)
    return;
  reg = p->reg;
  hm__table_discard(p->table);
  if (p->reused)
    hm__version_unref(reg, p->v); /* a rollback's: still loaded for whoever holds it */
  else
    hm__version_discard(reg, p->v);
  hm__free(&reg->a, p->path);
  hm__prepared_free(p);
}

void hm__prepared_free(hm__job *p) {
  hm__pgroup *g = p->pgroup;
  if (g != NULL && __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) == 0)
    hm__free(&p->reg->a, g);
  hm__free(&p->reg->a, p);
}

/* The second half of every reload, under the module's reload_lock with the new version
 * loaded: resolve, check, hand over, publish (or refuse), then the events. Releases
 * reload_lock. */
int hm__job_complete(hm__job *j) {
  int rc = hm__job_resolve(j);
  if (rc == 0)
    rc = hm__job_check_signatures(j);
  if (rc == 0)
    rc = hm__job_handover(j);
  if (rc != 0)
    return hm__job_reject(j, rc); /* releases reload_lock */
  hm__job_handed_over(j);
  pthread_mutex_lock(&j->reg->lock);
  /* The old version's handles stay on what they reach (a call still running in it sees the
   * versions it saw). */
  if (j->old != NULL)
    hm__version_retire(j->old);
  hm__job_publish_locked(j);
  pthread_mutex_unlock(&j->reg->lock);
  hm__job_done(j);
  return 0;
}

void hm__job_done(hm__job *j) {
  hm_module *mod = j->mod;
  hm__job *stale = NULL;
  unsigned num;
  char comment[HM__MINISIG_COMMENT_MAX + 1] = "";
  /* A build prepared for the version this one replaced cannot be published any more. */
  pthread_mutex_lock(&j->reg->lock);
  if (mod->prepared != NULL)
    stale = hm__prepared_take(mod);
  pthread_mutex_unlock(&j->reg->lock);
  /* Once the lock is released another thread may retire and unload the new version. */
  num = j->v->num;
  if (j->v->sig != NULL) {
    size_t n = strnlen(j->v->sig->comment, sizeof comment - 1);
    memcpy(comment, j->v->sig->comment, n);
    comment[n] = '\0';
  }
  pthread_mutex_unlock(&mod->reload_lock);
  hm__prepared_discard(stale);
  hm__free(&j->reg->a, j->path); /* NULL when it became the module's path */
  if (j->new_path)
    hm__watch_poke(j->reg); /* a new path (a load, or hm_module_reload_from) is watched too */
  /* A signed build's detail is its trusted comment ("build 1234 from CI"). */
  hm__emit_detail(j->reg,
                  (j->flags & HM__RELOAD_ROLLBACK) ? HM_EVENT_ROLLED_BACK : HM_EVENT_LOADED, mod,
                  num, 0, comment);
  {
    unsigned i;
    for (i = 0; i < j->nwarn; i++)
      hm__emit_detail(j->reg, HM_EVENT_WARNING, mod, num, 0, j->warn[i]);
  }
  if (j->old != NULL) {
    hm__emit(j->reg, HM_EVENT_RETIRED, mod, j->oldnum, 0);
    /* Dropped only now, so that its UNLOADED event cannot come before RETIRED. */
    hm__version_unref(j->reg, j->old);
  }
}

/* Run a reload job whose mod, reg, flags (and for a reused rollback, v and reused) are set. */
int hm__job_run(hm__job *j, const char *path, const hm__file *file) {
  hm_module *mod = j->mod;
  int rc;
  pthread_mutex_lock(&mod->reload_lock);
  rc = hm__job_begin(j, path);
  if (rc != 0) {
    pthread_mutex_unlock(&mod->reload_lock);
    if (j->reused)
      hm__version_unref(j->reg, j->v);
    return rc;
  }
  /* The build rolled back from stays "no change" for the watcher: its hash is needed. j->old
   * is kept loaded by the reload lock. */
  if (j->flags & HM__RELOAD_ROLLBACK)
    hm__version_hash(j->reg, j->old);
  rc = hm__job_load(j, file);
  if (rc != 0)
    return hm__job_reject(j, rc); /* releases reload_lock */
  j->old_copy = !(j->flags & HM__RELOAD_ROLLBACK) && hm__copy_present(j->old);
  return hm__job_complete(j);
}

int hm__reload(hm_module *mod, const char *path, const hm__file *file, unsigned flags) {
  hm__job j;
  memset(&j, 0, sizeof j);
  j.mod = mod;
  j.reg = mod->reg;
  j.flags = flags;
  return hm__job_run(&j, path, file);
}

int hm__reload_checks(hm_module *mod, const char *what) {
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "%s: NULL module", what);
  if (hm__in_module_code())
    return hm__refuse_in_module_code(what);
  return hm__check_forked(mod->reg, what);
}

int hm_module_reload(hm_module *mod) {
  int rc = hm__reload_checks(mod, "hm_module_reload");
  return rc != 0 ? rc : hm__reload(mod, NULL, NULL, 0);
}

int hm_module_reload_from(hm_module *mod, const char *path) {
  int rc = hm__reload_checks(mod, "hm_module_reload_from");
  if (rc != 0)
    return rc;
  if (path == NULL || path[0] == '\0')
    return hm__fail(HM_EINVAL, "hm_module_reload_from: empty path");
  return hm__reload(mod, path, NULL, 0);
}
