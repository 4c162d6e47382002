/* Error codes: names and texts come from the one table in hotmod.h. */
#include "internal.h"


const char *hm_strerror(int err) {
  switch (err) {
#define HM__ERR_TEXT(name, value, text)                                                        \
  case HM_##name:                                                                              \
    return text;
    HM_ERRNO_MAP(HM__ERR_TEXT)
#undef HM__ERR_TEXT
  case 0:
    return "success";
  default:
    return "unknown error";
  }
}

const char *hm_err_name(int err) {
  switch (err) {
#define HM__ERR_NAME(name, value, text)                                                        \
  case HM_##name:                                                                              \
    return "HM_" #name;
    HM_ERRNO_MAP(HM__ERR_NAME)
#undef HM__ERR_NAME
  case 0:
    return "HM_OK";
  default:
    return "HM_UNKNOWN";
  }
}

#define HM__STR2(x) #x
#define HM__STR(x) HM__STR2(x)

unsigned hm_version(void) { return HM_VERSION_HEX; }

const char *hm_version_string(void) {
  return HM__STR(HM_VERSION_MAJOR) "." HM__STR(HM_VERSION_MINOR) "." HM__STR(HM_VERSION_PATCH);
}
