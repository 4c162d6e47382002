/* Module-level state, as in a Python module that sets a variable at import and whose function
 * reads it: my_function(x) = x * variable, with the variable starting at 10.
 *   -DVERSION=1: the state is { int value; int assigns; }             (layout 1)
 *   -DVERSION=2: the state is { double value; long assigns; int from; } (layout 2)
 *   -DKEEP_STATE: with a descriptor whose hooks hand the state to the next version, which
 *   converts a layout-1 state into its own; without it a plain module, whose every version
 *   starts again from the initial value. */
#include "hotmod/module.h"

#if VERSION == 1
#define LAYOUT 1
struct state {
  int value;
  int assigns;
};
static struct state state = {10, 0};
#else
#define LAYOUT 2
struct state {
  double value;
  long assigns;
  int from; /* the layout this state was converted from (0: none) */
};
struct state_v1 {
  int value;
  int assigns;
};
static struct state state = {10.0, 0, 0};
#endif

HM_MODULE_EXPORT double my_function(double x) { return x * state.value; }

HM_MODULE_EXPORT void assign(int value) {
  state.value = value;
  state.assigns++;
}

HM_MODULE_EXPORT int assign_count(void) { return (int)state.assigns; }

/* The layout of this version's state, and the layout it was converted from (0: none). */
HM_MODULE_EXPORT int layout(void) { return LAYOUT; }

HM_MODULE_EXPORT int converted_from(void) {
#if LAYOUT == 2
  return state.from;
#else
  return 0;
#endif
}

#ifdef KEEP_STATE
/* The state lives in this version's globals: the next version copies it into its own
 * (HM_LOAD_CONVERTED), so nothing is allocated and each version frees nothing. */
static void *save(void) { return &state; }

static int load(const hm_load_ctx *ctx) {
  if (ctx->prev == NULL)
    return HM_LOAD_CONVERTED; /* first load: the initial value */
  if (ctx->prev_state_version == LAYOUT) {
    state = *(const struct state *)ctx->prev;
    return HM_LOAD_CONVERTED;
  }
#if LAYOUT == 2
  if (ctx->prev_state_version == 1) {
    const struct state_v1 *old = ctx->prev;
    state.value = old->value;
    state.assigns = old->assigns;
    state.from = 1;
    return HM_LOAD_CONVERTED;
  }
#endif
  return -1; /* a layout this build cannot read: refuse it, the old version serves on */
}

HM_MODULE_DESCRIBE(LAYOUT, save, load, NULL);
#endif
