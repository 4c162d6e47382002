/*
 * Where the watcher looks: what a module's path means on disk (the symlinks met while
 * following it, and the file it ends at), and the inotify watches on those directories,
 * shared with build rules' sources and looked for again while they are missing. A deploy
 * that flips `current -> releases/42` changes the link in `current`'s directory, not
 * anything in releases/41, so the watcher must watch the link's directory (to see the flip)
 * and the final file's directory (to see rebuilds), and nothing else. Also the count of the
 * watcher's open handles, whose last close frees it.
 *
 * Layer 9 (docs/architecture.md), the watcher's bottom: calls only the leaves, and reaches
 * watch.c and watchrun.c only through the pointers they give it (w->on_retry, w->closed).
 */
#include "watch.h"

#include <sys/inotify.h>

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

/* A path component (cl bytes at comp) as a file name, cut to NAME_MAX. */
static void comp_name(char name[NAME_MAX + 1], const char *comp, size_t cl) {
  size_t n = cl < NAME_MAX ? cl : NAME_MAX;
  memcpy(name, comp, n);
  name[n] = '\0';
}

/* If `at` (the component comp, cl bytes, in directory cur) is a symlink we may still follow,
 * record it as a point and put its target in front of `next` in `rest` (starting again from
 * the root for an absolute target): 0. 1 if it is not one to follow; or an error. */
static int follow_link(const hm__allocator *a, hm__wpath *out, char *cur, char *rest,
                       const char *at, const char *comp, size_t cl, const char *next,
                       int *links) {
  char target[PATH_MAX], name[NAME_MAX + 1];
  struct stat st;
  ssize_t tl;
  size_t nl = next ? strlen(next) : 0;
  int rc;
  if (lstat(at, &st) != 0 || !S_ISLNK(st.st_mode) || *links >= HM__MAX_LINKS)
    return 1;
  tl = readlink(at, target, sizeof target - 1);
  if (tl < 0)
    return 1;
  target[tl] = '\0';
  ++*links;
  comp_name(name, comp, cl);
  if ((rc = add_point(a, out, cur[0] ? cur : "/", name, 1)) != 0)
    return rc;
  /* rest = target + "/" + next */
  if ((size_t)tl + 1 + nl + 1 > 2 * PATH_MAX)
    return -ENAMETOOLONG;
  memmove(rest + tl + 1, next ? next : "", nl + 1);
  memcpy(rest, target, (size_t)tl);
  rest[tl] = next ? '/' : '\0';
  if (target[0] == '/')
    cur[0] = '\0';
  return 0;
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
    size_t cl;
    int followed;
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
    followed = follow_link(a, out, cur, rest, tmp, comp, cl, next, &links);
    if (followed < 0) {
      rc = followed;
      goto out;
    }
    if (followed == 0)
      continue;
    if (next == NULL) {
      char name[NAME_MAX + 1];
      comp_name(name, comp, cl);
      rc = add_point(a, out, cur[0] ? cur : "/", name, 0);
      done = 1;
      break;
    }
    strcpy(cur, tmp);
    memmove(rest, next, strlen(next) + 1);
  }
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

/* ---- Directories ----------------------------------------------------------------------- */

/* The retry timer's callback is the watcher's (w->on_retry): what a directory that comes back
 * means for the modules and builds that use it is decided above this file. */
static void retry_start(hm__watcher *w) {
  if (!uv_is_active((uv_handle_t *)&w->retry))
    uv_timer_start(&w->retry, w->on_retry, HM__WATCH_RETRY_MS, HM__WATCH_RETRY_MS);
}

void hm__watch_setup_failed(hm__watcher *w) {
  w->failing = 1;
  retry_start(w);
}

/* Why inotify_add_watch failed, as a watch error: a directory that is not there (yet) is
 * no error, it is looked for again; anything else (the limit on watches, memory, no
 * permission) keeps it unwatched until a retry succeeds. */
static int add_watch_err(int e) { return e == ENOENT || e == ENOTDIR ? 0 : -e; }

/* Find or make the entry for directory `path` (copied) and add a reference. */
hm__wdir *hm__watch_dir_ref(hm__watcher *w, const char *path) {
  hm__wdir *d;
  int wd = inotify_add_watch(w->fd, path, HM__WATCH_MASK), err = wd < 0 ? add_watch_err(errno) : 0;
  /* Two spellings of one directory get one watch descriptor: match on that, not the text.
   * A directory we cannot watch now (not there yet) is matched by its text and retried. */
  for (d = w->dirs; d != NULL; d = d->next) {
    if (wd >= 0 ? d->wd == wd : (d->wd < 0 && strcmp(d->path, path) == 0)) {
      d->refs++;
      return d;
    }
  }
  d = hm__calloc(&w->a, 1, sizeof *d);
  if (d == NULL || (d->path = hm__strdup(&w->a, path)) == NULL) {
    hm__free(&w->a, d);
    if (wd >= 0) {
      int shared = 0;
      hm__wdir *o;
      for (o = w->dirs; o != NULL; o = o->next)
        shared |= o->wd == wd;
      if (!shared)
        inotify_rm_watch(w->fd, wd);
    }
    return NULL;
  }
  d->wd = wd;
  d->err = err;
  d->refs = 1;
  d->next = w->dirs;
  w->dirs = d;
  if (wd < 0)
    retry_start(w);
  return d;
}

void hm__watch_dir_unref(hm__watcher *w, hm__wdir *d) {
  hm__wdir **pp, *o;
  int shared = 0;
  if (--d->refs > 0)
    return;
  for (pp = &w->dirs; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == d) {
      *pp = d->next;
      break;
    }
  }
  for (o = w->dirs; o != NULL; o = o->next)
    shared |= d->wd >= 0 && o->wd == d->wd;
  if (d->wd >= 0 && !shared)
    inotify_rm_watch(w->fd, d->wd);
  hm__free(&w->a, d->path);
  hm__free(&w->a, d);
}

/* The directory with watch descriptor `wd` is gone (deleted, moved, unmounted): its files
 * can only come back in a new directory at the same path, so look for that. */
void hm__watch_dir_lost(hm__watcher *w, int wd) {
  hm__wdir *d;
  for (d = w->dirs; d != NULL; d = d->next) {
    if (d->wd == wd) {
      d->wd = -1;
      retry_start(w);
    }
  }
}

int hm__watch_dirs_retry(hm__watcher *w) {
  hm__wdir *d;
  int dead = 0;
  for (d = w->dirs; d != NULL; d = d->next) {
    if (d->wd >= 0)
      continue;
    d->wd = inotify_add_watch(w->fd, d->path, HM__WATCH_MASK);
    d->err = d->wd < 0 ? add_watch_err(errno) : 0;
    if (d->wd < 0)
      dead = 1;
    else
      d->back = 1;
  }
  return dead;
}

/* ---- Points: where a module's path leads ----------------------------------------------- */

void hm__watch_free_points(hm__watcher *w, hm__wmod *wm) {
  size_t i;
  for (i = 0; i < wm->npts; i++) {
    if (wm->pts[i].dir != NULL)
      hm__watch_dir_unref(w, wm->pts[i].dir);
    hm__free(&w->a, wm->pts[i].name);
  }
  hm__free(&w->a, wm->pts);
  wm->pts = NULL;
  wm->npts = 0;
}

int hm__watch_points_err(const hm__wmod *wm) {
  size_t i;
  if (wm->setup_err != 0)
    return wm->setup_err;
  for (i = 0; i < wm->npts; i++)
    if (wm->pts[i].dir->err != 0)
      return wm->pts[i].dir->err;
  return 0;
}

/* Follow the module's path and watch every directory it leads through. On failure (memory)
 * the module keeps its old points, or none, and is not watched (setup_err) until a retry
 * on the timer succeeds. */
int hm__watch_set_points(hm__watcher *w, hm__wmod *wm) {
  hm__wpath p;
  hm__wpoint *pts;
  size_t i;
  int rc = hm__wpath_resolve(&w->a, wm->path, &p);
  if (rc == HM_EINVAL) {
    /* The path names no file ("/", or ending in ".."): nothing to watch, nothing to retry. */
    wm->setup_err = 0;
    return 0;
  }
  pts = rc == 0 ? hm__calloc(&w->a, p.n, sizeof *pts) : NULL;
  if (pts == NULL) {
    if (rc == 0)
      hm__wpath_free(&w->a, &p);
    wm->setup_err = rc != 0 ? rc : HM_ENOMEM;
    hm__watch_setup_failed(w);
    return wm->setup_err;
  }
  rc = 0;
  for (i = 0; i < p.n; i++) {
    pts[i].dir = hm__watch_dir_ref(w, p.pts[i].dir);
    pts[i].name = p.pts[i].name;
    pts[i].link = p.pts[i].link;
    p.pts[i].name = NULL;
    if (pts[i].dir == NULL)
      rc = HM_ENOMEM;
  }
  if (rc != 0) {
    /* All or nothing: a point without its directory would never see its events. */
    for (i = 0; i < p.n; i++) {
      if (pts[i].dir != NULL)
        hm__watch_dir_unref(w, pts[i].dir);
      hm__free(&w->a, pts[i].name);
    }
    hm__free(&w->a, pts);
    hm__wpath_free(&w->a, &p);
    wm->setup_err = rc;
    hm__watch_setup_failed(w);
    return rc;
  }
  /* The new directories are referenced before the old ones are let go, so a directory both
   * use keeps its inotify watch (and its pending events). */
  hm__watch_free_points(w, wm);
  wm->pts = pts;
  wm->npts = p.n;
  wm->setup_err = 0;
  hm__wpath_free(&w->a, &p);
  if (hm__watch_points_err(wm) != 0)
    hm__watch_setup_failed(w);
  return hm__watch_points_err(wm);
}


void hm__watch_free_dirs(hm__watcher *w) {
  hm__wdir *d;
  while ((d = w->dirs) != NULL) {
    w->dirs = d->next;
    hm__free(&w->a, d->path);
    hm__free(&w->a, d);
  }
}

/* ---- The watcher's handles ------------------------------------------------------------- */

void hm__watch_handle_done(hm__watcher *w) {
  if (--w->open == 0)
    w->closed(w);
}

void hm__watch_wmod_closed(uv_handle_t *h) {
  hm__wmod *wm = h->data;
  hm__watcher *w = wm->w;
  hm__watch_free_points(w, wm);
  hm__file_release(&w->a, &wm->held); /* a build held for its group */
  hm__free(&w->a, wm->path);
  hm__free(&w->a, wm);
  hm__watch_handle_done(w);
}
