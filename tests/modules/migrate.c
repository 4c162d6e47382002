/* State that changes layout between versions. v1 keeps a list of struct v1_item {key}
 * (state_version 1); v2 and later keep struct v2_item {key, weight} (state_version 2) and
 * convert a v1 list into a new v2 list, leaving the v1 list to v1 to free; a v2 list is
 * adopted as it is. -DREFUSE: a v2 build that refuses to migrate a v1 list. -DVERSION=n. */
#include "hotmod/module.h"

#include <stdlib.h>

#if VERSION == 1
#define LAYOUT 1
struct item {
  int key;
  struct item *next;
};
#else
#define LAYOUT 2
struct item {
  int key;
  double weight;
  struct item *next;
};
struct v1_item { /* what version 1 handed over */
  int key;
  struct v1_item *next;
};
#endif

struct state {
  struct item *head;
  int n;
};

static struct state *st;

HM_MODULE_EXPORT int layout(void) { return LAYOUT; }
HM_MODULE_EXPORT int count(void) { return st->n; }

HM_MODULE_EXPORT int add(int key) {
  struct item *it = calloc(1, sizeof *it);
  if (it == NULL)
    return -1;
  it->key = key;
#if LAYOUT == 2
  it->weight = key * 0.5;
#endif
  it->next = st->head;
  st->head = it;
  return ++st->n;
}

HM_MODULE_EXPORT long sum_keys(void) {
  long s = 0;
  for (struct item *it = st->head; it != NULL; it = it->next)
    s += it->key;
  return s;
}

HM_MODULE_EXPORT double sum_weights(void) {
  double s = 0;
#if LAYOUT == 2
  for (struct item *it = st->head; it != NULL; it = it->next)
    s += it->weight;
#endif
  return s;
}

static void free_state(struct state *s) {
  struct item *it, *next;
  if (s == NULL)
    return;
  for (it = s->head; it != NULL; it = next) {
    next = it->next;
    free(it);
  }
  free(s);
}

static void *save(void) { return st; }

#if LAYOUT == 2 && !defined(REFUSE)
/* A new v2 list from a v1 list, which stays untouched (v1 frees it). */
static struct state *convert(const void *prev) {
  const struct {
    struct v1_item *head;
    int n;
  } *old = prev;
  struct state *s = calloc(1, sizeof *s);
  struct item **tail;
  if (s == NULL)
    return NULL;
  tail = &s->head;
  for (const struct v1_item *o = old->head; o != NULL; o = o->next) {
    struct item *it = calloc(1, sizeof *it);
    if (it == NULL) {
      free_state(s);
      return NULL;
    }
    it->key = o->key;
    it->weight = o->key * 0.5;
    *tail = it;
    tail = &it->next;
    s->n++;
  }
  return s;
}
#endif

static int load(const hm_load_ctx *ctx) {
  if (ctx->prev == NULL) {
    st = calloc(1, sizeof *st);
    return st != NULL ? HM_LOAD_CONVERTED : -1;
  }
  if (ctx->prev_state_version == LAYOUT) {
    st = ctx->prev;
    return HM_LOAD_ADOPTED;
  }
#if LAYOUT == 2 && !defined(REFUSE)
  if (ctx->prev_state_version == 1) {
    st = convert(ctx->prev);
    return st != NULL ? HM_LOAD_CONVERTED : -1;
  }
#endif
  return -2; /* a layout this build cannot read */
}

static void unload(int handed_over) {
  if (!handed_over)
    free_state(st);
}

HM_MODULE_DESCRIBE(LAYOUT, save, load, unload);
