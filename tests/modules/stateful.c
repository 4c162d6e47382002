/* Test module with a descriptor: hands its counter to the next version. -DFAIL_LOAD makes the
 * load hook refuse; -DBAD_ABI declares a wrong ABI. */
#include "hotmod/module.h"

#include <stdlib.h>

struct state {
  int count;
  int generations; /* how many versions have held this state */
};

static struct state *st;

HM_MODULE_EXPORT int bump(void) { return ++st->count; }
HM_MODULE_EXPORT int generations(void) { return st->generations; }
HM_MODULE_EXPORT int version(void) { return VERSION; }

/* Freed-state counter the host can read to check the unload hook's decision. */
HM_MODULE_EXPORT int freed_by_unload;

static void *save(void) { return st; }

static int load(void *prev) {
#ifdef FAIL_LOAD
  (void)prev;
  return -7;
#else
  if (prev != NULL) {
    st = prev;
  } else {
    st = calloc(1, sizeof *st);
    if (st == NULL)
      return -1;
  }
  st->generations++;
  return 0;
#endif
}

static void unload(int handed_over) {
  if (!handed_over)
    free(st);
}

#ifdef BAD_ABI
HM_MODULE_EXPORT const hm_module_desc hm_module_descriptor = {HM_MODULE_ABI + 41,
                                                              sizeof(hm_module_desc), save,
                                                              load, unload};
#else
HM_MODULE_DESCRIBE(save, load, unload);
#endif
