/*
 * hotmod-probe: the child side of crash containment (HM_FLAG_PROBE). The library starts it
 * with posix_spawn before it loads a new build into the host:
 *
 *   hotmod-probe COPY VERSION [SYMBOL...]        (fd 3: where to report)
 *
 * COPY is the private copy the host checked and is about to dlopen. This program dlopens
 * it the same way (its constructors run here), runs its load hook as on a first load (no
 * state is handed over: the state lives in the host), resolves the symbols the host's live
 * handles need, runs the descriptor's self_test when it has one, and dlcloses it (its
 * destructors run). Before each step it writes the step's name on fd 3, and at the end one
 * verdict line, so that when module code kills this process the host knows where:
 *
 *   step dlopen | step load | step resolve | step selftest | step dlclose
 *   ok                     the build did nothing fatal here
 *   nodlopen MESSAGE       dlopen failed here (a symbol the host program exports, say): not
 *                          the probe's to judge; the host loads it and reports what it sees
 *   selftest N             self_test returned N (not 0)
 *
 * A process that ends without a verdict was ended by the module's code (a signal, exit(),
 * abort): the host refuses the build with HM_ECRASHED. Not part of the public API; the
 * protocol changes with the library it is installed with.
 *
 * Layer 10 (docs/architecture.md): a program of its own, not part of the library.
 */
#include "hotmod/module.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REPORT_FD 3

/* The host's descriptors that lack O_CLOEXEC (sockets, files, locks) are not the new
 * build's to touch, nor to keep open while it hangs: everything above the report pipe goes
 * before any module code runs. */
static void close_inherited(void) {
  long max, fd;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, REPORT_FD + 1u, ~0u, 0u) == 0)
    return;
#endif
  max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536)
    max = 65536;
  for (fd = REPORT_FD + 1; fd < max; fd++)
    close((int)fd);
}

static void report(const char *fmt, ...) {
  char line[600];
  va_list ap;
  size_t len, put = 0;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  len = strlen(line);
  line[len++] = '\n';
  while (put < len) {
    ssize_t n = write(REPORT_FD, line + put, len - put);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      _exit(3); /* the host went away: nothing to tell */
    put += (size_t)n;
  }
}

/* The API table a load hook gets here: every call fails cleanly, since there is no registry
 * in this process (a module that needs one finds out with an error, not a crash). */
static const char *no_errmsg(void) { return "hotmod-probe: no registry in the probe"; }
static int no_get(hm_registry *r, const char *q, hm_live **out) {
  (void)r, (void)q;
  if (out != NULL) /* NULL is HM_EINVAL, as in the host */
    *out = NULL;
  return HM_EINVAL;
}
static int no_get_typed(hm_registry *r, const char *q, const char *s, hm_live **out) {
  (void)s;
  return no_get(r, q, out);
}
static hm_fn no_enter(hm_live *l) {
  (void)l;
  return NULL;
}
static void no_leave(hm_live *l) { (void)l; }
static int no_acquire(hm_registry *r, const char *q, hm_snapshot **out) {
  (void)r, (void)q;
  if (out != NULL) /* NULL is HM_EINVAL, as in the host */
    *out = NULL;
  return HM_EINVAL;
}
static int no_acquire_typed(hm_registry *r, const char *q, const char *s, hm_snapshot **out) {
  (void)s;
  return no_acquire(r, q, out);
}
static hm_fn no_fn(const hm_snapshot *s) {
  (void)s;
  return NULL;
}
static void no_release(hm_snapshot *s) { (void)s; }
static int no_live_acquire(hm_registry *r, const char *q, const char *s, hm_live **out) {
  (void)s;
  return no_get(r, q, out);
}
static void no_live_release(hm_live *l) { (void)l; }

static const hm_module_api no_api = {sizeof(hm_module_api), no_get,     no_get_typed,
                                     no_enter,             no_leave,   no_acquire,
                                     no_acquire_typed,     no_fn,      no_release,
                                     no_errmsg,            no_live_acquire,
                                     no_live_release};

int main(int argc, char **argv) {
  const hm_module_desc *desc;
  void *dl;
  int i;
  if (argc < 3) {
    fprintf(stderr, "usage: hotmod-probe COPY VERSION [SYMBOL...] (run by libhotmod)\n");
    return 2;
  }
  close_inherited();
  report("step dlopen");
  dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (dl == NULL) {
    const char *e = dlerror();
    report("nodlopen %s", e ? e : "unknown error");
    _exit(0);
  }
  desc = (const hm_module_desc *)dlsym(dl, HM_MODULE_DESC_SYMBOL);
  if (desc != NULL && (desc->abi != HM_MODULE_ABI || desc->size < HM_MODULE_DESC_MIN_SIZE))
    desc = NULL; /* the host refuses it by itself */
  if (desc != NULL && desc->load != NULL) {
    hm_load_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.size = sizeof ctx;
    ctx.version = (unsigned)strtoul(argv[2], NULL, 10);
    ctx.api = &no_api;
    report("step load");
    (void)desc->load(&ctx); /* a refusal is the host's to see, with its own state */
  }
  report("step resolve");
  for (i = 3; i < argc; i++)
    (void)dlsym(dl, argv[i]); /* a missing one is the host's HM_ENOSYM */
  if (desc != NULL && desc->size >= offsetof(hm_module_desc, self_test) + sizeof desc->self_test &&
      desc->self_test != NULL) {
    int rc;
    report("step selftest");
    rc = desc->self_test();
    if (rc != 0) {
      report("selftest %d", rc);
      _exit(0);
    }
  }
  report("step dlclose");
  dlclose(dl);
  report("ok");
  /* _exit: no atexit handlers or leak checks of this process; the verdict is out. */
  _exit(0);
}
