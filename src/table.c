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
 * Layer 6 (docs/architecture.md): calls events.c, the loader, the reclaimer and the leaves;
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

int hm__table_fill(hm_module *mod, const char *path) {
  hm_registry *reg = mod->reg;
  pthread_mutex_lock(&reg->lock);
  for (;;) {
    hm__table *t = mod->incoming_table;
    size_t i = t->n;
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
    v = mod->incoming_table->v; /* the table may have moved; its version does not */
    sym = mod->syms[i];
    pthread_mutex_unlock(&reg->lock);
    rc = hm__resolve(v, sym, &fn);
    if (rc != 0)
      return hm__fail(rc, "%s (new version of module %s) lacks symbol %s, used by a live "
                          "handle",
                      path, mod->name, sym);
    pthread_mutex_lock(&reg->lock);
    /* Only this loop appends while it is behind (hm_live_get appends only to a complete
     * table), so slot i is still the next one; the table itself may have moved. */
    t = mod->incoming_table;
    t->fns[i] = fn;
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

void hm__publish(hm_module *mod, hm__table *t) {
  hm__table *old = mod->cur_table;
  mod->cur_table = t;
  __atomic_store_n(&mod->table, t->fns, __ATOMIC_SEQ_CST);
  /* When a version stops being current: introspection names the live calls that began
   * before this and may still be inside it (hm__readers_inside). */
  if (t->v != NULL)
    __atomic_store_n(&t->v->retired_gp, 0, __ATOMIC_RELAXED);
  if (old != NULL && old->v != NULL && old->v != t->v)
    __atomic_store_n(&old->v->retired_gp, hm__gp_now(), __ATOMIC_RELAXED);
  if (old != NULL)
    hm__defer(mod->reg->rc, &old->node, table_free_cb, old, 1);
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

  pthread_mutex_lock(&reg->lock);
  for (pp = &mod->versions; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == v) {
      *pp = v->next;
      break;
    }
  }
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
  pthread_mutex_lock(&reg->lock);
  if (published) {
    reg->nloaded--;
    reg->stats.unloads++;
  }
  if (u.mapped) {
    reg->stats.leaked++;
    reg->stats.leaked_bytes += u.bytes;
  }
  pthread_mutex_unlock(&reg->lock);
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
  prev = hm__module_code_enter(mod);
  hm__unload_version(v, 0, &u);
  hm__module_code_leave(prev);
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
