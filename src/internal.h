/* hotmod's private header: the pieces the source files share. Nothing here is API. */
#ifndef HM_INTERNAL_H
#define HM_INTERNAL_H

#include "hotmod.h"
#include "hotmod/module.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>

#define HM__HIDDEN __attribute__((visibility("hidden")))

/* ---- Allocation (registry.c) ----------------------------------------------------------- */

/* Every allocation goes through the registry's allocator hook. */
typedef struct hm__allocator {
  hm_alloc_fn fn;
  void *userdata;
} hm__allocator;

HM__HIDDEN void *hm__malloc(const hm__allocator *a, size_t size);
HM__HIDDEN void *hm__calloc(const hm__allocator *a, size_t n, size_t size);
HM__HIDDEN void *hm__realloc(const hm__allocator *a, void *ptr, size_t size);
HM__HIDDEN void hm__free(const hm__allocator *a, void *ptr);
HM__HIDDEN char *hm__strdup(const hm__allocator *a, const char *s);

/* ---- ELF check (elfcheck.c): a pure function over bytes -------------------------------- */

typedef struct hm__elf_info {
  int nodelete;   /* DF_1_NODELETE: dlclose will not unmap it */
  int static_tls; /* DF_STATIC_TLS: initial-exec TLS, limited number of loads */
  /* Work the check did, in steps of bounded cost (one table entry read, one segment
   * probed). Set on failure too, where the other fields are cleared: the tests bound it by
   * the file size, so that a crafted file cannot make the check slow. */
  uint64_t steps;
} hm__elf_info;

/* Check that buf[0..len) is a complete ELF shared object (ET_DYN) for the machine this code
 * was built for, such that dlopen can map it without reading past the end of the file.
 * Returns 0, HM_ENOTELF (not ELF, wrong class, byte order, machine or type) or HM_EBADELF
 * (truncated or inconsistent). On error writes a one-line reason into why[whylen]. `info`
 * may be NULL. No I/O, no allocation; safe on any input, and linear in len on any input
 * (at most 24 steps per byte plus a few hundred: see "Work bound" in elfcheck.c). */
HM__HIDDEN int hm__elf_check(const unsigned char *buf, size_t len, hm__elf_info *info,
                             char *why, size_t whylen);

/* ---- Reclamation (reclaim.c) ----------------------------------------------------------- */

/* Start a grace period after publishing new pointers: returns the target that
 * hm__gp_passed must see. */
HM__HIDDEN unsigned long long hm__gp_start(void);
/* Non-blocking: 1 once every live call that could have read the old pointers has left. */
HM__HIDDEN int hm__gp_passed(unsigned long long target);

typedef struct hm__reclaimer hm__reclaimer;
typedef void (*hm__defer_fn)(void *arg);

HM__HIDDEN int hm__reclaimer_new(hm__reclaimer **out, const hm__allocator *a);
/* Runs every deferred callback (waiting for their grace periods), then frees. */
HM__HIDDEN void hm__reclaimer_free(hm__reclaimer *rc);
/* Run fn(arg) on the reclaimer thread, after a grace period when `after_gp` is non-zero.
 * Never fails: the caller provides the node storage (`node` must live until fn runs). */
typedef struct hm__defer_node {
  struct hm__defer_node *next;
  hm__defer_fn fn;
  void *arg;
  int after_gp;
} hm__defer_node;
HM__HIDDEN void hm__defer(hm__reclaimer *rc, hm__defer_node *node, hm__defer_fn fn, void *arg,
                          int after_gp);
/* Block until every callback deferred so far has run. */
HM__HIDDEN void hm__reclaimer_drain(hm__reclaimer *rc);

/* ---- Loader (loader.c) ----------------------------------------------------------------- */

typedef struct hm__version hm__version;

typedef struct hm__file_id {
  dev_t dev;
  ino_t ino;
  off_t size;
  long long mtime_ns;
  uint64_t hash; /* of the content */
} hm__file_id;

struct hm__version {
  hm_module *mod;
  unsigned num;
  int refs; /* atomic: the table that publishes it, each snapshot */
  void *dl;
  char *copy_path;
  hm__file_id id;
  long long load_ns; /* CLOCK_REALTIME at load */
  const hm_module_desc *desc;
  int handed_over; /* its successor accepted its state */
  hm__defer_node unload_node;
  hm__version *next; /* the module's list of versions still loaded */
};

/* Read, check, copy and dlopen the file at `path`. On success *out is a new version with one
 * reference, not yet published. On error the message is in err[errlen] and nothing is left
 * behind. `seq` makes the copy's name unique within the private directory. */
HM__HIDDEN int hm__load_file(const hm__allocator *a, const char *dir, const char *name,
                             unsigned long seq, const char *path, unsigned flags,
                             hm__version **out, char *err, size_t errlen);
/* dlclose, check the mapping is gone (returns 1 if it stayed: leaked), delete the copy and
 * free. */
HM__HIDDEN int hm__unload_version(const hm__allocator *a, hm__version *v);
HM__HIDDEN uint64_t hm__hash_bytes(const void *buf, size_t len);
HM__HIDDEN long long hm__now_ns(void);

/* ---- Registry internals the watcher uses (registry.c) ---------------------------------- */

HM__HIDDEN void hm__set_error(hm_registry *reg, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
HM__HIDDEN void hm__emit(hm_registry *reg, hm_event ev, hm_module *mod, unsigned version,
                         int err);

#endif /* HM_INTERNAL_H */
