/* The gameloop's world: a few particles bouncing in a box, updated and drawn by this module.
 * The world is this module's state: each new build takes it over from the one before
 * (HM_MODULE_DESCRIBE), as it is when the layout is the same, converted when it changed.
 *
 * The scripted demo edits the four #define lines below (the text must stay as it is for
 * its edits to apply): colour and glyph, then speed, then the layout of the world. */
#include "hotmod/module.h"

#include "gameloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORLD_LAYOUT 1
#define SPEED 1.0
#define COLOUR 36 /* cyan */
#define GLYPH "o"

/* Layout 1: where each particle is and where it goes (cells, cells per second). */
struct particle1 {
  double x, y, vx, vy;
};
struct world1 {
  unsigned layout;
  unsigned n;
  unsigned long long id, frame;
  struct particle1 p[GL_MAX];
};

/* Layout 2: each particle also counts its bounces, and its colour follows the count. */
struct particle2 {
  double x, y, vx, vy;
  unsigned bounces;
};
struct world2 {
  unsigned layout;
  unsigned n;
  unsigned long long id, frame;
  struct particle2 p[GL_MAX];
};

#if WORLD_LAYOUT == 1
typedef struct world1 world;
#else
typedef struct world2 world;
#endif

static world *w;
static unsigned my_version; /* this build's module version, from its load context */

static const char *const colour_names[] = {"red", "green", "yellow", "blue", "magenta", "cyan",
                                           "white"};

/* The ANSI colour (31..37) of particle i. */
static int colour_of(unsigned i) {
#if WORLD_LAYOUT == 2
  return 31 + (int)((COLOUR - 31 + w->p[i].bounces) % 7);
#else
  (void)i;
  return COLOUR;
#endif
}

/* Move a coordinate by d inside [0, hi], reflecting at the walls; 1 if it bounced. */
static int move(double *pos, double *vel, double d, double hi) {
  *pos += d;
  if (*pos < 0) {
    *pos = -*pos;
    *vel = -*vel;
    return 1;
  }
  if (*pos > hi) {
    *pos = 2 * hi - *pos;
    *vel = -*vel;
    return 1;
  }
  return 0;
}

HM_MODULE_EXPORT void world_update(double dt) {
  unsigned i;
  for (i = 0; i < w->n; i++) {
    int bounced = move(&w->p[i].x, &w->p[i].vx, w->p[i].vx * dt * SPEED, GL_W - 1);
    bounced |= move(&w->p[i].y, &w->p[i].vy, w->p[i].vy * dt * SPEED, GL_H - 1);
#if WORLD_LAYOUT == 2
    w->p[i].bounces += (unsigned)bounced;
#else
    (void)bounced;
#endif
  }
  w->frame++;
}
HM_MODULE_SIGNATURE(world_update, GL_UPDATE_SIG);

/* Append to buf (capacity cap, used *len); output that does not fit is dropped. */
static void put(char *buf, size_t cap, size_t *len, const char *s) {
  size_t n = strlen(s);
  if (*len + n + 1 > cap)
    n = *len + 1 < cap ? cap - *len - 1 : 0;
  memcpy(buf + *len, s, n);
  *len += n;
  if (cap > 0)
    buf[*len] = '\0';
}

/* Draw the box into buf: a border, the particles, with ANSI colours when `ansi`. Returns the
 * length written (at most cap - 1; always NUL-terminated when cap > 0). */
HM_MODULE_EXPORT size_t world_draw(char *buf, size_t cap, int ansi) {
  int cell[GL_H][GL_W];
  size_t len = 0;
  unsigned i;
  int r, c;
  char tmp[32];
  memset(cell, -1, sizeof cell);
  for (i = 0; i < w->n; i++)
    cell[(int)(w->p[i].y + 0.5)][(int)(w->p[i].x + 0.5)] = (int)i;
  put(buf, cap, &len, "+");
  for (c = 0; c < GL_W; c++)
    put(buf, cap, &len, "-");
  put(buf, cap, &len, "+\n");
  for (r = 0; r < GL_H; r++) {
    put(buf, cap, &len, "|");
    for (c = 0; c < GL_W; c++) {
      if (cell[r][c] < 0) {
        put(buf, cap, &len, " ");
      } else if (ansi) {
        snprintf(tmp, sizeof tmp, "\x1b[1;%dm%s\x1b[0m", colour_of((unsigned)cell[r][c]), GLYPH);
        put(buf, cap, &len, tmp);
      } else {
        put(buf, cap, &len, GLYPH);
      }
    }
    put(buf, cap, &len, "|\n");
  }
  put(buf, cap, &len, "+");
  for (c = 0; c < GL_W; c++)
    put(buf, cap, &len, "-");
  put(buf, cap, &len, "+\n");
  return len;
}
HM_MODULE_SIGNATURE(world_draw, GL_DRAW_SIG);

HM_MODULE_EXPORT void world_peek(struct gl_peek *out) {
  unsigned i;
  memset(out, 0, sizeof *out);
  out->version = my_version;
  out->layout = w->layout;
  out->id = w->id;
  out->frame = w->frame;
  out->n = w->n;
  for (i = 0; i < w->n; i++) {
    out->x[i] = w->p[i].x;
    out->y[i] = w->p[i].y;
  }
  snprintf(out->about, sizeof out->about, "layout %d, speed x%.1f, glyph %s, %s%s",
           WORLD_LAYOUT, SPEED, GLYPH, colour_names[(COLOUR - 31) % 7],
           WORLD_LAYOUT == 2 ? " (next colour at each bounce)" : "");
}
HM_MODULE_SIGNATURE(world_peek, GL_PEEK_SIG);

/* A new world: six particles at places and speeds that vary from run to run. */
static void create(world *nw) {
  struct timespec ts;
  unsigned long long s;
  unsigned i;
  clock_gettime(CLOCK_REALTIME, &ts);
  s = (unsigned long long)ts.tv_sec * 1000000007ull ^ (unsigned long long)ts.tv_nsec;
  nw->layout = WORLD_LAYOUT;
  nw->id = s | 1;
  nw->n = 6;
  for (i = 0; i < nw->n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    nw->p[i].x = (double)(s >> 40 & 0xffff) / 65536.0 * (GL_W - 1);
    nw->p[i].y = (double)(s >> 24 & 0xffff) / 65536.0 * (GL_H - 1);
    nw->p[i].vx = (double)(s >> 16 & 0xff) / 256.0 * 12 + 6;
    nw->p[i].vy = (double)(s >> 8 & 0xff) / 256.0 * 5 + 3;
    if (s >> 62 & 1)
      nw->p[i].vx = -nw->p[i].vx;
  }
}

/* Fill nw from a world of the other layout: what both layouts have is kept; a new field
 * starts at zero (nw was zeroed). */
#define MIGRATE(nw, old)                                                                   \
  do {                                                                                     \
    unsigned i_;                                                                           \
    (nw)->id = (old)->id;                                                                  \
    (nw)->frame = (old)->frame;                                                            \
    (nw)->n = (old)->n <= GL_MAX ? (old)->n : GL_MAX;                                      \
    for (i_ = 0; i_ < (nw)->n; i_++) {                                                     \
      (nw)->p[i_].x = (old)->p[i_].x;                                                      \
      (nw)->p[i_].y = (old)->p[i_].y;                                                      \
      (nw)->p[i_].vx = (old)->p[i_].vx;                                                    \
      (nw)->p[i_].vy = (old)->p[i_].vy;                                                    \
    }                                                                                      \
  } while (0)

static void *save(void) { return w; }

static int load(const hm_load_ctx *ctx) {
  world *nw;
  my_version = ctx->version;
  if (ctx->prev != NULL && ctx->prev_state_version == WORLD_LAYOUT) {
    w = ctx->prev; /* the same layout: take the world as it is */
    return HM_LOAD_ADOPTED;
  }
  nw = calloc(1, sizeof *nw);
  if (nw == NULL)
    return -1;
  nw->layout = WORLD_LAYOUT;
  if (ctx->prev == NULL) {
    create(nw);
  } else if (ctx->prev_state_version == 1) {
    MIGRATE(nw, (const struct world1 *)ctx->prev);
  } else if (ctx->prev_state_version == 2) {
    MIGRATE(nw, (const struct world2 *)ctx->prev);
  } else {
    free(nw); /* a layout this build does not know: refuse it, the old version serves on */
    return -1;
  }
  w = nw; /* the old world stays the old version's, which frees it in its unload */
  return HM_LOAD_CONVERTED;
}

static void unload(int handed_over) {
  if (!handed_over)
    free(w);
}

HM_MODULE_DESCRIBE(WORLD_LAYOUT, save, load, unload);
