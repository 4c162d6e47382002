/* String-keyed hash map used by the registry (see map.c). */
#ifndef HM_MAP_H
#define HM_MAP_H

#include "internal.h"

typedef struct hm__map_slot {
  const char *key;
  void *val;
} hm__map_slot;

typedef struct hm__map {
  hm__map_slot *slots;
  size_t cap, n;
} hm__map;

/* The value for `key`, or NULL. */
HM__HIDDEN void *hm__map_get(const hm__map *m, const char *key);
/* Add a key that is not in the map yet. `key` is borrowed and must outlive the map.
 * Errors: HM_ENOMEM. */
HM__HIDDEN int hm__map_put(hm__map *m, const hm__allocator *a, const char *key, void *val);
/* Remove `key` if present. */
HM__HIDDEN void hm__map_del(hm__map *m, const char *key);
HM__HIDDEN void hm__map_free(hm__map *m, const hm__allocator *a);

#endif
