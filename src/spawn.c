/*
 * Child processes: the crash-containment probe (probe.c) and build rules (build.c) start
 * their commands here. posix_spawn, never fork (the host may be large and multi-threaded),
 * each child in a process group of its own with every signal at its default and none
 * blocked, and its end watched through a pidfd where the kernel has them (5.3 and later).
 *
 * Not libuv's uv_spawn: it installs libuv's SIGCHLD handler for the whole process, which
 * replaces one the host set, and a host that ignores SIGCHLD or reaps with waitpid(-1)
 * takes the exit status from under it. A pidfd says that the child ended whoever reaps it,
 * and only waitpid on the child's own pid is ever called here: other children of the host
 * are never touched. No child inherits HOTMOD_CONTROL (see env_without_control).
 *
 * Layer 0 (docs/architecture.md): calls only common.c.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int hm__spawn_pipe(int *rfd, int *wfd) {
  int p[2], w;
  if (pipe2(p, O_CLOEXEC) != 0)
    return -errno;
  w = p[1];
  /* Above the child's 0 to 3, which the file actions replace (a host that closed its
   * standard descriptors gets a pipe there), since dup2 onto itself would keep FD_CLOEXEC
   * and the child would lose it. */
  if (w <= 3) {
    w = fcntl(p[1], F_DUPFD_CLOEXEC, 10);
    close(p[1]);
    if (w < 0) {
      int e = -errno;
      close(p[0]);
      return e;
    }
  }
  *rfd = p[0];
  *wfd = w;
  return 0;
}

/* HOTMOD_CONTROL makes a process that links hotmod serve a control socket at that path: a
 * build command or the probe that inherited it would try to serve the host's. */
static int is_control_var(const char *e) {
  return strncmp(e, "HOTMOD_CONTROL=", 15) == 0;
}

/* `env` without HOTMOD_CONTROL: env itself when it has none (the usual case, no copy), else
 * a copy in *copy (freed by the caller), or NULL when out of memory. The registry's
 * allocator is not at hand here: the C library's, for a copy that lives only for the spawn. */
static const hm__allocator libc_alloc = {NULL, NULL};

static char *const *env_without_control(char *const *env, char ***copy) {
  size_t n = 0, k = 0, i;
  int found = 0;
  *copy = NULL;
  for (; env[n] != NULL; n++)
    found |= is_control_var(env[n]);
  if (!found)
    return env;
  *copy = hm__calloc(&libc_alloc, n + 1, sizeof **copy);
  if (*copy == NULL)
    return NULL;
  for (i = 0; i < n; i++)
    if (!is_control_var(env[i]))
      (*copy)[k++] = env[i];
  (*copy)[k] = NULL;
  return *copy;
}

int hm__spawn(const hm__spawn_req *rq, pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none, all;
  char **copy;
  char *const *envp = env_without_control(rq->envp != NULL ? rq->envp : environ, &copy);
  int rc;

  if (envp == NULL)
    return -ENOMEM;

  posix_spawn_file_actions_init(&fa);
  /* The directory first: a relative program path is then taken from there. */
  if (rq->cwd != NULL)
    posix_spawn_file_actions_addchdir_np(&fa, rq->cwd);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (rq->out_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, rq->out_fd, 1);
  else
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (rq->err_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, rq->err_fd, 2);
  if (rq->fd3 >= 0)
    posix_spawn_file_actions_adddup2(&fa, rq->fd3, 3);
  posix_spawnattr_init(&attr);
  /* Its own process group, so that a timeout or a stop kills whatever it started too; the
   * default action for every signal and none blocked, whatever the host's thread has. */
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
  rc = (rq->search_path ? posix_spawnp : posix_spawn)(pid, rq->path, &fa, &attr, rq->argv,
                                                      envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  hm__free(&libc_alloc, copy);
  return -rc;
}

int hm__pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
  }
#else
  (void)pid;
#endif
  return -1;
}

int hm__child_unreaped(pid_t pid) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

int hm__child_exited(pid_t pid) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
    return 1; /* reaped elsewhere: it is gone too */
  return si.si_pid == pid;
}

int hm__child_end(pid_t pid, int *status) {
  pid_t waited = -1;
  if (!hm__child_unreaped(pid))
    return -1;
  /* While the child is not reaped, its pid, and so its group's id, cannot be reused. */
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  do
    waited = waitpid(pid, status, 0);
  while (waited < 0 && errno == EINTR);
  return waited == pid ? 0 : -1;
}
