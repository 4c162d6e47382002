/*
 * Build rules, the registry's side: hm_module_set_build copies the host's options into an
 * immutable rule that the module holds and that the build runner (build.c) takes a reference
 * to, so a rule replaced while its command runs stays valid for as long as the runner needs
 * it. No libuv here: the runner and the watcher decide when to build.
 *
 * Layer 7 (docs/architecture.md): calls events.c, fork.c, file.c and the leaves.
 */
#include "build.h"

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const default_excludes[] = {HM_BUILD_DEFAULT_EXCLUDES, NULL};

static size_t list_len(const char *const *l) {
  size_t n = 0;
  while (l != NULL && l[n] != NULL)
    n++;
  return n;
}

static void list_free(const hm__allocator *a, char **l) {
  size_t i;
  for (i = 0; l != NULL && l[i] != NULL; i++)
    hm__free(a, l[i]);
  hm__free(a, l);
}

/* A NULL-terminated copy of `pre` followed by `l` (either may be NULL). NULL on ENOMEM. */
static char **list_dup(const hm__allocator *a, const char *const *pre, const char *const *l) {
  size_t np = list_len(pre), n = list_len(l), i;
  char **out = hm__calloc(a, np + n + 1, sizeof *out);
  if (out == NULL)
    return NULL;
  for (i = 0; i < np + n; i++) {
    if ((out[i] = hm__strdup(a, i < np ? pre[i] : l[i - np])) == NULL) {
      list_free(a, out);
      return NULL;
    }
  }
  return out;
}

/* `path` taken against the absolute directory `base`, into a new string. */
static char *absolute(const hm__allocator *a, const char *base, const char *path) {
  size_t bl = strlen(base), pl = strlen(path);
  char *out;
  if (path[0] == '/')
    return hm__strdup(a, path);
  out = hm__malloc(a, bl + 1 + pl + 1);
  if (out != NULL) {
    memcpy(out, base, bl);
    out[bl] = '/';
    memcpy(out + bl + 1, path, pl + 1);
  }
  return out;
}

void hm__build_rule_ref(hm__build_rule *r) { __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED); }

void hm__build_rule_unref(hm__build_rule *r) {
  size_t i;
  hm__allocator a;
  if (r == NULL || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  a = r->a;
  list_free(&a, r->argv);
  list_free(&a, r->env);
  list_free(&a, r->include);
  list_free(&a, r->exclude);
  hm__free(&a, r->cwd);
  for (i = 0; i < r->nsrcs; i++) {
    hm__free(&a, r->srcs[i].dir);
    hm__free(&a, r->srcs[i].name);
  }
  hm__free(&a, r->srcs);
  hm__free(&a, r);
}

int hm__build_rule_matches(const hm__build_rule *r, size_t src, const char *name) {
  const hm__build_src *s = &r->srcs[src];
  size_t i;
  if (s->name != NULL && strcmp(s->name, name) != 0)
    return 0;
  for (i = 0; r->exclude[i] != NULL; i++)
    if (fnmatch(r->exclude[i], name, 0) == 0)
      return 0;
  if (s->name != NULL || r->include == NULL)
    return 1;
  for (i = 0; r->include[i] != NULL; i++)
    if (fnmatch(r->include[i], name, 0) == 0)
      return 1;
  return 0;
}

/* One source: a directory (name NULL) or a file in one, by what is there now; a path that
 * does not exist yet is taken as a file. */
static int add_source(hm__build_rule *r, const char *base, const char *path) {
  hm__build_src *s = &r->srcs[r->nsrcs];
  struct stat st;
  char *abs = absolute(&r->a, base, path), *slash;
  size_t n;
  if (abs == NULL)
    return hm__fail(HM_ENOMEM, "out of memory");
  n = strlen(abs);
  while (n > 1 && abs[n - 1] == '/')
    abs[--n] = '\0';
  r->nsrcs++;
  if (stat(abs, &st) == 0 && S_ISDIR(st.st_mode)) {
    s->dir = abs;
    return 0;
  }
  slash = strrchr(abs, '/');
  s->name = hm__strdup(&r->a, slash + 1);
  if (slash == abs)
    slash[1] = '\0'; /* a file in / */
  else
    *slash = '\0';
  s->dir = abs;
  return s->name != NULL ? 0 : hm__fail(HM_ENOMEM, "out of memory");
}

/* `base`: the directory the module's path was taken against ("": unknown, then the current
 * directory now), for the relative paths of the rule. */
static int rule_make(const hm__allocator *a, const hm_build_options *o, const char *base,
                     hm__build_rule **out) {
  char here[PATH_MAX];
  struct stat st;
  size_t i, nsrc = list_len(o->sources);
  hm__build_rule *r = hm__calloc(a, 1, sizeof *r);
  int rc = 0;
  if (r == NULL)
    return hm__fail(HM_ENOMEM, "out of memory");
  r->a = *a;
  r->refs = 1;
  r->flags = o->flags;
  r->timeout_ms = o->timeout_ms != 0 ? o->timeout_ms : 600000;
  r->output_max = o->output_max != 0 ? o->output_max : 65536;
  if (strlen(base) < sizeof here && base[0] == '/') {
    strcpy(here, base);
  } else if (getcwd(here, sizeof here) == NULL) {
    rc = hm__fail(-errno, "hm_module_set_build: getcwd: %s", strerror(errno));
    goto out;
  }
  r->cwd = absolute(a, here, o->cwd != NULL ? o->cwd : ".");
  if (r->cwd == NULL) {
    rc = hm__fail(HM_ENOMEM, "out of memory");
    goto out;
  }
  if (stat(r->cwd, &st) != 0 || !S_ISDIR(st.st_mode)) {
    rc = hm__fail(HM_ENOENT, "hm_module_set_build: the working directory %s is not a directory",
                  r->cwd);
    goto out;
  }
  if (o->flags & HM_BUILD_SHELL) {
    const char *const sh[] = {"/bin/sh", "-c", o->argv[0], "hotmod-build", NULL};
    r->argv = list_dup(a, sh, o->argv + 1);
  } else {
    r->argv = list_dup(a, NULL, o->argv);
  }
  r->env = o->env != NULL ? list_dup(a, NULL, o->env) : NULL;
  r->include = o->include != NULL ? list_dup(a, NULL, o->include) : NULL;
  r->exclude = list_dup(a, (o->flags & HM_BUILD_NO_DEFAULT_EXCLUDES) ? NULL : default_excludes,
                        o->exclude);
  r->srcs = hm__calloc(a, nsrc, sizeof *r->srcs);
  if (r->argv == NULL || (o->env != NULL && r->env == NULL) ||
      (o->include != NULL && r->include == NULL) || r->exclude == NULL || r->srcs == NULL) {
    rc = hm__fail(HM_ENOMEM, "out of memory");
    goto out;
  }
  for (i = 0; i < nsrc && rc == 0; i++)
    rc = add_source(r, r->cwd, o->sources[i]);
out:
  if (rc != 0) {
    hm__build_rule_unref(r);
    return rc;
  }
  *out = r;
  return 0;
}

int hm_module_set_build(hm_module *mod, const hm_build_options *opts) {
  hm_registry *reg;
  hm__build_rule *r = NULL, *old;
  size_t i;
  int rc;
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "hm_module_set_build: NULL module");
  reg = mod->reg;
  if ((rc = hm__check_forked(reg, "hm_module_set_build")) != 0)
    return rc;
  if (opts != NULL) {
    if (opts->version < 1 || opts->version > HM_BUILD_OPTIONS_VERSION)
      return hm__fail(HM_EINVAL, "hm_module_set_build: options version %u (this library takes "
                                 "1 to %d)",
                      opts->version, HM_BUILD_OPTIONS_VERSION);
    if (opts->argv == NULL || opts->argv[0] == NULL || opts->argv[0][0] == '\0')
      return hm__fail(HM_EINVAL, "hm_module_set_build: no command (argv)");
    if (opts->sources == NULL || opts->sources[0] == NULL)
      return hm__fail(HM_EINVAL, "hm_module_set_build: no sources to watch");
    for (i = 0; opts->sources[i] != NULL; i++)
      if (opts->sources[i][0] == '\0')
        return hm__fail(HM_EINVAL, "hm_module_set_build: an empty source path");
    if (opts->cwd != NULL && opts->cwd[0] == '\0')
      return hm__fail(HM_EINVAL, "hm_module_set_build: an empty working directory");
    {
      /* Relative paths of the rule go with the module's own: against the directory its
       * path was taken against, whatever the current directory is now. */
      char base[PATH_MAX];
      pthread_mutex_lock(&reg->lock);
      snprintf(base, sizeof base, "%s", hm__path_dir(mod->path));
      pthread_mutex_unlock(&reg->lock);
      if ((rc = rule_make(&reg->a, opts, base, &r)) != 0)
        return rc;
    }
  }
  pthread_mutex_lock(&reg->lock);
  old = mod->build;
  mod->build = r;
  pthread_mutex_unlock(&reg->lock);
  hm__build_rule_unref(old);
  hm__watch_poke(reg);
  return 0;
}
