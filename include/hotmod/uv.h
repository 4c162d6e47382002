/*
 * hotmod/uv.h — run hotmod's file watcher on the host's own libuv loop.
 *
 * Only a host that owns a uv_loop_t needs this header; hotmod.h never includes uv.h. A host
 * without a loop calls hm_watch_start (hotmod.h), which runs the same watcher on a thread and
 * a loop of the registry's own. What the watcher does, and how hm_watch_stop,
 * hm_module_set_reload_mode and hm_registry_poll go with it, is specified once, in the
 * "Watching and queued reloads" section of hotmod.h.
 *
 * Like uv.h itself, this header needs the POSIX declarations: in strict C99 mode, define
 * _POSIX_C_SOURCE (200809L) before including it. It compiles as C++ too.
 *
 * Copyright (c) 2026 the hotmod authors. MIT licence, see LICENSE.
 */
#ifndef HOTMOD_UV_H
#define HOTMOD_UV_H

#include <uv.h>

#include "hotmod.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Watch every module of `reg` (those loaded before and after the call) from `loop`, which
 * the host runs: the watcher's callbacks, and with them immediate reloads and the events
 * they cause, run on the loop's thread inside uv_run.
 *
 * Stop the watcher with hm_watch_stop, or hm_registry_free, on the loop's thread. That
 * closes its handles at once; as for any libuv handle, their memory is released in their
 * close callbacks, so run the loop once more afterwards (uv_run, UV_RUN_DEFAULT or
 * UV_RUN_NOWAIT) before uv_loop_close. Those callbacks do not touch the registry, which may
 * be freed by then; they free through the registry's allocator hook, which must still work.
 *
 * Ownership: the loop is borrowed: it must outlive the watcher, and the host keeps running
 * it. The watcher's handles on it (an inotify poll, an async, timers) are the registry's.
 * NULL: `reg` or `loop` NULL is HM_EINVAL.
 * Threads: call it (and stop the watcher) on the loop's thread. Other threads may use the
 * registry meanwhile (loads, unloads, polls): the watcher learns of them through a
 * uv_async_t. From module code: HM_EBUSY.
 * Errors: HM_EINVAL, HM_EALREADY (a watcher already runs for `reg`), HM_ENOMEM, HM_EBUSY,
 * HM_EFORKED, or a libuv or system error, passed through as the negative errno value it is
 * (e.g. -EMFILE when no inotify instance can be created). On error the registry has no
 * watcher; handles already made on the loop are closed and freed on its next run. */
HM_EXTERN int hm_watch_attach(hm_registry *reg, uv_loop_t *loop);

#ifdef __cplusplus
}
#endif

#endif /* HOTMOD_UV_H */
