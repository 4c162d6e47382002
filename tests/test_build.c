/* Build rules: the watcher runs the module's build when its sources change, and the new
 * .so reaches the module through the watcher. The module "sq" is one C file whose version()
 * returns a number; the rule compiles it with the real C compiler into the watched path.
 *
 * No assertion is about time. "Nothing happened" checks use wt_sync (watchutil.h): source
 * events and module events come through the watcher's one inotify descriptor, in order, and
 * a build starts in the same turn as the event that calls for it. */
#include "watchutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef HM_TEST_CC
#define HM_TEST_CC "cc"
#endif

typedef struct bt {
  wt *f;
  char srcdir[2048];  /* the module's sources: sq.c */
  char source[2100];  /* srcdir/sq.c */
  char pidfile[2100]; /* shell rules write their $$ here (outside the sources) */
} bt;

static void write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  size_t len = strlen(text);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
}

static void source_text(char *buf, size_t n, int version) {
  snprintf(buf, n, "int version(void) { return %d; }\n", version);
}

/* Save the source as an editor that writes in place does. */
static void edit(bt *b, int version) {
  char text[128];
  source_text(text, sizeof text, version);
  write_file(b->source, text);
}

/* A rule that compiles srcdir/sq.c into the watched file. */
static void set_cc_rule(bt *b) {
  hm_build_options o = HM_BUILD_OPTIONS_INIT;
  const char *argv[] = {HM_TEST_CC, "-shared", "-fPIC", "-o", b->f->path, "sq.c", NULL};
  const char *sources[] = {b->srcdir, NULL};
  o.argv = argv;
  o.sources = sources;
  o.cwd = b->srcdir;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), 0);
}

/* A shell rule; its $$ goes to the pidfile. */
static void set_sh_rule(bt *b, const char *script, unsigned timeout_ms) {
  hm_build_options o = HM_BUILD_OPTIONS_INIT;
  char cmd[8192];
  const char *argv[] = {cmd, NULL};
  const char *sources[] = {b->srcdir, NULL};
  snprintf(cmd, sizeof cmd, "echo $$ > '%s'; %s", b->pidfile, script);
  o.flags = HM_BUILD_SHELL;
  o.argv = argv;
  o.sources = sources;
  o.cwd = b->f->tmp;
  o.timeout_ms = timeout_ms;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), 0);
}

static int setup(void **state) {
  bt *b = calloc(1, sizeof *b);
  char text[128], first[4096];
  assert_non_null(b);
  b->f = wt_new(HM_RELOAD_DEFAULT, 0, 0);
  snprintf(b->srcdir, sizeof b->srcdir, "%s/src", b->f->tmp);
  snprintf(b->source, sizeof b->source, "%s/sq.c", b->srcdir);
  snprintf(b->pidfile, sizeof b->pidfile, "%s/build.pid", b->f->tmp);
  snprintf(first, sizeof first, "%s/first.so", b->f->tmp);
  assert_int_equal(mkdir(b->srcdir, 0755), 0);
  source_text(text, sizeof text, 1);
  write_file(b->source, text);
  {
    char *argv[] = {HM_TEST_CC, "-shared", "-fPIC", "-o", first, b->source, NULL};
    assert_int_equal(wt_run(argv), 0);
  }
  wt_load(b->f, first);
  assert_int_equal(wt_live(b->f->live), 1);
  *state = b;
  return 0;
}

static int teardown(void **state) {
  bt *b = *state;
  wt_free(b->f);
  free(b);
  return 0;
}

static int builds_started(bt *b) { return wt_count(b->f, HM_EVENT_BUILD_STARTED); }
static int builds_ended(bt *b) {
  return wt_count(b->f, HM_EVENT_BUILD_SUCCEEDED) + wt_count(b->f, HM_EVENT_BUILD_FAILED);
}

static int all_builds_ended(void *arg) {
  bt *b = arg;
  return builds_ended(b) == builds_started(b);
}

/* Wait for the builds under way to end, then for the watcher to take what they wrote. */
static void settle(bt *b) {
  if (!hmt_wait_until(all_builds_ended, b, WT_DEADLINE))
    fail_msg("a build did not end");
  wt_sync(b->f);
}

/* The pid a shell rule wrote, once it did. */
static int pidfile_written(void *arg) {
  bt *b = arg;
  size_t len = 0;
  unsigned char *t = access(b->pidfile, F_OK) == 0 ? hmt_read(b->pidfile, &len) : NULL;
  int ok = t != NULL && len > 0 && t[len - 1] == '\n';
  free(t);
  return ok;
}

static pid_t read_pid(bt *b) {
  size_t len;
  unsigned char *t;
  pid_t pid;
  if (!hmt_wait_until(pidfile_written, b, WT_DEADLINE))
    fail_msg("the build did not write its pid");
  t = hmt_read(b->pidfile, &len);
  pid = (pid_t)atoi((const char *)t);
  free(t);
  assert_true(pid > 1);
  return pid;
}

/* Live members of process group `pgid`, zombies aside (an orphaned zombie waits for an init
 * that may never reap it, which is not the library's doing). */
static int group_alive(pid_t pgid) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int n = 0;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL) {
    char path[300], buf[512], *rp, state;
    int ppid, pgrp;
    FILE *fp;
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    if ((fp = fopen(path, "r")) == NULL)
      continue;
    if (fgets(buf, sizeof buf, fp) != NULL && (rp = strrchr(buf, ')')) != NULL &&
        sscanf(rp + 2, "%c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid && state != 'Z')
      n++;
    fclose(fp);
  }
  closedir(d);
  return n;
}

static int group_gone(void *arg) { return group_alive(*(pid_t *)arg) == 0; }
static int group_of_two(void *arg) { return group_alive(*(pid_t *)arg) == 2; }

/* Children of this process (running or not yet reaped). */
static int child_count(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL) {
    char path[300];
    unsigned char *t;
    size_t len, i;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
    if (access(path, R_OK) != 0 || (t = hmt_read(path, &len)) == NULL)
      continue;
    for (i = 0; i < len; i++)
      n += t[i] == ' ';
    free(t);
  }
  closedir(d);
  return n;
}

/* The process is gone, reaped. */
static void assert_reaped(pid_t pid) {
  errno = 0;
  assert_true(kill(pid, 0) == -1 && errno == ESRCH);
}

/* ---- Tests ----------------------------------------------------------------------------- */

static void test_one_edit_one_version(void **state) {
  bt *b = *state;
  int loads = wt_count(b->f, HM_EVENT_LOADED);
  set_cc_rule(b);
  wt_start(b->f);
  edit(b, 2);
  wt_wait_live(b->f->live, 2);
  settle(b);
  assert_int_equal(builds_started(b), 1);
  assert_int_equal(wt_count(b->f, HM_EVENT_BUILD_SUCCEEDED), 1);
  assert_int_equal(wt_count(b->f, HM_EVENT_BUILD_FAILED), 0);
  assert_int_equal(hm_module_version(b->f->mod), 2);
  assert_int_equal(wt_count(b->f, HM_EVENT_LOADED), loads + 1);
  assert_int_equal(wt_count(b->f, HM_EVENT_REJECTED), 0);
  pthread_mutex_lock(&b->f->log.mu);
  assert_int_equal(b->f->log.build_err, 0);
  assert_true(WIFEXITED(b->f->log.build_status) && WEXITSTATUS(b->f->log.build_status) == 0);
  pthread_mutex_unlock(&b->f->log.mu);
}

static void test_three_quick_edits(void **state) {
  bt *b = *state;
  char t3[128], t4[128], t5[128];
  set_cc_rule(b);
  wt_start(b->f);
  source_text(t3, sizeof t3, 3);
  source_text(t4, sizeof t4, 4);
  source_text(t5, sizeof t5, 5);
  write_file(b->source, t3);
  write_file(b->source, t4);
  write_file(b->source, t5);
  wt_wait_live(b->f->live, 5);
  settle(b);
  assert_true(builds_started(b) >= 1);
  assert_true(builds_started(b) <= 2);
  assert_int_equal(wt_live(b->f->live), 5);
  assert_int_equal(wt_count(b->f, HM_EVENT_BUILD_FAILED), 0);
}

static void test_editor_rename_save(void **state) {
  bt *b = *state;
  char text[128], tmp[4200];
  set_cc_rule(b);
  wt_start(b->f);
  /* As gedit saves: a hidden temporary file beside it, renamed over it. */
  snprintf(tmp, sizeof tmp, "%s/.goutputstream-X1Y2Z3", b->srcdir);
  source_text(text, sizeof text, 6);
  write_file(tmp, text);
  assert_int_equal(rename(tmp, b->source), 0);
  wt_wait_live(b->f->live, 6);
  settle(b);
  assert_int_equal(builds_started(b), 1);
  assert_int_equal(hm_module_version(b->f->mod), 2);
}

static void test_swap_files_ignored(void **state) {
  bt *b = *state;
  char text[128];
  set_cc_rule(b);
  wt_start(b->f);
  source_text(text, sizeof text, 9);
  write_file(hmt_path(b->srcdir, ".sq.c.swp"), text);
  write_file(hmt_path(b->srcdir, "sq.c~"), text);
  write_file(hmt_path(b->srcdir, "4913"), text);
  write_file(hmt_path(b->srcdir, "#sq.c#"), text);
  /* vim's name test at open (.swx), sed -i's and clang-format -i's temporaries (renamed
   * over the source), JetBrains' safe write, emacs flycheck's copies. */
  write_file(hmt_path(b->srcdir, ".sq.c.swx"), text);
  write_file(hmt_path(b->srcdir, "sedAb3xY9"), text);
  write_file(hmt_path(b->srcdir, "sq.c-1a2b3c4d"), text);
  write_file(hmt_path(b->srcdir, "sq.c___jb_tmp___"), text);
  write_file(hmt_path(b->srcdir, "sq.c___jb_old___"), text);
  write_file(hmt_path(b->srcdir, "flycheck_sq.c"), text);
  wt_sync(b->f);
  assert_int_equal(builds_started(b), 0);
  assert_int_equal(wt_live(b->f->live), 1);
  /* The rule is there: a real save builds. */
  edit(b, 2);
  wt_wait_live(b->f->live, 2);
  settle(b);
  assert_int_equal(builds_started(b), 1);
}

/* Run a tool in the sources' directory; 0 if it ran and succeeded, 1 if it is not
 * installed (skipped, with a message). */
static int tool(bt *b, const char *what, char *const argv[]) {
  int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;
  assert_true(here >= 0);
  assert_int_equal(chdir(b->srcdir), 0);
  rc = wt_run(argv);
  assert_int_equal(fchdir(here), 0);
  close(here);
  if (rc == -1 || rc == 127) {
    print_message("skipped: %s (%s is not installed)\n", what, argv[0]);
    return 1;
  }
  if (rc != 0)
    fail_msg("%s: %s exited with %d", what, argv[0], rc);
  return 0;
}

typedef struct started_since {
  bt *b;
  int before;
} started_since;

static int build_started_since(void *arg) {
  started_since *s = arg;
  return builds_started(s->b) > s->before;
}

/* The builds started since `before`, once the build a save calls for has loaded `want` (or,
 * want 0: once one started) and everything settled. A build that a save's temporary file
 * started runs first, and the rename's build follows it in the same loop turn as its end,
 * so settle() counts it too. (settle() alone could count too early: the canary's reload
 * can come in the same read as the save's event, before the build is started.) */
static int builds_for(bt *b, int before, int want) {
  started_since s = {b, before};
  if (want != 0)
    wt_wait_live(b->f->live, want);
  else if (!hmt_wait_until(build_started_since, &s, WT_DEADLINE))
    fail_msg("no build started");
  settle(b);
  return builds_started(b) - before;
}

/* Real editors and tools that save a source: each save is one build, not two. sed -i writes
 * sedXXXXXX and renames it over the source (its close started a build of its own, and the
 * rename one more); vim opens with a .swx name test; clang-format -i writes name-XXXXXXXX.
 * git checkout writes the file in place. JetBrains' safe write, emulated. */
static void test_editor_and_tool_saves(void **state) {
  bt *b = *state;
  char text[128], tmp[4300], old[4300];
  int n;
  set_cc_rule(b);
  wt_start(b->f);
  {
    char *argv[] = {"sed", "-i", "s/return 1/return 2/", "sq.c", NULL};
    n = builds_started(b);
    if (tool(b, "sed -i", argv) == 0)
      assert_int_equal(builds_for(b, n, 2), 1);
    else
      edit(b, 2);
  }
  {
    char *argv[] = {"vim", "-u", "NONE", "-i", "NONE", "-N", "-es", "-c", "s/return 2/return 3/",
                    "-c", "wq", "sq.c", NULL};
    n = builds_started(b);
    if (tool(b, "vim", argv) == 0)
      assert_int_equal(builds_for(b, n, 3), 1);
    else
      edit(b, 3);
  }
  {
    char *init[] = {"git", "init", "-q", ".", NULL};
    char *add[] = {"git", "add", "sq.c", NULL};
    char *commit[] = {"git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m",
                      "3", NULL};
    char *checkout[] = {"git", "checkout", "-q", "--", "sq.c", NULL};
    if (tool(b, "git checkout", init) == 0) {
      assert_int_equal(tool(b, "git add", add), 0);
      assert_int_equal(tool(b, "git commit", commit), 0);
      edit(b, 4);
      builds_for(b, 0, 4);
      n = builds_started(b);
      assert_int_equal(tool(b, "git checkout", checkout), 0);
      assert_int_equal(builds_for(b, n, 3), 1);
    }
  }
  {
    char *argv[] = {"clang-format", "-i", "sq.c", NULL};
    write_file(b->source, "int   version(void){return 5;}\n");
    builds_for(b, 0, 5);
    n = builds_started(b);
    if (tool(b, "clang-format -i", argv) == 0)
      assert_int_equal(builds_for(b, n, 0), 1);
  }
  /* JetBrains "safe write": the new text in name___jb_tmp___, the old file renamed to
   * name___jb_old___, the new one renamed into place, the old one deleted. */
  snprintf(tmp, sizeof tmp, "%s___jb_tmp___", b->source);
  snprintf(old, sizeof old, "%s___jb_old___", b->source);
  source_text(text, sizeof text, 6);
  n = builds_started(b);
  write_file(tmp, text);
  assert_int_equal(rename(b->source, old), 0);
  assert_int_equal(rename(tmp, b->source), 0);
  assert_int_equal(unlink(old), 0);
  assert_int_equal(builds_for(b, n, 6), 1);
}

static void test_syntax_error_then_fix(void **state) {
  bt *b = *state;
  int status, err;
  set_cc_rule(b);
  wt_start(b->f);
  write_file(b->source, "int version(void) { return 7 }\n");
  wt_wait_count(b->f, HM_EVENT_BUILD_FAILED, 1);
  settle(b);
  pthread_mutex_lock(&b->f->log.mu);
  err = b->f->log.build_err;
  status = b->f->log.build_status;
  if (strstr(b->f->log.build_output, "sq.c") == NULL ||
      strstr(b->f->log.build_output, "error") == NULL)
    fail_msg("the compiler's message is not in the output: [%s]", b->f->log.build_output);
  pthread_mutex_unlock(&b->f->log.mu);
  assert_int_equal(err, HM_EBUILD);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  assert_int_equal(wt_live(b->f->live), 1);
  assert_int_equal(hm_module_version(b->f->mod), 1);
  edit(b, 8);
  wt_wait_live(b->f->live, 8);
  settle(b);
  assert_int_equal(wt_count(b->f, HM_EVENT_BUILD_SUCCEEDED), 1);
  assert_int_equal(hm_module_version(b->f->mod), 2);
}

/* Edit until a build that timed out had written its pid first (on a loaded machine, or
 * under valgrind, the shell may not get that far before its timeout). */
static pid_t timed_out_build(bt *b) {
  int attempt;
  for (attempt = 1; attempt <= 20; attempt++) {
    unlink(b->pidfile);
    edit(b, 2);
    wt_wait_count(b->f, HM_EVENT_BUILD_FAILED, attempt);
    if (pidfile_written(b))
      return read_pid(b);
  }
  fail_msg("no build wrote its pid before its timeout in 20 tries");
  return -1;
}

static void test_hanging_build_killed(void **state) {
  bt *b = *state;
  pid_t pgid;
  int status;
  set_sh_rule(b, "exec sleep 100", 300);
  wt_start(b->f);
  pgid = timed_out_build(b);
  pthread_mutex_lock(&b->f->log.mu);
  assert_int_equal(b->f->log.build_err, HM_ETIMEDOUT);
  status = b->f->log.build_status;
  pthread_mutex_unlock(&b->f->log.mu);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  /* The group's only process was the build, reaped by the library: nothing is left. */
  errno = 0;
  assert_int_equal(kill(-pgid, 0), -1);
  assert_int_equal(errno, ESRCH);
  assert_int_equal(wt_live(b->f->live), 1);
}

static void test_hanging_group_killed(void **state) {
  bt *b = *state;
  pid_t pgid;
  /* Grandchildren in the background, the shell waiting for them. */
  set_sh_rule(b, "sleep 100 & sleep 100 & wait", 300);
  wt_start(b->f);
  pgid = timed_out_build(b);
  if (!hmt_wait_until(group_gone, &pgid, WT_DEADLINE))
    fail_msg("%d processes of the build's group are still alive", group_alive(pgid));
  assert_reaped(pgid); /* the shell itself */
}

/* A shell rule running `script` with no timeout, started by a save: its pid. */
static pid_t running_build(bt *b, const char *script) {
  set_sh_rule(b, script, 0);
  wt_start(b->f);
  edit(b, 2);
  wt_wait_count(b->f, HM_EVENT_BUILD_STARTED, 1);
  return read_pid(b);
}

static void test_stop_during_build(void **state) {
  bt *b = *state;
  pid_t pgid = running_build(b, "sleep 100 & exec sleep 100");
  if (!hmt_wait_until(group_of_two, &pgid, WT_DEADLINE)) /* the shell forks, then execs */
    fail_msg("the build's group has %d processes, waited for 2", group_alive(pgid));
  hm_watch_stop(b->f->reg);
  /* The build's own process is reaped when the stop returns; the rest were killed. */
  assert_reaped(pgid);
  assert_int_equal(child_count(), 0);
  if (!hmt_wait_until(group_gone, &pgid, WT_DEADLINE))
    fail_msg("%d processes of the build's group are still alive", group_alive(pgid));
  assert_int_equal(builds_ended(b), 0); /* a stop sends no event */
}

static void test_free_during_build(void **state) {
  bt *b = *state;
  pid_t pgid = running_build(b, "exec sleep 100");
  hm_registry_free(b->f->reg);
  b->f->reg = NULL;
  assert_reaped(pgid);
  assert_int_equal(child_count(), 0);
}

static void test_start_stop_cycles(void **state) {
  bt *b = *state;
  long i, n = hmt_scaled(20);
  int fds;
  set_sh_rule(b, "exec sleep 100", 0);
  wt_start(b->f);
  hm_watch_stop(b->f->reg);
  fds = hmt_fd_count();
  for (i = 0; i < n && i < 20; i++) {
    int started = builds_started(b);
    wt_start(b->f);
    edit(b, 2);
    wt_wait_count(b->f, HM_EVENT_BUILD_STARTED, started + 1);
    hm_watch_stop(b->f->reg);
    assert_int_equal(child_count(), 0);
  }
  assert_int_equal(hmt_fd_count(), fds);
  assert_int_equal(builds_ended(b), 0);
}

static void test_rule_removed_cancels(void **state) {
  bt *b = *state;
  pid_t pgid = running_build(b, "exec sleep 100");
  assert_int_equal(hm_module_set_build(b->f->mod, NULL), 0);
  wt_wait_count(b->f, HM_EVENT_BUILD_FAILED, 1);
  pthread_mutex_lock(&b->f->log.mu);
  assert_int_equal(b->f->log.build_err, -ECANCELED);
  pthread_mutex_unlock(&b->f->log.mu);
  assert_reaped(pgid);
  /* No rule, no build. */
  edit(b, 3);
  wt_sync(b->f);
  assert_int_equal(builds_started(b), 1);
}

static void test_env_and_output(void **state) {
  bt *b = *state;
  hm_build_options o = HM_BUILD_OPTIONS_INIT;
  const char *argv[] = {"sh", "-c", "echo \"A=$HMT_A B=${HMT_B-unset}\"; echo oops >&2; exit 3",
                        NULL};
  const char *sources[] = {"src/sq.c", NULL};
  const char *env[] = {"HMT_A=one", "HMT_B", NULL};
  setenv("HMT_B", "host", 1);
  o.argv = argv;
  o.sources = sources; /* a file, relative to cwd */
  o.cwd = b->f->tmp;
  o.env = env;
  o.output_max = 12;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), 0);
  wt_start(b->f);
  edit(b, 2);
  wt_wait_count(b->f, HM_EVENT_BUILD_FAILED, 1);
  pthread_mutex_lock(&b->f->log.mu);
  assert_int_equal(b->f->log.build_err, HM_EBUILD);
  assert_true(WIFEXITED(b->f->log.build_status) && WEXITSTATUS(b->f->log.build_status) == 3);
  /* The first 12 bytes, and a note of the rest. */
  if (strncmp(b->f->log.build_output, "A=one B=unse", 12) != 0 ||
      strstr(b->f->log.build_output, "more bytes of output dropped") == NULL)
    fail_msg("output: [%s]", b->f->log.build_output);
  pthread_mutex_unlock(&b->f->log.mu);
  unsetenv("HMT_B");
}

static void test_bad_arguments(void **state) {
  bt *b = *state;
  hm_build_options o = HM_BUILD_OPTIONS_INIT;
  const char *argv[] = {"true", NULL}, *empty[] = {NULL}, *blank[] = {"", NULL};
  const char *sources[] = {b->srcdir, NULL};
  int st;
  unsigned ms;
  assert_int_equal(hm_module_set_build(NULL, &o), HM_EINVAL);
  assert_int_equal(hm_module_set_build(NULL, NULL), HM_EINVAL);
  o.sources = sources;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_EINVAL); /* no argv */
  o.argv = empty;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_EINVAL);
  o.argv = blank;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_EINVAL);
  o.argv = argv;
  o.sources = NULL;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_EINVAL);
  o.sources = empty;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_EINVAL);
  o.sources = blank;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_EINVAL);
  o.sources = sources;
  o.version = 0;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_EINVAL);
  o.version = HM_BUILD_OPTIONS_VERSION + 1;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_EINVAL);
  o.version = HM_BUILD_OPTIONS_VERSION;
  o.cwd = "/nonexistent/hotmod-build";
  assert_int_equal(hm_module_set_build(b->f->mod, &o), HM_ENOENT);
  o.cwd = NULL;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), 0);
  assert_int_equal(hm_module_set_build(b->f->mod, &o), 0); /* replaced */
  assert_int_equal(hm_module_set_build(b->f->mod, NULL), 0);
  assert_int_equal(hm_module_set_build(b->f->mod, NULL), 0); /* none to remove */
  /* Outside a build event's callback. */
  assert_int_equal(hm_event_build(&st, &ms), HM_EINVAL);
  assert_int_equal(hm_event_build(NULL, NULL), HM_EINVAL);
}

static void test_command_not_found(void **state) {
  bt *b = *state;
  hm_build_options o = HM_BUILD_OPTIONS_INIT;
  const char *argv[] = {"hotmod-no-such-compiler", NULL};
  const char *sources[] = {b->srcdir, NULL};
  o.argv = argv;
  o.sources = sources;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), 0);
  wt_start(b->f);
  edit(b, 2);
  wt_wait_count(b->f, HM_EVENT_BUILD_FAILED, 1);
  pthread_mutex_lock(&b->f->log.mu);
  if (b->f->log.build_err == HM_EBUILD) {
    /* posix_spawn without its vfork-like clone (under valgrind): the child ran and its
     * exec failed there (exit status 127; valgrind's child has been seen to end otherwise). */
    assert_true(b->f->log.build_status != 0 && b->f->log.build_status != -1);
  } else {
    if (b->f->log.build_err != HM_ENOENT)
      fail_msg("err %d (%s), status %d, output [%s]", b->f->log.build_err,
               hm_err_name(b->f->log.build_err), b->f->log.build_status, b->f->log.build_output);
    assert_int_equal(b->f->log.build_status, -1);
    assert_non_null(strstr(b->f->log.build_output, "hotmod-no-such-compiler"));
  }
  pthread_mutex_unlock(&b->f->log.mu);
  assert_int_equal(builds_started(b), 1);
}

/* A rule's relative paths (and its working directory, left NULL) go with the module's: the
 * directory its relative path was taken against, not the current directory when the rule
 * is set (before, after a chdir("/") the rule watched /../<tmp>/src and built nothing). */
static void test_relative_rule_follows_module(void **state) {
  bt *b = *state;
  hm_build_options o = HM_BUILD_OPTIONS_INIT;
  char rel_src[300], rel_c[320], first[4200];
  const char *argv[] = {HM_TEST_CC, "-shared", "-fPIC", "-o", "sq.so", rel_c, NULL};
  const char *sources[] = {rel_src, NULL};
  int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true(here >= 0);
  /* The module now comes from src/sq.so, given as "sq.so" in src/. */
  snprintf(first, sizeof first, "%s/first.so", b->f->tmp);
  hmt_install(first, b->f->path);
  assert_int_equal(chdir(b->f->src), 0);
  assert_int_equal(hm_module_reload_from(b->f->mod, "sq.so"), 0);
  snprintf(rel_src, sizeof rel_src, "../%s/src", strrchr(b->f->tmp, '/') + 1);
  snprintf(rel_c, sizeof rel_c, "%s/sq.c", rel_src);
  assert_int_equal(chdir("/"), 0);
  o.argv = argv;
  o.sources = sources;
  assert_int_equal(hm_module_set_build(b->f->mod, &o), 0);
  wt_start(b->f);
  edit(b, 7);
  wt_wait_live(b->f->live, 7);
  settle(b);
  assert_int_equal(wt_count(b->f, HM_EVENT_BUILD_FAILED), 0);
  assert_int_equal(fchdir(here), 0);
  close(here);
}

typedef struct started_wait {
  wt *f;
  const char *source;
} started_wait;

/* Save a source (again) and give the build 0.2 s to succeed. */
static int saved_and_built(void *arg) {
  started_wait *s = arg;
  write_file(s->source, "int version(void) { return 2; }\n");
  for (int i = 0; i < 20; i++) {
    if (wt_count(s->f, HM_EVENT_BUILD_SUCCEEDED) > 0)
      return 1;
    wt_sleep_ms(10);
  }
  return 0;
}

/* Each allocation the watcher's thread makes, from its start to the build's load, failed in
 * turn: a build rule whose state or source watch could not be made is tried again, and a
 * save of a source starts its build in the end (a build that could not start for want of
 * memory says so: BUILD_FAILED, HM_ENOMEM; the next save tries again). Before, a failed
 * allocation in the rule's set-up left its sources unwatched for good, with no event. */
static void test_allocation_failures(void **state) {
  (void)state;
  for (int k = 1; k < 400; k++) {
    hm_build_options o = HM_BUILD_OPTIONS_INIT;
    const char *argv[] = {"cp", hmt_mod("square_v2"), NULL, NULL};
    const char *sources[] = {NULL, NULL};
    char srcdir[4200], source[4300];
    started_wait sw;
    wt_faulty fa;
    wt *f = wt_new_faulty(&fa, k);
    int reached;
    snprintf(srcdir, sizeof srcdir, "%s/src", f->tmp);
    snprintf(source, sizeof source, "%s/sq.c", srcdir);
    assert_int_equal(mkdir(srcdir, 0755), 0);
    argv[2] = f->path;
    sources[0] = srcdir;
    o.argv = argv;
    o.sources = sources;
    assert_int_equal(hm_module_set_build(f->mod, &o), 0);
    __atomic_store_n(&fa.armed, 1, __ATOMIC_RELEASE);
    wt_start(f);
    sw.f = f;
    sw.source = source;
    if (!hmt_wait_until(saved_and_built, &sw, WT_DEADLINE))
      fail_msg("allocation %d failed: saved sources never built", k);
    wt_wait_live(f->live, 2);
    reached = __atomic_load_n(&fa.seen, __ATOMIC_ACQUIRE) >= k;
    wt_free(f);
    if (!reached)
      break;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_one_edit_one_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_three_quick_edits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_editor_rename_save, setup, teardown),
      cmocka_unit_test_setup_teardown(test_swap_files_ignored, setup, teardown),
      cmocka_unit_test_setup_teardown(test_editor_and_tool_saves, setup, teardown),
      cmocka_unit_test_setup_teardown(test_syntax_error_then_fix, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hanging_build_killed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hanging_group_killed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_during_build, setup, teardown),
      cmocka_unit_test_setup_teardown(test_free_during_build, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_stop_cycles, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rule_removed_cancels, setup, teardown),
      cmocka_unit_test_setup_teardown(test_env_and_output, setup, teardown),
      cmocka_unit_test_setup_teardown(test_command_not_found, setup, teardown),
      cmocka_unit_test_setup_teardown(test_relative_rule_follows_module, setup, teardown),
      cmocka_unit_test(test_allocation_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
