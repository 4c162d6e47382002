/* Module "a" of the owned-handle and group tests: in its load hook it takes a typed live handle
 * on b's value() through ctx->api (a handle of this version's own), and calls it. -DVERSION=n;
 * -DWIDE: it expects value() to be long(void) (else int(void)); -DREFUSE: its load hook
 * refuses; -DNOHANDLE: it takes no handle at all. entry() = 10 * b's tag + VERSION; span()
 * calls b twice, 2 ms apart, and says what it saw: (VERSION * 1000 + first tag) * 1000 +
 * second tag. */
#include "hotmod/module.h"

#include <time.h>

#include "ptag.h"

static const hm_module_api *api;
static hm_live *b_value;

static int call_b(void) {
  tag_t t;
  if (b_value == NULL)
    return 0;
  t = ((tag_t(*)(void))api->live_enter(b_value))();
  api->live_leave(b_value);
  return (int)t;
}

HM_MODULE_EXPORT int ident(void) { return VERSION; }
HM_MODULE_SIGNATURE(ident, "int(void)");

HM_MODULE_EXPORT int entry(void) { return 10 * call_b() + VERSION; }

HM_MODULE_EXPORT int span(void) {
  struct timespec two_ms = {0, 2000000};
  int first = call_b(), second;
  nanosleep(&two_ms, NULL);
  second = call_b();
  return (VERSION * 1000 + first) * 1000 + second;
}

static int load(const hm_load_ctx *ctx) {
  api = ctx->api;
#ifdef REFUSE
  return -1;
#elif defined(NOHANDLE)
  return HM_LOAD_CONVERTED;
#else
  return api->live_get_typed(ctx->reg, "b:value", TAG_SIG, &b_value) == 0 ? HM_LOAD_CONVERTED
                                                                         : -1;
#endif
}

HM_MODULE_DESCRIBE(0, NULL, load, NULL);
