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
  if (v != NULL)
    num = v->num;
  pthread_mutex_unlock(&reg->lock);
  if (v == NULL) {
    hm__free(&reg->a, s);
    return hm__fail(HM_ENOMOD, "no module named %s", modname);
  }
  if (hm__resolve(v, sym, &fn) != 0) {
    rc = missing_symbol(mod, v, sym);
    hm__free(&reg->a, s);
    if (reg->forked)
      __atomic_sub_fetch(&v->refs, 1, __ATOMIC_RELAXED); /* never the last: it is current */
    else
      hm__version_unref(reg, v);
    return rc;
  }
  /* The reference taken above is the snapshot's. */
  __atomic_add_fetch(&v->snaps, 1, __ATOMIC_RELAXED); /* counted for introspection only */
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
  __atomic_sub_fetch(&v->snaps, 1, __ATOMIC_RELAXED);
  if (__atomic_load_n(&v->orphan, __ATOMIC_ACQUIRE)) {
    /* Its registry is gone; the version stays mapped. Its bookkeeping goes with the last
     * snapshot. */
    if (__atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0)
      hm__free(&a, v);
    return;
  }
  if (reg->forked) {
    /* No reclaimer in a forked child: the version stays until the registry is freed. */
    __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL);
    return;
  }
  hm__version_unref(reg, v);
}

/* ---- Live handles ---------------------------------------------------------------------- */

/* Add a slot for `sym`, resolved to `fn` in the current version, and republish the table.
 * Under reg->lock. */
static int add_slot(hm_module *mod, const char *sym, hm_fn fn, size_t *slot) {
  hm_registry *reg = mod->reg;
  hm__table *t;
  char *copy;
  if (mod->nsyms == mod->capsyms) {
    size_t ncap = mod->capsyms ? mod->capsyms * 2 : 4;
    char **ns = hm__realloc(&reg->a, mod->syms, ncap * sizeof *ns);
    char **sg;
    if (ns == NULL)
      return HM_ENOMEM;
    mod->syms = ns;
    sg = hm__realloc(&reg->a, mod->sigs, ncap * sizeof *sg);
    if (sg == NULL)
      return HM_ENOMEM;
    memset(sg + mod->capsyms, 0, (ncap - mod->capsyms) * sizeof *sg);
    mod->sigs = sg;
    mod->capsyms = ncap;
  }
  /* An unload publishes the spare table, which must have a slot for this one too. */
  if (hm__table_grow(reg, &mod->spare, mod->nsyms + 1) != 0)
    return HM_ENOMEM;
  copy = hm__strdup(&reg->a, sym);
  t = hm__table_new(reg, mod->cur, mod->nsyms + 1);
  if (copy == NULL || t == NULL) {
    hm__free(&reg->a, copy);
    hm__table_discard(t);
    return HM_ENOMEM;
  }
  memcpy(t->fns, mod->cur_table->fns, mod->nsyms * sizeof(hm_fn));
  t->fns[mod->nsyms] = fn;
  *slot = mod->nsyms;
  mod->syms[mod->nsyms++] = copy;
  hm__publish(mod, t);
  return 0;
}

/* Make the live handle for a symbol that has none yet. Under reg->lock, with `fn` resolved
 * in the current version and, if a reload is under way, `fn_in` in the incoming one. */
static int make_live(hm_registry *reg, hm_module *mod, const char *qualified, const char *sym,
                     hm_fn fn, hm_fn fn_in, hm_live **out) {
  hm_live *live = hm__calloc(&reg->a, 1, sizeof *live);
  hm__table *in = mod->incoming_table;
  /* A reload that has resolved every slot it knew of gets the new one from here: it
   * publishes without resolving again. One still resolving finds the slot by its name. */
  int append = in != NULL && in->n == mod->nsyms;
  size_t slot;
  if (live == NULL || (live->qualified = hm__strdup(&reg->a, qualified)) == NULL ||
      (append && hm__table_reserve(mod, mod->nsyms + 1) != 0) ||
      hm__map_put(&reg->lives, &reg->a, live->qualified, live) != 0)
    goto nomem;
  if (add_slot(mod, sym, fn, &slot) != 0) {
    hm__map_del(&reg->lives, live->qualified);
    goto nomem;
  }
  if (append) {
    in = mod->incoming_table; /* it may have moved */
    in->fns[in->n++] = fn_in;
  }
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
static size_t slot_of(const hm_live *live) { return live->head.slot; }

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

hm_module *hm_live_module(const hm_live *live) { return live ? live->mod : NULL; }

hm_fn hm_live_enter_fn(hm_live *live) { return live != NULL ? hm_live_enter(live) : NULL; }

void hm_live_leave_fn(hm_live *live) {
  if (live != NULL)
    hm_live_leave(live);
}

/* The API as function pointers, for modules that do not link the shared library (a load
 * hook's ctx->api). */
const hm_module_api hm__module_api = {
    sizeof(hm_module_api), hm_live_get,     hm_live_get_typed, hm_live_enter_fn,
    hm_live_leave_fn,      hm_snapshot_acquire, hm_snapshot_acquire_typed, hm_snapshot_fn,
    hm_snapshot_release,   hm_errmsg};
