/* The reload's steps and the memory they share, for the files that run reloads: reload.c
 * (the steps), history.c (rollback's memory, which a publish updates), prepared.c (queued
 * mode), rollback.c and module.c (loads and unloads by name). */
#ifndef HM_RELOAD_H
#define HM_RELOAD_H

#include "registry.h"

/* Queued mode: builds the watcher prepared as one group (group.c), which a poll publishes
 * together or not at all. Shared by the members' prepared jobs. */
typedef struct hm__pgroup {
  int refs;          /* atomic: the prepared jobs that belong to it */
  size_t n;
  hm_module *mods[]; /* its members, in the order their hooks run */
} hm__pgroup;

/* One reload: what each step finds and hands to the next. */
typedef struct hm__job {
  hm_module *mod;
  hm_registry *reg;
  unsigned flags;
  int new_path;      /* the path differs from the module's (a load, or reload_from) */
  char *path;        /* owned, packed (hm__path_pack): where this version comes from */
  unsigned long seq; /* names the private copy */
  hm__version *old;  /* the current version, kept current (and alive) by reload_lock */
  unsigned oldnum;
  hm__version *v;    /* the new version, until published */
  int reused;        /* rollback: v is an older version still loaded, not a new load */
  unsigned target;   /* rollback: the build it goes back to (the top of the history) */
  const char *from;  /* rollback: the kept copy its bytes were read from (borrowed), beside
                        which their debug file is */
  hm__table *table;  /* prepared: the live slots resolved on the watcher's thread */
  hm__pgroup *pgroup; /* prepared as a member of a group, or NULL */
  int old_copy;      /* old's private copy is still there (looked at before any lock) */
  int hooked;        /* the new version's load hook ran and accepted, */
  int adopted;       /* adopting what the old version handed over */
  unsigned lint;     /* the new version's lint findings (those its policies look for) */
  unsigned nwarn;    /* lint findings to report once the version is current, unless sent */
  unsigned warn_bit[HM__LINT_KINDS]; /* for the module already (hm__job_publish decides) */
  char warn[HM__LINT_KINDS][640];
} hm__job;

/* What a version's build signature said when it was verified (signed.c): one allocation. */
typedef struct hm__signed {
  long long timestamp; /* from its trusted comment ("timestamp:"), -1 without one */
  unsigned char key_id[HM__KEY_ID_LEN];
  char *comment;        /* the verified trusted comment, NUL-terminated, inside this block */
  size_t raw_len;
  unsigned char raw[];  /* the .minisig file as it was read, NUL-terminated: what rollback
                           verifies the kept copy with */
} hm__signed;

/* ---- The steps (reload.c) --------------------------------------------------------------- */

/* Under the module's reload_lock: is the module in the state the caller expects? Sets the
 * job's old version, path and copy name. 0, or the error (detail recorded). */
HM__HIDDEN int hm__job_begin(hm__job *j, const char *path);
/* Read (unless `given`), check, copy and dlopen: the module's constructors run. A rollback
 * that reuses a loaded version has nothing to load. */
HM__HIDDEN int hm__job_load(hm__job *j, const hm__file *given);
/* Resolve every live slot in the new version, before any hook runs. */
HM__HIDDEN int hm__job_resolve(hm__job *j);
/* Typed live handles: the new version must declare the same signatures. */
HM__HIDDEN int hm__job_check_signatures(hm__job *j);
/* Hand over state: the old version's save(), the new one's load() (which may refuse:
 * HM_EHOOK). Records its answer; nothing about who owns what changes until: */
HM__HIDDEN int hm__job_handover(hm__job *j);
/* the reload commits: the old version gave its state away if the new one adopted it. */
HM__HIDDEN void hm__job_handed_over(hm__job *j);
/* A group that does not commit after the new version's load() accepted: its unload hook
 * runs as if it handed its state straight back (unload(1) if it adopted, else unload(0)). */
HM__HIDDEN void hm__job_undo_handover(hm__job *j);
/* Make the new version current (the old one retired already). Under reg->lock. */
HM__HIDDEN void hm__job_publish_locked(hm__job *j);
/* After the publish: release reload_lock, drop a stale prepared build, send the events, let
 * the old version go. */
HM__HIDDEN void hm__job_done(hm__job *j);
/* Called with the module's reload_lock held, and releases it: take back what the reload
 * made, report it (unless HM__RELOAD_QUIET), return rc. */
HM__HIDDEN int hm__job_reject(hm__job *j, int rc);
/* The second half of every reload, under reload_lock with the new version loaded: resolve,
 * check, hand over, publish (or refuse), then the events. Releases reload_lock. */
HM__HIDDEN int hm__job_complete(hm__job *j);
/* Run a whole job whose mod, reg, flags (and for a reused rollback, v and reused) are set. */
HM__HIDDEN int hm__job_run(hm__job *j, const char *path, const hm__file *file);
/* Is old's private copy still there? Asked under reload_lock, before reg->lock is taken. */
HM__HIDDEN int hm__copy_present(const hm__version *old);
/* Take the module's prepared reload off it, if any. Under reg->lock. */
HM__HIDDEN hm__job *hm__prepared_take(hm_module *mod);
/* A prepared reload that will not be published: unloaded quietly. No lock held. */
HM__HIDDEN void hm__prepared_discard(hm__job *p);
/* Free a prepared job's memory (and its share of its group). */
HM__HIDDEN void hm__prepared_free(hm__job *p);
/* The checks every reload, rollback and unload by the API starts with: a module, not from
 * module code, not in a forked child. */
HM__HIDDEN int hm__reload_checks(hm_module *mod, const char *what);

/* ---- Group reloads (group.c) ------------------------------------------------------------ */

/* One member of a group reload: its module, and where its new version comes from. */
typedef struct hm__member {
  hm_module *mod;
  const char *path;     /* NULL: the module's */
  const hm__file *file; /* bytes read already (the watcher's, a kept copy), or NULL */
  hm__version *reuse;   /* rollback: an older version still loaded (referenced), or NULL */
  unsigned target;      /* rollback: the build it goes back to */
  const char *from;     /* rollback: the kept copy `file` was read from, or NULL */
} hm__member;
/* Reload the members as one: all become current in one step, or nothing changes and one
 * REJECTED names the member that failed (`flags`: HM__RELOAD_WATCHER, _ROLLBACK; *failed,
 * if not NULL: its index). Takes over the members' `reuse` references. */
HM__HIDDEN int hm__group_reload(hm_registry *reg, const hm__member *m, size_t n,
                                unsigned flags, size_t *failed);
/* Queued mode, on the watcher's thread: prepare the members as one group (each loaded,
 * resolved and checked, as hm__prepare does for one), kept as their prepared reloads for
 * one poll to publish together. 0, or the error (one REJECTED, as hm__group_reload;
 * *failed: the member that failed). */
HM__HIDDEN int hm__group_prepare(hm_registry *reg, const hm__member *m, size_t n,
                                 size_t *failed);

/* What a rollback of one module goes back to (rollback.c; hm_module_rollback and group
 * rollbacks). Start from all zeros. */
typedef struct hm__rollback {
  hm__version *reuse; /* the build, still loaded (referenced; whoever takes it sets NULL) */
  unsigned target;    /* the build (the top of the history) */
  char *kept;         /* else the kept copy's path */
  hm__signed *ksig;   /* the signature the kept copy was verified with, or NULL */
  char *path;         /* the module's path, which a signed check names */
  hm__file file;      /* the kept copy's bytes, with that signature, once read */
} hm__rollback;
/* Under reg->lock: the build to go back to: a loaded version of it, else the kept copy;
 * else HM_ENOPREV (or HM_ENOMOD, HM_ENOMEM; detail recorded). */
HM__HIDDEN int hm__rollback_take(hm_module *mod, hm__rollback *rb);
/* No lock held: with trusted keys, the build's signature checked with the keys trusted now;
 * the kept copy's bytes read into rb->file. 0, or the error (detail recorded). */
HM__HIDDEN int hm__rollback_read(hm_module *mod, hm__rollback *rb);
/* Let go of what is left of rb. */
HM__HIDDEN void hm__rollback_drop(hm_registry *reg, hm__rollback *rb);

/* ---- Rollback's memory (history.c) ------------------------------------------------------ */

/* Forget the kept copy. Under reg->lock. */
HM__HIDDEN void hm__kept_drop(hm_module *mod);
/* A reload replaced `old` (NULL on a first load): it joins the history, and its private copy
 * (when `old_copy` says it is still there) becomes the one kept for rollback. Under
 * reg->lock. */
HM__HIDDEN void hm__history_superseded(hm_module *mod, hm__version *old, int old_copy);
/* A rollback replaced `old` with the last build of the history. Under reg->lock. */
HM__HIDDEN void hm__history_rolled_back(hm_module *mod, hm__version *old);
/* v's content hash, from its private copy if its reload did not compute it. The caller keeps
 * v loaded; no lock held. */
HM__HIDDEN void hm__version_hash(hm_registry *reg, hm__version *v);

/* ---- Signed builds (signed.c) ---------------------------------------------------------- */

/* With trusted keys set: f's bytes must carry a build signature by one of them (f->sig, read
 * beside the file), and satisfy the module's policies (no replay, its file's name) unless
 * the job is a rollback. 0 with *out the verified signature (allocated with the registry's
 * allocator; NULL without keys) and *untrusted_lint the lint findings the loader must refuse
 * (HM__LINT_*: code the signature does not cover); else HM_EUNTRUSTED with the reason
 * recorded, -ESTALE (f was read before keys were set), or the error reading the signature. */
HM__HIDDEN int hm__signed_check(hm__job *j, const hm__file *f, unsigned *untrusted_lint,
                                hm__signed **out);
/* Rollback, with trusted keys set: build `build` of the module comes back with the signature
 * `s` it was verified with (NULL: it was loaded before keys were set, refused), over its
 * private copy `copy` (NULL: the caller has the bytes verified on the way). 0, or
 * HM_EUNTRUSTED (detail recorded, naming `path`). No lock held. */
HM__HIDDEN int hm__signed_recheck(hm_module *mod, unsigned build, const char *copy,
                                  const hm__signed *s, const char *path);
/* A copy of `s` (NULL for NULL, or out of memory). */
HM__HIDDEN hm__signed *hm__signed_dup(const hm__allocator *a, const hm__signed *s);
/* v became current: its signature's timestamp is the module's newest. Under reg->lock. */
HM__HIDDEN void hm__signed_published(hm_module *mod, const hm__version *v);

#endif
