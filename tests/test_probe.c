/* Crash containment (HM_FLAG_PROBE, hm_module_set_probe): a build that crashes, exits,
 * hangs or fails its self-test in the probe's child is refused with its code, the host lives
 * and the old version serves on; a good build passes and loads; a build the child cannot open
 * is still loaded by the host. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*ifn)(void);

/* Exported by this program (ENABLE_EXPORTS) for the HOST_SYMBOL build. */
__attribute__((visibility("default"))) int hmt_probe_host_value(void) { return 42; }

typedef struct fx {
  hm_registry *reg;
  hm_module *mod;
  char *dir;
  char path[4096], mark[4096];
  hmt_events ev;
} fx;

static fx *fx_new(unsigned flags, unsigned timeout_ms) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  o.flags = flags;
  o.probe_timeout_ms = timeout_ms;
  f->reg = hmt_registry_events(&f->ev, &o);
  f->dir = hmt_tmpdir();
  snprintf(f->path, sizeof f->path, "%s/probed.so", f->dir);
  snprintf(f->mark, sizeof f->mark, "%s/self-test-ran", f->dir);
  setenv("HMT_PROBE_MARK", f->mark, 1);
  hmt_install(hmt_mod("probed_v1"), f->path);
  assert_int_equal(hm_module_load(f->reg, "p", f->path, &f->mod), 0);
  return f;
}

static void fx_free(fx *f) {
  hmt_registry_events_free(f->reg, &f->ev);
  hmt_rm_rf(f->dir);
  free(f->dir);
  free(f);
  unsetenv("HMT_PROBE_MARK");
}

static int call_version(fx *f) {
  hm_live *l;
  assert_int_equal(hm_live_get(f->reg, "p:version", &l), 0);
  return HM_LIVE_CALL(l, ifn);
}

static int marked(fx *f) {
  struct stat st;
  return stat(f->mark, &st) == 0;
}

/* No child of this process is left, running or unreaped. */
static void no_children(void) {
  errno = 0;
  assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
}

/* Install `build` and reload: refused with `want`, version 1 serves on. */
static void refused(fx *f, const char *build, int want, const char *words) {
  int rc;
  hmt_install(hmt_mod(build), f->path);
  rc = hm_module_reload(f->mod);
  if (rc != want)
    fail_msg("%s: reload gave %d (%s), wanted %d: %s", build, rc, hm_strerror(rc), want,
             hm_errmsg());
  print_message("    %s\n", hm_errmsg());
  if (words != NULL && strstr(hm_errmsg(), words) == NULL)
    fail_msg("%s: the message does not say \"%s\": %s", build, words, hm_errmsg());
  assert_int_equal(f->ev.reject_err, want);
  assert_non_null(strstr(f->ev.reject, "probe"));
  assert_int_equal(hm_module_version(f->mod), 1);
  assert_int_equal(call_version(f), 1);
  no_children();
}

static void t_good_build_passes(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  (void)state;
  assert_true(marked(f)); /* the first load was probed too */
  unlink(f->mark);
  hmt_install(hmt_mod("probed_v2"), f->path);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_true(marked(f));
  assert_int_equal(call_version(f), 2);
  assert_int_equal(f->ev.nreject, 0);
  no_children();
  fx_free(f);
}

/* NULL arguments to ctx->api give HM_EINVAL in the probe's child as in the host (the child's
 * stand-ins wrote through a NULL out, so such a build "crashed" there). */
static void t_api_null_arguments(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  int rc;
  (void)state;
  hmt_install(hmt_mod("probed_v2_apinull"), f->path);
  rc = hm_module_reload(f->mod);
  if (rc != 0)
    fail_msg("reload: %s: %s", hm_err_name(rc), hm_errmsg());
  assert_int_equal(call_version(f), 2);
  assert_int_equal(f->ev.nreject, 0);
  no_children();
  fx_free(f);
}

static void t_constructor_segfault(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  (void)state;
  refused(f, "probed_v2_ctorsegv", HM_ECRASHED, "constructors");
  fx_free(f);
}

static void t_constructor_exit(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  (void)state;
  refused(f, "probed_v2_ctorexit", HM_ECRASHED, "exit status 3");
  fx_free(f);
}

static void t_load_hook_segfault(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  (void)state;
  refused(f, "probed_v2_hooksegv", HM_ECRASHED, "load hook");
  fx_free(f);
}

static void t_constructor_never_returns(void **state) {
  /* Long enough for the good first build's probe on a loaded machine under ASan (starting an
   * ASan process maps its shadow memory, which this VM makes slow). */
  fx *f = fx_new(HM_FLAG_PROBE, 2000);
  (void)state;
  refused(f, "probed_v2_ctorloop", HM_ETIMEDOUT, "2000 ms");
  fx_free(f);
}

static void t_self_test_fails(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  (void)state;
  refused(f, "probed_v2_testfails", HM_ECRASHED, "returned 7");
  fx_free(f);
}

/* The child cannot resolve what the host program exports: not the probe's to refuse. */
static void t_host_symbol_loads(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  (void)state;
  hmt_install(hmt_mod("probed_v2_hostsymbol"), f->path);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(call_version(f), 2);
  fx_free(f);
}

/* A host that ignores SIGCHLD has its children reaped by the kernel: the probe's verdict
 * comes from the pipe, so a crash is still a crash and a good build still loads. */
static void t_host_ignores_sigchld(void **state) {
  struct sigaction ign, old;
  fx *f;
  (void)state;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGCHLD, &ign, &old);
  f = fx_new(HM_FLAG_PROBE, 0);
  refused(f, "probed_v2_ctorsegv", HM_ECRASHED, "constructors");
  hmt_install(hmt_mod("probed_v2"), f->path);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(call_version(f), 2);
  fx_free(f);
  sigaction(SIGCHLD, &old, NULL);
}

/* A build made before self_test existed (the smaller descriptor) passes and loads. */
static void t_old_descriptor(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  (void)state;
  unlink(f->mark);
  hmt_install(hmt_mod("probed_v2_olddesc"), f->path);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(call_version(f), 2);
  assert_false(marked(f)); /* it has no self-test */
  fx_free(f);
}

/* The host's descriptors without O_CLOEXEC do not reach the new build in the child: only
 * the host's own load of it writes there. */
static void t_host_fds_not_inherited(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 0);
  char fdtext[16], *text, *line, *save = NULL, log[4200];
  size_t len;
  int fd, lines = 0;
  (void)state;
  snprintf(log, sizeof log, "%s/fd-log", f->dir);
  fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
  assert_true(fd > 3);
  snprintf(fdtext, sizeof fdtext, "%d", fd);
  setenv("HMT_PROBE_FD", fdtext, 1);
  hmt_install(hmt_mod("probed_v2_fdwrite"), f->path);
  assert_int_equal(hm_module_reload(f->mod), 0);
  unsetenv("HMT_PROBE_FD");
  close(fd);
  text = (char *)hmt_read(log, &len);
  for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    if (atoi(line) != (int)getpid())
      fail_msg("process %s (the probe's child) wrote to the host's descriptor", line);
    lines++;
  }
  assert_int_equal(lines, 1);
  free(text);
  fx_free(f);
}

/* Another thread of the host forks while the probe runs: the fork's child holds a copy of
 * the report pipe for a while, and the verdict must not wait for it. */
static volatile int forking;

static void *fork_often(void *arg) {
  (void)arg;
  while (__atomic_load_n(&forking, __ATOMIC_SEQ_CST)) {
    pid_t pid = fork();
    if (pid == 0) {
      /* Keep pipes (the probe's report pipe, if the fork caught one), but not files: a copy
       * of the test's own installing descriptor would make the module's file look open for
       * writing. */
      int fd;
      struct stat st;
      for (fd = 3; fd < 1024; fd++)
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
          close(fd);
      usleep(1500 * 1000);
      _exit(0);
    }
    if (pid > 0)
      (void)waitpid(pid, NULL, WNOHANG);
    usleep(2000);
  }
  return NULL;
}

static void t_host_forks_meanwhile(void **state) {
  fx *f = fx_new(HM_FLAG_PROBE, 1000);
  pthread_t t;
  int i, rc[6];
  (void)state;
  __atomic_store_n(&forking, 1, __ATOMIC_SEQ_CST);
  assert_int_equal(pthread_create(&t, NULL, fork_often, NULL), 0);
  for (i = 0; i < 6; i++) {
    int tries = 0;
    hmt_install(hmt_mod(i % 2 ? "probed_v3" : "probed_v2"), f->path);
    /* A fork that copied the install's descriptor makes the file look open for writing
     * for a moment: HM_EAGAIN, as documented; try again. A timeout is the failure. */
    do
      rc[i] = hm_module_reload(f->mod);
    while (rc[i] == HM_EAGAIN && ++tries < 5000 && (usleep(1000), 1));
  }
  __atomic_store_n(&forking, 0, __ATOMIC_SEQ_CST);
  pthread_join(t, NULL);
  while (waitpid(-1, NULL, 0) > 0)
    ;
  for (i = 0; i < 6; i++)
    if (rc[i] != 0)
      fail_msg("reload %d: %d (%s)", i, rc[i], hm_strerror(rc[i]));
  assert_int_equal(call_version(f), 3);
  fx_free(f);
}

/* A host (a daemon) that closed its standard input and output: the report pipe lands on
 * descriptors 0 and 1, and must still reach the child's descriptor 3. */
static void t_closed_standard_fds(void **state) {
  pid_t pid;
  int status;
  (void)state;
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
    hm_registry *reg;
    hm_module *mod;
    char *dir = hmt_tmpdir();
    const char *path = hmt_path(dir, "probed.so");
    int rc;
    o.flags = HM_FLAG_PROBE | HM_FLAG_QUIET;
    hmt_install(hmt_mod("probed_v1"), path);
    if (hm_registry_new(&reg, &o) != 0)
      _exit(2);
    close(0);
    close(1);
    rc = hm_module_load(reg, "p", path, &mod);
    if (rc != 0)
      fprintf(stderr, "    %s\n", hm_errmsg());
    hm_registry_free(reg);
    hmt_rm_rf(dir);
    _exit(rc == 0 ? 0 : 1);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* A relative HOTMOD_PROBE names the helper from where the host was when it asked; a later
 * chdir does not change which program runs. */
static void t_relative_helper_path(void **state) {
  char cwd[4096];
  fx *f;
  (void)state;
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(HM_TEST_MODDIR "/../.."), 0);
  setenv("HOTMOD_PROBE", "./hotmod-probe", 1);
  f = fx_new(HM_FLAG_PROBE, 0);
  unsetenv("HOTMOD_PROBE");
  assert_int_equal(chdir("/"), 0);
  hmt_install(hmt_mod("probed_v2"), f->path);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(chdir(cwd), 0);
  fx_free(f);
}

/* Inside the callback, the refusal's detail stays what it was after a call that fails. */
static char detail_seen[1024];

static void detail_after_failure(hm_event ev, hm_module *mod, unsigned version, int err,
                                 void *ud) {
  hm_live *l;
  (void)mod, (void)version, (void)err;
  if (ev == HM_EVENT_REJECTED) {
    (void)hm_live_get(*(hm_registry **)ud, "nosuchmodule:f", &l);
    snprintf(detail_seen, sizeof detail_seen, "%s", hm_event_detail());
  }
}

static void t_detail_stable_in_callback(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  hm_module *mod;
  char *dir = hmt_tmpdir();
  const char *path = hmt_path(dir, "probed.so");
  (void)state;
  o.flags = HM_FLAG_PROBE | HM_FLAG_QUIET;
  o.on_event = detail_after_failure;
  o.event_userdata = &reg; /* the callback asks this registry for what is not there */
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  hmt_install(hmt_mod("probed_v1"), path);
  assert_int_equal(hm_module_load(reg, "p", path, &mod), 0);
  hmt_install(hmt_mod("probed_v2_ctorsegv"), path);
  assert_int_equal(hm_module_reload(mod), HM_ECRASHED);
  if (strstr(detail_seen, "crash-containment probe") == NULL)
    fail_msg("the detail changed inside the callback: %s", detail_seen);
  hm_registry_free(reg);
  hmt_rm_rf(dir);
  free(dir);
}

/* Per module: on without the registry flag; off again; -1 follows the registry. */
static void t_per_module(void **state) {
  fx *f = fx_new(0, 0);
  (void)state;
  assert_false(marked(f));
  assert_int_equal(hm_module_set_probe(f->mod, 1), 0);
  refused(f, "probed_v2_ctorsegv", HM_ECRASHED, NULL);
  hmt_install(hmt_mod("probed_v2"), f->path);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_true(marked(f));
  unlink(f->mark);
  assert_int_equal(hm_module_set_probe(f->mod, 0), 0);
  hmt_install(hmt_mod("probed_v3"), f->path);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_false(marked(f));
  assert_int_equal(hm_module_set_probe(f->mod, -1), 0);
  assert_int_equal(hm_module_set_probe(f->mod, 2), HM_EINVAL);
  assert_int_equal(hm_module_set_probe(NULL, 1), HM_EINVAL);
  fx_free(f);
}

/* The helper's path can be overridden; a wrong one is an error at once, never a load that
 * goes unprobed. */
static void t_helper_missing(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  (void)state;
  o.flags = HM_FLAG_PROBE | HM_FLAG_QUIET;
  setenv("HOTMOD_PROBE", "/nonexistent/hotmod-probe", 1);
  assert_int_equal(hm_registry_new(&reg, &o), HM_ENOENT);
  assert_null(reg);
  assert_non_null(strstr(hm_errmsg(), "HOTMOD_PROBE"));
  unsetenv("HOTMOD_PROBE");
}

int main(void) {
  const char *asan = getenv("ASAN_OPTIONS");
  char opts[1024];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_good_build_passes),  cmocka_unit_test(t_constructor_segfault),
      cmocka_unit_test(t_constructor_exit),   cmocka_unit_test(t_load_hook_segfault),
      cmocka_unit_test(t_constructor_never_returns), cmocka_unit_test(t_self_test_fails),
      cmocka_unit_test(t_host_symbol_loads),  cmocka_unit_test(t_host_ignores_sigchld),
      cmocka_unit_test(t_per_module),         cmocka_unit_test(t_old_descriptor),
      cmocka_unit_test(t_host_fds_not_inherited), cmocka_unit_test(t_host_forks_meanwhile),
      cmocka_unit_test(t_closed_standard_fds), cmocka_unit_test(t_relative_helper_path),
      cmocka_unit_test(t_detail_stable_in_callback),
      cmocka_unit_test(t_helper_missing),     cmocka_unit_test(t_api_null_arguments),
  };
  /* The probe's children crash on purpose: under ASan, their reports need no symbols, and
   * symbolizing them on a loaded machine can outlast the probe's timeout (seen in CI). */
  snprintf(opts, sizeof opts, "%s%ssymbolize=0", asan ? asan : "", asan && *asan ? ":" : "");
  setenv("ASAN_OPTIONS", opts, 1);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
