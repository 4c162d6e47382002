/* A module whose descriptor is not its own: it links a library (this file built with -DDEP)
 * that exports one, for a module ABI no hotmod has. The loader looks for a descriptor in
 * the module itself only, so the module is a plain one. -DVERSION=n. */
#include "hotmod/module.h"

#ifdef DEP
HM_MODULE_EXPORT const hm_module_desc hm_module_descriptor = {
    999, sizeof(hm_module_desc), 0, NULL, NULL, NULL, NULL, 0};
#else
HM_MODULE_EXPORT int version(void) { return VERSION; }
#endif
