/* Module show of the pair example: each frame it takes a sample from module emit, through a
 * live handle its load hook took with the layout in its type (a handle of this version's
 * own), and says which layout it found: its own, or -1 for a sample of another layout (a
 * mixed pair, which the group reload never lets happen). */
#include "hotmod/module.h"

#include "pair.h"

static const hm_module_api *api;
static hm_live *emit;

HM_MODULE_EXPORT int show_frame(void) {
  /* Room for any layout: a mismatch is reported, never a write past the end. */
  union {
    struct sample s;
    char room[256];
  } u;
  u.s.layout = 0;
  ((void (*)(struct sample *))api->live_enter(emit))(&u.s);
  api->live_leave(emit);
  return u.s.layout == PAIR_LAYOUT ? PAIR_LAYOUT : -1;
}
HM_MODULE_SIGNATURE(show_frame, "int(void)");

static int load(const hm_load_ctx *ctx) {
  api = ctx->api;
  return api->live_get_typed(ctx->reg, "emit:emit_sample", PAIR_SAMPLE_SIG, &emit) == 0
             ? HM_LOAD_CONVERTED
             : -1;
}

HM_MODULE_DESCRIBE(0, NULL, load, NULL);
