/* Introspection (hm_module_describe) and the control socket (hm_control_start): what a
 * module reports and why each version is kept, under reloads from other threads; who may
 * connect; requests that are malformed, too long or never finished; queued mode; events
 * that a client does not read; fork(); HOTMOD_CONTROL. No assertion is about time: every
 * wait polls with a generous deadline. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_MS 30000

typedef int (*int_fn)(void);

/* ---- Helpers --------------------------------------------------------------------------- */

/* End a forked child with `code` through exec: under valgrind the child would otherwise run
 * a leak check of the parent's memory at its exit and turn its exit status into its own. */
static void child_exit(int code) {
  char cmd[32];
  snprintf(cmd, sizeof cmd, "exit %d", code);
  execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
  _exit(code);
}

static int connect_to(const char *path) {
  struct sockaddr_un a;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Read until the server closes (or resets after its reply); out is NUL-terminated. */
static size_t read_all(int fd, char *out, size_t cap) {
  size_t len = 0;
  for (;;) {
    struct pollfd pf = {fd, POLLIN, 0};
    ssize_t n;
    assert_true(poll(&pf, 1, DEADLINE_MS) == 1);
    n = recv(fd, out + len, cap - 1 - len, 0);
    if (n <= 0 || len + (size_t)n >= cap - 1) {
      if (n > 0)
        len += (size_t)n;
      break;
    }
    len += (size_t)n;
  }
  out[len] = '\0';
  return len;
}

/* Send `req` (len bytes) on a new connection and read the whole reply. */
static void request(const char *path, const char *req, size_t len, char *out, size_t cap) {
  int fd = connect_to(path);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
  read_all(fd, out, cap);
  close(fd);
}

static void req_str(const char *path, const char *req, char *out, size_t cap) {
  request(path, req, strlen(req), out, cap);
}

/* The info's entry for version `num`, or NULL. */
static const hm_version_info *find_version(const hm_module_info *m, unsigned num) {
  size_t i;
  for (i = 0; i < m->nversions; i++)
    if (m->versions[i].version == num)
      return &m->versions[i];
  return NULL;
}

#define BIT(why) (1u << HM_MAPPED_##why)

/* ---- HOTMOD_CONTROL (first: it concerns the process's first registry) ------------------ */

typedef struct build_seen {
  int done;
} build_seen;

static void on_build(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  build_seen *b = ud;
  (void)mod;
  (void)version;
  (void)err;
  if (ev == HM_EVENT_BUILD_SUCCEEDED || ev == HM_EVENT_BUILD_FAILED)
    __atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
}

static int build_done(void *arg) {
  return __atomic_load_n(&((build_seen *)arg)->done, __ATOMIC_ACQUIRE);
}

static void test_env_first_registry_serves(void **state) {
  char *dir = hmt_tmpdir(), sock[4096], reply[4096], out[4200], src[4200], cmd[4400];
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg, *second;
  hm_module *mod;
  build_seen seen = {0};
  const char *argv[4];
  const char *sources[2];
  hm_build_options b = HM_BUILD_OPTIONS_INIT;
  unsigned char *env;
  size_t len;
  struct stat st;
  (void)state;
  snprintf(sock, sizeof sock, "%s/env.sock", dir);
  setenv("HOTMOD_CONTROL", sock, 1);
  o.flags = HM_FLAG_QUIET;
  o.name = "envhost";
  o.on_event = on_build;
  o.event_userdata = &seen;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  /* The first registry serves at once, with the socket's mode 0600. */
  assert_int_equal(lstat(sock, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));
  assert_int_equal(st.st_mode & 0777, 0600);
  req_str(sock, "status\n", reply, sizeof reply);
  assert_non_null(strstr(reply, "registry envhost"));
  /* A later registry does not (the path is the first one's). */
  assert_int_equal(hm_registry_new(&second, &o), 0);
  hm_registry_free(second);
  req_str(sock, "ping\n", reply, sizeof reply);
  assert_string_equal(reply, "ok pong\n");

  /* A build command does not inherit HOTMOD_CONTROL. */
  assert_int_equal(hm_module_load(reg, "sq", hmt_mod("square_v1"), &mod), 0);
  snprintf(src, sizeof src, "%s/src.c", dir);
  snprintf(out, sizeof out, "%s/env.txt", dir);
  hmt_write(src, "x", 1);
  snprintf(cmd, sizeof cmd, "env > '%s'", out);
  argv[0] = cmd;
  argv[1] = NULL;
  sources[0] = src;
  sources[1] = NULL;
  b.flags = HM_BUILD_SHELL;
  b.argv = argv;
  b.sources = sources;
  b.cwd = dir;
  assert_int_equal(hm_module_set_build(mod, &b), 0);
  assert_int_equal(hm_watch_start(reg), 0);
  {
    /* Saves until one starts the build (the first may come before the rule's watch). */
    int i;
    for (i = 0; i < 300 && !build_done(&seen); i++) {
      hmt_write(src, "y", 1);
      hmt_wait_until(build_done, &seen, 0.1);
    }
  }
  assert_true(hmt_wait_until(build_done, &seen, 30.0));
  env = hmt_read(out, &len);
  assert_true(len > 0);
  assert_non_null(strstr((char *)env, "PATH="));
  assert_null(strstr((char *)env, "HOTMOD_CONTROL"));
  free(env);
  hm_registry_free(reg);
  assert_int_equal(access(sock, F_OK), -1); /* removed with its registry */
  unsetenv("HOTMOD_CONTROL");
  hmt_rm_rf(dir);
  free(dir);
}

/* ---- Introspection --------------------------------------------------------------------- */

static void test_describe_counts_and_why(void **state) {
  hm_registry *reg = hmt_registry(0);
  hm_module *mod, *mods[4];
  hm_snapshot *snap;
  hm_module_info m;
  const hm_version_info *v;
  char *dir = hmt_tmpdir();
  (void)state;
  assert_int_equal(hm_module_load(reg, "sq", hmt_mod("square_v1"), &mod), 0);
  assert_int_equal(hm_registry_modules(reg, mods, 4), 1);
  assert_ptr_equal(mods[0], mod);
  assert_int_equal(hm_module_describe(mod, &m), 0);
  assert_string_equal(m.name, "sq");
  assert_int_equal(m.version, 1);
  assert_int_equal(m.nversions, 1);
  assert_int_equal(m.versions[0].why, BIT(CURRENT));
  assert_string_equal(m.versions[0].note, "");
  assert_int_equal(m.reloads + m.rejects + m.rollbacks, 0);
  assert_int_equal(m.last_reject_ns, 0);
  assert_string_equal(m.last_reject, "");
  assert_string_equal(m.key_id, ""); /* loaded without trusted keys */
  assert_string_equal(m.trusted_comment, "");
  hm_module_info_clear(&m);
  hm_module_info_clear(&m); /* twice: a no-op */
  assert_null(m.key_id);

  /* A caller built with the first version of the struct: nothing past `versions` is
   * written, by the description or by the clearing. */
  memset(&m, 0xA5, sizeof m);
  assert_int_equal(hm_module_describe_get(mod, &m, offsetof(hm_module_info, key_id)), 0);
  assert_string_equal(m.name, "sq");
  assert_int_equal(m.nversions, 1);
  {
    unsigned char tail[sizeof m - offsetof(hm_module_info, key_id)];
    memset(tail, 0xA5, sizeof tail);
    assert_memory_equal((unsigned char *)&m + offsetof(hm_module_info, key_id), tail,
                        sizeof tail);
    hm_module_info_clear(&m);
    assert_null(m.versions);
    assert_memory_equal((unsigned char *)&m + offsetof(hm_module_info, key_id), tail,
                        sizeof tail);
  }

  /* A snapshot pins v1 across a reload; a refused build; the copy kept for rollback. */
  assert_int_equal(hm_snapshot_acquire(reg, "sq:version", &snap), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("square_v2")), 0);
  assert_int_equal(hm_module_reload_from(mod, hmt_path(dir, "missing.so")), HM_ENOENT);
  assert_int_equal(hm_module_describe(mod, &m), 0);
  assert_int_equal(m.version, 2);
  assert_int_equal(m.reloads, 1);
  assert_int_equal(m.rejects, 1);
  assert_int_equal(m.last_reject_err, HM_ENOENT);
  assert_int_equal(m.last_reject_version, 2);
  assert_true(m.last_reject_ns > 0);
  assert_non_null(strstr(m.last_reject, "missing.so"));
  assert_int_equal(m.nhistory, 1);
  assert_int_equal(m.history[0], 1);
  v = find_version(&m, 2);
  assert_non_null(v);
  assert_int_equal(v->why, BIT(CURRENT));
  assert_ptr_equal(&m.versions[0], v); /* newest first */
  v = find_version(&m, 1);
  assert_non_null(v);
  assert_int_equal(v->mapped, 1);
  assert_true(v->why & BIT(PINNED));
  assert_true(v->why & BIT(ROLLBACK));
  assert_int_equal(v->snapshots, 1);
  hm_module_info_clear(&m);

  /* Released: v1 goes; its copy stays for rollback, reported as not mapped. */
  hm_snapshot_release(snap);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 30.0));
  assert_int_equal(hm_module_describe(mod, &m), 0);
  v = find_version(&m, 1);
  assert_non_null(v);
  assert_int_equal(v->mapped, 0);
  assert_int_equal(v->why, BIT(ROLLBACK));
  hm_module_info_clear(&m);

  assert_int_equal(hm_module_rollback(mod), 0);
  assert_int_equal(hm_module_describe(mod, &m), 0);
  assert_int_equal(m.rollbacks, 1);
  assert_int_equal(m.reloads, 1);
  assert_int_equal(m.version, 3);
  assert_int_equal(m.nhistory, 0);
  hm_module_info_clear(&m);

  /* Unloaded: version 0, still listed. */
  assert_int_equal(hm_module_unload(mod), 0);
  assert_int_equal(hm_registry_modules(reg, NULL, 0), 1);
  assert_int_equal(hm_module_describe(mod, &m), 0);
  assert_int_equal(m.version, 0);
  hm_module_info_clear(&m);
  assert_int_equal(hm_module_describe(NULL, &m), HM_EINVAL);
  assert_int_equal(hm_module_describe_get(mod, &m, 8), HM_EINVAL);
  assert_int_equal(hm_registry_modules(NULL, NULL, 0), HM_EINVAL);
  hm_registry_free(reg);
  hmt_rm_rf(dir);
  free(dir);
}

/* A thread inside a live call of v1 holds v1's grace period: introspection names it. */
typedef struct gate {
  pthread_mutex_t m;
  pthread_cond_t c;
  int entered, release;
  int tid;
} gate;

static int hold(void *arg) {
  gate *g = arg;
  pthread_mutex_lock(&g->m);
  g->tid = (int)gettid();
  g->entered = 1;
  pthread_cond_broadcast(&g->c);
  while (!g->release)
    pthread_cond_wait(&g->c, &g->m);
  pthread_mutex_unlock(&g->m);
  return 7;
}

typedef int (*through_fn)(int (*)(void *), void *);

typedef struct holder {
  hm_live *live;
  gate *g;
  int result;
} holder;

static void *holder_main(void *arg) {
  holder *h = arg;
  h->result = HM_LIVE_CALL(h->live, through_fn, hold, h->g);
  return NULL;
}

static void test_describe_grace_threads(void **state) {
  hm_registry *reg = hmt_registry(0);
  hm_module *mod;
  hm_live *through;
  hm_module_info m;
  const hm_version_info *v;
  gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
  holder h;
  pthread_t th;
  (void)state;
  assert_int_equal(hm_module_load(reg, "blk", hmt_mod("blocker_v1"), &mod), 0);
  assert_int_equal(hm_live_get(reg, "blk:through", &through), 0);
  h.live = through;
  h.g = &g;
  assert_int_equal(pthread_create(&th, NULL, holder_main, &h), 0);
  pthread_mutex_lock(&g.m);
  while (!g.entered)
    pthread_cond_wait(&g.c, &g.m);
  pthread_mutex_unlock(&g.m);
  assert_int_equal(hm_module_reload_from(mod, hmt_mod("blocker_v2")), 0);
  assert_int_equal(hm_module_describe(mod, &m), 0);
  v = find_version(&m, 1);
  assert_non_null(v);
  assert_true(v->why & BIT(GRACE));
  assert_true(v->nthreads >= 1);
  {
    unsigned i, found = 0;
    for (i = 0; i < v->nthreads && i < HM_INFO_THREADS; i++)
      found |= v->threads[i] == g.tid;
    assert_true(found);
  }
  assert_int_equal(find_version(&m, 2)->why, BIT(CURRENT));
  hm_module_info_clear(&m);
  pthread_mutex_lock(&g.m);
  g.release = 1;
  pthread_cond_broadcast(&g.c);
  pthread_mutex_unlock(&g.m);
  pthread_join(th, NULL);
  assert_int_equal(h.result, 1007);
  assert_true(hmt_wait_until(hmt_retired_zero, reg, 30.0));
  assert_int_equal(hm_module_describe(mod, &m), 0);
  v = find_version(&m, 1);
  assert_true(v == NULL || !v->mapped);
  hm_module_info_clear(&m);
  hm_registry_free(reg);
}

/* Reloads on two threads, live calls on a third, descriptions on a fourth: every picture is
 * whole (one current version, the one hm_module_version had before or after), never torn. */
typedef struct race {
  hm_registry *reg;
  hm_module *mod;
  hm_live *live;
  int stop;
  long reloads, described;
} race;

static void *race_reload(void *arg) {
  race *r = arg;
  long i;
  for (i = 0; !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
    int rc = i % 5 == 4 ? hm_module_rollback(r->mod)
                        : hm_module_reload_from(r->mod, hmt_mod(i % 2 ? "square_v1" : "square_v2"));
    assert_true(rc == 0 || rc == HM_ENOPREV || rc == HM_EAGAIN);
    __atomic_add_fetch(&r->reloads, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

static void *race_call(void *arg) {
  race *r = arg;
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
    int v = HM_LIVE_CALL(r->live, int_fn);
    assert_true(v == 1 || v == 2);
  }
  return NULL;
}

static void test_describe_under_reloads(void **state) {
  race r;
  pthread_t th[3];
  long target = hmt_scaled(300), i, n = 0;
  (void)state;
  memset(&r, 0, sizeof r);
  r.reg = hmt_registry(0);
  assert_int_equal(hm_module_load(r.reg, "sq", hmt_mod("square_v1"), &r.mod), 0);
  assert_int_equal(hm_live_get(r.reg, "sq:version", &r.live), 0);
  assert_int_equal(pthread_create(&th[0], NULL, race_reload, &r), 0);
  assert_int_equal(pthread_create(&th[1], NULL, race_reload, &r), 0);
  assert_int_equal(pthread_create(&th[2], NULL, race_call, &r), 0);
  for (i = 0; __atomic_load_n(&r.reloads, __ATOMIC_RELAXED) < target || i < 50; i++) {
    hm_module_info m;
    unsigned before = hm_module_version(r.mod), after, current = 0;
    size_t k;
    assert_int_equal(hm_module_describe(r.mod, &m), 0);
    after = hm_module_version(r.mod);
    assert_true(m.version >= before && m.version <= after);
    for (k = 0; k < m.nversions; k++) {
      if (m.versions[k].why & BIT(CURRENT)) {
        current++;
        assert_int_equal(m.versions[k].version, m.version);
      }
      if (k > 0)
        assert_true(m.versions[k - 1].version > m.versions[k].version);
    }
    assert_int_equal(current, 1);
    assert_string_equal(m.name, "sq");
    assert_non_null(strstr(m.path, "square_v"));
    hm_module_info_clear(&m);
    n++;
  }
  __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
  for (i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  printf("# %ld descriptions while %ld reloads and rollbacks ran\n", n, r.reloads);
  hm_registry_free(r.reg);
}

/* ---- The control socket ---------------------------------------------------------------- */

typedef struct served {
  char *dir;
  char sock[4096];
  hm_registry *reg;
  hm_module *mod;
  hm_live *live;
} served;

static void serve(served *s, hm_reload_mode mode) {
  s->dir = hmt_tmpdir();
  snprintf(s->sock, sizeof s->sock, "%s/ctl.sock", s->dir);
  s->reg = hmt_registry(0);
  assert_int_equal(hm_module_load(s->reg, "sq", hmt_mod("square_v1"), &s->mod), 0);
  assert_int_equal(hm_live_get(s->reg, "sq:version", &s->live), 0);
  assert_int_equal(hm_module_set_reload_mode(s->mod, mode), 0);
  assert_int_equal(hm_control_start(s->reg, s->sock), 0);
}

static void unserve(served *s) {
  hm_registry_free(s->reg);
  assert_int_equal(access(s->sock, F_OK), -1);
  hmt_rm_rf(s->dir);
  free(s->dir);
}

/* The host still serves: a live call, and a status request. */
static void still_serving(served *s) {
  char reply[8192];
  assert_true(HM_LIVE_CALL(s->live, int_fn) >= 1);
  req_str(s->sock, "status\n", reply, sizeof reply);
  assert_true(strncmp(reply, "ok\n", 3) == 0);
}

static void test_control_bad_requests(void **state) {
  served s;
  char reply[8192], big[6000];
  int fd;
  (void)state;
  serve(&s, HM_RELOAD_IMMEDIATE);
  {
    static const char *const bad[] = {"frobnicate\n", "status  json\n", "status yaml\n",
                                      "reload\n", "reload a:b\n", "reload sq%0\n",
                                      "reload sq%00x\n", "rollback sq extra\n", " status\n",
                                      "metrics now\n", "reload sq a b\n", "\n"};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      req_str(s.sock, bad[i], reply, sizeof reply);
      if (strncmp(reply, "error HM_EINVAL ", 16) != 0)
        fail_msg("%s -> %s", bad[i], reply);
      assert_null(strchr(reply, '\n') == reply + strlen(reply) - 1 ? NULL : reply);
    }
  }
  /* Oversized: no newline in 6000 bytes. */
  memset(big, 'a', sizeof big);
  request(s.sock, big, sizeof big, reply, sizeof reply);
  assert_true(strncmp(reply, "error HM_EINVAL request longer than 4096", 40) == 0);
  /* The connection ends before the newline. */
  fd = connect_to(s.sock);
  assert_int_equal(send(fd, "stat", 4, MSG_NOSIGNAL), 4);
  shutdown(fd, SHUT_WR);
  read_all(fd, reply, sizeof reply);
  close(fd);
  assert_true(strncmp(reply, "error HM_EINVAL incomplete request", 34) == 0);
  /* Half-sent: part of a request, then nothing (the server gives up after 5 s). */
  fd = connect_to(s.sock);
  assert_int_equal(send(fd, "sta", 3, MSG_NOSIGNAL), 3);
  still_serving(&s); /* meanwhile, others are served */
  read_all(fd, reply, sizeof reply);
  close(fd);
  assert_true(strncmp(reply, "error HM_ETIMEDOUT ", 19) == 0);
  /* Escapes decode: a module called "s q" does not exist, "sq" does. */
  req_str(s.sock, "reload s%20q\n", reply, sizeof reply);
  assert_true(strncmp(reply, "error HM_ENOMOD ", 16) == 0);
  req_str(s.sock, "reload %73q\n", reply, sizeof reply);
  assert_string_equal(reply, "ok reload of sq: version 2 is current\n");
  still_serving(&s);
  assert_int_equal(hm_module_version(s.mod), 2);
  unserve(&s);
}

static void test_control_refuses_another_user(void **state) {
  served s;
  char reply[8192];
  pid_t pid;
  int status;
  (void)state;
  if (geteuid() != 0) {
    printf("# skipped: needs root, to connect as another user\n");
    skip();
  }
  serve(&s, HM_RELOAD_IMMEDIATE);
  /* Open the directory to others after the start (the start refuses such a directory): the
   * peer-credential check is what remains. uid 61234 stands for another user. */
  assert_int_equal(chmod(s.dir, 0711), 0);
  assert_int_equal(chmod(s.sock, 0666), 0); /* and the socket itself */
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    char buf[512];
    size_t n = 0;
    int fd;
    if (setgid(61234) != 0 || setuid(61234) != 0)
      child_exit(10);
    fd = connect_to(s.sock);
    if (fd < 0)
      child_exit(11);
    /* The server may have refused and closed before this arrives: the reply is what
     * counts. */
    (void)send(fd, "reload sq\n", 10, MSG_NOSIGNAL);
    for (;;) {
      ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
      if (r <= 0)
        break;
      n += (size_t)r;
    }
    buf[n] = '\0';
    child_exit(strncmp(buf, "error HM_EACCES ", 16) == 0 ? 0 : 13);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(hm_module_version(s.mod), 1); /* nothing reloaded */
  req_str(s.sock, "status json\n", reply, sizeof reply);
  assert_non_null(strstr(reply, "\"refused\":1"));
  assert_int_equal(chmod(s.dir, 0700), 0);
  unserve(&s);
}

static void test_control_refuses_open_directory(void **state) {
  hm_registry *reg = hmt_registry(0);
  char *dir = hmt_tmpdir(), path[4200];
  (void)state;
  snprintf(path, sizeof path, "%s/ctl.sock", dir);
  assert_int_equal(chmod(dir, 0777), 0); /* others may write (and enter) */
  assert_int_equal(hm_control_start(reg, path), HM_EACCES);
  assert_non_null(strstr(hm_errmsg(), "mode 0777"));
  assert_int_equal(chmod(dir, 0755), 0); /* others may enter */
  assert_int_equal(hm_control_start(reg, path), HM_EACCES);
  assert_int_equal(access(path, F_OK), -1);
  if (geteuid() == 0) {
    assert_int_equal(chmod(dir, 0700), 0);
    assert_int_equal(chown(dir, 61234, 61234), 0); /* not this user's */
    assert_int_equal(hm_control_start(reg, path), HM_EACCES);
    assert_int_equal(chown(dir, 0, 0), 0);
  }
  assert_int_equal(chmod(dir, 0700), 0);
  assert_int_equal(hm_control_start(reg, hmt_path(dir, "no/such/dir.sock")), HM_ENOENT);
  assert_int_equal(hm_control_start(reg, path), 0);
  assert_int_equal(hm_control_start(reg, path), HM_EALREADY);
  hm_control_stop(reg);
  hm_control_stop(reg);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(hm_control_start(NULL, path), HM_EINVAL);
  assert_int_equal(hm_control_start(reg, ""), HM_EINVAL);
  hm_registry_free(reg);
  hmt_rm_rf(dir);
  free(dir);
}

static void test_control_stale_and_taken_paths(void **state) {
  hm_registry *a = hmt_registry(0), *b = hmt_registry(0);
  char *dir = hmt_tmpdir(), path[4200], reply[4096];
  struct sockaddr_un addr;
  int fd;
  (void)state;
  snprintf(path, sizeof path, "%s/ctl.sock", dir);
  /* A file that is not a socket is never replaced. */
  hmt_write(path, "x", 1);
  assert_int_equal(hm_control_start(a, path), HM_EEXIST);
  assert_int_equal(unlink(path), 0);
  /* A stale socket (its server died without removing it) is replaced. */
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  assert_true(strlen(path) < sizeof addr.sun_path);
  memcpy(addr.sun_path, path, strlen(path) + 1);
  assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  close(fd);
  assert_int_equal(hm_control_start(a, path), 0);
  req_str(path, "ping\n", reply, sizeof reply);
  assert_string_equal(reply, "ok pong\n");
  /* A live one is not. */
  assert_int_equal(hm_control_start(b, path), HM_EEXIST);
  assert_non_null(strstr(hm_errmsg(), "another process serves it"));
  req_str(path, "ping\n", reply, sizeof reply);
  assert_string_equal(reply, "ok pong\n");
  hm_registry_free(b);
  hm_registry_free(a);
  assert_int_equal(access(path, F_OK), -1);
  hmt_rm_rf(dir);
  free(dir);
}

static void test_control_queued_applies_at_poll(void **state) {
  served s;
  char reply[8192], req[4400];
  (void)state;
  serve(&s, HM_RELOAD_QUEUED);
  snprintf(req, sizeof req, "reload sq %s\n", hmt_mod("square_v2"));
  req_str(s.sock, req, reply, sizeof reply);
  assert_true(strncmp(reply, "queued reload of sq prepared as version 2", 41) == 0);
  /* Prepared, not published: the host's calls still run v1 until it polls. */
  assert_int_equal(hm_module_version(s.mod), 1);
  assert_int_equal(HM_LIVE_CALL(s.live, int_fn), 1);
  req_str(s.sock, "status json\n", reply, sizeof reply);
  assert_non_null(strstr(reply, "\"prepared\":true"));
  assert_non_null(strstr(reply, "\"why\":\"prepared\""));
  assert_int_equal(hm_registry_poll(s.reg), 1);
  assert_int_equal(hm_module_version(s.mod), 2);
  assert_int_equal(HM_LIVE_CALL(s.live, int_fn), 2);
  assert_string_equal(hm_module_path(s.mod), hmt_mod("square_v2"));
  /* A rollback, the same way. */
  req_str(s.sock, "rollback sq\n", reply, sizeof reply);
  assert_true(strncmp(reply, "queued rollback of sq", 21) == 0);
  assert_int_equal(HM_LIVE_CALL(s.live, int_fn), 2);
  assert_int_equal(hm_registry_poll(s.reg), 1);
  assert_int_equal(hm_module_version(s.mod), 3);
  assert_int_equal(HM_LIVE_CALL(s.live, int_fn), 1);
  /* A refused one is an error at once, and nothing is queued. */
  req_str(s.sock, "reload sq /nonexistent/x.so\n", reply, sizeof reply);
  assert_true(strncmp(reply, "error HM_ENOENT ", 16) == 0);
  assert_int_equal(hm_registry_poll(s.reg), 0);
  /* A queued rollback that the host's own reload overtakes is dropped, not applied. */
  assert_int_equal(hm_module_reload_from(s.mod, hmt_mod("square_v2")), 0);
  req_str(s.sock, "rollback sq\n", reply, sizeof reply);
  assert_true(strncmp(reply, "queued ", 7) == 0);
  assert_int_equal(hm_module_reload(s.mod), 0);
  assert_int_equal(hm_registry_poll(s.reg), 0);
  assert_int_equal(hm_module_version(s.mod), 5);
  unserve(&s);
}

/* Read what the stream has next into buf (at *len). */
static void read_more(int fd, char *buf, size_t cap, size_t *len) {
  struct pollfd pf = {fd, POLLIN, 0};
  ssize_t r;
  if (poll(&pf, 1, DEADLINE_MS) != 1)
    fail_msg("nothing more in %zu bytes of events; the last: %s", *len,
             *len > 300 ? buf + *len - 300 : buf);
  r = recv(fd, buf + *len, cap - 1 - *len, 0);
  assert_true(r > 0);
  *len += (size_t)r;
  buf[*len] = '\0';
}

/* Read the stream into buf (at *len) until `needle` is in it. */
static void read_until(int fd, char *buf, size_t cap, size_t *len, const char *needle) {
  while (strstr(buf, needle) == NULL)
    read_more(fd, buf, cap, len);
}

/* The sum of the "# dropped N events" notes in buf. */
static unsigned long long dropped_told(const char *buf) {
  unsigned long long n = 0;
  const char *p = buf;
  while ((p = strstr(p, "# dropped ")) != NULL) {
    p += 10;
    n += strtoull(p, NULL, 10);
  }
  return n;
}

static void test_control_events_never_block(void **state) {
  served s;
  char reply[8192], *buf;
  long i, n = 20000;
  int fd;
  size_t len;
  unsigned long long dropped;
  (void)state;
  serve(&s, HM_RELOAD_IMMEDIATE);
  fd = connect_to(s.sock);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, "events\n", 7, MSG_NOSIGNAL), 7);
  /* Wait until the stream is set up, without reading it. */
  for (i = 0; i < 3000; i++) {
    req_str(s.sock, "status json\n", reply, sizeof reply);
    if (strstr(reply, "\"streams\":1") != NULL)
      break;
    usleep(10000);
  }
  assert_non_null(strstr(reply, "\"streams\":1"));
  /* Many events (refusals are the cheapest: a file that is not there), far more than the
   * socket's buffer and the client's queue hold, and none read: they all go through. */
  for (i = 0; i < n; i++)
    assert_int_equal(hm_module_reload_from(s.mod, hmt_path(s.dir, "absent.so")), HM_ENOENT);
  req_str(s.sock, "status json\n", reply, sizeof reply);
  assert_non_null(strstr(reply, "\"events_dropped\":"));
  dropped = strtoull(strstr(reply, "\"events_dropped\":") + 17, NULL, 10);
  assert_true(dropped > 0);
  /* The client reads now: what the socket held, then a note of what was dropped, then the
   * queue; and then new events again, as they happen. */
  buf = malloc(4 << 20);
  assert_non_null(buf);
  buf[0] = '\0';
  len = 0;
  read_until(fd, buf, 4 << 20, &len, "# dropped ");
  assert_true(strncmp(buf, "ok streaming events", 19) == 0);
  assert_non_null(strstr(buf, " rejected sq v1 HM_ENOENT: "));
  /* Every drop told (they came in several runs while the server kept writing): the queue
   * was emptied when the last note was made, so the next event fits. */
  while (dropped_told(buf) < dropped)
    read_more(fd, buf, 4 << 20, &len);
  assert_int_equal(dropped_told(buf), dropped);
  assert_int_equal(hm_module_reload(s.mod), 0);
  read_until(fd, buf, 4 << 20, &len, " loaded sq v2\n");
  free(buf);
  close(fd);
  still_serving(&s);
  unserve(&s);
}

/* The socket inode that serves `path`, from /proc/net/unix; 0 if none. */
static unsigned long socket_inode(const char *path) {
  FILE *f = fopen("/proc/net/unix", "r");
  char line[4600];
  unsigned long ino = 0;
  assert_non_null(f);
  while (fgets(line, sizeof line, f) != NULL) {
    char p[4200] = "";
    unsigned long i;
    if (sscanf(line, "%*s %*s %*s %*s %*s %*s %lu %4199s", &i, p) == 2 && strcmp(p, path) == 0)
      ino = i;
  }
  fclose(f);
  return ino;
}

/* Does this process have a descriptor on socket inode `ino`? */
static int holds_socket(unsigned long ino) {
  char want[64], link[128], fdpath[64];
  int fd, found = 0;
  snprintf(want, sizeof want, "socket:[%lu]", ino);
  for (fd = 0; fd < 1024; fd++) {
    ssize_t n;
    snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
    n = readlink(fdpath, link, sizeof link - 1);
    if (n > 0) {
      link[n] = '\0';
      found |= strcmp(link, want) == 0;
    }
  }
  return found;
}

static void test_control_fork_child_closes(void **state) {
  served s;
  unsigned long ino;
  char reply[4096];
  pid_t pid;
  int status;
  (void)state;
  serve(&s, HM_RELOAD_IMMEDIATE);
  ino = socket_inode(s.sock);
  assert_true(ino != 0);
  assert_true(holds_socket(ino));
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int rc = holds_socket(ino) ? 20 : 0;
    hm_control_stop(s.reg); /* nothing in a child */
    hm_registry_free(s.reg); /* memory only: never the parent's path */
    child_exit(rc != 0 ? rc : access(s.sock, F_OK) == 0 ? 0 : 21);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(access(s.sock, F_OK), 0);
  req_str(s.sock, "ping\n", reply, sizeof reply);
  assert_string_equal(reply, "ok pong\n");
  unserve(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_env_first_registry_serves),
      cmocka_unit_test(test_describe_counts_and_why),
      cmocka_unit_test(test_describe_grace_threads),
      cmocka_unit_test(test_describe_under_reloads),
      cmocka_unit_test(test_control_bad_requests),
      cmocka_unit_test(test_control_refuses_another_user),
      cmocka_unit_test(test_control_refuses_open_directory),
      cmocka_unit_test(test_control_stale_and_taken_paths),
      cmocka_unit_test(test_control_queued_applies_at_poll),
      cmocka_unit_test(test_control_events_never_block),
      cmocka_unit_test(test_control_fork_child_closes),
  };
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
