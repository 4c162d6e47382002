/* Group reloads: an interface change between two modules (b's value() from int(void) to
 * long(void), a's typed handle on it) goes live as one group, while apart each half is
 * refused; a group with one refusing member changes nothing and leaves nothing behind; calls
 * across the pair never mix versions, also a call that spans a switch. */
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*ifn)(void);

typedef struct fx {
  hm_registry *reg;
  hmt_events ev;
  hm_module *a, *b;
  hm_live *entry;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->reg = hmt_registry_events(&f->ev, NULL);
  assert_int_equal(hm_module_load(f->reg, "b", hmt_mod("pb_v1"), &f->b), 0);
  assert_int_equal(hm_module_load(f->reg, "a", hmt_mod("pa_v1"), &f->a), 0);
  assert_int_equal(hm_live_get(f->reg, "a:entry", &f->entry), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  hmt_registry_events_free(f->reg, &f->ev);
  free(f);
  return 0;
}

static int rejects(fx *f) {
  int n;
  pthread_mutex_lock(&f->ev.mu);
  n = f->ev.nreject;
  pthread_mutex_unlock(&f->ev.mu);
  return n;
}

/* The change: apart, each half is refused; together they go live. */
static void t_type_change_as_group(void **state) {
  fx *f = *state;
  hm_module *both[2];
  const char *builds[2];
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 11);
  assert_int_equal(hm_module_reload_from(f->b, hmt_mod("pb_v2")), HM_ESIG);
  assert_int_equal(hm_module_reload_from(f->a, hmt_mod("pa_v2")), HM_EHOOK);
  assert_int_equal(hm_module_reload_from(f->b, hmt_mod("pb_v2")), HM_ESIG);
  both[0] = f->a;
  both[1] = f->b;
  builds[0] = hmt_mod("pa_v2");
  builds[1] = hmt_mod("pb_v2");
  assert_int_equal(hm_registry_reload_group(f->reg, both, builds, 2), 0);
  assert_int_equal(hm_module_version(f->a), 2);
  assert_int_equal(hm_module_version(f->b), 2);
  /* b's new version took a handle on a in its hook: it reached a's new version too. */
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 22);
  assert_string_equal(hm_module_path(f->b), hmt_mod("pb_v2"));
  /* And back, as one group again (each module's own path where none is given). */
  builds[0] = hmt_mod("pa_v1");
  builds[1] = hmt_mod("pb_v1");
  assert_int_equal(hm_registry_reload_group(f->reg, both, builds, 2), 0);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 11);
  assert_int_equal(hm_registry_reload_group(f->reg, both, NULL, 2), 0);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 11);
  assert_int_equal(hm_module_version(f->a), 4);
  assert_true(hmt_wait_until(hmt_retired_zero, f->reg, 20.0));
}

/* A group whose member fails changes nothing: versions, calls, mapped copies and files as
 * before, one REJECTED naming the member; and by the time it returns nothing of it is left
 * (`files`: the private copies there are before it and after, at once). */
static void refused(fx *f, const char *build_a, const char *build_b, int err,
                    const char *member, int files) {
  hm_module *both[2];
  const char *builds[2];
  int before = rejects(f), maps;
  assert_int_equal(hmt_count_files(hm_registry_dir(f->reg)), files);
  maps = hmt_mapped_copies(f->reg);
  both[0] = f->a;
  both[1] = f->b;
  builds[0] = build_a;
  builds[1] = build_b;
  assert_int_equal(hm_registry_reload_group(f->reg, both, builds, 2), err);
  assert_int_equal(hmt_count_files(hm_registry_dir(f->reg)), files);
  assert_non_null(strstr(hm_errmsg(), "group reload of a, b: "));
  assert_int_equal(hm_module_version(f->a), 1);
  assert_int_equal(hm_module_version(f->b), 1);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 11);
  assert_int_equal(rejects(f), before + 1);
  pthread_mutex_lock(&f->ev.mu);
  assert_int_equal(f->ev.reject_err, err);
  assert_non_null(strstr(f->ev.reject, member));
  pthread_mutex_unlock(&f->ev.mu);
  assert_int_equal(hmt_count_files(hm_registry_dir(f->reg)), files);
  assert_int_equal(hmt_mapped_copies(f->reg), maps);
  assert_string_equal(hm_module_path(f->b), hmt_mod("pb_v1"));
}

static void t_refusing_member(void **state) {
  fx *f = *state;
  char *dir = hmt_tmpdir(), *half;
  size_t len;
  unsigned char *buf = hmt_read(hmt_mod("pb_v2"), &len);
  hm_live *value;
  /* a's load hook refuses. */
  refused(f, hmt_mod("pa_v5_refuse"), hmt_mod("pb_v2"), HM_EHOOK, "a: load hook", 2);
  /* b's load hook accepted (and took a handle on a's incoming version), then a's refused:
   * b's is undone; the order does not matter. */
  {
    hm_module *ba[2] = {f->b, f->a};
    const char *builds[2] = {hmt_mod("pb_v2"), hmt_mod("pa_v5_refuse")};
    assert_int_equal(hm_registry_reload_group(f->reg, ba, builds, 2), HM_EHOOK);
    assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 11);
  }
  /* b's new build lacks value(), which the host's handle needs. */
  assert_int_equal(hm_live_get(f->reg, "b:value", &value), 0);
  refused(f, hmt_mod("pa_v2"), hmt_mod("pb_v4_novalue"), HM_ENOSYM, "b: ", 2);
  /* b's file is cut short. */
  half = strdup(hmt_path(dir, "pb_half.so"));
  hmt_write(half, buf, len / 2);
  refused(f, hmt_mod("pa_v2"), half, HM_EBADELF, "b: ", 2);
  /* A module outside the group holds a typed handle on b:value: it constrains the group. */
  assert_int_equal(hm_module_load(f->reg, "c", hmt_mod("pa_v1"), NULL), 0);
  refused(f, hmt_mod("pa_v2"), hmt_mod("pb_v2"), HM_ESIG, "int(void)", 3);
  free(buf);
  free(half);
  hmt_rm_rf(dir);
  free(dir);
}

/* ---- No mixed pair ---------------------------------------------------------------------- */

typedef struct stress {
  fx *f;
  hm_live *span;
  int stop;
  long calls, mixed, spans, straddled;
} stress;

static void *call_entry(void *arg) {
  stress *s = arg;
  long calls = 0, mixed = 0;
  while (!__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST)) {
    int r = HM_LIVE_CALL(s->f->entry, ifn);
    mixed += r != 11 && r != 22;
    calls++;
  }
  __atomic_add_fetch(&s->calls, calls, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&s->mixed, mixed, __ATOMIC_SEQ_CST);
  return NULL;
}

/* span() calls b twice, 2 ms apart: both answers must be its own version's partner. */
static void *call_span(void *arg) {
  stress *s = arg;
  long mixed = 0;
  while (!__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST)) {
    unsigned before = hm_module_version(s->f->a), after;
    int r = HM_LIVE_CALL(s->span, ifn), av = r / 1000000, first = r / 1000 % 1000,
        second = r % 1000;
    after = hm_module_version(s->f->a);
    s->spans++;
    s->straddled += before != after;
    mixed += (av != 1 && av != 2) || first != av || second != av;
  }
  __atomic_add_fetch(&s->mixed, mixed, __ATOMIC_SEQ_CST);
  return NULL;
}

static void t_no_mixed_pair(void **state) {
  fx *f = *state;
  stress s;
  pthread_t t[3];
  hm_module *both[2] = {f->a, f->b};
  const char *v1[2], *v2[2];
  long i, n = hmt_scaled(400);
  memset(&s, 0, sizeof s);
  s.f = f;
  v1[0] = strdup(hmt_mod("pa_v1"));
  v1[1] = strdup(hmt_mod("pb_v1"));
  v2[0] = strdup(hmt_mod("pa_v2"));
  v2[1] = strdup(hmt_mod("pb_v2"));
  assert_int_equal(hm_live_get(f->reg, "a:span", &s.span), 0);
  /* b's first load came before a's: a group gives it its handle on a. */
  assert_int_equal(hm_registry_reload_group(f->reg, both, v1, 2), 0);
  assert_int_equal(pthread_create(&t[0], NULL, call_entry, &s), 0);
  assert_int_equal(pthread_create(&t[1], NULL, call_entry, &s), 0);
  assert_int_equal(pthread_create(&t[2], NULL, call_span, &s), 0);
  for (i = 0; i < n; i++) {
    struct timespec ms = {0, 1000000};
    assert_int_equal(hm_registry_reload_group(f->reg, both, i % 2 ? v1 : v2, 2), 0);
    nanosleep(&ms, NULL); /* let spans start inside each version */
  }
  __atomic_store_n(&s.stop, 1, __ATOMIC_SEQ_CST);
  for (i = 0; i < 3; i++)
    pthread_join(t[i], NULL);
  print_message("# %ld group reloads under %ld calls and %ld spans (%ld across a switch): "
                "%ld mixed\n",
                n, s.calls, s.spans, s.straddled, s.mixed);
  assert_int_equal(s.mixed, 0);
  assert_true(s.calls > 0 && s.spans > 0);
  /* a and b call each other: their retired versions still let each other go. */
  assert_true(hmt_wait_until(hmt_retired_zero, f->reg, 20.0));
  /* a, b, and the copy each keeps for rollback. */
  assert_int_equal(hmt_count_files(hm_registry_dir(f->reg)), 4);
  for (i = 0; i < 2; i++) {
    free((char *)v1[i]);
    free((char *)v2[i]);
  }
}

/* A snapshot of a's old version keeps calling the b it called, across the group switch. */
static void t_snapshot_keeps_pair(void **state) {
  fx *f = *state;
  hm_module *both[2] = {f->a, f->b};
  const char *v2[2];
  hm_snapshot *old;
  v2[0] = hmt_mod("pa_v2");
  v2[1] = hmt_mod("pb_v2");
  assert_int_equal(hm_snapshot_acquire(f->reg, "a:entry", &old), 0);
  assert_int_equal(hm_registry_reload_group(f->reg, both, v2, 2), 0);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 22);
  assert_int_equal(((ifn)hm_snapshot_fn(old))(), 11);
  hm_snapshot_release(old);
  assert_true(hmt_wait_until(hmt_retired_zero, f->reg, 20.0));
}

/* Rollback of a group: back to the versions that were current together; alone, b's rollback
 * is refused (a's current version holds b:value as long(void)). */
static void t_rollback_group(void **state) {
  fx *f = *state;
  hm_module *both[2] = {f->a, f->b};
  const char *v2[2];
  int files;
  v2[0] = hmt_mod("pa_v2");
  v2[1] = hmt_mod("pb_v2");
  assert_int_equal(hm_registry_reload_group(f->reg, both, v2, 2), 0);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 22);
  assert_int_equal(hm_module_rollback(f->b), HM_ESIG);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 22);
  assert_int_equal(hm_registry_rollback_group(f->reg, both, 2), 0);
  assert_int_equal(hm_module_version(f->a), 3);
  assert_int_equal(hm_module_version(f->b), 3);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 11);
  /* Nothing further back; and nothing changes for asking. */
  assert_int_equal(hm_registry_rollback_group(f->reg, both, 2), HM_ENOPREV);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 11);
  assert_true(hmt_wait_until(hmt_retired_zero, f->reg, 20.0));
  /* Just a and b: a rollback keeps no copy of the build it left. */
  files = hmt_count_files(hm_registry_dir(f->reg));
  assert_int_equal(files, 2);
  assert_int_equal(hmt_mapped_copies(f->reg), 2);
  /* The watcher would take the files at the paths (v2) as no change; a group reload of
   * them goes forward again. */
  assert_int_equal(hm_registry_reload_group(f->reg, both, NULL, 2), 0);
  assert_int_equal(HM_LIVE_CALL(f->entry, ifn), 22);
}

/* What a group of two costs beside two single reloads (printed, not asserted). */
static int cmp_ll(const void *x, const void *y) {
  long long a = *(const long long *)x, b = *(const long long *)y;
  return a < b ? -1 : a > b;
}

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void t_group_cost(void **state) {
  fx *f = *state;
  hm_module *both[2] = {f->a, f->b};
  enum { N = 101 };
  long long g[N], two[N];
  int i;
  for (i = 0; i < N; i++) {
    long long t0 = now_ns(), t1;
    assert_int_equal(hm_registry_reload_group(f->reg, both, NULL, 2), 0);
    t1 = now_ns();
    assert_int_equal(hm_module_reload(f->b), 0);
    assert_int_equal(hm_module_reload(f->a), 0);
    two[i] = now_ns() - t1;
    g[i] = t1 - t0;
  }
  qsort(g, N, sizeof g[0], cmp_ll);
  qsort(two, N, sizeof two[0], cmp_ll);
  print_message("# group of 2: %lld us p50; two single reloads: %lld us p50\n", g[N / 2] / 1000,
                two[N / 2] / 1000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_type_change_as_group, setup, teardown),
      cmocka_unit_test_setup_teardown(t_refusing_member, setup, teardown),
      cmocka_unit_test_setup_teardown(t_no_mixed_pair, setup, teardown),
      cmocka_unit_test_setup_teardown(t_snapshot_keeps_pair, setup, teardown),
      cmocka_unit_test_setup_teardown(t_rollback_group, setup, teardown),
      cmocka_unit_test_setup_teardown(t_group_cost, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
