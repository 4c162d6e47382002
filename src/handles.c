/*
 * Stable snapshots and live handles.
 *
 * A snapshot holds one reference to a version: acquiring and releasing it touch the version's
 * count once each, and calling through it is a plain indirect call.
 *
 * A live handle is a slot in its module's function table. hm_live_enter (inline, hotmod.h)
 * loads the module's current table and returns the slot's entry. A new symbol gets a new
 * slot: the module's table is copied with one more entry and republished, so readers never
 * see a table change under them.
 *
 * Neither takes a module's reload lock, and neither holds reg->lock around dlsym (see
 * table.c). A new slot is resolved optimistically: note the current version (and the one a
 * reload is about to publish, if any), resolve without the lock, and commit only if neither
 * changed meanwhile; otherwise start over. So a load hook may take live handles on another
 * module while that module's own hook takes live handles on this one.
 *
 * Layer 6 (docs/architecture.md): calls table.c, fork.c, the loader and the leaves.
 */
#include "registry.h"

#include <string.h>

int hm__split_qualified(const char *qualified, char *modname, size_t modlen,
                        const char **sym) {
  const char *colon;
  size_t n;
  if (qualified == NULL)
    return HM_EINVAL;
  colon = strchr(qualified, ':');
  if (colon == NULL || colon == qualified || colon[1] == '\0')
    return HM_EINVAL;
  n = (size_t)(colon - qualified);
  if (n >= modlen)
    return HM_EINVAL;
  memcpy(modname, qualified, n);
  modname[n] = '\0';
  *sym = colon + 1;
  return 0;
}

/* The checks every "module:symbol" entry point starts with (after clearing its *out). */
static int begin_lookup(hm_registry *reg, const char *qualified, int have_out, char *modname,
                        size_t modlen, const char **sym) {
  if (reg == NULL || !have_out)
    return hm__fail(HM_EINVAL, "NULL registry or output");
  if (hm__split_qualified(qualified, modname, modlen, sym) != 0)
    return hm__fail(HM_EINVAL, "expected \"module:symbol\", got \"%s\"",
                    qualified ? qualified : "(null)");
  return 0;
}

/* The module's current version, referenced, or NULL (module unknown or unloaded). Under
 * reg->lock. */
static hm__version *current_of(hm_registry *reg, const char *modname, hm_module **modp) {
  hm_module *mod = hm__map_get(&reg->modules, modname);
  if (mod == NULL || mod->cur == NULL)
    return NULL;
  hm__version_ref(mod->cur);
  *modp = mod;
  return mod->cur;
}

static int missing_symbol(hm_module *mod, const hm__version *v, const char *sym) {
  /* The module's path is read without its lock: only for the message, and it is replaced
   * only by a reload_from, which the caller does not race in any test we know of. */
  return hm__fail(HM_ENOSYM, "module %s (version %u) has no symbol %s", mod->name,
                  __atomic_load_n(&v->num, __ATOMIC_RELAXED), sym);
}

/* ---- Snapshots ------------------------------------------------------------------------- */

/* A snapshot of v goes: the last one may leave a retired version's handles unreachable. */
static void unpin(hm_registry *reg, hm__version *v) {
  if (__atomic_sub_fetch(&v->pins, 1, __ATOMIC_ACQ_REL) != 0 || reg->forked)
    return;
  pthread_mutex_lock(&reg->lock);
  if (v->frozen && v->cells != NULL && !v->cells_dead)
    hm__sweep_request(reg);
  pthread_mutex_unlock(&reg->lock);
}

int hm_snapshot_acquire(hm_registry *reg, const char *qualified, hm_snapshot **out) {
  char modname[256];
  const char *sym = NULL;
  hm_module *mod = NULL;
  hm__version *v;
  hm_snapshot *s;
  hm_fn fn;
  unsigned num = 0;
  int rc;
  if (out != NULL)
    *out = NULL;
  rc = begin_lookup(reg, qualified, out != NULL, modname, sizeof modname, &sym);
  if (rc != 0)
    return rc;
  s = hm__malloc(&reg->a, sizeof *s);
  if (s == NULL)
    return hm__fail(HM_ENOMEM, "out of memory acquiring %s", qualified);
  pthread_mutex_lock(&reg->lock);
  v = current_of(reg, modname, &mod);
  /* Its number now: once the lock is released, a rollback that brings it back after a
   * newer version may renumber it. */
  if (v != NULL) {
    num = v->num;
    /* Pinned before the lock goes: a sweep must not let its handles go meanwhile. */
    __atomic_add_fetch(&v->pins, 1, __ATOMIC_ACQ_REL);
  }
  pthread_mutex_unlock(&reg->lock);
  if (v == NULL) {
    hm__free(&reg->a, s);
    return hm__fail(HM_ENOMOD, "no module named %s", modname);
  }
  if (hm__resolve(v, sym, &fn) != 0) {
    rc = missing_symbol(mod, v, sym);
    hm__free(&reg->a, s);
    unpin(reg, v);
    if (reg->forked)
      __atomic_sub_fetch(&v->refs, 1, __ATOMIC_RELAXED); /* never the last: it is current */
    else
      hm__version_unref(reg, v);
    return rc;
  }
  /* The reference taken above is the snapshot's. */
  s->fn = fn;
  s->v = v;
  s->num = num;
  s->reg = reg;
  s->a = reg->a;
  *out = s;
  return 0;
}

int hm_snapshot_acquire_typed(hm_registry *reg, const char *qualified, const char *signature,
                              hm_snapshot **out) {
  char *sig;
  const char *colon;
  int rc;
  if (out != NULL)
    *out = NULL;
  if (signature == NULL)
    return hm__fail(HM_EINVAL, "hm_snapshot_acquire_typed: NULL signature");
  rc = hm_snapshot_acquire(reg, qualified, out);
  if (rc != 0)
    return rc;
  colon = strchr(qualified, ':');
  if ((sig = hm__sig_norm(&reg->a, signature)) == NULL) {
    rc = hm__fail(HM_ENOMEM, "out of memory typing %s", qualified);
  } else {
    rc = hm__sig_check((*out)->v, colon + 1, sig);
    hm__free(&reg->a, sig);
  }
  if (rc != 0) {
    hm_snapshot_release(*out);
    *out = NULL;
  }
  return rc;
}

hm_fn hm_snapshot_fn(const hm_snapshot *snap) { return snap ? snap->fn : NULL; }

unsigned hm_snapshot_version(const hm_snapshot *snap) { return snap ? snap->num : 0; }

void hm_snapshot_release(hm_snapshot *snap) {
  hm__version *v;
  hm__allocator a;
  hm_registry *reg;
  if (snap == NULL)
    return;
  v = snap->v;
  a = snap->a;
  reg = snap->reg;
  hm__free(&a, snap);
  if (__atomic_load_n(&v->orphan, __ATOMIC_ACQUIRE)) {
    /* Its registry is gone; the version stays mapped. Its bookkeeping goes with the last
     * snapshot, the dead handles it took too. */
    if (__atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0) {
      hm__cells_free(&a, v->cells);
      hm__free(&a, v);
    }
    return;
  }
  if (reg->forked) {
    /* No reclaimer in a forked child: the version stays until the registry is freed. */
    __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL);
    return;
  }
  unpin(reg, v);
  hm__version_unref(reg, v);
}

/* ---- Live handles ---------------------------------------------------------------------- */

/* The slot of `sym` in the module's tables, added if it has none (every handle on a symbol
 * shares its slot), with the current table holding `fn` there (republished if it did not;
 * fn NULL: a handle bound to a group's incoming version, which the current table need not
 * serve) and, while a reload is under way, the incoming table holding `fn_in` (appended
 * if that table is complete; a resolve still running reaches the slot itself). Nothing
 * changes on failure (HM_ENOMEM). Under reg->lock. */
static int slot_for(hm_module *mod, const char *sym, hm_fn fn, hm_fn fn_in, size_t *slot) {
  hm_registry *reg = mod->reg;
  hm__table *t = NULL, *in = mod->incoming_table;
  size_t i, n = mod->nsyms;
  char *copy = NULL;
  int append;
  for (i = 0; i < n && strcmp(mod->syms[i], sym) != 0; i++)
    ;
  append = in != NULL && in->n == n && i == n;
  if (i == n && n == mod->capsyms) {
    size_t ncap = n ? n * 2 : 4;
    char **ns = hm__realloc(&reg->a, mod->syms, ncap * sizeof *ns);
    char **sg;
    unsigned char *bw;
    if (ns == NULL)
      return HM_ENOMEM;
    mod->syms = ns;
    if ((sg = hm__realloc(&reg->a, mod->sigs, ncap * sizeof *sg)) == NULL)
      return HM_ENOMEM;
    memset(sg + n, 0, (ncap - n) * sizeof *sg);
    mod->sigs = sg;
    if ((bw = hm__realloc(&reg->a, mod->borrowed, ncap)) == NULL)
      return HM_ENOMEM;
    memset(bw + n, 0, ncap - n);
    mod->borrowed = bw;
    mod->capsyms = ncap;
  }
  /* An unload publishes the spare table, which must have a slot for this one too. */
  if (hm__table_grow(reg, &mod->spare, n + 1) != 0 ||
      (append && hm__table_reserve(mod, n + 1) != 0) ||
      (i == n && (copy = hm__strdup(&reg->a, sym)) == NULL))
    return HM_ENOMEM;
  if (i == n || (fn != NULL && mod->cur_table->fns[i] != fn)) {
    if ((t = hm__table_new(reg, mod->cur, i == n ? n + 1 : n)) == NULL) {
      hm__free(&reg->a, copy);
      return HM_ENOMEM;
    }
    memcpy(t->fns, mod->cur_table->fns, n * sizeof(hm_fn));
    t->fns[i] = fn;
  }
  if (i == n)
    mod->syms[mod->nsyms++] = copy;
  in = mod->incoming_table; /* it may have moved */
  if (append)
    in->fns[in->n++] = fn_in;
  else if (in != NULL && i < in->n && fn_in != NULL)
    in->fns[i] = fn_in;
  if (t != NULL)
    hm__publish(mod, t);
  *slot = i;
  return 0;
}

/* Make the live handle for a symbol that has none yet. Under reg->lock, with `fn` resolved
 * in the current version and, if a reload is under way, `fn_in` in the incoming one. */
static int make_live(hm_registry *reg, hm_module *mod, const char *qualified, const char *sym,
                     hm_fn fn, hm_fn fn_in, hm_live **out) {
  hm_live *live = hm__calloc(&reg->a, 1, sizeof *live);
  size_t slot;
  if (live == NULL || (live->qualified = hm__strdup(&reg->a, qualified)) == NULL ||
      hm__map_put(&reg->lives, &reg->a, live->qualified, live) != 0)
    goto nomem;
  if (slot_for(mod, sym, fn, fn_in, &slot) != 0) {
    hm__map_del(&reg->lives, live->qualified);
    goto nomem;
  }
  mod->borrowed[slot] = 1; /* needed by every later version */
  live->slot = slot;
  live->head.table = &mod->table;
  live->head.slot = slot;
  live->mod = mod;
  *out = live;
  return 0;
nomem:
  if (live != NULL)
    hm__free(&reg->a, live->qualified);
  hm__free(&reg->a, live);
  return hm__fail(HM_ENOMEM, "out of memory getting %s", qualified);
}

/* The slot of an existing live handle, under reg->lock. */
static size_t slot_of(const hm_live *live) { return live->slot; }

/* Check `sig` (normalised; NULL: untyped) against the current version and the incoming one,
 * without reg->lock. */
static int check_typed(hm__version *cur, hm__version *in, const char *sym, const char *sig) {
  int rc = 0;
  if (sig != NULL && (rc = hm__sig_check(cur, sym, sig)) == 0 && in != NULL)
    rc = hm__sig_check(in, sym, sig);
  return rc;
}

/* hm_live_get and hm_live_get_typed: `sig` is normalised, or NULL. */
static int live_get(hm_registry *reg, const char *qualified, const char *sig, hm_live **out) {
  char modname[256];
  const char *sym = NULL;
  int rc;

  if (out != NULL)
    *out = NULL;
  rc = begin_lookup(reg, qualified, out != NULL, modname, sizeof modname, &sym);
  if (rc != 0)
    return rc;
  for (;;) {
    hm_module *mod = NULL;
    hm__version *cur, *in = NULL;
    hm_live *live;
    hm_fn fn = NULL, fn_in = NULL;
    const char *typed = NULL;

    pthread_mutex_lock(&reg->lock);
    live = hm__map_get(&reg->lives, qualified);
    if (live != NULL)
      typed = live->mod->sigs[slot_of(live)];
    if (live != NULL && (sig == NULL || (typed != NULL && strcmp(typed, sig) == 0))) {
      pthread_mutex_unlock(&reg->lock);
      *out = live;
      return 0;
    }
    if (live != NULL && typed != NULL) {
      pthread_mutex_unlock(&reg->lock);
      return hm__fail(HM_ESIG, "%s is already typed \"%s\", not \"%s\"", qualified, typed,
                      sig);
    }
    cur = current_of(reg, modname, &mod);
    if (cur != NULL && (in = mod->incoming) != NULL)
      hm__version_ref(in);
    pthread_mutex_unlock(&reg->lock);
    if (cur == NULL)
      return hm__fail(HM_ENOMOD, "no module named %s", modname);
    if (live != NULL) {
      /* An untyped handle becomes typed once both versions agree. */
      rc = check_typed(cur, in, sym, sig);
    } else if (mod == hm__module_code_of()) {
      rc = hm__fail(HM_EBUSY, "hm_live_get(%s) from %s's own hook or constructor: its table "
                              "is being replaced by this very thread",
                    qualified, modname);
    } else if ((rc = hm__check_forked(reg, "hm_live_get (a new live handle)")) != 0) {
      ;
    } else if (hm__resolve(cur, sym, &fn) != 0) {
      rc = missing_symbol(mod, cur, sym);
    } else if (in != NULL && hm__resolve(in, sym, &fn_in) != 0) {
      rc = hm__fail(HM_ENOSYM,
                    "module %s is being reloaded to a version without symbol %s; try again",
                    modname, sym);
    } else {
      rc = check_typed(cur, in, sym, sig);
    }

    pthread_mutex_lock(&reg->lock);
    if (rc == 0 && hm__map_get(&reg->lives, qualified) == live && mod->cur == cur &&
        mod->incoming == in && (live == NULL || mod->sigs[slot_of(live)] == NULL)) {
      if (live == NULL)
        rc = make_live(reg, mod, qualified, sym, fn, fn_in, &live);
      if (rc == 0 && sig != NULL && (mod->sigs[slot_of(live)] = hm__strdup(&reg->a, sig)) == NULL)
        rc = hm__fail(HM_ENOMEM, "out of memory typing %s", qualified);
      if (rc == 0)
        *out = live;
      pthread_mutex_unlock(&reg->lock);
    } else {
      int again = rc == 0; /* the module moved on meanwhile: look again */
      pthread_mutex_unlock(&reg->lock);
      if (again)
        rc = 1;
    }
    if (in != NULL)
      hm__version_unref(reg, in);
    if (reg->forked)
      __atomic_sub_fetch(&cur->refs, 1, __ATOMIC_RELAXED);
    else
      hm__version_unref(reg, cur);
    if (rc != 1)
      return rc;
  }
}

int hm_live_get(hm_registry *reg, const char *qualified, hm_live **out) {
  return live_get(reg, qualified, NULL, out);
}

int hm_live_get_typed(hm_registry *reg, const char *qualified, const char *signature,
                      hm_live **out) {
  char *sig;
  int rc;
  if (signature == NULL || reg == NULL) {
    if (out != NULL)
      *out = NULL;
    return hm__fail(HM_EINVAL, "hm_live_get_typed: NULL %s", reg == NULL ? "registry" : "signature");
  }
  if ((sig = hm__sig_norm(&reg->a, signature)) == NULL) {
    if (out != NULL)
      *out = NULL;
    return hm__fail(HM_ENOMEM, "out of memory typing %s", qualified ? qualified : "(null)");
  }
  rc = live_get(reg, qualified, sig, out);
  hm__free(&reg->a, sig);
  return rc;
}

/* ---- Owned live handles ---------------------------------------------------------------- */

/* What a released handle reads: one NULL (its slot becomes 0). */
static hm_fn dead_fns[1];
static hm_fn *dead_table = dead_fns;

/* `holder`'s handle named `qualified` on `mod`, if it took one. Under reg->lock. */
static hm_live *own_handle(const hm__version *holder, const hm_module *mod,
                           const char *qualified) {
  const hm__cell *c;
  hm_live *l;
  for (c = holder->cells; c != NULL; c = c->next_h)
    if (c->target == mod)
      for (l = c->lives; l != NULL; l = l->next_c)
        if (!l->released && strcmp(l->qualified, qualified) == 0)
          return l;
  return NULL;
}

/* A new owned handle on `mod`, resolved to `fn` (current) and `fn_in` (incoming), or bound
 * to the incoming version of a group reload (`bound`). The host's reuse a released one of
 * that name (so acquire and release in a loop keep memory flat). Under reg->lock. */
static int make_owned(hm_module *mod, const char *qualified, const char *sym, const char *sig,
                      hm_fn fn, hm_fn fn_in, hm__version *holder, int bound, hm_live **out) {
  hm_registry *reg = mod->reg;
  hm_live *l = NULL, **pp = &reg->spare_lives;
  char *sigc = NULL;
  size_t slot;
  int fresh = 0;
  if (holder == NULL) {
    for (; *pp != NULL; pp = &(*pp)->next_c)
      if (strcmp((*pp)->qualified, qualified) == 0)
        break;
    l = *pp;
  }
  if ((sig != NULL && (sigc = hm__strdup(&reg->a, sig)) == NULL) ||
      (l == NULL && (fresh = 1, l = hm__calloc(&reg->a, 1, sizeof *l)) == NULL))
    goto nomem;
  if ((l->qualified == NULL && (l->qualified = hm__strdup(&reg->a, qualified)) == NULL) ||
      slot_for(mod, sym, bound ? NULL : fn, fn_in, &slot) != 0)
    goto nomem;
  l->slot = slot;
  if (holder != NULL && hm__cell_add(holder, mod, l, bound) != 0)
    goto nomem;
  l->mod = mod;
  if (holder == NULL) {
    if (!fresh)
      *pp = l->next_c; /* off the spare list */
    l->head.table = &mod->table;
    l->head.slot = slot;
    l->next_c = NULL;
  }
  l->kind = holder != NULL ? HM__LIVE_VERSION : HM__LIVE_HOST;
  hm__free(&reg->a, l->sig);
  l->sig = sigc;
  l->released = 0;
  l->prev_owned = NULL;
  l->next_owned = mod->owned;
  if (mod->owned != NULL)
    mod->owned->prev_owned = l;
  mod->owned = l;
  *out = l;
  return 0;
nomem:
  hm__free(&reg->a, sigc);
  if (fresh && l != NULL) { /* not on any list */
    hm__free(&reg->a, l->qualified);
    hm__free(&reg->a, l);
  }
  return hm__fail(HM_ENOMEM, "out of memory getting %s", qualified);
}

/* Resolve `sym` where the handle will read it and check its type, without reg->lock: in the
 * incoming version only when bound to it; else in the current one and, while a reload is
 * under way, the incoming one too. */
static int owned_check(hm_module *mod, hm__version *cur, hm__version *in, int bound,
                       const char *sym, const char *sig, hm_fn *fn, hm_fn *fn_in) {
  if (!bound && hm__resolve(cur, sym, fn) != 0)
    return missing_symbol(mod, cur, sym);
  if (in != NULL && hm__resolve(in, sym, fn_in) != 0)
    return bound ? missing_symbol(mod, in, sym)
                 : hm__fail(HM_ENOSYM, "module %s is being reloaded to a version without "
                                       "symbol %s; try again",
                            mod->name, sym);
  if (sig == NULL)
    return 0;
  return bound ? hm__sig_check(in, sym, sig) : check_typed(cur, in, sym, sig);
}

/* hm_live_acquire, and ctx->api's gets in a load hook (`holder`: the version whose hook runs,
 * NULL for the host; `dedupe`: the holder's handle of that name is returned if it has one).
 * `sig` is normalised, or NULL. */
static int owned_get(hm_registry *reg, const char *qualified, const char *sig,
                     hm__version *holder, int dedupe, hm_live **out) {
  char modname[256];
  const char *sym = NULL;
  int rc;
  if (out != NULL)
    *out = NULL;
  rc = begin_lookup(reg, qualified, out != NULL, modname, sizeof modname, &sym);
  if (rc != 0)
    return rc;
  if ((rc = hm__check_forked(reg, "hm_live_acquire")) != 0)
    return rc;
  for (;;) {
    hm_module *mod = NULL;
    hm__version *cur, *in = NULL;
    hm_live *had = NULL;
    hm_fn fn = NULL, fn_in = NULL;
    int bound = 0;
    pthread_mutex_lock(&reg->lock);
    cur = current_of(reg, modname, &mod);
    if (cur != NULL) {
      had = holder != NULL && dedupe ? own_handle(holder, mod, qualified) : NULL;
      bound = holder != NULL && mod->grp != NULL && mod->grp == holder->mod->grp;
      if ((in = mod->incoming) != NULL)
        hm__version_ref(in);
    }
    pthread_mutex_unlock(&reg->lock);
    if (cur == NULL)
      return hm__fail(HM_ENOMOD, "no module named %s", modname);
    if (had != NULL && had->sig != NULL && (sig == NULL || strcmp(had->sig, sig) == 0))
      rc = 2; /* the one it has */
    else if (had != NULL && had->sig != NULL)
      rc = hm__fail(HM_ESIG, "%s is already typed \"%s\", not \"%s\"", qualified, had->sig,
                    sig);
    else if (had != NULL && sig == NULL)
      rc = 2;
    else if (mod == hm__module_code_of())
      rc = hm__fail(HM_EBUSY, "a live handle on %s from %s's own hook or constructor: its "
                              "table is being replaced by this very thread",
                    qualified, modname);
    else if (bound && in == NULL)
      rc = hm__fail(HM_EAGAIN, "%s: the group reload of %s has not resolved it yet",
                    qualified, modname);
    else
      rc = owned_check(mod, cur, in, bound, sym, sig, &fn, &fn_in);
    pthread_mutex_lock(&reg->lock);
    if (rc == 2) {
      *out = had;
      rc = 0;
    } else if (rc == 0 && (mod->cur != cur || mod->incoming != in ||
                           (had != NULL && own_handle(holder, mod, qualified) != had))) {
      rc = 1; /* the module moved on meanwhile: look again */
    } else if (rc == 0 && had != NULL) {
      /* An untyped handle of the version's becomes typed once its versions agree. */
      if ((had->sig = hm__strdup(&reg->a, sig)) == NULL)
        rc = hm__fail(HM_ENOMEM, "out of memory typing %s", qualified);
      *out = rc == 0 ? had : NULL;
    } else if (rc == 0) {
      rc = make_owned(mod, qualified, sym, sig, fn, fn_in, holder, bound, out);
    }
    pthread_mutex_unlock(&reg->lock);
    if (in != NULL)
      hm__version_unref(reg, in);
    hm__version_unref(reg, cur);
    if (rc != 1)
      return rc;
  }
}

/* Whose a handle taken now would be: the version whose load hook runs on this thread, if it
 * is of this registry; else the caller's. */
static hm__version *holder_now(const hm_registry *reg) {
  hm__version *v = hm__loading_of();
  return v != NULL && v->mod->reg == reg ? v : NULL;
}

int hm_live_acquire(hm_registry *reg, const char *qualified, const char *signature,
                    hm_live **out) {
  char *sig = NULL;
  int rc;
  if (reg == NULL) {
    if (out != NULL)
      *out = NULL;
    return hm__fail(HM_EINVAL, "hm_live_acquire: NULL registry");
  }
  if (signature != NULL && (sig = hm__sig_norm(&reg->a, signature)) == NULL) {
    if (out != NULL)
      *out = NULL;
    return hm__fail(HM_ENOMEM, "out of memory typing %s", qualified ? qualified : "(null)");
  }
  rc = owned_get(reg, qualified, sig, holder_now(reg), 0, out);
  hm__free(&reg->a, sig);
  return rc;
}

void hm_live_release(hm_live *live) {
  hm_registry *reg;
  if (live == NULL || live->kind == HM__LIVE_BORROWED)
    return;
  reg = live->mod->reg;
  pthread_mutex_lock(&reg->lock);
  if (live->head.table != &dead_table) {
    hm__owned_unlink(live);
    live->head.table = &dead_table;
    live->head.slot = 0;
    if (live->kind == HM__LIVE_HOST) {
      live->next_c = reg->spare_lives;
      reg->spare_lives = live;
    }
  }
  pthread_mutex_unlock(&reg->lock);
}

/* ctx->api's gets: inside a load hook, a handle of the version being loaded (the same one
 * for the same name); elsewhere the registry's, as hm_live_get. */
static int api_live_get(hm_registry *reg, const char *qualified, hm_live **out) {
  hm__version *holder = reg != NULL ? holder_now(reg) : NULL;
  if (holder == NULL)
    return hm_live_get(reg, qualified, out);
  return owned_get(reg, qualified, NULL, holder, 1, out);
}

static int api_live_get_typed(hm_registry *reg, const char *qualified, const char *signature,
                              hm_live **out) {
  hm__version *holder = reg != NULL ? holder_now(reg) : NULL;
  char *sig;
  int rc;
  if (holder == NULL || signature == NULL)
    return hm_live_get_typed(reg, qualified, signature, out);
  if ((sig = hm__sig_norm(&reg->a, signature)) == NULL) {
    if (out != NULL)
      *out = NULL;
    return hm__fail(HM_ENOMEM, "out of memory typing %s", qualified ? qualified : "(null)");
  }
  rc = owned_get(reg, qualified, sig, holder, 1, out);
  hm__free(&reg->a, sig);
  return rc;
}

hm_module *hm_live_module(const hm_live *live) { return live ? live->mod : NULL; }

hm_fn hm_live_enter_fn(hm_live *live) { return live != NULL ? hm_live_enter(live) : NULL; }

void hm_live_leave_fn(hm_live *live) {
  if (live != NULL)
    hm_live_leave(live);
}

/* The API as function pointers, for modules that do not link the shared library (a load
 * hook's ctx->api). */
const hm_module_api hm__module_api = {
    sizeof(hm_module_api), api_live_get,    api_live_get_typed, hm_live_enter_fn,
    hm_live_leave_fn,      hm_snapshot_acquire, hm_snapshot_acquire_typed, hm_snapshot_fn,
    hm_snapshot_release,   hm_errmsg,       hm_live_acquire,    hm_live_release};
