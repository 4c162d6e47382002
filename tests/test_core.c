/* Core behaviour: the three reload behaviours, I3, private copies, failures that change
 * nothing (I5), hooks and state (I6), unloading of retired versions. */
#include "util.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef double (*dfn)(double);
typedef int (*ifn)(void);

typedef struct fixture {
  char *src;        /* a directory standing in for a build's output */
  hm_registry *reg;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->src = hmt_tmpdir();
  f->reg = hmt_registry(0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  hm_registry_free(f->reg);
  hmt_rm_rf(f->src);
  free(f->src);
  free(f);
  return 0;
}

static const char *src_path(fixture *f, const char *name) { return hmt_path(f->src, name); }

/* Put module `file` (e.g. "square_v1") at the fixture's source path `name`.so and load it. */
static hm_module *load_as(fixture *f, const char *modname, const char *file) {
  hm_module *mod = NULL;
  char dest[4096];
  snprintf(dest, sizeof dest, "%s/%s.so", f->src, modname);
  hmt_install(hmt_mod(file), dest);
  assert_int_equal(hm_module_load(f->reg, modname, dest, &mod), 0);
  assert_non_null(mod);
  return mod;
}

static void rebuild(fixture *f, const char *modname, const char *file) {
  char dest[4096];
  snprintf(dest, sizeof dest, "%s/%s.so", f->src, modname);
  hmt_install(hmt_mod(file), dest);
}

static double live_d(hm_live *l, double x) { return HM_LIVE_CALL(l, dfn, x); }
static int live_i(hm_live *l) { return HM_LIVE_CALL(l, ifn); }

typedef struct dir_wait {
  const char *dir;
  int files;
} dir_wait;

static int dir_has(void *arg) {
  dir_wait *w = arg;
  return hmt_count_files(w->dir) == w->files;
}

/* Wait (generously) for the registry's private directory to hold exactly n copies. */
static int wait_copies(hm_registry *reg, int n) {
  dir_wait w = {hm_registry_dir(reg), n};
  return hmt_wait_until(dir_has, &w, 10.0);
}

/* Distinct private-copy paths that /proc/self/maps shows for this registry. */
static int mapped_distinct(hm_registry *reg) {
  FILE *fp = fopen("/proc/self/maps", "r");
  char line[4096], seen[16][512];
  int n = 0, i;
  const char *dir = hm_registry_dir(reg);
  assert_non_null(fp);
  while (fgets(line, sizeof line, fp) != NULL) {
    char *p = strstr(line, dir);
    if (p == NULL)
      continue;
    p[strcspn(p, "\n")] = '\0';
    for (i = 0; i < n; i++)
      if (strcmp(seen[i], p) == 0)
        break;
    if (i == n && n < 16)
      snprintf(seen[n++], sizeof seen[0], "%s", p);
  }
  fclose(fp);
  return n;
}

typedef struct maps_wait {
  hm_registry *reg;
  int n;
} maps_wait;

static int maps_has(void *arg) {
  maps_wait *w = arg;
  return mapped_distinct(w->reg) == w->n;
}

static int wait_mapped(hm_registry *reg, int n) {
  maps_wait w = {reg, n};
  return hmt_wait_until(maps_has, &w, 10.0);
}

/* (1) Calling through the module after a reload runs the new version. */
static void test_live_follows_reload(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1");
  hm_live *live;
  assert_int_equal(hm_live_get(f->reg, "sq:my_function", &live), 0);
  assert_true(live_d(live, 2.0) == 4.0);
  assert_int_equal(hm_module_version(mod), 1);

  rebuild(f, "sq", "square_v2");
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(hm_module_version(mod), 2);
  assert_true(fabs(live_d(live, 2.0) - sqrt(2.0)) < 1e-12);
  /* The same name gives the same handle. */
  {
    hm_live *again;
    assert_int_equal(hm_live_get(f->reg, "sq:my_function", &again), 0);
    assert_ptr_equal(again, live);
  }
  assert_ptr_equal(hm_live_module(live), mod);
}

/* (2) A snapshot taken before the reload keeps the old code until released. */
static void test_snapshot_pins_version(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1");
  hm_snapshot *before, *after;
  int i;

  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:my_function", &before), 0);
  assert_int_equal(hm_snapshot_version(before), 1);
  rebuild(f, "sq", "square_v2");
  for (i = 0; i < 3; i++)
    assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(hm_module_version(mod), 4);
  assert_true(((dfn)hm_snapshot_fn(before))(2.0) == 4.0);
  assert_int_equal(hm_snapshot_version(before), 1);

  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:my_function", &after), 0);
  assert_int_equal(hm_snapshot_version(after), 4);
  assert_true(fabs(((dfn)hm_snapshot_fn(after))(2.0) - sqrt(2.0)) < 1e-12);

  /* v1 stays mapped while pinned; versions 2 and 3 had no pins and go away (v3's copy stays
   * in the private directory: the one kept for rollback). */
  assert_true(wait_mapped(f->reg, 2));
  assert_true(wait_copies(f->reg, 3));
  assert_true(((dfn)hm_snapshot_fn(before))(3.0) == 9.0);
  hm_snapshot_release(before);
  assert_true(wait_mapped(f->reg, 1));
  assert_true(wait_copies(f->reg, 2));
  hm_snapshot_release(after);
  hm_snapshot_release(NULL);
  /* The current version stays loaded without pins. */
  assert_int_equal(mapped_distinct(f->reg), 1);
}

/* (3) A plain module's globals start fresh in each version. */
static void test_plain_state_resets(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1");
  hm_live *next;
  hm_snapshot *old;
  assert_int_equal(hm_live_get(f->reg, "sq:counter_next", &next), 0);
  assert_int_equal(live_i(next), 1);
  assert_int_equal(live_i(next), 2);
  assert_int_equal(live_i(next), 3);
  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:counter_next", &old), 0);

  rebuild(f, "sq", "square_v2");
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(live_i(next), 1);
  assert_int_equal(live_i(next), 2);
  /* The old version's state is its own, untouched by the new one. */
  assert_int_equal(((ifn)hm_snapshot_fn(old))(), 4);
  hm_snapshot_release(old);

  /* Even reloading identical bytes gives a fresh copy with fresh globals. */
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(hm_module_version(mod), 3);
  assert_int_equal(live_i(next), 1);
}

/* I3: a version's calls to its own exported functions stay inside that version. */
static void test_calls_stay_in_version(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "chain", "chain_v1");
  hm_snapshot *v1;
  hm_live *entry;
  assert_int_equal(hm_snapshot_acquire(f->reg, "chain:entry", &v1), 0);
  assert_int_equal(hm_live_get(f->reg, "chain:entry", &entry), 0);
  assert_int_equal(((ifn)hm_snapshot_fn(v1))(), 11);

  rebuild(f, "chain", "chain_v2");
  assert_int_equal(hm_module_reload(mod), 0);
  /* v1's entry reaches v1's helper (10 + 1), v2's entry reaches v2's helper (20 + 2). */
  assert_int_equal(((ifn)hm_snapshot_fn(v1))(), 11);
  assert_int_equal(live_i(entry), 22);
  hm_snapshot_release(v1);
}

/* Each version is loaded from its own private copy; the source can change freely. */
static void test_private_copies(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1");
  const char *dir = hm_registry_dir(f->reg);
  struct stat st;
  hm_live *live;
  size_t len;
  unsigned char *v2 = hmt_read(hmt_mod("square_v2"), &len);
  char *dircopy = strdup(dir);

  assert_int_equal(stat(dir, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(st.st_mode & 0777, 0700);
  assert_int_equal(hmt_count_files(dir), 1);
  /* The source itself is never mapped; the copy is. */
  assert_int_equal(hmt_maps_count(src_path(f, "sq.so")), 0);
  assert_int_equal(mapped_distinct(f->reg), 1);

  assert_int_equal(hm_live_get(f->reg, "sq:my_function", &live), 0);
  /* Rewrite the source in place (same inode, same path string): the loaded code is safe... */
  hmt_write(src_path(f, "sq.so"), "garbage", 7);
  assert_true(live_d(live, 3.0) == 9.0);
  /* ...and the next load of that same path and inode is really the new code, not a stale
   * handle that dlopen would return for a path or inode it already knows. */
  hmt_write(src_path(f, "sq.so"), v2, len);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_true(fabs(live_d(live, 9.0) - 3.0) < 1e-12);
  free(v2);

  hm_registry_free(f->reg);
  f->reg = NULL;
  assert_int_equal(stat(dircopy, &st), -1);
  assert_int_equal(hmt_maps_count(dircopy), 0);
  free(dircopy);
}

/* All live handles of a module switch together, and a failed reload moves none of them. */
static void test_handles_switch_together(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1");
  hm_live *fn, *ver, *bonus;
  assert_int_equal(hm_live_get(f->reg, "sq:my_function", &fn), 0);
  assert_int_equal(hm_live_get(f->reg, "sq:version", &ver), 0);
  assert_int_equal(hm_live_get(f->reg, "sq:bonus", &bonus), 0);
  assert_int_equal(live_i(ver), 1);
  assert_int_equal(live_i(bonus), 101);

  rebuild(f, "sq", "square_v2");
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(live_i(ver), 2);
  assert_int_equal(live_i(bonus), 102);
  assert_true(fabs(live_d(fn, 4.0) - 2.0) < 1e-12);

  /* v3 lacks bonus(), which a live handle uses: rejected as a whole. */
  rebuild(f, "sq", "square_v3");
  assert_int_equal(hm_module_reload(mod), HM_ENOSYM);
  assert_non_null(strstr(hm_registry_errmsg(f->reg), "bonus"));
  assert_non_null(strstr(hm_registry_errmsg(f->reg), src_path(f, "sq.so")));
  assert_int_equal(hm_module_version(mod), 2);
  assert_int_equal(live_i(ver), 2);
  assert_int_equal(live_i(bonus), 102);
  assert_true(fabs(live_d(fn, 4.0) - 2.0) < 1e-12);
  assert_true(wait_copies(f->reg, 2)); /* the current copy and the one kept for rollback */
}

/* A symbol no live handle uses may disappear. */
static void test_unused_symbol_may_go(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1");
  hm_live *ver, *bonus;
  assert_int_equal(hm_live_get(f->reg, "sq:version", &ver), 0);
  rebuild(f, "sq", "square_v3");
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(live_i(ver), 3);
  assert_int_equal(hm_live_get(f->reg, "sq:bonus", &bonus), HM_ENOSYM);
  assert_null(bonus);
}

typedef struct bad_case {
  const char *what;
  int expect;
} bad_case;

/* I5: each bad file is refused with its code and a message naming the path, and the old
 * version keeps serving every handle. */
static void check_bad_file(fixture *f, hm_module *mod, hm_live *live, hm_snapshot *snap,
                           int expect, const char *needle) {
  hm_stats before, after;
  assert_int_equal(hm_registry_stats(f->reg, &before), 0);
  assert_int_equal(hm_module_reload(mod), expect);
  assert_non_null(strstr(hm_registry_errmsg(f->reg), src_path(f, "sq.so")));
  if (needle != NULL)
    assert_non_null(strstr(hm_registry_errmsg(f->reg), needle));
  assert_int_equal(hm_registry_stats(f->reg, &after), 0);
  assert_int_equal(after.rejects, before.rejects + 1);
  assert_int_equal(after.loads, before.loads);
  assert_int_equal(hm_module_version(mod), 1);
  assert_true(live_d(live, 5.0) == 25.0);
  assert_true(((dfn)hm_snapshot_fn(snap))(6.0) == 36.0);
  /* Nothing is left behind in the private directory. */
  assert_int_equal(hmt_count_files(hm_registry_dir(f->reg)), 1);
}

static void test_bad_files_change_nothing(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1");
  const char *p = src_path(f, "sq.so");
  hm_live *live;
  hm_snapshot *snap;
  size_t len;
  unsigned char *v2 = hmt_read(hmt_mod("square_v2"), &len);
  char pbuf[4096];
  snprintf(pbuf, sizeof pbuf, "%s", p);

  assert_int_equal(hm_live_get(f->reg, "sq:my_function", &live), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:my_function", &snap), 0);

  unlink(pbuf);
  check_bad_file(f, mod, live, snap, HM_ENOENT, "No such file");

  hmt_write(pbuf, "#!/bin/sh\necho not a library\n", 29);
  check_bad_file(f, mod, live, snap, HM_ENOTELF, NULL);

  hmt_write(pbuf, "", 0);
  check_bad_file(f, mod, live, snap, HM_EBADELF, NULL);

  /* Truncated builds: dlopen would die of SIGBUS on these; the check refuses them first. */
  hmt_write(pbuf, v2, 4096);
  check_bad_file(f, mod, live, snap, HM_EBADELF, NULL);
  hmt_write(pbuf, v2, len / 2);
  check_bad_file(f, mod, live, snap, HM_EBADELF, NULL);
  hmt_write(pbuf, v2, len - 1);
  check_bad_file(f, mod, live, snap, HM_EBADELF, NULL);

  /* A complete shared object, but for another machine (e_machine patched to AArch64 or,
   * on AArch64, to x86-64). */
  {
    unsigned char *other = malloc(len);
    uint16_t machine;
    memcpy(other, v2, len);
    memcpy(&machine, other + 18, sizeof machine);
    machine = machine == 183 ? 62 : 183;
    memcpy(other + 18, &machine, sizeof machine);
    hmt_write(pbuf, other, len);
    check_bad_file(f, mod, live, snap, HM_ENOTELF, NULL);
    free(other);
  }

  /* A directory where the file should be. */
  unlink(pbuf);
  assert_int_equal(mkdir(pbuf, 0755), 0);
  check_bad_file(f, mod, live, snap, HM_ENOTELF, NULL);
  rmdir(pbuf);

  /* Writable by anyone: refused unless the host allows it. */
  hmt_write(pbuf, v2, len);
  chmod(pbuf, 0777);
  check_bad_file(f, mod, live, snap, HM_EACCES, "writable");
  chmod(pbuf, 0755);

  /* After all that, a good file loads. */
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(hm_module_version(mod), 2);
  assert_true(live_d(live, 16.0) == 4.0);
  assert_true(((dfn)hm_snapshot_fn(snap))(6.0) == 36.0);
  hm_snapshot_release(snap);
  free(v2);
}

static void test_allow_writable(void **state) {
  fixture *f = *state;
  hm_registry *reg = hmt_registry(HM_FLAG_ALLOW_WRITABLE);
  const char *p = src_path(f, "w.so");
  char pbuf[4096];
  snprintf(pbuf, sizeof pbuf, "%s", p);
  hmt_install(hmt_mod("square_v1"), pbuf);
  chmod(pbuf, 0777);
  assert_int_equal(hm_module_load(f->reg, "w", pbuf, NULL), HM_EACCES);
  assert_int_equal(hm_module_load(reg, "w", pbuf, NULL), 0);
  hm_registry_free(reg);
}

/* I6: a module with a descriptor hands its state over; a failing hook changes nothing. */
static void test_state_handover_and_hooks(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "st", "stateful_v1");
  hm_live *bump, *gens, *ver;
  assert_int_equal(hm_live_get(f->reg, "st:bump", &bump), 0);
  assert_int_equal(hm_live_get(f->reg, "st:generations", &gens), 0);
  assert_int_equal(hm_live_get(f->reg, "st:version", &ver), 0);
  assert_int_equal(live_i(bump), 1);
  assert_int_equal(live_i(bump), 2);
  assert_int_equal(live_i(gens), 1);

  rebuild(f, "st", "stateful_v2");
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(live_i(ver), 2);
  assert_int_equal(live_i(bump), 3);
  assert_int_equal(live_i(gens), 2);

  rebuild(f, "st", "stateful_v9_failload");
  assert_int_equal(hm_module_reload(mod), HM_EHOOK);
  assert_non_null(strstr(hm_registry_errmsg(f->reg), "load hook"));
  assert_int_equal(live_i(ver), 2);
  assert_int_equal(live_i(bump), 4);
  assert_int_equal(live_i(gens), 2);

  rebuild(f, "st", "stateful_v8_badabi");
  assert_int_equal(hm_module_reload(mod), HM_EABI);
  assert_int_equal(live_i(ver), 2);
  assert_int_equal(live_i(bump), 5);

  rebuild(f, "st", "stateful_v3");
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(live_i(ver), 3);
  assert_int_equal(live_i(bump), 6);
  assert_int_equal(live_i(gens), 3);
  assert_true(wait_copies(f->reg, 2)); /* the current copy and the one kept for rollback */
}

typedef struct ev_log {
  int n;
  hm_event ev[64];
  unsigned ver[64];
  int err[64];
} ev_log;

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  ev_log *l = ud;
  (void)mod;
  if (l->n < 64) {
    l->ev[l->n] = ev;
    l->ver[l->n] = version;
    l->err[l->n] = err;
    __atomic_add_fetch(&l->n, 1, __ATOMIC_SEQ_CST);
  }
}

static int has_unloaded(void *arg) {
  ev_log *l = arg;
  int i, n = __atomic_load_n(&l->n, __ATOMIC_SEQ_CST);
  for (i = 0; i < n; i++)
    if (l->ev[i] == HM_EVENT_UNLOADED && l->ver[i] == 1)
      return 1;
  return 0;
}

static void test_events(void **state) {
  fixture *f = *state;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  ev_log log;
  hm_module *mod;
  char pbuf[4096];
  memset(&log, 0, sizeof log);
  o.on_event = on_event;
  o.event_userdata = &log;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  snprintf(pbuf, sizeof pbuf, "%s", src_path(f, "ev.so"));
  hmt_install(hmt_mod("square_v1"), pbuf);
  assert_int_equal(hm_module_load(reg, "ev", pbuf, &mod), 0);
  assert_int_equal(log.ev[0], HM_EVENT_LOADED);
  assert_int_equal(log.ver[0], 1);
  hmt_write(pbuf, "nope", 4);
  assert_int_equal(hm_module_reload(mod), HM_ENOTELF);
  assert_int_equal(log.ev[1], HM_EVENT_REJECTED);
  assert_int_equal(log.err[1], HM_ENOTELF);
  hmt_install(hmt_mod("square_v2"), pbuf);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(log.ev[2], HM_EVENT_LOADED);
  assert_int_equal(log.ver[2], 2);
  assert_int_equal(log.ev[3], HM_EVENT_RETIRED);
  assert_int_equal(log.ver[3], 1);
  assert_true(hmt_wait_until(has_unloaded, &log, 10.0));
  hm_registry_free(reg);
}

static void test_unload_and_revive(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1"), *found;
  hm_live *ver;
  hm_snapshot *snap;
  assert_int_equal(hm_live_get(f->reg, "sq:version", &ver), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:version", &snap), 0);
  assert_int_equal(hm_module_unload(mod), 0);
  assert_int_equal(hm_module_unload(mod), HM_ENOMOD);
  assert_int_equal(hm_module_version(mod), 0);
  assert_null(hm_live_enter(ver));
  hm_live_leave(ver);
  assert_int_equal(hm_module_find(f->reg, "sq", &found), HM_ENOMOD);
  assert_int_equal(hm_module_reload(mod), HM_ENOMOD);
  assert_int_equal(hm_live_get(f->reg, "sq:my_function", &ver), HM_ENOMOD);
  /* The snapshot still works until released. */
  assert_int_equal(((ifn)hm_snapshot_fn(snap))(), 1);
  hm_snapshot_release(snap);
  assert_true(wait_copies(f->reg, 0));
  assert_true(wait_mapped(f->reg, 0));

  /* Loading the name again brings the module back, live handles included. */
  rebuild(f, "sq", "square_v2");
  assert_int_equal(hm_module_load(f->reg, "sq", src_path(f, "sq.so"), &found), 0);
  assert_ptr_equal(found, mod);
  assert_int_equal(hm_module_version(mod), 2);
  assert_int_equal(hm_live_get(f->reg, "sq:version", &ver), 0);
  assert_int_equal(live_i(ver), 2);
}

static void test_bad_arguments(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1"), *m2;
  hm_snapshot *s;
  hm_live *l;
  hm_registry *r;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;

  assert_int_equal(hm_registry_new(NULL, NULL), HM_EINVAL);
  o.version = 99;
  assert_int_equal(hm_registry_new(&r, &o), HM_EINVAL);
  assert_null(r);
  assert_int_equal(hm_module_load(NULL, "a", "b", NULL), HM_EINVAL);
  assert_int_equal(hm_module_load(f->reg, NULL, "b", NULL), HM_EINVAL);
  assert_int_equal(hm_module_load(f->reg, "a:b", "b", NULL), HM_EINVAL);
  assert_int_equal(hm_module_load(f->reg, "", "b", NULL), HM_EINVAL);
  assert_int_equal(hm_module_load(f->reg, "a", "", NULL), HM_EINVAL);
  assert_int_equal(hm_module_load(f->reg, "sq", src_path(f, "sq.so"), &m2), HM_EEXIST);
  assert_null(m2);
  assert_int_equal(hm_module_load(f->reg, "other", "/nonexistent/x.so", NULL), HM_ENOENT);
  assert_non_null(strstr(hm_registry_errmsg(f->reg), "/nonexistent/x.so"));
  assert_int_equal(hm_module_find(f->reg, "other", &m2), HM_ENOMOD);
  assert_int_equal(hm_module_find(f->reg, "sq", &m2), 0);
  assert_ptr_equal(m2, mod);
  assert_int_equal(hm_module_find(NULL, "sq", &m2), HM_EINVAL);
  assert_int_equal(hm_module_reload(NULL), HM_EINVAL);
  assert_int_equal(hm_module_reload_from(mod, NULL), HM_EINVAL);
  assert_int_equal(hm_module_unload(NULL), HM_EINVAL);
  assert_int_equal(hm_module_version(NULL), 0);
  assert_null(hm_module_name(NULL));
  assert_string_equal(hm_module_name(mod), "sq");

  assert_int_equal(hm_snapshot_acquire(f->reg, "nocolon", &s), HM_EINVAL);
  assert_null(s);
  assert_int_equal(hm_snapshot_acquire(f->reg, ":x", &s), HM_EINVAL);
  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:", &s), HM_EINVAL);
  assert_int_equal(hm_snapshot_acquire(f->reg, NULL, &s), HM_EINVAL);
  assert_int_equal(hm_snapshot_acquire(f->reg, "nomod:x", &s), HM_ENOMOD);
  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:nosuch", &s), HM_ENOSYM);
  assert_non_null(strstr(hm_registry_errmsg(f->reg), "nosuch"));
  assert_int_equal(hm_snapshot_acquire(NULL, "sq:version", &s), HM_EINVAL);
  assert_null(hm_snapshot_fn(NULL));
  assert_int_equal(hm_snapshot_version(NULL), 0);
  assert_int_equal(hm_live_get(f->reg, "sq:nosuch", &l), HM_ENOSYM);
  assert_null(l);
  assert_int_equal(hm_live_get(f->reg, "nomod:x", &l), HM_ENOMOD);
  assert_int_equal(hm_live_get(f->reg, "x", &l), HM_EINVAL);
  assert_int_equal(hm_live_get(NULL, "sq:version", &l), HM_EINVAL);
  assert_string_equal(hm_registry_errmsg(NULL), hm_strerror(HM_EINVAL));
  assert_int_equal(hm_registry_stats(NULL, NULL), HM_EINVAL);
  hm_registry_free(NULL);
}

static void test_error_table(void **state) {
  static const int codes[] = {HM_EINVAL,  HM_ENOMEM,  HM_ENOENT,  HM_EACCES, HM_EEXIST,
                              HM_EIO,     HM_EAGAIN,  HM_EBUSY,   HM_EALREADY,
                              HM_ENOTELF, HM_EBADELF, HM_EDLOPEN, HM_ENOMOD, HM_ENOSYM,
                              HM_EHOOK,   HM_EABI,    HM_EFORKED};
  size_t i, j;
  (void)state;
  for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    assert_true(codes[i] < 0);
    assert_string_not_equal(hm_strerror(codes[i]), "unknown error");
    assert_string_not_equal(hm_err_name(codes[i]), "HM_UNKNOWN");
    for (j = 0; j < i; j++)
      assert_int_not_equal(codes[i], codes[j]);
  }
  assert_int_equal(HM_ENOENT, -ENOENT);
  assert_string_equal(hm_err_name(HM_ENOSYM), "HM_ENOSYM");
  assert_string_equal(hm_strerror(12345), "unknown error");
  assert_string_equal(hm_err_name(12345), "HM_UNKNOWN");
  /* errno values outside the table are passed through and named by the C library. */
  assert_string_equal(hm_strerror(-EROFS), strerror(EROFS));
  assert_string_equal(hm_strerror(-ENOTDIR), strerror(ENOTDIR));
  assert_string_equal(hm_strerror(-ENAMETOOLONG), strerror(ENAMETOOLONG));
  assert_string_equal(hm_err_name(-EROFS), "EROFS");
  assert_int_equal(hm_version(), HM_VERSION_HEX);
  assert_non_null(hm_version_string());
}

/* Every code of the table: a negative value of its own, its own non-empty text and its own
 * name. Generated from HM_ERRNO_MAP, so a code added there is checked without editing this. */
static void test_error_texts_distinct(void **state) {
  static const struct {
    int code;
    const char *name, *text;
  } table[] = {
#define HMT_ERR_ROW(name, value, text) {HM_##name, "HM_" #name, text},
      HM_ERRNO_MAP(HMT_ERR_ROW)
#undef HMT_ERR_ROW
  };
  size_t i, j, n = sizeof table / sizeof table[0];
  (void)state;
  for (i = 0; i < n; i++) {
    const char *text = hm_strerror(table[i].code);
    assert_true(table[i].code < 0);
    assert_non_null(text);
    assert_true(text[0] != '\0');
    assert_string_equal(text, table[i].text);
    assert_string_equal(hm_err_name(table[i].code), table[i].name);
    for (j = 0; j < i; j++) {
      assert_int_not_equal(table[i].code, table[j].code);
      assert_string_not_equal(text, hm_strerror(table[j].code));
    }
  }
  assert_string_equal(hm_strerror(0), "success");
  assert_string_equal(hm_err_name(0), "HM_OK");
}

/* NULL in every pointer argument of the API (beyond test_bad_arguments): HM_EINVAL, 0, NULL
 * or a no-op as hotmod.h says, never a crash. */
static void test_null_arguments(void **state) {
  fixture *f = *state;
  hm_module *mod = load_as(f, "sq", "square_v1"), *m2 = mod;
  hm_snapshot *s = (hm_snapshot *)1;
  hm_live *l = (hm_live *)1;
  hm_stats st;

  assert_int_equal(hm_module_find(f->reg, NULL, &m2), HM_EINVAL);
  assert_null(m2);
  assert_int_equal(hm_module_find(f->reg, "sq", NULL), HM_EINVAL);
  assert_int_equal(hm_module_load(f->reg, "a", NULL, NULL), HM_EINVAL);
  assert_int_equal(hm_module_reload_from(NULL, "/x.so"), HM_EINVAL);
  assert_int_equal(hm_module_rollback(NULL), HM_EINVAL);
  assert_int_equal(hm_module_set_lint(NULL, HM_LINT_OFF), HM_EINVAL);
  assert_int_equal(hm_module_set_probe(NULL, 0), HM_EINVAL);
  assert_int_equal(hm_module_set_reload_mode(NULL, HM_RELOAD_QUEUED), HM_EINVAL);
  assert_null(hm_module_path(NULL));
  assert_int_equal(hm_module_watch_method(NULL), HM_WATCH_NONE);

  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:version", NULL), HM_EINVAL);
  assert_int_equal(hm_snapshot_acquire_typed(f->reg, "sq:version", NULL, &s), HM_EINVAL);
  assert_null(s);
  s = (hm_snapshot *)1;
  assert_int_equal(hm_snapshot_acquire_typed(NULL, "sq:version", "int(void)", &s), HM_EINVAL);
  assert_null(s);
  assert_int_equal(hm_snapshot_acquire_typed(f->reg, NULL, "int(void)", &s), HM_EINVAL);
  assert_int_equal(hm_snapshot_acquire_typed(f->reg, "sq:version", "int(void)", NULL),
                   HM_EINVAL);
  hm_snapshot_release(NULL);

  assert_int_equal(hm_live_get(f->reg, NULL, &l), HM_EINVAL);
  assert_null(l);
  assert_int_equal(hm_live_get(f->reg, "sq:version", NULL), HM_EINVAL);
  l = (hm_live *)1;
  assert_int_equal(hm_live_get_typed(f->reg, "sq:version", NULL, &l), HM_EINVAL);
  assert_null(l);
  assert_int_equal(hm_live_get_typed(NULL, "sq:version", "int(void)", &l), HM_EINVAL);
  assert_int_equal(hm_live_get_typed(f->reg, NULL, "int(void)", &l), HM_EINVAL);
  assert_int_equal(hm_live_get_typed(f->reg, "sq:version", "int(void)", NULL), HM_EINVAL);
  assert_null(hm_live_module(NULL));
  assert_null(hm_live_enter_fn(NULL));
  hm_live_leave_fn(NULL);

  assert_null(hm_registry_dir(NULL));
  assert_int_equal(hm_registry_stats(f->reg, NULL), HM_EINVAL);
  assert_int_equal(hm_registry_stats_get(f->reg, &st, 0), HM_EINVAL);
  assert_int_equal(hm_registry_stats_get(NULL, &st, sizeof st), HM_EINVAL);
  assert_int_equal(hm_registry_poll(NULL), HM_EINVAL);
  assert_int_equal(hm_watch_start(NULL), HM_EINVAL);
  hm_watch_stop(NULL);
  hm_watch_stop(f->reg); /* no watcher: a no-op */
  assert_non_null(hm_errmsg());
  assert_non_null(hm_event_detail());
  assert_string_equal(hm_event_detail(), ""); /* outside a callback */

  /* Nothing above changed the module. */
  assert_int_equal(hm_module_find(f->reg, "sq", &m2), 0);
  assert_ptr_equal(m2, mod);
  assert_int_equal(hm_module_version(mod), 1);
}

/* The allocator hook sees every allocation, and everything is given back. */
typedef struct counting {
  long live;
  long calls;
} counting;

static void *count_alloc(void *ptr, size_t size, void *ud) {
  counting *c = ud;
  __atomic_add_fetch(&c->calls, 1, __ATOMIC_RELAXED);
  if (ptr != NULL)
    __atomic_sub_fetch(&c->live, 1, __ATOMIC_RELAXED);
  if (size == 0) {
    free(ptr);
    return NULL;
  }
  ptr = realloc(ptr, size);
  if (ptr != NULL)
    __atomic_add_fetch(&c->live, 1, __ATOMIC_RELAXED);
  return ptr;
}

static int no_retired(void *arg) {
  hm_stats st;
  return hm_registry_stats(arg, &st) == 0 && st.retired == 0;
}

static void test_allocator_hook(void **state) {
  fixture *f = *state;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  counting c = {0, 0};
  hm_module *mod;
  hm_live *l;
  hm_snapshot *s;
  char pbuf[4096];
  o.alloc = count_alloc;
  o.alloc_userdata = &c;
  o.flags = HM_FLAG_QUIET;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  snprintf(pbuf, sizeof pbuf, "%s", src_path(f, "al.so"));
  hmt_install(hmt_mod("square_v1"), pbuf);
  assert_int_equal(hm_module_load(reg, "al", pbuf, &mod), 0);
  assert_int_equal(hm_live_get(reg, "al:version", &l), 0);
  assert_int_equal(hm_snapshot_acquire(reg, "al:version", &s), 0);
  hmt_install(hmt_mod("square_v2"), pbuf);
  assert_int_equal(hm_module_reload(mod), 0);
  hm_snapshot_release(s);
  assert_true(__atomic_load_n(&c.calls, __ATOMIC_RELAXED) > 5);
  /* Failed loads leave nothing behind, however many names they try. */
  {
    long before;
    int i;
    assert_true(hmt_wait_until(no_retired, reg, 10.0));
    before = __atomic_load_n(&c.live, __ATOMIC_RELAXED);
    for (i = 0; i < 50; i++) {
      char name[32];
      snprintf(name, sizeof name, "missing%d", i);
      assert_int_equal(hm_module_load(reg, name, "/nonexistent/m.so", NULL), HM_ENOENT);
    }
    assert_int_equal(__atomic_load_n(&c.live, __ATOMIC_RELAXED), before);
    /* And a name whose first load failed can be loaded later. */
    assert_int_equal(hm_module_load(reg, "missing7", pbuf, NULL), 0);
    assert_int_equal(hm_live_get(reg, "missing7:version", &l), 0);
    assert_int_equal(HM_LIVE_CALL(l, ifn), 2);
  }
  hm_registry_free(reg);
  assert_int_equal(__atomic_load_n(&c.live, __ATOMIC_RELAXED), 0);
}

/* A version that dlclose cannot unmap (-z nodelete) is reported, not pretended away. */
static int leak_seen(void *arg) {
  ev_log *l = arg;
  int i, n = __atomic_load_n(&l->n, __ATOMIC_SEQ_CST);
  for (i = 0; i < n; i++)
    if (l->ev[i] == HM_EVENT_LEAKED && l->ver[i] == 1)
      return 1;
  return 0;
}

static void test_leak_detected(void **state) {
  fixture *f = *state;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  hm_module *mod;
  hm_stats st;
  ev_log log;
  char pbuf[4096];
  memset(&log, 0, sizeof log);
  o.on_event = on_event;
  o.event_userdata = &log;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  snprintf(pbuf, sizeof pbuf, "%s", src_path(f, "sticky.so"));
  hmt_install(hmt_mod("sticky_v1"), pbuf);
  assert_int_equal(hm_module_load(reg, "sticky", pbuf, &mod), 0);
  hmt_install(hmt_mod("sticky_v2"), pbuf);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_true(hmt_wait_until(leak_seen, &log, 10.0));
  assert_int_equal(hm_registry_stats(reg, &st), 0);
  assert_int_equal(st.leaked, 1);
  assert_int_equal(st.retired, 0);
  /* The current copy, and the leaked version's, kept for rollback. */
  assert_int_equal(hmt_count_files(hm_registry_dir(reg)), 2);
  hm_registry_free(reg);
}

/* Every name the validation accepts (1-255 characters) loads and reloads past the
 * thousandth copy: the copy's file name ("NAME.SEQ.so") used to pass NAME_MAX, at once for
 * 251-255 characters (ENAMETOOLONG) and from the 999th, 99th or 9th copy for 248-250. */
static void test_long_names(void **state) {
  fixture *f = *state;
  static const size_t lens[] = {200, 248, 249, 250, 251, 254, 255};
  hm_module *mods[sizeof lens / sizeof lens[0]];
  hm_live *l;
  char name[300];
  size_t i;
  long k, n = hmt_scaled(1000);
  for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    memset(name, 'a' + (int)i, lens[i]);
    name[lens[i]] = '\0';
    assert_int_equal(hm_module_load(f->reg, name, hmt_mod("square_v1"), &mods[i]), 0);
  }
  memset(name, 'x', 256);
  name[256] = '\0';
  assert_int_equal(hm_module_load(f->reg, name, hmt_mod("square_v1"), NULL), HM_EINVAL);
  /* The copies' sequence numbers are the registry's: past 1000 whichever module reloads. */
  for (k = 0; k < n; k++) {
    i = (size_t)k % (sizeof lens / sizeof lens[0]);
    if (hm_module_reload_from(mods[i], hmt_mod(k % 2 ? "square_v1" : "square_v2")) != 0)
      fail_msg("reload %ld of the %zu-character name: %s", k, lens[i], hm_errmsg());
  }
  memset(name, 'a', lens[0]);
  snprintf(name + lens[0], sizeof name - lens[0], ":version");
  assert_int_equal(hm_live_get(f->reg, name, &l), 0);
  assert_int_equal(HM_LIVE_CALL(l, ifn), hm_module_version(mods[0]) % 2 ? 1 : 2);
}

/* ---- Relative paths ----------------------------------------------------------------------- */

/* f->src/name, made, with `mod` (e.g. "square_v1") in it as mod.so; its path into out[n]. */
static void make_release(fixture *f, const char *name, const char *mod, char *out, size_t n) {
  snprintf(out, n, "%s/%s", f->src, name);
  assert_int_equal(mkdir(out, 0755), 0);
  hmt_install(hmt_mod(mod), hmt_path(out, "mod.so"));
}

static int version_of(hm_registry *reg, hm_module *mod) {
  hm_snapshot *s = NULL;
  char q[300];
  int v;
  snprintf(q, sizeof q, "%s:version", hm_module_name(mod));
  assert_int_equal(hm_snapshot_acquire(reg, q, &s), 0);
  v = ((ifn)hm_snapshot_fn(s))();
  hm_snapshot_release(s);
  return v;
}

/* A relative path is the file in the directory current at the load, whatever chdir() the
 * host makes later: hm_module_reload read the new current directory's mod.so (and after
 * chdir("/") failed with HM_ENOENT). hm_module_path stays the path as given;
 * hm_module_reload_from takes its own relative path against the directory of its call. */
static void test_relative_path_kept(void **state) {
  fixture *f = *state;
  char a[4200], b[4200];
  int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  hm_module *mod;
  assert_true(here >= 0);
  make_release(f, "a", "square_v1", a, sizeof a);
  make_release(f, "b", "square_v3", b, sizeof b);
  assert_int_equal(chdir(a), 0);
  assert_int_equal(hm_module_load(f->reg, "rel", "mod.so", &mod), 0);
  assert_string_equal(hm_module_path(mod), "mod.so");
  assert_int_equal(chdir(b), 0);
  hmt_install(hmt_mod("square_v2"), hmt_path(a, "mod.so"));
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(version_of(f->reg, mod), 2);
  assert_int_equal(chdir("/"), 0);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(version_of(f->reg, mod), 2);
  assert_string_equal(hm_module_path(mod), "mod.so");
  /* Moved by reload_from: its relative path goes with the directory of that call. */
  assert_int_equal(chdir(b), 0);
  assert_int_equal(hm_module_reload_from(mod, "./mod.so"), 0);
  assert_int_equal(version_of(f->reg, mod), 3);
  assert_string_equal(hm_module_path(mod), "./mod.so");
  assert_int_equal(chdir(a), 0);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(version_of(f->reg, mod), 3);
  assert_int_equal(fchdir(here), 0);
  close(here);
}

/* The current directory as a shell names it ($PWD, through a symlink), not resolved: a deploy
 * that flips current -> releases/2 is followed by the next reload. */
static void test_relative_path_through_symlinked_cwd(void **state) {
  fixture *f = *state;
  char r1[4200], r2[4200], cur[4200], tmp[4300];
  const char *old_pwd = getenv("PWD");
  char *saved = old_pwd != NULL ? strdup(old_pwd) : NULL;
  int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  hm_module *mod;
  assert_true(here >= 0);
  make_release(f, "r1", "square_v1", r1, sizeof r1);
  make_release(f, "r2", "square_v2", r2, sizeof r2);
  snprintf(cur, sizeof cur, "%s/current", f->src);
  snprintf(tmp, sizeof tmp, "%s/current.new", f->src);
  assert_int_equal(symlink("r1", cur), 0);
  assert_int_equal(chdir(cur), 0);
  assert_int_equal(setenv("PWD", cur, 1), 0); /* as a shell's cd sets it */
  assert_int_equal(hm_module_load(f->reg, "rel", "mod.so", &mod), 0);
  assert_int_equal(version_of(f->reg, mod), 1);
  assert_int_equal(symlink("r2", tmp), 0); /* ln -sfn r2 current */
  assert_int_equal(rename(tmp, cur), 0);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(version_of(f->reg, mod), 2);
  /* A $PWD that is not the current directory (a chdir since) is not taken. */
  assert_int_equal(chdir(r1), 0);
  assert_int_equal(hm_module_reload_from(mod, "mod.so"), 0);
  assert_int_equal(version_of(f->reg, mod), 1);
  if (saved != NULL)
    setenv("PWD", saved, 1);
  else
    unsetenv("PWD");
  free(saved);
  assert_int_equal(fchdir(here), 0);
  close(here);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_live_follows_reload, setup, teardown),
      cmocka_unit_test_setup_teardown(test_snapshot_pins_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_plain_state_resets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_calls_stay_in_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_private_copies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_handles_switch_together, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unused_symbol_may_go, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_files_change_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_allow_writable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_handover_and_hooks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_events, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unload_and_revive, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_names, setup, teardown),
      cmocka_unit_test(test_error_table),
      cmocka_unit_test(test_error_texts_distinct),
      cmocka_unit_test_setup_teardown(test_null_arguments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_allocator_hook, setup, teardown),
      cmocka_unit_test_setup_teardown(test_leak_detected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_relative_path_kept, setup, teardown),
      cmocka_unit_test_setup_teardown(test_relative_path_through_symlinked_cwd, setup,
                                      teardown),
  };
  return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
