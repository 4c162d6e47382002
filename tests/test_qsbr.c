/* Threads that report quiescent states (hm_thread_qsbr): their live calls mark nothing, so
 * old versions must wait for their quiescent states, and for nothing once they are offline;
 * one that reports none holds every unload back (and is named on stderr) until it does;
 * fork; nested calls; the API's refusals. test_qsbr_fenced runs the same without
 * membarrier(). */
/* HM_LIVE_CALL_QSBR_ONLY checks its thread only without NDEBUG: this file tests the check,
 * and the bare call it makes on a QSBR thread. */
#undef NDEBUG
#include "util.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* What qsbrmod's unload hooks write (tests/modules/qsbrmod.c). */
struct qsbr_watch {
  int inside_at_unload;
  int unloads;
};
typedef int (*host_cb)(void *arg);
typedef int (*call_fn)(struct qsbr_watch *, host_cb, void *);
typedef int (*ifn)(void);

typedef struct fixture {
  hm_registry *reg;
  hm_module *mod;
  hm_live *call, *ver;
  char p1[4096], p2[4096];
  struct qsbr_watch watch;
} fixture;

static void fx_open(fixture *f) {
  memset(f, 0, sizeof *f);
  snprintf(f->p1, sizeof f->p1, "%s", hmt_mod("qsbrmod_v1"));
  snprintf(f->p2, sizeof f->p2, "%s", hmt_mod("qsbrmod_v2"));
  f->reg = hmt_registry(0);
  assert_int_equal(hm_module_load(f->reg, "q", f->p1, &f->mod), 0);
  assert_int_equal(hm_live_get(f->reg, "q:call", &f->call), 0);
  assert_int_equal(hm_live_get(f->reg, "q:version", &f->ver), 0);
}

/* Reload k (k >= 1) loads v2 when k is odd, v1 when even. */
static void fx_reload(fixture *f, long k) {
  assert_int_equal(hm_module_reload_from(f->mod, (k % 2) ? f->p2 : f->p1), 0);
}

static int retired_nonzero(void *reg) { return !hmt_retired_zero(reg); }

/* ---- A QSBR thread calling while another thread reloads -------------------------------- */

typedef struct runner {
  fixture *f;
  int stop;
  long calls, wrong, nested;
} runner;

/* Inside the version: sometimes dawdle (so that reloads retire it meanwhile), sometimes call
 * again, nested, through HM_LIVE_CALL and through hm_live_enter / leave. */
static int inside_cb(void *arg) {
  runner *r = arg;
  long n = r->calls;
  if (n % 7 == 0) {
    /* Long enough for a reload and the reclaimer's next look; no nested call meanwhile,
     * whose enter could count a depth that protects the version on its own. */
    for (int i = 0; i < 3; i++)
      sched_yield();
    usleep(200);
    return 0;
  }
  if (n % 5 == 0) {
    int v = HM_LIVE_CALL(r->f->ver, ifn), u = HM_LIVE_CALL_QSBR(r->f->ver, ifn);
    ifn g = (ifn)hm_live_enter(r->f->ver);
    int w = g();
    hm_live_leave(r->f->ver);
    r->nested++;
    if ((v != 1 && v != 2) || (u != 1 && u != 2) || (w != 1 && w != 2))
      r->wrong++;
  }
  return 0;
}

static void *qsbr_caller(void *arg) {
  runner *r = arg;
  long since = 0;
  if (hm_thread_qsbr(1) != 0)
    r->wrong++;
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
    int v;
    if (r->calls % 4 == 1) {
      v = HM_LIVE_CALL(r->f->call, call_fn, &r->f->watch, inside_cb, r);
    } else if (r->calls % 4 == 2) {
      v = HM_LIVE_CALL_QSBR(r->f->call, call_fn, &r->f->watch, inside_cb, r);
    } else if (r->calls % 4 == 3) {
      v = HM_LIVE_CALL_QSBR_ONLY(r->f->call, call_fn, &r->f->watch, inside_cb, r);
    } else {
      call_fn g = (call_fn)hm_live_enter(r->f->call);
      v = g(&r->f->watch, inside_cb, r);
      hm_live_leave(r->f->call);
    }
    if (v != 1000 && v != 2000)
      r->wrong++;
    __atomic_store_n(&r->calls, r->calls + 1, __ATOMIC_RELEASE);
    /* Quiescent every few calls; now and then by polling, or by going offline a moment. */
    if (++since == 8) {
      since = 0;
      if (r->calls % 64 == 0) {
        r->wrong += hm_thread_offline() != 0;
        sched_yield();
        r->wrong += hm_thread_online() != 0;
      } else if (r->calls % 24 == 0) {
        (void)hm_registry_poll(r->f->reg);
      } else {
        hm_thread_quiescent();
      }
    }
  }
  /* Exits online: a thread's exit takes it off the list. */
  return NULL;
}

static void t_qsbr_calls_while_reloading(void **state) {
  fixture f;
  runner r;
  pthread_t th;
  long k, n = hmt_scaled(1500);
  (void)state;
  fx_open(&f);
  memset(&r, 0, sizeof r);
  r.f = &f;
  assert_int_equal(pthread_create(&th, NULL, qsbr_caller, &r), 0);
  for (k = 1; k <= n; k++) {
    long seen = __atomic_load_n(&r.calls, __ATOMIC_ACQUIRE), spins = 0;
    fx_reload(&f, k);
    /* Each version gets calls (bounded: a slow machine may starve the caller a while). */
    while (__atomic_load_n(&r.calls, __ATOMIC_ACQUIRE) < seen + 2 && ++spins < 100000)
      sched_yield();
  }
  __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  assert_true(hmt_wait_until(hmt_retired_zero, f.reg, 30.0));
  printf("# %ld reloads; %ld QSBR calls (%ld with nested calls); %d unload hooks\n", n, r.calls,
         r.nested, __atomic_load_n(&f.watch.unloads, __ATOMIC_SEQ_CST));
  assert_true(r.calls > 0);
  assert_int_equal(r.wrong, 0);
  /* Every unload came after the QSBR thread left the version. */
  assert_int_equal(__atomic_load_n(&f.watch.inside_at_unload, __ATOMIC_SEQ_CST), 0);
  hm_registry_free(f.reg);
}

/* ---- A QSBR thread that blocks: offline, or not --------------------------------------- */

typedef struct sleeper {
  fixture *f;
  int offline;      /* go offline before blocking */
  int release;      /* 1: report quiescent states (by polling), 2: finish */
  int state;        /* 1 blocked, 2 polling */
  int tid;
  int rc_offline_call;
  int errors; /* failed calls on the thread (counted, not asserted off the main thread) */
} sleeper;

static void wait_for(int *var, int value) {
  while (__atomic_load_n(var, __ATOMIC_ACQUIRE) < value)
    usleep(1000);
}

static void *qsbr_sleeper(void *arg) {
  sleeper *s = arg;
  s->tid = (int)gettid();
  s->errors += hm_thread_qsbr(1) != 0;
  s->errors += HM_LIVE_CALL(s->f->call, call_fn, &s->f->watch, NULL, NULL) != 1000;
  if (s->offline) {
    s->errors += hm_thread_offline() != 0;
    /* A call made offline marks itself, and leaves the thread offline. */
    s->rc_offline_call = HM_LIVE_CALL(s->f->call, call_fn, &s->f->watch, NULL, NULL);
  }
  __atomic_store_n(&s->state, 1, __ATOMIC_RELEASE);
  wait_for(&s->release, 1);
  if (s->offline)
    s->errors += hm_thread_online() != 0;
  /* From here on a loop's quiescent states, by polling: one would not do, as freeing a
   * retired version may take two grace periods (its table, then the version). */
  s->errors += hm_registry_poll(s->f->reg) < 0;
  __atomic_store_n(&s->state, 2, __ATOMIC_RELEASE);
  while (__atomic_load_n(&s->release, __ATOMIC_ACQUIRE) < 2) {
    s->errors += hm_registry_poll(s->f->reg) < 0;
    usleep(1000);
  }
  return NULL;
}

static void t_qsbr_offline_does_not_hold(void **state) {
  fixture f;
  sleeper s;
  pthread_t th;
  (void)state;
  fx_open(&f);
  memset(&s, 0, sizeof s);
  s.f = &f;
  s.offline = 1;
  assert_int_equal(pthread_create(&th, NULL, qsbr_sleeper, &s), 0);
  wait_for(&s.state, 1);
  assert_true(s.rc_offline_call == 1000);
  for (long k = 1; k <= 5; k++)
    fx_reload(&f, k);
  /* Nothing waits for the offline thread. */
  assert_true(hmt_wait_until(hmt_retired_zero, f.reg, 30.0));
  /* The one version the thread called (the others never saw the watch). */
  assert_int_equal(__atomic_load_n(&f.watch.unloads, __ATOMIC_SEQ_CST), 1);
  __atomic_store_n(&s.release, 2, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  assert_int_equal(s.errors, 0);
  assert_int_equal(__atomic_load_n(&f.watch.inside_at_unload, __ATOMIC_SEQ_CST), 0);
  hm_registry_free(f.reg);
}

/* Read what was written to `path` so far (up to size - 1 bytes). */
static void read_text(const char *path, char *buf, size_t size) {
  FILE *fp = fopen(path, "r");
  size_t n = fp != NULL ? fread(buf, 1, size - 1, fp) : 0;
  buf[n] = '\0';
  if (fp != NULL)
    fclose(fp);
}

typedef struct warned_arg {
  const char *path;
  char needle[64];
} warned_arg;

static int warned(void *arg) {
  warned_arg *w = arg;
  char text[4096];
  read_text(w->path, text, sizeof text);
  return strstr(text, w->needle) != NULL;
}

/* An online QSBR thread that reports nothing holds the unload back (past the 2 s after which
 * the reclaimer names it on stderr), until its next quiescent state (here a poll). */
static void t_qsbr_silent_thread_holds(void **state) {
  fixture f;
  sleeper s;
  pthread_t th;
  char *dir = hmt_tmpdir();
  const char *log = hmt_path(dir, "stderr");
  char logpath[4200];
  warned_arg w;
  int saved, fd, named;
  (void)state;
  snprintf(logpath, sizeof logpath, "%s", log);
  fx_open(&f);
  memset(&s, 0, sizeof s);
  s.f = &f;
  fflush(stderr);
  saved = dup(STDERR_FILENO);
  fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(saved >= 0 && fd >= 0);
  dup2(fd, STDERR_FILENO);
  close(fd);

  assert_int_equal(pthread_create(&th, NULL, qsbr_sleeper, &s), 0);
  wait_for(&s.state, 1);
  fx_reload(&f, 1);
  /* Held: after 3 s the retired version is still there, and the thread has been named. */
  w.path = logpath;
  snprintf(w.needle, sizeof w.needle, "hotmod: thread %d (QSBR", s.tid);
  named = hmt_wait_until(warned, &w, 30.0);
  fflush(stderr); /* stderr back before any assertion, for cmocka's messages */
  dup2(saved, STDERR_FILENO);
  close(saved);
  assert_true(named);
  assert_false(hmt_wait_until(hmt_retired_zero, f.reg, 1.0));
  assert_int_equal(__atomic_load_n(&f.watch.unloads, __ATOMIC_SEQ_CST), 0);
  {
    hm_stats st;
    assert_int_equal(hm_registry_stats(f.reg, &st), 0);
    printf("# held by a silent QSBR thread: %llu retired\n", st.retired);
    assert_true(st.retired >= 1);
  }
  /* Released by its polls. */
  __atomic_store_n(&s.release, 1, __ATOMIC_RELEASE);
  wait_for(&s.state, 2);
  assert_true(hmt_wait_until(hmt_retired_zero, f.reg, 30.0));
  assert_int_equal(__atomic_load_n(&f.watch.unloads, __ATOMIC_SEQ_CST), 1);
  __atomic_store_n(&s.release, 2, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  assert_int_equal(s.errors, 0);
  assert_false(retired_nonzero(f.reg));
  hm_registry_free(f.reg);
  hmt_rm_rf(dir);
  free(dir);
}

/* ---- fork() ---------------------------------------------------------------------------- */

/* In the child (only this thread came along): it is still a QSBR thread, and the parent's
 * other QSBR thread, online and silent, holds nothing here: a registry made in the child
 * unloads its retired versions. Returns 0 or the number of the failed check. */
/* For hmt_wait_until on a QSBR thread: waiting is a quiescent state, as a host's loop makes
 * one while it waits for anything. */
static int quiescent_retired_zero(void *reg) {
  hm_thread_quiescent();
  return hmt_retired_zero(reg);
}

static int child_checks(void) {
  hm_registry *reg;
  hm_module *mod;
  hm_live *ver;
  if (hm_thread_offline() != 0) /* HM_EINVAL if the flavour were lost */
    return 1;
  if (hm_thread_online() != 0)
    return 2;
  reg = hmt_registry(0);
  if (reg == NULL || hm_module_load(reg, "q", hmt_mod("qsbrmod_v1"), &mod) != 0)
    return 3;
  if (hm_live_get(reg, "q:version", &ver) != 0 || HM_LIVE_CALL(ver, ifn) != 1)
    return 4;
  if (hm_module_reload_from(mod, hmt_mod("qsbrmod_v2")) != 0 || HM_LIVE_CALL(ver, ifn) != 2)
    return 5;
  if (!hmt_wait_until(quiescent_retired_zero, reg, 30.0))
    return 6;
  hm_registry_free(reg);
  return 0;
}

static void t_qsbr_fork(void **state) {
  fixture f;
  sleeper s;
  pthread_t th;
  pid_t pid;
  int status = -1;
  (void)state;
#ifdef HM__TSAN
  /* ThreadSanitizer cannot follow a multi-threaded process's child that starts threads of
   * its own (the child's registry does), as test_fork says. */
  skip();
#endif
  fx_open(&f);
  memset(&s, 0, sizeof s);
  s.f = &f;
  assert_int_equal(pthread_create(&th, NULL, qsbr_sleeper, &s), 0);
  wait_for(&s.state, 1);
  assert_int_equal(hm_thread_qsbr(1), 0);
  assert_int_equal(HM_LIVE_CALL(f.ver, ifn), 1);
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(child_checks());
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("the child failed check %d (status 0x%x)",
             WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
  assert_int_equal(hm_thread_qsbr(0), 0);
  __atomic_store_n(&s.release, 2, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  assert_int_equal(s.errors, 0);
  hm_registry_free(f.reg);
}

/* HM_LIVE_CALL_QSBR_ONLY on an ordinary thread, and on an offline QSBR thread: a build
 * without NDEBUG stops it before the call, with a message (here in a child). */
static int only_misused(int qsbr_offline) {
  fixture f;
  pid_t pid;
  int status = -1;
  fx_open(&f);
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (qsbr_offline && (hm_thread_qsbr(1) != 0 || hm_thread_offline() != 0))
      _exit(3);
    (void)HM_LIVE_CALL_QSBR_ONLY(f.ver, ifn);
    _exit(0); /* the call ran: not stopped */
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  hm_registry_free(f.reg);
  return WIFSIGNALED(status) ? WTERMSIG(status) : WIFEXITED(status) ? -WEXITSTATUS(status) : 0;
}

static void t_qsbr_fork_only_misuse(void **state) {
  fixture f;
  (void)state;
#ifdef HM__TSAN
  skip(); /* a forked child of a process with threads, as t_qsbr_fork */
#endif
  assert_int_equal(only_misused(0), SIGABRT);
  assert_int_equal(only_misused(1), SIGABRT);
  /* On an online QSBR thread it is the call. */
  fx_open(&f);
  assert_int_equal(hm_thread_qsbr(1), 0);
  assert_int_equal(HM_LIVE_CALL_QSBR_ONLY(f.ver, ifn), 1);
  assert_int_equal(hm_thread_qsbr(0), 0);
  hm_registry_free(f.reg);
}

/* ---- The API's refusals, nesting on one thread ---------------------------------------- */

static void t_qsbr_api(void **state) {
  fixture f;
  ifn g;
  (void)state;
  fx_open(&f);
  /* An ordinary thread. */
  assert_int_equal(hm_thread_offline(), HM_EINVAL);
  assert_int_equal(hm_thread_online(), HM_EINVAL);
  assert_int_equal(hm_thread_qsbr(2), HM_EINVAL);
  hm_thread_quiescent(); /* nothing */
  assert_int_equal(HM_LIVE_CALL_QSBR(f.ver, ifn), 1); /* the ordinary call */
  g = (ifn)hm_live_enter(f.ver);
  assert_int_equal(hm_thread_qsbr(1), HM_EBUSY); /* inside an ordinary call */
  assert_int_equal(g(), 1);
  hm_live_leave(f.ver);

  assert_int_equal(hm_thread_qsbr(1), 0);
  assert_int_equal(hm_thread_qsbr(1), 0); /* again: a quiescent state */
  /* hm_live_enter on a QSBR thread counts its nesting: a quiescent state inside the call
   * does nothing, and the version stays until the leave. */
  g = (ifn)hm_live_enter(f.ver);
  fx_reload(&f, 1);
  hm_thread_quiescent();
  assert_false(hmt_wait_until(hmt_retired_zero, f.reg, 0.3));
  assert_int_equal(g(), 1);
  hm_live_leave(f.ver);
  assert_true(hmt_wait_until(quiescent_retired_zero, f.reg, 30.0));
  fx_reload(&f, 2);
  /* Nested calls on a QSBR thread, both ways. */
  g = (ifn)hm_live_enter(f.ver);
  assert_int_equal(HM_LIVE_CALL(f.ver, ifn) + g(), 2);
  hm_live_leave(f.ver);
  /* Offline: calls mark themselves, nest, and going online inside one is refused. */
  assert_int_equal(hm_thread_offline(), 0);
  assert_int_equal(hm_thread_offline(), 0);
  g = (ifn)hm_live_enter(f.ver);
  assert_int_equal(HM_LIVE_CALL(f.ver, ifn) + HM_LIVE_CALL_QSBR(f.ver, ifn), 2);
  assert_int_equal(hm_thread_online(), HM_EBUSY);
  assert_int_equal(hm_thread_qsbr(0), HM_EBUSY);
  /* A call made offline holds its version as an ordinary call does. */
  fx_reload(&f, 1);
  assert_false(hmt_wait_until(hmt_retired_zero, f.reg, 0.3));
  hm_live_leave(f.ver);
  assert_true(hmt_wait_until(hmt_retired_zero, f.reg, 30.0)); /* offline holds nothing */
  assert_int_equal(hm_thread_online(), 0);
  assert_int_equal(HM_LIVE_CALL(f.ver, ifn), 2);
  /* Back to ordinary: calls mark themselves again. */
  assert_int_equal(hm_thread_qsbr(0), 0);
  assert_int_equal(hm_thread_offline(), HM_EINVAL);
  assert_int_equal(HM_LIVE_CALL(f.ver, ifn), 2);
  fx_reload(&f, 2);
  assert_true(hmt_wait_until(hmt_retired_zero, f.reg, 30.0));
  hm_registry_free(f.reg);
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_qsbr_api),
      cmocka_unit_test(t_qsbr_calls_while_reloading),
      cmocka_unit_test(t_qsbr_offline_does_not_hold),
      cmocka_unit_test(t_qsbr_silent_thread_holds),
      cmocka_unit_test(t_qsbr_fork),
      cmocka_unit_test(t_qsbr_fork_only_misuse),
  };
  /* One test (e.g. for a mutation), or with a leading '-' all but those named (.ci/run
   * leaves out t_qsbr_fork* under valgrind: their children exit without freeing the
   * parent's registry). */
  if (argc > 1 && argv[1][0] == '-')
    cmocka_set_skip_filter(argv[1] + 1);
  else if (argc > 1)
    cmocka_set_test_filter(argv[1]);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
