/* A module that includes nothing but hotmod/module.h and passes NULL hooks: the header must
 * bring NULL itself. -DVERSION=n. */
#include "hotmod/module.h"

HM_MODULE_EXPORT int version(void) { return VERSION; }

HM_MODULE_DESCRIBE(0, NULL, NULL, NULL);
