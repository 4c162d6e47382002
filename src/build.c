/*
 * The build runner: runs a module's build rule (buildrule.c) on the watcher's loop when its
 * sources change. The watcher's inotify descriptor and directory watches serve the sources
 * too: watch.c hands every named event to hm__build_note and calls hm__build_kick once per
 * batch of events. The new .so the command writes reaches the module through the watcher's
 * ordinary path, so nothing here loads anything.
 *
 * Scheduling: a completed write (IN_CLOSE_WRITE, IN_MOVED_TO) of a matching source starts
 * the command at once; changes while it runs set `again`, and one more build starts when it
 * ends. No delay anywhere: an editor's several writes per save fold into that one follow-up.
 *
 * Children: posix_spawn through spawn.c (why not uv_spawn: see there and hotmod.h), each in
 * its own process group. The end is seen through a pidfd watched by a uv_poll_t (on kernels
 * without pidfds, a 10 ms timer asks waitid without reaping); then whatever is left of the
 * group is killed and the child reaped by its own pid. Output: one pipe for stdout and
 * stderr, read without blocking as it comes, the first output_max bytes kept.
 *
 * Lifetimes: a build state (hm__wbuild) has no handles of its own and lives on the
 * watcher's list until its rule changes or the watcher's last close. A running command (a
 * run) owns its handles (counted as one in the watcher's `open`), and is freed in their
 * close callbacks, after the events that use its output were sent.
 *
 * Layer 9 (docs/architecture.md), above watchpath.c and below watch.c: calls watchpath.c,
 * buildrule.c, events.c, module.c and spawn.c.
 */
#include "build.h"
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct hm__brun hm__brun;

typedef struct hm__wbuild {
  struct hm__wbuild *next;
  hm__watcher *w;
  hm_module *mod;
  hm__build_rule *rule; /* a reference */
  hm__wdir **dirs;      /* the watch on each source's directory (NULL: none, ENOMEM) */
  int touched;          /* a matching write in the events being read */
  int again;            /* changes came while the command ran: run it once more */
  hm__brun *run;        /* the command under way, or NULL */
} hm__wbuild;

struct hm__brun {
  hm__watcher *w;
  hm__wbuild *wb; /* NULL once the run is being closed */
  pid_t pid;
  int pidfd, outfd;
  uv_poll_t pid_poll, out_poll;
  uv_timer_t timer; /* the timeout; without a pidfd, also the exit check */
  unsigned handles; /* not yet closed */
  int reading;      /* out_poll is started */
  int timed_out;
  long long start_ns, deadline_ns;
  char *out;
  size_t len, cap, dropped;
};

#define BUILD_TICK_MS 10 /* without a pidfd: how often the exit is looked for */

static void on_run_closed(uv_handle_t *h) {
  hm__brun *run = h->data;
  hm__watcher *w = run->w;
  if (--run->handles != 0)
    return;
  if (run->pidfd >= 0)
    close(run->pidfd);
  close(run->outfd);
  hm__free(&w->a, run->out);
  hm__free(&w->a, run);
  hm__watch_handle_done(w);
}

/* Take what the pipe holds now; at its end, stop watching it. */
static void drain(hm__brun *run) {
  char scratch[4096];
  for (;;) {
    size_t room = run->cap - run->len;
    char *to = room > 0 ? run->out + run->len : scratch;
    ssize_t n = read(run->outfd, to, room > 0 ? room : sizeof scratch);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if ((n == 0 || errno != EAGAIN) && run->reading) {
        uv_poll_stop(&run->out_poll);
        run->reading = 0;
      }
      return;
    }
    if (room > 0)
      run->len += (size_t)n;
    else
      run->dropped += (size_t)n;
  }
}

static void on_output(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  drain(p->data);
}

/* Kill the command's group, reap it, take its last output and close the run's handles.
 * Returns 0 with its wait status, or -1 if it was reaped elsewhere. */
static int run_end(hm__brun *run, int *status) {
  int rc = hm__child_end(run->pid, status);
  drain(run);
  run->out[run->len] = '\0';
  if (run->wb != NULL)
    run->wb->run = NULL;
  run->wb = NULL;
  if (run->pidfd >= 0)
    uv_close((uv_handle_t *)&run->pid_poll, on_run_closed);
  uv_close((uv_handle_t *)&run->out_poll, on_run_closed);
  uv_close((uv_handle_t *)&run->timer, on_run_closed);
  return rc;
}

static void emit(hm__wbuild *wb, hm_event ev, int err, int status, long long start_ns,
                 const char *detail) {
  long long ms = (hm__mono_ns() - start_ns) / 1000000;
  hm__build_report r = {status, ms < 0 ? 0u : (unsigned)ms};
  const hm__build_report *prev = hm__event_build_set(&r);
  hm__emit_detail(wb->w->reg, ev, wb->mod, hm_module_version(wb->mod), err, detail);
  hm__event_build_set(prev);
}

/* The output, with a note of what did not fit, as the event's detail. */
static const char *output_text(hm__brun *run, char *note, size_t n) {
  if (run->dropped == 0)
    return run->out;
  snprintf(note, n, "%s\n[hotmod: %zu more bytes of output dropped (output_max)]\n", run->out,
           run->dropped);
  return note;
}

static void build_start(hm__wbuild *wb);

/* The command ended (or is ended now, with `err` -ECANCELED): report it, then run the
 * build that changes meanwhile asked for. */
static void run_finish(hm__brun *run, int err) {
  hm__wbuild *wb = run->wb;
  hm__watcher *w = run->w;
  int status = -1;
  size_t notelen = run->len + 128;
  char *note;
  if (run_end(run, &status) != 0) {
    status = -1;
    if (err == 0)
      err = -ECHILD;
  }
  if (err == 0 && run->timed_out)
    err = HM_ETIMEDOUT;
  if (err == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    err = HM_EBUILD;
  if (hm__watch_winding_down(w))
    return;
  note = run->dropped != 0 ? hm__malloc(&w->a, notelen) : NULL;
  emit(wb, err == 0 ? HM_EVENT_BUILD_SUCCEEDED : HM_EVENT_BUILD_FAILED, err, status,
       run->start_ns, note != NULL ? output_text(run, note, notelen) : run->out);
  hm__free(&w->a, note);
  if (wb->again && err != -ECANCELED && !hm__watch_winding_down(w)) {
    wb->again = 0;
    build_start(wb);
  }
}

static void on_exit_ready(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  run_finish(p->data, 0);
}

static void on_run_timer(uv_timer_t *t) {
  hm__brun *run = t->data;
  /* With a pidfd this timer is the timeout itself (libuv's clock, cached per loop turn, may
   * run it a little before deadline_ns); without, it ticks and the deadline is checked. */
  if (!run->timed_out && (run->pidfd >= 0 || hm__mono_ns() >= run->deadline_ns)) {
    run->timed_out = 1;
    /* Not reaped yet (only we reap it, by its pid): the group id is still its own. */
    if (hm__child_unreaped(run->pid))
      kill(-run->pid, SIGKILL);
  }
  if (run->pidfd < 0 && hm__child_exited(run->pid))
    run_finish(run, 0);
}

/* The host's environment with the rule's additions ("NAME=value") and removals ("NAME").
 * The strings are borrowed. */
static char **make_env(const hm__allocator *a, char **add) {
  size_t n = 0, m = 0, i, j;
  char **env;
  while (environ != NULL && environ[n] != NULL)
    n++;
  while (add != NULL && add[m] != NULL)
    m++;
  env = hm__calloc(a, n + m + 1, sizeof *env);
  if (env == NULL)
    return NULL;
  for (i = 0; i < n; i++)
    env[i] = environ[i];
  for (j = 0; j < m; j++) {
    const char *eq = strchr(add[j], '=');
    size_t k = eq != NULL ? (size_t)(eq - add[j]) : strlen(add[j]), out = 0;
    for (i = 0; i < n; i++) /* drop the host's NAME=... */
      if (!(strncmp(env[i], add[j], k) == 0 && env[i][k] == '='))
        env[out++] = env[i];
    n = out;
    if (eq != NULL)
      env[n++] = add[j];
    env[n] = NULL;
  }
  return env;
}

/* Start the command; events: STARTED, and FAILED at once if it cannot run. */
static void build_start(hm__wbuild *wb) {
  hm__watcher *w = wb->w;
  hm__build_rule *r = wb->rule;
  hm__brun *run = hm__calloc(&w->a, 1, sizeof *run);
  hm__spawn_req sp;
  char **env = NULL, why[600];
  int wfd = -1, rc;
  long long start = hm__mono_ns();

  if (run == NULL || (run->out = hm__malloc(&w->a, (size_t)r->output_max + 1)) == NULL) {
    rc = HM_ENOMEM;
    goto fail;
  }
  run->w = w;
  run->cap = r->output_max;
  run->pidfd = -1;
  run->outfd = -1;
  if ((rc = hm__spawn_pipe(&run->outfd, &wfd)) != 0)
    goto fail;
  (void)fcntl(run->outfd, F_SETFL, O_NONBLOCK);
  if (r->env != NULL && (env = make_env(&w->a, r->env)) == NULL) {
    rc = HM_ENOMEM;
    goto fail;
  }
  memset(&sp, 0, sizeof sp);
  sp.path = r->argv[0];
  sp.argv = r->argv;
  sp.envp = env;
  sp.cwd = r->cwd;
  sp.search_path = strchr(r->argv[0], '/') == NULL;
  sp.out_fd = wfd;
  sp.err_fd = wfd;
  sp.fd3 = -1;
  start = hm__mono_ns();
  rc = hm__spawn(&sp, &run->pid);
  hm__free(&w->a, env);
  close(wfd);
  wfd = -1;
  if (rc != 0)
    goto fail;
  run->start_ns = start;
  run->deadline_ns = start + (long long)r->timeout_ms * 1000000;
  run->pidfd = hm__pidfd_open(run->pid);
  /* uv_poll_init fails only for a descriptor epoll refuses; these are a pipe and a pidfd. */
  uv_poll_init(w->loop, &run->out_poll, run->outfd);
  uv_timer_init(w->loop, &run->timer);
  run->out_poll.data = run->pid_poll.data = run->timer.data = run;
  run->handles = 2;
  if (run->pidfd >= 0) {
    uv_poll_init(w->loop, &run->pid_poll, run->pidfd);
    run->handles++;
  }
  w->open++;
  run->reading = uv_poll_start(&run->out_poll, UV_READABLE, on_output) == 0;
  if (run->pidfd >= 0) {
    uv_poll_start(&run->pid_poll, UV_READABLE, on_exit_ready);
    uv_timer_start(&run->timer, on_run_timer, r->timeout_ms, 0);
  } else {
    uv_timer_start(&run->timer, on_run_timer, BUILD_TICK_MS, BUILD_TICK_MS);
  }
  run->wb = wb;
  wb->run = run;
  emit(wb, HM_EVENT_BUILD_STARTED, 0, -1, start, "");
  return;

fail:
  if (wfd >= 0)
    close(wfd);
  if (run != NULL) {
    if (run->outfd >= 0)
      close(run->outfd);
    hm__free(&w->a, run->out);
    hm__free(&w->a, run);
  }
  snprintf(why, sizeof why, "cannot run the build command %s (in %s): %s", r->argv[0], r->cwd,
           hm_strerror(rc));
  emit(wb, HM_EVENT_BUILD_STARTED, 0, -1, start, "");
  if (!hm__watch_winding_down(w))
    emit(wb, HM_EVENT_BUILD_FAILED, rc, -1, start, why);
}

/* ---- Build states ---------------------------------------------------------------------- */

/* Watch the directories of the rule's sources that are not watched yet (all, for a new
 * state). One that cannot be (memory) is tried again on the watcher's retry timer. */
static void wbuild_watch_dirs(hm__watcher *w, hm__wbuild *wb) {
  size_t i;
  for (i = 0; i < wb->rule->nsrcs; i++) {
    if (wb->dirs[i] == NULL)
      wb->dirs[i] = hm__watch_dir_ref(w, wb->rule->srcs[i].dir);
    if (wb->dirs[i] == NULL)
      hm__watch_setup_failed(w);
  }
}

static hm__wbuild *wbuild_new(hm__watcher *w, hm_module *mod, hm__build_rule *rule) {
  hm__wbuild *wb = hm__calloc(&w->a, 1, sizeof *wb);
  if (wb == NULL || (wb->dirs = hm__calloc(&w->a, rule->nsrcs, sizeof *wb->dirs)) == NULL) {
    hm__free(&w->a, wb);
    hm__watch_setup_failed(w);
    return NULL;
  }
  wb->w = w;
  wb->mod = mod;
  wb->rule = rule;
  wbuild_watch_dirs(w, wb);
  wb->next = w->builds;
  w->builds = wb;
  return wb;
}

/* Take the state off the list and free it; its command must have ended. `unwatch`: let go
 * of the directory watches too (not at the watcher's last close, which frees them all). */
static void wbuild_free(hm__watcher *w, hm__wbuild *wb, int unwatch) {
  hm__wbuild **pp;
  size_t i;
  for (pp = &w->builds; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == wb) {
      *pp = wb->next;
      break;
    }
  }
  for (i = 0; unwatch && i < wb->rule->nsrcs; i++)
    if (wb->dirs[i] != NULL)
      hm__watch_dir_unref(w, wb->dirs[i]);
  hm__build_rule_unref(wb->rule);
  hm__free(&w->a, wb->dirs);
  hm__free(&w->a, wb);
}

typedef struct build_todo {
  hm_module *mod;
  hm__build_rule *rule; /* a reference, or NULL */
} build_todo;

void hm__build_reconcile(hm__watcher *w) {
  hm_registry *reg = w->reg;
  build_todo *todo;
  size_t i, n = 0;
  pthread_mutex_lock(&reg->lock);
  todo = reg->nmods != 0 ? hm__calloc(&w->a, reg->nmods, sizeof *todo) : NULL;
  if (reg->nmods != 0 && todo == NULL)
    hm__watch_setup_failed(w);
  for (i = 0; todo != NULL && i < reg->nmods; i++) {
    hm_module *mod = reg->mods[i];
    todo[n].mod = mod;
    todo[n].rule = mod->cur != NULL ? mod->build : NULL;
    if (todo[n].rule != NULL)
      hm__build_rule_ref(todo[n].rule);
    n++;
  }
  pthread_mutex_unlock(&reg->lock);
  for (i = 0; i < n; i++) {
    hm__wbuild *wb;
    int was_running = 0;
    for (wb = w->builds; wb != NULL && wb->mod != todo[i].mod; wb = wb->next)
      ;
    if (wb != NULL && wb->rule == todo[i].rule && !hm__watch_winding_down(w))
      wbuild_watch_dirs(w, wb); /* those that failed before */
    if ((wb == NULL && todo[i].rule == NULL) || hm__watch_winding_down(w) ||
        (wb != NULL && wb->rule == todo[i].rule))
      continue;
    if (wb != NULL) {
      was_running = wb->run != NULL || wb->again;
      if (wb->run != NULL)
        run_finish(wb->run, -ECANCELED);
      if (hm__watch_winding_down(w))
        continue; /* hm__build_free takes it */
      wbuild_free(w, wb, 1);
    }
    if (todo[i].rule != NULL) {
      wb = wbuild_new(w, todo[i].mod, todo[i].rule);
      if (wb != NULL) {
        todo[i].rule = NULL; /* the state holds the reference now */
        if (was_running)
          build_start(wb);
      }
    }
  }
  for (i = 0; i < n; i++)
    hm__build_rule_unref(todo[i].rule);
  hm__free(&w->a, todo);
}

int hm__build_watch_err(hm__watcher *w, hm_module *mod, int has_rule, char *what, size_t n) {
  hm__wbuild *wb;
  size_t i;
  for (wb = w->builds; wb != NULL && wb->mod != mod; wb = wb->next)
    ;
  if (wb == NULL) {
    snprintf(what, n, "the sources of %s's build rule", mod->name);
    return has_rule ? HM_ENOMEM : 0; /* its state could not be made */
  }
  for (i = 0; i < wb->rule->nsrcs; i++) {
    if (wb->dirs[i] == NULL || wb->dirs[i]->err != 0) {
      snprintf(what, n, "the source directory %s of %s's build rule", wb->rule->srcs[i].dir,
               mod->name);
      return wb->dirs[i] == NULL ? HM_ENOMEM : wb->dirs[i]->err;
    }
  }
  return 0;
}

void hm__build_note(hm__watcher *w, const struct inotify_event *ev) {
  hm__wbuild *wb;
  for (wb = w->builds; wb != NULL; wb = wb->next) {
    size_t i;
    if (ev == NULL) { /* events were lost: any source may have changed */
      wb->touched = 1;
      continue;
    }
    if (!(ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) || (ev->mask & IN_ISDIR))
      continue;
    for (i = 0; i < wb->rule->nsrcs && !wb->touched; i++)
      if (wb->dirs[i] != NULL && wb->dirs[i]->wd == ev->wd &&
          hm__build_rule_matches(wb->rule, i, ev->name))
        wb->touched = 1;
  }
}

void hm__build_kick(hm__watcher *w) {
  hm__wbuild *wb;
  for (wb = w->builds; wb != NULL && !hm__watch_winding_down(w); wb = wb->next) {
    if (!wb->touched)
      continue;
    wb->touched = 0;
    if (wb->run != NULL)
      wb->again = 1;
    else
      build_start(wb);
  }
}

void hm__build_close(hm__watcher *w) {
  hm__wbuild *wb;
  for (wb = w->builds; wb != NULL; wb = wb->next) {
    int status;
    if (wb->run != NULL)
      (void)run_end(wb->run, &status);
  }
}

void hm__build_free(hm__watcher *w) {
  while (w->builds != NULL)
    wbuild_free(w, w->builds, 0);
}
