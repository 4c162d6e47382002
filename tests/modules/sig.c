/* Declared signatures. v1 and v2: my_function is double(double); v3 declares it
 * float(float) (and is); v4 declares nothing. -DVERSION=n. */
#include "hotmod/module.h"

#if VERSION == 3
HM_MODULE_EXPORT float my_function(float x) { return x * 3; }
HM_MODULE_SIGNATURE(my_function, "float(float)");
#else
HM_MODULE_EXPORT double my_function(double x) { return x * VERSION; }
#if VERSION < 4
HM_MODULE_SIGNATURE(my_function, "double (double)");
#endif
#endif

HM_MODULE_EXPORT int version(void) { return VERSION; }
HM_MODULE_SIGNATURE(version, "int(void)");

/* A signature longer than 255 characters: every byte of it counts. */
#define SIG_LONG_ARGS "struct very_long_type_name_number_one *, struct very_long_type_name_number_two *, "
HM_MODULE_EXPORT int long_sig(void) { return VERSION; }
HM_MODULE_SIGNATURE(long_sig, "int(" SIG_LONG_ARGS SIG_LONG_ARGS SIG_LONG_ARGS SIG_LONG_ARGS "int)");
