/* The demo's stateful module: a tally of calls that survives reloads. Version 1 keeps a
 * count (state layout 1); version 2 also keeps the largest value seen (layout 2) and
 * migrates a version-1 tally into its own layout. -DVERSION=1 or 2. */
#include "hotmod/module.h"

#include <stdlib.h>

#if VERSION == 1
#define LAYOUT 1
struct tally {
  int count;
};
#else
#define LAYOUT 2
struct tally {
  int count;
  int largest;
};
struct tally_v1 { /* what version 1 hands over */
  int count;
};
#endif

static struct tally *t;

/* Count a call with value x; return the count so far. */
HM_MODULE_EXPORT int record(int x) {
#if LAYOUT == 2
  if (x > t->largest)
    t->largest = x;
#else
  (void)x;
#endif
  return ++t->count;
}
HM_MODULE_SIGNATURE(record, "int(int)");

HM_MODULE_EXPORT int largest(void) {
#if LAYOUT == 2
  return t->largest;
#else
  return -1; /* version 1 does not keep it */
#endif
}

static void *save(void) { return t; }

static int load(const hm_load_ctx *ctx) {
  /* Brought back by a rollback while still loaded, with the tally it had still its own (the
   * next version converted it rather than adopting it): let go of it. */
  int owned = ctx->reused && HM_LOAD_CTX_HAS(ctx, still_owned) && ctx->still_owned;
  struct tally *own = owned ? t : NULL;
  struct tally *fresh;
  if (ctx->prev != NULL && ctx->prev_state_version == LAYOUT) {
    free(own);
    t = ctx->prev; /* same layout: take it over */
    return HM_LOAD_ADOPTED;
  }
  if ((fresh = calloc(1, sizeof *fresh)) == NULL)
    return -1; /* refused: nothing changed */
  free(own);
  t = fresh;
#if LAYOUT == 2
  if (ctx->prev != NULL && ctx->prev_state_version == 1)
    t->count = ((const struct tally_v1 *)ctx->prev)->count; /* migrate; v1 frees its own */
#else
  if (ctx->prev != NULL) /* a newer layout, e.g. on a rollback: keep what we can read */
    t->count = *(const int *)ctx->prev;
#endif
  return HM_LOAD_CONVERTED;
}

static void unload(int handed_over) {
  if (!handed_over)
    free(t);
}

HM_MODULE_DESCRIBE(LAYOUT, save, load, unload);
