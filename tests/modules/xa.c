/* Module A of the cross-module tests: entry() calls B's value() through a live handle taken
 * in its load hook, with the API table the load context carries (no link to libhotmod, no
 * use of its thread-local state from here). -DVERSION=n; -DSNAPSHOT: a snapshot of
 * b:value instead, taken in load and released in unload, so A keeps calling the B version it
 * pinned until A itself is reloaded. */
#include "hotmod/module.h"

typedef int (*int_fn)(void);

static const hm_module_api *api;
#ifdef SNAPSHOT
static hm_snapshot *b_value;
#else
static hm_live *b_value;
#endif

HM_MODULE_EXPORT int entry(void) {
#ifdef SNAPSHOT
  return ((int_fn)api->snapshot_fn(b_value))() + VERSION;
#else
  int r = ((int_fn)api->live_enter(b_value))();
  api->live_leave(b_value);
  return r + VERSION;
#endif
}

static int load(const hm_load_ctx *ctx) {
  api = ctx->api;
#ifdef SNAPSHOT
  return api->snapshot_acquire(ctx->reg, "b:value", &b_value) == 0 ? HM_LOAD_CONVERTED : -1;
#else
  return api->live_get(ctx->reg, "b:value", &b_value) == 0 ? HM_LOAD_CONVERTED : -1;
#endif
}

static void unload(int handed_over) {
  (void)handed_over;
#ifdef SNAPSHOT
  api->snapshot_release(b_value);
#endif
}

HM_MODULE_DESCRIBE(0, NULL, load, unload);
