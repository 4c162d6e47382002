/*
 * Crash containment, the host's side: run a new build in a short-lived child process
 * (hotmod-probe, src/probe_main.c) before the host loads it, and refuse it when the child
 * dies in the module's code, or does not finish in time. The child reports each step on a
 * pipe; what the module's code did is read from the last step and the child's exit status.
 *
 * Layer 2 (docs/architecture.md): calls spawn.c, dlgate.c and the leaves.
 */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef HM_PROBE_RELDIR
#define HM_PROBE_RELDIR "../libexec/hotmod" /* from the library's directory */
#endif
#ifndef HM_PROBE_BIN_RELDIR
#define HM_PROBE_BIN_RELDIR "../libexec/hotmod" /* from the programs' directory */
#endif
#ifndef HM_PROBE_INSTALLED
#define HM_PROBE_INSTALLED "/usr/local/libexec/hotmod/hotmod-probe"
#endif
#define HM_PROBE_NAME "hotmod-probe"


static int executable(const char *path) { return access(path, X_OK) == 0; }

/* Is `addr` in the main program (a host that linked the static library)? The first object
 * dl_iterate_phdr reports is the program. */
static int in_program(struct dl_phdr_info *info, size_t size, void *addr) {
  uintptr_t a = (uintptr_t)addr;
  int i;
  (void)size;
  for (i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
    if (ph->p_type == PT_LOAD && a >= lo && a - lo < ph->p_memsz)
      return 1;
  }
  return -1; /* stop after the first object: not the program */
}

/* The directory of the object this code is in, absolute: libhotmod.so as the loader found
 * it, or the program itself from /proc/self/exe (never argv[0], which the caller chose).
 * *program (may be NULL) says which. */
static int own_dir(char *out, size_t n, int *program) {
  Dl_info info;
  char found[PATH_MAX], *slash;
  ssize_t len;
  int prog = hm__dl_iterate_phdr(in_program, (void *)own_dir) == 1;
  memset(&info, 0, sizeof info);
  if (program != NULL)
    *program = 1;
  if (!prog && dladdr((void *)own_dir, &info) != 0 && info.dli_fname != NULL &&
      strchr(info.dli_fname, '/') != NULL) {
    if (realpath(info.dli_fname, found) == NULL)
      return -1;
    if (program != NULL)
      *program = 0;
  } else {
    len = readlink("/proc/self/exe", found, sizeof found - 1);
    if (len <= 0)
      return -1;
    found[len] = '\0';
  }
  slash = strrchr(found, '/');
  if (slash == NULL || snprintf(out, n, "%.*s", (int)(slash - found), found) >= (int)n)
    return -1;
  return 0;
}

int hm__probe_find(const hm__allocator *a, char **out) {
  const char *env = secure_getenv("HOTMOD_PROBE");
  char dir[PATH_MAX], cand[PATH_MAX + 64];
  *out = NULL;
  if (env != NULL && env[0] != '\0') {
    /* Absolute, so a later chdir cannot change which program runs. */
    if (!executable(env) || realpath(env, cand) == NULL)
      return hm__fail(HM_ENOENT, "HOTMOD_PROBE=%s is not an executable file", env);
    *out = hm__strdup(a, cand);
  } else {
    int program = 0;
    cand[0] = '\0';
    if (own_dir(dir, sizeof dir, &program) == 0) {
      /* Installed: libexec relative to the library, or to the program that linked the static
       * library (installed where hotmod's own programs go). */
      snprintf(cand, sizeof cand, "%s/%s/%s", dir, program ? HM_PROBE_BIN_RELDIR : HM_PROBE_RELDIR,
               HM_PROBE_NAME);
      if (!executable(cand)) /* a build tree: beside the library or the program */
        snprintf(cand, sizeof cand, "%s/%s", dir, HM_PROBE_NAME);
    }
    if (cand[0] == '\0' || !executable(cand))
      snprintf(cand, sizeof cand, "%s", HM_PROBE_INSTALLED);
    if (!executable(cand))
      return hm__fail(HM_ENOENT,
                      "the crash-containment helper " HM_PROBE_NAME " is not installed "
                      "beside libhotmod (looked in %s/%s and %s): install hotmod completely, "
                      "or set HOTMOD_PROBE to its path",
                      own_dir(dir, sizeof dir, &program) == 0 ? dir : "?",
                      program ? HM_PROBE_BIN_RELDIR : HM_PROBE_RELDIR, HM_PROBE_INSTALLED);
    *out = hm__strdup(a, cand);
  }
  return *out != NULL ? 0 : hm__fail(HM_ENOMEM, "out of memory");
}

static const char *step_words(const char *step) {
  if (strcmp(step, "dlopen") == 0)
    return "in its constructors (dlopen)";
  if (strcmp(step, "load") == 0)
    return "in its load hook";
  if (strcmp(step, "resolve") == 0)
    return "while its symbols were resolved";
  if (strcmp(step, "selftest") == 0)
    return "in its self-test";
  if (strcmp(step, "dlclose") == 0)
    return "in its destructors (dlclose)";
  return "before the helper opened it";
}

/* The child's verdict, when the last complete line of its report is one. */
static const char *verdict(const char *buf) {
  const char *end = strrchr(buf, '\n'), *line;
  if (end == NULL)
    return NULL;
  for (line = end; line > buf && line[-1] != '\n'; line--)
    ;
  if (strncmp(line, "ok\n", 3) == 0 || strncmp(line, "nodlopen ", 9) == 0 ||
      strncmp(line, "selftest ", 9) == 0)
    return line;
  return NULL;
}

/* Append what the pipe holds now, without waiting; 1 at end of file. */
static int drain(int fd, char *buf, size_t cap, size_t *len) {
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;
    if (poll(&p, 1, 0) <= 0)
      return 0;
    if (*len + 1 >= cap) { /* a chatty child: keep the last part */
      memmove(buf, buf + cap / 2, *len - cap / 2);
      *len -= cap / 2;
    }
    n = read(fd, buf + *len, cap - 1 - *len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return 1;
    *len += (size_t)n;
    buf[*len] = '\0';
  }
}

/* Read the child's report until it gives its verdict, closes the pipe or exits (`pidfd`
 * readable, when there is one: a process the host forked meanwhile may hold a copy of the
 * pipe, so end of file alone cannot be waited for), or the deadline passes. Returns 1 when
 * the child is done, 0 on timeout. */
static int read_report(int fd, int pidfd, char *buf, size_t cap, size_t *len,
                       long long deadline_ns) {
  buf[*len] = '\0';
  for (;;) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {pidfd, POLLIN, 0}};
    long long left = deadline_ns - hm__mono_ns();
    long long ms = (left + 999999) / 1000000;
    int r;
    if (left <= 0)
      return 0;
    r = poll(p, pidfd >= 0 ? 2 : 1, ms > INT_MAX ? INT_MAX : (int)ms);
    if (r <= 0)
      continue; /* EINTR or a poll timeout: the loop re-checks the deadline */
    if (p[0].revents != 0 && drain(fd, buf, cap, len))
      return 1;
    if (verdict(buf) != NULL)
      return 1;
    if (pidfd >= 0 && p[1].revents != 0) { /* exited: what it wrote is in the pipe */
      (void)drain(fd, buf, cap, len);
      return 1;
    }
  }
}

/* The last complete line starting with `key ` (or equal to `key`), its rest into out. */
static int last_line(const char *buf, const char *key, char *out, size_t n) {
  const char *p = buf, *found = NULL;
  size_t k = strlen(key);
  while (*p) {
    const char *end = strchr(p, '\n');
    if (end == NULL)
      break; /* an unfinished line is not a report */
    if ((size_t)(end - p) >= k && strncmp(p, key, k) == 0 && (p[k] == ' ' || p + k == end))
      found = p;
    p = end + 1;
  }
  if (found == NULL)
    return 0;
  found += k;
  if (*found == ' ')
    found++;
  snprintf(out, n, "%.*s", (int)(strchr(found, '\n') - found), found);
  return 1;
}

int hm__probe_run(const hm__probe_req *rq, const char *copy) {
  char *argv_buf[3 + HM__PROBE_MAX_SYMS + 1], version[16], buf[4096], step[32], what[300];
  hm__spawn_req sp;
  size_t i, len = 0, nsyms = rq->nsyms < HM__PROBE_MAX_SYMS ? rq->nsyms : HM__PROBE_MAX_SYMS;
  int rfd, wfd, rc, status = 0, waited, finished, pidfd;
  const char *said;
  pid_t pid;

  if ((rc = hm__spawn_pipe(&rfd, &wfd)) != 0)
    return hm__fail(rc, "probe of %s: pipe: %s", rq->path, strerror(-rc));
  snprintf(version, sizeof version, "%u", rq->version);
  argv_buf[0] = (char *)rq->helper;
  argv_buf[1] = (char *)copy;
  argv_buf[2] = version;
  for (i = 0; i < nsyms; i++)
    argv_buf[3 + i] = (char *)rq->syms[i];
  argv_buf[3 + nsyms] = NULL;

  /* stdin and stdout on /dev/null, stderr the host's, the report on 3. */
  memset(&sp, 0, sizeof sp);
  sp.path = rq->helper;
  sp.argv = argv_buf;
  sp.out_fd = -1;
  sp.err_fd = -1;
  sp.fd3 = wfd;
  rc = hm__spawn(&sp, &pid);
  close(wfd);
  if (rc != 0) {
    close(rfd);
    return hm__fail(rc, "cannot run the crash-containment helper %s for %s: %s", rq->helper,
                    rq->path, strerror(-rc));
  }

  pidfd = hm__pidfd_open(pid);
  finished = read_report(rfd, pidfd, buf, sizeof buf, &len,
                         hm__mono_ns() + (long long)rq->timeout_ms * 1000000);
  close(rfd);
  buf[len] = '\0';
  /* Whatever the module's code started in the child's group goes now; then it is reaped. */
  waited = hm__child_end(pid, &status) == 0 ? pid : -1;
  if (pidfd >= 0)
    close(pidfd);

  if (!last_line(buf, "step", step, sizeof step))
    step[0] = '\0';
  if (!finished)
    return hm__fail(HM_ETIMEDOUT,
                    "%s: the crash-containment probe gave up after %u ms: the new build was "
                    "still running %s; the host did not load it",
                    rq->path, rq->timeout_ms, step_words(step));
  said = verdict(buf);
  if (said != NULL && strncmp(said, "selftest ", 9) != 0)
    return 0; /* ok; or dlopen failed there, which is the host's to see */
  if (said != NULL)
    return hm__fail(HM_ECRASHED,
                    "%s: the new build's self-test failed (returned %.*s) in the "
                    "crash-containment probe; the host did not load it",
                    rq->path, (int)strcspn(said + 9, "\n"), said + 9);
  if (waited == pid && WIFSIGNALED(status))
    snprintf(what, sizeof what, "was killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else if (waited == pid && WIFEXITED(status))
    snprintf(what, sizeof what, "ended the process (exit status %d)", WEXITSTATUS(status));
  else
    snprintf(what, sizeof what, "ended the process (how is unknown: its status was reaped "
                                "elsewhere; does the host ignore SIGCHLD?)");
  return hm__fail(HM_ECRASHED,
                  "%s: the new build %s %s in the crash-containment probe; the host did not "
                  "load it",
                  rq->path, what, step_words(step));
}
