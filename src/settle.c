/*
 * The watcher's settle policy: from what inotify reported about a module's file and what the
 * kernel says about its writers, decide whether the file is a finished build to load, one to
 * refuse, or one to wait for. A pure function of its inputs (no I/O, no clock, no libuv), so
 * the tests drive it through whole build sequences without a filesystem.
 *
 * "Finished" comes from facts the kernel knows, in this order of preference:
 *  1. Lease: a read lease cannot be taken while any process has the file open for writing
 *     or mapped shared-writable (gold writes through such a mapping). The watcher probes
 *     before each decision; ACTIVE means a writer is at work, and its close (IN_CLOSE_WRITE)
 *     will bring the file back here. Needs the file's owner (or CAP_LEASE) and a filesystem
 *     with leases.
 *  2. Events: without leases, inotify's own words: a write (IN_MODIFY) means a writer is at
 *     work, and its close after writing (IN_CLOSE_WRITE) or a rename into place
 *     (IN_MOVED_TO) that no later write follows means it is done. Opens are not counted:
 *     inotify merges identical events that follow each other in its queue, so two opens
 *     (ours and a writer's, say) can arrive as one, and a count drifts.
 *  3. Timing: where neither can tell (events were lost, or the host forced it), the file is
 *     read once its size, mtime and inode stayed the same for the quiet period. In this mode
 *     a file that is not complete is waited for, never refused: a quiet period proves
 *     nothing about a writer.
 *
 * A finished file that is complete and differs from what serves is loaded (after the settle
 * delay, when one is set, so post-link steps such as strip can finish first). A finished file
 * that is not complete is refused once. Load failures are sorted by hm__err_is_final: the
 * file's own content fails the same way every time, so it is refused for the pair (these
 * bytes, this current version); anything else is retried on a backoff schedule and reported
 * only once it has outlasted it. A file this process may not open is of the second kind:
 * its mode and owner can still change, and deploys change them last (install creates the
 * file 0600, writes and closes it, then chmods it; the chmod's IN_ATTRIB brings it back).
 *
 * Layer 1 (docs/architecture.md): calls only error.c.
 */
#include "internal.h"

#include <string.h>

/* The retry schedule for transient failures: 100 ms, doubling, HM__SETTLE_RETRIES times
 * (0.1 + 0.2 + 0.4 + 0.8 + 1.6 = 3.1 s in all); then the failure is reported and the file
 * waits for its next change, which starts the schedule again. */
#define HM__SETTLE_RETRY_MS 100u
#define HM__SETTLE_RETRIES 5u

/* After a writer's close, the kernel reports IN_CLOSE_WRITE a moment before it stops
 * counting the file as open for writing (fsnotify_close comes before put_file_access in
 * __fput), so a probe right after the event may still see the writer. It is asked again
 * after 1, 2, 4 ... ms, HM__SETTLE_RECHECKS times; a writer that really remains (another
 * process) sends its own close later. */
#define HM__SETTLE_RECHECKS 8u

void hm__settle_init(hm__settle *s, hm__method forced) {
  memset(s, 0, sizeof *s);
  s->forced = forced;
  s->method = forced ? forced : HM__BY_LEASE;
}

void hm__settle_note(hm__settle *s, unsigned ev) {
  s->seen |= ev;
  /* In inotify's order: a write after a close means a writer is at work again, and a new
   * file after a close is another writer's (ld.bfd deletes and creates its output). */
  if (ev & HM__EV_DONE) {
    s->writing = 0;
    s->done = 1;
    s->lost = 0;
  } else if (ev & (HM__EV_WRITE | HM__EV_NEW | HM__EV_GONE)) {
    s->done = 0;
  }
  if (ev & (HM__EV_NEW | HM__EV_GONE))
    s->writing = 0;
  if (ev & HM__EV_WRITE)
    s->writing = 1;
  if (ev & HM__EV_LOST)
    s->lost = 1;
}

/* Leases answer for the writer whenever the probe could ask. */
static int lease_unused(const hm__settle *s, hm__writer writer) {
  return writer == HM__WRITER_UNKNOWN || s->forced == HM__BY_EVENTS ||
         s->forced == HM__BY_TIMING;
}

hm__settle_do hm__settle_decide(hm__settle *s, hm__settle_why why, hm__writer writer,
                                int stable) {
  unsigned seen = s->seen;

  if (why == HM__WHY_EVENTS) {
    s->seen = 0;
    if (seen == 0)
      return HM__DO_WAIT;
    s->retries = 0; /* a change: a failure that outlasted its retries is tried afresh */
    if ((seen & HM__EV_GONE) && !(seen & (HM__EV_DONE | HM__EV_NEW)))
      return HM__DO_WAIT; /* deleted or moved away: the current version serves on */
  }
  /* Every decision, a timer's too, asks afresh whether a writer is at work: a retry or the
   * settle delay may end in the middle of the next build. */

  if (!lease_unused(s, writer)) {
    s->method = HM__BY_LEASE;
    if (writer == HM__WRITER_ACTIVE) {
      if (((why == HM__WHY_EVENTS && (seen & HM__EV_DONE)) || why == HM__WHY_RECHECK) &&
          s->rechecks < HM__SETTLE_RECHECKS) {
        s->recheck_ms = 1u << s->rechecks++;
        return HM__DO_RECHECK;
      }
      s->rechecks = 0;
      return HM__DO_WAIT; /* its close brings the file back here */
    }
    s->rechecks = 0;
    s->finished = 1;
    return HM__DO_READ;
  }

  if (s->forced != HM__BY_TIMING && why != HM__WHY_QUIET && !s->lost) {
    s->method = HM__BY_EVENTS;
    if (s->writing)
      return HM__DO_WAIT; /* written since its last close: that close will tell */
    /* Closed after writing (or renamed into place) with nothing since: finished. Otherwise
     * changed without a write (a touch, chmod, link, a new empty file), or the watch just
     * began: look, but an incomplete file is waited for and a complete one is taken only
     * after the quiet period (hm__settle_checked), since a writer may be at work unseen. */
    s->finished = s->done;
    return HM__DO_READ;
  }

  /* Timing: wait until the file holds still for the quiet period. */
  s->method = HM__BY_TIMING;
  if (why != HM__WHY_QUIET || !stable)
    return HM__DO_QUIET;
  s->finished = 0;
  return HM__DO_READ;
}

hm__settle_do hm__settle_checked(hm__settle *s, const hm__settle_file *f, int settle_due,
                                 unsigned settle_ms) {
  if (f->read_rc == HM_ENOENT || f->read_rc == -ENOTDIR)
    return HM__DO_WAIT; /* gone again: the next file to appear announces itself */
  s->denied = f->denied;
  if (f->denied)
    return HM__DO_RETRY; /* refused only if it stays so (hm__settle_result) */
  if (f->read_rc == HM_EAGAIN) {
    /* A writer has it open, or it changed while being read: the writer's close comes. */
    return s->method == HM__BY_TIMING ? HM__DO_QUIET : HM__DO_WAIT;
  }
  if (f->read_rc != 0 && !hm__err_is_final(f->read_rc))
    return HM__DO_RETRY; /* memory, descriptors, I/O: hm__settle_result schedules it */
  if (f->read_rc == 0 && f->same_as_current) {
    s->settle_pending = 0;
    s->sig_waiting = 0;
    return HM__DO_SAME;
  }
  if (s->have_final && s->final_key == f->key && s->final_cur == f->cur)
    return HM__DO_WAIT; /* refused already, and nothing it depends on changed */
  /* An incomplete file whose writer closed it, while events wait to be read: the next
   * writer may have truncated it already (cp over the file right after the last build).
   * Those events decide; refusing now would refuse the new build's first bytes. */
  if (f->read_rc == 0 && !f->complete && s->finished && f->events_pending)
    return HM__DO_WAIT;
  /* Not a regular file, writable by others, too large: refused whoever writes it. An
   * incomplete ELF file is refused only once its writer is known to be done. */
  if (f->read_rc != 0 || (!f->complete && s->finished)) {
    s->have_final = 1;
    s->final_key = f->key;
    s->final_cur = f->cur;
    return HM__DO_REFUSE;
  }
  if (!f->complete)
    return HM__DO_WAIT; /* not finished: its next change brings it back */
  if (!s->finished && s->method == HM__BY_EVENTS)
    return HM__DO_QUIET; /* complete, but no close said so: the quiet period decides */
  if (settle_ms != 0 && !(settle_due && s->settle_pending && s->settle_key == f->key)) {
    /* Complete: give post-link steps settle_ms in which nothing touches it. */
    s->settle_pending = 1;
    s->settle_key = f->key;
    return HM__DO_SETTLE;
  }
  s->settle_pending = 0;
  return HM__DO_LOAD;
}

hm__settle_do hm__settle_result(hm__settle *s, int rc, uint64_t key, unsigned cur,
                                unsigned *retry_ms) {
  *retry_ms = 0;
  if (rc == 0) {
    s->retries = 0;
    s->have_final = 0;
    s->sig_waiting = 0;
    return HM__DO_WAIT;
  }
  if (rc == HM_EAGAIN || rc == HM_ENOENT || rc == HM_ENOMOD)
    return s->method == HM__BY_TIMING ? HM__DO_QUIET : HM__DO_WAIT;
  if (hm__err_is_final(rc) && !(rc == HM_EACCES && s->denied)) {
    /* The reload that refused it has reported it. */
    s->have_final = 1;
    s->final_key = key;
    s->final_cur = cur;
    s->retries = 0;
    return HM__DO_WAIT;
  }
  if (s->retry_key != key) {
    s->retry_key = key;
    s->retries = 0;
  }
  if (s->retries < HM__SETTLE_RETRIES) {
    *retry_ms = HM__SETTLE_RETRY_MS << s->retries;
    s->retries++;
    return HM__DO_RETRY;
  }
  return HM__DO_REPORT;
}

/* Signed builds. Deploy tools copy mod.so first and mod.so.minisig a moment later, so a
 * finished build without its signature yet is not refused: its signature's arrival (an event
 * on it) brings it back here, and only a build that has waited wait_ms for it is refused.
 * A signature older than the build is the previous build's, unless it verifies this one
 * (deployed first, or copied with its old mtime); one still being written is waited for as
 * a module is. A finished signature newer than the build goes to the reload, which refuses
 * it at once if it does not verify. */
hm__settle_do hm__settle_signature(hm__settle *s, const hm__settle_sig *g,
                                   unsigned *timer_ms) {
  long long waited;
  *timer_ms = 0;
  if (g->present && !g->writing && (!g->older || g->older_verifies)) {
    s->sig_waiting = 0;
    return HM__DO_LOAD;
  }
  if (!s->sig_waiting || s->sig_build != g->build_key) {
    s->sig_waiting = 1;
    s->sig_build = g->build_key;
    s->sig_since_ms = g->now_ms;
  }
  waited = g->now_ms - s->sig_since_ms;
  if (waited < (long long)g->wait_ms) {
    *timer_ms = (unsigned)((long long)g->wait_ms - waited);
    return HM__DO_SIGWAIT;
  }
  s->sig_waiting = 0;
  s->have_final = 1;
  s->final_key = g->key;
  s->final_cur = g->cur;
  return HM__DO_REFUSE;
}
