/*
 * Events: the host's callback (or the default one-line log), the details it may ask for
 * during the callback, and the hooks that wake a running watcher. Also what introspection
 * keeps of them: a module's last refusal and the versions that stay mapped for good, and
 * the copy a control server streams (through the hook it installs). Calls only the leaves
 * (common.c, error.c); every part above tells the host through here.
 */
#include "registry.h"

#include <stdio.h>
#include <string.h>

static const char *event_name(hm_event ev) {
  switch (ev) {
  case HM_EVENT_LOADED:
    return "loaded";
  case HM_EVENT_REJECTED:
    return "rejected";
  case HM_EVENT_RETIRED:
    return "retired";
  case HM_EVENT_UNLOADED:
    return "unloaded";
  case HM_EVENT_LEAKED:
    return "stays mapped";
  case HM_EVENT_CHANGED:
    return "changed on disk";
  case HM_EVENT_ROLLED_BACK:
    return "rolled back (an older build is current again)";
  case HM_EVENT_WARNING:
    return "warning";
  case HM_EVENT_BUILD_STARTED:
    return "build started";
  case HM_EVENT_BUILD_SUCCEEDED:
    return "build succeeded";
  case HM_EVENT_BUILD_FAILED:
    return "build failed";
  case HM_EVENT_WATCH_FAILED:
    return "not watched";
  }
  return "?";
}

void hm__emit_detail(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version,
                     int err, const char *detail) {
  const char *prev = hm__event_detail_set(detail);
  if (reg->on_event != NULL) {
    reg->on_event(ev, mod, version, err, reg->event_userdata);
  } else if (!(reg->flags & HM_FLAG_QUIET)) {
    if (err != 0)
      fprintf(stderr, "hotmod: %s v%u %s: %s (%s)\n", mod->name, version, event_name(ev),
              hm_strerror(err), hm_event_detail());
    else if (detail != NULL && detail[0] != '\0')
      fprintf(stderr, "hotmod: %s v%u %s: %s\n", mod->name, version, event_name(ev), detail);
    else
      fprintf(stderr, "hotmod: %s v%u %s\n", mod->name, version, event_name(ev));
  }
  {
    /* A control server's clients get the event too; its hook only queues it. */
    const hm__control_ops *ctl = __atomic_load_n(&reg->control_ops, __ATOMIC_ACQUIRE);
    if (ctl != NULL)
      ctl->event(reg, ev, mod, version, err, hm_event_detail());
  }
  hm__event_detail_set(prev);
}

/* The module's last refusal, for introspection. */
static void note_refusal(hm_registry *reg, hm_module *mod, unsigned version, int err,
                         const char *detail) {
  char *copy = hm__strdup(&reg->a, detail), *old;
  pthread_mutex_lock(&reg->lock);
  mod->n_rejects++;
  mod->reject_ns = hm__now_ns();
  mod->reject_err = err;
  mod->reject_version = version;
  old = mod->reject_detail;
  mod->reject_detail = copy; /* NULL when out of memory: the detail is then not kept */
  pthread_mutex_unlock(&reg->lock);
  hm__free(&reg->a, old);
}

/* A version that stays mapped for good, for introspection (the oldest records go beyond
 * HM__KEPT_RECS_MAX, and all of them when memory runs out). */
static void note_kept(hm_registry *reg, hm_module *mod, unsigned version, int why,
                      unsigned long long bytes) {
  hm__kept_rec *r;
  pthread_mutex_lock(&reg->lock);
  if (mod->nkept_recs == mod->capkept_recs) {
    size_t cap = mod->capkept_recs ? mod->capkept_recs * 2 : 4;
    hm__kept_rec *g = cap <= HM__KEPT_RECS_MAX
                          ? hm__realloc(&reg->a, mod->kept_recs, cap * sizeof *g)
                          : NULL;
    if (g != NULL) {
      mod->kept_recs = g;
      mod->capkept_recs = cap;
    } else if (mod->nkept_recs > 0) {
      memmove(mod->kept_recs, mod->kept_recs + 1, (mod->nkept_recs - 1) * sizeof *r);
      mod->nkept_recs--;
    }
  }
  if (mod->nkept_recs < mod->capkept_recs) {
    r = &mod->kept_recs[mod->nkept_recs++];
    r->num = version;
    r->why = why;
    r->bytes = bytes;
    r->ns = hm__now_ns();
  }
  pthread_mutex_unlock(&reg->lock);
}

void hm__emit(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version, int err) {
  /* A refusal's detail is the failure recorded on this thread just before: a copy, since a
   * call that fails inside the callback records its own. */
  char detail[1024];
  if (ev == HM_EVENT_REJECTED) {
    snprintf(detail, sizeof detail, "%s", hm_errmsg());
    note_refusal(reg, mod, version, err, detail);
  }
  hm__emit_detail(reg, ev, mod, version, err, ev == HM_EVENT_REJECTED ? detail : NULL);
}

void hm__emit_mapped(hm_registry *reg, hm_module *mod, unsigned version, int why,
                     unsigned long long bytes, const char *detail) {
  hm__mapped_report r;
  const hm__mapped_report *prev;
  r.why = why;
  r.bytes = bytes;
  note_kept(reg, mod, version, why, bytes);
  prev = hm__event_mapped_set(&r);
  /* A version kept for profiling is unloaded as far as the registry goes: not a leak. */
  hm__emit_detail(reg, why == HM_MAPPED_PROFILING ? HM_EVENT_UNLOADED : HM_EVENT_LEAKED, mod,
                  version, 0, detail);
  hm__event_mapped_set(prev);
}

void hm__watch_poke(hm_registry *reg) {
  /* Atomic: hm_watch_start may install the hooks meanwhile. */
  const hm__watch_ops *ops = __atomic_load_n(&reg->watch_ops, __ATOMIC_ACQUIRE);
  if (ops != NULL)
    ops->changed(reg);
}
