/* The watcher's settle policy (src/settle.c) driven without a filesystem: the event and
 * fact sequences real writers produce, and what the policy must decide for each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/* Shorthands. */
static hm__settle_do ev(hm__settle *s, unsigned bits, hm__writer w) {
  hm__settle_note(s, bits);
  return hm__settle_decide(s, HM__WHY_EVENTS, w, 0);
}

static hm__settle_file file(int complete, int same, uint64_t key, unsigned cur) {
  hm__settle_file f = {0, complete, same, key, cur, 0, 0};
  return f;
}

static hm__settle_do checked(hm__settle *s, hm__settle_file f) {
  return hm__settle_checked(s, &f, 0, 0);
}

#define NONE HM__WRITER_NONE
#define ACTIVE HM__WRITER_ACTIVE
#define UNKNOWN HM__WRITER_UNKNOWN

/* ld.bfd: delete, create (open for writing), a long quiet stretch, writes, close; the probe
 * right after the close may still count the writer. Nothing is refused on the way. */
static void t_lease_bfd(void **state) {
  hm__settle s;
  (void)state;
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_START, NONE), HM__DO_READ);
  assert_int_equal(checked(&s, file(1, 1, 1, 1)), HM__DO_SAME);
  assert_int_equal(ev(&s, HM__EV_GONE, UNKNOWN), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_CHANGE | HM__EV_NEW, ACTIVE), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_WRITE, ACTIVE), HM__DO_WAIT);
  /* The close, and the kernel still counting the writer for a moment. */
  assert_int_equal(ev(&s, HM__EV_DONE, ACTIVE), HM__DO_RECHECK);
  assert_int_equal(s.recheck_ms, 1u);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_RECHECK, ACTIVE, 0), HM__DO_RECHECK);
  assert_int_equal(s.recheck_ms, 2u);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_RECHECK, NONE, 0), HM__DO_READ);
  assert_int_equal(s.method, HM__BY_LEASE);
  assert_int_equal(checked(&s, file(1, 0, 2, 1)), HM__DO_LOAD);
  {
    unsigned ms;
    assert_int_equal(hm__settle_result(&s, 0, 2, 1, &ms), HM__DO_WAIT);
  }
  /* The chmod after the link: same bytes. */
  assert_int_equal(ev(&s, HM__EV_CHANGE, NONE), HM__DO_READ);
  assert_int_equal(checked(&s, file(1, 1, 2, 2)), HM__DO_SAME);
}

/* A writer that really stays (another process): the rechecks stop, and its own close will
 * come. */
static void t_lease_recheck_gives_up(void **state) {
  hm__settle s;
  int i;
  (void)state;
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_DONE, ACTIVE), HM__DO_RECHECK);
  for (i = 1; i < 8; i++)
    assert_int_equal(hm__settle_decide(&s, HM__WHY_RECHECK, ACTIVE, 0), HM__DO_RECHECK);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_RECHECK, ACTIVE, 0), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_DONE, NONE), HM__DO_READ);
}

/* Finished but incomplete: refused once for (bytes, current version); a touch does not
 * bring it back; another current version does. A writer with the file open is never asked
 * about incomplete bytes. */
static void t_refusal_once(void **state) {
  hm__settle s;
  (void)state;
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_CHANGE, ACTIVE), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_DONE, NONE), HM__DO_READ);
  assert_int_equal(checked(&s, file(0, 0, 9, 1)), HM__DO_REFUSE);
  assert_int_equal(ev(&s, HM__EV_CHANGE, NONE), HM__DO_READ);
  assert_int_equal(checked(&s, file(0, 0, 9, 1)), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_CHANGE, NONE), HM__DO_READ);
  assert_int_equal(checked(&s, file(0, 0, 9, 2)), HM__DO_REFUSE);
}

/* Finished and incomplete, but events are still queued (cp over the file right after the
 * last build truncated it before the watcher read it): wait for them; with none queued, the
 * same file is refused. */
static void t_events_pending_wait(void **state) {
  hm__settle s;
  hm__settle_file f = file(0, 0, 9, 1);
  (void)state;
  hm__settle_init(&s, HM__BY_EVENTS);
  assert_int_equal(ev(&s, HM__EV_WRITE, UNKNOWN), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_DONE, UNKNOWN), HM__DO_READ);
  f.events_pending = 1;
  assert_int_equal(hm__settle_checked(&s, &f, 0, 0), HM__DO_WAIT);
  /* The queued events were the next writer's: not finished, nothing refused. */
  assert_int_equal(ev(&s, HM__EV_WRITE, UNKNOWN), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_DONE, UNKNOWN), HM__DO_READ);
  f.events_pending = 0;
  assert_int_equal(hm__settle_checked(&s, &f, 0, 0), HM__DO_REFUSE);
}

/* The file cannot be a module whoever writes it: refused, finished or not. */
static void t_not_regular_refused(void **state) {
  hm__settle s;
  hm__settle_file f = {HM_ENOTELF, 0, 0, 5, 1, 0, 0};
  (void)state;
  hm__settle_init(&s, HM__BY_TIMING);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_QUIET, UNKNOWN, 1), HM__DO_READ);
  assert_int_equal(hm__settle_checked(&s, &f, 0, 0), HM__DO_REFUSE);
}

/* Without leases: gold creates, sizes (a write), writes through its mapping (no events) and
 * closes. Finished at the close. */
static void t_events_gold(void **state) {
  hm__settle s;
  (void)state;
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_START, UNKNOWN), HM__DO_READ);
  assert_int_equal(s.method, HM__BY_EVENTS);
  assert_false(s.finished);
  assert_int_equal(checked(&s, file(1, 1, 1, 1)), HM__DO_SAME);
  assert_int_equal(ev(&s, HM__EV_CHANGE | HM__EV_NEW, UNKNOWN), HM__DO_READ); /* created */
  assert_int_equal(checked(&s, file(0, 0, 2, 1)), HM__DO_WAIT); /* empty: not finished */
  assert_int_equal(ev(&s, HM__EV_WRITE, UNKNOWN), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_DONE, UNKNOWN), HM__DO_READ);
  assert_true(s.finished);
  /* Incomplete although its writer closed it: refused. */
  assert_int_equal(checked(&s, file(0, 0, 3, 1)), HM__DO_REFUSE);
}

/* In inotify's order: a write after a close in the same batch is another writer at work. */
static void t_events_write_after_close(void **state) {
  hm__settle s;
  (void)state;
  hm__settle_init(&s, 0);
  hm__settle_note(&s, HM__EV_WRITE);
  hm__settle_note(&s, HM__EV_DONE);
  hm__settle_note(&s, HM__EV_WRITE);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_EVENTS, UNKNOWN, 0), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_DONE, UNKNOWN), HM__DO_READ);
  assert_true(s.finished);
  /* A touch after it: nobody wrote since the close, so still finished. */
  assert_int_equal(ev(&s, HM__EV_CHANGE, UNKNOWN), HM__DO_READ);
  assert_true(s.finished);
  /* The next build deletes and creates the file, empty, in the same batch as the last
   * close: the new file is not finished. */
  hm__settle_note(&s, HM__EV_DONE);
  hm__settle_note(&s, HM__EV_GONE);
  hm__settle_note(&s, HM__EV_CHANGE | HM__EV_NEW);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_EVENTS, UNKNOWN, 0), HM__DO_READ);
  assert_false(s.finished);
  assert_int_equal(checked(&s, file(0, 0, 5, 1)), HM__DO_WAIT);
}

/* Without leases, a complete file that no close vouched for (at the watch's start, or a new
 * file with no write seen) waits for the quiet period: a writer may be at work unseen, as
 * gold's mapping is. */
static void t_events_unvouched_complete_file(void **state) {
  hm__settle s;
  (void)state;
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_START, UNKNOWN), HM__DO_READ);
  assert_int_equal(checked(&s, file(1, 0, 6, 1)), HM__DO_QUIET);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_QUIET, UNKNOWN, 1), HM__DO_READ);
  assert_int_equal(checked(&s, file(1, 0, 6, 1)), HM__DO_LOAD);
}

/* A timer (retry, settle delay) that ends while the next build is being written does not
 * read it as finished: without leases, a write since the close means wait. */
static void t_timer_meets_next_build(void **state) {
  hm__settle s;
  hm__settle_file a = {0, 1, 0, 11, 1, 0, 0};
  (void)state;
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_DONE, UNKNOWN), HM__DO_READ);
  assert_int_equal(hm__settle_checked(&s, &a, 0, 300), HM__DO_SETTLE);
  hm__settle_note(&s, HM__EV_WRITE); /* the next build truncates and writes */
  assert_int_equal(hm__settle_decide(&s, HM__WHY_SETTLE, UNKNOWN, 0), HM__DO_WAIT);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_RETRY, UNKNOWN, 0), HM__DO_WAIT);
  /* With leases, the probe says so. */
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_DONE, NONE), HM__DO_READ);
  assert_int_equal(hm__settle_checked(&s, &a, 0, 300), HM__DO_SETTLE);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_SETTLE, ACTIVE, 0), HM__DO_WAIT);
}

/* Events were lost: only timing can tell, until the next close after writing; the timing
 * fallback never refuses an incomplete file. */
static void t_events_lost(void **state) {
  hm__settle s;
  (void)state;
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_LOST, UNKNOWN), HM__DO_QUIET);
  assert_int_equal(s.method, HM__BY_TIMING);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_QUIET, UNKNOWN, 0), HM__DO_QUIET);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_QUIET, UNKNOWN, 1), HM__DO_READ);
  assert_int_equal(checked(&s, file(0, 0, 4, 1)), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_DONE | HM__EV_NEW, UNKNOWN), HM__DO_READ);
  assert_int_equal(s.method, HM__BY_EVENTS);
  assert_true(s.finished);
}

/* Forced timing: every change restarts the quiet period; nothing is refused for being
 * incomplete; a finished-looking close proves nothing. */
static void t_timing(void **state) {
  hm__settle s;
  hm__settle_file eagain = {HM_EAGAIN, 0, 0, 0, 1, 0, 0};
  (void)state;
  hm__settle_init(&s, HM__BY_TIMING);
  assert_int_equal(ev(&s, HM__EV_CHANGE, NONE), HM__DO_QUIET);
  assert_int_equal(ev(&s, HM__EV_DONE, NONE), HM__DO_QUIET);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_QUIET, NONE, 1), HM__DO_READ);
  assert_int_equal(checked(&s, file(0, 0, 8, 1)), HM__DO_WAIT);
  assert_int_equal(hm__settle_checked(&s, &eagain, 0, 0), HM__DO_QUIET);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_QUIET, NONE, 1), HM__DO_READ);
  assert_int_equal(checked(&s, file(1, 0, 8, 1)), HM__DO_LOAD);
}

/* Transient failures: retried after 0.1, 0.2, 0.4, 0.8, 1.6 s, then reported; a change, or
 * other bytes, starts over. Final ones are never retried for the same bytes and version. */
static void t_retry_schedule(void **state) {
  hm__settle s;
  unsigned ms, want = 100;
  int i;
  (void)state;
  hm__settle_init(&s, 0);
  for (i = 0; i < 5; i++, want *= 2) {
    assert_int_equal(hm__settle_result(&s, HM_EDLOPEN, 7, 1, &ms), HM__DO_RETRY);
    assert_int_equal(ms, want);
  }
  assert_int_equal(hm__settle_result(&s, HM_EDLOPEN, 7, 1, &ms), HM__DO_REPORT);
  assert_int_equal(hm__settle_result(&s, -EMFILE, 8, 1, &ms), HM__DO_RETRY); /* other bytes */
  assert_int_equal(ms, 100u);
  assert_int_equal(ev(&s, HM__EV_CHANGE, NONE), HM__DO_READ);
  assert_int_equal(hm__settle_result(&s, HM_ENOMEM, 8, 1, &ms), HM__DO_RETRY);
  assert_int_equal(ms, 100u);
  /* Final: reported by the reload itself; the same bytes are then left alone. */
  assert_int_equal(hm__settle_result(&s, HM_ENOSYM, 9, 1, &ms), HM__DO_WAIT);
  assert_int_equal(checked(&s, file(1, 0, 9, 1)), HM__DO_WAIT);
  assert_int_equal(checked(&s, file(1, 0, 9, 2)), HM__DO_LOAD);
  /* A file being written, or gone: wait for it. */
  assert_int_equal(hm__settle_result(&s, HM_EAGAIN, 9, 2, &ms), HM__DO_WAIT);
  assert_int_equal(hm__settle_result(&s, HM_ENOENT, 9, 2, &ms), HM__DO_WAIT);
}

/* install -m755 by another user: created 0600, written, closed, then chmodded. The open in
 * between is refused (EACCES): retried on the schedule, and the chmod's event takes the
 * build. A file that stays unreadable is reported once the schedule is over, and is tried
 * again at its next change. A refusal by the trust rules (EACCES from a file that was read)
 * stays final. */
static void t_denied_until_chmod(void **state) {
  hm__settle s;
  hm__settle_file denied = {HM_EACCES, 0, 0, 77, 1, 0, 1};
  unsigned ms, want = 100;
  int i;
  (void)state;
  hm__settle_init(&s, HM__BY_EVENTS);
  assert_int_equal(ev(&s, HM__EV_CHANGE | HM__EV_NEW, UNKNOWN), HM__DO_READ);
  assert_int_equal(hm__settle_checked(&s, &denied, 0, 0), HM__DO_RETRY);
  assert_int_equal(hm__settle_result(&s, HM_EACCES, 77, 1, &ms), HM__DO_RETRY);
  assert_int_equal(ev(&s, HM__EV_WRITE, UNKNOWN), HM__DO_WAIT);
  assert_int_equal(ev(&s, HM__EV_DONE | HM__EV_CHANGE, UNKNOWN), HM__DO_READ);
  assert_int_equal(checked(&s, file(1, 0, 5, 1)), HM__DO_LOAD);
  /* Unreadable for good: retried, then reported; a change starts over. */
  assert_int_equal(ev(&s, HM__EV_DONE | HM__EV_NEW, UNKNOWN), HM__DO_READ);
  for (i = 0; i < 5; i++, want *= 2) {
    assert_int_equal(hm__settle_checked(&s, &denied, 0, 0), HM__DO_RETRY);
    assert_int_equal(hm__settle_result(&s, HM_EACCES, 77, 1, &ms), HM__DO_RETRY);
    assert_int_equal(ms, want);
    assert_int_equal(hm__settle_decide(&s, HM__WHY_RETRY, UNKNOWN, 0), HM__DO_READ);
  }
  assert_int_equal(hm__settle_checked(&s, &denied, 0, 0), HM__DO_RETRY);
  assert_int_equal(hm__settle_result(&s, HM_EACCES, 77, 1, &ms), HM__DO_REPORT);
  assert_int_equal(ev(&s, HM__EV_CHANGE, UNKNOWN), HM__DO_READ);
  assert_int_equal(hm__settle_checked(&s, &denied, 0, 0), HM__DO_RETRY);
  assert_int_equal(hm__settle_result(&s, HM_EACCES, 77, 1, &ms), HM__DO_RETRY);
  /* Read, then refused by the trust rules: final. */
  assert_int_equal(checked(&s, file(1, 0, 6, 1)), HM__DO_LOAD);
  assert_int_equal(hm__settle_result(&s, HM_EACCES, 6, 1, &ms), HM__DO_WAIT);
  assert_int_equal(checked(&s, file(1, 0, 6, 1)), HM__DO_WAIT);
}

/* The settle delay: a complete file waits until it held still; other bytes start over. */
static void t_settle_delay(void **state) {
  hm__settle s;
  hm__settle_file a = {0, 1, 0, 11, 1, 0, 0}, b = {0, 1, 0, 12, 1, 0, 0};
  (void)state;
  hm__settle_init(&s, 0);
  assert_int_equal(ev(&s, HM__EV_DONE, NONE), HM__DO_READ);
  assert_int_equal(hm__settle_checked(&s, &a, 0, 300), HM__DO_SETTLE);
  assert_int_equal(ev(&s, HM__EV_DONE | HM__EV_NEW, NONE), HM__DO_READ); /* strip */
  assert_int_equal(hm__settle_checked(&s, &b, 0, 300), HM__DO_SETTLE);
  assert_int_equal(hm__settle_decide(&s, HM__WHY_SETTLE, NONE, 0), HM__DO_READ);
  assert_int_equal(hm__settle_checked(&s, &b, 1, 300), HM__DO_LOAD);
}

/* Signed builds: the module mod.so is finished (key 7 with signature file identity 70) and
 * its signature is deployed after it. */
static hm__settle_sig sigfacts(int present, int older, int writing, uint64_t sigkey,
                               long long now_ms) {
  hm__settle_sig g;
  memset(&g, 0, sizeof g);
  g.present = present;
  g.older = older;
  g.writing = writing;
  g.build_key = 7;
  g.key = 7 ^ sigkey;
  g.cur = 1;
  g.now_ms = now_ms;
  g.wait_ms = 1000;
  return g;
}

static void t_signature_later(void **state) {
  hm__settle s;
  hm__settle_sig g;
  unsigned ms;
  (void)state;
  hm__settle_init(&s, 0);
  /* Only the previous build's signature (older, does not verify): wait, up to the bound. */
  g = sigfacts(1, 1, 0, 70, 5000);
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_SIGWAIT);
  assert_int_equal(ms, 1000u);
  /* The new one is being written (created, or a writer holds it): still waiting. */
  g = sigfacts(1, 0, 1, 71, 5300);
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_SIGWAIT);
  assert_int_equal(ms, 700u);
  /* Written and closed: the reload verifies it. */
  g = sigfacts(1, 0, 0, 72, 5310);
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_LOAD);
  assert_int_equal(s.sig_waiting, 0);
  /* An older signature that verifies the build (deployed first) needs no wait. */
  g = sigfacts(1, 1, 0, 72, 9000);
  g.older_verifies = 1;
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_LOAD);
}

/* A signature that never comes: refused once the build waited for it, for that pair only; a
 * signature file that comes later is a new pair. */
static void t_signature_stale(void **state) {
  hm__settle s;
  hm__settle_sig g;
  unsigned ms;
  (void)state;
  hm__settle_init(&s, 0);
  g = sigfacts(0, 0, 0, 0, 100);
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_SIGWAIT);
  g.now_ms = 1099;
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_SIGWAIT);
  assert_int_equal(ms, 1u);
  g.now_ms = 1100;
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_REFUSE);
  /* The same bytes without a signature again (a touch): refused already. */
  assert_int_equal(checked(&s, file(1, 0, 7, 1)), HM__DO_WAIT);
  /* A signature file arrives: a new key, looked at afresh, and loaded. */
  assert_int_equal(checked(&s, file(1, 0, 7 ^ 70, 1)), HM__DO_LOAD);
  g = sigfacts(1, 0, 0, 70, 5000);
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_LOAD);
  /* A new build waits afresh: its wait starts when it is found. */
  g = sigfacts(0, 0, 0, 0, 6000);
  g.build_key = 8;
  assert_int_equal(hm__settle_signature(&s, &g, &ms), HM__DO_SIGWAIT);
  assert_int_equal(ms, 1000u);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_lease_bfd),
      cmocka_unit_test(t_lease_recheck_gives_up),
      cmocka_unit_test(t_refusal_once),
      cmocka_unit_test(t_events_pending_wait),
      cmocka_unit_test(t_not_regular_refused),
      cmocka_unit_test(t_events_gold),
      cmocka_unit_test(t_events_write_after_close),
      cmocka_unit_test(t_events_unvouched_complete_file),
      cmocka_unit_test(t_timer_meets_next_build),
      cmocka_unit_test(t_events_lost),
      cmocka_unit_test(t_timing),
      cmocka_unit_test(t_retry_schedule),
      cmocka_unit_test(t_settle_delay),
      cmocka_unit_test(t_denied_until_chmod),
      cmocka_unit_test(t_signature_later),
      cmocka_unit_test(t_signature_stale),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
