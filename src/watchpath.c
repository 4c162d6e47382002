/*
 * What a module's path means on disk: the symlinks met while following it, and the file it
 * ends at. A deploy that flips `current -> releases/42` changes the link in `current`'s
 * directory, not anything in releases/41, so the watcher must watch the link's directory (to
 * see the flip) and the final file's directory (to see rebuilds), and nothing else.
 */
#include "watch.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Symlinks followed before giving up, as the kernel's limit for one lookup. */
#define HM__MAX_LINKS 40

static int add_point(const hm__allocator *a, hm__wpath *p, const char *dir, const char *name,
                     int link) {
  hm__wpath_point *g = hm__realloc(a, p->pts, (p->n + 1) * sizeof *g);
  if (g == NULL)
    return HM_ENOMEM;
  p->pts = g;
  g[p->n].dir = hm__strdup(a, dir);
  g[p->n].name = hm__strdup(a, name);
  g[p->n].link = link;
  p->n++;
  if (g[p->n - 1].dir == NULL || g[p->n - 1].name == NULL)
    return HM_ENOMEM;
  return 0;
}

/* `cur` is an absolute directory without a trailing slash ("" stands for the root). */
static void parent_of(char *cur) {
  char *slash = strrchr(cur, '/');
  if (slash != NULL)
    *slash = '\0';
}

int hm__wpath_resolve(const hm__allocator *a, const char *path, hm__wpath *out) {
  /* cur: the directory reached so far; rest: what is left to follow, components separated by
   * '/'. A symlink's target is put in front of `rest`. */
  char *cur = hm__malloc(a, PATH_MAX), *rest = hm__malloc(a, 2 * PATH_MAX);
  char *tmp = hm__malloc(a, 2 * PATH_MAX);
  int links = 0, rc = HM_EINVAL, done = 0;

  memset(out, 0, sizeof *out);
  if (cur == NULL || rest == NULL || tmp == NULL) {
    rc = HM_ENOMEM;
    goto out;
  }
  cur[0] = '\0';
  if (path[0] != '/' && getcwd(cur, PATH_MAX) == NULL) {
    rc = -errno;
    goto out;
  }
  if (strcmp(cur, "/") == 0)
    cur[0] = '\0';
  if (strlen(path) >= 2 * PATH_MAX) {
    rc = -ENAMETOOLONG;
    goto out;
  }
  strcpy(rest, path);

  while (!done) {
    char *comp = rest, *next;
    struct stat st;
    size_t cl;
    while (*comp == '/')
      comp++;
    if (*comp == '\0')
      break; /* ended on a directory: no file named */
    next = strchr(comp, '/');
    cl = next != NULL ? (size_t)(next - comp) : strlen(comp);
    while (next != NULL && *next == '/')
      next++;
    if (next != NULL && *next == '\0')
      next = NULL;
    if (cl == 1 && comp[0] == '.') {
      memmove(rest, next ? next : "", strlen(next ? next : "") + 1);
      continue;
    }
    if (cl == 2 && comp[0] == '.' && comp[1] == '.') {
      parent_of(cur);
      memmove(rest, next ? next : "", strlen(next ? next : "") + 1);
      continue;
    }
    if (strlen(cur) + 1 + cl + 1 > PATH_MAX) {
      rc = -ENAMETOOLONG;
      goto out;
    }
    /* tmp = cur + "/" + comp */
    memcpy(tmp, cur, strlen(cur));
    tmp[strlen(cur)] = '/';
    memcpy(tmp + strlen(cur) + 1, comp, cl);
    tmp[strlen(cur) + 1 + cl] = '\0';
    if (lstat(tmp, &st) == 0 && S_ISLNK(st.st_mode) && links < HM__MAX_LINKS) {
      char target[PATH_MAX];
      ssize_t tl = readlink(tmp, target, sizeof target - 1);
      char name[NAME_MAX + 1];
      if (tl < 0)
        goto plain;
      target[tl] = '\0';
      links++;
      memcpy(name, comp, cl < NAME_MAX ? cl : NAME_MAX);
      name[cl < NAME_MAX ? cl : NAME_MAX] = '\0';
      if ((rc = add_point(a, out, cur[0] ? cur : "/", name, 1)) != 0)
        goto out;
      rc = HM_EINVAL;
      /* rest = target + "/" + next */
      if ((size_t)tl + 1 + (next ? strlen(next) : 0) + 1 > 2 * PATH_MAX) {
        rc = -ENAMETOOLONG;
        goto out;
      }
      {
        size_t nl = next ? strlen(next) : 0;
        memmove(rest + tl + 1, next ? next : "", nl + 1);
        memcpy(rest, target, (size_t)tl);
        rest[tl] = next ? '/' : '\0';
      }
      if (target[0] == '/')
        cur[0] = '\0';
      continue;
    }
  plain:
    if (next == NULL) {
      char name[NAME_MAX + 1];
      memcpy(name, comp, cl < NAME_MAX ? cl : NAME_MAX);
      name[cl < NAME_MAX ? cl : NAME_MAX] = '\0';
      rc = add_point(a, out, cur[0] ? cur : "/", name, 0);
      done = 1;
      break;
    }
    strcpy(cur, tmp);
    memmove(rest, next, strlen(next) + 1);
  }
  if (!done && rc == HM_EINVAL)
    rc = HM_EINVAL;
out:
  if (rc != 0)
    hm__wpath_free(a, out);
  hm__free(a, cur);
  hm__free(a, rest);
  hm__free(a, tmp);
  return rc;
}

void hm__wpath_free(const hm__allocator *a, hm__wpath *p) {
  size_t i;
  for (i = 0; i < p->n; i++) {
    hm__free(a, p->pts[i].dir);
    hm__free(a, p->pts[i].name);
  }
  hm__free(a, p->pts);
  p->pts = NULL;
  p->n = 0;
}
