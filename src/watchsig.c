/*
 * The watcher's side of signed builds: events on a module's build signature (`<name>.minisig`
 * beside the file its path leads to, in a directory the watcher watches anyway), and whether
 * a finished build has the signature it needs yet or waits for it (settle.c decides).
 *
 * Layer 9 (docs/architecture.md): calls the registry's layers (signed.c) and settle.c; watch.c
 * calls it.
 */
#include "watch.h"

#include <string.h>

#define HM__SIG_EXT ".minisig"

int hm__watch_sig_event(hm__wmod *wm, const hm__wpoint *p, const struct inotify_event *ev) {
  size_t n = strlen(p->name);
  if (p->link || !__atomic_load_n(&wm->w->reg->signing, __ATOMIC_ACQUIRE) ||
      strncmp(ev->name, p->name, n) != 0 || strcmp(ev->name + n, HM__SIG_EXT) != 0)
    return 0;
  /* As for a module's file: a writer is at work from its first write (or the file's
   * creation: cp and install create it first) until it closes it or renames it into place. */
  if (ev->mask & (IN_CREATE | IN_MODIFY))
    wm->sig_writing = 1;
  if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM))
    wm->sig_writing = 0;
  /* Not a write to the module: only a reason to look at it again (a new signature makes a new
   * refusal key, so a build refused or waiting is decided afresh). */
  hm__settle_note(&wm->st, HM__EV_CHANGE);
  wm->dirty = 1;
  return 1;
}

uint64_t hm__watch_sig_key(const hm__file *f) {
  const hm__sigfile *s = &f->sig;
  uint64_t k;
  if (!s->asked)
    return 0;
  k = (uint64_t)(int64_t)s->rc * 0xff51afd7ed558ccdull;
  if (s->rc == 0)
    k ^= ((uint64_t)s->dev * 0xc4ceb9fe1a85ec53ull) ^ ((uint64_t)s->ino << 17) ^
         ((uint64_t)s->size * 0x9e3779b97f4a7c15ull) ^ (uint64_t)s->mtime_ns ^
         hm__hash_bytes(s->buf, s->len);
  return k;
}

hm__settle_do hm__watch_sig_gate(hm__wmod *wm, const hm__file *f, uint64_t build_key,
                                 uint64_t key, unsigned cur, unsigned *timer_ms) {
  hm_registry *reg = wm->w->reg;
  const hm__sigfile *s = &f->sig;
  hm__settle_sig g;
  hm__settle_do act;
  const char *name = s->name[0] ? s->name : "its file";
  *timer_ms = 0;
  if (!s->asked)
    return HM__DO_LOAD; /* read without keys: the reload says what that means */
  memset(&g, 0, sizeof g);
  g.present = s->rc == 0;
  /* The lease answers for writers where it could ask; events otherwise. */
  g.writing = g.present && (s->writer == HM__WRITER_ACTIVE ||
                            (s->writer != HM__WRITER_NONE && wm->sig_writing));
  g.older = g.present && s->mtime_ns < f->id.mtime_ns;
  g.older_verifies = g.older && !g.writing && hm__signed_verifies(reg, f);
  g.build_key = build_key;
  g.key = key;
  g.cur = cur;
  g.now_ms = hm__mono_ns() / 1000000;
  g.wait_ms = reg->signed_wait_ms;
  act = hm__settle_signature(&wm->st, &g, timer_ms);
  if (act == HM__DO_REFUSE)
    hm__fail(HM_EUNTRUSTED,
             "%s: untrusted build: %s %s" HM__SIG_EXT " %s (the watcher waited %u ms for it)",
             wm->path, g.present ? "its signature file" : "no signature file", name,
             !g.present  ? "beside it"
             : g.writing ? "was still being written"
                         : "is older than the build and does not verify it (the previous "
                           "build's?)",
             g.wait_ms);
  return act;
}
