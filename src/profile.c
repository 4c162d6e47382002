/*
 * Profiling mode (HOTMOD_PROFILE=1, or HM_FLAG_PROFILE): the switch, its announcement, and
 * the copies of versions that were unloaded but stay, within a cap, oldest deleted first.
 *
 * perf reads a module's symbols from its file when `perf record` ends, after the host
 * exited, and LSan and valgrind symbolize leaks at exit from what is still mapped. By
 * default a version's copy is deleted, and the version unmapped, as soon as nothing uses it,
 * so all of them name only addresses. In profiling mode every version that became current
 * stays mapped (the loader skips its dlclose) and its copy stays in a directory on disk that
 * outlives the registry (privdir.c), until the cap here or a later registry's sweep removes
 * it.
 *
 * Layer 5 (docs/architecture.md): calls privdir.c and the leaves.
 */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A copy kept for profiling, in the registry's list, oldest first. */
typedef struct hm__prof_copy {
  struct hm__prof_copy *next;
  unsigned long long bytes;
  char path[];
} hm__prof_copy;

unsigned hm__profile_flags(unsigned flags, unsigned long long *cap) {
  const char *on = secure_getenv("HOTMOD_PROFILE"), *mb = secure_getenv("HOTMOD_PROFILE_MAX_MB");
  char *end = NULL;
  unsigned long long n = mb != NULL && mb[0] != '\0' ? strtoull(mb, &end, 10) : 0;
  if (on != NULL && strcmp(on, "1") == 0)
    flags |= HM_FLAG_PROFILE;
  *cap = (end != NULL && *end == '\0' && n > 0 && n < (1ULL << 40) ? n : HM__PROFILE_CAP_MB)
         << 20;
  return flags;
}

void hm__profile_announce(const hm_registry *reg) {
  static int said;
  if (!(reg->flags & HM_FLAG_PROFILE) || __atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
    return;
  fprintf(stderr,
          "hotmod: profiling mode (HOTMOD_PROFILE=1 or HM_FLAG_PROFILE): every version stays "
          "mapped until the process exits, and module copies stay in %s for profilers to read "
          "after it (at most %llu MiB of unloaded versions' copies; README \"Debugging and "
          "profiling\")\n",
          reg->dir, reg->prof_cap >> 20);
}

void hm__profile_kept(hm_registry *reg, char *copy) {
  unsigned long long bytes = hm__copy_bytes(copy);
  size_t n = strlen(copy) + 1;
  hm__prof_copy *c = hm__malloc(&reg->a, sizeof *c + n), *gone = NULL, **tail = &gone;
  if (c == NULL) {
    /* Not remembered, so never deleted by the cap: the sweep takes it with its directory. */
    hm__free(&reg->a, copy);
    return;
  }
  c->next = NULL;
  c->bytes = bytes;
  memcpy(c->path, copy, n);
  hm__free(&reg->a, copy);
  pthread_mutex_lock(&reg->lock);
  *(reg->prof_new != NULL ? &reg->prof_new->next : &reg->prof_old) = c;
  reg->prof_new = c;
  reg->prof_bytes += bytes;
  /* Past the cap, the oldest go, but never the one just kept. */
  while (reg->prof_bytes > reg->prof_cap && reg->prof_old != c) {
    hm__prof_copy *o = reg->prof_old;
    reg->prof_old = o->next;
    reg->prof_bytes -= o->bytes;
    o->next = NULL;
    *tail = o;
    tail = &o->next;
  }
  pthread_mutex_unlock(&reg->lock);
  while (gone != NULL) {
    hm__prof_copy *o = gone;
    gone = o->next;
    hm__copy_unlink(o->path);
    hm__free(&reg->a, o);
  }
}

void hm__profile_free(hm_registry *reg) {
  while (reg->prof_old != NULL) {
    hm__prof_copy *o = reg->prof_old;
    reg->prof_old = o->next;
    hm__free(&reg->a, o); /* the file stays, for the profilers */
  }
  reg->prof_new = NULL;
}
