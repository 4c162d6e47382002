/* Lifetimes and failure reports at the edges of the API: a registry freed while snapshots
 * still pin versions, the detail of a failure (per thread, and for hm_registry_new), errno
 * values outside the table, options from an older header, NULL where the header promises a
 * behaviour, an unbalanced hm_live_leave, and a membarrier() that starts failing. */
#undef NDEBUG /* the unbalanced-leave check is in debug builds of the caller */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*ifn)(void);

static int retired_zero(void *arg) {
  hm_stats st;
  return hm_registry_stats(arg, &st) == 0 && st.retired == 0;
}

/* ---- hm_registry_free with snapshots still held ---------------------------------------- */

typedef struct seen {
  int leaked;
  int unloaded;
} seen;

static void count_events(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  seen *s = ud;
  (void)mod;
  (void)version;
  (void)err;
  if (ev == HM_EVENT_LEAKED)
    s->leaked++;
  if (ev == HM_EVENT_UNLOADED)
    s->unloaded++;
}

/* The pinned version stays mapped and callable after the registry is gone; releasing the
 * snapshot afterwards frees only the snapshot. Every unload hook ran, including that of the
 * pinned version. Before, the free unmapped it: calling the snapshot crashed and releasing
 * it was a use after free. */
static void t_free_with_snapshot_held(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  hm_snapshot *old, *cur, *st;
  hm_module *mod, *sm;
  seen s = {0, 0};
  char *dir = hmt_tmpdir(), path[4096], priv[4096];
  (void)state;
  o.flags = HM_FLAG_QUIET;
  o.on_event = count_events;
  o.event_userdata = &s;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  snprintf(path, sizeof path, "%s/sq.so", dir);
  hmt_install(hmt_mod("square_v1"), path);
  assert_int_equal(hm_module_load(reg, "sq", path, &mod), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "sq:version", &old), 0);
  hmt_install(hmt_mod("square_v2"), path);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "sq:version", &cur), 0);
  /* A stateful module too: its pinned version's unload hook runs at the free. */
  assert_int_equal(hm_module_load(reg, "st", hmt_mod("stateful_v1"), &sm), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "st:bump", &st), 0);
  assert_int_equal(((ifn)hm_snapshot_fn(st))(), 1);
  snprintf(priv, sizeof priv, "%s", hm_registry_dir(reg));

  hm_registry_free(reg);
  assert_int_equal(s.leaked, 3);
  /* Callable: the versions are still mapped (their copies are gone with the directory). */
  assert_int_equal(((ifn)hm_snapshot_fn(old))(), 1);
  assert_int_equal(((ifn)hm_snapshot_fn(cur))(), 2);
  assert_int_equal(hm_snapshot_version(old), 1);
  assert_int_equal(hm_snapshot_version(cur), 2);
  assert_true(hmt_count_files(priv) < 0); /* the private directory is gone */
  hm_snapshot_release(old);
  hm_snapshot_release(cur);
  hm_snapshot_release(st);
  hmt_rm_rf(dir);
  free(dir);
}

/* ---- Failure details ------------------------------------------------------------------- */

typedef struct detail_arg {
  hm_registry *reg;
  const char *name;
  int ok;
} detail_arg;

static void *fail_and_read(void *arg) {
  detail_arg *d = arg;
  char path[256];
  int i;
  d->ok = 1;
  snprintf(path, sizeof path, "/nonexistent/%s.so", d->name);
  for (i = 0; i < 2000; i++) {
    if (hm_module_load(d->reg, d->name, path, NULL) != HM_ENOENT ||
        strstr(hm_errmsg(), path) == NULL || strstr(hm_registry_errmsg(d->reg), path) == NULL)
      d->ok = 0;
  }
  return NULL;
}

/* Two threads failing on one registry each read their own detail. */
static void t_error_detail_per_thread(void **state) {
  hm_registry *reg = hmt_registry(0);
  detail_arg a = {reg, "alpha", 0}, b = {reg, "bravo", 0};
  pthread_t ta, tb;
  (void)state;
  assert_int_equal(pthread_create(&ta, NULL, fail_and_read, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, fail_and_read, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_true(a.ok);
  assert_true(b.ok);
  hm_registry_free(reg);
}

/* hm_registry_new has no registry to ask: the detail is per thread. */
static void t_registry_new_detail(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  int rc;
  (void)state;
  o.private_root = "/nonexistent/root";
  rc = hm_registry_new(&reg, &o);
  assert_int_equal(rc, HM_ENOENT);
  assert_null(reg);
  assert_non_null(strstr(hm_errmsg(), "/nonexistent/root"));
  o.private_root = NULL;
  o.version = 77;
  assert_int_equal(hm_registry_new(&reg, &o), HM_EINVAL);
  assert_non_null(strstr(hm_errmsg(), "version 77"));
}

/* A program built against the version 1 header passes a shorter struct: accepted, and the
 * fields it does not have keep their defaults. */
static void t_options_version_1(void **state) {
  struct v1_options { /* hm_registry_options as version 1 laid it out */
    unsigned version, flags;
    const char *private_root;
    hm_alloc_fn alloc;
    void *alloc_userdata;
    hm_event_cb on_event;
    void *event_userdata;
    hm_reload_mode reload_mode;
    unsigned quiet_ms;
  } *v1 = calloc(1, sizeof *v1); /* exactly that size: a read past it is an ASan error */
  hm_registry *reg = NULL;
  (void)state;
  assert_int_equal(offsetof(struct v1_options, quiet_ms),
                   offsetof(hm_registry_options, quiet_ms));
  v1->version = 1;
  v1->flags = HM_FLAG_QUIET;
  assert_int_equal(hm_registry_new(&reg, (const hm_registry_options *)(void *)v1), 0);
  hm_registry_free(reg);
  free(v1);
}

/* A caller whose hm_stats is smaller (an older header) gets only what it has. */
static void t_stats_size(void **state) {
  hm_registry *reg = hmt_registry(0);
  unsigned long long small[3] = {7, 7, 7}, *guard = small + 2;
  (void)state;
  assert_int_equal(hm_registry_stats_get(reg, (hm_stats *)(void *)small, 2 * sizeof small[0]),
                   0);
  assert_int_equal(small[0], 0);
  assert_int_equal(*guard, 7);
  assert_int_equal(hm_registry_stats_get(reg, (hm_stats *)(void *)small, 0), HM_EINVAL);
  hm_registry_free(reg);
}

static void t_errno_passthrough_named(void **state) {
  (void)state;
  assert_string_equal(hm_strerror(-EROFS), strerror(EROFS));
  assert_string_equal(hm_strerror(-ENOTDIR), strerror(ENOTDIR));
  assert_string_equal(hm_strerror(-ENAMETOOLONG), strerror(ENAMETOOLONG));
  assert_string_equal(hm_err_name(-ENOSPC), "ENOSPC");
  assert_string_equal(hm_strerror(-30050), "unknown error");
}

/* ---- NULL, misuse ---------------------------------------------------------------------- */

static void t_out_of_line_null(void **state) {
  (void)state;
  assert_null(hm_live_enter_fn(NULL));
  hm_live_leave_fn(NULL);
  assert_null(hm_live_module(NULL));
  assert_int_equal(hm_module_watch_method(NULL), 0);
  hm_snapshot_release(NULL);
}

/* A module that passes NULL to HM_MODULE_DESCRIBE without including <stddef.h> builds (the
 * CMake build of nostddef_v1.so is the real check) and loads. */
static void t_describe_null_builds(void **state) {
  hm_registry *reg = hmt_registry(0);
  hm_live *l;
  (void)state;
  assert_int_equal(hm_module_load(reg, "n", hmt_mod("nostddef_v1"), NULL), 0);
  assert_int_equal(hm_live_get(reg, "n:version", &l), 0);
  assert_int_equal(HM_LIVE_CALL(l, ifn), 1);
  hm_registry_free(reg);
}

/* hm_live_leave without an enter: the nesting count used to wrap silently, holding every
 * grace period of the process for good. In debug builds it aborts with a message. */
static void t_unbalanced_leave_aborts(void **state) {
  hm_registry *reg = hmt_registry(0);
  hm_live *l;
  pid_t pid;
  int st;
  (void)state;
  assert_int_equal(hm_module_load(reg, "sq", hmt_mod("square_v1"), NULL), 0);
  assert_int_equal(hm_live_get(reg, "sq:version", &l), 0);
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int devnull = open("/dev/null", 1);
    dup2(devnull, 2); /* the message is expected */
    signal(SIGABRT, SIG_DFL);
    hm_live_leave(l);
    _exit(0);
  }
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGABRT);
  hm_registry_free(reg);
}

/* ---- membarrier() that starts failing --------------------------------------------------- */

/* Make membarrier() fail with EPERM in every thread of this process from now on. */
static int deny_membarrier(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return -1;
  return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
}

/* The reclaimer used to spin forever on a failing membarrier(); now it falls back to fenced
 * readers and grace periods still end. In a child, since the filter cannot be undone. */
static void t_membarrier_failure(void **state) {
  pid_t pid;
  int st;
  (void)state;
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    hm_registry *reg = hmt_registry(0);
    hm_module *m;
    hm_live *l;
    char *dir = hmt_tmpdir(), path[4096];
    int rc = 0, i;
    int devnull = open("/dev/null", 1);
    dup2(devnull, 2); /* the fallback's one warning is expected */
    snprintf(path, sizeof path, "%s/sq.so", dir);
    hmt_install(hmt_mod("square_v1"), path);
    if (hm_module_load(reg, "sq", path, &m) != 0 || hm_live_get(reg, "sq:version", &l) != 0)
      _exit(2);
    (void)HM_LIVE_CALL(l, ifn); /* registers this thread as a reader (membarrier mode) */
    if (deny_membarrier() != 0)
      _exit(3);
    for (i = 0; i < 5 && rc == 0; i++) {
      hmt_install(hmt_mod(i % 2 ? "square_v1" : "square_v2"), path);
      if (hm_module_reload(m) != 0 || HM_LIVE_CALL(l, ifn) != (i % 2 ? 1 : 2))
        rc = 4;
      else if (!hmt_wait_until(retired_zero, reg, 20.0))
        rc = 5; /* a grace period never ended */
    }
    hm_registry_free(reg);
    hmt_rm_rf(dir);
    _exit(rc);
  }
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  if (WEXITSTATUS(st) == 3)
    skip(); /* seccomp not available here */
  assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- Allocation failures at every position --------------------------------------------- */

/* Fails the allocation `countdown` calls after it is armed, once; counts what is live. */
typedef struct faulty {
  long live, countdown, failed;
  int armed;
} faulty;

static void *faulty_alloc(void *p, size_t n, void *ud) {
  faulty *f = ud;
  void *r;
  if (n == 0) {
    if (p != NULL)
      __atomic_sub_fetch(&f->live, 1, __ATOMIC_RELAXED);
    free(p);
    return NULL;
  }
  if (__atomic_load_n(&f->armed, __ATOMIC_ACQUIRE) &&
      __atomic_sub_fetch(&f->countdown, 1, __ATOMIC_ACQ_REL) == 0) {
    __atomic_add_fetch(&f->failed, 1, __ATOMIC_RELAXED);
    return NULL;
  }
  r = realloc(p, n);
  if (r != NULL && p == NULL)
    __atomic_add_fetch(&f->live, 1, __ATOMIC_RELAXED);
  return r;
}

typedef struct fault_run {
  faulty f;
  seen s;
  hm_registry *reg;
  hm_module *mod;
  hm_live *l[4];
  char dir[4096];
} fault_run;

/* A registry on the faulty allocator with square_v1 loaded and four live handles (so that
 * resolving them in a new version grows its table). */
static void fault_setup(fault_run *r) {
  static const char *const syms[4] = {"f:version", "f:bonus", "f:counter_next",
                                      "f:my_function"};
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  int i;
  memset(r, 0, sizeof *r);
  o.alloc = faulty_alloc;
  o.alloc_userdata = &r->f;
  o.flags = HM_FLAG_QUIET;
  o.on_event = count_events;
  o.event_userdata = &r->s;
  assert_int_equal(hm_registry_new(&r->reg, &o), 0);
  snprintf(r->dir, sizeof r->dir, "%s/", hm_registry_dir(r->reg));
  assert_int_equal(hm_module_load(r->reg, "f", hmt_mod("square_v1"), &r->mod), 0);
  for (i = 0; i < 4; i++)
    assert_int_equal(hm_live_get(r->reg, syms[i], &r->l[i]), 0);
}

static void fault_arm(fault_run *r, long k) {
  r->f.countdown = k;
  __atomic_store_n(&r->f.armed, 1, __ATOMIC_RELEASE);
}

/* After the registry is gone: nothing mapped, nothing leaked, every block given back. */
static void fault_check_freed(fault_run *r, const char *what, long k) {
  if (hmt_maps_count(r->dir) != 0 || r->s.leaked != 0 || r->f.live != 0)
    fail_msg("%s, failing allocation %ld: %d mappings left, %d LEAKED events, %ld blocks", what, k,
             hmt_maps_count(r->dir), r->s.leaked, r->f.live);
}

/* Every allocation of a reload, and of hm_registry_free, fails in turn: the reload returns
 * HM_ENOMEM with the old version serving (or succeeds), and the free still unloads every
 * version and gives back every block. hm_registry_free used to ignore the failure of the
 * table an unload publishes: the unload hook ran with the version still published, which
 * stayed mapped and was reported LEAKED. */
static void t_allocation_failures(void **state) {
  long k, positions[2] = {0, 0};
  int scenario;
  (void)state;
  for (scenario = 0; scenario < 2; scenario++) {
    for (k = 1;; k++) {
      fault_run r;
      int done;
      fault_setup(&r);
      if (scenario == 1) /* with a kept copy and a history to drop */
        assert_int_equal(hm_module_reload_from(r.mod, hmt_mod("square_v2")), 0);
      fault_arm(&r, k);
      if (scenario == 0) {
        int rc = hm_module_reload_from(r.mod, hmt_mod("square_v2"));
        __atomic_store_n(&r.f.armed, 0, __ATOMIC_RELEASE);
        if (rc != 0 && rc != HM_ENOMEM)
          fail_msg("failing allocation %ld: reload returned %s", k, hm_err_name(rc));
        if (HM_LIVE_CALL(r.l[0], ifn) != (rc == 0 ? 2 : 1) ||
            hm_module_version(r.mod) != (rc == 0 ? 2u : 1u))
          fail_msg("failing allocation %ld: reload returned %s, version %u serves", k,
                   hm_err_name(rc), hm_module_version(r.mod));
        assert_true(hmt_wait_until(retired_zero, r.reg, 30.0));
      }
      done = r.f.failed == 0;
      hm_registry_free(r.reg);
      fault_check_freed(&r, scenario == 0 ? "reload" : "hm_registry_free", k);
      if (done)
        break;
      positions[scenario]++;
    }
  }
  /* The reload allocates, so its failures were tried; freeing needs no memory now. */
  assert_true(positions[0] > 3);
  assert_int_equal(positions[1], 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_free_with_snapshot_held),
      cmocka_unit_test(t_error_detail_per_thread),
      cmocka_unit_test(t_registry_new_detail),
      cmocka_unit_test(t_options_version_1),
      cmocka_unit_test(t_stats_size),
      cmocka_unit_test(t_errno_passthrough_named),
      cmocka_unit_test(t_out_of_line_null),
      cmocka_unit_test(t_describe_null_builds),
      cmocka_unit_test(t_unbalanced_leave_aborts),
      cmocka_unit_test(t_membarrier_failure),
      cmocka_unit_test(t_allocation_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
