/*
 * gameloop: a fixed-rate loop (30 frames a second) whose update and draw functions live in a
 * module that is rebuilt while it runs.
 *
 * The host loads world.so with the watcher in queued mode: the watcher notices a finished
 * build and marks the module; the loop applies it with hm_registry_poll at the frame
 * boundary, where no update or draw is under way. The world (particle positions, the frame
 * counter) is the module's state and passes from each version to the next.
 *
 * The module has a build rule (hm_module_set_build): when its source, a working copy of
 * world.c, is saved, the watcher runs the C compiler CMake found on it, writing the watched
 * world.so; the new build then reaches the loop like any other. A build that fails (a typo)
 * is reported with the compiler's message, and the running version goes on.
 *
 * Scripted (the default, and `make demo`): an editor thread saves three edits of the working
 * copy, as an editor does (a temporary file renamed over it): colour and glyph, speed, the
 * layout of the world. The host checks at every switch that the new version starts from the
 * old world, and ends with a summary. On a terminal it draws the box every frame; otherwise
 * it prints one line per build and per switch.
 *
 * Interactive (--interactive, `make demo ARGS=--interactive`): no script; a person edits the
 * working copy whose path is printed, and each save shows on the next frames. Ctrl-C ends it.
 */
#include "hotmod.h"

#include "gameloop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define FPS 30
#define DEADLINE_S 120.0 /* give up (and fail) if the edits have not all gone live by then */
#define SETTLE_S 1.2     /* run on this long after each switch, so it can be seen */
#define BUILD_TIMEOUT_MS 60000

/* The script's edits of world.c, applied one after the other to the text. */
static const struct edit {
  const char *what, *from, *to;
} edits[] = {
    {"colour cyan -> yellow, glyph o -> @", "#define COLOUR 36 /* cyan */\n#define GLYPH \"o\"",
     "#define COLOUR 33 /* yellow */\n#define GLYPH \"@\""},
    {"speed x1.0 -> x2.5", "#define SPEED 1.0", "#define SPEED 2.5"},
    {"world layout 1 -> 2: a bounce count per particle",
     "#define WORLD_LAYOUT 1", "#define WORLD_LAYOUT 2"},
};
#define NEDITS (sizeof edits / sizeof edits[0])

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Messages from the editor thread, printed by the loop -------------------------------- */

static pthread_mutex_t msg_mu = PTHREAD_MUTEX_INITIALIZER;
static char msgs[8][200];
static unsigned msg_head, msg_tail; /* msgs[head % 8 .. tail % 8) wait to be shown */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&msg_mu);
  if (msg_tail - msg_head == 8)
    msg_head++; /* the loop is not keeping up: drop the oldest */
  va_start(ap, fmt);
  vsnprintf(msgs[msg_tail % 8], sizeof msgs[0], fmt, ap);
  va_end(ap);
  msg_tail++;
  pthread_mutex_unlock(&msg_mu);
}

/* Take the oldest waiting message into out; 0 if none. */
static int next_msg(char *out, size_t cap) {
  int got = 0;
  pthread_mutex_lock(&msg_mu);
  if (msg_head != msg_tail) {
    snprintf(out, cap, "%s", msgs[msg_head % 8]);
    msg_head++;
    got = 1;
  }
  pthread_mutex_unlock(&msg_mu);
  return got;
}

/* ---- The editor: edit, build, install ------------------------------------------------------ */

struct editor {
  char dir[256];               /* the working directory: dir/world.so is the watched file,
                                  dir/src/world.c its source */
  double t0;                   /* when the loop started */
  unsigned live_version;       /* the module version the loop runs (atomic) */
  int stop;                    /* the loop is ending (atomic) */
  int done;                    /* 1: every edit went live; -1: the script failed (atomic) */
  unsigned installed;          /* edits saved so far (atomic) */
  double installed_at[NEDITS]; /* when each was; written before `installed` counts it */
};

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (f == NULL)
    return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n + 1)) != NULL) {
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
      free(buf);
      buf = NULL;
    } else {
      buf[n] = '\0';
    }
  }
  fclose(f);
  return buf;
}

static int write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (f == NULL)
    return -1;
  fputs(text, f);
  return fclose(f);
}

/* Replace the first `from` in *text with `to`; -1 if it is not there. */
static int apply_edit(char **text, const struct edit *e) {
  char *at = strstr(*text, e->from), *out;
  size_t pre, nfrom = strlen(e->from), nto = strlen(e->to), total;
  if (at == NULL)
    return -1;
  pre = (size_t)(at - *text);
  total = strlen(*text) - nfrom + nto;
  if ((out = malloc(total + 1)) == NULL)
    return -1;
  memcpy(out, *text, pre);
  memcpy(out + pre, e->to, nto);
  strcpy(out + pre + nto, at + nfrom);
  free(*text);
  *text = out;
  return 0;
}

/* Save `text` as an editor does: a temporary file beside `path`, renamed over it. */
static int save_file(const char *path, const char *text) {
  char tmp[320];
  snprintf(tmp, sizeof tmp, "%s.save", path);
  if (write_file(tmp, text) != 0)
    return -1;
  return rename(tmp, path);
}

static void *editor_main(void *arg) {
  struct editor *ed = arg;
  char src[300];
  char *text;
  unsigned i;
  snprintf(src, sizeof src, "%s/src/world.c", ed->dir);
  if ((text = read_file(src)) == NULL) {
    say("editor: cannot read %s", src);
    goto fail;
  }
  for (i = 0; i < NEDITS; i++) {
    unsigned want = __atomic_load_n(&ed->live_version, __ATOMIC_ACQUIRE) + 1;
    double wait_until = now_s() + (i == 0 ? 1.0 : SETTLE_S);
    while (now_s() < wait_until && !__atomic_load_n(&ed->stop, __ATOMIC_ACQUIRE))
      usleep(10000);
    if (__atomic_load_n(&ed->stop, __ATOMIC_ACQUIRE))
      goto out;
    if (apply_edit(&text, &edits[i]) != 0) {
      say("editor: edit %u (%s): the text to change is not in world.c", i + 1, edits[i].what);
      goto fail;
    }
    /* Told before the save: the build may start before the rename returns here. */
    ed->installed_at[i] = now_s();
    __atomic_store_n(&ed->installed, i + 1, __ATOMIC_RELEASE);
    say("[%5.2f s] edit %u saved: %s", ed->installed_at[i] - ed->t0, i + 1, edits[i].what);
    if (save_file(src, text) != 0) {
      say("editor: saving %s: %s", src, strerror(errno));
      goto fail;
    }
    /* One version per edit: wait until this build runs before making the next. */
    while (__atomic_load_n(&ed->live_version, __ATOMIC_ACQUIRE) < want) {
      if (__atomic_load_n(&ed->stop, __ATOMIC_ACQUIRE))
        goto out;
      usleep(5000);
    }
  }
  __atomic_store_n(&ed->done, 1, __ATOMIC_RELEASE);
out:
  free(text);
  return NULL;
fail:
  __atomic_store_n(&ed->done, -1, __ATOMIC_RELEASE);
  free(text);
  return NULL;
}

/* ---- The host ------------------------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

static int rejects, builds_ok, builds_failed;
static double t_start; /* when the loop started, for the messages' times */
static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  const char *out, *nl;
  unsigned ms = 0;
  (void)mod, (void)ud;
  switch (ev) {
  case HM_EVENT_REJECTED:
    __atomic_add_fetch(&rejects, 1, __ATOMIC_RELAXED);
    say("build refused (%s): %s; version %u serves on", hm_err_name(err), hm_event_detail(),
        version);
    break;
  case HM_EVENT_BUILD_SUCCEEDED:
    __atomic_add_fetch(&builds_ok, 1, __ATOMIC_RELAXED);
    hm_event_build(NULL, &ms);
    say("[%5.2f s] the build rule compiled it in %u ms", now_s() - t_start, ms);
    break;
  case HM_EVENT_BUILD_FAILED:
    /* The compiler's first line that names an error, else its first line. */
    __atomic_add_fetch(&builds_failed, 1, __ATOMIC_RELAXED);
    out = hm_event_detail() ? hm_event_detail() : "";
    if ((nl = strstr(out, "error")) != NULL) {
      while (nl > out && nl[-1] != '\n')
        nl--;
      out = nl;
    }
    nl = strchr(out, '\n');
    say("[%5.2f s] build failed (%s): %.*s; version %u serves on", now_s() - t_start,
        hm_err_name(err), (int)(nl != NULL ? (size_t)(nl - out) : strlen(out)), out, version);
    break;
  default:
    break;
  }
}

/* One version switch, as the loop saw it. */
struct switch_rec {
  unsigned from, to;
  unsigned long long frame; /* the world's frame when it happened */
  int kept;                 /* the new version continued the old world */
  double frame_ms, poll_ms;
};

struct game {
  int interactive; /* no script: a person edits, Ctrl-C ends */
  hm_registry *reg;
  hm_live *update, *draw, *peek;
  struct editor ed;
  int tty, cols;
  double t_start;
  struct switch_rec sw[NEDITS + 4];
  unsigned nsw, versions[NEDITS + 4], nversions;
  double *frame_ms; /* the work time of every frame */
  size_t nframes, cap;
  unsigned long long late;
  double longest_other; /* the longest frame without a switch */
  char screen[16384];
  char shown[5][200]; /* a terminal's last five messages */
  unsigned nshown;
};

static void peek(struct game *g, struct gl_peek *out) {
  HM_LIVE_CALL(g->peek, gl_peek_fn, out);
}

/* The new version's view of the world against the old one's, taken just before the switch:
 * the same world (id), at the same frame, every particle where it was. */
static int same_world(const struct gl_peek *a, const struct gl_peek *b) {
  unsigned i;
  if (a->id != b->id || a->frame != b->frame || a->n != b->n)
    return 0;
  for (i = 0; i < a->n; i++)
    if (a->x[i] != b->x[i] || a->y[i] != b->y[i])
      return 0;
  return 1;
}

/* Record the switch that hm_registry_poll just made, between `before` (the old version's
 * world just before the poll) and `after` (the new version's, before its first update), with
 * `now` after that update. */
static void record_switch(struct game *g, const struct gl_peek *before,
                          const struct gl_peek *after, const struct gl_peek *now, double p0,
                          double p1) {
  struct switch_rec *s = &g->sw[g->nsw < NEDITS + 4 ? g->nsw++ : g->nsw - 1];
  unsigned k = __atomic_load_n(&g->ed.installed, __ATOMIC_ACQUIRE);
  char since[64] = "";
  s->from = before->version;
  s->to = after->version;
  s->frame = before->frame;
  s->kept = after->version != before->version && same_world(before, after) &&
            now->frame == before->frame + 1;
  s->poll_ms = (p1 - p0) * 1e3;
  if (g->nversions < NEDITS + 4)
    g->versions[g->nversions++] = after->version;
  if (k > 0) /* scripted: the time since the edit was saved */
    snprintf(since, sizeof since, ", %.0f ms after the save", (p1 - g->ed.installed_at[k - 1]) * 1e3);
  say("[%5.2f s] frame %llu: v%u -> v%u%s; poll %.2f ms; world %s", p1 - g->t_start,
      s->frame + 1, s->from, s->to, since, s->poll_ms, s->kept ? "continued" : "NOT continued");
  say("          v%u: %s%s", now->version, now->about,
      before->layout != after->layout ? " (world migrated)" : "");
  __atomic_store_n(&g->ed.live_version, after->version, __ATOMIC_RELEASE);
}

/* Show the frame on a terminal, or the messages as lines elsewhere. */
static void show(struct game *g, size_t len) {
  char line[200];
  struct gl_peek now;
  int k;
  if (!g->tty) {
    while (next_msg(line, sizeof line))
      printf("%s\n", line);
    fflush(stdout);
    return;
  }
  /* Lines are cut to the terminal's width: a wrapped line would scroll the box. */
  peek(g, &now);
  snprintf(line, sizeof line, " version %u  frame %llu  %s", now.version, now.frame, now.about);
  printf("\x1b[H%.*s%.*s\x1b[K\n", (int)len, g->screen, g->cols - 1, line);
  while (next_msg(g->shown[g->nshown % 5], sizeof g->shown[0]))
    g->nshown++;
  for (k = 0; k < 5; k++) /* the last five messages, oldest first */
    printf("%.*s\x1b[K\n", g->cols - 1,
           g->nshown >= 5 ? g->shown[(g->nshown + (unsigned)k) % 5]
                          : (unsigned)k < g->nshown ? g->shown[k] : "");
  fflush(stdout);
}

/* One frame: apply a queued build at the safe point, update, draw. -1 when out of memory. */
static int frame(struct game *g) {
  struct gl_peek before, after, now;
  double f0 = now_s(), p0, p1, ms;
  size_t len;
  int n;
  peek(g, &before);
  p0 = now_s();
  n = hm_registry_poll(g->reg); /* no module code runs here: the frame boundary */
  p1 = now_s();
  if (n > 0)
    peek(g, &after);
  HM_LIVE_CALL(g->update, gl_update_fn, 1.0 / FPS);
  if (n > 0) {
    peek(g, &now);
    record_switch(g, &before, &after, &now, p0, p1);
  }
  len = HM_LIVE_CALL(g->draw, gl_draw_fn, g->screen, sizeof g->screen, g->tty);
  show(g, len);
  ms = (now_s() - f0) * 1e3;
  if (g->nframes == g->cap) {
    double *grown = realloc(g->frame_ms, (g->cap ? g->cap * 2 : 1024) * sizeof *grown);
    if (grown == NULL)
      return -1;
    g->frame_ms = grown;
    g->cap = g->cap ? g->cap * 2 : 1024;
  }
  g->frame_ms[g->nframes++] = ms;
  if (n > 0)
    g->sw[g->nsw - 1].frame_ms = ms;
  else if (ms > g->longest_other)
    g->longest_other = ms;
  return 0;
}

/* Run frames at FPS until the script is done (and a little more), fails, or hangs. */
static void run(struct game *g) {
  const long period_ns = 1000000000L / FPS;
  struct timespec next;
  double end_at = 0, t;
  int done;
  clock_gettime(CLOCK_MONOTONIC, &next);
  while (!interrupted && frame(g) == 0) {
    t = now_s();
    done = __atomic_load_n(&g->ed.done, __ATOMIC_ACQUIRE);
    if (done != 0 && end_at == 0)
      end_at = t + (done > 0 ? SETTLE_S : 0);
    if ((end_at > 0 && t >= end_at) || (!g->interactive && t - g->t_start > DEADLINE_S))
      break;
    /* Sleep to the next frame; a frame that starts late is counted, not caught up. */
    next.tv_nsec += period_ns;
    if (next.tv_nsec >= 1000000000L) {
      next.tv_nsec -= 1000000000L;
      next.tv_sec++;
    }
    if (t > (double)next.tv_sec + (double)(next.tv_nsec + period_ns) / 1e9) {
      g->late++;
      clock_gettime(CLOCK_MONOTONIC, &next);
      continue;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR &&
           !interrupted)
      ;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Print the summary; 1 if every edit became a version that continued the world. */
static int summary(struct game *g, double seconds) {
  struct gl_peek now;
  double *sorted = malloc((g->nframes ? g->nframes : 1) * sizeof *sorted), median = 0;
  double worst = 0, worst_poll = 0;
  unsigned k, kept = 0;
  int preserved;
  for (k = 0; k < g->nsw; k++) {
    if (g->sw[k].frame_ms > worst) {
      worst = g->sw[k].frame_ms;
      worst_poll = g->sw[k].poll_ms;
    }
    kept += (unsigned)g->sw[k].kept;
  }
  if (sorted != NULL && g->nframes > 0) {
    memcpy(sorted, g->frame_ms, g->nframes * sizeof *sorted);
    qsort(sorted, g->nframes, sizeof *sorted, cmp_double);
    median = sorted[g->nframes / 2];
  }
  free(sorted);
  peek(g, &now);
  /* Every switch continued the world, and no update was lost: one per frame. */
  preserved = g->nsw > 0 && kept == g->nsw && now.frame == g->nframes;
  printf("\ngameloop summary\n");
  printf("  edits:           %u made; builds: %d compiled, %d failed, %d refused by hotmod\n",
         g->interactive ? (unsigned)(builds_ok + builds_failed)
                        : __atomic_load_n(&g->ed.installed, __ATOMIC_ACQUIRE),
         __atomic_load_n(&builds_ok, __ATOMIC_RELAXED),
         __atomic_load_n(&builds_failed, __ATOMIC_RELAXED),
         __atomic_load_n(&rejects, __ATOMIC_RELAXED));
  printf("  versions seen:   %u (", g->nversions);
  for (k = 0; k < g->nversions; k++)
    printf("%s%u", k ? " -> " : "", g->versions[k]);
  printf(")\n");
  printf("  frames:          %zu in %.2f s (%.1f a second, target %d; %llu late)\n", g->nframes,
         seconds, (double)g->nframes / seconds, FPS, g->late);
  printf("  world preserved: %s\n", g->nsw == 0 ? "(no reload happened)" : preserved ? "yes" : "no");
  printf("                   %u of %u switches: the new version started from the old world's\n"
         "                   id, frame and positions, and its first update made the next "
         "frame;\n                   world %llx counted %llu updates in %zu frames\n",
         kept, g->nsw, now.id, now.frame, g->nframes);
  printf("  frame time:      median %.3f ms, longest with a reload %.3f ms\n"
         "                   (hm_registry_poll %.3f ms), longest without %.3f ms; "
         "budget %.1f ms\n",
         median, worst, worst_poll, g->longest_other, 1e3 / FPS);
  return preserved && g->nversions >= NEDITS + 1;
}

/* Copy a file, mode 0755: the registry refuses modules that others may write. */
static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  char buf[65536];
  size_t n;
  if (in != NULL && out != NULL)
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
      fwrite(buf, 1, n, out);
  if (in != NULL)
    fclose(in);
  if (out != NULL && fclose(out) == 0)
    chmod(to, 0755);
}

static void remove_workdir(const char *dir) {
  static const char *const files[] = {"world.so", "src/world.c", "src/world.c.save", "src", ""};
  char p[320];
  size_t i;
  for (i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, files[i]);
    if (remove(p) != 0 && errno != ENOENT)
      fprintf(stderr, "gameloop: remove %s: %s\n", p, strerror(errno));
  }
}

#ifdef GAMELOOP_WERROR
#define WERROR "-Werror"
#else
#define WERROR "-Wno-error"
#endif

/* Load world.so from the working directory, watched in queued mode, with a build rule that
 * compiles src/world.c into it as hotmod_add_module would, with the compiler CMake found. */
static int start(struct game *g) {
  hm_registry_options opts = HM_REGISTRY_OPTIONS_INIT;
  hm_build_options build = HM_BUILD_OPTIONS_INIT;
  char target[300], src[300];
  const char *cc[] = {GAMELOOP_CC, "-std=gnu11", "-O2", "-fPIC", "-shared",
                      "-fvisibility=hidden", "-Wall", "-Wextra", WERROR, "-Wl,-Bsymbolic",
                      "-Wl,-z,now", "-I" GAMELOOP_INCLUDE, "-I" GAMELOOP_SRCDIR, "-o", target,
                      "world.c", NULL};
  const char *sources[] = {src, NULL}, *include[] = {"world.c", NULL};
  hm_module *mod;
  int rc;
  snprintf(target, sizeof target, "%s/world.so", g->ed.dir);
  snprintf(src, sizeof src, "%s/src", g->ed.dir);
  copy_file(GAMELOOP_WORLD_SO, target); /* version 1: world.c as it is, built by CMake */
  snprintf(src, sizeof src, "%s/src/world.c", g->ed.dir);
  copy_file(GAMELOOP_SRCDIR "/world.c", src);
  snprintf(src, sizeof src, "%s/src", g->ed.dir);
  build.argv = cc;
  build.sources = sources;
  build.include = include;
  build.cwd = src;
  build.timeout_ms = BUILD_TIMEOUT_MS;
  opts.flags = HM_FLAG_QUIET;
  opts.on_event = on_event;
  opts.reload_mode = HM_RELOAD_QUEUED;
  if ((rc = hm_registry_new(&g->reg, &opts)) != 0 ||
      (rc = hm_module_load(g->reg, "world", target, &mod)) != 0 ||
      (rc = hm_live_get_typed(g->reg, "world:world_update", GL_UPDATE_SIG, &g->update)) != 0 ||
      (rc = hm_live_get_typed(g->reg, "world:world_draw", GL_DRAW_SIG, &g->draw)) != 0 ||
      (rc = hm_live_get_typed(g->reg, "world:world_peek", GL_PEEK_SIG, &g->peek)) != 0 ||
      (rc = hm_module_set_build(mod, &build)) != 0 || (rc = hm_watch_start(g->reg)) != 0) {
    fprintf(stderr, "gameloop: %s: %s (%s)\n", target, hm_strerror(rc), hm_errmsg());
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  static struct game g;
  struct gl_peek first;
  struct sigaction sa;
  struct winsize ws;
  pthread_t editor;
  char line[300];
  double t_end;
  int rc, ok = 0;

  if (argc > 2 || (argc == 2 && strcmp(argv[1], "--interactive") != 0)) {
    printf("usage: %s [--interactive]\n"
           "  scripted (default): three edits of the module are saved, built and reloaded\n"
           "  --interactive: edit the module's source yourself; Ctrl-C ends\n",
           argv[0]);
    return argc == 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
  }
  g.interactive = argc == 2;
  umask(022); /* the builds' files must not be writable by others (see copy_file) */
  snprintf(g.ed.dir, sizeof g.ed.dir, "%s/hotmod-gameloop-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(g.ed.dir) == NULL)
    return perror("gameloop: mkdtemp"), 1;
  snprintf(line, sizeof line, "%s/src", g.ed.dir);
  if (mkdir(line, 0700) != 0 || start(&g) != 0)
    goto out;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  g.tty = isatty(STDOUT_FILENO);
  g.cols = g.tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20 ? ws.ws_col : 80;

  peek(&g, &first);
  g.versions[g.nversions++] = first.version;
  printf("gameloop: hotmod %s, %d frames a second, world.so reloaded in queued mode at the "
         "frame boundary, rebuilt by its build rule when world.c is saved; ",
         hm_version_string(), FPS);
  if (g.interactive)
    printf("edit\n  %s/src/world.c\n(SPEED, COLOUR, GLYPH, the physics ...): each save shows "
           "on the next frames; a typo is reported and the running version goes on. Ctrl-C "
           "ends.%s\n",
           g.ed.dir, g.tty ? " Starting in 3 s." : "");
  else
    printf("%zu scripted edits%s\n", NEDITS, g.tty ? "" : " (not a terminal: one line per event)");
  printf("[ 0.00 s] version %u: %s; world %llx with %u particles\n", first.version, first.about,
         first.id, first.n);
  fflush(stdout);
  if (g.tty && g.interactive)
    sleep(3); /* time to read where the source is */
  if (g.tty)
    printf("\x1b[?25l\x1b[2J"); /* hide the cursor, clear the screen */
  fflush(stdout);

  g.ed.t0 = g.t_start = t_start = now_s();
  g.ed.live_version = first.version;
  if (!g.interactive && (rc = pthread_create(&editor, NULL, editor_main, &g.ed)) != 0) {
    fprintf(stderr, "gameloop: pthread_create: %s\n", strerror(rc));
    goto out;
  }
  run(&g);
  t_end = now_s();
  __atomic_store_n(&g.ed.stop, 1, __ATOMIC_RELEASE);
  if (!g.interactive)
    pthread_join(editor, NULL);
  if (g.tty)
    printf("\x1b[?25h");
  while (next_msg(line, sizeof line))
    printf("%s\n", line);
  if (!g.tty) { /* one picture of the last frame, for the log */
    HM_LIVE_CALL(g.draw, gl_draw_fn, g.screen, sizeof g.screen, 0);
    printf("%s", g.screen);
  }
  rc = summary(&g, t_end - g.t_start);
  ok = g.interactive ? g.nsw == 0 || rc : rc && g.ed.done > 0 && !interrupted;
out:
  free(g.frame_ms);
  hm_registry_free(g.reg); /* the live handles go with it */
  remove_workdir(g.ed.dir);
  return ok ? 0 : 1;
}
