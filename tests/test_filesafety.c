/* File safety: what the loader refuses to read as a module, and with which code and
 * message. Special files and symlink loops are refused at once, never waited on. */
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef int (*ifn)(void);

typedef struct fixture {
  char *dir; /* scratch, mode 0700, owned by this process's user */
  hm_registry *reg;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->dir = hmt_tmpdir();
  f->reg = hmt_registry(0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
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
 * and contains `needle`, and leaves nothing in the private directory. */
static void refused(hm_registry *reg, const char *path, int code, const char *needle) {
  double t0 = now_s();
  hm_module *mod = (hm_module *)&mod;
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
  assert_int_equal(hmt_count_files(hm_registry_dir(reg)), 0);
}

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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_fifo, setup, teardown),
      cmocka_unit_test_setup_teardown(t_socket, setup, teardown),
      cmocka_unit_test_setup_teardown(t_dev_zero, setup, teardown),
      cmocka_unit_test_setup_teardown(t_directory, setup, teardown),
      cmocka_unit_test_setup_teardown(t_symlink_loop, setup, teardown),
      cmocka_unit_test_setup_teardown(t_reload_special, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
