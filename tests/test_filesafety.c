/* File safety: what the loader refuses to read as a module, and with which code and
 * message; noexec mounts; stale private directories. Special files and symlink loops are
 * refused at once, never waited on. A refused reload leaves the loaded version serving.
 * Some cases need root (a file of another user, a noexec mount): they skip with a message
 * otherwise. This program also runs as a child that holds a registry (--hold). */
#include "util.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef int (*ifn)(void);

typedef struct fixture {
  char *dir; /* scratch, mode 0700, owned by this process's user */
  hm_registry *reg;
  char mounted[4200]; /* a tmpfs the test mounted, to unmount at teardown */
  char sub[4][4200];  /* subdirectories made by subdir() */
  int nsub;
  pid_t kill_at_end[2]; /* a holder and its forked child, killed at teardown if still there */
} fixture;

static const char *self_exe; /* argv[0]: this program, run again as a registry holder */

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->dir = hmt_tmpdir();
  f->reg = hmt_registry(0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  if (f->mounted[0] != '\0')
    umount2(f->mounted, MNT_DETACH);
  if (f->kill_at_end[0] > 0 && kill(f->kill_at_end[0], SIGKILL) == 0)
    waitpid(f->kill_at_end[0], NULL, 0); /* a failed test left its holder running */
  if (f->kill_at_end[1] > 0)
    kill(f->kill_at_end[1], SIGKILL);
  hm_registry_free(f->reg);
  hmt_rm_rf(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* hm_module_load of `path` fails with `code`, quickly, with a message that names the path
 * and contains `needle`, and adds nothing to the private directory. */
static void refused(hm_registry *reg, const char *path, int code, const char *needle) {
  double t0 = now_s();
  hm_module *mod = (hm_module *)&mod;
  int files = hmt_count_files(hm_registry_dir(reg));
  int rc = hm_module_load(reg, "m", path, &mod);
  double took = now_s() - t0;
  if (rc != code || strstr(hm_errmsg(), path) == NULL || strstr(hm_errmsg(), needle) == NULL)
    print_error("loading %s: got %s (%s), expected %s with \"%s\"\n", path, hm_err_name(rc),
                hm_errmsg(), hm_err_name(code), needle);
  assert_int_equal(rc, code);
  assert_non_null(strstr(hm_errmsg(), path));
  assert_non_null(strstr(hm_errmsg(), needle));
  assert_null(mod);
  assert_true(took < 5.0); /* refused, not waited on (generous for valgrind) */
  /* No copy made (one of an unloaded version may go meanwhile). */
  assert_true(hmt_count_files(hm_registry_dir(reg)) <= files);
}

/* hm_module_load of `path` succeeds (then the module is unloaded again). */
static void accepted(hm_registry *reg, const char *path) {
  hm_module *mod = NULL;
  int rc = hm_module_load(reg, "m", path, &mod);
  if (rc != 0)
    print_error("loading %s: %s (%s)\n", path, hm_err_name(rc), hm_errmsg());
  assert_int_equal(rc, 0);
  assert_int_equal(hm_module_unload(mod), 0);
}

/* A module loaded from a safe place serves version 1; reloading it from `path` (which
 * holds square_v2) is refused with `code` and `needle`, and version 1 serves on. */
static void reload_refused(fixture *f, const char *path, int code, const char *needle) {
  const char *good = hmt_path(f->dir, "good.so");
  hm_module *mod;
  hm_live *ver;
  int rc;
  hmt_install(hmt_mod("square_v1"), good);
  assert_int_equal(hm_module_load(f->reg, "keep", good, &mod), 0);
  assert_int_equal(hm_live_get(f->reg, "keep:version", &ver), 0);
  rc = hm_module_reload_from(mod, path);
  if (rc != code || strstr(hm_errmsg(), needle) == NULL)
    print_error("reloading from %s: got %s (%s), expected %s with \"%s\"\n", path,
                hm_err_name(rc), hm_errmsg(), hm_err_name(code), needle);
  assert_int_equal(rc, code);
  assert_non_null(strstr(hm_errmsg(), needle));
  assert_int_equal(HM_LIVE_CALL(ver, ifn), 1);
  assert_int_equal(hm_module_version(mod), 1);
  assert_string_equal(hm_module_path(mod), good);
  assert_int_equal(hm_module_unload(mod), 0);
}

/* f->dir/name, made with exactly `mode` (whatever the umask); the string lives as long as
 * the fixture. */
static const char *subdir(fixture *f, const char *name, mode_t mode) {
  char *d = f->sub[f->nsub++];
  assert_true(f->nsub <= 4);
  snprintf(d, sizeof f->sub[0], "%s/%s", f->dir, name);
  assert_int_equal(mkdir(d, 0700), 0);
  assert_int_equal(chmod(d, mode), 0);
  return d;
}

/* A copy of the built module `mod` at dir/name (a path in a static rotating buffer). */
static const char *put(const char *dir, const char *name, const char *mod) {
  const char *p = hmt_path(dir, name);
  hmt_install(hmt_mod(mod), p);
  return p;
}

static int need_root(const char *why) {
  if (geteuid() == 0)
    return 1;
  print_message("skipped: %s needs root (this runs as uid %u)\n", why, (unsigned)geteuid());
  return 0;
}

#define NOBODY ((uid_t)65534)

/* ---- Special files and symlink loops --------------------------------------------------- */

static void t_fifo(void **state) {
  fixture *f = *state;
  const char *p = hmt_path(f->dir, "fifo.so");
  assert_int_equal(mkfifo(p, 0600), 0);
  refused(f->reg, p, HM_ENOTELF, "is a FIFO (named pipe), not a regular file");
}

static void t_socket(void **state) {
  fixture *f = *state;
  struct sockaddr_un sa;
  const char *p = hmt_path(f->dir, "sock.so");
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(s >= 0);
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  assert_true(strlen(p) < sizeof sa.sun_path);
  memcpy(sa.sun_path, p, strlen(p) + 1);
  assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(s, 1), 0); /* a listening socket: a connect would succeed */
  refused(f->reg, p, HM_ENOTELF, "is a socket, not a regular file");
  close(s);
}

static void t_dev_zero(void **state) {
  fixture *f = *state;
  refused(f->reg, "/dev/zero", HM_ENOTELF, "is a character device, not a regular file");
}

static void t_directory(void **state) {
  fixture *f = *state;
  refused(f->reg, f->dir, HM_ENOTELF, "is a directory, not a regular file");
}

/* The trust rules' walk to the file comes before it is opened: what open() would say of a
 * name that is not there, however it is reached, and the type refused as before (a FIFO
 * behind a link unopened, a directory named with a trailing slash). */
static void t_missing_and_linked(void **state) {
  fixture *f = *state;
  char p[4200], q[4200];
  refused(f->reg, hmt_path(f->dir, "absent.so"), HM_ENOENT, "cannot open");
  refused(f->reg, hmt_path(f->dir, "nodir/absent.so"), HM_ENOENT, "No such file");
  snprintf(p, sizeof p, "%s/dangling.so", f->dir);
  assert_int_equal(symlink("absent.so", p), 0);
  refused(f->reg, p, HM_ENOENT, "cannot open");
  snprintf(q, sizeof q, "%s/fifo2.so", f->dir);
  assert_int_equal(mkfifo(q, 0600), 0);
  snprintf(p, sizeof p, "%s/tofifo.so", f->dir);
  assert_int_equal(symlink("fifo2.so", p), 0);
  refused(f->reg, p, HM_ENOTELF, "is a FIFO (named pipe), not a regular file");
  snprintf(p, sizeof p, "%s/", f->dir);
  refused(f->reg, p, HM_ENOTELF, "is a directory, not a regular file");
  /* And a module reached through a link loads. */
  snprintf(q, sizeof q, "%s/real.so", f->dir);
  hmt_install(hmt_mod("square_v1"), q);
  snprintf(p, sizeof p, "%s/tomod.so", f->dir);
  assert_int_equal(symlink("real.so", p), 0);
  accepted(f->reg, p);
}

static void t_symlink_loop(void **state) {
  fixture *f = *state;
  char a[4200], b[4200];
  snprintf(a, sizeof a, "%s/a.so", f->dir);
  snprintf(b, sizeof b, "%s/b.so", f->dir);
  assert_int_equal(symlink(b, a), 0);
  assert_int_equal(symlink(a, b), 0);
  refused(f->reg, a, -ELOOP, "a loop of symbolic links");
  assert_string_equal(hm_err_name(-ELOOP), "ELOOP");
  /* A link to itself. */
  snprintf(a, sizeof a, "%s/self.so", f->dir);
  assert_int_equal(symlink("self.so", a), 0);
  refused(f->reg, a, -ELOOP, "a loop of symbolic links");
}

/* A reload that meets a special file at the module's path: the same refusal, and the
 * current version serves on. */
static void t_reload_special(void **state) {
  fixture *f = *state;
  char p[4200];
  hm_module *mod;
  hm_live *ver;
  snprintf(p, sizeof p, "%s/sq.so", f->dir);
  hmt_install(hmt_mod("square_v1"), p);
  assert_int_equal(hm_module_load(f->reg, "sq", p, &mod), 0);
  assert_int_equal(hm_live_get(f->reg, "sq:version", &ver), 0);
  assert_int_equal(unlink(p), 0);
  assert_int_equal(symlink("/dev/zero", p), 0);
  assert_int_equal(hm_module_reload(mod), HM_ENOTELF);
  assert_non_null(strstr(hm_errmsg(), "character device"));
  assert_int_equal(HM_LIVE_CALL(ver, ifn), 1);
  assert_int_equal(hm_module_version(mod), 1);
}

/* ---- Who could have written the file ----------------------------------------------------- */

/* A directory anyone may write to: anyone could replace the module in it. */
static void t_dir_world_writable(void **state) {
  fixture *f = *state;
  const char *d = subdir(f, "pub", 0777), *p = put(d, "sq.so", "square_v2");
  char needle[4300];
  hm_registry *lax;
  snprintf(needle, sizeof needle, "(fix: chmod o-w %s;", d);
  refused(f->reg, p, HM_EACCES, needle);
  assert_non_null(strstr(hm_errmsg(), "writable by other users (mode 0777)"));
  reload_refused(f, p, HM_EACCES, needle);
  /* The host may opt out. */
  lax = hmt_registry(HM_FLAG_ALLOW_WRITABLE);
  accepted(lax, p);
  hm_registry_free(lax);
  /* Fixed as the message says. */
  assert_int_equal(chmod(d, 0755), 0);
  accepted(f->reg, p);
}

static void t_file_world_writable(void **state) {
  fixture *f = *state;
  const char *p = put(f->dir, "sq.so", "square_v2");
  char needle[4300];
  assert_int_equal(chmod(p, 0666), 0);
  snprintf(needle, sizeof needle, "(fix: chmod o-w %s;", p);
  refused(f->reg, p, HM_EACCES, needle);
  reload_refused(f, p, HM_EACCES, needle);
}

/* A sticky directory (/tmp): others may write to it but not replace our entry. */
static void t_sticky_dir_own_file(void **state) {
  fixture *f = *state;
  const char *d = subdir(f, "sticky", 01777), *p = put(d, "sq.so", "square_v2");
  char link[4200];
  accepted(f->reg, p);
  if (!need_root("an entry of another user in a sticky directory"))
    return;
  /* Our file, reached through a link there that another user owns (and so may replace). */
  snprintf(link, sizeof link, "%s/link.so", d);
  assert_int_equal(symlink(p, link), 0);
  assert_int_equal(lchown(link, NOBODY, NOBODY), 0);
  refused(f->reg, link, HM_EACCES, "although it is sticky, the entry there is owned by");
}

/* Debian's user private groups: group-writable builds in the user's own group load. */
static void t_private_group_writable(void **state) {
  fixture *f = *state;
  struct passwd *pw = getpwuid(geteuid());
  struct group *gr = getgrgid(getegid());
  const char *d, *p;
  char needle[4300];
  if (pw == NULL || gr == NULL || strcmp(pw->pw_name, gr->gr_name) != 0) {
    print_message("skipped: the group %u of user %u is not a private group\n",
                  (unsigned)getegid(), (unsigned)geteuid());
    return;
  }
  d = subdir(f, "grp", 0770);
  p = put(d, "sq.so", "square_v2");
  assert_int_equal(chmod(p, 0775), 0);
  accepted(f->reg, p);
  /* A shared group may not write. */
  if (!need_root("a file in a group that is not private"))
    return;
  gr = getgrnam("staff");
  if (gr == NULL)
    gr = getgrnam("users");
  if (gr == NULL) {
    print_message("skipped: no group staff or users to share\n");
    return;
  }
  assert_int_equal(chown(p, 0, gr->gr_gid), 0);
  snprintf(needle, sizeof needle, "(fix: chmod g-w %s;", p);
  refused(f->reg, p, HM_EACCES, needle);
  assert_non_null(strstr(hm_errmsg(), "which is not its owner's private group"));
  reload_refused(f, p, HM_EACCES, needle);
  /* The file fixed, its directory in that group next. */
  assert_int_equal(chown(p, 0, 0), 0);
  assert_int_equal(chown(d, 0, gr->gr_gid), 0);
  snprintf(needle, sizeof needle, "(fix: chmod g-w %s;", d);
  refused(f->reg, p, HM_EACCES, needle);
}

static void t_other_owner(void **state) {
  fixture *f = *state;
  const char *p, *d, *q;
  hm_registry *lax;
  if (!need_root("a file owned by another user (made with chown)"))
    return;
  p = put(f->dir, "sq.so", "square_v2");
  assert_int_equal(chown(p, NOBODY, NOBODY), 0);
  refused(f->reg, p, HM_EACCES, "is owned by nobody (uid 65534)");
  assert_non_null(strstr(hm_errmsg(), "only files of this process's user root (uid 0) or root"));
  reload_refused(f, p, HM_EACCES, "is owned by nobody");
  lax = hmt_registry(HM_FLAG_ALLOW_WRITABLE);
  accepted(lax, p);
  hm_registry_free(lax);
  /* Our file in a directory of another user, who could replace it. */
  d = subdir(f, "theirs", 0755);
  q = put(d, "sq.so", "square_v2");
  assert_int_equal(chown(d, NOBODY, NOBODY), 0);
  refused(f->reg, q, HM_EACCES, "its directory");
  assert_non_null(strstr(hm_errmsg(), "is owned by nobody"));
}

/* ---- noexec ------------------------------------------------------------------------------ */

/* A tmpfs mounted at f->dir/name with `flags` and `opts`, or NULL (skipped, saying why)
 * where mounting is not allowed. One per fixture; teardown unmounts it. */
static const char *tmpfs_mount(fixture *f, const char *name, unsigned long flags,
                               const char *opts, const char *what) {
  const char *d;
  if (!need_root(what))
    return NULL;
  d = subdir(f, name, 0700);
  if (mount("tmpfs", d, "tmpfs", flags | MS_NOSUID | MS_NODEV, opts) != 0) {
    print_message("skipped: cannot mount %s on %s: %s\n", what, d, strerror(errno));
    return NULL;
  }
  snprintf(f->mounted, sizeof f->mounted, "%s", d);
  return d;
}

/* A noexec tmpfs at f->dir/name, or NULL (skipped) where mounting is not allowed. */
static const char *noexec_mount(fixture *f, const char *name) {
  return tmpfs_mount(f, name, MS_NOEXEC, "mode=0700", "a noexec tmpfs");
}

static void t_noexec_private_root(void **state) {
  fixture *f = *state;
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = (hm_registry *)&reg;
  const char *nx = noexec_mount(f, "nx");
  if (nx == NULL)
    return;
  o.flags = HM_FLAG_QUIET;
  o.private_root = nx;
  assert_int_equal(hm_registry_new(&reg, &o), HM_EACCES);
  assert_null(reg);
  assert_non_null(strstr(hm_errmsg(), nx));
  assert_non_null(strstr(hm_errmsg(), "mounted noexec"));
  assert_int_equal(hmt_count_files(nx), 0); /* nothing made there */
}

/* A module on a noexec mount is refused: its private copy would run what noexec forbids.
 * HM_FLAG_ALLOW_WRITABLE (about writers) does not change that. */
static void t_noexec_module(void **state) {
  fixture *f = *state;
  const char *nx = noexec_mount(f, "nx"), *p;
  hm_registry *lax;
  if (nx == NULL)
    return;
  p = put(nx, "sq.so", "square_v2");
  refused(f->reg, p, HM_EACCES, "is on a filesystem mounted noexec");
  reload_refused(f, p, HM_EACCES, "mounted noexec");
  lax = hmt_registry(HM_FLAG_ALLOW_WRITABLE);
  refused(lax, p, HM_EACCES, "mounted noexec");
  hm_registry_free(lax);
}

/* ---- Stale private directories ----------------------------------------------------------- */

typedef struct holder {
  pid_t pid;       /* this program with --hold */
  pid_t forked;    /* its forked child (--hold-fork), or 0 */
  char dir[4200];  /* its registry's private directory */
} holder;

/* Run this program as a process that makes a registry in `root`, loads a module and waits
 * to be killed, with `fork_child`: after forking a child that waits too. */
static holder hold_start(fixture *f, const char *root, int fork_child) {
  holder h;
  int pfd[2], forked = 0;
  char line[4300];
  char *argv[5];
  FILE *in;
  posix_spawn_file_actions_t fa;
  memset(&h, 0, sizeof h);
  argv[0] = (char *)self_exe;
  argv[1] = (char *)(fork_child ? "--hold-fork" : "--hold");
  argv[2] = (char *)root;
  argv[3] = (char *)hmt_mod("square_v1");
  argv[4] = NULL;
  assert_int_equal(pipe(pfd), 0);
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pfd[0]);
  assert_int_equal(posix_spawn(&h.pid, self_exe, &fa, NULL, argv, environ), 0);
  f->kill_at_end[0] = h.pid;
  posix_spawn_file_actions_destroy(&fa);
  close(pfd[1]);
  in = fdopen(pfd[0], "r");
  assert_non_null(in);
  assert_non_null(fgets(line, sizeof line, in)); /* EOF: the holder failed (see stderr) */
  fclose(in);
  assert_int_equal(sscanf(line, "%4199s %d", h.dir, &forked), 2);
  h.forked = (pid_t)forked;
  f->kill_at_end[1] = h.forked;
  assert_true(hmt_count_files(h.dir) >= 1); /* the module's copy */
  return h;
}

static void hold_kill(fixture *f, holder *h) {
  int st;
  assert_int_equal(kill(h->pid, SIGKILL), 0);
  assert_int_equal(waitpid(h->pid, &st, 0), h->pid);
  assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  f->kill_at_end[0] = 0;
}

/* The child side of hold_start. */
static int hold_main(const char *mode, const char *root, const char *module) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  pid_t child = 0;
  o.flags = HM_FLAG_QUIET;
  o.private_root = root;
  if (hm_registry_new(&reg, &o) != 0 || hm_module_load(reg, "held", module, NULL) != 0) {
    fprintf(stderr, "holder: %s\n", hm_errmsg());
    return 1;
  }
  if (strcmp(mode, "--hold-fork") == 0) {
    int ready[2];
    char c;
    if (pipe(ready) != 0)
      return 1;
    child = fork();
    if (child == 0) {
      /* fork() has returned here: the fork handlers ran (the lock's copy is closed). */
      (void)!write(ready[1], "r", 1);
      for (;;)
        pause();
    }
    close(ready[1]);
    if (child < 0 || read(ready[0], &c, 1) != 1)
      return 1;
    close(ready[0]);
  }
  printf("%s %d\n", hm_registry_dir(reg), (int)child);
  fflush(stdout);
  for (;;)
    pause();
}

static hm_registry *registry_in(const char *root) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  o.flags = HM_FLAG_QUIET;
  o.private_root = root;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  return reg;
}

/* A process killed with its registry: the next registry removes what it left. */
static void t_stale_dead_removed(void **state) {
  fixture *f = *state;
  const char *root = subdir(f, "root", 0700);
  holder h = hold_start(f, root, 0);
  hm_registry *reg;
  hold_kill(f, &h);
  assert_true(hmt_count_files(h.dir) >= 1); /* left behind */
  reg = registry_in(root);
  assert_int_equal(hmt_count_files(h.dir), -1);
  assert_int_equal(hmt_count_files(root), 1); /* the new registry's own */
  hm_registry_free(reg);
  assert_int_equal(hmt_count_files(root), 0);
}

/* A live process's directory is never touched, however many registries start. */
static void t_stale_live_kept(void **state) {
  fixture *f = *state;
  const char *root = subdir(f, "root", 0700);
  holder h = hold_start(f, root, 0);
  int files = hmt_count_files(h.dir), i;
  hm_registry *reg;
  for (i = 0; i < 3; i++) {
    reg = registry_in(root);
    assert_int_equal(hmt_count_files(h.dir), files);
    hm_registry_free(reg);
  }
  hold_kill(f, &h);
  reg = registry_in(root);
  assert_int_equal(hmt_count_files(h.dir), -1);
  hm_registry_free(reg);
}

/* A child forked by the holder does not keep its registry's directory locked: once the
 * holder is gone, the directory is stale though the child lives on. */
static void t_stale_forked_child_lets_go(void **state) {
  fixture *f = *state;
  const char *root = subdir(f, "root", 0700);
  holder h = hold_start(f, root, 1);
  hm_registry *reg;
  assert_true(h.forked > 0);
  hold_kill(f, &h);
  assert_int_equal(kill(h.forked, 0), 0); /* alive */
  reg = registry_in(root);
  assert_int_equal(hmt_count_files(h.dir), -1);
  hm_registry_free(reg);
  kill(h.forked, SIGKILL); /* the holder's child, reaped by whoever adopted it */
  f->kill_at_end[1] = 0;
}

/* d/name as a directory with `mode` holding a file `file` (if not NULL); static buffer. */
static const char *stale_dir(const char *d, const char *name, mode_t mode, const char *file) {
  const char *p = hmt_path(d, name);
  assert_int_equal(mkdir(p, 0700), 0);
  if (file != NULL)
    hmt_write(hmt_path(p, file), "x", 1);
  assert_int_equal(chmod(p, mode), 0);
  return p;
}

static int exists(const char *p) {
  struct stat st;
  return lstat(p, &st) == 0;
}

/* Only what is ours is removed: the exact name, our user, a real directory only we may
 * enter, and inside only the loader's copies; links are never followed. */
static void t_stale_only_ours(void **state) {
  fixture *f = *state;
  const char *root = subdir(f, "root", 0700), *victim = subdir(f, "victim", 0700);
  char buf[4200];
  hm_registry *reg;
  hmt_write(hmt_path(victim, "v.1.so"), "x", 1);
  stale_dir(root, "hotmod-priv-GGGGGG", 0700, "sq.1.so"); /* stale: removed */
  stale_dir(root, "hotmod-priv-AAAAAA", 0700, "sq.1.so");
  hmt_write(hmt_path(hmt_path(root, "hotmod-priv-AAAAAA"), "notes.txt"), "x", 1);
  assert_int_equal(symlink(hmt_path(victim, "v.1.so"),
                           hmt_path(hmt_path(root, "hotmod-priv-AAAAAA"), "l.2.so")),
                   0);
  assert_int_equal(symlink(victim, hmt_path(root, "hotmod-priv-BBBBBB")), 0);
  stale_dir(root, "hotmod-priv-CCCCCCC", 0700, "sq.1.so"); /* one character too many */
  stale_dir(root, "hotmod-DDDDDD", 0700, "sq.1.so");        /* an older hotmod's: no lock */
  stale_dir(root, "hotmod-priv-EEEEEE", 0755, "sq.1.so");  /* not a private directory */
  if (geteuid() == 0)
    assert_int_equal(chown(stale_dir(root, "hotmod-priv-FFFFFF", 0700, "sq.1.so"), NOBODY,
                           NOBODY),
                     0);
  reg = registry_in(root);
  assert_false(exists(hmt_path(root, "hotmod-priv-GGGGGG")));
  /* Our copy went; the rest of that directory, and so the directory, stayed. */
  snprintf(buf, sizeof buf, "%s/hotmod-priv-AAAAAA", root);
  assert_false(exists(hmt_path(buf, "sq.1.so")));
  assert_true(exists(hmt_path(buf, "notes.txt")));
  assert_true(exists(hmt_path(buf, "l.2.so")));
  assert_true(exists(hmt_path(victim, "v.1.so")));
  assert_true(exists(hmt_path(root, "hotmod-priv-BBBBBB")));
  assert_true(exists(hmt_path(hmt_path(root, "hotmod-priv-CCCCCCC"), "sq.1.so")));
  assert_true(exists(hmt_path(hmt_path(root, "hotmod-DDDDDD"), "sq.1.so")));
  assert_true(exists(hmt_path(hmt_path(root, "hotmod-priv-EEEEEE"), "sq.1.so")));
  if (geteuid() == 0)
    assert_true(exists(hmt_path(hmt_path(root, "hotmod-priv-FFFFFF"), "sq.1.so")));
  hm_registry_free(reg);
}

/* TMPDIR and XDG_RUNTIME_DIR as they were before a test changed them. */
typedef struct saved_env {
  char tmp[4200], xdg[4200];
  int had_tmp, had_xdg;
} saved_env;

static void env_save(saved_env *e) {
  const char *t = getenv("TMPDIR"), *x = getenv("XDG_RUNTIME_DIR");
  e->had_tmp = t != NULL;
  e->had_xdg = x != NULL;
  snprintf(e->tmp, sizeof e->tmp, "%s", t ? t : "");
  snprintf(e->xdg, sizeof e->xdg, "%s", x ? x : "");
}

static void env_restore(const saved_env *e) {
  if (e->had_tmp)
    setenv("TMPDIR", e->tmp, 1);
  else
    unsetenv("TMPDIR");
  if (e->had_xdg)
    setenv("XDG_RUNTIME_DIR", e->xdg, 1);
  else
    unsetenv("XDG_RUNTIME_DIR");
}

/* Every place a private directory can be is swept: private_root, $TMPDIR, $XDG_RUNTIME_DIR
 * and /dev/shm (and /tmp, not staged here: it is shared with everything else). */
static void t_stale_every_place(void **state) {
  fixture *f = *state;
  const char *places[4];
  char stale[4][4200];
  saved_env env;
  hm_registry *reg;
  int i, n = 3;
  env_save(&env);
  places[0] = subdir(f, "proot", 0700);
  places[1] = subdir(f, "tmpdir", 0700);
  places[2] = subdir(f, "xdg", 0700);
  places[3] = "/dev/shm";
  if (exists("/dev/shm"))
    n = 4;
  else
    print_message("no /dev/shm here: not staged\n");
  for (i = 0; i < n; i++) {
    snprintf(stale[i], sizeof stale[i], "%s/hotmod-priv-XXXXXX", places[i]);
    assert_non_null(mkdtemp(stale[i]));
    hmt_write(hmt_path(stale[i], "m.7.so"), "x", 1);
  }
  setenv("TMPDIR", places[1], 1);
  setenv("XDG_RUNTIME_DIR", places[2], 1);
  reg = registry_in(places[0]);
  env_restore(&env);
  for (i = 0; i < n; i++) {
    if (exists(stale[i]))
      print_error("%s was not removed\n", stale[i]);
    assert_false(exists(stale[i]));
  }
  hm_registry_free(reg);
}

/* One start removes a bounded number; the rest go at the next starts. */
static void t_stale_bounded(void **state) {
  fixture *f = *state;
  const char *root = subdir(f, "root", 0700);
  char name[64];
  hm_registry *reg;
  int i, left;
  for (i = 0; i < 40; i++) {
    snprintf(name, sizeof name, "hotmod-priv-s%05d", i);
    stale_dir(root, name, 0700, "m.1.so");
  }
  reg = registry_in(root);
  left = hmt_count_files(root) - 1; /* not the new registry's own */
  hm_registry_free(reg);
  assert_true(left > 0 && left < 40);
  reg = registry_in(root);
  hm_registry_free(reg);
  assert_int_equal(hmt_count_files(root), 0);
}

/* ---- Where the private directory goes -------------------------------------------------- */

static int is_tmpfs(const char *p) {
  struct statfs fs;
  return statfs(p, &fs) == 0 && (unsigned long)fs.f_type == (unsigned long)TMPFS_MAGIC;
}

/* `dir` is a private directory right inside `root`. */
static int inside(const char *dir, const char *root) {
  size_t n = strlen(root);
  return dir != NULL && strncmp(dir, root, n) == 0 &&
         strncmp(dir + n, "/hotmod-priv-", 13) == 0 && strchr(dir + n + 1, '/') == NULL;
}

/* A registry made with no private_root, TMPDIR and XDG_RUNTIME_DIR as given (NULL: unset). */
static hm_registry *default_registry(const char *tmpdir, const char *xdg) {
  if (tmpdir != NULL)
    setenv("TMPDIR", tmpdir, 1);
  else
    unsetenv("TMPDIR");
  if (xdg != NULL)
    setenv("XDG_RUNTIME_DIR", xdg, 1);
  else
    unsetenv("XDG_RUNTIME_DIR");
  return registry_in(NULL);
}

/* A directory of ours on /dev/shm with `mode`, or NULL (skipped) if /dev/shm is no tmpfs
 * or is mounted noexec (as in Docker's default containers). */
static char *shm_dir(mode_t mode) {
  struct statvfs vfs;
  char *d = malloc(64);
  snprintf(d, 64, "/dev/shm/hmtest-xdg-XXXXXX");
  if (!is_tmpfs("/dev/shm") || statvfs("/dev/shm", &vfs) != 0 || (vfs.f_flag & ST_NOEXEC) ||
      mkdtemp(d) == NULL) {
    print_message("skipped: no exec-capable tmpfs at /dev/shm to stand in for "
                  "XDG_RUNTIME_DIR\n");
    free(d);
    return NULL;
  }
  assert_int_equal(chmod(d, mode), 0);
  return d;
}

/* The file a snapshot's function was mapped from: the version's private copy. */
static void copy_of(hm_registry *reg, const char *qualified, char *out, size_t len) {
  hm_snapshot *snap;
  hm_fn fn;
  void *p;
  Dl_info info;
  assert_int_equal(hm_snapshot_acquire(reg, qualified, &snap), 0);
  fn = hm_snapshot_fn(snap);
  memcpy(&p, &fn, sizeof p);
  assert_true(dladdr(p, &info) != 0 && info.dli_fname != NULL);
  snprintf(out, len, "%s", info.dli_fname);
  hm_snapshot_release(snap);
}

/* Nobody chose a place: the private directory goes on tmpfs, $XDG_RUNTIME_DIR first, and
 * loads from there. TMPDIR and private_root still win when set. */
static void t_default_tmpfs(void **state) {
  fixture *f = *state;
  char *xdg = shm_dir(0700), copy[4200];
  const char *p = put(f->dir, "sq.so", "square_v1");
  saved_env env;
  hm_registry *reg;
  hm_module *mod;
  hm_live *ver;
  if (xdg == NULL)
    return;
  env_save(&env);
  reg = default_registry(NULL, xdg);
  if (!inside(hm_registry_dir(reg), xdg))
    print_error("private directory %s, expected one in %s\n", hm_registry_dir(reg), xdg);
  assert_true(inside(hm_registry_dir(reg), xdg));
  assert_int_equal(hm_module_load(reg, "m", p, &mod), 0);
  assert_int_equal(hm_live_get(reg, "m:version", &ver), 0);
  assert_int_equal(HM_LIVE_CALL(ver, ifn), 1);
  copy_of(reg, "m:version", copy, sizeof copy);
  assert_true(strncmp(copy, hm_registry_dir(reg), strlen(hm_registry_dir(reg))) == 0);
  hm_registry_free(reg);
  reg = default_registry(f->dir, xdg); /* TMPDIR wins */
  assert_true(inside(hm_registry_dir(reg), f->dir));
  hm_registry_free(reg);
  setenv("TMPDIR", f->dir, 1);
  reg = registry_in(xdg); /* and private_root wins over TMPDIR */
  assert_true(inside(hm_registry_dir(reg), xdg));
  hm_registry_free(reg);
  env_restore(&env);
  assert_int_equal(hmt_count_files(xdg), 0);
  hmt_rm_rf(xdg);
  free(xdg);
}

/* A candidate that is not a tmpfs, that others may write in (and is not sticky), that is
 * not an absolute path, or that is mounted noexec is passed over. */
static void t_default_skips(void **state) {
  fixture *f = *state;
  char *open_dir = shm_dir(0777);
  const char *disk = subdir(f, "disk", 0700), *nx;
  saved_env env;
  hm_registry *reg;
  env_save(&env);
  if (!is_tmpfs(disk)) {
    reg = default_registry(NULL, disk);
    assert_false(inside(hm_registry_dir(reg), disk));
    hm_registry_free(reg);
  }
  if (open_dir != NULL) {
    reg = default_registry(NULL, open_dir);
    assert_false(inside(hm_registry_dir(reg), open_dir));
    hm_registry_free(reg);
    assert_int_equal(chmod(open_dir, 01777), 0); /* sticky, as /tmp: usable */
    reg = default_registry(NULL, open_dir);
    assert_true(inside(hm_registry_dir(reg), open_dir));
    hm_registry_free(reg);
    hmt_rm_rf(open_dir);
    free(open_dir);
  }
  reg = default_registry(NULL, "dev/shm"); /* relative: not used */
  assert_true(hm_registry_dir(reg)[0] == '/');
  hm_registry_free(reg);
  nx = noexec_mount(f, "nx");
  if (nx != NULL) {
    reg = default_registry(NULL, nx);
    if (inside(hm_registry_dir(reg), nx))
      print_error("the private directory %s is on a noexec mount\n", hm_registry_dir(reg));
    assert_false(inside(hm_registry_dir(reg), nx));
    hm_registry_free(reg);
  }
  env_restore(&env);
}

/* Fill the file system of `dir` (a small tmpfs) to the last byte. */
static void fill(const char *dir) {
  static char block[4096];
  int fd = open(hmt_path(dir, "filler"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  while (write(fd, block, sizeof block) > 0)
    ;
  assert_true(errno == ENOSPC);
  while (write(fd, block, 1) > 0)
    ;
  close(fd);
}

/* The default tmpfs is full: copies go to a second private directory under TMPDIR or /tmp,
 * made when first needed and removed with the registry; loads and reloads work. A tmpfs
 * that was chosen (private_root) is not spilled over: ENOSPC. */
static void t_spill_when_full(void **state) {
  fixture *f = *state;
  const char *small = tmpfs_mount(f, "small", 0, "size=64k,mode=0700", "a 64 KiB tmpfs");
  const char *p = put(f->dir, "sq.so", "square_v1");
  char copy[4200], spill[4200];
  saved_env env;
  hm_registry *reg;
  hm_module *mod = NULL;
  hm_live *ver;
  struct statvfs vfs;
  int rc;
  if (small == NULL)
    return;
  if (statvfs("/tmp", &vfs) != 0 || (vfs.f_flag & ST_NOEXEC)) {
    print_message("skipped: /tmp, where copies spill over to, is mounted noexec\n");
    return;
  }
  fill(small);
  env_save(&env);
  reg = default_registry(NULL, small);
  assert_true(inside(hm_registry_dir(reg), small));
  rc = hm_module_load(reg, "m", p, &mod);
  if (rc != 0)
    print_error("load on a full tmpfs: %s (%s)\n", hm_err_name(rc), hm_errmsg());
  assert_int_equal(rc, 0);
  assert_int_equal(hm_live_get(reg, "m:version", &ver), 0);
  assert_int_equal(HM_LIVE_CALL(ver, ifn), 1);
  copy_of(reg, "m:version", copy, sizeof copy);
  snprintf(spill, sizeof spill, "%s", copy);
  *strrchr(spill, '/') = '\0';
  assert_true(inside(spill, "/tmp"));
  put(f->dir, "sq.so", "square_v2");
  assert_int_equal(hm_module_reload(mod), 0);
  assert_int_equal(HM_LIVE_CALL(ver, ifn), 2);
  copy_of(reg, "m:version", copy, sizeof copy);
  assert_true(strncmp(copy, spill, strlen(spill)) == 0 && copy[strlen(spill)] == '/');
  assert_int_equal(hmt_count_files(hm_registry_dir(reg)), 0);
  hm_registry_free(reg);
  assert_false(exists(spill));
  /* Chosen, not defaulted: the full tmpfs is an error, not a reason to go elsewhere. */
  reg = registry_in(small);
  rc = hm_module_load(reg, "m", p, &mod);
  assert_int_equal(rc, -ENOSPC);
  assert_non_null(strstr(hm_errmsg(), "private copy"));
  hm_registry_free(reg);
  env_restore(&env);
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_fifo, setup, teardown),
      cmocka_unit_test_setup_teardown(t_socket, setup, teardown),
      cmocka_unit_test_setup_teardown(t_dev_zero, setup, teardown),
      cmocka_unit_test_setup_teardown(t_directory, setup, teardown),
      cmocka_unit_test_setup_teardown(t_missing_and_linked, setup, teardown),
      cmocka_unit_test_setup_teardown(t_symlink_loop, setup, teardown),
      cmocka_unit_test_setup_teardown(t_reload_special, setup, teardown),
      cmocka_unit_test_setup_teardown(t_dir_world_writable, setup, teardown),
      cmocka_unit_test_setup_teardown(t_file_world_writable, setup, teardown),
      cmocka_unit_test_setup_teardown(t_sticky_dir_own_file, setup, teardown),
      cmocka_unit_test_setup_teardown(t_private_group_writable, setup, teardown),
      cmocka_unit_test_setup_teardown(t_other_owner, setup, teardown),
      cmocka_unit_test_setup_teardown(t_noexec_private_root, setup, teardown),
      cmocka_unit_test_setup_teardown(t_noexec_module, setup, teardown),
      cmocka_unit_test_setup_teardown(t_stale_dead_removed, setup, teardown),
      cmocka_unit_test_setup_teardown(t_stale_live_kept, setup, teardown),
      cmocka_unit_test_setup_teardown(t_stale_forked_child_lets_go, setup, teardown),
      cmocka_unit_test_setup_teardown(t_stale_only_ours, setup, teardown),
      cmocka_unit_test_setup_teardown(t_stale_every_place, setup, teardown),
      cmocka_unit_test_setup_teardown(t_stale_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(t_default_tmpfs, setup, teardown),
      cmocka_unit_test_setup_teardown(t_default_skips, setup, teardown),
      cmocka_unit_test_setup_teardown(t_spill_when_full, setup, teardown),
  };
  if (argc == 4 && strncmp(argv[1], "--hold", 6) == 0)
    return hold_main(argv[1], argv[2], argv[3]);
  self_exe = argv[0];
  return cmocka_run_group_tests(tests, NULL, NULL);
}
