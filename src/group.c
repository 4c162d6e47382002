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

struct hm__group {
  hm_registry *reg;
  size_t n;
  hm__job *jobs;  /* one per member, in the caller's order */
  size_t *order;  /* the members in the order their reload locks are taken */
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

/* The steps after the reload locks: a failure at member i of a step rejects the group. */
static int group_steps(struct hm__group *g, const hm__member *m) {
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
  for (i = 0; i < g->n; i++)
    if ((rc = hm__job_resolve(&g->jobs[i])) != 0)
      return group_reject(g, i, rc, 0);
  for (i = 0; i < g->n; i++)
    if ((rc = hm__job_check_signatures(&g->jobs[i])) != 0)
      return group_reject(g, i, rc, 0);
  for (i = 0; i < g->n; i++)
    if ((rc = hm__job_handover(&g->jobs[i])) != 0)
      return group_reject(g, i, rc, i);
  group_publish(g);
  for (i = 0; i < g->n; i++)
    hm__job_done(&g->jobs[i]);
  return 0;
}

int hm__group_reload(hm_registry *reg, const hm__member *m, size_t n, unsigned flags) {
  struct hm__group g;
  size_t i;
  int rc;
  g.reg = reg;
  g.n = n;
  g.jobs = hm__calloc(&reg->a, n, sizeof *g.jobs);
  g.order = hm__calloc(&reg->a, n, sizeof *g.order);
  if (g.jobs == NULL || g.order == NULL) {
    rc = hm__fail(HM_ENOMEM, "out of memory for a group reload of %zu modules", n);
    for (i = 0; i < n; i++)
      if (m[i].reuse != NULL)
        hm__version_unref(reg, m[i].reuse);
    hm__free(&reg->a, g.jobs);
    hm__free(&reg->a, g.order);
    return rc;
  }
  for (i = 0; i < n; i++) {
    hm__job *j = &g.jobs[i];
    j->mod = m[i].mod;
    j->reg = reg;
    j->flags = flags | HM__RELOAD_QUIET;
    j->v = m[i].reuse;
    j->reused = m[i].reuse != NULL;
    j->target = m[i].target;
  }
  lock_order(&g);
  for (i = 0; i < n; i++)
    pthread_mutex_lock(&g.jobs[g.order[i]].mod->reload_lock);
  rc = group_steps(&g, m);
  hm__free(&reg->a, g.jobs);
  hm__free(&reg->a, g.order);
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
  rc = hm__group_reload(reg, m, n, 0);
  hm__free(&reg->a, m);
  return rc;
}

/* Undo what rollback_targets took: references on reused versions, kept paths, bytes read. */
static void targets_free(hm_registry *reg, hm__member *m, char **kept, hm__file *files,
                         size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    if (m[i].reuse != NULL)
      hm__version_unref(reg, m[i].reuse);
    m[i].reuse = NULL;
    hm__free(&reg->a, kept[i]);
    hm__file_release(&reg->a, &files[i]);
  }
}

/* Each member's build before its current one: a version still loaded (reused), else the
 * bytes of its kept copy. */
static int rollback_targets(hm_registry *reg, hm__member *m, char **kept, hm__file *files,
                            size_t n) {
  size_t i;
  int rc = 0;
  pthread_mutex_lock(&reg->lock);
  for (i = 0; i < n && rc == 0; i++)
    if ((rc = hm__rollback_target(m[i].mod, &m[i].reuse, &kept[i])) == 0)
      m[i].target = m[i].mod->hist[m[i].mod->nhist - 1];
  pthread_mutex_unlock(&reg->lock);
  /* Loaded again from the kept copy under a fresh private name, as hm_module_rollback. */
  for (i = 0; i < n && rc == 0; i++)
    if (kept[i] != NULL &&
        (rc = hm__file_read(&reg->a, kept[i], HM__READ_ALLOW_WRITABLE, &files[i], NULL)) == 0)
      m[i].file = &files[i];
  return rc;
}

int hm_registry_rollback_group(hm_registry *reg, hm_module *const mods[], size_t n) {
  hm__member *m;
  hm__file *files;
  char **kept;
  size_t i;
  int rc = check_members(reg, mods, n, "hm_registry_rollback_group");
  if (rc != 0)
    return rc;
  m = hm__calloc(&reg->a, n, sizeof *m);
  files = hm__calloc(&reg->a, n, sizeof *files);
  kept = hm__calloc(&reg->a, n, sizeof *kept);
  if (m == NULL || files == NULL || kept == NULL) {
    rc = hm__fail(HM_ENOMEM, "out of memory for a group rollback of %zu modules", n);
  } else {
    for (i = 0; i < n; i++)
      m[i].mod = mods[i];
    rc = rollback_targets(reg, m, kept, files, n);
    if (rc == 0) {
      rc = hm__group_reload(reg, m, n, HM__RELOAD_ROLLBACK);
      for (i = 0; i < n; i++)
        m[i].reuse = NULL; /* the group took over the references, either way */
    }
    targets_free(reg, m, kept, files, n);
  }
  hm__free(&reg->a, m);
  hm__free(&reg->a, files);
  hm__free(&reg->a, kept);
  return rc;
}
