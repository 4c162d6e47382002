/*
 * hotmod/module.h — the module author's side: a descriptor that declares the ABI the module
 * was built for and hooks that hand state from one version of the module to the next, and
 * declarations of the C types of exported functions.
 *
 * A module without a descriptor is a plain module: each version starts with fresh globals,
 * as a reloaded Python module does. A module with one opts in to keeping its state, and may
 * change the state's layout between versions (state_version) and convert it:
 *
 *   struct counter { int count; };
 *   static struct counter *state;
 *   static void *save(void) { return state; }
 *   static int load(const hm_load_ctx *ctx) {
 *     if (ctx->prev != NULL && ctx->prev_state_version == 1) {
 *       state = ctx->prev;               // the same layout: take it as it is
 *       return HM_LOAD_ADOPTED;
 *     }
 *     state = calloc(1, sizeof *state);  // nothing handed over (or a layout we do not know)
 *     return state ? HM_LOAD_CONVERTED : -1;
 *   }
 *   static void unload(int handed_over) { if (!handed_over) free(state); }
 *   HM_MODULE_DESCRIBE(1, save, load, unload);
 *
 * Order of events for a reload from version N to N+1:
 *   1. N+1 is loaded (dlopen; its constructors run) beside N, which keeps serving. Before
 *      any of its code runs, its descriptor's `abi` and `size` are read from the file: a
 *      module built for another HM_MODULE_ABI is refused with HM_EABI.
 *   2. N's save() is called; it returns the state to hand over (or NULL). N keeps owning it.
 *   3. N+1's load(ctx) is called with that pointer in ctx->prev and N's state_version in
 *      ctx->prev_state_version (NULL and 0 on a first load, or when N has no descriptor).
 *   4. N+1 becomes current. Later, once no call and no snapshot uses N any more, N's
 *      unload(handed_over) runs on the registry's reclaimer thread just before dlclose.
 *
 * Who owns the handed-over state. load() answers one of three ways. HM_LOAD_ADOPTED: N+1
 * took ctx->prev as it is and owns it now; N's unload gets handed_over = 1 and must not free
 * it. HM_LOAD_CONVERTED: N+1 built state of its own from ctx->prev (or from nothing), which
 * it must leave untouched; N still owns ctx->prev and frees it in its unload (handed_over =
 * 0), after its last call. A negative value refuses N+1: it is unloaded without its unload
 * hook, N stays current and keeps owning its state, so load() must not change ctx->prev
 * before it knows it accepts. When a rollback reuses a version that is still loaded
 * (ctx->reused), its globals still hold what it had when it was retired. What it handed
 * over then belongs to the versions after it, which may have freed it: take ctx->prev (or
 * start afresh) and never free that stale pointer. What it kept (the next version converted
 * rather than adopted) is still its own, and ctx->still_owned says so: free it or take it
 * back, or it leaks.
 *
 * Calls into N may still be running on other threads during steps 2 to 4: share state
 * between versions only in ways that are safe for that (atomics, locks, or data the new
 * version only reads). The hooks of one module never run at the same time as each other.
 * save and load run on the thread that applies the reload: the caller of hm_module_reload
 * or hm_module_rollback, the watcher's thread in immediate mode, the host's thread in
 * hm_registry_poll. Hooks, constructors and destructors run while the registry is in the
 * middle of loading or unloading the module, possibly under the dynamic loader's lock:
 * hotmod.h lists what they may call; loading, reloading or unloading modules fails there
 * with HM_EBUSY.
 *
 * Calling other modules. A module may hold live handles and snapshots of other modules'
 * symbols: take them in load() through ctx->reg (or be handed them by the host) and release
 * snapshots in unload(). A live handle taken in load() through ctx->api (live_get,
 * live_get_typed, live_acquire), or with hm_live_acquire, belongs to the version being
 * loaded, not to the registry:
 *   - while that version is current, it follows the module it reaches (every call runs that
 *     module's current version), and it constrains that module's new builds (they must have
 *     the symbol, with the declared type if it is typed), as the host's handles do;
 *   - when that version is retired, its handles stay on the versions they reached: a call
 *     still running in it, and a snapshot that keeps it mapped, call those (kept mapped for
 *     it), never a newer one; they constrain nothing any more, so the next version may take
 *     them with other types (hotmod.h, hm_registry_reload_group);
 *   - once nothing can call the retired version any more (no call that began before its
 *     retirement, no snapshot of it, no such handle of another retired version on it), its
 *     handles are dead: an enter returns NULL, also in its unload hook, which therefore must
 *     not call other modules through them; they are freed with the version.
 * In a group reload, a member's load() that takes a handle on another member reaches that
 * member's incoming version (its load hook may not have run yet: the hooks run in the
 * group's order). Outside load() (in any other code of the module) ctx->api->live_get and
 * live_get_typed return the registry's handles, as hm_live_get does: those follow their
 * module for good and constrain it for good. A version whose load() took handles is never
 * reused by a rollback; its kept copy is loaded again instead (its load() runs anew).
 * Two ways to make the calls:
 *   - the public API directly (hm_live_get, HM_LIVE_CALL ...): the module links the shared
 *     libhotmod (hotmod_add_module(... USES_HOTMOD)), and the host must link the shared
 *     library too, so both use one copy of it;
 *   - ctx->api, a table of the same functions passed by the library that loaded the module,
 *     which works whatever the host links (also a static libhotmod) and never touches the
 *     library's thread-local state from module code: the calls are out of line.
 *
 * Copyright (c) 2026 the hotmod authors. MIT licence, see LICENSE.
 */
#ifndef HOTMOD_MODULE_H
#define HOTMOD_MODULE_H

#include <stddef.h> /* NULL, for HM_MODULE_DESCRIBE(..., NULL, ...); offsetof */

#include "hotmod.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when the layout or meaning of hm_module_desc changes incompatibly. 2: load() takes
 * an hm_load_ctx and answers ADOPTED or CONVERTED; state_version. */
#define HM_MODULE_ABI 2

/* The name under which the descriptor is exported. */
#define HM_MODULE_DESC_SYMBOL "hm_module_descriptor"

/* Mark a function for export from a module built with -fvisibility=hidden. */
#if defined(__GNUC__)
#define HM_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define HM_MODULE_EXPORT
#endif

/* What load() returns when it accepts the version (negative values refuse it). */
#define HM_LOAD_ADOPTED 0   /* took ctx->prev as it is: it is this version's now */
#define HM_LOAD_CONVERTED 1 /* made its own state; ctx->prev stays the previous version's */

/* The API a module may call, as function pointers of the library that loaded it. Each field
 * is the hotmod.h function of the same name (hm_ prefixed; live_enter and live_leave are
 * hm_live_enter_fn and hm_live_leave_fn), with its ownership, NULL handling, threads and
 * errors. The table is static: a pointer to it may be kept while the module is loaded. In
 * the crash-containment probe's child every call fails cleanly (HM_EINVAL, NULL, nothing).
 * Fields are only ever added at the end; `size` says how many this library has. */
typedef struct hm_module_api {
  unsigned size; /* sizeof(hm_module_api) in the library: check it before using a field
                    added later */
  int (*live_get)(hm_registry *reg, const char *qualified, hm_live **out);
  int (*live_get_typed)(hm_registry *reg, const char *qualified, const char *signature,
                        hm_live **out);
  hm_fn (*live_enter)(hm_live *live); /* hm_live_enter_fn */
  void (*live_leave)(hm_live *live);  /* hm_live_leave_fn */
  int (*snapshot_acquire)(hm_registry *reg, const char *qualified, hm_snapshot **out);
  int (*snapshot_acquire_typed)(hm_registry *reg, const char *qualified,
                                const char *signature, hm_snapshot **out);
  hm_fn (*snapshot_fn)(const hm_snapshot *snap);
  void (*snapshot_release)(hm_snapshot *snap);
  const char *(*errmsg)(void);
  /* Added in 0.4 (check `size`): */
  int (*live_acquire)(hm_registry *reg, const char *qualified, const char *signature,
                      hm_live **out);
  void (*live_release)(hm_live *live);
} hm_module_api;

/* What load() is told. The struct and what it points to are the library's, valid during the
 * call only (ctx->reg and ctx->api stay valid longer: see them). */
typedef struct hm_load_ctx {
  unsigned size;               /* sizeof(hm_load_ctx) in the library that calls the hook */
  void *prev;                  /* what the outgoing version's save() returned; NULL on a first
                                  load, or when it handed over nothing */
  unsigned prev_state_version; /* the outgoing version's state_version; 0 when prev is NULL */
  unsigned version;            /* the module version number being loaded (1, 2, ...) */
  int rollback;                /* 1: hm_module_rollback is bringing an older build back */
  int reused;                  /* 1: that older build is still loaded: its globals hold what it
                                  had when it was retired */
  hm_registry *reg;            /* the registry: handles on other modules may be taken here;
                                  valid until hm_registry_free. NULL in the probe's child */
  const hm_module_api *api;    /* the API as function pointers (see above); never NULL */
  int still_owned;             /* (added in 0.2; check with HM_LOAD_CTX_HAS) when reused: 1 if
                                  what its globals held at its retirement is still its own
                                  (the version after it converted the state instead of
                                  adopting it, so its unload(0) never ran): take it back, or
                                  free it before starting afresh. 0: it was handed over and
                                  may be freed already: never touch it */
} hm_load_ctx;

/* Whether the library that calls load() fills `field` of *ctx (fields are only ever added at
 * the end of hm_load_ctx; ctx->size says how many there are). */
#define HM_LOAD_CTX_HAS(ctx, field)                                                            \
  ((ctx)->size >= offsetof(hm_load_ctx, field) + sizeof((ctx)->field))

/* A module's descriptor, exported as HM_MODULE_DESC_SYMBOL by HM_MODULE_DESCRIBE. The hooks
 * run on the threads the top of this file names, one at a time per module, as module code
 * (hotmod.h lists what they may call). Read-only: hotmod never writes to it. */
typedef struct hm_module_desc {
  unsigned abi;           /* HM_MODULE_ABI of the header the module was built with */
  unsigned size;          /* sizeof(hm_module_desc) at build time */
  unsigned state_version; /* the layout of the state this build saves and loads; 0: none */
  void *(*save)(void);                 /* may be NULL: nothing to hand over. The outgoing
                                          version keeps owning what it returns */
  int (*load)(const hm_load_ctx *ctx); /* may be NULL (as ADOPTED with no state). Returns
                                          HM_LOAD_ADOPTED, HM_LOAD_CONVERTED, or a negative
                                          value: refused (HM_EHOOK) */
  void (*unload)(int handed_over);     /* may be NULL. Runs once, on the reclaimer thread
                                          (or in hm_registry_free), before dlclose; not for a
                                          version whose load() refused */
  /* Added within ABI 2, detected by `size` (older builds simply have none): */
  int (*self_test)(void); /* may be NULL. Run only by the crash-containment probe
                             (HM_FLAG_PROBE, hm_module_set_probe), in a child process after
                             the module's constructors and its load hook (a first load, with
                             no state handed over); 0 passes, anything else refuses the build
                             with HM_ECRASHED. Never run in the host. */
  /* Added within ABI 2 in 0.4, detected by `size`: */
  unsigned flags; /* HM_MODULE_... promises about the module's code; 0: none */
} hm_module_desc;

/* hm_module_desc.flags: the module's unload hook deletes every pthread key the module created
 * (pthread_key_delete), so no key destructor of a version can run once it is unloaded, and
 * its retired versions are unloaded like any others. Without it, a module whose file creates
 * pthread keys (the lint's "pthread-keys") keeps each retired version mapped (hotmod.h,
 * hm_lint_policy). Only for keys the module's own code creates and deletes: Rust's std, for
 * one, never deletes its keys ("rust-std"), and this flag does not cover it. */
#define HM_MODULE_KEYS_DELETED 0x1u

/* The descriptor size of ABI 2 builds made before self_test existed: the least accepted.
 * Fields after it are read only when the descriptor's `size` covers them. */
#define HM_MODULE_DESC_MIN_SIZE (offsetof(hm_module_desc, self_test))

/* What the macros below define has C linkage and is exported, in C and in C++ (where a
 * const at namespace scope would otherwise be internal to its file). */
#ifdef __cplusplus
#define HM__MODULE_DEFINE extern "C" HM_MODULE_EXPORT
#else
#define HM__MODULE_DEFINE HM_MODULE_EXPORT
#endif

/* Export this module's descriptor: once per module, at file scope in one of its source
 * files (of the module itself: a descriptor that only a library it links exports is not
 * looked for). Each function may be NULL. */
#define HM_MODULE_DESCRIBE(state_version, save_fn, load_fn, unload_fn)                         \
  HM__MODULE_DEFINE const hm_module_desc hm_module_descriptor = {                              \
      HM_MODULE_ABI, sizeof(hm_module_desc), (state_version), (save_fn), (load_fn),           \
      (unload_fn), NULL, 0}

/* The same, with a self-test for the crash-containment probe (see hm_module_desc). */
#define HM_MODULE_DESCRIBE_TESTED(state_version, save_fn, load_fn, unload_fn, self_test_fn)    \
  HM__MODULE_DEFINE const hm_module_desc hm_module_descriptor = {                              \
      HM_MODULE_ABI,    sizeof(hm_module_desc), (state_version), (save_fn), (load_fn),        \
      (unload_fn), (self_test_fn), 0}

/* The same with HM_MODULE_... flags (and a self-test, which may be NULL):
 * HM_MODULE_DESCRIBE_FLAGS(0, NULL, NULL, unload, NULL, HM_MODULE_KEYS_DELETED). */
#define HM_MODULE_DESCRIBE_FLAGS(state_version, save_fn, load_fn, unload_fn, self_test_fn,      \
                                 flags)                                                        \
  HM__MODULE_DEFINE const hm_module_desc hm_module_descriptor = {                              \
      HM_MODULE_ABI,    sizeof(hm_module_desc), (state_version), (save_fn), (load_fn),        \
      (unload_fn), (self_test_fn), (flags)}

/* The prefix of the symbol HM_MODULE_SIGNATURE exports for `symbol`. */
#define HM_MODULE_SIGNATURE_PREFIX "hm_signature_"

/* Declare the C type of an exported function, for hosts that take typed handles
 * (hm_live_get_typed): HM_MODULE_SIGNATURE(my_function, "double(double)"). Works with or
 * without a descriptor. The string is compared with the host's after removing whitespace,
 * and nothing else: spell types the same way on both sides ("unsigned int" is not
 * "unsigned"). */
#define HM_MODULE_SIGNATURE(symbol, signature)                                                 \
  HM__MODULE_DEFINE const char hm_signature_##symbol[] = signature

#ifdef __cplusplus
}
#endif

#endif /* HOTMOD_MODULE_H */
