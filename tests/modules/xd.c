/* Module A of the cross-module tests, calling the public API directly (linked with the
 * shared libhotmod, as hotmod_add_module(... USES_HOTMOD) does): entry() = B's value() +
 * 100 * VERSION. -DVERSION=n. */
#include "hotmod/module.h"

static hm_live *b_value;

HM_MODULE_EXPORT int entry(void) { return HM_LIVE_CALL(b_value, int (*)(void)) + 100 * VERSION; }

static int load(const hm_load_ctx *ctx) {
  return hm_live_get(ctx->reg, "b:value", &b_value) == 0 ? HM_LOAD_CONVERTED : -1;
}

HM_MODULE_DESCRIBE(0, NULL, load, NULL);
