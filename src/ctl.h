/* The control socket's pieces: the protocol's text (ctlparse.c, pure), the commands
 * (ctlcmd.c) and the server (control.c). See control.c for the protocol. */
#ifndef HM_CTL_H
#define HM_CTL_H

#include "internal.h"

#include <stdarg.h>

/* ---- The protocol's text (ctlparse.c): pure functions over bytes ----------------------- */

#define HM__CTL_LINE_MAX 4096 /* a request line, its newline included */

enum {
  HM__CTL_STATUS = 1,
  HM__CTL_METRICS,
  HM__CTL_EVENTS,
  HM__CTL_RELOAD,
  HM__CTL_ROLLBACK,
  HM__CTL_PING
};

typedef struct hm__ctl_req {
  int cmd;          /* HM__CTL_* */
  int json;         /* status: as JSON */
  int has_file;     /* reload: from `file` */
  char module[256]; /* reload, rollback: the module's name, decoded */
  char file[4096];  /* reload: the file, decoded */
} hm__ctl_req;

/* Parse one request line (line[0, len), its newline included). 0, or HM_EINVAL with the
 * reason in why[whylen]. */
HM__HIDDEN int hm__ctl_parse(const char *line, size_t len, hm__ctl_req *out, char *why,
                             size_t whylen);
/* `s` escaped for the inside of a JSON string (quotes, backslashes and control characters
 * escaped, bytes that are not UTF-8 replaced by U+FFFD) into out[cap], NUL-terminated
 * (truncated to fit); returns the length it needs, as snprintf does. */
HM__HIDDEN size_t hm__json_escape(char *out, size_t cap, const char *s);
/* The same for a Prometheus label value (backslash, double quote, newline). */
HM__HIDDEN size_t hm__prom_escape(char *out, size_t cap, const char *s);

/* ---- Commands (ctlcmd.c) --------------------------------------------------------------- */

/* A growing reply, in memory from the registry's allocator. `oom` once an append failed. */
typedef struct hm__ctl_buf {
  const hm__allocator *a;
  char *p;
  size_t len, cap;
  int oom;
} hm__ctl_buf;

HM__HIDDEN void hm__ctl_printf(hm__ctl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
HM__HIDDEN void hm__ctl_buf_free(hm__ctl_buf *b);

/* What the server counts, shown by status and metrics. */
typedef struct hm__ctl_counts {
  const char *path;
  unsigned long long accepted, refused, dropped;
  unsigned clients, streams;
} hm__ctl_counts;

/* How a command ended: the first word of the reply, and hotmodctl's exit status. */
enum { HM__CTL_OK = 0, HM__CTL_FAILED = 1, HM__CTL_QUEUED = 3 };

/* Run a parsed request other than events on this thread; its whole reply into `b`. */
HM__HIDDEN int hm__ctl_run(hm_registry *reg, const hm__ctl_req *rq, const hm__ctl_counts *c,
                           hm__ctl_buf *b);
/* An error reply: "error NAME message". */
HM__HIDDEN void hm__ctl_reply_error(hm__ctl_buf *b, int err, const char *msg);
/* One event as the events command streams it: a line of at most cap bytes, with its
 * newline (the detail shortened to fit, newlines in it made spaces). */
HM__HIDDEN void hm__ctl_event_line(char *out, size_t cap, hm_event ev, const char *module,
                                   unsigned version, int err, const char *detail);

/* ---- The server (control.c) ------------------------------------------------------------ */

/* hm_control_start for HOTMOD_CONTROL (envstart.c): a start in code later replaces it. */
HM__HIDDEN int hm__control_start_env(hm_registry *reg, const char *path);

#endif
