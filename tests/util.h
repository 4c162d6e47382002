/* Helpers shared by the tests: module files, temp directories, /proc checks, polling. */
#ifndef HM_TEST_UTIL_H
#define HM_TEST_UTIL_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hotmod.h"

/* Path of a built test module, e.g. hmt_mod("square_v1"). Static storage, 8 rotating slots. */
const char *hmt_mod(const char *name);
/* A new private temp directory (caller frees the string, hmt_rm_rf removes it with what is
 * in it, subdirectories too; symbolic links are removed, never followed). */
char *hmt_tmpdir(void);
void hmt_rm_rf(const char *dir);
/* dir/name into a static rotating buffer. */
const char *hmt_path(const char *dir, const char *name);
/* Put src at dest as a build would: write a temp file beside dest, then rename over it. */
void hmt_install(const char *src, const char *dest);
/* Write `len` bytes to dest (create or truncate in place, mode 0755). */
void hmt_write(const char *dest, const void *buf, size_t len);
/* Read a whole file; *len gets its size; a NUL follows the bytes. Caller frees. */
unsigned char *hmt_read(const char *path, size_t *len);
/* Files in dir (not counting . and ..). */
int hmt_count_files(const char *dir);
/* Lines of /proc/self/maps that contain `needle`, and all lines. */
int hmt_maps_count(const char *needle);
int hmt_maps_total(void);
/* Distinct private copies of the registry that /proc/self/maps shows (up to 16). */
int hmt_mapped_copies(hm_registry *reg);
/* Open file descriptors of this process. */
int hmt_fd_count(void);
/* Resident set size in KiB. */
long hmt_rss_kib(void);
/* Poll pred(arg) every millisecond until it is true or `seconds` pass; returns its value. */
int hmt_wait_until(int (*pred)(void *), void *arg, double seconds);
/* For hmt_wait_until: the registry `reg` has no retired version left (each was unloaded,
 * or stays mapped for good). */
int hmt_retired_zero(void *reg);
/* A thread calling `entry` (an int(void) live handle) until `stop`: `calls` made, `bad` those
 * that returned neither ok[0] nor ok[1]. Start it with pthread_create(&t, NULL, hmt_caller_main,
 * &c) after zeroing c and setting entry and ok; stop it with hmt_caller_stop. */
typedef struct hmt_caller {
  hm_live *entry;
  int ok[2];
  int stop;
  long calls, bad;
} hmt_caller;
void *hmt_caller_main(void *arg);
void hmt_caller_stop(hmt_caller *c, pthread_t t);
/* n, scaled down under valgrind or when asked (HOTMOD_TEST_SCALE=0.1), and by default under
 * ThreadSanitizer, which rescans every loaded object on each dlopen (its cost grows with the
 * run): a few hundred reloads there instead of thousands. At least 10. */
long hmt_scaled(long n);
/* Defined in builds with AddressSanitizer or ThreadSanitizer, whose allocators keep freed
 * memory for a while: resident memory says little there. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HMT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HMT_SANITIZED 1
#endif
#endif
/* 0 where resident memory says little about what the program keeps: under a sanitizer
 * (HMT_SANITIZED) or valgrind (its own bookkeeping for every object loaded grows with each
 * reload). */
int hmt_rss_meaningful(void);
/* A registry with quiet logging and the given private root (NULL: default). */
hm_registry *hmt_registry(unsigned flags);

/* What a registry's event callback was told, with the details copied inside the callback
 * (hm_event_detail() is valid only there). Read under `mu` when events may come from other
 * threads. */
#define HMT_MAX_DETAILS 16
typedef struct hmt_events {
  pthread_mutex_t mu;
  int nwarn;                         /* HM_EVENT_WARNING, the first HMT_MAX_DETAILS kept */
  char warn[HMT_MAX_DETAILS][512];
  int nreject;                       /* HM_EVENT_REJECTED, the last one's error and detail */
  int reject_err;
  char reject[512];
  int nunloaded;                     /* HM_EVENT_UNLOADED */
  int nleaked;                       /* HM_EVENT_LEAKED, the first HMT_MAX_DETAILS kept: */
  char leak[HMT_MAX_DETAILS][512];   /* its detail, */
  int leak_why[HMT_MAX_DETAILS];     /* and what hm_event_mapped said */
  unsigned long long leak_bytes[HMT_MAX_DETAILS];
} hmt_events;
/* A quiet registry with options `o` (NULL: defaults) whose events go to `e` (initialised
 * here); free it with hmt_registry_events_free. */
hm_registry *hmt_registry_events(hmt_events *e, const hm_registry_options *o);
void hmt_registry_events_free(hm_registry *reg, hmt_events *e);

#endif
