/* Test module with a descriptor: hands its counter to the next version. -DFAIL_LOAD makes the
 * load hook refuse; -DREFUSE_ROLLBACK refuses to come back by a rollback; -DBAD_ABI declares a
 * wrong ABI; -DCONVERT copies the counter into a state of its own instead of adopting it (the
 * old version keeps and frees its own). The host may read what the last load hook was told
 * through last_ctx_*(). */
#include "hotmod/module.h"

#include <stdlib.h>

struct state {
  int count;
  int generations; /* how many versions have held this state */
};

static struct state *st;
static int ctx_rollback = -1, ctx_reused = -1, ctx_prev_sv = -1, ctx_still_owned = -1,
           ctx_version = -1;

HM_MODULE_EXPORT int bump(void) { return ++st->count; }
HM_MODULE_EXPORT int generations(void) { return st->generations; }
HM_MODULE_EXPORT int version(void) { return VERSION; }
HM_MODULE_EXPORT int last_ctx_rollback(void) { return ctx_rollback; }
HM_MODULE_EXPORT int last_ctx_reused(void) { return ctx_reused; }
HM_MODULE_EXPORT int last_ctx_prev_state_version(void) { return ctx_prev_sv; }
HM_MODULE_EXPORT int last_ctx_still_owned(void) { return ctx_still_owned; }
HM_MODULE_EXPORT int last_ctx_version(void) { return ctx_version; }

static void *save(void) { return st; }

static int load(const hm_load_ctx *ctx) {
  ctx_rollback = ctx->rollback;
  ctx_reused = ctx->reused;
  ctx_version = (int)ctx->version;
  ctx_prev_sv = (int)ctx->prev_state_version;
  ctx_still_owned = HM_LOAD_CTX_HAS(ctx, still_owned) ? ctx->still_owned : -1;
#ifdef FAIL_LOAD
  return -7;
#else
#ifdef REFUSE_ROLLBACK
  if (ctx->rollback)
    return -8;
#endif
#ifdef CONVERT
  {
    const struct state *prev = ctx->prev;
    /* Brought back while still loaded, and what st points to is still this version's own:
     * free it before starting on a new one (a stale pointer would be left alone). */
    if (ctx->reused && ctx_still_owned == 1)
      free(st);
    if ((st = calloc(1, sizeof *st)) == NULL)
      return -1;
    st->count = prev != NULL ? prev->count : 0;
    st->generations = prev != NULL ? prev->generations + 1 : 1;
    return HM_LOAD_CONVERTED;
  }
#endif
  if (ctx->prev != NULL) {
    st = ctx->prev;
    st->generations++;
    return HM_LOAD_ADOPTED;
  }
  st = calloc(1, sizeof *st);
  if (st == NULL)
    return -1;
  st->generations = 1;
  return HM_LOAD_CONVERTED;
#endif
}

static void unload(int handed_over) {
  if (!handed_over)
    free(st);
}

#ifdef BAD_ABI
#include <stdio.h>
/* Refused before any of this runs: the constructor would leave a mark. */
__attribute__((constructor)) static void mark(void) {
  const char *p = getenv("HMT_CTOR_MARK");
  FILE *f = p != NULL ? fopen(p, "w") : NULL;
  if (f != NULL)
    fclose(f);
}
HM_MODULE_EXPORT const hm_module_desc hm_module_descriptor = {
    HM_MODULE_ABI + 41, sizeof(hm_module_desc), 1, save, load, unload, NULL, 0};
#else
HM_MODULE_DESCRIBE(1, save, load, unload);
#endif
