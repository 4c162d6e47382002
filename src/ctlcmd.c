/*
 * The control socket's commands, run on the control server's thread: status (a table, or
 * JSON for tools), metrics (the Prometheus text format), reload, rollback and ping; and the
 * line an event is streamed as. Everything it reports comes from the introspection API
 * (introspect.c), in the words of HM_MAPPED_MAP. A reload or rollback of a module in
 * queued mode is prepared here, as the watcher prepares a build, and the host's next
 * hm_registry_poll publishes it.
 *
 * Layer 9 (docs/architecture.md): calls introspect.c, module.c, rollback.c, prepared.c,
 * reload.c, ctlparse.c and the leaves.
 */
#include "ctl.h"
#include "reload.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- The reply buffer ------------------------------------------------------------------ */

void hm__ctl_printf(hm__ctl_buf *b, const char *fmt, ...) {
  va_list ap;
  int n;
  if (b->oom)
    return;
  for (;;) {
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    {
      size_t cap = (b->cap ? b->cap : 2048) * 2 + (size_t)n;
      char *p = hm__realloc(b->a, b->p, cap);
      if (p == NULL) {
        b->oom = 1;
        return;
      }
      b->p = p;
      b->cap = cap;
    }
  }
}

void hm__ctl_buf_free(hm__ctl_buf *b) {
  hm__free(b->a, b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* `s` escaped for JSON (or a Prometheus label), in quotes. */
static void put_quoted(hm__ctl_buf *b, const char *s, int prom) {
  char small[512], *big = NULL;
  size_t n = prom ? hm__prom_escape(small, sizeof small, s)
                  : hm__json_escape(small, sizeof small, s);
  const char *e = small;
  if (n >= sizeof small) {
    big = hm__malloc(b->a, n + 1);
    if (big == NULL) {
      b->oom = 1;
      return;
    }
    if (prom)
      hm__prom_escape(big, n + 1, s);
    else
      hm__json_escape(big, n + 1, s);
    e = big;
  }
  hm__ctl_printf(b, "\"%s\"", e);
  hm__free(b->a, big);
}

void hm__ctl_reply_error(hm__ctl_buf *b, int err, const char *msg) {
  char line[1024];
  size_t i;
  /* One line: the message's own newlines would end the reply's first line early. */
  snprintf(line, sizeof line, "%s", msg);
  for (i = 0; line[i] != '\0'; i++)
    if (line[i] == '\n' || line[i] == '\r')
      line[i] = ' ';
  hm__ctl_printf(b, "error %s %s\n", hm_err_name(err), line);
}

/* ---- Words ------------------------------------------------------------------------------ */

static void iso_time(long long ns, char *out, size_t cap) {
  struct tm tm;
  time_t t = (time_t)(ns / 1000000000LL);
  if (ns <= 0 || gmtime_r(&t, &tm) == NULL) {
    snprintf(out, cap, "-");
    return;
  }
  {
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned ms = (unsigned)(ns / 1000000 % 1000);
    if (n + 6 <= cap) {
      out[n++] = '.';
      out[n++] = (char)('0' + ms / 100);
      out[n++] = (char)('0' + ms / 10 % 10);
      out[n++] = (char)('0' + ms % 10);
      out[n++] = 'Z';
      out[n] = '\0';
    }
  }
}

static const char *mode_name(int mode) {
  return mode == HM_RELOAD_QUEUED ? "queued" : "immediate";
}

static const char *method_name(int m) {
  static const char *const names[] = {"none", "lease", "events", "timing"};
  return m >= 0 && m <= 3 ? names[m] : "none";
}

/* Why a version is kept, in the words of HM_MAPPED_MAP, with what is known beside them
 * (how many snapshots, which threads, how many bytes). */
static void why_words(const hm_version_info *v, char *out, size_t cap) {
  size_t k = 0;
  int why;
  out[0] = '\0';
  for (why = 1; why < HM_MAPPED_MAX_ && why < 32; why++) {
    char extra[160] = "";
    int w;
    unsigned t;
    if (!(v->why & (1u << why)))
      continue;
    if (why == HM_MAPPED_PINNED) {
      w = snprintf(out + k, cap - k, "%spinned by %u snapshot%s", k ? ", " : "", v->snapshots,
                   v->snapshots == 1 ? "" : "s");
    } else {
      if (why == HM_MAPPED_GRACE && v->nthreads > 0) {
        size_t e = (size_t)snprintf(extra, sizeof extra, " (thread%s", v->nthreads == 1 ? "" : "s");
        for (t = 0; t < v->nthreads && t < HM_INFO_THREADS && e < sizeof extra; t++)
          e += (size_t)snprintf(extra + e, sizeof extra - e, " %d", v->threads[t]);
        if (e < sizeof extra)
          snprintf(extra + e, sizeof extra - e, "%s)", v->nthreads > HM_INFO_THREADS ? " ..." : "");
      } else if (why == HM_MAPPED_ROLLBACK && !v->mapped) {
        snprintf(extra, sizeof extra, " (its private copy; not mapped)");
      } else if (v->bytes > 0) {
        snprintf(extra, sizeof extra, " (%llu KiB)", v->bytes / 1024);
      }
      w = snprintf(out + k, cap - k, "%s%s%s", k ? ", " : "", hm_mapped_text(why), extra);
    }
    if (w < 0 || (size_t)w >= cap - k)
      return;
    k += (size_t)w;
  }
}

/* ---- status ----------------------------------------------------------------------------- */

/* Would hm_module_rollback find its build (mapped, or its copy kept)? */
static int rollback_ready(const hm_module_info *m) {
  size_t i;
  for (i = 0; i < m->nversions; i++)
    if (m->versions[i].why & (1u << HM_MAPPED_ROLLBACK))
      return 1;
  return 0;
}

static void status_text_module(hm__ctl_buf *b, const hm_module_info *m) {
  char t[40], why[768];
  size_t i;
  iso_time(m->loaded_ns, t, sizeof t);
  if (m->version == 0)
    hm__ctl_printf(b, "\n%s  unloaded\n", m->name);
  else
    hm__ctl_printf(b, "\n%s  v%u (build %u)  %s, watched by %s  since %s\n", m->name, m->version,
                   m->build, mode_name(m->reload_mode), method_name(m->watch_method), t);
  hm__ctl_printf(b, "  path          %s\n", m->path);
  if (m->key_id[0] != '\0')
    hm__ctl_printf(b, "  signed        by key %s: %s\n", m->key_id, m->trusted_comment);
  hm__ctl_printf(b, "  counters      %llu reloads, %llu rejects, %llu rollbacks; %zu live slots\n",
                 m->reloads, m->rejects, m->rollbacks, m->live_slots);
  if (m->last_reject_ns != 0) {
    iso_time(m->last_reject_ns, t, sizeof t);
    hm__ctl_printf(b, "  last refusal  %s, v%u served on: %s: %s\n", t, m->last_reject_version,
                   hm_err_name(m->last_reject_err), m->last_reject);
  }
  if (m->nhistory > 0) {
    hm__ctl_printf(b, "  rollback      to build %u%s; history (oldest first):%s",
                   m->history[m->nhistory - 1],
                   rollback_ready(m) ? "" : " (not possible: neither mapped nor its copy kept)",
                   m->nhistory > 8 ? " ..." : "");
    for (i = m->nhistory > 8 ? m->nhistory - 8 : 0; i < m->nhistory; i++)
      hm__ctl_printf(b, " %u", m->history[i]);
    hm__ctl_printf(b, "\n");
  }
  for (i = 0; i < m->nversions; i++) {
    const hm_version_info *v = &m->versions[i];
    why_words(v, why, sizeof why);
    if (v->build != 0)
      hm__ctl_printf(b, "  %-13s v%u (build %u): %s", i == 0 ? "versions" : "", v->version,
                     v->build, why);
    else
      hm__ctl_printf(b, "  %-13s v%u: %s", i == 0 ? "versions" : "", v->version, why);
    if (v->note[0] != '\0')
      hm__ctl_printf(b, "; signed: %s", v->note);
    hm__ctl_printf(b, "\n");
  }
}

static void status_json_module(hm__ctl_buf *b, const hm_module_info *m) {
  char t[40], why[768];
  size_t i;
  int w;
  hm__ctl_printf(b, "{\"name\":");
  put_quoted(b, m->name, 0);
  hm__ctl_printf(b, ",\"path\":");
  put_quoted(b, m->path, 0);
  iso_time(m->loaded_ns, t, sizeof t);
  hm__ctl_printf(b,
                 ",\"version\":%u,\"build\":%u,\"loaded\":\"%s\",\"reload_mode\":\"%s\","
                 "\"watch_method\":\"%s\",\"reloads\":%llu,\"rejects\":%llu,\"rollbacks\":%llu,"
                 "\"live_slots\":%zu,\"prepared\":%s,\"last_error\":",
                 m->version, m->build, t, mode_name(m->reload_mode), method_name(m->watch_method),
                 m->reloads, m->rejects, m->rollbacks, m->live_slots,
                 m->prepared ? "true" : "false");
  if (m->last_reject_ns == 0) {
    hm__ctl_printf(b, "null");
  } else {
    char *e = NULL;
    size_t n = strlen(m->last_reject) + 64;
    e = hm__malloc(b->a, n);
    if (e == NULL) {
      b->oom = 1;
      return;
    }
    snprintf(e, n, "%s: %s", hm_err_name(m->last_reject_err), m->last_reject);
    put_quoted(b, e, 0);
    hm__free(b->a, e);
    iso_time(m->last_reject_ns, t, sizeof t);
    hm__ctl_printf(b, ",\"last_error_time\":\"%s\",\"last_error_version\":%u", t,
                   m->last_reject_version);
  }
  if (m->key_id[0] != '\0') {
    hm__ctl_printf(b, ",\"signed\":{\"key_id\":\"%s\",\"comment\":", m->key_id);
    put_quoted(b, m->trusted_comment, 0);
    hm__ctl_printf(b, "}");
  } else {
    hm__ctl_printf(b, ",\"signed\":null");
  }
  if (m->nhistory > 0)
    hm__ctl_printf(b, ",\"rollback_to\":%u,\"rollback_ready\":%s", m->history[m->nhistory - 1],
                   rollback_ready(m) ? "true" : "false");
  else
    hm__ctl_printf(b, ",\"rollback_to\":null,\"rollback_ready\":false");
  hm__ctl_printf(b, ",\"history\":[");
  for (i = 0; i < m->nhistory; i++)
    hm__ctl_printf(b, "%s%u", i ? "," : "", m->history[i]);
  hm__ctl_printf(b, "],\"versions\":[");
  for (i = 0; i < m->nversions; i++) {
    const hm_version_info *v = &m->versions[i];
    unsigned t2;
    why_words(v, why, sizeof why);
    hm__ctl_printf(b, "%s{\"version\":%u,\"build\":%u,\"why\":", i ? "," : "", v->version,
                   v->build);
    put_quoted(b, why, 0);
    hm__ctl_printf(b, ",\"reasons\":[");
    for (w = 1, t2 = 0; w < HM_MAPPED_MAX_ && w < 32; w++)
      if (v->why & (1u << w))
        hm__ctl_printf(b, "%s\"%s\"", t2++ ? "," : "", hm_mapped_text(w));
    hm__ctl_printf(b, "],\"mapped\":%s,\"snapshots\":%u,\"bytes\":%llu,\"threads\":[",
                   v->mapped ? "true" : "false", v->snapshots, v->bytes);
    for (t2 = 0; t2 < v->nthreads && t2 < HM_INFO_THREADS; t2++)
      hm__ctl_printf(b, "%s%d", t2 ? "," : "", v->threads[t2]);
    hm__ctl_printf(b, "],\"note\":");
    put_quoted(b, v->note, 0);
    hm__ctl_printf(b, "}");
  }
  hm__ctl_printf(b, "]}");
}

/* The registry's modules, described (*n of them; each to be cleared). NULL when there are
 * none or memory ran out (then *n is 0 and b->oom set). */
static hm_module_info *describe_all(hm_registry *reg, hm__ctl_buf *b, size_t *n) {
  hm_module **mods = NULL;
  hm_module_info *infos = NULL;
  int total = hm_registry_modules(reg, NULL, 0), got = 0, i;
  *n = 0;
  if (total <= 0)
    return NULL;
  mods = hm__calloc(b->a, (size_t)total, sizeof *mods);
  infos = hm__calloc(b->a, (size_t)total, sizeof *infos);
  if (mods != NULL && infos != NULL)
    got = hm_registry_modules(reg, mods, (size_t)total);
  for (i = 0; i < got && i < total; i++) {
    if (hm_module_describe(mods[i], &infos[*n]) != 0) {
      b->oom = 1;
      break;
    }
    (*n)++;
  }
  hm__free(b->a, mods);
  if (infos == NULL || b->oom) {
    for (i = 0; (size_t)i < *n; i++)
      hm_module_info_clear(&infos[i]);
    hm__free(b->a, infos);
    *n = 0;
    b->oom = 1;
    return NULL;
  }
  return infos;
}

static void free_infos(hm__ctl_buf *b, hm_module_info *infos, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    hm_module_info_clear(&infos[i]);
  hm__free(b->a, infos);
}

static int cmd_status(hm_registry *reg, const hm__ctl_counts *c, int json, hm__ctl_buf *b) {
  size_t n, i;
  hm_module_info *infos = describe_all(reg, b, &n);
  hm__ctl_printf(b, "ok\n");
  if (json) {
    hm__ctl_printf(b, "{\"pid\":%ld,\"registry\":", (long)getpid());
    put_quoted(b, hm_registry_name(reg), 0);
    hm__ctl_printf(b, ",\"control\":{\"path\":");
    put_quoted(b, c->path, 0);
    hm__ctl_printf(b,
                   ",\"accepted\":%llu,\"refused\":%llu,\"streams\":%u,\"events_dropped\":%llu},"
                   "\"modules\":[",
                   c->accepted, c->refused, c->streams, c->dropped);
    for (i = 0; i < n; i++) {
      if (i > 0)
        hm__ctl_printf(b, ",");
      status_json_module(b, &infos[i]);
    }
    hm__ctl_printf(b, "]}\n");
  } else {
    hm__ctl_printf(b, "registry %s, pid %ld, control socket %s\n", hm_registry_name(reg),
                   (long)getpid(), c->path);
    hm__ctl_printf(b,
                   "control: %llu connections accepted, %llu refused (another user); %u "
                   "streaming events, %llu events dropped\n",
                   c->accepted, c->refused, c->streams, c->dropped);
    for (i = 0; i < n; i++)
      status_text_module(b, &infos[i]);
  }
  free_infos(b, infos, n);
  return HM__CTL_OK;
}

/* ---- metrics ---------------------------------------------------------------------------- */

static void metric_head(hm__ctl_buf *b, const char *name, const char *type, const char *help) {
  hm__ctl_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int cmd_metrics(hm_registry *reg, const hm__ctl_counts *c, hm__ctl_buf *b) {
  static const struct {
    const char *name, *type, *help;
  } fams[] = {
      {"hotmod_module_version", "gauge", "The module's current version number (0: unloaded)."},
      {"hotmod_reloads_total", "counter", "Versions that replaced the module's current one."},
      {"hotmod_rejects_total", "counter", "Builds of the module refused (REJECTED events)."},
      {"hotmod_rollbacks_total", "counter", "Successful rollbacks of the module."},
      {"hotmod_versions_mapped", "gauge", "Versions of the module mapped in the process."},
      {"hotmod_last_reject_timestamp_seconds", "gauge",
       "When the module's last build was refused (0: never)."},
  };
  size_t n, i, f;
  hm_module_info *infos = describe_all(reg, b, &n);
  hm__ctl_printf(b, "ok\n");
  for (f = 0; f < sizeof fams / sizeof fams[0]; f++) {
    metric_head(b, fams[f].name, fams[f].type, fams[f].help);
    for (i = 0; i < n; i++) {
      const hm_module_info *m = &infos[i];
      unsigned long long v = 0;
      size_t k;
      switch (f) {
      case 0: v = m->version; break;
      case 1: v = m->reloads; break;
      case 2: v = m->rejects; break;
      case 3: v = m->rollbacks; break;
      case 4:
        for (k = 0; k < m->nversions; k++)
          v += m->versions[k].mapped != 0;
        break;
      default: v = (unsigned long long)(m->last_reject_ns / 1000000000LL); break;
      }
      hm__ctl_printf(b, "%s{module=", fams[f].name);
      put_quoted(b, m->name, 1);
      hm__ctl_printf(b, "} %llu\n", v);
    }
  }
  metric_head(b, "hotmod_control_connections_total", "counter",
              "Connections to the control socket, by whether their user was let in.");
  hm__ctl_printf(b, "hotmod_control_connections_total{result=\"accepted\"} %llu\n", c->accepted);
  hm__ctl_printf(b, "hotmod_control_connections_total{result=\"refused\"} %llu\n", c->refused);
  metric_head(b, "hotmod_control_events_dropped_total", "counter",
              "Events not streamed to a client that read too slowly.");
  hm__ctl_printf(b, "hotmod_control_events_dropped_total %llu\n", c->dropped);
  free_infos(b, infos, n);
  return HM__CTL_OK;
}

/* ---- reload, rollback ------------------------------------------------------------------- */

/* The mode in force for the module, and the number its prepared build would get. */
static int module_queued(hm_module *mod, unsigned *prepared_num) {
  hm_registry *reg = mod->reg;
  int queued;
  pthread_mutex_lock(&reg->lock);
  queued = (mod->mode != HM_RELOAD_DEFAULT ? mod->mode : reg->reload_mode) == HM_RELOAD_QUEUED;
  *prepared_num = mod->prepared != NULL && mod->prepared->v != NULL ? mod->prepared->v->num : 0;
  pthread_mutex_unlock(&reg->lock);
  return queued;
}

static int cmd_change(hm_registry *reg, const hm__ctl_req *rq, hm__ctl_buf *b) {
  hm_module *mod;
  unsigned num;
  int rollback = rq->cmd == HM__CTL_ROLLBACK, queued, rc;
  const char *what = rollback ? "rollback" : "reload";
  rc = hm_module_find(reg, rq->module, &mod);
  if (rc == 0) {
    queued = module_queued(mod, &num);
    if (queued)
      rc = rollback ? hm__rollback_prepare(mod)
           : (rc = hm__reload_checks(mod, "hm_module_reload")) != 0
               ? rc
               : hm__prepare_request(mod, rq->has_file ? rq->file : NULL);
    else if (rollback)
      rc = hm_module_rollback(mod);
    else
      rc = rq->has_file ? hm_module_reload_from(mod, rq->file) : hm_module_reload(mod);
  }
  if (rc != 0) {
    hm__ctl_reply_error(b, rc, hm_errmsg());
    return HM__CTL_FAILED;
  }
  if (queued) {
    (void)module_queued(mod, &num);
    hm__ctl_printf(b,
                   "queued %s of %s prepared as version %u: the host's next hm_registry_poll "
                   "publishes it (a newer build or request replaces it)\n",
                   what, rq->module, num);
    return HM__CTL_QUEUED;
  }
  hm__ctl_printf(b, "ok %s of %s: version %u is current\n", what, rq->module,
                 hm_module_version(mod));
  return HM__CTL_OK;
}

int hm__ctl_run(hm_registry *reg, const hm__ctl_req *rq, const hm__ctl_counts *c,
                hm__ctl_buf *b) {
  switch (rq->cmd) {
  case HM__CTL_STATUS:
    return cmd_status(reg, c, rq->json, b);
  case HM__CTL_METRICS:
    return cmd_metrics(reg, c, b);
  case HM__CTL_RELOAD:
  case HM__CTL_ROLLBACK:
    return cmd_change(reg, rq, b);
  case HM__CTL_PING:
    hm__ctl_printf(b, "ok pong\n");
    return HM__CTL_OK;
  default:
    hm__ctl_reply_error(b, HM_EINVAL, "not a command to run here");
    return HM__CTL_FAILED;
  }
}

/* ---- Events ---------------------------------------------------------------------------- */

static const char *event_token(hm_event ev) {
  static const char *const names[] = {
      "?",         "loaded",        "rejected", "retired",       "unloaded",
      "leaked",    "changed",       "rolled_back", "warning",    "build_started",
      "build_succeeded", "build_failed", "watch_failed"};
  return (unsigned)ev < sizeof names / sizeof names[0] ? names[ev] : "?";
}

void hm__ctl_event_line(char *out, size_t cap, hm_event ev, const char *module,
                        unsigned version, int err, const char *detail) {
  char t[40];
  size_t k, i;
  int w;
  iso_time(hm__now_ns(), t, sizeof t);
  w = snprintf(out, cap, "%s %s %s v%u", t, event_token(ev), module, version);
  k = w < 0 ? 0 : (size_t)w;
  if (err != 0 && k < cap)
    k += (size_t)snprintf(out + k, cap - k, " %s", hm_err_name(err));
  if (detail != NULL && detail[0] != '\0' && k < cap)
    k += (size_t)snprintf(out + k, cap - k, ": %s", detail);
  if (k > cap - 2)
    k = cap - 2; /* room for the newline */
  for (i = 0; i < k; i++)
    if (out[i] == '\n' || out[i] == '\r')
      out[i] = ' ';
  out[k] = '\n';
  out[k + 1] = '\0';
}
