/*
 * Leaf helpers every other file uses: allocation through the registry's hook, the clock,
 * the per-thread detail of the last failure, and the per-thread note that module code is
 * running. Nothing here knows about registries, modules or files.
 *
 * Layer 0 (docs/architecture.md): calls nothing of hotmod's but error.c.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Allocation ------------------------------------------------------------------------ */

void *hm__realloc(const hm__allocator *a, void *ptr, size_t size) {
  if (a->fn != NULL)
    return a->fn(ptr, size, a->userdata);
  if (size == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, size);
}

void *hm__malloc(const hm__allocator *a, size_t size) {
  return hm__realloc(a, NULL, size ? size : 1);
}

void *hm__calloc(const hm__allocator *a, size_t n, size_t size) {
  void *p;
  if (size != 0 && n > (size_t)-1 / size)
    return NULL;
  p = hm__malloc(a, n * size);
  if (p != NULL)
    memset(p, 0, n * size);
  return p;
}

void hm__free(const hm__allocator *a, void *ptr) {
  if (ptr != NULL)
    hm__realloc(a, ptr, 0);
}

char *hm__strdup(const hm__allocator *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = hm__malloc(a, n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}

static long long clock_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

long long hm__now_ns(void) { return clock_ns(CLOCK_REALTIME); }

long long hm__mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* ---- The detail of the last failure, per thread ---------------------------------------- */

/* Per thread, as libgit2's git_error_last: two threads failing on one registry at once each
 * read their own detail, and a failure in hm_registry_new (no registry yet) has one too. */
static __thread char last_msg[1024];

int hm__fail(int err, const char *fmt, ...) {
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
  } else {
    snprintf(last_msg, sizeof last_msg, "%s", hm_strerror(err));
  }
  return err;
}

const char *hm_errmsg(void) { return last_msg; }

const char *hm_registry_errmsg(const hm_registry *reg) {
  return reg != NULL ? last_msg : hm_strerror(HM_EINVAL);
}

/* ---- The detail of the event being delivered, per thread -------------------------------- */

static __thread const char *event_detail;

const char *hm_event_detail(void) { return event_detail != NULL ? event_detail : ""; }

const char *hm__event_detail_set(const char *detail) {
  const char *prev = event_detail;
  event_detail = detail;
  return prev;
}

/* ---- The build event being delivered, per thread -------------------------------------- */

static __thread const hm__build_report *event_build;

int hm_event_build(int *status, unsigned *duration_ms) {
  if (event_build == NULL)
    return hm__fail(HM_EINVAL, "hm_event_build: not inside a build event's callback");
  if (status != NULL)
    *status = event_build->status;
  if (duration_ms != NULL)
    *duration_ms = event_build->duration_ms;
  return 0;
}

const hm__build_report *hm__event_build_set(const hm__build_report *r) {
  const hm__build_report *prev = event_build;
  event_build = r;
  return prev;
}

/* ---- The LEAKED event being delivered, per thread --------------------------------------- */

static __thread const hm__mapped_report *event_mapped;

int hm_event_mapped(int *why, unsigned long long *bytes) {
  if (event_mapped == NULL)
    return hm__fail(HM_EINVAL, "hm_event_mapped: not inside a LEAKED event's callback");
  if (why != NULL)
    *why = event_mapped->why;
  if (bytes != NULL)
    *bytes = event_mapped->bytes;
  return 0;
}

const hm__mapped_report *hm__event_mapped_set(const hm__mapped_report *r) {
  const hm__mapped_report *prev = event_mapped;
  event_mapped = r;
  return prev;
}

/* ---- Module code on this thread -------------------------------------------------------- */

/* Set while this thread runs a module's constructors or destructors (inside dlopen/dlclose)
 * or one of its hooks. The dynamic loader's lock, a module's reload lock or the reclaimer may
 * be held by this very thread then, so calls that would wait for them must fail instead. */
static __thread hm_module *code_of;
static __thread unsigned code_depth;

hm_module *hm__module_code_enter(hm_module *mod) {
  hm_module *prev = code_of;
  code_of = mod;
  code_depth++;
  return prev;
}

void hm__module_code_leave(hm_module *prev) {
  code_of = prev;
  code_depth--;
}

int hm__in_module_code(void) { return code_depth != 0; }

hm_module *hm__module_code_of(void) { return code_depth != 0 ? code_of : NULL; }

/* The version whose load hook runs on this thread: what the handles its code takes then
 * belong to. */
static __thread hm__version *loading;

hm__version *hm__loading_set(hm__version *v) {
  hm__version *prev = loading;
  loading = v;
  return prev;
}

hm__version *hm__loading_of(void) { return loading; }

int hm__refuse_in_module_code(const char *what) {
  return hm__fail(HM_EBUSY,
                  "%s was called from a module's constructor, destructor or hook, where it "
                  "could deadlock; call it from the host instead",
                  what);
}
