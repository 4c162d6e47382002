/* The watcher's private pieces, shared by watch.c and watchpath.c. */
#ifndef HM_WATCH_H
#define HM_WATCH_H

#include "internal.h"

/* One place the watcher looks: a name in a directory. A module's path gives one point per
 * symlink met while following it (where the link itself lives), then the file it ends at. */
typedef struct hm__wpath_point {
  char *dir;
  char *name;
  int link; /* 1: a symlink on the way; 0: the file the path ends at (always the last) */
} hm__wpath_point;

typedef struct hm__wpath {
  hm__wpath_point *pts;
  size_t n;
} hm__wpath;

/* Follow `path` as the kernel would (relative to the current directory), recording every
 * symlink on the way. Parts that do not exist yet are taken as written. Errors: HM_ENOMEM,
 * HM_EINVAL (the path names no file, e.g. "/" or ending in ".."). */
HM__HIDDEN int hm__wpath_resolve(const hm__allocator *a, const char *path, hm__wpath *out);
HM__HIDDEN void hm__wpath_free(const hm__allocator *a, hm__wpath *p);

#endif
