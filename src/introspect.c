/*
 * Introspection: what a registry holds, read for tools (hm_registry_modules,
 * hm_module_describe_get): a module's current version and the signature it was verified
 * with, counters, last refusal, rollback history, and every version hotmod keeps with why,
 * in the words of HM_MAPPED_MAP.
 *
 * Layer 8 (docs/architecture.md): reads the registry's structures under reg->lock (never a
 * module's reload lock, so it never waits for a reload), and asks reclaim.c which threads
 * are inside a live call, and minisig.c for a key id in hex; calls nothing else but the
 * leaves.
 */
#include "reload.h"

#include <limits.h>
#include <stdalign.h>
#include <string.h>

int hm_registry_modules(hm_registry *reg, hm_module **out, size_t max) {
  size_t i, n;
  if (reg == NULL || (out == NULL && max > 0))
    return hm__fail(HM_EINVAL, "hm_registry_modules: NULL registry or output");
  pthread_mutex_lock(&reg->lock);
  n = reg->nmods;
  for (i = 0; i < n && i < max; i++)
    out[i] = reg->mods[i];
  pthread_mutex_unlock(&reg->lock);
  return n > INT_MAX ? INT_MAX : (int)n;
}

/* The memory of one info: the allocator that frees it, then the versions, the history and
 * the strings. */
typedef struct info_mem {
  hm__allocator a;
  size_t size; /* the caller's size of hm_module_info: the fields hm_module_info_clear clears */
  alignas(max_align_t) unsigned char data[];
} info_mem;

/* What a pass over the module under the lock finds; the grace periods to ask about after. */
typedef struct info_build {
  hm_version_info *vs;
  unsigned long gp[64]; /* retired_gp of the versions waiting for a grace period */
  size_t ngp_index[64];
  size_t ngp;
  char *strings;
  size_t size; /* the caller's size of hm_module_info */
} info_build;

/* The build rollback would return to, or 0. Under reg->lock. */
static unsigned rollback_build(const hm_module *mod) {
  return mod->cur != NULL && mod->nhist > 0 ? mod->hist[mod->nhist - 1] : 0;
}

static char *put_string(char **at, const char *s) {
  char *p = *at;
  size_t n = strlen(s) + 1;
  memcpy(p, s, n);
  *at += n;
  return p;
}

/* The trusted comment a build's signature was verified with: "" for a build loaded without
 * trusted keys (the signature is freed only with its version, or with the kept copy). */
static const char *comment_of(const hm__signed *sig) {
  return sig != NULL ? sig->comment : "";
}

/* A note into the info's strings; the one empty string for none. */
static const char *put_note(info_build *b, const hm__signed *sig, const char *empty) {
  return sig != NULL && sig->comment[0] != '\0' ? put_string(&b->strings, sig->comment) : empty;
}

/* Is the rollback copy an entry of its own (the build it holds no longer mapped)? */
static int kept_copy_entry(const hm_module *mod, int back_mapped) {
  unsigned back = rollback_build(mod);
  return back != 0 && !back_mapped && mod->kept_path != NULL && mod->kept_build == back;
}

/* How many entries the module's versions make, and the bytes their notes take (each with
 * its NUL) into *notes. Under reg->lock. */
static size_t count_versions(const hm_module *mod, size_t *notes) {
  const hm__version *v;
  size_t n = mod->nkept_recs;
  unsigned back = rollback_build(mod);
  int back_mapped = 0;
  *notes = 0;
  if (mod->prepared != NULL && mod->prepared->v != NULL) {
    n++;
    *notes += strlen(comment_of(mod->prepared->v->sig)) + 1;
  }
  for (v = mod->versions; v != NULL; v = v->next) {
    n++;
    *notes += strlen(comment_of(v->sig)) + 1;
    back_mapped |= back != 0 && v->build == back;
  }
  if (kept_copy_entry(mod, back_mapped)) {
    n++;
    *notes += strlen(comment_of(mod->kept_sig)) + 1;
  }
  return n;
}

/* A version on the module's list: why it is mapped. Under reg->lock. */
static void describe_loaded(const hm_module *mod, const hm__version *v, hm_version_info *o,
                            info_build *b, const char *empty) {
  int refs = __atomic_load_n(&v->refs, __ATOMIC_ACQUIRE);
  unsigned snaps = (unsigned)__atomic_load_n(&v->pins, __ATOMIC_RELAXED);
  unsigned long gp = __atomic_load_n(&v->retired_gp, __ATOMIC_RELAXED);
  memset(o, 0, sizeof *o);
  o->version = __atomic_load_n(&v->num, __ATOMIC_RELAXED);
  o->build = v->build;
  o->mapped = 1;
  o->loaded_ns = v->load_ns;
  o->note = put_note(b, v->sig, empty);
  o->snapshots = snaps;
  if (v == mod->cur)
    o->why |= 1u << HM_MAPPED_CURRENT;
  if (snaps > 0)
    o->why |= 1u << HM_MAPPED_PINNED;
  if (v->build == rollback_build(mod) && v != mod->cur)
    o->why |= 1u << HM_MAPPED_ROLLBACK;
  if (refs <= 0) {
    o->why |= 1u << HM_MAPPED_UNLOADING;
  } else if (v != mod->cur && (unsigned)refs > snaps) {
    /* Held by a retired table (or, for a moment, a lookup): live calls that began before it
     * was retired may still be inside it. */
    o->why |= 1u << HM_MAPPED_GRACE;
    if (gp != 0 && b->ngp < sizeof b->gp / sizeof b->gp[0]) {
      b->gp[b->ngp] = gp;
      b->ngp_index[b->ngp++] = (size_t)(o - b->vs);
    }
  }
}

/* Fill the versions (b->vs has count_versions() entries). Under reg->lock. */
static size_t fill_versions(const hm_module *mod, info_build *b, const char *empty) {
  const hm__version *v;
  hm_version_info *o = b->vs;
  unsigned back = rollback_build(mod);
  int back_mapped = 0;
  size_t i;
  if (mod->prepared != NULL && mod->prepared->v != NULL) {
    v = mod->prepared->v;
    memset(o, 0, sizeof *o);
    o->version = __atomic_load_n(&v->num, __ATOMIC_RELAXED); /* the number it would get */
    o->build = v->build;
    o->why = 1u << HM_MAPPED_PREPARED;
    o->mapped = 1;
    o->loaded_ns = v->load_ns;
    o->note = put_note(b, v->sig, empty);
    o++;
  }
  for (v = mod->versions; v != NULL; v = v->next) {
    describe_loaded(mod, v, o++, b, empty);
    back_mapped |= back != 0 && v->build == back;
  }
  for (i = mod->nkept_recs; i-- > 0;) {
    const hm__kept_rec *r = &mod->kept_recs[i];
    memset(o, 0, sizeof *o);
    o->version = r->num;
    o->why = r->why > 0 && r->why < 32 ? 1u << r->why : 0;
    o->mapped = 1;
    o->loaded_ns = r->ns;
    o->bytes = r->bytes;
    o->note = empty;
    o++;
  }
  if (kept_copy_entry(mod, back_mapped)) {
    memset(o, 0, sizeof *o);
    o->version = mod->kept_num;
    o->build = back;
    o->why = 1u << HM_MAPPED_ROLLBACK;
    o->note = put_note(b, mod->kept_sig, empty);
    o++;
  }
  return (size_t)(o - b->vs);
}

/* Newest first: by version number, descending (a handful of entries). */
static void sort_versions(hm_version_info *vs, size_t n, info_build *b) {
  size_t i, j, k;
  for (i = 1; i < n; i++) {
    for (j = i; j > 0 && vs[j - 1].version < vs[j].version; j--) {
      hm_version_info t = vs[j];
      vs[j] = vs[j - 1];
      vs[j - 1] = t;
      for (k = 0; k < b->ngp; k++) {
        if (b->ngp_index[k] == j)
          b->ngp_index[k] = j - 1;
        else if (b->ngp_index[k] == j - 1)
          b->ngp_index[k] = j;
      }
    }
  }
}

/* Allocate the info's memory and fill everything the lock guards. Under reg->lock. */
static int fill_locked(hm_module *mod, hm_module_info *o, info_build *b) {
  hm_registry *reg = mod->reg;
  size_t notes, nv = count_versions(mod, &notes), nh = mod->cur != NULL ? mod->nhist : 0;
  const char *path = hm__path_given(mod->path);
  const char *detail = mod->reject_detail != NULL ? mod->reject_detail : "";
  const hm__signed *sig = mod->cur != NULL ? mod->cur->sig : NULL;
  char key_id[17] = "";
  size_t strs = strlen(mod->name) + strlen(path) + strlen(detail) + 4 + sizeof key_id +
                strlen(comment_of(sig)) + 1 + notes;
  size_t head = sizeof(info_mem) + nv * sizeof(hm_version_info) + nh * sizeof(unsigned);
  info_mem *m = hm__malloc(&reg->a, head + strs);
  char *empty;
  if (m == NULL)
    return HM_ENOMEM;
  if (sig != NULL)
    hm__key_id_hex(sig->key_id, key_id);
  m->a = reg->a;
  m->size = b->size;
  b->vs = (hm_version_info *)(void *)m->data;
  b->strings = (char *)m + head;
  o->hm__mem = m;
  o->module = mod;
  o->name = put_string(&b->strings, mod->name);
  o->path = put_string(&b->strings, path);
  o->last_reject = put_string(&b->strings, detail);
  empty = put_string(&b->strings, "");
  o->version = mod->cur != NULL ? mod->cur->num : 0;
  o->build = mod->cur != NULL ? mod->cur->build : 0;
  o->reload_mode = mod->mode != HM_RELOAD_DEFAULT ? mod->mode : reg->reload_mode;
  o->watch_method = __atomic_load_n(&mod->watch_method, __ATOMIC_ACQUIRE);
  o->loaded_ns = mod->cur != NULL ? mod->cur->load_ns : 0;
  o->reloads = mod->n_reloads;
  o->rejects = mod->n_rejects;
  o->rollbacks = mod->n_rollbacks;
  o->last_reject_ns = mod->reject_ns;
  o->last_reject_err = mod->reject_err;
  o->last_reject_version = mod->reject_version;
  o->nhistory = nh;
  if (nh > 0) {
    unsigned *h = (unsigned *)(void *)(m->data + nv * sizeof(hm_version_info));
    memcpy(h, mod->hist, nh * sizeof *h);
    o->history = h;
  }
  o->live_slots = mod->nsyms;
  o->prepared = mod->prepared != NULL;
  o->nversions = fill_versions(mod, b, empty);
  o->versions = b->vs;
  o->key_id = key_id[0] != '\0' ? put_string(&b->strings, key_id) : empty;
  o->trusted_comment = put_note(b, sig, empty);
  return 0;
}

int hm_module_describe_get(hm_module *mod, hm_module_info *out, size_t size) {
  hm_module_info o;
  info_build b;
  size_t i;
  int rc;
  if (mod == NULL || out == NULL || size < offsetof(hm_module_info, versions) + sizeof(void *))
    return hm__fail(HM_EINVAL, "hm_module_info: NULL module or output, or a size too small");
  memset(&o, 0, sizeof o);
  memset(&b, 0, sizeof b);
  b.size = size;
  pthread_mutex_lock(&mod->reg->lock);
  rc = fill_locked(mod, &o, &b);
  pthread_mutex_unlock(&mod->reg->lock);
  memset(out, 0, size < sizeof o ? size : sizeof o);
  if (rc != 0)
    return hm__fail(rc, "out of memory describing module %s", mod->name);
  sort_versions(b.vs, o.nversions, &b);
  /* The reader list's lock is taken without reg->lock: the threads of a grace period are
   * read a moment after the rest, which only matters to a call that just ended. */
  for (i = 0; i < b.ngp; i++) {
    hm_version_info *v = &b.vs[b.ngp_index[i]];
    size_t n = hm__readers_inside(b.gp[i], v->threads, HM_INFO_THREADS);
    v->nthreads = n > UINT_MAX ? UINT_MAX : (unsigned)n;
  }
  memcpy(out, &o, size < sizeof o ? size : sizeof o);
  return 0;
}

void hm_module_info_clear(hm_module_info *info) {
  info_mem *m;
  hm__allocator a;
  if (info == NULL || info->hm__mem == NULL)
    return;
  m = info->hm__mem;
  a = m->a;
  info->hm__mem = NULL;
  info->name = info->path = info->last_reject = NULL;
  info->history = NULL;
  info->versions = NULL;
  info->nversions = info->nhistory = 0;
  /* Fields a caller's older, smaller struct may not have. */
  if (m->size >= offsetof(hm_module_info, trusted_comment) + sizeof info->trusted_comment)
    info->key_id = info->trusted_comment = NULL;
  hm__free(&a, m);
}
