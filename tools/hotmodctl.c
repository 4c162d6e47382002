/*
 * hotmodctl: see and steer a running host through its control socket (hm_control_start, or
 * HOTMOD_CONTROL=PATH in the host's environment).
 *
 *   hotmodctl [--socket PATH] [--timeout SECONDS] COMMAND [ARGUMENTS]
 *
 * Commands: status [--json], metrics, events [--count N], reload MODULE [FILE],
 * rollback MODULE. Exit status: 0 done, 1 refused or failed (the library's error name and
 * message on stderr), 2 a usage or connection error, 3 queued for the host's next
 * hm_registry_poll. It speaks the protocol described in src/control.c: one request line,
 * then the server's reply until it closes the connection.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_QUEUED = 3 };

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: hotmodctl [--socket PATH] [--timeout SECONDS] COMMAND [ARGUMENTS]\n"
          "  status [--json]         every module: version, signing key and trusted comment,\n"
          "                          counters, last refusal, and each version still kept\n"
          "                          with why (--json: for tools)\n"
          "  metrics                 the same counters in the Prometheus text format\n"
          "  events [--count N]      print events as they happen, until interrupted (or N)\n"
          "  reload MODULE [FILE]    reload the module (from FILE: it becomes its path)\n"
          "  rollback MODULE         make the build before the current one current again\n"
          "The socket is --socket PATH, else $HOTMOD_CONTROL. --timeout: how long to wait for\n"
          "a reply (default 120 s; events: no limit). Exit status: 0 done, 1 refused or\n"
          "failed, 2 usage or connection error, 3 queued for the host's hm_registry_poll.\n");
}

/* Append word `w` to the request, with the bytes the protocol escapes as %XX. */
static int put_word(char *req, size_t cap, size_t *len, const char *w) {
  static const char hex[] = "0123456789ABCDEF";
  const unsigned char *p = (const unsigned char *)w;
  if (*len + 1 >= cap)
    return -1;
  req[(*len)++] = ' ';
  for (; *p != '\0'; p++) {
    if (*p <= 0x20 || *p == '%' || *p == 0x7f) {
      if (*len + 3 >= cap)
        return -1;
      req[(*len)++] = '%';
      req[(*len)++] = hex[*p >> 4];
      req[(*len)++] = hex[*p & 15];
    } else {
      if (*len + 1 >= cap)
        return -1;
      req[(*len)++] = (char)*p;
    }
  }
  return 0;
}

/* FILE as the host will take it: relative paths are the caller's, not the host's. */
static char *absolute(const char *file) {
  char cwd[PATH_MAX], *out;
  if (file[0] == '/')
    return strdup(file);
  if (getcwd(cwd, sizeof cwd) == NULL)
    return NULL;
  out = malloc(strlen(cwd) + strlen(file) + 2);
  if (out != NULL)
    sprintf(out, "%s/%s", cwd, file);
  return out;
}

static int connect_to(const char *path) {
  struct sockaddr_un addr;
  int fd;
  if (strlen(path) >= sizeof addr.sun_path) {
    fprintf(stderr, "hotmodctl: socket path too long: %s\n", path);
    return -1;
  }
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    fprintf(stderr, "hotmodctl: cannot connect to %s: %s\n", path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Read what the server sends into *buf (grown), up to its close; for events, print lines
 * as they come (counting them, up to `count` if not 0). 0 at the server's close, 1 when
 * `count` events came or the user interrupted, -1 on an error or a timeout. */
static int read_reply(int fd, char **buf, size_t *len, int stream, long count, int timeout_ms) {
  size_t cap = 4096, printed = 0;
  long seen = 0;
  int first_line_done = 0;
  *buf = malloc(cap);
  *len = 0;
  if (*buf == NULL)
    return -1;
  for (;;) {
    struct pollfd pf = {fd, POLLIN, 0};
    ssize_t n;
    int pr = poll(&pf, 1, stream ? 250 : timeout_ms);
    if (interrupted)
      return 1;
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr == 0 && stream)
      continue;
    if (pr <= 0) {
      fprintf(stderr, "hotmodctl: no reply within %d s\n", timeout_ms / 1000);
      return -1;
    }
    if (*len + 1024 > cap) {
      char *g = realloc(*buf, cap *= 2);
      if (g == NULL)
        return -1;
      *buf = g;
    }
    n = recv(fd, *buf + *len, cap - *len - 1, 0);
    if (n < 0 && errno == EINTR)
      continue;
    /* The server may reset a connection whose request it did not read whole: what it sent
     * before is the reply. */
    if (n == 0 || (n < 0 && errno == ECONNRESET && *len > 0))
      return 0;
    if (n < 0) {
      fprintf(stderr, "hotmodctl: reading the reply: %s\n", strerror(errno));
      return -1;
    }
    *len += (size_t)n;
    (*buf)[*len] = '\0';
    if (!stream)
      continue;
    /* Events: print each complete line after the first (the server's "ok"). */
    for (;;) {
      char *nl = memchr(*buf + printed, '\n', *len - printed);
      size_t ll;
      if (nl == NULL)
        break;
      ll = (size_t)(nl - (*buf + printed)) + 1;
      if (!first_line_done) {
        first_line_done = 1;
        if (strncmp(*buf, "ok", 2) != 0)
          return 0; /* an error line: the caller reports it */
      } else {
        fwrite(*buf + printed, 1, ll, stdout);
        fflush(stdout);
        if ((*buf)[printed] != '#' && count > 0 && ++seen >= count)
          return 1;
      }
      printed += ll;
    }
  }
}

int main(int argc, char **argv) {
  const char *sock = getenv("HOTMOD_CONTROL"), *cmd;
  char req[8192], *reply = NULL, *file = NULL;
  size_t len = 0, rlen = 0;
  long count = 0;
  int i = 1, fd, rc, stream, timeout_ms = 120000;

  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
    if (strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return EXIT_DONE;
    } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
      sock = argv[++i];
    } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0) {
      timeout_ms = atoi(argv[++i]) * 1000;
    } else {
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (i >= argc || sock == NULL || sock[0] == '\0') {
    if (i < argc)
      fprintf(stderr, "hotmodctl: no socket: give --socket PATH or set HOTMOD_CONTROL\n");
    usage(stderr);
    return EXIT_USAGE;
  }
  cmd = argv[i++];
  stream = strcmp(cmd, "events") == 0;
  len = (size_t)snprintf(req, sizeof req, "%s", cmd);
  if (strcmp(cmd, "status") == 0 && i < argc && strcmp(argv[i], "--json") == 0) {
    i++;
    put_word(req, sizeof req, &len, "json");
  } else if (stream && i + 1 < argc && strcmp(argv[i], "--count") == 0 &&
             (count = atol(argv[i + 1])) > 0) {
    i += 2;
  } else if ((strcmp(cmd, "reload") == 0 || strcmp(cmd, "rollback") == 0) && i < argc) {
    if (put_word(req, sizeof req, &len, argv[i++]) != 0)
      return usage(stderr), EXIT_USAGE;
    if (strcmp(cmd, "reload") == 0 && i < argc) {
      if ((file = absolute(argv[i++])) == NULL || put_word(req, sizeof req, &len, file) != 0) {
        fprintf(stderr, "hotmodctl: bad file name\n");
        return EXIT_USAGE;
      }
      free(file);
    }
  } else if (strcmp(cmd, "status") != 0 && strcmp(cmd, "metrics") != 0 && !stream &&
             strcmp(cmd, "ping") != 0) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (i != argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  req[len++] = '\n';

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  if ((fd = connect_to(sock)) < 0)
    return EXIT_USAGE;
  if (send_all(fd, req, len) != 0) {
    fprintf(stderr, "hotmodctl: sending to %s: %s\n", sock, strerror(errno));
    return EXIT_USAGE;
  }
  rc = read_reply(fd, &reply, &rlen, stream, count, timeout_ms);
  close(fd);
  if (rc != 0)
    free(reply);
  if (rc < 0)
    return EXIT_USAGE;
  if (stream && rc == 1)
    return EXIT_DONE; /* N events, or interrupted */
  if (rlen == 0) {
    fprintf(stderr, "hotmodctl: %s closed the connection without a reply\n", sock);
    return EXIT_USAGE;
  }
  {
    char *nl = memchr(reply, '\n', rlen);
    size_t first = nl != NULL ? (size_t)(nl - reply) : rlen;
    if (strncmp(reply, "error ", 6) == 0) {
      /* "error NAME message" */
      char *sp = memchr(reply + 6, ' ', first - 6);
      fprintf(stderr, "hotmodctl: %.*s: %.*s\n", sp ? (int)(sp - reply - 6) : (int)first - 6,
              reply + 6, sp ? (int)(first - (size_t)(sp + 1 - reply)) : 0, sp ? sp + 1 : "");
      free(reply);
      return EXIT_FAILED;
    }
    if (strncmp(reply, "queued ", 7) == 0) {
      printf("%.*s\n", (int)first, reply);
      free(reply);
      return EXIT_QUEUED;
    }
    if (strncmp(reply, "ok", 2) != 0) {
      fprintf(stderr, "hotmodctl: unexpected reply: %.*s\n", (int)first, reply);
      free(reply);
      return EXIT_USAGE;
    }
    if (stream) {
      fprintf(stderr, "hotmodctl: the host closed the event stream\n");
      free(reply);
      return EXIT_USAGE;
    }
    if (nl != NULL && (size_t)(nl - reply) + 1 < rlen)
      fwrite(nl + 1, 1, rlen - first - 1, stdout); /* a body: status, metrics */
    else if (first > 3)
      printf("%.*s\n", (int)(first - 3), reply + 3); /* "ok MESSAGE" */
  }
  free(reply);
  return EXIT_DONE;
}
