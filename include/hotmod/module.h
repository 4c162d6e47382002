/*
 * hotmod/module.h — the module author's side: a descriptor that declares the ABI the module
 * was built for and hooks that hand state from one version of the module to the next.
 *
 * A module without a descriptor is a plain module: each version starts with fresh globals,
 * as a reloaded Python module does. A module with one opts in to keeping its state:
 *
 *   static struct counter *state;
 *   static void *save(void) { return state; }
 *   static int load(void *prev) { state = prev ? prev : calloc(1, sizeof *state);
 *                                 return state ? 0 : -1; }
 *   static void unload(int handed_over) { if (!handed_over) free(state); }
 *   HM_MODULE_DESCRIBE(save, load, unload);
 *
 * Order of events for a reload from version N to N+1:
 *   1. N+1 is loaded (dlopen) beside N, which keeps serving.
 *   2. N's save() is called; it returns the state to hand over (or NULL). N keeps owning it.
 *   3. N+1's load(prev) is called with that pointer (NULL on a first load, or when N has no
 *      descriptor). A non-zero return rejects N+1: it is unloaded, N stays current, and its
 *      state is as it was, so load() must not change *prev before it knows it succeeds.
 *   4. N+1 becomes current. Later, once no call and no snapshot uses N any more, N's
 *      unload(handed_over) runs on the registry's reclaimer thread just before dlclose;
 *      handed_over is 1 when N+1 accepted N's state (so N must not free it).
 * Calls into N may still be running on other threads during steps 2 to 4: share state
 * between versions only in ways that are safe for that (atomics, locks, or data the new
 * version only reads). The hooks of one module never run at the same time as each other.
 * Hooks, constructors and destructors run while the registry is in the middle of loading or
 * unloading the module, possibly under the dynamic loader's lock: hotmod.h lists what they
 * may call; loading, reloading or unloading modules fails there with HM_EBUSY.
 *
 * Copyright (c) 2026 the hotmod authors. MIT licence, see LICENSE.
 */
#ifndef HOTMOD_MODULE_H
#define HOTMOD_MODULE_H

#include <stddef.h> /* NULL, for HM_MODULE_DESCRIBE(NULL, ...) */

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when the layout or meaning of hm_module_desc changes incompatibly. */
#define HM_MODULE_ABI 1

/* The name under which the descriptor is exported. */
#define HM_MODULE_DESC_SYMBOL "hm_module_descriptor"

/* Mark a function for export from a module built with -fvisibility=hidden. */
#if defined(__GNUC__)
#define HM_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define HM_MODULE_EXPORT
#endif

typedef struct hm_module_desc {
  unsigned abi;  /* HM_MODULE_ABI of the header the module was built with */
  unsigned size; /* sizeof(hm_module_desc) at build time */
  void *(*save)(void);           /* may be NULL: nothing to hand over */
  int (*load)(void *prev);       /* may be NULL; 0 accepts this version, non-zero rejects it */
  void (*unload)(int handed_over); /* may be NULL */
} hm_module_desc;

/* Export this module's descriptor. Each argument may be NULL. */
#define HM_MODULE_DESCRIBE(save_fn, load_fn, unload_fn)                                        \
  HM_MODULE_EXPORT const hm_module_desc hm_module_descriptor = {                               \
      HM_MODULE_ABI, sizeof(hm_module_desc), (save_fn), (load_fn), (unload_fn)}

#ifdef __cplusplus
}
#endif

#endif /* HOTMOD_MODULE_H */
