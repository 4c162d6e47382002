/*
 * The watcher's groups (hm_module_set_group): finished builds of a group's members are held
 * until no member's file is being written and the group's window has passed since the last
 * one finished (so one `cmake --build` of several targets becomes one group reload), then
 * applied together: as one group reload, or, in queued mode, prepared as one group for the
 * poll. What becomes of each held build afterwards is watch.c's decision; the wait's timer
 * callback is watch.c's too.
 *
 * Layer 9 (docs/architecture.md), below watch.c: calls watchpath.c, the registry's layers
 * (group.c, reload.c, prepared.c) and the leaves.
 */
#include "watch.h"

#include "reload.h"

#include <string.h>

/* Is the module in group `wg`? Under reg->lock. */
static int member(const hm__wmod *wm, const hm__wgroup *wg) {
  return wm->mod->group != NULL && strcmp(wm->mod->group, wg->name) == 0;
}

/* Is a writer at work on the module's file, or does the watcher still wait to decide? A
 * write not yet closed, events not decided on, a quiet period, a lease recheck or a settle
 * delay under way. */
static int busy(const hm__wmod *wm) {
  return wm->st.writing || wm->dirty || wm->st.settle_pending ||
         (uv_is_active((const uv_handle_t *)&wm->timer) && wm->timer_why != HM__WHY_RETRY);
}

static hm__wgroup *group_get(hm__watcher *w, const char *name) {
  hm__wgroup *wg;
  for (wg = w->groups; wg != NULL; wg = wg->next)
    if (strcmp(wg->name, name) == 0)
      return wg;
  if ((wg = hm__calloc(&w->a, 1, sizeof *wg)) == NULL ||
      (wg->name = hm__strdup(&w->a, name)) == NULL) {
    hm__free(&w->a, wg);
    return NULL;
  }
  wg->w = w;
  uv_timer_init(w->loop, &wg->timer);
  wg->timer.data = wg;
  w->open++;
  wg->next = w->groups;
  w->groups = wg;
  return wg;
}

void hm__wgroup_release(hm__wmod *wm) {
  if (!wm->have_held)
    return;
  hm__file_release(&wm->w->a, &wm->held);
  wm->have_held = 0;
  wm->parked = 0;
}

hm__wgroup *hm__wgroup_hold(hm__wmod *wm, hm__file *f, uint64_t key, unsigned cur) {
  hm__watcher *w = wm->w;
  hm__wgroup *wg = NULL;
  char *name = NULL;
  long long now;
  pthread_mutex_lock(&w->reg->lock);
  if (wm->mod->group != NULL)
    name = hm__strdup(&w->a, wm->mod->group);
  pthread_mutex_unlock(&w->reg->lock);
  if (name == NULL || (wg = group_get(w, name)) == NULL) {
    hm__free(&w->a, name);
    return NULL; /* in no group (or no memory to hold it: it goes alone) */
  }
  hm__free(&w->a, name);
  /* A newer build of the member replaces the one held. */
  hm__wgroup_release(wm);
  wm->held = *f;
  memset(f, 0, sizeof *f);
  wm->have_held = 1;
  wm->held_key = key;
  wm->held_cur = cur;
  wm->parked = wm->regroup;
  wm->regroup = 0;
  if (!wm->parked) {
    now = hm__mono_ns();
    if (wg->first_ns == 0)
      wg->first_ns = now;
    wg->last_ns = now;
  }
  return wg;
}

unsigned hm__wgroup_wait_ms(hm__wgroup *wg) {
  hm__watcher *w = wg->w;
  hm__wmod *wm;
  long long now = hm__mono_ns(), since_last;
  int writing = 0;
  pthread_mutex_lock(&w->reg->lock);
  for (wm = w->mods; wm != NULL && !writing; wm = wm->next)
    writing = member(wm, wg) && busy(wm);
  pthread_mutex_unlock(&w->reg->lock);
  if (writing && now - wg->first_ns < (long long)HM__WGROUP_MAX_MS * 1000000)
    return 20; /* look again soon: its close brings the build here, or the next look */
  since_last = (now - wg->last_ns) / 1000000;
  if (since_last < (long long)w->reg->group_ms)
    return (unsigned)((long long)w->reg->group_ms - since_last);
  return 0;
}

size_t hm__wgroup_held(hm__wgroup *wg, hm__wmod **out, size_t cap) {
  hm__watcher *w = wg->w;
  hm_registry *reg = w->reg;
  size_t i, n = 0;
  pthread_mutex_lock(&reg->lock);
  for (i = 0; i < reg->nmods && n < cap; i++) {
    hm__wmod *wm;
    for (wm = w->mods; wm != NULL; wm = wm->next)
      if (wm->mod == reg->mods[i] && wm->have_held && member(wm, wg))
        out[n++] = wm;
  }
  pthread_mutex_unlock(&reg->lock);
  return n;
}

int hm__wgroup_apply(hm__wgroup *wg, hm__wmod **held, size_t n, size_t *failed,
                     int *queued) {
  hm_registry *reg = wg->w->reg;
  hm_reload_mode mode;
  hm__member *m;
  size_t i;
  int rc;
  wg->first_ns = wg->last_ns = 0;
  *failed = 0;
  pthread_mutex_lock(&reg->lock);
  mode = held[0]->mod->mode != HM_RELOAD_DEFAULT ? held[0]->mod->mode : reg->reload_mode;
  pthread_mutex_unlock(&reg->lock);
  *queued = mode == HM_RELOAD_QUEUED;
  if (n == 1)
    return *queued ? hm__prepare(held[0]->mod, held[0]->path, &held[0]->held)
                   : hm__reload(held[0]->mod, held[0]->path, &held[0]->held, HM__RELOAD_WATCHER);
  if ((m = hm__calloc(&reg->a, n, sizeof *m)) == NULL)
    return hm__fail(HM_ENOMEM, "out of memory applying the group %s", wg->name);
  for (i = 0; i < n; i++) {
    m[i].mod = held[i]->mod;
    m[i].path = held[i]->path;
    m[i].file = &held[i]->held;
  }
  rc = *queued ? hm__group_prepare(reg, m, n, failed)
               : hm__group_reload(reg, m, n, HM__RELOAD_WATCHER, failed);
  hm__free(&reg->a, m);
  return rc;
}

static void wgroup_closed(uv_handle_t *h) {
  hm__wgroup *wg = h->data;
  hm__watcher *w = wg->w;
  hm__free(&w->a, wg->name);
  hm__free(&w->a, wg);
  hm__watch_handle_done(w);
}

void hm__wgroup_close_all(hm__watcher *w) {
  hm__wgroup *wg, *next;
  for (wg = w->groups; wg != NULL; wg = next) {
    next = wg->next;
    uv_close((uv_handle_t *)&wg->timer, wgroup_closed);
  }
  w->groups = NULL;
}
