/* What the gameloop host and its world module share: the box, and the view of the world the
 * host takes to check that a new version continues the old world. The functions' C types are
 * declared by the module (HM_MODULE_SIGNATURE) and asked for by the host (typed live
 * handles), so a build that changed one is refused instead of called wrongly. */
#ifndef GAMELOOP_H
#define GAMELOOP_H

#include <stddef.h>

#define GL_W 44   /* the box, in character cells */
#define GL_H 14
#define GL_MAX 8  /* at most this many particles */

/* A copy of the world as the module sees it, filled by world_peek. Layout-independent: the
 * module's own state may change its layout from one version to the next. */
struct gl_peek {
  unsigned version;         /* the module version that filled it (its load context's) */
  unsigned layout;          /* the layout of the world's state in that version */
  unsigned long long id;    /* set once when a world is created, never changed */
  unsigned long long frame; /* updates applied to this world so far */
  unsigned n;               /* particles */
  double x[GL_MAX], y[GL_MAX];
  char about[96];           /* what this build does, in words */
};

typedef void (*gl_update_fn)(double dt);
typedef size_t (*gl_draw_fn)(char *buf, size_t cap, int ansi);
typedef void (*gl_peek_fn)(struct gl_peek *out);

#define GL_UPDATE_SIG "void(double)"
#define GL_DRAW_SIG "size_t(char*,size_t,int)"
#define GL_PEEK_SIG "void(struct gl_peek*)"

#endif /* GAMELOOP_H */
