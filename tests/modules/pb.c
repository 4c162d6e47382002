/* Module "b" of the owned-handle and group tests: value() answers its tag, VERSION, typed
 * long(void) with -DWIDE (else int(void)), plus 100 when its own handle on a's ident() (taken
 * in its load hook if a is loaded) reached an a of another version. -DNOVALUE: no value() at
 * all. Version 1 also exports extra(). */
#include "hotmod/module.h"

#include "ptag.h"

static const hm_module_api *api;
static hm_live *a_ident;

#ifndef NOVALUE
HM_MODULE_EXPORT tag_t value(void) {
  tag_t tag = VERSION;
  if (a_ident != NULL) {
    int a = ((int (*)(void))api->live_enter(a_ident))();
    api->live_leave(a_ident);
    if (a != VERSION)
      tag += 100;
  }
  return tag;
}
HM_MODULE_SIGNATURE(value, TAG_SIG);
#endif

#if VERSION == 1
HM_MODULE_EXPORT int extra(void) { return 7; }
#endif

static int load(const hm_load_ctx *ctx) {
  api = ctx->api;
  /* Only where there is an a to call (a first load of b comes before a's). */
  if (api->live_get_typed(ctx->reg, "a:ident", "int(void)", &a_ident) != 0)
    a_ident = NULL;
  return HM_LOAD_CONVERTED;
}

HM_MODULE_DESCRIBE(0, NULL, load, NULL);
