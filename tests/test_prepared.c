/* Prepared reloads (HM_RELOAD_QUEUED): the watcher reads, checks, copies and dlopens a new
 * build on its own thread, resolves the live slots and checks their signatures; the host's
 * hm_registry_poll runs only the hooks and the publish. A build that fails preparation is
 * REJECTED from the watcher's thread; a prepared build that a newer one, an explicit
 * reload or an unload supersedes is discarded.
 *
 * The module "sq" is tests/modules/reentrant.c (its constructor, destructor and load hook
 * call the hmt_in_* functions this program exports), square.c (v3 lacks bonus()) or sig.c
 * (v3 declares my_function float(float), v1 double(double)). No assertion is about time:
 * the watcher's work is awaited with wt_sync or a polled deadline. */
#include "watchutil.h"

#include "hotmod/module.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NV 8
static pid_t g_main_tid;
static pid_t g_ctor_tid[NV], g_load_tid[NV]; /* atomic: who ran version n's code, 0: none */
static int g_dtor[NV];                       /* atomic: times version n's destructor ran */
static pid_t g_dtor_tid[NV];                 /* atomic: who ran version n's destructor */
static int g_hold;    /* atomic: the constructor of this version waits while it is set */
static int g_holding; /* atomic: that constructor is waiting */
static int g_refuse;  /* atomic: the load hook of this version refuses it */

static pid_t tid(void) { return (pid_t)syscall(SYS_gettid); }

void hmt_in_constructor(int version);
void hmt_in_destructor(int version);
int hmt_in_load_hook(int version);
void hmt_in_unload_hook(int version);

static int released(void *arg) {
  (void)arg;
  return __atomic_load_n(&g_hold, __ATOMIC_SEQ_CST) == 0;
}

void hmt_in_constructor(int version) {
  if (version > 0 && version < NV)
    __atomic_store_n(&g_ctor_tid[version], tid(), __ATOMIC_SEQ_CST);
  if (version == __atomic_load_n(&g_hold, __ATOMIC_SEQ_CST)) {
    __atomic_store_n(&g_holding, 1, __ATOMIC_SEQ_CST);
    (void)hmt_wait_until(released, NULL, WT_DEADLINE); /* bounded, should the test fail */
    __atomic_store_n(&g_holding, 0, __ATOMIC_SEQ_CST);
  }
}
void hmt_in_destructor(int version) {
  if (version > 0 && version < NV) {
    __atomic_store_n(&g_dtor_tid[version], tid(), __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&g_dtor[version], 1, __ATOMIC_SEQ_CST);
  }
}
int hmt_in_load_hook(int version) {
  if (version > 0 && version < NV)
    __atomic_store_n(&g_load_tid[version], tid(), __ATOMIC_SEQ_CST);
  return version == __atomic_load_n(&g_refuse, __ATOMIC_SEQ_CST) ? -1 : HM_LOAD_CONVERTED;
}
void hmt_in_unload_hook(int version) { (void)version; }

static int setup(void **state) {
  memset(g_ctor_tid, 0, sizeof g_ctor_tid);
  memset(g_load_tid, 0, sizeof g_load_tid);
  memset(g_dtor, 0, sizeof g_dtor);
  memset(g_dtor_tid, 0, sizeof g_dtor_tid);
  g_hold = g_holding = g_refuse = 0;
  g_main_tid = tid();
  *state = wt_new(HM_RELOAD_QUEUED, 0, 0);
  return 0;
}

static int teardown(void **state) {
  wt_free(*state);
  return 0;
}

typedef struct ran {
  pid_t *who;
  int n;
} ran;

static int has_run(void *arg) {
  ran *r = arg;
  return __atomic_load_n(&r->who[r->n], __ATOMIC_SEQ_CST) != 0;
}

static int dtor_count(int n) { return __atomic_load_n(&g_dtor[n], __ATOMIC_SEQ_CST); }

static int v1_unloaded(void *arg) {
  (void)arg;
  return dtor_count(1) == 1;
}

/* Load and constructors on the watcher's thread; the load hook and the publish on the thread
 * that polls. Before the poll the new build is loaded but nothing serves it. */
static void t_prepared_on_the_watcher_thread(void **state) {
  wt *f = *state;
  ran ctor2 = {g_ctor_tid, 2};
  wt_load(f, hmt_mod("reentrant_v1"));
  assert_int_equal(g_ctor_tid[1], g_main_tid);
  wt_start(f);
  hmt_install(hmt_mod("reentrant_v2"), f->path);
  assert_true(hmt_wait_until(has_run, &ctor2, WT_DEADLINE));
  wt_sync(f);
  assert_int_not_equal(g_ctor_tid[2], g_main_tid);
  assert_int_equal(g_load_tid[2], 0);
  assert_int_equal(hm_module_version(f->mod), 1);
  assert_int_equal(wt_live(f->live), 1);
  assert_int_equal(wt_count(f, HM_EVENT_LOADED), 1);
  assert_int_equal(hm_registry_poll(f->reg), 1);
  assert_int_equal(g_load_tid[2], g_main_tid);
  assert_int_equal(hm_module_version(f->mod), 2);
  assert_int_equal(wt_live(f->live), 2);
  assert_int_equal(wt_count(f, HM_EVENT_LOADED), 2);
  assert_int_equal(wt_count(f, HM_EVENT_RETIRED), 1);
  assert_int_equal(dtor_count(2), 0);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  /* The version it replaced is retired and, once no call is in it, unloaded. */
  assert_true(hmt_wait_until(v1_unloaded, NULL, WT_DEADLINE));
  assert_int_equal(hm_module_rollback(f->mod), 0);
  assert_int_equal(wt_live(f->live), 1);
}

/* reentrant v1 loaded and watched, v2 installed and prepared (its constructor ran). */
/* Load `first` as sq, start the watcher, install `next` and wait until it is prepared. */
static void prepare(wt *f, const char *first, const char *next) {
  wt_load(f, hmt_mod(first));
  wt_start(f);
  hmt_install(hmt_mod(next), f->path);
  wt_wait_count(f, HM_EVENT_CHANGED, 1);
  wt_sync(f);
}

static void prepare_v2(wt *f) {
  prepare(f, "reentrant_v1", "reentrant_v2");
  assert_int_not_equal(g_ctor_tid[2], 0);
}

/* A newer build replaces the prepared one, which is unloaded by the watcher: one publish. */
static void t_prepared_superseded(void **state) {
  wt *f = *state;
  prepare_v2(f);
  hmt_install(hmt_mod("reentrant_v3"), f->path);
  wt_wait_count(f, HM_EVENT_CHANGED, 2);
  wt_sync(f);
  assert_int_equal(dtor_count(2), 1); /* discarded before any poll */
  assert_int_equal(g_load_tid[2], 0);
  assert_int_equal(hm_registry_poll(f->reg), 1);
  assert_int_equal(wt_live(f->live), 3);
  assert_int_equal(hm_module_version(f->mod), 2);
  assert_int_equal(wt_count(f, HM_EVENT_LOADED), 2);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 0);
}

/* A build lacking a symbol a live handle uses is refused by the watcher: REJECTED with no
 * poll, and nothing for the poll to do. */
static void t_prepare_refused_on_the_watcher_thread(void **state) {
  wt *f = *state;
  hm_live *bonus = NULL;
  wt_load(f, hmt_mod("square_v1"));
  assert_int_equal(hm_live_get(f->reg, "sq:bonus", &bonus), 0);
  wt_start(f);
  hmt_install(hmt_mod("square_v3"), f->path);
  wt_wait_count(f, HM_EVENT_REJECTED, 1);
  pthread_mutex_lock(&f->log.mu);
  assert_int_equal(f->log.last_err, HM_ENOSYM);
  assert_non_null(strstr(f->log.last_reject, "bonus"));
  pthread_mutex_unlock(&f->log.mu);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(wt_live(f->live), 1);
  assert_int_equal(HM_LIVE_CALL(bonus, int (*)(void)), 101);
}

/* Slots taken after the preparation are resolved by the poll: present, they serve the new
 * version; missing, the poll refuses the build and the old version keeps serving. */
static void t_slot_added_after_preparation(void **state) {
  wt *f = *state;
  hm_live *bonus = NULL;
  prepare(f, "square_v1", "square_v2");
  assert_int_equal(hm_live_get(f->reg, "sq:bonus", &bonus), 0);
  assert_int_equal(HM_LIVE_CALL(bonus, int (*)(void)), 101);
  assert_int_equal(hm_registry_poll(f->reg), 1);
  assert_int_equal(HM_LIVE_CALL(bonus, int (*)(void)), 102);
  assert_int_equal(wt_live(f->live), 2);
}

/* v3 lacks bonus(), which no live handle used when the watcher prepared it. */
static void t_slot_missing_after_preparation(void **state) {
  wt *f = *state;
  hm_live *bonus = NULL;
  prepare(f, "square_v1", "square_v3");
  assert_int_equal(hm_live_get(f->reg, "sq:bonus", &bonus), 0);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 0);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 1);
  pthread_mutex_lock(&f->log.mu);
  assert_int_equal(f->log.last_err, HM_ENOSYM);
  pthread_mutex_unlock(&f->log.mu);
  assert_int_equal(HM_LIVE_CALL(bonus, int (*)(void)), 101);
  assert_int_equal(wt_live(f->live), 1);
  assert_int_equal(hm_module_version(f->mod), 1);
}

/* An explicit reload or an unload after the preparation: the prepared build is dropped. */
static void t_prepared_then_explicit_reload_or_unload(void **state) {
  wt *f = *state;
  prepare_v2(f);
  assert_int_equal(hm_module_reload(f->mod), 0); /* the same file: v2, loaded again */
  assert_int_equal(wt_live(f->live), 2);
  assert_int_equal(dtor_count(2), 1); /* the prepared copy */
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(hm_module_version(f->mod), 2);
  hmt_install(hmt_mod("reentrant_v3"), f->path);
  wt_wait_count(f, HM_EVENT_CHANGED, 2);
  wt_sync(f);
  assert_int_not_equal(g_ctor_tid[3], 0);
  assert_int_equal(hm_module_unload(f->mod), 0);
  assert_int_equal(dtor_count(3), 1);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(hm_module_version(f->mod), 0);
  assert_int_equal(g_load_tid[3], 0);
}

/* Freed with a prepared build waiting: it is unloaded (ASan and valgrind see no leak). */
static void t_free_with_prepared(void **state) {
  wt *f = *state;
  prepare_v2(f);
  assert_int_equal(dtor_count(2), 0);
  hm_registry_free(f->reg);
  f->reg = NULL;
  assert_int_equal(dtor_count(2), 1);
  assert_int_equal(g_load_tid[2], 0);
}

/* The file goes back to the current version's bytes: nothing is left to publish, and the
 * prepared build is unloaded. */
static void t_prepared_file_back_to_current(void **state) {
  wt *f = *state;
  prepare_v2(f);
  hmt_install(hmt_mod("reentrant_v1"), f->path);
  wt_sync(f);
  assert_int_equal(dtor_count(2), 1);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(hm_module_version(f->mod), 1);
  assert_int_equal(wt_live(f->live), 1);
  assert_int_equal(g_load_tid[2], 0);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 0);
}

/* How many mappings of module sq's private copies the process has. */
static int sq_maps(wt *f) {
  char needle[4200];
  snprintf(needle, sizeof needle, "%s/sq.", hm_registry_dir(f->reg));
  return hmt_maps_count(needle);
}

typedef double (*dfn)(double);

/* A typed handle whose new build declares another signature: the watcher refuses it at
 * once with HM_ESIG (the file's own bytes decide: a retry cannot help), unloads it, and
 * leaves nothing for the poll. */
static void signature_refused(wt *f) {
  hm_live *fn = NULL;
  int maps;
  wt_load(f, hmt_mod("sig_v1"));
  assert_int_equal(hm_live_get_typed(f->reg, "sq:my_function", "double(double)", &fn), 0);
  wt_start(f);
  maps = sq_maps(f);
  assert_true(maps > 0);
  hmt_install(hmt_mod("sig_v3"), f->path);
  wt_wait_count(f, HM_EVENT_REJECTED, 1);
  assert_int_equal(wt_count(f, HM_EVENT_CHANGED), 1); /* refused on its first try */
  pthread_mutex_lock(&f->log.mu);
  assert_int_equal(f->log.last_err, HM_ESIG);
  assert_non_null(strstr(f->log.last_reject, "my_function"));
  assert_non_null(strstr(f->log.last_reject, "float(float)"));
  pthread_mutex_unlock(&f->log.mu);
  assert_int_equal(sq_maps(f), maps); /* the refused build is unloaded */
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(hm_module_version(f->mod), 1);
  assert_true(HM_LIVE_CALL(fn, dfn, 2.0) == 2.0);
}

static void t_prepare_signature_refused(void **state) { signature_refused(*state); }

/* The same refusal in immediate mode (no preparation): at once too. */
static void t_immediate_signature_refused(void **state) {
  wt *f = wt_new(HM_RELOAD_IMMEDIATE, 0, 0);
  (void)state;
  signature_refused(f);
  wt_free(f);
}

/* A handle typed after the preparation: the poll checks it and refuses a build that
 * declares another signature, REJECTED from the poll with HM_ESIG; the old version serves. */
static void t_slot_typed_after_preparation(void **state) {
  wt *f = *state;
  hm_live *fn = NULL, *typed = NULL;
  wt_load(f, hmt_mod("sig_v1"));
  assert_int_equal(hm_live_get(f->reg, "sq:my_function", &fn), 0);
  wt_start(f);
  hmt_install(hmt_mod("sig_v3"), f->path); /* declares float(float): no handle is typed yet */
  wt_wait_count(f, HM_EVENT_CHANGED, 1);
  wt_sync(f);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 0);
  assert_int_equal(hm_live_get_typed(f->reg, "sq:my_function", "double(double)", &typed), 0);
  assert_ptr_equal(typed, fn);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 1);
  pthread_mutex_lock(&f->log.mu);
  assert_int_equal(f->log.last_err, HM_ESIG);
  pthread_mutex_unlock(&f->log.mu);
  assert_int_equal(hm_module_version(f->mod), 1);
  assert_true(HM_LIVE_CALL(fn, dfn, 2.0) == 2.0);
  assert_int_equal(hm_registry_poll(f->reg), 0);
}

/* The poll never waits for a load: while the watcher is inside a newer build's dlopen (its
 * constructor held here), the poll leaves the module for the next one, which publishes the
 * newer build. */
static void t_poll_does_not_wait_for_a_preparation(void **state) {
  wt *f = *state;
  ran ctor3 = {g_ctor_tid, 3};
  prepare_v2(f);
  __atomic_store_n(&g_hold, 3, __ATOMIC_SEQ_CST);
  hmt_install(hmt_mod("reentrant_v3"), f->path);
  assert_true(hmt_wait_until(has_run, &ctor3, WT_DEADLINE));
  assert_int_equal(hm_registry_poll(f->reg), 0);
  assert_int_equal(__atomic_load_n(&g_holding, __ATOMIC_SEQ_CST), 1); /* still in dlopen */
  assert_int_equal(wt_live(f->live), 1);
  __atomic_store_n(&g_hold, 0, __ATOMIC_SEQ_CST);
  wt_sync(f);
  assert_int_equal(dtor_count(2), 1); /* superseded */
  assert_int_equal(hm_registry_poll(f->reg), 1);
  assert_int_equal(wt_live(f->live), 3);
  assert_int_equal(g_load_tid[2], 0);
}

/* Another module, "other" (reentrant v4), is being loaded on a thread of its own, its
 * constructor held inside dlopen: the dynamic loader's lock stays taken until the test lets
 * it go. */
static void *load_other(void *arg) {
  wt *f = arg;
  char path[4200];
  hm_module *m;
  snprintf(path, sizeof path, "%s/other.so", f->tmp);
  hmt_install(hmt_mod("reentrant_v4"), path);
  return (void *)(long)hm_module_load(f->reg, "other", path, &m);
}

static int holding(void *arg) {
  (void)arg;
  return __atomic_load_n(&g_holding, __ATOMIC_SEQ_CST);
}

static void hold_other(wt *f, pthread_t *t) {
  __atomic_store_n(&g_hold, 4, __ATOMIC_SEQ_CST);
  assert_int_equal(pthread_create(t, NULL, load_other, f), 0);
  assert_true(hmt_wait_until(holding, NULL, WT_DEADLINE));
}

static void release_other(pthread_t t) {
  void *rc;
  __atomic_store_n(&g_hold, 0, __ATOMIC_SEQ_CST);
  pthread_join(t, &rc);
  assert_int_equal((long)rc, 0);
}

/* The poll publishes while another module's constructor runs: resolving the slot taken
 * since the preparation does not wait for the loader's lock (it used dlsym). */
static void t_poll_does_not_wait_for_another_constructor(void **state) {
  wt *f = *state;
  hm_live *twice = NULL;
  pthread_t t;
  int got, polled, held;
  prepare_v2(f);
  hold_other(f, &t);
  got = hm_live_get(f->reg, "sq:twice", &twice);
  polled = hm_registry_poll(f->reg);
  held = holding(NULL); /* still inside the other module's dlopen */
  release_other(t);
  assert_int_equal(got, 0);
  assert_int_equal(polled, 1);
  assert_int_equal(held, 1);
  assert_int_equal(wt_live(f->live), 2);
  assert_int_equal(HM_LIVE_CALL(twice, int (*)(void)), 4);
}

static int v2_destroyed(void *arg) {
  (void)arg;
  return dtor_count(2) == 1;
}

/* A build the poll refuses (its load hook says no) is unloaded off the poller's thread:
 * dlclose waits for the loader's lock, which another module's constructor holds. */
static void t_poll_refusal_does_not_wait_for_another_constructor(void **state) {
  wt *f = *state;
  pthread_t t;
  int polled, held, early;
  __atomic_store_n(&g_refuse, 2, __ATOMIC_SEQ_CST);
  prepare_v2(f);
  hold_other(f, &t);
  polled = hm_registry_poll(f->reg);
  held = holding(NULL);
  early = dtor_count(2); /* 0: its dlclose waits for the loader, on another thread */
  release_other(t);
  assert_int_equal(polled, 0);
  assert_int_equal(held, 1);
  assert_int_equal(early, 0);
  assert_int_equal(wt_count(f, HM_EVENT_REJECTED), 1);
  pthread_mutex_lock(&f->log.mu);
  assert_int_equal(f->log.last_err, HM_EHOOK);
  pthread_mutex_unlock(&f->log.mu);
  assert_int_equal(g_load_tid[2], g_main_tid);
  assert_int_equal(wt_live(f->live), 1);
  /* The refused build goes once the loader is free, on the registry's reclaimer thread. */
  assert_true(hmt_wait_until(v2_destroyed, NULL, WT_DEADLINE));
  assert_int_not_equal(__atomic_load_n(&g_dtor_tid[2], __ATOMIC_SEQ_CST), g_main_tid);
  assert_int_equal(hm_module_version(f->mod), 1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(t_prepared_on_the_watcher_thread),
      T(t_prepared_superseded),
      T(t_prepare_refused_on_the_watcher_thread),
      T(t_slot_added_after_preparation),
      T(t_slot_missing_after_preparation),
      T(t_prepared_then_explicit_reload_or_unload),
      T(t_free_with_prepared),
      T(t_prepared_file_back_to_current),
      T(t_prepare_signature_refused),
      cmocka_unit_test(t_immediate_signature_refused),
      T(t_slot_typed_after_preparation),
      T(t_poll_does_not_wait_for_a_preparation),
      T(t_poll_does_not_wait_for_another_constructor),
      T(t_poll_refusal_does_not_wait_for_another_constructor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
