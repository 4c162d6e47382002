/*
 * What the live handles a version of a module took in its load hook reach, over the
 * version's life (the cells of registry.h): bound when taken, moved with their target while
 * the version is current, frozen when it is retired, and let go by the sweep once nothing
 * can call the version any more.
 *
 * Why frozen: a call that entered the old version of a module keeps seeing the versions of
 * the other modules that it saw when it started, until it returns; and a snapshot that keeps
 * an old version mapped calls, through that version's handles, what the version called when
 * it was retired, kept mapped for it. Nothing else can call a retired version: the sweep
 * marks, from every retired version that a snapshot pins or that a call may still be inside
 * (retired since the last grace period), the retired versions their frozen cells reach, and
 * kills the cells of the rest. So versions whose handles reach each other (two modules that
 * call each other) let each other go together, and none is unloaded under a caller.
 *
 * Layer 6 (docs/architecture.md): calls table.c, the reclaimer and the leaves.
 */
#include "registry.h"

#include <string.h>

/* A copy of the target's incoming table (a group reload between its resolve and its
 * publish): what an incoming member's handles on it read until the group publishes. The
 * incoming table itself may still grow (and move) while hooks take new handles. */
static hm__table *incoming_copy(hm_module *target) {
  hm__table *in = target->incoming_table, *t;
  t = hm__table_new(target->reg, in->v, in->n);
  if (t != NULL)
    memcpy(t->fns, in->fns, in->n * sizeof(hm_fn));
  return t;
}

int hm__cell_add(hm__version *holder, hm_module *target, hm_live *l, int bound_in) {
  hm_registry *reg = target->reg;
  hm__cell *c;
  hm__table *copy = NULL;
  for (c = holder->cells; c != NULL && c->target != target; c = c->next_h)
    ;
  if (bound_in && (copy = incoming_copy(target)) == NULL)
    return HM_ENOMEM;
  if (c == NULL) {
    if ((c = hm__calloc(&reg->a, 1, sizeof *c)) == NULL) {
      hm__table_discard(copy);
      return HM_ENOMEM;
    }
    c->target = target;
    c->holder = holder;
    c->bound_in = bound_in;
  }
  if (c->nnulls <= l->slot) {
    size_t n = l->slot + 1 < 4 ? 4 : (l->slot + 1) * 2;
    hm_fn *nulls = hm__realloc(&reg->a, c->nulls, n * sizeof *nulls);
    if (nulls == NULL) {
      if (c->t == NULL) /* made just now */
        hm__free(&reg->a, c);
      hm__table_discard(copy);
      return HM_ENOMEM;
    }
    memset(nulls + c->nnulls, 0, (n - c->nnulls) * sizeof *nulls);
    c->nulls = nulls;
    c->nnulls = n;
  }
  if (c->t == NULL) {
    /* New: on the holder's list and the target's. */
    c->next_h = holder->cells;
    holder->cells = c;
    c->next_t = target->cells;
    if (target->cells != NULL)
      target->cells->prev_t = c;
    target->cells = c;
  }
  /* A copy each time: the earlier one lacks the slot this handle may have added. */
  hm__cell_point(c, bound_in ? copy : target->cur_table);
  l->cell = c;
  l->head.table = &c->fns;
  l->head.slot = l->slot;
  l->next_c = c->lives;
  c->lives = l;
  return 0;
}

static void sweep_cb(void *arg);

void hm__sweep_request(hm_registry *reg) {
  if (reg->sweep_queued || reg->rc == NULL)
    return;
  reg->sweep_queued = 1;
  reg->sweep_covers = reg->retire_gen;
  hm__defer(reg->rc, &reg->sweep_node, sweep_cb, reg, 1);
}

void hm__version_retire(hm__version *v) {
  hm_registry *reg = v->mod->reg;
  v->frozen = 1;
  if (v->cells != NULL && !v->cells_dead) {
    v->retire_gen = ++reg->retire_gen;
    hm__sweep_request(reg);
  }
}

/* Retired versions whose cells still hold what they reached. */
static int holding(const hm__version *v) {
  return v != NULL && v->frozen && v->cells != NULL && !v->cells_dead;
}

/* Mark every holding version a root can still call into; then let the others go. Returns
 * 1 while some version was retired after the grace period this sweep waited for. */
static int sweep(hm_registry *reg, unsigned long covers) {
  size_t i;
  int pending = 0, changed;
  hm__version *v;
  hm__cell *c;
  for (i = 0; i < reg->nmods; i++) {
    for (v = reg->mods[i]->versions; v != NULL; v = v->next) {
      int recent = (long)(v->retire_gen - covers) > 0;
      v->mark = holding(v) && (__atomic_load_n(&v->pins, __ATOMIC_ACQUIRE) > 0 || recent);
      pending |= holding(v) && recent;
    }
  }
  do {
    changed = 0;
    for (i = 0; i < reg->nmods; i++) {
      for (v = reg->mods[i]->versions; v != NULL; v = v->next) {
        if (!v->mark)
          continue;
        for (c = v->cells; c != NULL; c = c->next_h) {
          hm__version *to = c->t != NULL ? c->t->v : NULL;
          if (holding(to) && !to->mark)
            to->mark = changed = 1;
        }
      }
    }
  } while (changed);
  for (i = 0; i < reg->nmods; i++) {
    for (v = reg->mods[i]->versions; v != NULL; v = v->next) {
      if (!holding(v) || v->mark)
        continue;
      for (c = v->cells; c != NULL; c = c->next_h)
        hm__cell_kill(c);
      v->cells_dead = 1;
    }
  }
  return pending;
}

static void sweep_cb(void *arg) {
  hm_registry *reg = arg;
  pthread_mutex_lock(&reg->lock);
  reg->sweep_queued = 0;
  if (sweep(reg, reg->sweep_covers))
    hm__sweep_request(reg); /* after one more grace period */
  pthread_mutex_unlock(&reg->lock);
}

void hm__cells_end(hm_registry *reg) {
  size_t i;
  hm__version *v;
  hm__cell *c;
  for (i = 0; i < reg->nmods; i++) {
    for (v = reg->mods[i]->versions; v != NULL; v = v->next) {
      for (c = v->cells; c != NULL; c = c->next_h)
        hm__cell_kill(c);
      v->cells_dead = v->cells != NULL;
    }
  }
}
