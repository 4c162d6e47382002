/*
 * Group reloads: several modules' new builds become current in one step, or none does. Each
 * member runs the reload's steps (reload.c) in turn: begin, load, resolve and check
 * signatures for all, then every member's hooks, then one publish under one lock. Between
 * its resolve and its publish a member is marked with the group, so that its incoming
 * version's handles on other members are bound to their incoming versions (cells.c), and
 * the handles its outgoing version took constrain nothing (they go with it).
 *
 * Layer 7 (docs/architecture.md): calls reload.c, rollback.c, history.c, cells.c and below.
 */
#include "reload.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct hm__group {
  hm_registry *reg;
  size_t n;
  hm__job *jobs;  /* one per member, in the caller's order */
  size_t *order;  /* the members in the order their reload locks are taken */
  size_t failed;  /* the member that made it fail */
};

/* Reload locks are taken in one order (the modules' addresses), so that two groups that
 * share members cannot wait for each other. Groups are small: an insertion sort. */
static void lock_order(struct hm__group *g) {
  size_t i, k;
  for (i = 0; i < g->n; i++) {
    uintptr_t at = (uintptr_t)g->jobs[i].mod;
    for (k = i; k > 0 && (uintptr_t)g->jobs[g->order[k - 1]].mod > at; k--)
      g->order[k] = g->order[k - 1];
    g->order[k] = i;
  }
}

/* The members' names, for the message: "a, b". */
static void names(const struct hm__group *g, char *out, size_t len) {
  size_t i, used = 0;
  out[0] = '\0';
  for (i = 0; i < g->n && used < len; i++) {
    int w = snprintf(out + used, len - used, "%s%s", i ? ", " : "", g->jobs[i].mod->name);
    used += w > 0 ? (size_t)w : 0;
  }
}

static void set_group(struct hm__group *g, struct hm__group *to) {
  size_t i;
  pthread_mutex_lock(&g->reg->lock);
  for (i = 0; i < g->n; i++)
    g->jobs[i].mod->grp = to;
  pthread_mutex_unlock(&g->reg->lock);
}

/* Nothing changes: the hooks that accepted are undone (in reverse), every member's job is
 * taken back quietly (which releases its reload lock), and one REJECTED names member `at`
 * and why. Returns rc. */
static int group_reject(struct hm__group *g, size_t at, int rc, size_t hooked) {
  hm_registry *reg = g->reg;
  hm__job *bad = &g->jobs[at];
  int report = !(bad->flags & HM__RELOAD_WATCHER) || hm__err_is_final(rc);
  char detail[1024], who[512];
  size_t i;
  g->failed = at;
  snprintf(detail, sizeof detail, "%s", hm_errmsg());
  for (i = hooked; i-- > 0;)
    hm__job_undo_handover(&g->jobs[i]);
  /* The handles the incoming versions took are let go before any of them is unloaded:
   * those bound to another member's incoming version hold it. */
  pthread_mutex_lock(&reg->lock);
  for (i = 0; i < g->n; i++)
    if (g->jobs[i].v != NULL && !g->jobs[i].reused)
      hm__cells_drop_unpublished(g->jobs[i].v);
  pthread_mutex_unlock(&reg->lock);
  set_group(g, NULL);
  for (i = 0; i < g->n; i++)
    hm__job_reject(&g->jobs[i], rc);
  names(g, who, sizeof who);
  hm__fail(rc, "group reload of %s: %s: %s", who, bad->mod->name, detail);
  if (report) {
    pthread_mutex_lock(&reg->lock);
    reg->stats.rejects++;
    pthread_mutex_unlock(&reg->lock);
    hm__emit(reg, HM_EVENT_REJECTED, bad->mod, bad->oldnum, rc);
  }
  return rc;
}

/* Every member current at once: the outgoing versions are retired first (their handles stay
 * on the old versions of the others), then each member's table is published and the cells
 * bound to its incoming version move to it. */
static void group_publish(struct hm__group *g) {
  size_t i;
  hm__cell *c;
  for (i = 0; i < g->n; i++)
    hm__job_handed_over(&g->jobs[i]);
  pthread_mutex_lock(&g->reg->lock);
  for (i = 0; i < g->n; i++)
    if (g->jobs[i].old != NULL)
      hm__version_retire(g->jobs[i].old);
  for (i = 0; i < g->n; i++) {
    for (c = g->jobs[i].mod->cells; c != NULL; c = c->next_t)
      c->bound_in = 0;
    hm__job_publish_locked(&g->jobs[i]);
  }
  for (i = 0; i < g->n; i++)
    g->jobs[i].mod->grp = NULL;
  pthread_mutex_unlock(&g->reg->lock);
}

/* The first steps, once the reload locks are held: begin, then every member's new build
 * loaded. A failure at member i of a step rejects the group (and releases the locks). */
static int group_start(struct hm__group *g, const hm__member *m) {
  size_t i;
  int rc;
  for (i = 0; i < g->n; i++)
    if ((rc = hm__job_begin(&g->jobs[i], m[i].path)) != 0)
      return group_reject(g, i, rc, 0);
  set_group(g, g);
  for (i = 0; i < g->n; i++) {
    hm__job *j = &g->jobs[i];
    if (j->flags & HM__RELOAD_ROLLBACK)
      hm__version_hash(g->reg, j->old); /* the build rolled back from is "no change" */
    if ((rc = hm__job_load(j, m[i].file)) != 0)
      return group_reject(g, i, rc, 0);
    j->old_copy = !(j->flags & HM__RELOAD_ROLLBACK) && hm__copy_present(j->old);
  }
  return 0;
}

/* Resolve every member's live slots, then check their signatures. */
static int group_resolve(struct hm__group *g) {
  size_t i;
  int rc;
  for (i = 0; i < g->n; i++)
    if ((rc = hm__job_resolve(&g->jobs[i])) != 0)
      return group_reject(g, i, rc, 0);
  for (i = 0; i < g->n; i++)
    if ((rc = hm__job_check_signatures(&g->jobs[i])) != 0)
      return group_reject(g, i, rc, 0);
  return 0;
}

/* The rest, with every member's build loaded: resolve, check, every member's hooks, one
 * publish, the events. */
static int group_finish(struct hm__group *g) {
  size_t i;
  int rc = group_resolve(g);
  if (rc != 0)
    return rc;
  for (i = 0; i < g->n; i++)
    if ((rc = hm__job_handover(&g->jobs[i])) != 0)
      return group_reject(g, i, rc, i);
  group_publish(g);
  for (i = 0; i < g->n; i++)
    hm__job_done(&g->jobs[i]);
  return 0;
}

/* A group for the members `m` (their reload locks taken), or HM_ENOMEM with the members'
 * reused versions let go. */
static int group_new(struct hm__group *g, hm_registry *reg, const hm__member *m, size_t n,
                     unsigned flags) {
  size_t i;
  memset(g, 0, sizeof *g);
  g->reg = reg;
  g->n = n;
  g->jobs = hm__calloc(&reg->a, n, sizeof *g->jobs);
  g->order = hm__calloc(&reg->a, n, sizeof *g->order);
  if (g->jobs == NULL || g->order == NULL) {
    for (i = 0; i < n; i++)
      if (m[i].reuse != NULL)
        hm__version_unref(reg, m[i].reuse);
    hm__free(&reg->a, g->jobs);
    hm__free(&reg->a, g->order);
    return hm__fail(HM_ENOMEM, "out of memory for a group reload of %zu modules", n);
  }
  for (i = 0; i < n; i++) {
    hm__job *j = &g->jobs[i];
    j->mod = m[i].mod;
    j->reg = reg;
    j->flags = flags | HM__RELOAD_QUIET;
    j->v = m[i].reuse;
    j->reused = m[i].reuse != NULL;
    j->target = m[i].target;
    j->from = m[i].from;
  }
  lock_order(g);
  for (i = 0; i < n; i++)
    pthread_mutex_lock(&g->jobs[g->order[i]].mod->reload_lock);
  return 0;
}

static void group_free(struct hm__group *g, size_t *failed) {
  if (failed != NULL)
    *failed = g->failed;
  hm__free(&g->reg->a, g->jobs);
  hm__free(&g->reg->a, g->order);
}

int hm__group_reload(hm_registry *reg, const hm__member *m, size_t n, unsigned flags,
                     size_t *failed) {
  struct hm__group g;
  int rc = group_new(&g, reg, m, n, flags);
  if (rc != 0)
    return rc;
  if ((rc = group_start(&g, m)) == 0)
    rc = group_finish(&g);
  group_free(&g, failed);
  return rc;
}

/* ---- Queued mode: prepared on the watcher's thread, published by a poll ----------------- */

/* Keep the loaded, resolved and checked members as the modules' prepared reloads, one group
 * (each replacing and dropping a build prepared before). The reload locks are released. */
static int group_keep(struct hm__group *g) {
  hm_registry *reg = g->reg;
  hm__pgroup *pg = hm__calloc(&reg->a, 1, sizeof *pg + g->n * sizeof pg->mods[0]);
  hm__job **kept = hm__calloc(&reg->a, g->n, sizeof *kept), *prev;
  size_t i;
  for (i = 0; pg != NULL && kept != NULL && i < g->n; i++)
    if ((kept[i] = hm__malloc(&reg->a, sizeof **kept)) == NULL)
      break;
  if (pg == NULL || kept == NULL || i < g->n) {
    for (i = 0; kept != NULL && i < g->n; i++)
      hm__free(&reg->a, kept[i]);
    hm__free(&reg->a, kept);
    hm__free(&reg->a, pg);
    hm__fail(HM_ENOMEM, "out of memory preparing a group");
    return group_reject(g, 0, HM_ENOMEM, 0);
  }
  pg->n = g->n;
  pg->refs = (int)g->n;
  set_group(g, NULL);
  for (i = 0; i < g->n; i++) {
    hm__job *j = &g->jobs[i];
    pg->mods[i] = j->mod;
    j->old_copy = hm__copy_present(j->old);
    j->old = NULL; /* the poll checks that the version it replaces is current */
    j->pgroup = pg;
    *kept[i] = *j;
    pthread_mutex_lock(&reg->lock);
    prev = hm__prepared_take(j->mod);
    j->mod->prepared = kept[i];
    pthread_mutex_unlock(&reg->lock);
    pthread_mutex_unlock(&j->mod->reload_lock);
    hm__prepared_discard(prev);
  }
  hm__free(&reg->a, kept);
  return 0;
}

int hm__group_prepare(hm_registry *reg, const hm__member *m, size_t n, size_t *failed) {
  struct hm__group g;
  size_t i;
  int rc = group_new(&g, reg, m, n, HM__RELOAD_WATCHER);
  if (rc != 0)
    return rc;
  if ((rc = group_start(&g, m)) == 0 && (rc = group_resolve(&g)) == 0) {
    /* The tables go back to the jobs until the poll resumes them. */
    pthread_mutex_lock(&reg->lock);
    for (i = 0; i < n; i++) {
      g.jobs[i].table = g.jobs[i].mod->incoming_table;
      g.jobs[i].mod->incoming = NULL;
      g.jobs[i].mod->incoming_table = NULL;
    }
    pthread_mutex_unlock(&reg->lock);
    rc = group_keep(&g);
  }
  group_free(&g, failed);
  return rc;
}

/* The poll's side: take the prepared jobs of group pg off its members, if each is still
 * there and still prepared for the version that is current; else drop what is left of the
 * group. Under reg->lock, with the members' reload locks. 1: taken into g->jobs. */
static int take_prepared(struct hm__group *g, hm__pgroup *pg, hm__job **gone) {
  size_t i, k = 0;
  int ok = 1;
  for (i = 0; i < pg->n; i++) {
    hm_module *mod = pg->mods[i];
    hm__job *p = mod->prepared;
    if (p == NULL || p->pgroup != pg) {
      ok = 0;
      continue;
    }
    ok &= mod->cur != NULL && mod->cur->num == p->oldnum && strcmp(p->path, mod->path) == 0;
    gone[k++] = hm__prepared_take(mod);
  }
  for (i = 0; ok && i < pg->n; i++) {
    g->jobs[i] = *gone[i];
    g->jobs[i].old = pg->mods[i]->cur; /* kept current, and alive, by its reload lock */
    g->jobs[i].pgroup = NULL;
    /* If it is not published after all, the reclaimer unloads it: not the poll's thread. */
    g->jobs[i].v->discard_later = 1;
  }
  return ok;
}

/* A prepared group the poll refused: the watcher tries again what a later try may not meet
 * (every member's build), and after a final refusal holds every member's build for the
 * group's next one (HM__POLL_REGROUP), as it does in immediate mode. */
static void regroup(struct hm__group *g, int rc) {
  size_t i;
  int final = hm__err_is_final(rc);
  pthread_mutex_lock(&g->reg->lock);
  for (i = 0; i < g->n; i++)
    g->jobs[i].mod->poll_rc = final ? HM__POLL_REGROUP : rc;
  pthread_mutex_unlock(&g->reg->lock);
  hm__watch_poke(g->reg);
}

int hm__group_poll(hm_module *mod, unsigned *published, int *grouped) {
  hm_registry *reg = mod->reg;
  hm__pgroup *pg = NULL;
  hm__job **gone = NULL;
  struct hm__group g;
  size_t i, locked = 0;
  int rc = 1, ok = 0;
  *published = 0;
  pthread_mutex_lock(&reg->lock);
  if (mod->prepared != NULL && (pg = mod->prepared->pgroup) != NULL)
    __atomic_add_fetch(&pg->refs, 1, __ATOMIC_ACQ_REL); /* its member list, while we look */
  pthread_mutex_unlock(&reg->lock);
  *grouped = pg != NULL;
  if (pg == NULL) {
    rc = hm__prepared_apply(mod);
    *published = rc == 0;
    return rc;
  }
  memset(&g, 0, sizeof g);
  g.reg = reg;
  g.n = pg->n;
  g.jobs = hm__calloc(&reg->a, g.n, sizeof *g.jobs);
  g.order = hm__calloc(&reg->a, g.n, sizeof *g.order);
  gone = hm__calloc(&reg->a, g.n, sizeof *gone);
  if (g.jobs != NULL && g.order != NULL && gone != NULL) {
    for (i = 0; i < g.n; i++)
      g.jobs[i].mod = pg->mods[i];
    lock_order(&g);
    /* Never wait for a load: a member that is being reloaded leaves the group for the next
     * poll. */
    for (; locked < g.n; locked++)
      if (pthread_mutex_trylock(&g.jobs[g.order[locked]].mod->reload_lock) != 0)
        break;
  }
  if (locked == g.n && g.n != 0) {
    pthread_mutex_lock(&reg->lock);
    ok = take_prepared(&g, pg, gone);
    pthread_mutex_unlock(&reg->lock);
  }
  if (ok) {
    for (i = 0; i < g.n; i++)
      hm__prepared_free(gone[i]);
    set_group(&g, &g);
    rc = group_finish(&g); /* releases the reload locks */
    *published = rc == 0 ? (unsigned)g.n : 0;
  } else {
    while (locked-- > 0)
      pthread_mutex_unlock(&g.jobs[g.order[locked]].mod->reload_lock);
    for (i = 0; gone != NULL && i < g.n; i++)
      hm__prepared_discard(gone[i]);
  }
  if (rc < 0)
    regroup(&g, rc);
  hm__free(&reg->a, gone);
  group_free(&g, NULL);
  if (__atomic_sub_fetch(&pg->refs, 1, __ATOMIC_ACQ_REL) == 0)
    hm__free(&reg->a, pg);
  return rc;
}

/* The members as the API gives them: modules of `reg`, each once. */
static int check_members(hm_registry *reg, hm_module *const mods[], size_t n,
                         const char *what) {
  size_t i, k;
  if (reg == NULL || mods == NULL || n == 0)
    return hm__fail(HM_EINVAL, "%s: NULL registry or modules, or none", what);
  for (i = 0; i < n; i++) {
    if (mods[i] == NULL || mods[i]->reg != reg)
      return hm__fail(HM_EINVAL, "%s: member %zu is %s", what, i,
                      mods[i] == NULL ? "NULL" : "a module of another registry");
    for (k = 0; k < i; k++)
      if (mods[k] == mods[i])
        return hm__fail(HM_EINVAL, "%s: module %s is given twice", what, mods[i]->name);
  }
  if (hm__in_module_code())
    return hm__refuse_in_module_code(what);
  return hm__check_forked(reg, what);
}

int hm_registry_reload_group(hm_registry *reg, hm_module *const mods[],
                             const char *const paths[], size_t n) {
  hm__member *m;
  size_t i;
  int rc = check_members(reg, mods, n, "hm_registry_reload_group");
  if (rc != 0)
    return rc;
  for (i = 0; paths != NULL && i < n; i++)
    if (paths[i] != NULL && paths[i][0] == '\0')
      return hm__fail(HM_EINVAL, "hm_registry_reload_group: empty path for %s", mods[i]->name);
  if ((m = hm__calloc(&reg->a, n, sizeof *m)) == NULL)
    return hm__fail(HM_ENOMEM, "out of memory for a group reload of %zu modules", n);
  for (i = 0; i < n; i++) {
    m[i].mod = mods[i];
    m[i].path = paths != NULL ? paths[i] : NULL;
  }
  rc = hm__group_reload(reg, m, n, 0, NULL);
  hm__free(&reg->a, m);
  return rc;
}

/* Each member's build before its current one (hm__rollback_take, hm__rollback_read): a
 * version still loaded (reused), else the bytes of its kept copy. */
static int rollback_targets(hm_registry *reg, hm__member *m, hm__rollback *rb, size_t n) {
  size_t i;
  int rc = 0;
  pthread_mutex_lock(&reg->lock);
  for (i = 0; i < n && rc == 0; i++)
    rc = hm__rollback_take(m[i].mod, &rb[i]);
  pthread_mutex_unlock(&reg->lock);
  for (i = 0; i < n && rc == 0; i++)
    rc = hm__rollback_read(m[i].mod, &rb[i]);
  for (i = 0; i < n && rc == 0; i++) {
    m[i].reuse = rb[i].reuse; /* the group takes the references over, either way */
    rb[i].reuse = NULL;
    m[i].target = rb[i].target;
    m[i].file = m[i].reuse == NULL ? &rb[i].file : NULL;
    m[i].from = rb[i].kept;
  }
  return rc;
}

int hm_registry_rollback_group(hm_registry *reg, hm_module *const mods[], size_t n) {
  hm__member *m;
  hm__rollback *rb;
  size_t i;
  int rc = check_members(reg, mods, n, "hm_registry_rollback_group");
  if (rc != 0)
    return rc;
  m = hm__calloc(&reg->a, n, sizeof *m);
  rb = hm__calloc(&reg->a, n, sizeof *rb);
  if (m == NULL || rb == NULL) {
    rc = hm__fail(HM_ENOMEM, "out of memory for a group rollback of %zu modules", n);
  } else {
    for (i = 0; i < n; i++)
      m[i].mod = mods[i];
    rc = rollback_targets(reg, m, rb, n);
    if (rc == 0)
      rc = hm__group_reload(reg, m, n, HM__RELOAD_ROLLBACK, NULL);
    for (i = 0; i < n; i++)
      hm__rollback_drop(reg, &rb[i]);
  }
  hm__free(&reg->a, m);
  hm__free(&reg->a, rb);
  return rc;
}
