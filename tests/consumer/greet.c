/* The consumer's module: version() tells which build is running (-DVERSION=1 or 2). */
#include <hotmod/module.h>

HM_MODULE_EXPORT int version(void) { return VERSION; }
