/* Error codes: names and texts come from the one table in hotmod.h; errno values outside the
 * table are named by the C library. Also the words for why a version is still mapped (the
 * header's other table) and the library's version.
 *
 * Layer 0 (docs/architecture.md): calls nothing of hotmod's.
 */
#include "internal.h"

#include <string.h>

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
    break;
  }
  /* Any other negative errno passed through from a system call: the C library's text.
   * strerrordesc_np returns static storage (unlike strerror, never a per-call buffer). */
  if (err < 0 && err > -4096) {
    const char *s = strerrordesc_np(-err);
    if (s != NULL)
      return s;
  }
  return "unknown error";
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
    break;
  }
  if (err < 0 && err > -4096) {
    const char *s = strerrorname_np(-err);
    if (s != NULL)
      return s;
  }
  return "HM_UNKNOWN";
}

const char *hm_mapped_text(int why) {
  switch (why) {
#define HM__MAPPED_TEXT(name, value, words)                                                    \
  case HM_MAPPED_##name:                                                                       \
    return words;
    HM_MAPPED_MAP(HM__MAPPED_TEXT)
#undef HM__MAPPED_TEXT
  default:
    return "";
  }
}

int hm__err_is_final(int err) {
  /* What the file's own bytes or permissions decide: the same bytes fail the same way (a
   * signature declared otherwise than a typed live handle needs too: a handle, once typed,
   * stays typed). Everything else (memory, descriptors, I/O, a dependency that is not
   * there yet) may succeed on a later try. */
  switch (err) {
  case HM_ENOTELF:
  case HM_EBADELF:
  case HM_ENOSYM:
  case HM_EABI:
  case HM_EHOOK:
  case HM_ESIG:
  case HM_EACCES:
  case HM_EUNTRUSTED:
    return 1;
  default:
    return 0;
  }
}

#define HM__STR2(x) #x
#define HM__STR(x) HM__STR2(x)

unsigned hm_version(void) { return HM_VERSION_HEX; }

const char *hm_version_string(void) {
  return HM__STR(HM_VERSION_MAJOR) "." HM__STR(HM_VERSION_MINOR) "." HM__STR(HM_VERSION_PATCH);
}
