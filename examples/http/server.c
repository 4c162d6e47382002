/*
 * hotmod HTTP example: a small HTTP/1.1 server on libuv whose request handler is a hotmod
 * module, replaced while the server runs.
 *
 *   http_server [-m handler.so] [-c control.sock] [-L] [-Q] [-q] [port]
 *
 * It listens on 127.0.0.1 only (port 0 or none: the kernel picks one) and answers every
 * request through a live handle on the module's http_handle function, so each request runs
 * the handler's current build. The file watcher takes each finished build of the module's
 * file and reloads it; the requests in flight finish on the build they started in.
 *
 * HTTP: keep-alive (HTTP/1.1 by default, HTTP/1.0 on request), pipelining, Content-Length
 * bodies, requests split over any number of reads. A request head is at most HEAD_MAX bytes
 * (431 beyond), a request at most REQ_MAX (413); a malformed request gets 400, chunked
 * bodies 501, other protocol versions 505, and the connection is closed after those. GET
 * /-/stats is answered by the server itself (module version, reloads, requests). With -c
 * it serves hotmod's control socket too (hm_control_start): `hotmodctl --socket PATH status`
 * shows the handler's versions, and `hotmodctl reload` / `rollback` steer it. SIGINT or
 * SIGTERM stop it: connections are closed and everything is freed.
 */
#include "hotmod.h"
#include "hotmod/uv.h"
#include "http_handler.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#ifndef HTTP_HANDLER_PATH
#define HTTP_HANDLER_PATH "http_handler.so"
#endif
#ifndef HTTP_REBUILD_HINT
#define HTTP_REBUILD_HINT "rebuild http_handler.so"
#endif

enum {
  HEAD_MAX = 8192,        /* request line and headers */
  REQ_MAX = 16384,        /* head and body: a connection's input buffer */
  BODY_MAX = 4096,        /* a response body */
  MAX_CONNS = 1024,       /* connections beyond are closed at once */
  HIGH_WATER = 256 << 10, /* stop reading while this much output waits (pipelining) */
  LOW_WATER = 64 << 10,   /* and read again below this */
  LINGER_MAX = 64 << 10   /* input read and dropped after the last response (see on_shutdown) */
};

struct server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_signal_t sigint, sigterm;
  uv_check_t poll_check; /* -Q: new builds go live between two turns of the loop */
  uv_timer_t poll_timer; /* and while no request comes */
  int queued;
  hm_registry *reg;
  hm_module *mod;
  hm_live *handle; /* handler:http_handle */
  struct conn *conns;
  unsigned long nconns;
  unsigned long long requests; /* every request answered */
  unsigned long long handled;  /* those the handler module answered (not /-/ pages) */
  int quiet, stopping;
};

struct conn {
  uv_tcp_t tcp; /* first: the handle's data points back here */
  uv_shutdown_t shut;
  struct server *srv;
  struct conn *prev, *next;
  size_t len;      /* input bytes in buf */
  size_t pending;  /* output bytes queued */
  int reading;     /* uv_read_start is in force */
  int eof;         /* the client has sent all it will */
  int close_after; /* no more requests: close once the output is written */
  int minor;       /* the HTTP/1.x minor version of the request being answered */
  int shutting;    /* uv_shutdown was called */
  size_t dropped;  /* after it: input read and thrown away */
  char buf[REQ_MAX];
};

struct wreq {
  uv_write_t req;
  size_t len;
  char data[];
};

/* ---- Parsing ------------------------------------------------------------------------- */

struct request {
  char *method, *target; /* NUL-terminated in place */
  int minor;             /* HTTP/1.<minor> */
  int keep_alive;
  const char *body;
  size_t body_len;
};

static int is_tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The line starting at *pos, without its LF or CRLF; advances *pos past it. 0: no full line. */
static int next_line(char *buf, size_t len, size_t *pos, char **line, size_t *n) {
  char *s = buf + *pos, *nl = memchr(s, '\n', len - *pos);
  if (nl == NULL)
    return 0;
  *line = s;
  *n = (size_t)(nl - s);
  if (*n > 0 && s[*n - 1] == '\r')
    (*n)--;
  *pos = (size_t)(nl - buf) + 1;
  return 1;
}

static int name_is(const char *name, size_t n, const char *want) {
  return n == strlen(want) && strncasecmp(name, want, n) == 0;
}

/* Does a comma-separated header value list `token` (case-insensitive)? */
static int has_token(const char *v, size_t n, const char *token) {
  size_t i = 0;
  while (i < n) {
    size_t start, end;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    start = i;
    while (i < n && v[i] != ',')
      i++;
    end = i;
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
      end--;
    if (end > start && name_is(v + start, end - start, token))
      return 1;
  }
  return 0;
}

/* Parse the request at the start of buf[0, len). Returns the bytes it spans (> 0), 0 when
 * more input is needed, or minus the status to refuse it with. NUL-terminates the method and
 * the target in place. */
static long parse_request(char *buf, size_t len, struct request *rq) {
  size_t pos = 0, head_end, n, content_length = 0;
  char *line, *sp, *end;
  int has_length = 0, hosts = 0, close = 0, keep = 0;

  while (pos < len && (buf[pos] == '\r' || buf[pos] == '\n'))
    pos++; /* empty lines before a request are ignored (RFC 9112, 2.2) */
  /* Find the empty line that ends the head. */
  head_end = pos;
  for (;;) {
    if (!next_line(buf, len, &head_end, &line, &n))
      return len >= HEAD_MAX ? -431 : 0;
    if (head_end > HEAD_MAX)
      return -431;
    if (n == 0 && line != buf + pos)
      break;
    if (n == 0)
      return -400;
  }

  /* Request line: method SP target SP HTTP/1.x */
  next_line(buf, len, &pos, &line, &n);
  end = line + n;
  sp = memchr(line, ' ', n);
  if (sp == NULL || sp == line)
    return -400;
  for (char *p = line; p < sp; p++)
    if (!is_tchar((unsigned char)*p))
      return -400;
  rq->method = line;
  *sp = '\0';
  rq->target = sp + 1;
  sp = memchr(rq->target, ' ', (size_t)(end - rq->target));
  if (sp == NULL || sp == rq->target)
    return -400;
  for (char *p = rq->target; p < sp; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
      return -400;
  *sp = '\0';
  sp++;
  if (end - sp != 8 || memcmp(sp, "HTTP/", 5) != 0 || sp[5] < '0' || sp[5] > '9' ||
      sp[6] != '.' || sp[7] < '0' || sp[7] > '9')
    return -400;
  if (sp[5] != '1')
    return -505;
  rq->minor = sp[7] - '0';

  /* Header fields. */
  for (;;) {
    char *colon, *v;
    size_t vn;
    next_line(buf, len, &pos, &line, &n);
    if (n == 0)
      break;
    colon = memchr(line, ':', n);
    if (colon == NULL || colon == line)
      return -400; /* also a folded line (leading space): obsolete, refused */
    for (char *p = line; p < colon; p++)
      if (!is_tchar((unsigned char)*p))
        return -400;
    v = colon + 1;
    vn = (size_t)(line + n - v);
    while (vn > 0 && (*v == ' ' || *v == '\t'))
      v++, vn--;
    while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
      vn--;
    for (size_t i = 0; i < vn; i++)
      if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || (unsigned char)v[i] == 0x7f)
        return -400;
    n = (size_t)(colon - line);
    if (name_is(line, n, "content-length")) {
      size_t cl = 0;
      if (vn == 0)
        return -400;
      for (size_t i = 0; i < vn; i++) {
        if (v[i] < '0' || v[i] > '9')
          return -400;
        if (cl > REQ_MAX)
          return -413;
        cl = cl * 10 + (size_t)(v[i] - '0');
      }
      if (has_length && cl != content_length)
        return -400;
      has_length = 1;
      content_length = cl;
    } else if (name_is(line, n, "transfer-encoding")) {
      return -501;
    } else if (name_is(line, n, "connection")) {
      close |= has_token(v, vn, "close");
      keep |= has_token(v, vn, "keep-alive");
    } else if (name_is(line, n, "host")) {
      hosts++;
    }
  }
  if (pos != head_end)
    return -400;
  if (hosts > 1 || (rq->minor >= 1 && hosts == 0))
    return -400; /* HTTP/1.1 needs exactly one Host (RFC 9112, 3.2) */
  if (content_length > REQ_MAX - head_end)
    return -413;
  if (len - head_end < content_length)
    return 0;
  rq->keep_alive = rq->minor >= 1 ? !close : keep && !close;
  rq->body = buf + head_end;
  rq->body_len = content_length;
  return (long)(head_end + content_length);
}

/* ---- Connections --------------------------------------------------------------------- */

static void on_close(uv_handle_t *h) {
  struct conn *c = h->data;
  struct server *srv = c->srv;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  srv->nconns--;
  free(c);
}

static void conn_close(struct conn *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* The last response is sent and our side is shut. Closing now, with input still unread (the
 * rest of a request too large to take, say), would make the kernel reset the connection and
 * the client could lose that response; so read and drop input until the client closes its
 * side, up to LINGER_MAX bytes. */
static void on_shutdown(uv_shutdown_t *req, int status) {
  struct conn *c = req->data;
  if (uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  c->len = 0;
  if (status < 0 || c->eof || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

/* No more requests on this connection: close it once its output is written. */
static void conn_finish(struct conn *c) {
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  if (c->pending > 0 || c->shutting || uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  c->shutting = 1;
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
    conn_close(c);
}

static void process(struct conn *c);

static void on_write(uv_write_t *req, int status) {
  struct wreq *w = (struct wreq *)req;
  struct conn *c = req->handle->data;
  c->pending -= w->len;
  free(w);
  if (uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  if (status < 0)
    conn_close(c);
  else if (c->close_after)
    conn_finish(c);
  else if (!c->reading && c->pending < LOW_WATER)
    process(c); /* requests left in the buffer while output was backed up, then read again */
}

static void send_response(struct conn *c, int status, const char *type, const char *body,
                          size_t blen, int head_only) {
  static const struct {
    int status;
    const char *reason;
  } reasons[] = {{200, "OK"},
                 {400, "Bad Request"},
                 {404, "Not Found"},
                 {405, "Method Not Allowed"},
                 {413, "Content Too Large"},
                 {431, "Request Header Fields Too Large"},
                 {500, "Internal Server Error"},
                 {501, "Not Implemented"},
                 {505, "HTTP Version Not Supported"}};
  const char *reason = "";
  char head[256];
  struct wreq *w;
  uv_buf_t b;
  int hlen;
  size_t total;

  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
    if (reasons[i].status == status)
      reason = reasons[i].reason;
  hlen = snprintf(head, sizeof head,
                  "HTTP/1.1 %d %s\r\nServer: hotmod-http\r\nContent-Type: %s\r\n"
                  "Content-Length: %zu\r\n%s\r\n",
                  status, reason, type, blen,
                  c->close_after ? "Connection: close\r\n"
                  : c->minor == 0 ? "Connection: keep-alive\r\n"
                                  : "");
  if (hlen < 0 || (size_t)hlen >= sizeof head) {
    conn_close(c);
    return;
  }
  if (head_only)
    blen = 0;
  total = (size_t)hlen + blen;
  w = malloc(sizeof *w + total);
  if (w == NULL) {
    conn_close(c);
    return;
  }
  memcpy(w->data, head, (size_t)hlen);
  if (blen > 0)
    memcpy(w->data + hlen, body, blen);
  w->len = total;
  b = uv_buf_init(w->data, (unsigned)total);
  c->pending += total;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    c->pending -= total;
    free(w);
    conn_close(c);
  }
}

static void send_error(struct conn *c, int status) {
  char body[64];
  int n = snprintf(body, sizeof body, "HTTP error %d\n", status);
  c->close_after = 1;
  send_response(c, status, "text/plain; charset=utf-8", body, (size_t)n, 0);
}

/* A content type the handler set, fit for a header line. */
static int header_safe(const char *s, size_t cap) {
  size_t n = strnlen(s, cap);
  if (n == 0 || n == cap)
    return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
      return 0;
  return 1;
}

static void serve(struct conn *c, struct request *rq) {
  struct server *srv = c->srv;
  char body[BODY_MAX];
  struct http_response res = {200, "text/plain; charset=utf-8", body, sizeof body, 0};
  int head_only = strcmp(rq->method, "HEAD") == 0;

  srv->requests++;
  c->minor = rq->minor;
  c->close_after = !rq->keep_alive || srv->stopping;
  if (strncmp(rq->target, "/-/", 3) == 0) {
    /* The server's own pages, not the handler's. */
    if (strcmp(rq->target, "/-/stats") != 0) {
      res.status = 404;
      res.len = (size_t)snprintf(body, sizeof body, "Not found\n");
    } else {
      unsigned v = hm_module_version(srv->mod);
      res.len = (size_t)snprintf(body, sizeof body,
                                 "module_version %u\nreloads %u\nrequests %llu\nhandled %llu\n"
                                 "connections %lu\n",
                                 v, v > 0 ? v - 1 : 0, srv->requests, srv->handled, srv->nconns);
    }
  } else {
    struct http_request req = {rq->method, rq->target, rq->body, rq->body_len, srv->requests};
    srv->handled++;
    /* The live call: whichever build is current now runs this request to the end. */
    int rc = HM_LIVE_CALL(srv->handle, http_handle_fn, &req, &res);
    if (rc != 0 || res.len > res.cap || res.status < 100 || res.status > 599 ||
        !header_safe(res.content_type, sizeof res.content_type)) {
      send_error(c, 500);
      return;
    }
  }
  send_response(c, res.status, res.content_type, body, res.len, head_only);
}

/* Answer the complete requests in the buffer, then decide whether to read more. */
static void process(struct conn *c) {
  while (c->len > 0 && !c->close_after && c->pending < HIGH_WATER &&
         !uv_is_closing((uv_handle_t *)&c->tcp)) {
    struct request rq;
    long n = parse_request(c->buf, c->len, &rq);
    if (n == 0)
      break;
    if (n < 0) {
      send_error(c, (int)-n);
      break;
    }
    serve(c, &rq);
    memmove(c->buf, c->buf + n, c->len - (size_t)n);
    c->len -= (size_t)n;
  }
  if (uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  if (c->eof && c->pending < HIGH_WATER)
    c->close_after = 1; /* every complete request is answered: the rest never comes */
  if (c->close_after) {
    conn_finish(c);
  } else if (c->pending >= HIGH_WATER) {
    if (c->reading)
      uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  } else if (!c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = 1;
    else
      conn_close(c);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct conn *c = h->data;
  (void)suggested;
  /* Never empty while reading: a full buffer always holds a complete request or an error. */
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = s->data;
  (void)buf;
  if (c->shutting) {
    if (nread < 0 || (c->dropped += (size_t)nread) > LINGER_MAX)
      conn_close(c);
    return;
  }
  if (nread == UV_EOF) {
    c->eof = 1; /* the client is done sending: answer what came, then close */
    process(c);
  } else if (nread < 0) {
    conn_close(c);
  } else if (nread > 0) {
    c->len += (size_t)nread;
    process(c);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  struct server *srv = listener->data;
  struct conn *c;
  if (status < 0) {
    fprintf(stderr, "http_server: accept: %s\n", uv_strerror(status));
    return;
  }
  c = calloc(1, sizeof *c);
  if (c == NULL || uv_tcp_init(srv->loop, &c->tcp) != 0) {
    free(c);
    return;
  }
  c->srv = srv;
  c->tcp.data = c;
  c->next = srv->conns;
  if (srv->conns != NULL)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || srv->nconns > MAX_CONNS ||
      srv->stopping) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  process(c); /* starts reading */
}

/* ---- Server -------------------------------------------------------------------------- */

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *userdata) {
  struct server *srv = userdata;
  (void)mod;
  if (ev == HM_EVENT_LOADED && version > 1 && !srv->quiet)
    printf("http_server: handler reloaded: module version %u\n", version);
  else if (ev == HM_EVENT_REJECTED && srv->handle != NULL) /* main reports a first failure */
    fprintf(stderr, "http_server: new handler build refused (%s): %s\n", hm_strerror(err),
            hm_event_detail());
  else if (ev == HM_EVENT_WARNING)
    fprintf(stderr, "http_server: handler build: %s\n", hm_event_detail());
}

static void stop(struct server *srv) {
  if (srv->stopping)
    return;
  srv->stopping = 1;
  hm_watch_stop(srv->reg); /* on the loop's thread, as an attached watcher needs */
  uv_close((uv_handle_t *)&srv->listener, NULL);
  if (srv->queued) {
    uv_close((uv_handle_t *)&srv->poll_check, NULL);
    uv_close((uv_handle_t *)&srv->poll_timer, NULL);
  }
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
  for (struct conn *c = srv->conns; c != NULL; c = c->next)
    conn_close(c);
}

/* Queued mode: the watcher prepares each new build on its own thread; it goes live here, at
 * a point of the server's choosing (no request is being handled). */
static void poll_now(struct server *srv) {
  int rc = hm_registry_poll(srv->reg);
  if (rc < 0 && !srv->quiet)
    printf("http_server: poll: %s: %s\n", hm_strerror(rc), hm_errmsg());
}

static void on_poll_check(uv_check_t *c) { poll_now(c->data); }

static void on_poll_timer(uv_timer_t *t) { poll_now(t->data); }

static void on_signal(uv_signal_t *s, int signum) {
  printf("http_server: signal %d, shutting down\n", signum);
  stop(s->data);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: http_server [-m handler.so] [-c control.sock] [-L] [-Q] [-q] [port]\n"
          "  Serves http://127.0.0.1:port/ (port 0 or none: the kernel picks one) with the\n"
          "  request handler module, reloaded whenever its file is rebuilt.\n"
          "  -m FILE  the handler module (default %s)\n"
          "  -c PATH  serve hotmod's control socket at PATH, for hotmodctl (its directory\n"
          "           must be this user's, mode 0700)\n"
          "  -L       run the file watcher on the server's own libuv loop (hm_watch_attach)\n"
          "           instead of a thread of the registry's own (hm_watch_start)\n"
          "  -Q       queued reloads: a new build goes live between two turns of the loop\n"
          "  -q       no line per reload\n",
          HTTP_HANDLER_PATH);
}

int main(int argc, char **argv) {
  hm_registry_options opts = HM_REGISTRY_OPTIONS_INIT;
  struct server srv;
  uv_loop_t loop;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int namelen = sizeof bound, rc, opt, on_loop = 0, port = 0, status = 1;
  const char *path = NULL, *control = NULL;
  char *end;

  memset(&srv, 0, sizeof srv);
  while ((opt = getopt(argc, argv, "m:c:LQqh")) != -1) {
    switch (opt) {
    case 'm': path = optarg; break;
    case 'c': control = optarg; break;
    case 'L': on_loop = 1; break;
    case 'Q': srv.queued = 1; break;
    case 'q': srv.quiet = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    long p = strtol(argv[optind], &end, 10);
    if (*argv[optind] == '\0' || *end != '\0' || p < 0 || p > 65535 || optind + 1 < argc) {
      usage(stderr);
      return 2;
    }
    port = (int)p;
  }

  /* Lines reach a log file as they happen (the example's test reads them). */
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error code, not a death */

  srv.loop = &loop;
  opts.flags = HM_FLAG_QUIET;
  opts.reload_mode = srv.queued ? HM_RELOAD_QUEUED : HM_RELOAD_IMMEDIATE;
  opts.on_event = on_event;
  opts.event_userdata = &srv;
  if ((rc = hm_registry_new(&srv.reg, &opts)) != 0) {
    fprintf(stderr, "http_server: registry: %s: %s\n", hm_strerror(rc), hm_errmsg());
    return 1;
  }
  /* A build that is being written (or renamed over the file) as we start: wait for it. */
  for (int tries = 0; tries < 100; tries++) {
    rc = hm_module_load(srv.reg, "handler", path ? path : HTTP_HANDLER_PATH, &srv.mod);
    struct timespec pause = {0, 50 * 1000 * 1000};
    if (rc != HM_EAGAIN)
      break;
    nanosleep(&pause, NULL);
  }
  if (rc != 0 || (rc = hm_live_get_typed(srv.reg, "handler:http_handle", HTTP_HANDLE_SIGNATURE,
                                         &srv.handle)) != 0) {
    fprintf(stderr, "http_server: handler %s: %s: %s\n", path ? path : HTTP_HANDLER_PATH,
            hm_strerror(rc), hm_errmsg());
    hm_registry_free(srv.reg);
    return 1;
  }

  if ((rc = uv_loop_init(&loop)) != 0) {
    fprintf(stderr, "http_server: loop: %s\n", uv_strerror(rc));
    hm_registry_free(srv.reg);
    return 1;
  }
  uv_tcp_init(&loop, &srv.listener);
  uv_signal_init(&loop, &srv.sigint);
  uv_signal_init(&loop, &srv.sigterm);
  srv.listener.data = srv.sigint.data = srv.sigterm.data = &srv;
  if (srv.queued) {
    uv_check_init(&loop, &srv.poll_check);
    uv_timer_init(&loop, &srv.poll_timer);
    srv.poll_check.data = srv.poll_timer.data = &srv;
  }
  uv_ip4_addr("127.0.0.1", port, &addr);
  if ((rc = uv_tcp_bind(&srv.listener, (const struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&srv.listener, 128, on_connection)) != 0 ||
      (rc = uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&bound, &namelen)) != 0) {
    fprintf(stderr, "http_server: listen on 127.0.0.1:%d: %s\n", port, uv_strerror(rc));
    goto out;
  }
  rc = on_loop ? hm_watch_attach(srv.reg, &loop) : hm_watch_start(srv.reg);
  if (rc != 0) {
    fprintf(stderr, "http_server: watcher: %s: %s\n", hm_strerror(rc), hm_errmsg());
    goto out;
  }
  if (srv.queued) {
    uv_check_start(&srv.poll_check, on_poll_check);
    uv_timer_start(&srv.poll_timer, on_poll_timer, 50, 50);
  }
  /* The control socket runs on a thread of hotmod's: nothing here serves it. */
  if (control != NULL && (rc = hm_control_start(srv.reg, control)) != 0) {
    fprintf(stderr, "http_server: control socket: %s: %s\n", hm_strerror(rc), hm_errmsg());
    goto out;
  }
  uv_signal_start(&srv.sigint, on_signal, SIGINT);
  uv_signal_start(&srv.sigterm, on_signal, SIGTERM);

  printf("http_server: serving http://127.0.0.1:%d/ with %s (Ctrl-C stops)\n",
         ntohs(((struct sockaddr_in *)&bound)->sin_port), hm_module_path(srv.mod));
  if (control != NULL)
    printf("http_server: control socket %s: hotmodctl --socket %s status\n", control, control);
  if (path == NULL)
    printf("http_server: edit examples/http/handler.c, then `%s`: the next request runs it\n",
           HTTP_REBUILD_HINT);
  else
    printf("http_server: write a new build of %s (then rename it into place): the next "
           "request runs it\n",
           path);
  uv_run(&loop, UV_RUN_DEFAULT);
  status = 0;

out:
  stop(&srv);
  uv_run(&loop, UV_RUN_DEFAULT); /* the close callbacks */
  if ((rc = uv_loop_close(&loop)) != 0) {
    fprintf(stderr, "http_server: loop close: %s\n", uv_strerror(rc));
    status = 1;
  }
  {
    unsigned v = hm_module_version(srv.mod);
    if (status == 0)
      printf("http_server: stopped after %llu requests; handler at module version %u "
             "(%u reload%s)\n",
             srv.requests, v, v - 1, v == 2 ? "" : "s");
  }
  hm_registry_free(srv.reg);
  return status;
}
