/* The reloadability lint, one module per finding (tests/lint/, built by CMake): under "warn"
 * the version loads and an HM_EVENT_WARNING names the finding and its fix; under "reject"
 * (the registry's option, or the module's setter) it is refused with HM_ELINT and the
 * version it was to replace serves on. Clean modules built by hotmod_add_module, C and C++,
 * have no findings, and neither has one that only uses a loaded library's initial-exec TLS. */
#include "util.h"

#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*ifn)(void);

typedef struct lint_case {
  const char *module;  /* the module with the finding: version() returns 2 */
  const char *finding; /* the finding's name */
  const char *fix;     /* a piece of its fix */
  const char *base;    /* a clean module it replaces: version() returns 1 */
} lint_case;

static const lint_case cases[] = {
    {"lint_nodelete", "nodelete", "drop -z nodelete", "lint_clean"},
    {"lint_ietls", "initial-exec-tls", "use the default TLS model", "lint_clean"},
    {"lint_keys", "pthread-keys", "pthread_key_delete", "lint_clean"},
    {"lint_origin", "origin-runpath", "use an absolute RUNPATH", "lint_clean"},
    {"lint_needed", "shared-dependency", "link the library statically", "lint_clean"},
#ifdef HM_TEST_LINT_CXX
    {"lint_tlsdtor", "thread-local-destructors", "avoid thread_local objects with destructors",
     "lint_clean_cxx"},
#endif
#ifdef HM_TEST_LINT_UNIQUE
    {"lint_unique", "unique-symbols", "-fno-gnu-unique", "lint_clean_cxx"},
#endif
};
#define NCASES (sizeof cases / sizeof cases[0])

/* ---- Events ---------------------------------------------------------------------------- */

typedef hmt_events events;

static hm_registry *registry(events *e, hm_lint_policy policy) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  o.lint = policy;
  return hmt_registry_events(e, &o);
}

/* Does `text` name the finding ("(name)") and carry its fix ("fix: ...<fix>...")? */
static int names_finding(const char *text, const lint_case *c) {
  char name[64];
  const char *fix = strstr(text, "; fix: ");
  snprintf(name, sizeof name, "(%s)", c->finding);
  return strstr(text, name) != NULL && fix != NULL && strstr(fix, c->fix) != NULL;
}

/* Warnings that name c's finding. */
static int warnings_for(events *e, const lint_case *c) {
  int i, n = 0;
  pthread_mutex_lock(&e->mu);
  for (i = 0; i < e->nwarn; i++)
    n += names_finding(e->warn[i], c);
  pthread_mutex_unlock(&e->mu);
  return n;
}

static int call_version(hm_live *live) { return HM_LIVE_CALL(live, ifn); }

/* ---- The modules are what the tests take them for ------------------------------------- */

/* The DT_FLAGS of a module's file (0 without). */
static uint64_t dt_flags(const char *path) {
  size_t len;
  unsigned char *buf = hmt_read(path, &len);
  ElfW(Ehdr) eh;
  uint64_t flags = 0;
  unsigned i;
  assert_true(len >= sizeof eh);
  memcpy(&eh, buf, sizeof eh);
  for (i = 0; i < eh.e_phnum; i++) {
    ElfW(Phdr) ph;
    uint64_t off;
    assert_true(eh.e_phoff + (i + 1) * sizeof ph <= len);
    memcpy(&ph, buf + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type != PT_DYNAMIC)
      continue;
    uint64_t end = ph.p_offset + ph.p_filesz < len ? ph.p_offset + ph.p_filesz : len;
    for (off = ph.p_offset; off + sizeof(ElfW(Dyn)) <= end; off += sizeof(ElfW(Dyn))) {
      ElfW(Dyn) d;
      memcpy(&d, buf + off, sizeof d);
      if (d.d_tag == DT_NULL)
        break;
      if (d.d_tag == DT_FLAGS)
        flags = d.d_un.d_val;
    }
  }
  free(buf);
  return flags;
}

/* The initial-exec module is flagged because it defines such TLS, and the module that is not
 * flagged has DF_STATIC_TLS as well (from libhotmod's TLS), so that the test means
 * something. */
static void t_static_tls_flags(void **state) {
  (void)state;
  assert_true(dt_flags(hmt_mod("lint_ietls")) & DF_STATIC_TLS);
  assert_true(dt_flags(hmt_mod("lint_livetls")) & DF_STATIC_TLS);
  assert_false(dt_flags(hmt_mod("lint_clean")) & DF_STATIC_TLS);
}

/* ---- Clean modules --------------------------------------------------------------------- */

static void load_clean(const char *module, int want_version) {
  events e;
  hm_registry *reg = registry(&e, HM_LINT_WARN);
  hm_module *mod;
  hm_live *live;
  assert_int_equal(hm_module_load(reg, "m", hmt_mod(module), &mod), 0);
  assert_int_equal(hm_live_get(reg, "m:version", &live), 0);
  assert_int_equal(call_version(live), want_version);
  if (e.nwarn != 0)
    fprintf(stderr, "%s: unexpected warning: %s\n", module, e.warn[0]);
  assert_int_equal(e.nwarn, 0);
  hmt_registry_events_free(reg, &e);
}

static void t_clean_c(void **state) {
  (void)state;
  load_clean("lint_clean", 1);
}

static void t_clean_cxx(void **state) {
  (void)state;
#ifdef HM_TEST_LINT_CXX
  load_clean("lint_clean_cxx", 1);
#else
  skip();
#endif
}

/* Only references libhotmod's initial-exec TLS (HM_LIVE_CALL), with dynamic TLS of its own. */
static void t_tls_reference_only(void **state) {
  (void)state;
  load_clean("lint_livetls", 2);
}

/* ---- Each finding, under warn and under reject ------------------------------------------ */

/* What each case's test is given: a registry with the policy the test asked for, its events,
 * the clean module c replaces loaded as "m" and a live handle on its version(). */
typedef struct fixture {
  const lint_case *c;
  events e;
  hm_registry *reg;
  hm_module *mod;
  hm_live *live;
} fixture;

static void each_case(hm_lint_policy policy, void (*body)(fixture *f)) {
  size_t i;
  for (i = 0; i < NCASES; i++) {
    fixture f;
    f.c = &cases[i];
    f.reg = registry(&f.e, policy);
    assert_int_equal(hm_module_load(f.reg, "m", hmt_mod(f.c->base), &f.mod), 0);
    assert_int_equal(hm_live_get(f.reg, "m:version", &f.live), 0);
    assert_int_equal(call_version(f.live), 1);
    assert_int_equal(f.e.nwarn, 0);
    body(&f);
    hmt_registry_events_free(f.reg, &f.e);
  }
}

/* Default policy (warn): it loads, replacing the clean version, and one warning per finding
 * names it with its fix. */
static void warns(fixture *f) {
  const lint_case *c = f->c;
  int k;
  assert_int_equal(hm_module_reload_from(f->mod, hmt_mod(c->module)), 0);
  assert_int_equal(call_version(f->live), 2);
  for (k = 0; k < f->e.nwarn; k++)
    fprintf(stderr, "# %s: %s\n", c->module, f->e.warn[k]);
  if (warnings_for(&f->e, c) != 1)
    fail_msg("%s: expected one warning naming %s with its fix", c->module, c->finding);
  assert_non_null(strstr(f->e.warn[0], hmt_mod(c->module)));
}

static void t_warn(void **state) {
  (void)state;
  each_case(HM_LINT_DEFAULT, warns);
}

/* Refused: HM_ELINT with the finding and its fix in the message and the REJECTED event, and
 * the clean version serves on. */
static void expect_refused(fixture *f) {
  const lint_case *c = f->c;
  events *e = &f->e;
  assert_int_equal(hm_module_reload_from(f->mod, hmt_mod(c->module)), HM_ELINT);
  if (!names_finding(hm_errmsg(), c))
    fail_msg("%s: refusal does not name %s with its fix: %s", c->module, c->finding,
             hm_errmsg());
  pthread_mutex_lock(&e->mu);
  assert_int_equal(e->nreject, 1);
  assert_int_equal(e->reject_err, HM_ELINT);
  assert_true(names_finding(e->reject, c));
  assert_int_equal(e->nwarn, 0);
  e->nreject = 0;
  pthread_mutex_unlock(&e->mu);
  assert_int_equal(hm_module_version(f->mod), 1);
  assert_int_equal(call_version(f->live), 1);
  assert_string_equal(hm_module_path(f->mod), hmt_mod(c->base));
}

static void refused_by_registry(fixture *f) {
  hm_module *other = NULL;
  expect_refused(f);
  /* A first load is refused the same way, and leaves no module behind. */
  assert_int_equal(hm_module_load(f->reg, "n", hmt_mod(f->c->module), &other), HM_ELINT);
  assert_true(names_finding(hm_errmsg(), f->c));
  assert_int_equal(hm_module_find(f->reg, "n", &other), HM_ENOMOD);
}

static void t_reject_by_registry(void **state) {
  (void)state;
  each_case(HM_LINT_REJECT, refused_by_registry);
}

static void refused_by_module(fixture *f) {
  assert_int_equal(hm_module_set_lint(f->mod, HM_LINT_REJECT), 0);
  expect_refused(f);
  /* Back to the registry's policy (warn): the same file loads, with its warning. */
  assert_int_equal(hm_module_set_lint(f->mod, HM_LINT_DEFAULT), 0);
  assert_int_equal(hm_module_reload_from(f->mod, hmt_mod(f->c->module)), 0);
  assert_int_equal(call_version(f->live), 2);
  assert_int_equal(warnings_for(&f->e, f->c), 1);
}

static void t_reject_by_module(void **state) {
  (void)state;
  each_case(HM_LINT_WARN, refused_by_module);
}

/* The module's policy wins over the registry's, both ways; "off" does not look. */
static void t_module_policy_wins(void **state) {
  const lint_case *c = &cases[0];
  events e;
  hm_registry *reg = registry(&e, HM_LINT_REJECT);
  hm_module *mod;
  (void)state;
  assert_int_equal(hm_module_load(reg, "m", hmt_mod(c->base), &mod), 0);
  assert_int_equal(hm_module_set_lint(mod, HM_LINT_WARN), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod(c->module)), 0);
  assert_int_equal(warnings_for(&e, c), 1);
  assert_int_equal(hm_module_set_lint(mod, HM_LINT_OFF), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod(c->module)), 0);
  assert_int_equal(hm_module_version(mod), 3);
  assert_int_equal(warnings_for(&e, c), 1);
  assert_int_equal(hm_module_set_lint(mod, (hm_lint_policy)9), HM_EINVAL);
  hmt_registry_events_free(reg, &e);
}

/* ---- A policy per finding ------------------------------------------------------------- */

/* The first set of: the module's for the finding, the module's, the registry's for the
 * finding, the registry's. */
static void t_finding_policy(void **state) {
  const lint_case *keys = &cases[2];
  events e;
  hm_registry *reg = registry(&e, HM_LINT_REJECT);
  hm_module *mod;
  (void)state;
  assert_int_equal(hm_registry_set_lint_finding(reg, "pthread-keys", HM_LINT_WARN), 0);
  assert_int_equal(hm_module_load(reg, "m", hmt_mod("lint_keys"), &mod), 0);
  assert_int_equal(warnings_for(&e, keys), 1);
  /* Other findings follow the registry's policy. */
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("lint_nodelete")), HM_ELINT);
  /* The module's policy wins over the registry's for the finding... */
  assert_int_equal(hm_module_set_lint(mod, HM_LINT_OFF), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("lint_nodelete")), 0);
  /* ...and the module's for the finding over the module's. */
  assert_int_equal(hm_module_set_lint_finding(mod, "pthread-keys", HM_LINT_REJECT), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("lint_keys")), HM_ELINT);
  assert_true(names_finding(hm_errmsg(), keys));
  assert_int_equal(hm_module_set_lint_finding(mod, "pthread-keys", HM_LINT_DEFAULT), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("lint_keys")), 0);
  assert_int_equal(warnings_for(&e, keys), 1);
  /* Names are the findings' own; the message lists them. */
  assert_int_equal(hm_registry_set_lint_finding(reg, "pthread_keys", HM_LINT_WARN), HM_EINVAL);
  assert_non_null(strstr(hm_errmsg(), "rust-std"));
  assert_int_equal(hm_module_set_lint_finding(mod, NULL, HM_LINT_WARN), HM_EINVAL);
  assert_int_equal(hm_module_set_lint_finding(mod, "nodelete", (hm_lint_policy)9), HM_EINVAL);
  assert_int_equal(hm_registry_set_lint_finding(NULL, "nodelete", HM_LINT_WARN), HM_EINVAL);
  assert_int_equal(hm_module_set_lint_finding(NULL, "nodelete", HM_LINT_WARN), HM_EINVAL);
  hmt_registry_events_free(reg, &e);
}

/* ---- One warning per finding and module ------------------------------------------------ */

/* Reloads of a module with the same finding warn once, not per reload (3 warnings for 3
 * loads before); a version without it re-arms the warning. */
static void t_warn_once_per_module(void **state) {
  const lint_case *keys = &cases[2];
  events e;
  hm_registry *reg = registry(&e, HM_LINT_WARN);
  hm_module *mod;
  int k;
  (void)state;
  assert_string_equal(keys->module, "lint_keys");
  assert_int_equal(hm_module_load(reg, "m", hmt_mod("lint_keys"), &mod), 0);
  for (k = 0; k < 2; k++)
    assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(warnings_for(&e, keys), 1);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("lint_clean")), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("lint_keys")), 0);
  assert_int_equal(warnings_for(&e, keys), 2);
  /* Another module with the finding gets its own. */
  assert_int_equal(hm_module_load(reg, "n", hmt_mod("lint_keys"), NULL), 0);
  assert_int_equal(warnings_for(&e, keys), 3);
  assert_int_equal(e.nwarn, 3);
  hmt_registry_events_free(reg, &e);
}

/* ---- Versions that leave key destructors behind ----------------------------------------- */

/* A host thread that stores a value under the module's key (make_key), then waits until it
 * is told to exit. */
typedef struct key_user {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  hm_live *live;
  int rc, stored, leave;
} key_user;

static void *use_key(void *arg) {
  key_user *u = arg;
  int rc = HM_LIVE_CALL(u->live, ifn);
  pthread_mutex_lock(&u->mu);
  u->rc = rc;
  u->stored = 1;
  pthread_cond_broadcast(&u->cv);
  while (!u->leave)
    pthread_cond_wait(&u->cv, &u->mu);
  pthread_mutex_unlock(&u->mu);
  return NULL; /* glibc runs the key's destructor now, in the version that created it */
}

/* The thread stores its value in `module`'s version 1, the module is reloaded (version 2,
 * the same file), and the thread exits once the registry is done with version 1. The events
 * are the caller's to check (the registry is freed). */
static void key_then_exit(events *e, const char *module) {
  hm_registry *reg = registry(e, HM_LINT_WARN);
  hm_module *mod;
  key_user u;
  pthread_t t;
  memset(&u, 0, sizeof u);
  pthread_mutex_init(&u.mu, NULL);
  pthread_cond_init(&u.cv, NULL);
  assert_int_equal(hm_module_load(reg, "m", hmt_mod(module), &mod), 0);
  assert_int_equal(hm_live_get(reg, "m:make_key", &u.live), 0);
  assert_int_equal(pthread_create(&t, NULL, use_key, &u), 0);
  pthread_mutex_lock(&u.mu);
  while (!u.stored)
    pthread_cond_wait(&u.cv, &u.mu);
  pthread_mutex_unlock(&u.mu);
  assert_int_equal(u.rc, 0);
  assert_int_equal(hm_module_reload(mod), 0);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 30));
  pthread_mutex_lock(&e->mu);
  assert_int_equal(e->nleaked + e->nunloaded, 1); /* the registry is done with version 1 */
  pthread_mutex_unlock(&e->mu);
  pthread_mutex_lock(&u.mu);
  u.leave = 1;
  pthread_cond_broadcast(&u.cv);
  pthread_mutex_unlock(&u.mu);
  assert_int_equal(pthread_join(t, NULL), 0);
  hmt_registry_events_free(reg, e);
  pthread_cond_destroy(&u.cv);
  pthread_mutex_destroy(&u.mu);
}

/* The destructor of lint_keys's key stays in its version: before versions with pthread keys
 * were kept mapped, the thread's exit after the unload ran it in unmapped code (SIGSEGV).
 * Now the version stays mapped, said once by LEAKED with its reason and memory. */
static void t_keys_version_kept(void **state) {
  events e;
  (void)state;
  key_then_exit(&e, "lint_keys");
  assert_int_equal(e.nleaked, 2); /* version 2 at the free */
  assert_int_equal(e.nunloaded, 0);
  assert_int_equal(e.leak_why[0], HM_MAPPED_DESTRUCTORS);
  print_message("LEAKED %s\n", e.leak[0]);
  assert_true(strncmp(e.leak[0], hm_mapped_text(HM_MAPPED_DESTRUCTORS),
                      strlen(hm_mapped_text(HM_MAPPED_DESTRUCTORS))) == 0);
  assert_non_null(strstr(e.leak[0], "(pthread-keys)"));
  assert_true(e.leak_bytes[0] > 0);
}

/* A module that deletes its key in its unload hook and declares HM_MODULE_KEYS_DELETED has
 * no finding, and its versions unload: the thread's exit finds no destructor to run. */
static void t_keys_deleted_unloads(void **state) {
  events e;
  (void)state;
  key_then_exit(&e, "lint_keys_deleted");
  assert_int_equal(e.nwarn, 0);
  assert_int_equal(e.nleaked, 0);
  assert_int_equal(e.nunloaded, 2);
}

/* A C++ module has many STB_GNU_UNIQUE symbols, and the warning names them all (up to
 * three, then a count): the first alone does not say which inline functions or templates to
 * look at. lint_unique has two, an inline function's static and a template's static. */
static void t_unique_names_all(void **state) {
  (void)state;
#ifdef HM_TEST_LINT_UNIQUE
  events e;
  hm_registry *reg = registry(&e, HM_LINT_WARN);
  hm_module *mod;
  assert_int_equal(hm_module_load(reg, "m", hmt_mod("lint_unique"), &mod), 0);
  assert_int_equal(e.nwarn, 1);
  fprintf(stderr, "# %s\n", e.warn[0]);
  assert_non_null(strstr(e.warn[0], "2 STB_GNU_UNIQUE symbols"));
  assert_non_null(strstr(e.warn[0], "_ZZ14inline_countervE1n"));
  assert_non_null(strstr(e.warn[0], "_ZN5tallyIiE1nE"));
  hmt_registry_events_free(reg, &e);
#else
  skip();
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_static_tls_flags),   cmocka_unit_test(t_clean_c),
      cmocka_unit_test(t_clean_cxx),          cmocka_unit_test(t_tls_reference_only),
      cmocka_unit_test(t_warn),               cmocka_unit_test(t_reject_by_registry),
      cmocka_unit_test(t_reject_by_module),   cmocka_unit_test(t_module_policy_wins),
      cmocka_unit_test(t_unique_names_all),   cmocka_unit_test(t_warn_once_per_module),
      cmocka_unit_test(t_keys_version_kept),  cmocka_unit_test(t_keys_deleted_unloads),
      cmocka_unit_test(t_finding_policy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
