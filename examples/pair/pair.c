/*
 * The pair example: two modules share a struct (pair.h), and an edit changes its layout. A
 * loop at 100 frames a second calls module show, which takes each frame's sample from
 * module emit through a live handle typed with the layout. Both modules have a build rule
 * (hm_module_set_build) watching the shared header, and both are in one watcher group
 * (hm_module_set_group): the edit rebuilds both, the watcher waits for both builds and
 * prepares them as one group, and the poll at the top of a frame makes both current at
 * once. Apart, either build would be refused (its typed handle or its signature says the
 * other layout).
 *
 * It runs by itself and ends by itself: 30 frames with layout 1, the edit (an editor's save:
 * a temporary file renamed over pair_layout.h), then frames until layout 2 is live, and a
 * summary. It exits 0 only if both modules switched at the same frame and no frame saw a
 * sample of the other layout.
 */
#include "hotmod.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FRAMES_BEFORE_EDIT 30
#define MAX_FRAMES 6000 /* 60 s: builds on a loaded machine */

#ifdef PAIR_WERROR
#define WERROR "-Werror"
#else
#define WERROR "-Wno-error"
#endif

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  int *failures = ud;
  if (ev == HM_EVENT_BUILD_FAILED || ev == HM_EVENT_REJECTED) {
    (*failures)++;
    fprintf(stderr, "pair: %s v%u: %s: %s\n", hm_module_name(mod), version, hm_strerror(err),
            hm_event_detail());
  } else if (ev == HM_EVENT_BUILD_SUCCEEDED) {
    unsigned ms = 0;
    hm_event_build(NULL, &ms);
    printf("pair: %s rebuilt in %u ms\n", hm_module_name(mod), ms);
  }
}

static int copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
  char buf[65536];
  size_t n;
  int ok = in != NULL && out != NULL;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
    ok = fwrite(buf, 1, n, out) == n;
  if (in != NULL)
    fclose(in);
  if (out != NULL && fclose(out) != 0)
    ok = 0;
  return ok ? 0 : -1;
}

/* Save `text` as an editor does: a temporary file renamed over the old one. */
static int save(const char dir[128], const char *name, const char *text) {
  char tmp[256], path[256];
  FILE *f;
  snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if ((f = fopen(tmp, "w")) == NULL)
    return -1;
  fputs(text, f);
  return fclose(f) == 0 && rename(tmp, path) == 0 ? 0 : -1;
}

/* Load module `name` from dir/name.so (CMake's build copied there), with a build rule that
 * compiles src/name.c into it when it or the shared headers are saved, and in group "pair". */
static int load(hm_registry *reg, const char dir[64], const char *name, const char *built) {
  char target[600], src[600], file[64];
  const char *cc[] = {PAIR_CC, "-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden",
                      "-Wall", "-Wextra", WERROR, "-Wl,-Bsymbolic", "-Wl,-z,now",
                      "-I" PAIR_INCLUDE, "-o", target, file, NULL};
  const char *sources[] = {src, NULL}, *include[] = {file, "pair.h", "pair_layout.h", NULL};
  hm_build_options build = HM_BUILD_OPTIONS_INIT;
  hm_module *mod;
  int rc;
  snprintf(target, sizeof target, "%s/%s.so", dir, name);
  snprintf(src, sizeof src, "%s/src", dir);
  snprintf(file, sizeof file, "%s.c", name);
  if (copy_file(built, target) != 0)
    return -1;
  build.argv = cc;
  build.sources = sources;
  build.include = include;
  build.cwd = src;
  if ((rc = hm_module_load(reg, name, target, &mod)) != 0 ||
      (rc = hm_module_set_group(mod, "pair")) != 0 ||
      (rc = hm_module_set_build(mod, &build)) != 0) {
    fprintf(stderr, "pair: %s: %s (%s)\n", target, hm_strerror(rc), hm_errmsg());
    return -1;
  }
  return 0;
}

static void remove_dir(const char *dir) {
  static const char *names[] = {"src/emit.c", "src/show.c", "src/pair.h", "src/pair_layout.h",
                                "src", "emit.so", "show.so", ""};
  char path[512];
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%.400s/%s", dir, names[i]);
    if (unlink(path) != 0)
      rmdir(path);
  }
}

int main(void) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  hm_module *emit, *show;
  hm_live *frame;
  char dir[64] = "/tmp/hotmod-pair-XXXXXX", src[128], from[1024], to[256];
  const char *files[] = {"emit.c", "show.c", "pair.h", "pair_layout.h"};
  struct timespec tick = {0, 10000000};
  unsigned last_e = 1, last_s = 1;
  int failures = 0, mixed = 0, split = 0, switched_at = -1, n, layout = 1, ok;
  size_t i;
  if (mkdtemp(dir) == NULL)
    return 1;
  snprintf(src, sizeof src, "%s/src", dir);
  mkdir(src, 0700);
  for (i = 0; i < 4; i++) {
    snprintf(from, sizeof from, "%s/%s", PAIR_SRCDIR, files[i]);
    snprintf(to, sizeof to, "%s/%s", src, files[i]);
    if (copy_file(from, to) != 0)
      return 1;
  }
  o.flags = HM_FLAG_QUIET;
  o.on_event = on_event;
  o.event_userdata = &failures;
  o.reload_mode = HM_RELOAD_QUEUED; /* new versions come in at the top of a frame */
  o.group_ms = 1000; /* two compilers started together finish well within a second */
  if (hm_registry_new(&reg, &o) != 0 || load(reg, dir, "emit", PAIR_EMIT_SO) != 0 ||
      load(reg, dir, "show", PAIR_SHOW_SO) != 0 ||
      hm_module_find(reg, "emit", &emit) != 0 || hm_module_find(reg, "show", &show) != 0 ||
      hm_live_get_typed(reg, "show:show_frame", "int(void)", &frame) != 0 ||
      hm_watch_start(reg) != 0) {
    fprintf(stderr, "pair: %s\n", hm_errmsg());
    hm_registry_free(reg);
    remove_dir(dir);
    return 1;
  }
  for (n = 0; n < MAX_FRAMES && layout != 2; n++) {
    unsigned ve, vs;
    hm_registry_poll(reg); /* the frame's safe point */
    ve = hm_module_version(emit);
    vs = hm_module_version(show);
    if ((ve != last_e) != (vs != last_s))
      split++; /* one module switched without the other */
    if (ve != last_e || vs != last_s)
      switched_at = n;
    last_e = ve;
    last_s = vs;
    layout = HM_LIVE_CALL(frame, int (*)(void));
    mixed += layout < 0;
    if (n == FRAMES_BEFORE_EDIT) {
      printf("pair: frame %d: layout 1 -> 2 in pair_layout.h\n", n);
      if (save(src, "pair_layout.h", "/* edited by the pair example */\n#define PAIR_LAYOUT 2\n"))
        failures++;
    }
    nanosleep(&tick, NULL);
  }
  ok = layout == 2 && mixed == 0 && split == 0 && failures == 0 && last_e == 2 && last_s == 2;
  printf("pair summary\n"
         "  frames:        %d; edit at frame %d, both modules live with layout 2 at frame %d\n"
         "  versions:      emit %u, show %u; switched apart: %d frames; mixed samples: %d\n"
         "  builds or reloads refused: %d\n"
         "  result:        %s\n",
         n, FRAMES_BEFORE_EDIT, switched_at, last_e, last_s, split, mixed, failures,
         ok ? "both went live at one frame" : "FAILED");
  hm_registry_free(reg);
  remove_dir(dir);
  return ok ? 0 : 1;
}
