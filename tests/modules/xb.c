/* Module B of the cross-module tests: value() says which version answers. -DVERSION=n. */
#include "hotmod/module.h"

HM_MODULE_EXPORT int value(void) { return VERSION * 10; }
