/* A counter, with a descriptor that hands it on (the default) or as a plain module
 * (-DPLAIN): the same source either way. -DVERSION=n. */
#include "hotmod/module.h"

#include <stdlib.h>

static int *count;
static int fresh;

HM_MODULE_EXPORT int next(void) {
  if (count == NULL) { /* plain: module-level state, fresh in each version */
    count = &fresh;
  }
  return ++*count;
}

HM_MODULE_EXPORT int version(void) { return VERSION; }

#ifndef PLAIN
static void *save(void) { return count; }

static int load(const hm_load_ctx *ctx) {
  if (ctx->prev != NULL && ctx->prev_state_version == 1) {
    count = ctx->prev;
    return HM_LOAD_ADOPTED;
  }
  count = calloc(1, sizeof *count);
  return count != NULL ? HM_LOAD_CONVERTED : -1;
}

static void unload(int handed_over) {
  if (!handed_over)
    free(count);
}

HM_MODULE_DESCRIBE(1, save, load, unload);
#endif
