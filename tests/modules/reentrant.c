/* Test module whose constructor, destructor and hooks call back into the host, which then
 * calls hotmod from module code. The host defines the hmt_* functions (exported with
 * -rdynamic); a host that does not leaves them NULL and the module does nothing.
 * -DVERSION=n. */
#include "hotmod/module.h"

extern void hmt_in_constructor(int version) __attribute__((weak));
extern void hmt_in_destructor(int version) __attribute__((weak));
extern int hmt_in_load_hook(int version) __attribute__((weak));
extern void hmt_in_unload_hook(int version) __attribute__((weak));

HM_MODULE_EXPORT int version(void) { return VERSION; }
HM_MODULE_EXPORT int twice(void) { return 2 * VERSION; }

__attribute__((constructor)) static void made(void) {
  if (hmt_in_constructor)
    hmt_in_constructor(VERSION);
}

__attribute__((destructor)) static void gone(void) {
  if (hmt_in_destructor)
    hmt_in_destructor(VERSION);
}

static int load(const hm_load_ctx *ctx) {
  (void)ctx;
  return hmt_in_load_hook ? hmt_in_load_hook(VERSION) : HM_LOAD_CONVERTED;
}

static void unload(int handed_over) {
  (void)handed_over;
  if (hmt_in_unload_hook)
    hmt_in_unload_hook(VERSION);
}

HM_MODULE_DESCRIBE(0, NULL, load, unload);
