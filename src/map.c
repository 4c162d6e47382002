/* A small open-addressing hash map from borrowed C strings to pointers. Keys are owned by
 * the values they belong to (a module's name, a live handle's qualified name), so the map
 * never copies or frees them. Live handles are never removed; a module is removed only when
 * its first load fails.
 *
 * Layer 0 (docs/architecture.md): calls only common.c.
 */
#include "map.h"

#include <string.h>

static uint64_t hash_str(const char *s) {
  /* FNV-1a: short keys, no adversary to defend against. */
  uint64_t h = 1469598103934665603ull;
  while (*s) {
    h ^= (unsigned char)*s++;
    h *= 1099511628211ull;
  }
  return h;
}

void *hm__map_get(const hm__map *m, const char *key) {
  size_t mask, i;
  if (m->cap == 0)
    return NULL;
  mask = m->cap - 1;
  for (i = (size_t)hash_str(key) & mask;; i = (i + 1) & mask) {
    if (m->slots[i].key == NULL)
      return NULL;
    if (strcmp(m->slots[i].key, key) == 0)
      return m->slots[i].val;
  }
}

static void insert(hm__map_slot *slots, size_t cap, const char *key, void *val) {
  size_t mask = cap - 1, i;
  for (i = (size_t)hash_str(key) & mask; slots[i].key != NULL; i = (i + 1) & mask)
    ;
  slots[i].key = key;
  slots[i].val = val;
}

int hm__map_put(hm__map *m, const hm__allocator *a, const char *key, void *val) {
  /* Keep the load factor under one half so probes stay short. */
  if ((m->n + 1) * 2 > m->cap) {
    size_t ncap = m->cap ? m->cap * 2 : 16, i;
    hm__map_slot *ns = hm__calloc(a, ncap, sizeof *ns);
    if (ns == NULL)
      return HM_ENOMEM;
    for (i = 0; i < m->cap; i++)
      if (m->slots[i].key != NULL)
        insert(ns, ncap, m->slots[i].key, m->slots[i].val);
    hm__free(a, m->slots);
    m->slots = ns;
    m->cap = ncap;
  }
  insert(m->slots, m->cap, key, val);
  m->n++;
  return 0;
}

void hm__map_del(hm__map *m, const char *key) {
  size_t mask, i, j;
  if (m->cap == 0)
    return;
  mask = m->cap - 1;
  for (i = (size_t)hash_str(key) & mask;; i = (i + 1) & mask) {
    if (m->slots[i].key == NULL)
      return;
    if (strcmp(m->slots[i].key, key) == 0)
      break;
  }
  /* Backward-shift deletion: move later entries of the probe run into the hole, so lookups
   * never stop early at it (no tombstones needed). */
  for (j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
    size_t home = (size_t)hash_str(m->slots[j].key) & mask;
    /* Entry j may move to i only if its home is not in the cyclic range (i, j]. */
    if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].key = NULL;
  m->slots[i].val = NULL;
  m->n--;
}

void hm__map_free(hm__map *m, const hm__allocator *a) {
  hm__free(a, m->slots);
  m->slots = NULL;
  m->cap = m->n = 0;
}
