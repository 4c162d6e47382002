/* Build rules (buildrule.c: the rule; build.c: running it on the watcher's loop). */
#ifndef HM_BUILD_H
#define HM_BUILD_H

#include "registry.h"

/* One watched source: a file (`name` in `dir`) or every file directly in `dir` (name NULL). */
typedef struct hm__build_src {
  char *dir; /* absolute */
  char *name;
} hm__build_src;

/* A module's build rule, immutable once made; shared by the module (mod->build, under
 * reg->lock) and the build runner, each holding a reference. */
typedef struct hm__build_rule {
  int refs; /* atomic */
  hm__allocator a;
  unsigned flags, timeout_ms, output_max;
  char **argv;    /* what is run (with HM_BUILD_SHELL: /bin/sh -c ...), NULL-terminated */
  char *cwd;      /* absolute */
  char **env;     /* additions to the environment, NULL-terminated; NULL: none */
  char **include; /* NULL-terminated, or NULL: every name */
  char **exclude; /* NULL-terminated: the defaults (unless turned off) and the host's */
  hm__build_src *srcs;
  size_t nsrcs;
} hm__build_rule;

HM__HIDDEN void hm__build_rule_ref(hm__build_rule *r);
/* Frees with the rule's own allocator copy. NULL is a no-op. */
HM__HIDDEN void hm__build_rule_unref(hm__build_rule *r);
/* Does a completed write of `name` in source `src`'s directory call for a build? */
HM__HIDDEN int hm__build_rule_matches(const hm__build_rule *r, size_t src, const char *name);

#endif
