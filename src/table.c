/*
 * The function tables live handles read, their publication, and the lifetime of versions.
 *
 * A module's table holds the current version's function for each live slot. It is replaced
 * whole, by one atomic store, so every live handle of the module moves to the new version at
 * once; the old table is freed after a grace period. A version stays loaded while anything
 * references it: being current, a table (live calls may still run in it), a snapshot, or a
 * lookup in progress. The last reference schedules its unload on the reclaimer thread.
 *
 * Symbols are resolved with no registry lock held. A module's constructor runs inside
 * dlopen, under the dynamic loader's own lock, and may call back into hotmod (hm_module_find,
 * hm_live_get); dlsym takes the loader's lock too. Holding reg->lock around dlsym would let
 * one thread wait for the loader's lock while holding ours, and a constructor on another
 * thread wait for ours while holding the loader's.
 *
 * Layer 6 (docs/architecture.md): calls events.c, profile.c, the loader, the reclaimer and
 * the leaves;
 * the reclaimer calls back into it only through the callbacks it defers.
 */
#include "registry.h"

#include <dlfcn.h>

#include <stdio.h>
#include <string.h>

hm__table *hm__table_new(hm_registry *reg, hm__version *v, size_t n) {
  hm__table *t = hm__calloc(&reg->a, 1, sizeof *t + (n ? n : 1) * sizeof(hm_fn));
  if (t == NULL)
    return NULL;
  t->reg = reg;
  t->v = v;
  t->n = n;
  t->cap = n ? n : 1;
  if (v != NULL)
    hm__version_ref(v);
  return t;
}

void hm__table_discard(hm__table *t) {
  if (t == NULL)
    return;
  if (t->v != NULL)
    __atomic_sub_fetch(&t->v->refs, 1, __ATOMIC_RELAXED); /* never the last: caller holds one */
  hm__free(&t->reg->a, t);
}

char *hm__sig_norm(const hm__allocator *a, const char *in) {
  char *out = hm__malloc(a, strlen(in) + 1);
  size_t k = 0;
  if (out == NULL)
    return NULL;
  for (; *in != '\0'; in++)
    if (*in != ' ' && *in != '\t' && *in != '\n' && *in != '\r' && *in != '\v' && *in != '\f')
      out[k++] = *in;
  out[k] = '\0';
  return out;
}

int hm__sig_check(const hm__version *v, const char *sym, const char *want) {
  char name[300], *have;
  void *p;
  int rc = 0;
  snprintf(name, sizeof name, "%s%s", HM_MODULE_SIGNATURE_PREFIX, sym);
  p = hm__symbol(v, name);
  if (p == NULL)
    return hm__fail(HM_ESIG,
                    "%s (version %u of module %s) declares no signature for %s; expected "
                    "\"%s\" (HM_MODULE_SIGNATURE)",
                    v->copy_path, __atomic_load_n(&v->num, __ATOMIC_RELAXED), v->mod->name,
                    sym, want);
  have = hm__sig_norm(&v->mod->reg->a, (const char *)p);
  if (have == NULL)
    return hm__fail(HM_ENOMEM, "out of memory checking the signature of %s", sym);
  if (strcmp(have, want) != 0)
    rc = hm__fail(HM_ESIG, "version %u of module %s declares %s as \"%s\", expected \"%s\"",
                  __atomic_load_n(&v->num, __ATOMIC_RELAXED), v->mod->name, sym, have, want);
  hm__free(&v->mod->reg->a, have);
  return rc;
}

int hm__table_grow(hm_registry *reg, hm__table **tp, size_t n) {
  hm__table *t = *tp, *g;
  size_t cap = n < 4 ? 4 : n * 2;
  if (n <= t->cap)
    return 0;
  g = hm__realloc(&reg->a, t, sizeof *t + cap * sizeof(hm_fn));
  if (g == NULL)
    return HM_ENOMEM;
  memset(g->fns + g->cap, 0, (cap - g->cap) * sizeof(hm_fn));
  g->cap = cap;
  *tp = g;
  return 0;
}

int hm__table_reserve(hm_module *mod, size_t n) {
  return hm__table_grow(mod->reg, &mod->incoming_table, n);
}

int hm__owned_constrains(const hm_live *l, const struct hm__group *grp) {
  const hm__version *h = l->cell != NULL ? l->cell->holder : NULL;
  if (l->released)
    return 0;
  if (h == NULL)
    return 1; /* the host's */
  /* A retired holder stays on what it reached; a member of the group reload goes with its
   * version (the outgoing one's), or was bound to the incoming versions when taken. */
  return !h->frozen && !(grp != NULL && h->mod->grp == grp);
}

/* Must a new version of the module have slot i's symbol? While a handle that constrains it
 * uses the slot: one of hm_live_get's (for good), or an owned one still held (see
 * hm__owned_constrains). Under reg->lock. */
static int slot_needed(const hm_module *mod, size_t i) {
  const hm_live *l;
  if (mod->borrowed[i])
    return 1;
  for (l = mod->owned; l != NULL; l = l->next_owned)
    if (l->slot == i && hm__owned_constrains(l, mod->grp))
      return 1;
  return 0;
}

int hm__table_fill(hm_module *mod, const char *path) {
  hm_registry *reg = mod->reg;
  size_t i;
  pthread_mutex_lock(&reg->lock);
  /* From the first slot: a prepared table may lack a slot that a handle taken since its
   * preparation needs. */
  for (i = 0;; i++) {
    hm__table *t = mod->incoming_table;
    /* Slot names never move or go once added; the array holding them may. */
    const char *sym;
    hm__version *v;
    hm_fn fn;
    int rc;
    if (i == mod->nsyms)
      return 0; /* complete, with reg->lock held */
    if (hm__table_reserve(mod, mod->nsyms) != 0) {
      pthread_mutex_unlock(&reg->lock);
      return hm__fail(HM_ENOMEM, "out of memory resolving the live handles of %s", mod->name);
    }
    t = mod->incoming_table; /* it may have moved; its version does not */
    if (i < t->n && t->fns[i] != NULL)
      continue;
    if (!slot_needed(mod, i)) {
      /* Nobody who would read it here holds a handle on it: the build need not have it. */
      t->fns[i] = NULL;
      if (t->n == i)
        t->n = i + 1;
      continue;
    }
    v = t->v;
    sym = mod->syms[i];
    pthread_mutex_unlock(&reg->lock);
    rc = hm__resolve(v, sym, &fn);
    if (rc != 0)
      return hm__fail(rc, "%s (new version of module %s) lacks symbol %s, used by a live "
                          "handle",
                      path, mod->name, sym);
    pthread_mutex_lock(&reg->lock);
    /* Only this loop grows the table while it is behind (hm_live_get appends only to a
     * complete one); the table itself may have moved. */
    t = mod->incoming_table;
    t->fns[i] = fn;
    if (t->n == i)
      t->n = i + 1;
  }
}

static void table_free_cb(void *arg) {
  hm__table *t = arg;
  hm_registry *reg = t->reg;
  hm__version *v = t->v;
  hm__free(&reg->a, t);
  if (v != NULL)
    hm__version_unref(reg, v);
}

void hm__table_unref(hm__table *t) {
  if (--t->refs == 0)
    hm__defer(t->reg->rc, &t->node, table_free_cb, t, 1);
}

void hm__cell_point(hm__cell *c, hm__table *t) {
  hm__table *old = c->t;
  t->refs++;
  c->t = t;
  __atomic_store_n(&c->fns, t->fns, __ATOMIC_SEQ_CST);
  if (old != NULL)
    hm__table_unref(old);
}

/* Does the cell follow its target's current table? Not once dead, not while bound to a
 * group's incoming version, not once its holder is retired (frozen). */
static int follows(const hm__cell *c) { return !c->dead && !c->bound_in && !c->holder->frozen; }

void hm__publish(hm_module *mod, hm__table *t) {
  hm__table *old = mod->cur_table;
  hm__cell *c;
  mod->cur_table = t;
  t->refs++;
  __atomic_store_n(&mod->table, t->fns, __ATOMIC_SEQ_CST);
  /* The versions' handles on the module that follow it move in the same step: readers of
   * a cell read either table, and both stay until a grace period after the last switch. */
  for (c = mod->cells; c != NULL; c = c->next_t)
    if (follows(c))
      hm__cell_point(c, t);
  /* When a version stops being current: introspection names the live calls that began
   * before this and may still be inside it (hm__readers_inside). */
  if (t->v != NULL)
    __atomic_store_n(&t->v->retired_gp, 0, __ATOMIC_RELAXED);
  if (old != NULL && old->v != NULL && old->v != t->v)
    __atomic_store_n(&old->v->retired_gp, hm__gp_now(), __ATOMIC_RELAXED);
  if (old != NULL)
    hm__table_unref(old);
}

void hm__cells_drop_unpublished(hm__version *v) {
  hm__cell *c;
  for (c = v->cells; c != NULL; c = c->next_h) {
    hm__table *t = c->t;
    if (c->bound_in && t != NULL && --t->refs == 0) {
      /* A copy of another incoming member's table that only this never-published
       * version's code could read: freed now, so that the member it holds is unloaded by
       * the time the refused group returns. */
      c->t = NULL;
      __atomic_sub_fetch(&t->v->refs, 1, __ATOMIC_RELAXED); /* its job holds another */
      hm__free(&t->reg->a, t);
    }
    hm__cell_kill(c);
  }
}

void hm__cell_kill(hm__cell *c) {
  hm_live *l;
  if (c->dead)
    return;
  c->dead = 1;
  __atomic_store_n(&c->fns, c->nulls, __ATOMIC_SEQ_CST);
  if (c->t != NULL)
    hm__table_unref(c->t);
  c->t = NULL;
  /* Its handles no longer constrain the builds of the module they reach. */
  for (l = c->lives; l != NULL; l = l->next_c)
    hm__owned_unlink(l);
}

void hm__owned_unlink(hm_live *l) {
  if (l->released)
    return;
  l->released = 1;
  if (l->prev_owned != NULL)
    l->prev_owned->next_owned = l->next_owned;
  else
    l->mod->owned = l->next_owned;
  if (l->next_owned != NULL)
    l->next_owned->prev_owned = l->prev_owned;
  l->next_owned = l->prev_owned = NULL;
}

void hm__cells_detach(hm__version *v) {
  hm__cell *c;
  for (c = v->cells; c != NULL; c = c->next_h) {
    hm__cell_kill(c);
    if (c->target == NULL)
      continue;
    if (c->prev_t != NULL)
      c->prev_t->next_t = c->next_t;
    else
      c->target->cells = c->next_t;
    if (c->next_t != NULL)
      c->next_t->prev_t = c->prev_t;
    c->target = NULL;
  }
}

void hm__cells_forget(hm__version *v) {
  hm__cell *c;
  hm_live *l;
  for (c = v->cells; c != NULL; c = c->next_h) {
    for (l = c->lives; l != NULL; l = l->next_c)
      hm__owned_unlink(l);
    c->dead = 1;
    c->t = NULL;
  }
}

hm__cell *hm__cells_take(hm__version *v) {
  hm__cell *list = v->cells;
  hm__cells_detach(v);
  v->cells = NULL;
  return list;
}

void hm__cells_free(const hm__allocator *a, hm__cell *list) {
  while (list != NULL) {
    hm__cell *c = list;
    list = c->next_h;
    while (c->lives != NULL) {
      hm_live *l = c->lives;
      c->lives = l->next_c;
      hm__free(a, l->qualified);
      hm__free(a, l->sig);
      hm__free(a, l);
    }
    hm__free(a, c->nulls);
    hm__free(a, c);
  }
}

void hm__version_ref(hm__version *v) { __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED); }

/* On the reclaimer thread: the version's last reference is gone. */
static void version_unload_cb(void *arg) {
  hm__version *v = arg;
  hm_module *mod = v->mod, *prev;
  hm_registry *reg = mod->reg;
  hm__version **pp;
  unsigned num = v->num;
  int published = v->published, hooked = published && v->desc != NULL;
  hm__unloaded u;
  hm__cell *cells;
  hm__allocator a = v->a;

  pthread_mutex_lock(&reg->lock);
  for (pp = &mod->versions; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == v) {
      *pp = v->next;
      break;
    }
  }
  /* Nothing can call it now: the handles it took are dead for its unload hook, and freed
   * with it. */
  cells = hm__cells_take(v);
  pthread_mutex_unlock(&reg->lock);
  /* Hooks of one module never overlap: this unload hook waits while a reload of the module
   * is in its save or load hook. Plain modules do not contend for the lock. The module's
   * destructors run in dlclose, as module code too. */
  if (hooked)
    pthread_mutex_lock(&mod->hook_lock);
  prev = hm__module_code_enter(mod);
  hm__unload_version(v, published, &u);
  hm__module_code_leave(prev);
  if (hooked)
    pthread_mutex_unlock(&mod->hook_lock);
  hm__cells_free(&a, cells);
  pthread_mutex_lock(&reg->lock);
  if (published) {
    reg->nloaded--;
    reg->stats.unloads++;
  }
  if (u.mapped && u.mapped != HM_MAPPED_PROFILING) {
    reg->stats.leaked++;
    reg->stats.leaked_bytes += u.bytes;
  }
  pthread_mutex_unlock(&reg->lock);
  if (u.kept_copy != NULL)
    hm__profile_kept(reg, u.kept_copy);
  if (u.mapped)
    hm__emit_mapped(reg, mod, num, u.mapped, u.bytes, u.detail);
  else if (published)
    hm__emit(reg, HM_EVENT_UNLOADED, mod, num, 0);
}

void hm__version_unref(hm_registry *reg, hm__version *v) {
  if (__atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0)
    hm__defer(reg->rc, &v->unload_node, version_unload_cb, v, 0);
}

void hm__version_discard(hm_registry *reg, hm__version *v) {
  hm_module *mod = v->mod, *prev;
  unsigned num = v->num;
  hm__unloaded u;
  hm__cell *cells;
  /* The handles its load hook took stop constraining anything now; their memory stays
   * until it is unloaded (its destructors may still read them). */
  pthread_mutex_lock(&reg->lock);
  for (cells = v->cells; cells != NULL; cells = cells->next_h)
    hm__cell_kill(cells);
  pthread_mutex_unlock(&reg->lock);
  if (v->discard_later) {
    /* dlclose takes the loader's lock, which another module's constructor may hold for
     * long: the reclaimer unloads it (unpublished: no hook, LEAKED if it stays mapped). */
    hm__version_unref(reg, v);
    return;
  }
  if (__atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0) {
    /* A lookup still holds it (hm_live_get resolving in an incoming version); its unref
     * schedules the unload. */
    return;
  }
  /* Unloaded here, so a failed reload leaves nothing behind by the time it returns. Its load
   * hook did not run or failed, so its unload hook must not run either. */
  pthread_mutex_lock(&reg->lock);
  cells = hm__cells_take(v);
  pthread_mutex_unlock(&reg->lock);
  prev = hm__module_code_enter(mod);
  hm__unload_version(v, 0, &u);
  hm__module_code_leave(prev);
  hm__cells_free(&reg->a, cells);
  if (u.mapped) {
    /* A rejected NODELETE object stays mapped all the same, and so does one whose
     * constructors may have left destructors behind: count it, say so. */
    pthread_mutex_lock(&reg->lock);
    reg->stats.leaked++;
    reg->stats.leaked_bytes += u.bytes;
    pthread_mutex_unlock(&reg->lock);
    hm__emit_mapped(reg, mod, num, u.mapped, u.bytes, u.detail);
  }
}
