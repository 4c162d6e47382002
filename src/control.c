/*
 * The control socket's server: a Unix stream socket served for one registry on a thread of
 * its own (hm_control_start, or HOTMOD_CONTROL through envstart.c), never on a host thread
 * and with no watcher needed. It owns the socket's path while it serves, the connections,
 * their peer-credential check, and the bounded queue each `events` client reads from.
 *
 * The protocol (what hotmodctl speaks): one request line per connection (ctlparse.c), then
 * the reply: a first line "ok ...", "queued ..." or "error NAME message", and for status
 * and metrics the body; the server closes the connection after it. `events` is answered
 * "ok" and then one line per event until the client goes. A request must arrive whole
 * within CTL_READ_MS of the connection, at most HM__CTL_LINE_MAX bytes; a reply must make
 * progress within CTL_WRITE_MS; anything else gets an error line and the connection closed.
 *
 * Layer 9 (docs/architecture.md): calls ctlcmd.c, ctlparse.c, fork.c and the leaves; the
 * registry reaches it only through the hooks it installs (reg->control_ops).
 */
#include "ctl.h"
#include "registry.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_CLIENTS_MAX 32   /* connections at once; more are refused with an error line */
#define CTL_STREAMS_MAX 8    /* of them, clients of `events` */
#define CTL_RING 256         /* events queued per client before they are dropped */
#define CTL_LINE 512         /* an event's line, at most */
#define CTL_READ_MS 5000     /* a whole request, from the connection on */
#define CTL_WRITE_MS 10000   /* a reply's progress */

enum { C_READ, C_WRITE, C_STREAM };

typedef struct ctl_client {
  int fd;
  int state;
  char in[HM__CTL_LINE_MAX];
  size_t inlen;
  long long deadline; /* CLOCK_MONOTONIC ns; 0: none */
  hm__ctl_buf out;
  size_t off;
  /* Under the server's lock: a stream (C_STREAM), and the queue the event hook fills. */
  int streaming;
  char (*ring)[CTL_LINE];
  unsigned head, count;
  unsigned long long lost; /* dropped since the client was last told */
  struct ctl_client *next;
} ctl_client;

typedef struct hm__control {
  hm_registry *reg;
  hm__allocator a;
  pthread_mutex_t admin; /* start and stop */
  pthread_mutex_t lock;  /* the clients, their queues and the counters, `running` */
  char *path;
  dev_t dev;
  ino_t ino;
  int lfd, wfd; /* the listening socket, the eventfd that wakes the thread */
  pthread_t thread;
  int joinable; /* the thread was started and not joined yet (under admin) */
  int running;  /* events are queued for clients (under lock) */
  int stop;     /* atomic */
  int from_env; /* started by HOTMOD_CONTROL: a start in code replaces it */
  int forked;   /* this is a child after fork(): the thread is the parent's */
  ctl_client *clients;
  unsigned nclients, nstreams; /* nstreams also read atomically by the event hook */
  unsigned long long accepted, refused, dropped;
  struct hm__control *all_next, *all_prev;
} hm__control;

/* ---- fork(): every server of the process, so that the child closes what it inherited --- */

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static hm__control *all_ctls;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void ctl_prefork(void) { pthread_mutex_lock(&all_lock); }
static void ctl_postfork_parent(void) { pthread_mutex_unlock(&all_lock); }

/* The child has no server thread: it closes the listener and the connections (never
 * unlinking the parent's path), so that the parent's socket is the only one served. */
static void ctl_postfork_child(void) {
  hm__control *c;
  ctl_client *k;
  for (c = all_ctls; c != NULL; c = c->all_next) {
    c->forked = 1;
    c->running = 0;
    c->joinable = 0;
    if (c->lfd >= 0)
      close(c->lfd);
    if (c->wfd >= 0)
      close(c->wfd);
    c->lfd = c->wfd = -1;
    for (k = c->clients; k != NULL; k = k->next) {
      if (k->fd >= 0)
        close(k->fd);
      k->fd = -1;
    }
  }
  pthread_mutex_unlock(&all_lock);
}

static void ctl_install_atfork(void) {
  pthread_atfork(ctl_prefork, ctl_postfork_parent, ctl_postfork_child);
}

/* ---- The socket's path ---------------------------------------------------------------- */

/* Split `path` into its directory and name (in dir[], base[]). */
static int split_path(const char *path, char *dir, size_t dirlen, const char **base) {
  const char *slash = strrchr(path, '/');
  size_t n;
  if (slash == NULL) {
    snprintf(dir, dirlen, ".");
    *base = path;
  } else {
    n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= dirlen)
      return HM_EINVAL;
    memcpy(dir, path, n);
    dir[n] = '\0';
    *base = slash + 1;
  }
  return **base != '\0' && strcmp(*base, ".") != 0 && strcmp(*base, "..") != 0 ? 0 : HM_EINVAL;
}

/* Open the socket's directory, check that only this user can enter it, and lock it. The
 * descriptor (to close) or an error with the detail recorded. */
static int dir_open_locked(const char *path, const char *dir) {
  struct stat st;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return hm__fail(-errno, "control socket %s: directory %s: %s", path, dir, strerror(errno));
  if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    int rc = hm__fail(HM_EACCES,
                      "control socket %s: its directory %s (mode %04o, owner %ld) must be this "
                      "user's (%ld) and closed to everyone else (mode 0700 or stricter, as "
                      "$XDG_RUNTIME_DIR is), so that no one else can reach or replace it",
                      path, dir, (unsigned)(st.st_mode & 07777), (long)st.st_uid,
                      (long)geteuid());
    close(fd);
    return rc;
  }
  /* One process at a time decides whether an existing socket is stale and replaces it. */
  while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
    ;
  return fd;
}

/* Is someone listening on the socket at `path`? */
static int socket_live(const struct sockaddr_un *addr) {
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), live;
  if (s < 0)
    return 1; /* cannot tell: do not take it */
  live = connect(s, (const struct sockaddr *)addr, sizeof *addr) == 0 || errno == EAGAIN ||
         errno == EINPROGRESS;
  close(s);
  return live;
}

/* Bind and listen at c->path: an existing path is replaced only when it is a socket that
 * nobody listens on. Under the directory's lock. */
static int listen_at(hm__control *c, int dfd, const char *base) {
  struct sockaddr_un addr;
  struct stat st;
  int fd, rc;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, c->path, strlen(c->path) + 1);
  if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return hm__fail(HM_EEXIST, "control socket %s: a file that is not a socket is there",
                      c->path);
    if (socket_live(&addr))
      return hm__fail(HM_EEXIST, "control socket %s: another process serves it", c->path);
    if (unlinkat(dfd, base, 0) != 0 && errno != ENOENT)
      return hm__fail(-errno, "control socket %s: removing the stale socket: %s", c->path,
                      strerror(errno));
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return hm__fail(-errno, "control socket: %s", strerror(errno));
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      fchmodat(dfd, base, 0600, 0) != 0 || listen(fd, 16) != 0 ||
      fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    rc = hm__fail(-errno, "control socket %s: %s", c->path, strerror(errno));
    close(fd);
    return rc;
  }
  c->dev = st.st_dev;
  c->ino = st.st_ino;
  c->lfd = fd;
  return 0;
}

static int open_socket(hm__control *c) {
  char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
  const char *base;
  int dfd, rc;
  if (strlen(c->path) >= sizeof dir || split_path(c->path, dir, sizeof dir, &base) != 0)
    return hm__fail(HM_EINVAL, "control socket %s: a path of at most %zu bytes, ending in a "
                               "name", c->path, sizeof dir - 1);
  if ((dfd = dir_open_locked(c->path, dir)) < 0)
    return dfd;
  rc = listen_at(c, dfd, base);
  close(dfd); /* and its lock */
  return rc;
}

/* Remove the path, if it is still this server's socket (not one that replaced it). */
static void remove_socket(hm__control *c) {
  char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
  const char *base;
  struct stat st;
  int dfd;
  if (split_path(c->path, dir, sizeof dir, &base) != 0 ||
      (dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
    return;
  while (flock(dfd, LOCK_EX) != 0 && errno == EINTR)
    ;
  if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == c->dev &&
      st.st_ino == c->ino)
    unlinkat(dfd, base, 0);
  close(dfd);
}

/* ---- Connections ---------------------------------------------------------------------- */

static void client_free(hm__control *c, ctl_client *k) {
  if (k->fd >= 0)
    close(k->fd);
  hm__ctl_buf_free(&k->out);
  hm__free(&c->a, k->ring);
  hm__free(&c->a, k);
}

/* Take k off the list and free it. */
static void client_drop(hm__control *c, ctl_client *k) {
  ctl_client **pp;
  pthread_mutex_lock(&c->lock);
  for (pp = &c->clients; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == k) {
      *pp = k->next;
      break;
    }
  }
  c->nclients--;
  if (k->streaming)
    __atomic_store_n(&c->nstreams, c->nstreams - 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&c->lock);
  client_free(c, k);
}

/* A connection refused before it became a client: an error line, best effort. */
static void refuse(int fd, int err, const char *msg) {
  char line[256];
  int n = snprintf(line, sizeof line, "error %s %s\n", hm_err_name(err), msg);
  if (n > 0)
    (void)send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
  close(fd);
}

static void accept_one(hm__control *c) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  ctl_client *k;
  int fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0)
    return;
  /* Only this user, or root: the socket's mode and directory already say so, and the
   * kernel's record of who connected says it again whatever the directory became. */
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      (cred.uid != geteuid() && cred.uid != 0)) {
    pthread_mutex_lock(&c->lock);
    c->refused++;
    pthread_mutex_unlock(&c->lock);
    refuse(fd, HM_EACCES, "this control socket serves its own user and root only");
    return;
  }
  if (c->nclients >= CTL_CLIENTS_MAX || (k = hm__calloc(&c->a, 1, sizeof *k)) == NULL) {
    refuse(fd, HM_EAGAIN, "too many connections to the control socket; try again");
    return;
  }
  k->fd = fd;
  k->state = C_READ;
  k->deadline = hm__mono_ns() + CTL_READ_MS * 1000000LL;
  k->out.a = &c->a;
  pthread_mutex_lock(&c->lock);
  k->next = c->clients;
  c->clients = k;
  c->nclients++;
  c->accepted++;
  pthread_mutex_unlock(&c->lock);
}

static void counts_of(hm__control *c, hm__ctl_counts *n) {
  pthread_mutex_lock(&c->lock);
  n->path = c->path;
  n->accepted = c->accepted;
  n->refused = c->refused;
  n->dropped = c->dropped;
  n->clients = c->nclients;
  n->streams = c->nstreams;
  pthread_mutex_unlock(&c->lock);
}

/* The client sent its request line: run it. `events` turns the client into a stream. */
static void client_request(hm__control *c, ctl_client *k, size_t len) {
  hm__ctl_req rq;
  hm__ctl_counts n;
  char why[160];
  k->state = C_WRITE;
  k->deadline = hm__mono_ns() + CTL_WRITE_MS * 1000000LL;
  if (hm__ctl_parse(k->in, len, &rq, why, sizeof why) != 0) {
    hm__ctl_reply_error(&k->out, HM_EINVAL, why);
    return;
  }
  if (rq.cmd == HM__CTL_EVENTS) {
    if (__atomic_load_n(&c->nstreams, __ATOMIC_RELAXED) >= CTL_STREAMS_MAX ||
        (k->ring = hm__calloc(&c->a, CTL_RING, sizeof *k->ring)) == NULL) {
      hm__ctl_reply_error(&k->out, HM_EAGAIN, "too many clients of events; try again");
      return;
    }
    hm__ctl_printf(&k->out, "ok streaming events: one line each, until you close\n");
    k->state = C_STREAM;
    k->deadline = 0;
    pthread_mutex_lock(&c->lock);
    k->streaming = 1;
    __atomic_store_n(&c->nstreams, c->nstreams + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->lock);
    return;
  }
  counts_of(c, &n);
  hm__ctl_run(c->reg, &rq, &n, &k->out);
  if (k->out.oom) {
    hm__ctl_buf_free(&k->out);
    k->out.oom = 0;
    hm__ctl_reply_error(&k->out, HM_ENOMEM, "out of memory making the reply");
  }
}

/* Read what the client sent. 0 to keep it, -1 to drop it. */
static int client_read(hm__control *c, ctl_client *k) {
  char *nl;
  ssize_t n;
  if (k->state != C_READ) {
    char sink[256];
    /* A stream's client only closes; a reply's may still send: read and drop. */
    n = recv(k->fd, sink, sizeof sink, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) ? -1 : 0;
  }
  n = recv(k->fd, k->in + k->inlen, sizeof k->in - k->inlen, MSG_DONTWAIT);
  if (n < 0)
    return errno == EAGAIN || errno == EINTR ? 0 : -1;
  if (n == 0) {
    k->state = C_WRITE;
    k->deadline = hm__mono_ns() + CTL_WRITE_MS * 1000000LL;
    hm__ctl_reply_error(&k->out, HM_EINVAL,
                        "incomplete request: the connection ended before its newline");
    shutdown(k->fd, SHUT_RD);
    return 0;
  }
  k->inlen += (size_t)n;
  nl = memchr(k->in, '\n', k->inlen);
  if (nl != NULL) {
    client_request(c, k, (size_t)(nl - k->in) + 1);
  } else if (k->inlen == sizeof k->in) {
    k->state = C_WRITE;
    k->deadline = hm__mono_ns() + CTL_WRITE_MS * 1000000LL;
    hm__ctl_reply_error(&k->out, HM_EINVAL, "request longer than 4096 bytes");
  }
  return 0;
}

/* A stream's queued events into its output, with a note of those dropped. */
static void stream_fill(hm__control *c, ctl_client *k) {
  pthread_mutex_lock(&c->lock);
  if (k->lost > 0) {
    hm__ctl_printf(&k->out, "# dropped %llu events: this client read too slowly\n", k->lost);
    k->lost = 0;
  }
  while (k->count > 0) {
    hm__ctl_printf(&k->out, "%s", k->ring[k->head]);
    k->head = (k->head + 1) % CTL_RING;
    k->count--;
  }
  pthread_mutex_unlock(&c->lock);
}

/* Write what is pending. 0 to keep the client, -1 to drop it (done, or failed). */
static int client_write(hm__control *c, ctl_client *k) {
  if (k->state == C_STREAM && k->off == k->out.len) {
    k->off = k->out.len = 0;
    stream_fill(c, k);
  }
  while (k->off < k->out.len) {
    ssize_t n = send(k->fd, k->out.p + k->off, k->out.len - k->off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
      return errno == EAGAIN || errno == EINTR ? 0 : -1;
    k->off += (size_t)n;
    if (k->state == C_WRITE)
      k->deadline = hm__mono_ns() + CTL_WRITE_MS * 1000000LL;
  }
  if (k->state == C_WRITE && k->off == k->out.len) {
    shutdown(k->fd, SHUT_WR);
    return -1;
  }
  return 0;
}

/* ---- The thread ----------------------------------------------------------------------- */

/* One turn: wait for the sockets (or the next deadline), then serve them. */
static void serve_once(hm__control *c, struct pollfd *pf, ctl_client **who) {
  ctl_client *k;
  long long now = hm__mono_ns(), first = 0;
  int n = 2, i, timeout;
  pf[0].fd = c->lfd;
  pf[0].events = POLLIN;
  pf[1].fd = c->wfd;
  pf[1].events = POLLIN;
  pthread_mutex_lock(&c->lock); /* for the streams' queues */
  for (k = c->clients; k != NULL; k = k->next) {
    int out = k->off < k->out.len || k->count > 0 || k->lost > 0 || k->state == C_WRITE;
    pf[n].fd = k->fd;
    pf[n].events = (short)(POLLIN | (out ? POLLOUT : 0));
    who[n++] = k;
    if (k->deadline != 0 && (first == 0 || k->deadline < first))
      first = k->deadline;
  }
  pthread_mutex_unlock(&c->lock);
  timeout = first == 0 ? -1 : first <= now ? 0 : (int)((first - now) / 1000000 + 1);
  if (poll(pf, (nfds_t)n, timeout) < 0)
    return;
  if (pf[1].revents & POLLIN) {
    uint64_t v;
    (void)read(c->wfd, &v, sizeof v);
  }
  if (__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE))
    return;
  now = hm__mono_ns();
  for (i = 2; i < n; i++) {
    k = who[i];
    if ((pf[i].revents & (POLLIN | POLLHUP | POLLERR)) && client_read(c, k) != 0) {
      client_drop(c, k);
      continue;
    }
    if (k->deadline != 0 && now >= k->deadline && k->state == C_READ) {
      k->state = C_WRITE;
      k->deadline = now + CTL_WRITE_MS * 1000000LL;
      hm__ctl_reply_error(&k->out, HM_ETIMEDOUT,
                          "no complete request line within 5 s of connecting");
    } else if (k->deadline != 0 && now >= k->deadline) {
      client_drop(c, k); /* a reply nobody reads */
      continue;
    }
    /* A stream takes what the event hook queued meanwhile (what comes after wakes the
     * thread again through the eventfd). */
    if (client_write(c, k) != 0)
      client_drop(c, k);
  }
  if (pf[0].revents & POLLIN)
    accept_one(c);
}

static void *ctl_main(void *arg) {
  hm__control *c = arg;
  struct pollfd pf[CTL_CLIENTS_MAX + 2];
  ctl_client *who[CTL_CLIENTS_MAX + 2];
  while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE))
    serve_once(c, pf, who);
  /* Stopping: no more events are queued; every connection ends; the path goes. */
  pthread_mutex_lock(&c->lock);
  c->running = 0;
  pthread_mutex_unlock(&c->lock);
  while (c->clients != NULL)
    client_drop(c, c->clients);
  remove_socket(c);
  close(c->lfd);
  close(c->wfd);
  c->lfd = c->wfd = -1;
  return NULL;
}

/* ---- Hooks the registry calls (reg->control_ops) ---------------------------------------- */

/* Any thread, from hm__emit: queue the event for each stream, never waiting for a client.
 * A full queue drops it, and the client is told how many it missed. */
static void ctl_event(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version, int err,
                      const char *detail) {
  hm__control *c = __atomic_load_n((hm__control **)&reg->control, __ATOMIC_ACQUIRE);
  char line[CTL_LINE];
  ctl_client *k;
  int wake = 0;
  if (c == NULL || __atomic_load_n(&c->nstreams, __ATOMIC_RELAXED) == 0)
    return;
  hm__ctl_event_line(line, sizeof line, ev, mod->name, version, err, detail);
  pthread_mutex_lock(&c->lock);
  for (k = c->running ? c->clients : NULL; k != NULL; k = k->next) {
    if (!k->streaming)
      continue;
    if (k->count == CTL_RING) {
      k->lost++;
      c->dropped++;
      continue;
    }
    memcpy(k->ring[(k->head + k->count) % CTL_RING], line, sizeof line);
    wake |= k->count++ == 0;
  }
  if (wake && c->running) {
    uint64_t one = 1;
    (void)write(c->wfd, &one, sizeof one); /* an eventfd: never blocks, never fills */
  }
  pthread_mutex_unlock(&c->lock);
}

/* Under admin: end the thread. From the thread itself (an event callback of a reload it
 * runs) only ask it to end: it closes everything as it ends, and is joined later. */
static void stop_locked(hm__control *c) {
  uint64_t one = 1;
  if (!c->joinable)
    return;
  __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
  pthread_mutex_lock(&c->lock);
  if (c->running)
    (void)write(c->wfd, &one, sizeof one);
  pthread_mutex_unlock(&c->lock);
  if (pthread_equal(pthread_self(), c->thread))
    return;
  pthread_join(c->thread, NULL);
  c->joinable = 0;
}

static void ctl_stop_hook(hm_registry *reg) { hm_control_stop(reg); }

static void ctl_destroy_hook(hm_registry *reg) {
  hm__control *c = reg->control;
  ctl_client *k;
  if (c == NULL)
    return;
  if (!c->forked) {
    pthread_mutex_lock(&c->admin);
    stop_locked(c);
    pthread_mutex_unlock(&c->admin);
    pthread_mutex_destroy(&c->admin);
    pthread_mutex_destroy(&c->lock);
  }
  pthread_mutex_lock(&all_lock);
  if (c->all_prev != NULL)
    c->all_prev->all_next = c->all_next;
  else if (all_ctls == c)
    all_ctls = c->all_next;
  if (c->all_next != NULL)
    c->all_next->all_prev = c->all_prev;
  pthread_mutex_unlock(&all_lock);
  while ((k = c->clients) != NULL) { /* a forked child's: their descriptors are closed */
    c->clients = k->next;
    client_free(c, k);
  }
  hm__free(&c->a, c->path);
  reg->control = NULL;
  hm__free(&c->a, c);
}

static const hm__control_ops control_ops = {ctl_event, ctl_stop_hook, ctl_destroy_hook};

/* ---- Start and stop ------------------------------------------------------------------- */

/* The registry's server, made at its first start. */
static hm__control *control_of(hm_registry *reg) {
  hm__control *c;
  int made = 0;
  pthread_mutex_lock(&reg->lock);
  c = reg->control;
  if (c == NULL && (c = hm__calloc(&reg->a, 1, sizeof *c)) != NULL) {
    c->reg = reg;
    c->a = reg->a;
    c->lfd = c->wfd = -1;
    pthread_mutex_init(&c->admin, NULL);
    pthread_mutex_init(&c->lock, NULL);
    __atomic_store_n((hm__control **)&reg->control, c, __ATOMIC_RELEASE);
    __atomic_store_n(&reg->control_ops, &control_ops, __ATOMIC_RELEASE);
    made = 1;
  }
  pthread_mutex_unlock(&reg->lock);
  /* Listed for the fork handlers after reg->lock is released: fork.c's prepare handler
   * takes every reg->lock after ours took all_lock, so all_lock is never taken under one.
   * It has no descriptor yet (the start opens them after this). */
  if (made) {
    pthread_once(&atfork_once, ctl_install_atfork);
    pthread_mutex_lock(&all_lock);
    c->all_next = all_ctls;
    if (all_ctls != NULL)
      all_ctls->all_prev = c;
    all_ctls = c;
    pthread_mutex_unlock(&all_lock);
  }
  return c;
}

/* Under admin: serve at `path` on a new thread. */
static int start_locked(hm__control *c, const char *path) {
  sigset_t all, old;
  int rc;
  hm__free(&c->a, c->path);
  c->path = hm__strdup(&c->a, path);
  if (c->path == NULL)
    return hm__fail(HM_ENOMEM, "out of memory starting the control socket");
  if ((rc = open_socket(c)) != 0)
    return rc;
  c->wfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->wfd < 0) {
    rc = hm__fail(-errno, "control socket: eventfd: %s", strerror(errno));
    remove_socket(c);
    close(c->lfd);
    c->lfd = -1;
    return rc;
  }
  __atomic_store_n(&c->stop, 0, __ATOMIC_RELEASE);
  pthread_mutex_lock(&c->lock);
  c->accepted = c->refused = c->dropped = 0;
  c->running = 1;
  pthread_mutex_unlock(&c->lock);
  /* No host signal handler runs on the server's thread. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = -pthread_create(&c->thread, NULL, ctl_main, c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    pthread_mutex_lock(&c->lock);
    c->running = 0;
    pthread_mutex_unlock(&c->lock);
    remove_socket(c);
    close(c->lfd);
    close(c->wfd);
    c->lfd = c->wfd = -1;
    return hm__fail(rc, "control socket: cannot start its thread: %s", hm_strerror(rc));
  }
  /* So that ps, top and debuggers tell it from the host's threads. */
  pthread_setname_np(c->thread, "hm-control");
  c->joinable = 1;
  return 0;
}

static int control_start(hm_registry *reg, const char *path, int from_env) {
  hm__control *c;
  int rc;
  if (reg == NULL || path == NULL || path[0] == '\0')
    return hm__fail(HM_EINVAL, "hm_control_start: NULL registry or empty path");
  if (hm__in_module_code())
    return hm__refuse_in_module_code("hm_control_start");
  if ((rc = hm__check_forked(reg, "hm_control_start")) != 0)
    return rc;
  if ((c = control_of(reg)) == NULL)
    return hm__fail(HM_ENOMEM, "out of memory starting the control socket");
  pthread_mutex_lock(&c->admin);
  if (c->joinable && pthread_equal(pthread_self(), c->thread)) {
    rc = hm__fail(HM_EBUSY, "hm_control_start: called from the control socket's own thread");
  } else if (c->joinable && !__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE) &&
             !(c->from_env && !from_env)) {
    rc = hm__fail(HM_EALREADY, "the registry serves a control socket already, at %s", c->path);
  } else {
    stop_locked(c); /* one stopped from its own thread, or HOTMOD_CONTROL's: code wins */
    rc = start_locked(c, path);
    c->from_env = from_env;
  }
  pthread_mutex_unlock(&c->admin);
  return rc;
}

int hm_control_start(hm_registry *reg, const char *path) { return control_start(reg, path, 0); }

int hm__control_start_env(hm_registry *reg, const char *path) {
  return control_start(reg, path, 1);
}

void hm_control_stop(hm_registry *reg) {
  hm__control *c;
  if (reg == NULL || reg->forked)
    return;
  c = __atomic_load_n((hm__control **)&reg->control, __ATOMIC_ACQUIRE);
  if (c == NULL)
    return;
  pthread_mutex_lock(&c->admin);
  stop_locked(c);
  pthread_mutex_unlock(&c->admin);
}
