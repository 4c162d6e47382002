/* hotmod's private header: the pieces the lower layers share (the leaves up to the loader).
 * Nothing here is API. Which file is in which layer, and what each may call, is in
 * docs/architecture.md, which tools/layercheck.py holds the code to (make test). */
#ifndef HM_INTERNAL_H
#define HM_INTERNAL_H

#include "hotmod.h"
#include "hotmod/module.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define HM__HIDDEN __attribute__((visibility("hidden")))

typedef struct hm__version hm__version;

/* ---- Leaf helpers (common.c) ----------------------------------------------------------- */

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
HM__HIDDEN long long hm__now_ns(void);  /* CLOCK_REALTIME */
HM__HIDDEN long long hm__mono_ns(void); /* CLOCK_MONOTONIC */

/* Record the detail of a failure for this thread (hm_errmsg) and return `err`. A NULL fmt
 * records hm_strerror(err). */
HM__HIDDEN int hm__fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Set the detail hm_event_detail() returns on this thread (NULL: ""); returns the previous
 * one, to restore after the callback. */
HM__HIDDEN const char *hm__event_detail_set(const char *detail);

/* The build information hm_event_build() gives during a build event's callback (common.c):
 * set around the callback, NULL otherwise. Returns the previous one. */
typedef struct hm__build_report {
  int status;
  unsigned duration_ms;
} hm__build_report;
HM__HIDDEN const hm__build_report *hm__event_build_set(const hm__build_report *r);

/* What hm_event_mapped() gives during a LEAKED event's callback (common.c): set around the
 * callback, NULL otherwise. Returns the previous one. */
typedef struct hm__mapped_report {
  int why; /* hm_mapped */
  unsigned long long bytes;
} hm__mapped_report;
HM__HIDDEN const hm__mapped_report *hm__event_mapped_set(const hm__mapped_report *r);

/* Module code (constructors, destructors, hooks) runs on this thread between enter and
 * leave; enter returns what leave restores, so they nest. */
HM__HIDDEN hm_module *hm__module_code_enter(hm_module *mod);
HM__HIDDEN void hm__module_code_leave(hm_module *prev);
HM__HIDDEN int hm__in_module_code(void);
/* The module whose code runs innermost on this thread, or NULL. */
HM__HIDDEN hm_module *hm__module_code_of(void);
/* The version whose load hook runs on this thread (handles taken there are its own), or
 * NULL. set returns the previous one, to restore after the hook, so they nest. */
HM__HIDDEN hm__version *hm__loading_set(hm__version *v);
HM__HIDDEN hm__version *hm__loading_of(void);
/* Fail with HM_EBUSY, naming the call that module code may not make. */
HM__HIDDEN int hm__refuse_in_module_code(const char *what);

/* ---- Errors (error.c) ------------------------------------------------------------------ */

/* 1 for failures the file's own bytes or permissions decide (the same file fails the same
 * way again); 0 for those a later try may not meet. */
HM__HIDDEN int hm__err_is_final(int err);

/* ---- ELF check (elfcheck.c): a pure function over bytes -------------------------------- */

/* How many of a module's STB_GNU_UNIQUE symbols the lint names (it counts them all). */
#define HM__LINT_UNIQUE_NAMES 3

/* Where a file's dynamic symbols are, as link-time addresses (loading moves them all by the
 * same bias), for lookups by name once it is loaded (symbols.c). From the table glibc
 * looks names up in: DT_GNU_HASH if the file has one (gnu_hash), else DT_HASH (sysv_hash);
 * nsyms 0 when there is none to use. The check guarantees, in the file: every chain of that
 * table ends below nsyms; every symbol below nsyms has its name below strsz and, with
 * DT_VERSYM, a version entry; and all of it lies in the file-backed part of a segment. */
typedef struct hm__elf_syms {
  uint64_t dynamic; /* PT_DYNAMIC's address: where the link map's l_ld must be */
  uint64_t symtab, strtab, strsz, versym; /* versym 0: none */
  uint64_t gnu_hash, sysv_hash;
  uint64_t nsyms;
  uint32_t nbuckets, symoffset, bloom_size; /* symoffset, bloom_size: GNU only */
} hm__elf_syms;

typedef struct hm__elf_info {
  int nodelete;   /* DF_1_NODELETE: dlclose will not unmap it */
  int static_tls; /* DF_STATIC_TLS: initial-exec TLS, limited number of loads */
  int has_desc;   /* it exports a module descriptor whose first words are in the file: */
  unsigned desc_abi, desc_size; /* its abi and size */
  unsigned desc_flags;          /* and its flags, when its size has them (else 0) */
  /* What the reloadability lint looks at (lint.c turns it into findings): HM__LINT_* bits,
   * and for some of them a detail. The strings point into the checked buffer. */
  unsigned lint;
  uint64_t tls_size;      /* HM__LINT_STATIC_TLS: the initial-exec TLS it defines, bytes */
  unsigned unique_count;  /* HM__LINT_UNIQUE: how many STB_GNU_UNIQUE symbols it defines, */
  const char *unique_syms[HM__LINT_UNIQUE_NAMES]; /* and the first of them (the rest NULL) */
  const char *needed;     /* HM__LINT_NEEDED: one library it needs that is not a system one */
  const char *runpath;    /* HM__LINT_ORIGIN: the RUNPATH or RPATH with $ORIGIN */
  const char *hotmod_needed; /* the first DT_NEEDED naming libhotmod.so*, or NULL */
  const char *debuglink;  /* the file name its .gnu_debuglink names (a plain name: no '/'),
                             or NULL; split debug information (debugfile.c) */
  uint32_t debuglink_crc; /* and the CRC-32 that file must have */
  hm__elf_syms syms;
  /* Work the check did, in steps of bounded cost (one table entry read, one segment
   * probed). Set on failure too, where the other fields are cleared: the tests bound it by
   * the file size, so that a crafted file cannot make the check slow. */
  uint64_t steps;
} hm__elf_info;

enum {
  HM__LINT_NODELETE = 0x01u,      /* DF_1_NODELETE: never unloaded */
  HM__LINT_UNIQUE = 0x02u,        /* defines STB_GNU_UNIQUE symbols (C++ inline statics) */
  HM__LINT_STATIC_TLS = 0x04u,    /* defines initial-exec TLS (PT_TLS + DF_STATIC_TLS) */
  HM__LINT_THREAD_ATEXIT = 0x08u, /* imports __cxa_thread_atexit(_impl) */
  HM__LINT_KEY_CREATE = 0x10u,    /* imports pthread_key_create */
  HM__LINT_ORIGIN = 0x20u,        /* $ORIGIN in RUNPATH/RPATH */
  HM__LINT_NEEDED = 0x40u,        /* DT_NEEDED on a library that is not a system one */
  HM__LINT_RUST_STD = 0x80u       /* built by rustc with std, which does what THREAD_ATEXIT and
                                     KEY_CREATE say: reported instead of them */
};
/* How many kinds of findings there are, at most (lint.c's table). */
#define HM__LINT_KINDS 8
/* Findings whose versions leave destructors in other threads that glibc does not account
 * for: such versions are kept mapped once retired (hm__load_opts.keep_lint). */
#define HM__LINT_LEAVES_DTORS (HM__LINT_KEY_CREATE | HM__LINT_RUST_STD)

/* The lint's findings in words (lint.c): how many kinds there are and the bit of the i-th,
 * a short stable name, the one-line fix, and what this file does (into out[n]). */
HM__HIDDEN unsigned hm__lint_count(void);
HM__HIDDEN unsigned hm__lint_bit(unsigned i);
HM__HIDDEN const char *hm__lint_name(unsigned bit);
HM__HIDDEN const char *hm__lint_fix(unsigned bit);
HM__HIDDEN void hm__lint_what(const struct hm__elf_info *info, unsigned bit, char *out,
                              size_t n);
/* The index (for hm__lint_bit) of the finding called `name`, or -1. */
HM__HIDDEN int hm__lint_index(const char *name);

/* Check that buf[0..len) is a complete ELF shared object (ET_DYN) for the machine this code
 * was built for, such that dlopen can map it without reading past the end of the file.
 * Returns 0, HM_ENOTELF (not ELF, wrong class, byte order, machine or type) or HM_EBADELF
 * (truncated or inconsistent). On error writes a one-line reason into why[whylen]. `info`
 * may be NULL. No I/O, no allocation; safe on any input, and linear in len on any input
 * (at most 24 steps per byte plus a few hundred: see "Work bound" in elfcheck.c). */
HM__HIDDEN int hm__elf_check(const unsigned char *buf, size_t len, hm__elf_info *info,
                             char *why, size_t whylen);

/* ---- minisign's formats (minisig.c): pure functions over bytes ------------------------- */

#define HM__KEY_ID_LEN 8
/* The longest trusted comment taken (minisign writes at most 1023 bytes). */
#define HM__MINISIG_COMMENT_MAX 1024

/* A minisign public key: its id and its Ed25519 key. */
typedef struct hm__pubkey {
  unsigned char id[HM__KEY_ID_LEN];
  unsigned char pk[32];
} hm__pubkey;

/* A build signature as parsed from a .minisig file (nothing verified yet). */
typedef struct hm__minisig {
  int prehashed; /* "ED": over the bytes' BLAKE2b-512 hash; "Ed" (legacy): over the bytes */
  unsigned char key_id[HM__KEY_ID_LEN];
  unsigned char sig[64];
  const char *comment; /* the trusted comment, inside the parsed text (no NUL after it) */
  size_t comment_len;
  unsigned char global[64]; /* over sig and the trusted comment together */
} hm__minisig;

/* 1 when this library can verify signatures (built with libsodium, and it started). */
HM__HIDDEN int hm__minisig_available(void);
/* A key id as minisign prints it: up to 16 hex digits (no leading zeros) and a NUL. */
HM__HIDDEN void hm__key_id_hex(const unsigned char id[HM__KEY_ID_LEN], char out[17]);
/* A public key from the text of a minisign.pub file, or its key line alone. 0, or HM_EINVAL
 * (-ENOTSUP without libsodium) with the reason in why[n]. */
HM__HIDDEN int hm__minisign_key(const char *text, size_t len, hm__pubkey *out, char *why,
                                size_t n);
/* Parse a .minisig file's bytes. 0, or HM_EUNTRUSTED ("malformed signature: ...", -ENOTSUP
 * without libsodium) with the reason in why[n]. */
HM__HIDDEN int hm__minisig_parse(const unsigned char *text, size_t len, hm__minisig *out,
                                 char *why, size_t n);
/* Verify `s` over buf[0..len) with the key of keys[0..nkeys) that has its id: the build's
 * signature, then the trusted comment's. The index of that key, or HM_EUNTRUSTED ("unknown
 * key id ...", "bad signature: ...") with the reason in why[n]. */
HM__HIDDEN int hm__minisig_verify(const hm__minisig *s, const hm__pubkey *keys, size_t nkeys,
                                  const unsigned char *buf, size_t len, char *why, size_t n);
/* The value of `field` (e.g. "file:") in a trusted comment of tab-separated fields, as
 * minisign writes by default: 0 with *val (not NUL-terminated) and *vn; -1 if absent. */
HM__HIDDEN int hm__minisig_field(const char *comment, size_t len, const char *field,
                                 const char **val, size_t *vn);

/* ---- A loaded object's own symbols (symbols.c) ----------------------------------------- */

/* The symbol tables of one loaded object, in its memory: what hm__symtab_find reads. */
typedef struct hm__symtab {
  const unsigned char *syms; /* NULL: nothing to read here, every lookup is dlsym's */
  const char *strtab;
  const unsigned char *versym, *buckets, *chains;
  uint64_t strsz, nsyms;
  uintptr_t bias; /* the link map's l_addr: memory address minus link-time address */
  uint32_t nbuckets, symoffset;
  int gnu; /* DT_GNU_HASH, else DT_HASH */
} hm__symtab;

/* Set up `t` for an object dlopen mapped with load bias `bias` and its dynamic section at
 * `dynamic` (the link map's l_addr and l_ld), from what the check of its file found. An
 * object this cannot follow gets an empty table (see symbols.c). No lock, no allocation. */
HM__HIDDEN void hm__symtab_init(hm__symtab *t, const hm__elf_info *elf, uintptr_t bias,
                                const void *dynamic);
/* Look `name` up among the object's own definitions, without any lock: 1 with *addr set to
 * exactly what dlsym(handle, name) returns; -1 when the object defines no such symbol (so
 * dlsym could only find it in a library the object needs); 0 when only dlsym can tell
 * (defined in a way dlsym may resolve otherwise: see symbols.c; or `t` is empty). The
 * object must stay loaded during the call. */
HM__HIDDEN int hm__symtab_find(const hm__symtab *t, const char *name, void **addr);

/* ---- A module's file (file.c) ---------------------------------------------------------- */

/* Does any process have the file open for writing (or mapped shared-writable)? */
typedef enum hm__writer {
  HM__WRITER_UNKNOWN = 0, /* cannot tell: no lease on this file (owner, filesystem) */
  HM__WRITER_NONE,
  HM__WRITER_ACTIVE
} hm__writer;

typedef struct hm__file_id {
  dev_t dev;
  ino_t ino;
  off_t size;
  mode_t mode;
  long long mtime_ns;
  uint64_t hash; /* of the content, when `hashed` */
  int hashed;    /* asked for with HM__READ_HASH: only a watcher needs it, and it costs
                    about a third of a small module's reload */
} hm__file_id;

/* The build signature beside a module's file (`<name>.minisig`), as read with it
 * (HM__READ_SIGNED). */
typedef struct hm__sigfile {
  int asked;          /* it was looked for (HM__READ_SIGNED) */
  int rc;             /* 0: read; HM_ENOENT: there is none; else why it could not be read */
  unsigned char *buf; /* rc 0: its bytes, NUL-terminated */
  size_t len;
  dev_t dev;          /* rc 0: which file it was, and when it was last written */
  ino_t ino;
  off_t size;
  long long mtime_ns;
  hm__writer writer;  /* rc 0: whether a process has it open for writing */
  char name[256];     /* the name of the file the module's path led to (its real name) */
} hm__sigfile;

/* A module's file read whole: the loader checks, copies and loads exactly these bytes. */
typedef struct hm__file {
  unsigned char *buf;
  size_t len;
  hm__file_id id;
  hm__sigfile sig; /* with HM__READ_SIGNED */
} hm__file;

#define HM__READ_ALLOW_WRITABLE 0x1u /* = HM_FLAG_ALLOW_WRITABLE */
#define HM__READ_PROBE 0x100u        /* HM_EAGAIN while a writer has the file open */
#define HM__READ_HASH 0x200u         /* fill id.hash (and set id.hashed) */
#define HM__READ_SIGNED 0x400u       /* also read its build signature into `sig` */
#define HM__READ_PLACED 0x800u       /* file.c: its place was walked before it was opened */

/* Open the file at `path` without blocking (a FIFO, socket or device is refused by a look at
 * its name before any open, and by fstat after, never waited on; a symlink loop is -ELOOP),
 * check it is a regular file of at most 1 GiB, not on a noexec mount, that nobody but its
 * owner could have changed (trust.c; unless allowed), and read it whole. With
 * HM__READ_PROBE, a file that a writer holds open is HM_EAGAIN before anything is read;
 * *writer (may be NULL) gets the probe's answer either way.
 * Errors, with the detail recorded (hm__fail): HM_ENOENT and other errno values, HM_ENOTELF
 * (not a regular file, too large), HM_EACCES (trust.c's rules, noexec), HM_EAGAIN (being
 * written, or changed while read), HM_EIO, HM_ENOMEM. On error *out is left empty. */
HM__HIDDEN int hm__file_read(const hm__allocator *a, const char *path, unsigned flags,
                             hm__file *out, hm__writer *writer);
/* The same in two steps, for the watcher, which probes before it decides to read: open
 * (read-only, non-blocking; the detail recorded on failure) and read from that descriptor
 * (the caller closes it). */
HM__HIDDEN int hm__file_open(const char *path);
HM__HIDDEN int hm__file_read_fd(const hm__allocator *a, int fd, const char *path,
                                unsigned flags, hm__file *out, hm__writer *writer);
HM__HIDDEN void hm__file_release(const hm__allocator *a, hm__file *f);

/* A module's path as the registry keeps it: one allocation holding three strings, so that
 * it is replaced and freed as one. First where the file is, which every read and watch
 * uses: a relative path given by the host is joined (as text, so symlinks on the way are
 * followed anew each time) to the directory current when it was given; then the path as
 * given (hm_module_path); then that directory ("" when it could not be had). */
/* Anchor `given` now. NULL on failure, with *err HM_ENOMEM or getcwd's error (a relative
 * path only) and the detail recorded. */
HM__HIDDEN char *hm__path_anchor(const hm__allocator *a, const char *given, int *err);
/* Pack the three strings (NULL on ENOMEM), copy a packed path, and read its parts. */
HM__HIDDEN char *hm__path_pack(const hm__allocator *a, const char *where, const char *given,
                               const char *dir);
HM__HIDDEN char *hm__path_dup(const hm__allocator *a, const char *packed);
HM__HIDDEN const char *hm__path_given(const char *packed);
HM__HIDDEN const char *hm__path_dir(const char *packed);
/* May the regular file `st`, open as fd from `path`, be loaded (trust.c)? Its owner, who
 * else may write to it and to the directories that lead to it; the rules are at the top of
 * trust.c. Waived by HM__READ_ALLOW_WRITABLE. 0, or HM_EACCES with the path and the rule in
 * the detail; HM_EAGAIN if the path no longer leads to that file. */
HM__HIDDEN int hm__file_trusted(const hm__allocator *a, int fd, const struct stat *st,
                                const char *path, unsigned flags);
/* The same walk over `path`'s directories and links first, then the file at its end opened
 * through its directory (read-only, non-blocking, not following a link swapped in meanwhile)
 * into *fd, when it is a regular file: -1 otherwise, not opened. *end gets what the walk
 * found there (the caller holds the open file to it, and refuses another type by it). Then
 * hm__file_trusted with HM__READ_PLACED checks the file alone. 0, or the walk's errors (a
 * missing name as open's -ENOENT). */
HM__HIDDEN int hm__file_open_placed(const hm__allocator *a, const char *path, int *fd,
                                    struct stat *end);
/* The build signature of the module file open as `fd` (read from `path`): `<name>.minisig`
 * in the directory that file was found in, after every symbolic link, opened through that
 * directory. Fills *out (asked is set); a signature that is missing or cannot be
 * read is out->rc, not an error. Returns 0, or HM_EAGAIN when the file the path leads to is
 * no longer the one open (replaced or moved meanwhile), HM_ENOMEM. */
HM__HIDDEN int hm__sigfile_read(const hm__allocator *a, int fd, const char *path,
                                hm__sigfile *out);
HM__HIDDEN void hm__sigfile_release(const hm__allocator *a, hm__sigfile *s);
/* A trusted key file: opened, held to the trust rules of modules (hm__file_trusted, never
 * waived) and read whole into *text (allocated, NUL-terminated). 0, or the error with the
 * detail recorded (HM_ENOENT, HM_EACCES, HM_EINVAL for one too large or not regular ...). */
HM__HIDDEN int hm__keyfile_read(const hm__allocator *a, const char *path, char **text,
                                size_t *len);
/* The lease probe alone, on an open descriptor (read-only). Never leaves a lease behind. */
HM__HIDDEN hm__writer hm__writer_probe(int fd);
HM__HIDDEN uint64_t hm__hash_bytes(const void *buf, size_t len);

/* ---- Private directories (privdir.c) ------------------------------------------------- */

/* Where a registry with this private_root option makes its directory: the option, else
 * $TMPDIR, else $XDG_RUNTIME_DIR or /dev/shm if it is a tmpfs mounted without noexec that
 * this user may write in (owned by it and closed to others, or sticky), else /tmp.
 * *tmpfs_default is 1 when a tmpfs was chosen that way: a full one may spill over. */
HM__HIDDEN const char *hm__privdir_root(const char *private_root, int *tmpfs_default);
/* Where copies go when the default tmpfs is full: $TMPDIR, else /tmp. */
HM__HIDDEN const char *hm__privdir_spill_root(void);
/* A copy could not be written for want of room (ENOSPC, EDQUOT): worth another place. */
#define HM__ERR_FULL(rc) ((rc) == -ENOSPC || (rc) == -EDQUOT)
/* Make a new private directory in `root` (mode 0700) and lock it: *out (allocated with `a`)
 * gets its path and *lock_fd the O_CLOEXEC descriptor that holds flock(LOCK_EX) on it.
 * Errors, detail recorded: HM_EACCES (root on a noexec mount, or not writable), HM_ENOMEM,
 * the errno of statvfs or mkdtemp (HM_ENOENT ...). */
HM__HIDDEN int hm__privdir_make(const hm__allocator *a, const char *root, char **out,
                                int *lock_fd);
/* The same, named hotmod-prof-XXXXXX when `profile` is set: profiling mode's directory,
 * which outlives its registry (see hm__privdir_release). */
HM__HIDDEN int hm__privdir_make_kind(const hm__allocator *a, const char *root, int profile,
                                     char **out, int *lock_fd);
/* Where profiling mode makes its directory: private_root if set, else on disk in a place of
 * this user's own ($XDG_CACHE_HOME/hotmod or ~/.cache/hotmod, made 0700 if missing; buf
 * holds the path), else /var/tmp. */
HM__HIDDEN const char *hm__privdir_profile_root(const char *private_root, char *buf, size_t n);
/* Remove the loader's copies from `dir` and the directory, and close lock_fd (-1: leave the
 * directory alone). */
HM__HIDDEN void hm__privdir_remove(const char *dir, int lock_fd);
/* Profiling mode: leave the directory and its copies for profilers to read after the
 * process, and let go of its lock (closing lock_fd). A later registry's sweep removes it
 * once nothing has changed it for a minute. */
HM__HIDDEN void hm__privdir_release(int lock_fd);
/* The copy's own directory, for a copy named DIR/NAME.SEQ.d/NAME.SEQ.so (one with split
 * debug information, whose debug file goes beside it): made, mode 0700. 0 or -errno. */
HM__HIDDEN int hm__copy_dir_make(const char *copy);
/* Delete a private copy, and with it the directory of its own if it has one (and the debug
 * file there). */
HM__HIDDEN void hm__copy_unlink(const char *copy);
/* The bytes a private copy takes: its size, and its debug file's if it has one. */
HM__HIDDEN unsigned long long hm__copy_bytes(const char *copy);
/* Remove stale private directories (nobody holds their lock) from every place one can be;
 * bounded work, never fails, leaves errno and the failure detail alone. Returns how many
 * it removed. */
HM__HIDDEN int hm__privdir_sweep(const char *private_root);

/* ---- Split debug information (debugfile.c) --------------------------------------------- */

/* Copy the debug file that a build's .gnu_debuglink names (`link`, a plain file name, whose
 * bytes must have CRC-32 `crc`) into the directory of `copy`, its private copy, where
 * debuggers, profilers and symbolizers look for it. It is looked for where gdb would look
 * beside the build at `src`: its directory, that directory's .debug/, the same under
 * /usr/lib/debug, and the same for the file a symbolic link at `src` leads to. Best
 * effort: a file not found, of another CRC (another build's) or that cannot be copied is
 * not copied, and the load goes on without it. Returns the bytes copied (0: none). */
HM__HIDDEN unsigned long long hm__debugfile_copy(const char *src, const char *link,
                                                 uint32_t crc, const char *copy);
/* The CRC-32 of .gnu_debuglink (the one zlib computes), continued from `crc` (0 to start). */
HM__HIDDEN uint32_t hm__crc32(uint32_t crc, const unsigned char *buf, size_t len);

/* ---- Reclamation (reclaim.c) ----------------------------------------------------------- */

/* Start a grace period after publishing new pointers: returns the target that
 * hm__gp_passed must see. */
HM__HIDDEN unsigned long hm__gp_start(void);
/* Non-blocking: 1 once every live call that could have read the old pointers has left. */
HM__HIDDEN int hm__gp_passed(unsigned long target);
/* The current grace period (hm__gpw), to note when something was retired. */
HM__HIDDEN unsigned long hm__gp_now(void);
/* The registered threads inside a live call that began in grace period `gp` or before: how
 * many, and the kernel thread ids of the first `max` of them in tids[]. Takes the reader
 * list's lock only, never touches the readers' words but to read them. */
HM__HIDDEN size_t hm__readers_inside(unsigned long gp, int *tids, size_t max);
/* Put the calling thread on the reader list, if it is not yet (its first live call does the
 * same), so that grace periods see its word. */
HM__HIDDEN void hm__reader_register_self(void);

typedef struct hm__reclaimer hm__reclaimer;
typedef void (*hm__defer_fn)(void *arg);

HM__HIDDEN int hm__reclaimer_new(hm__reclaimer **out, const hm__allocator *a);
/* Runs every deferred callback (waiting for their grace periods), then frees. */
HM__HIDDEN void hm__reclaimer_free(hm__reclaimer *rc);
/* After fork(), in the child: the reclaimer's thread did not come along. Frees its memory
 * without touching its lock or running what was queued. */
HM__HIDDEN void hm__reclaimer_forget(hm__reclaimer *rc);
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
/* Lock / unlock the process-wide reader list around fork() (registry.c's handlers call
 * these, so that one prepare handler orders every lock). */
HM__HIDDEN void hm__readers_prefork(void);
HM__HIDDEN void hm__readers_postfork(int child);

/* ---- The loader gate (dlgate.c) -------------------------------------------------------- */

/* dlopen, dlclose and dl_iterate_phdr, for every call hotmod makes: fork() waits (bounded)
 * until none is in progress, because glibc's child would inherit the loader's list lock
 * held. Never call them with a lock held that the fork handlers take (reg->lock, the
 * registry list, the reader list). */
struct dl_phdr_info;
HM__HIDDEN void *hm__dlopen(const char *path, int flags);
HM__HIDDEN int hm__dlclose(void *dl);
HM__HIDDEN int hm__dl_iterate_phdr(int (*cb)(struct dl_phdr_info *, size_t, void *), void *arg);
/* Called first by registry.c's prepare handler, last by its parent and child handlers. */
HM__HIDDEN void hm__dlgate_prefork(void);
HM__HIDDEN void hm__dlgate_postfork(int child);

/* ---- Loader (loader.c) ----------------------------------------------------------------- */

struct hm__version {
  hm_module *mod;
  unsigned num;
  int refs; /* atomic: the module's "current" reference, each table, snapshot and lookup */
  void *dl;
  char *copy_path;
  hm__file_id id;
  long long load_ns; /* CLOCK_REALTIME at load */
  const hm_module_desc *desc;
  int handed_over;  /* its successor accepted its state */
  int published;    /* it became current once; unpublished ones are discarded quietly */
  int hook_done;    /* its unload hook has run (hm_registry_free runs it for pinned ones) */
  int orphan;       /* atomic: its registry was freed while snapshots pinned it */
  int copy_kept;    /* atomic: its private copy is the module's rollback copy: not deleted
                       at unload (the registry deletes it when it is dropped) */
  unsigned build;   /* which load of the module this is (1, 2 ...): stays the same when a
                       rollback makes the version current again under a new num */
  unsigned lint;    /* the lint's findings in its file (HM__LINT_*) */
  unsigned keep;    /* those of them for which it stays mapped once retired (0: unloaded) */
  int discard_later; /* a discard leaves its unload to the reclaimer thread (a poll is
                        publishing it, and a poll never waits in dlclose) */
  int profile;      /* profiling mode: once published, stays mapped and keeps its copy */
  hm__allocator a;  /* a copy, so an orphan can free itself after the registry is gone */
  hm__defer_node unload_node;
  hm__version *next; /* the module's list of versions still loaded */
  hm__symtab syms;   /* its own symbols, for lookups without the loader's lock */
  struct hm__signed *sig; /* the build signature it was verified with (reload.h), or NULL:
                             loaded without trusted keys. Freed with it */
  /* The live handles its load hook took (through ctx->api, or hm_live_acquire), one cell per
   * module they reach (registry.h, cells.c); under its registry's lock, as the rest: */
  struct hm__cell *cells;
  int frozen;        /* it was current and is not now: its cells stay on what they reached */
  int cells_dead;    /* its cells were let go (nothing can call it any more) */
  int mark;          /* the sweep's (cells.c) */
  unsigned long retire_gen; /* when it was frozen (hm_registry.retire_gen) */
  int pins;          /* atomic: snapshots on it (also read by introspection) */
  /* For introspection (introspect.c), never read on a call path: hm__gpw when its last table
   * was retired (atomic; table.c: 0 while it is current), which tells the live calls that
   * may still be inside it. */
  unsigned long retired_gp;
};

/* ---- Child processes (spawn.c) --------------------------------------------------------- */

/* What to start. Strings are borrowed for the call. */
typedef struct hm__spawn_req {
  const char *path;   /* the program; looked up in PATH when search_path is set */
  char *const *argv;
  char *const *envp;  /* NULL: the host's environment */
  const char *cwd;    /* NULL: the host's current directory */
  int search_path;
  int out_fd, err_fd; /* the child's 1 and 2 (-1: /dev/null for 1, the host's 2) */
  int fd3;            /* the child's 3, or -1 */
} hm__spawn_req;

/* A pipe (both ends O_CLOEXEC) whose write end is above the descriptors a child's file
 * actions replace. 0, or a negative errno. */
HM__HIDDEN int hm__spawn_pipe(int *rfd, int *wfd);
/* Start the command with stdin on /dev/null, in a process group of its own (its pid), with
 * the default action for every signal and none blocked. 0, or a negative errno. */
HM__HIDDEN int hm__spawn(const hm__spawn_req *rq, pid_t *pid);
/* A descriptor that becomes readable when the child exits, or -1 (kernels before 5.3). */
HM__HIDDEN int hm__pidfd_open(pid_t pid);
/* 1 while the child is not reaped (running, or a zombie only we reap): its pid and group id
 * cannot have been reused. A host that ignores SIGCHLD, or reaps with waitpid(-1), may have
 * reaped it already. */
HM__HIDDEN int hm__child_unreaped(pid_t pid);
/* 1 once the child has exited (or was reaped elsewhere), without reaping it. */
HM__HIDDEN int hm__child_exited(pid_t pid);
/* Kill whatever is left of the child's process group and the child (if not reaped yet),
 * then reap it: 0 with its wait status in *status, -1 when its status was reaped
 * elsewhere. */
HM__HIDDEN int hm__child_end(pid_t pid, int *status);

/* Crash containment (probe.c). The helper program runs a build in a child process first:
 * what it needs to know. Strings are borrowed for the call. */
#define HM__PROBE_MAX_SYMS 256 /* symbols passed to the child; the rest are not checked */
typedef struct hm__probe_req {
  const char *helper;        /* hotmod-probe's path */
  const char *path;          /* the module's source, for messages */
  unsigned timeout_ms;       /* how long the child may take */
  unsigned version;          /* the version number the build would get (its load hook's) */
  const char *const *syms;   /* the symbols the host's live handles need */
  size_t nsyms;
} hm__probe_req;

/* Find hotmod-probe: $HOTMOD_PROBE, then relative to the library (the install layout, then
 * beside it: a build tree), then the configured install path. *out is allocated. */
HM__HIDDEN int hm__probe_find(const hm__allocator *a, char **out);
/* Run the build at `copy` in the helper. 0: it did nothing fatal there (or could not be
 * opened there: the host's dlopen decides); HM_ECRASHED (a signal, exit or failing
 * self-test), HM_ETIMEDOUT, or the error that kept the helper from running. */
HM__HIDDEN int hm__probe_run(const hm__probe_req *rq, const char *copy);

/* How to load: lint findings refused (bits), findings for which the version is kept mapped
 * once retired unless its descriptor promises otherwise (bits, of HM__LINT_LEAVES_DTORS),
 * and the probe to run first (NULL: none). */
typedef struct hm__load_opts {
  unsigned reject_lint;
  const hm__probe_req *probe;
  unsigned keep_lint;
  const char *debug_from; /* where the bytes were read, for their debug file, when not the
                             module's path (a rollback's kept copy); NULL: the path */
  unsigned untrusted_lint; /* findings refused with HM_EUNTRUSTED: code a build signature
                              does not cover (trusted keys are set) */
} hm__load_opts;

/* The preflight's last step, after hm__elf_check: a module descriptor this library can use
 * (the same module ABI, at least the fields it knows), and no libhotmod among the libraries
 * it needs other than this one (HM__SONAME); else HM_EABI with the detail recorded. 0 for a
 * module without a descriptor that needs no libhotmod. */
HM__HIDDEN int hm__desc_check(const char *path, const hm__elf_info *elf);
/* Check `f`'s bytes, write them to a private copy in `dir` (named after `name` and `seq`)
 * and dlopen it (the module's constructors run here). Lint findings in o->reject_lint
 * refuse it with HM_ELINT before anything is written; with o->probe, the copy runs in the
 * probe's child first and what it finds refuses it before the host opens it; `info` (may
 * be NULL) gets what the check found, its strings pointing into f's bytes. On success *out
 * is a new version with one reference, not yet published. On error the detail is recorded and nothing is left
 * behind. `path` is the source, for messages. */
HM__HIDDEN int hm__load_bytes(const hm__allocator *a, const char *dir, const char *name,
                              unsigned long seq, const char *path, const hm__file *f,
                              const hm__load_opts *o, hm__elf_info *info, hm__version **out);
/* What became of a version that was to be unloaded. */
typedef struct hm__unloaded {
  int mapped;               /* 0: unloaded; else why it stays mapped (hm_mapped): for good,
                               or HM_MAPPED_PROFILING */
  unsigned long long bytes; /* what its mapping keeps (whole pages of its PT_LOADs) */
  char detail[256];         /* why, in words, for the LEAKED event ("" when unloaded) */
  char *kept_copy;          /* profiling: the copy's path, left in place; the caller's to
                               free (with the version's allocator). Else NULL */
} hm__unloaded;
/* Run the unload hook unless told not to, then dlclose (unless v->keep, or v->profile and
 * it was published: then it stays mapped), check the mapping is gone, delete the copy (cut
 * to what stays mapped, if it does; left whole in profiling mode) and free. */
HM__HIDDEN void hm__unload_version(hm__version *v, int run_hook, hm__unloaded *out);
/* Delete a private copy that a mapping may still use: first cut it to the bytes its
 * PT_LOADs map, so that a kept version holds no more of the file than it maps. */
HM__HIDDEN void hm__copy_remove(const char *path);
/* The address of `name` in version v, as dlsym(v->dl, name) gives it, or NULL. Looked up in
 * v's own tables where that gives dlsym's answer (symbols.c): then no lock is taken, and no
 * other thread's dlopen or dlclose (constructors, destructors) is waited for. Otherwise
 * dlsym, which takes the loader's lock: call with no lock of ours held. v stays loaded. */
HM__HIDDEN void *hm__symbol(const hm__version *v, const char *name);
/* hm__symbol as a function: 0, or HM_ENOSYM if missing. */
HM__HIDDEN int hm__resolve(const hm__version *v, const char *sym, hm_fn *out);

/* ---- Settle policy (settle.c): a pure function, see the file's comment ----------------- */

/* What inotify said about the file since the last decision. */
enum {
  HM__EV_DONE = 0x1u,   /* closed after writing, or renamed into place */
  HM__EV_WRITE = 0x2u,  /* written (IN_MODIFY): a writer is at work until its close */
  HM__EV_CHANGE = 0x4u, /* created, attributes changed: not by itself a writer */
  HM__EV_NEW = 0x8u,    /* another inode has the name (created, renamed into place) */
  HM__EV_LOST = 0x10u,  /* events were missed (queue overflow, a directory came back) */
  HM__EV_GONE = 0x20u,  /* deleted or moved away */
  HM__EV_START = 0x40u  /* the watch began: the file may have changed since its load */
};

typedef enum hm__method { /* matches hm_watch_method */
  HM__BY_LEASE = 1,
  HM__BY_EVENTS = 2,
  HM__BY_TIMING = 3
} hm__method;

typedef enum hm__settle_why {
  HM__WHY_EVENTS, /* inotify reported something */
  HM__WHY_QUIET,  /* the quiet period ran out */
  HM__WHY_RETRY,  /* a retry after a transient failure is due */
  HM__WHY_SETTLE, /* the settle delay ran out */
  HM__WHY_RECHECK, /* time to ask about the writer again */
  HM__WHY_SIGNED   /* the wait for a build signature is over: look again */
} hm__settle_why;

typedef enum hm__settle_do {
  HM__DO_WAIT,   /* nothing now: the next event will tell */
  HM__DO_QUIET,  /* note the file's size and mtime, decide again after the quiet period */
  HM__DO_READ,   /* read the file and check it (then hm__settle_checked) */
  HM__DO_SETTLE, /* complete: read it again after the settle delay */
  HM__DO_SAME,   /* the bytes are what already serves */
  HM__DO_LOAD,   /* a finished new build: reload the module (then hm__settle_result) */
  HM__DO_REFUSE, /* a finished file that is bad: report it, once */
  HM__DO_RETRY,  /* a transient failure: try again after the delay hm__settle_result gives */
  HM__DO_REPORT,  /* a transient failure outlasted its retries: report it, wait for a change */
  HM__DO_RECHECK, /* ask about the writer again after recheck_ms */
  HM__DO_SIGWAIT  /* signed builds: wait for the build's signature (its events, or a timer) */
} hm__settle_do;

typedef struct hm__settle {
  unsigned seen;     /* HM__EV_* since the last decision */
  hm__method forced; /* 0, or the method the host forced (HOTMOD_WATCH_METHOD) */
  hm__method method; /* what the last decision went by */
  int writing;       /* events: written since its last close (a writer is at work) */
  int done;          /* events: closed after writing (or renamed into place), nothing since */
  int lost;          /* events: missed since the last close; only timing can tell */
  int finished;      /* the last decision knew the writer was done (lease or events) */
  int have_final;    /* final_key was refused for good while final_cur was current */
  uint64_t final_key;
  unsigned final_cur;
  uint64_t retry_key; /* the bytes whose transient failures are being retried */
  unsigned retries;
  int settle_pending; /* settle_key is complete and waits out the settle delay */
  uint64_t settle_key;
  unsigned rechecks; /* lease: probes since a writer's close still found a writer */
  unsigned recheck_ms;
  int denied;        /* the last read was refused for want of permission (see below) */
  int sig_waiting;   /* signed builds: sig_build waits for its signature since sig_since_ms */
  uint64_t sig_build;
  long long sig_since_ms;
} hm__settle;

/* What reading and checking the file found. */
typedef struct hm__settle_file {
  int read_rc;         /* hm__file_read's result */
  int complete;        /* it passed the ELF check */
  int same_as_current; /* its content hash equals the current version's */
  uint64_t key;        /* content and permission bits: what a refusal is about */
  unsigned cur;        /* the module's current version number */
  int events_pending;  /* inotify has events the watcher has not read yet (they may say a
                          writer came back since the close that made the file finished) */
  int denied;          /* the open was refused for want of permission (read_rc HM_EACCES):
                          the file's mode or owner may still change */
} hm__settle_file;

HM__HIDDEN void hm__settle_init(hm__settle *s, hm__method forced);
/* Fold one event (HM__EV_*) into the state, in the order inotify reported them. */
HM__HIDDEN void hm__settle_note(hm__settle *s, unsigned ev);
/* What to do after events (or a timer). `writer` is the lease probe's answer now; `stable`
 * (for HM__WHY_QUIET) says the size, mtime and inode held still over the quiet period. */
HM__HIDDEN hm__settle_do hm__settle_decide(hm__settle *s, hm__settle_why why,
                                           hm__writer writer, int stable);
/* What to do with the file as read. `settle_due`: this read follows the settle delay. */
HM__HIDDEN hm__settle_do hm__settle_checked(hm__settle *s, const hm__settle_file *f,
                                            int settle_due, unsigned settle_ms);
/* After a reload (or a read) failed with rc, or succeeded (0): WAIT, QUIET, RETRY (after
 * *retry_ms) or REPORT. */
HM__HIDDEN hm__settle_do hm__settle_result(hm__settle *s, int rc, uint64_t key, unsigned cur,
                                           unsigned *retry_ms);

/* Signed builds: what the watcher found about the signature of a finished build it is about
 * to load. */
typedef struct hm__settle_sig {
  int present;         /* a signature file is beside the module's file */
  int older;           /* it was last written before the module's file */
  int older_verifies;  /* older, and yet it verifies these bytes (deployed first) */
  int writing;         /* a process has it open for writing, or it was written (or made)
                          since it was last closed */
  uint64_t build_key;  /* the build's bytes (and mode): what the wait is for */
  uint64_t key;        /* those and the signature file's identity: what a refusal is about */
  unsigned cur;        /* the module's current version */
  long long now_ms;    /* a monotonic clock */
  unsigned wait_ms;    /* how long a build may wait for its signature */
} hm__settle_sig;
/* LOAD (a finished signature is there: the reload verifies it, and refuses it at once if it
 * does not verify), SIGWAIT (none yet, an older one that does not verify, or one still being
 * written: decide again at its next event or after *timer_ms) or, once the build has waited
 * wait_ms, REFUSE (final for `key`, like a refusal of the bytes: a new signature file is a
 * new key). */
HM__HIDDEN hm__settle_do hm__settle_signature(hm__settle *s, const hm__settle_sig *g,
                                              unsigned *timer_ms);

#endif /* HM_INTERNAL_H */
