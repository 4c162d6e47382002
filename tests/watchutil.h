/* Helpers shared by the watcher tests (test_watch.c, test_builds.c): a registry whose events
 * are logged, a watched module "sq" whose symbol version() says which build it is, and a way
 * to know the watcher has dealt with everything that happened so far.
 *
 * No assertion is about time. Positive checks poll with generous deadlines. "Nothing
 * happens" checks call wt_sync first: it installs a new build of a canary module in a
 * directory of its own and waits for the watcher to load it. One inotify descriptor carries
 * every event in order and the watcher decides on each read before the next, so once the
 * canary is loaded, every earlier change has been decided on. */
#ifndef HM_TEST_WATCHUTIL_H
#define HM_TEST_WATCHUTIL_H

#include "util.h"

#include <pthread.h>

/* Generous: sanitizer and valgrind builds are slow. */
#define WT_DEADLINE 30.0

#define WT_MAX_BUILDS 256

typedef struct wt_log {
  hm_registry *reg;
  int counts[16];         /* per hm_event, for module "sq" only; atomic */
  pthread_mutex_t mu;     /* everything below */
  int builds[WT_MAX_BUILDS]; /* version() of each version of "sq" that became current */
  int nbuilds;
  int last_err;           /* err of the last REJECTED */
  char last_reject[1024]; /* hm_errmsg() inside the callback of the last REJECTED */
  int build_err;          /* the last BUILD_SUCCEEDED or BUILD_FAILED: its err, */
  int build_status;       /* hm_event_build()'s status */
  char build_output[8192]; /* and its output (hm_event_detail()) */
  int watch_err;           /* err of the last WATCH_FAILED, */
  char watch_detail[1024]; /* and its hm_event_detail() */
  int stop_on_changed;    /* atomic: the callback stops the watcher on CHANGED */
  int restart_on_changed; /* atomic: ... and starts it again */
} wt_log;

typedef struct wt {
  char *src;  /* the watched module's directory, standing in for a build's output */
  char *tmp;  /* builds made by the test, and scratch */
  char *cdir; /* the canary's directory */
  char path[4096]; /* src/sq.so: the watched module's file */
  char canary_path[4096];
  hm_registry *reg;
  wt_log log;
  hm_module *mod;
  hm_live *live; /* sq:version */
  hm_module *canary;
  int canary_next;
} wt;

/* A registry with the test's event callback, the canary loaded and watched in immediate
 * mode; `quiet_ms`/`settle_ms` 0 for the defaults. The watcher is not started. */
wt *wt_new(hm_reload_mode mode, unsigned quiet_ms, unsigned settle_ms);
/* The same with the watcher's wait for a group's builds (hm_registry_options.group_ms). */
wt *wt_new_group(hm_reload_mode mode, unsigned group_ms);
/* The same with the registry's allocator hook (NULL: the C library's). */
wt *wt_new_alloc(hm_reload_mode mode, unsigned quiet_ms, unsigned settle_ms, hm_alloc_fn alloc,
                 void *alloc_userdata);
void wt_free(wt *f);

/* Install `build` (a test module file, e.g. hmt_mod("square_v1")) as sq, load it and take
 * the live handle sq:version. */
void wt_load(wt *f, const char *build);
/* Start the watcher and wait until it watches sq and the canary. */
void wt_start(wt *f);
/* Wait until the watcher watches sq (if loaded) and the canary. */
void wt_wait_watched(wt *f);
/* Wait until the watcher has decided on everything that happened before this call. */
void wt_sync(wt *f);

int wt_live(hm_live *l); /* version() through the handle, -1 if unloaded */
void wt_wait_live(hm_live *live, int want);
int wt_count(wt *f, hm_event ev);
void wt_wait_count(wt *f, hm_event ev, int atleast);
int wt_nbuilds(wt *f);
/* After a replacement: the live handle reaches `want`, and after a sync exactly one more
 * version and one more LOADED than before, with `want` the last build loaded. */
void wt_expect_one_new(wt *f, unsigned before, int loads_before, int want);

/* An allocator hook (wt_new_alloc) that fails allocations made off the test's thread (by
 * the watcher's, in these tests) once armed: the fail_at-th of them, or every one while
 * fail_all is set. Start from zeroes, with test_thread set. */
typedef struct wt_faulty {
  pthread_t test_thread;
  int armed, fail_all; /* atomic */
  int seen;            /* atomic: allocations off the test's thread since armed */
  int fail_at;
} wt_faulty;
void *wt_faulty_alloc(void *p, size_t n, void *ud);
/* A fixture (immediate mode) whose allocations go through `fa` (initialised here, not
 * armed, failing its fail_at-th allocation once armed), with sq build 1 loaded. */
wt *wt_new_faulty(wt_faulty *fa, int fail_at);

/* Copy src over dest in place, as cp does: truncate, write, close. */
void wt_cp_over(const char *src, const char *dest);
void wt_sleep_ms(long ms);
/* Run a command (argv[0] looked up in PATH); its exit status, -1 if it did not run. Output
 * goes to the test's stderr. */
int wt_run(char *const argv[]);
/* 1 if the C compiler can link a shared object with -fuse-ld=<ld>. */
int wt_have_linker(const char *cc, const char *ld);

#endif
