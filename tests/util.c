#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Per thread, so that tests may call these from several threads. */
static __thread char rot[8][4096];
static __thread unsigned rot_i;

static char *next_buf(void) { return rot[rot_i++ % 8]; }

const char *hmt_mod(const char *name) {
  char *b = next_buf();
  snprintf(b, sizeof rot[0], "%s/%s.so", HM_TEST_MODDIR, name);
  return b;
}

const char *hmt_path(const char *dir, const char *name) {
  char *b = next_buf();
  snprintf(b, sizeof rot[0], "%s/%s", dir, name);
  return b;
}

char *hmt_tmpdir(void) {
  const char *root = getenv("TMPDIR");
  char *p = malloc(4096);
  assert_non_null(p);
  snprintf(p, 4096, "%s/hmtest-XXXXXX", root && *root ? root : "/tmp");
  assert_non_null(mkdtemp(p));
  return p;
}

void hmt_rm_rf(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  if (d == NULL)
    return;
  while ((e = readdir(d)) != NULL) {
    char p[4096];
    struct stat st;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      chmod(p, 0700); /* a test may have made it read-only */
      hmt_rm_rf(p);
    } else {
      unlink(p);
    }
  }
  closedir(d);
  rmdir(dir);
}

unsigned char *hmt_read(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  long n;
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0'; /* text files can be read as strings */
  fclose(f);
  *len = (size_t)n;
  return buf;
}

void hmt_write(const char *dest, const void *buf, size_t len) {
  int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC, 0755);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, buf, len), (ssize_t)len);
  fchmod(fd, 0755);
  close(fd);
}

void hmt_install(const char *src, const char *dest) {
  char tmp[4200];
  size_t len;
  unsigned char *buf = hmt_read(src, &len);
  snprintf(tmp, sizeof tmp, "%s.tmp%d", dest, (int)getpid());
  hmt_write(tmp, buf, len);
  assert_int_equal(rename(tmp, dest), 0);
  free(buf);
}

int hmt_count_files(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      n++;
  closedir(d);
  return n;
}

static int maps_scan(const char *needle) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[4096];
  int n = 0;
  assert_non_null(f);
  while (fgets(line, sizeof line, f) != NULL)
    if (needle == NULL || strstr(line, needle) != NULL)
      n++;
  fclose(f);
  return n;
}

int hmt_maps_count(const char *needle) { return maps_scan(needle); }

int hmt_maps_total(void) { return maps_scan(NULL); }

int hmt_mapped_copies(hm_registry *reg) {
  FILE *fp = fopen("/proc/self/maps", "r");
  char line[4096], seen[16][512];
  int n = 0, i;
  assert_non_null(fp);
  while (fgets(line, sizeof line, fp) != NULL) {
    char *p = strstr(line, hm_registry_dir(reg));
    if (p == NULL)
      continue;
    p[strcspn(p, "\n")] = '\0';
    for (i = 0; i < n && strcmp(seen[i], p) != 0; i++)
      ;
    if (i == n && n < 16)
      snprintf(seen[n++], sizeof seen[0], "%s", p);
  }
  fclose(fp);
  return n;
}

int hmt_rss_meaningful(void) {
#ifdef HMT_SANITIZED
  return 0;
#else
  const char *pre = getenv("LD_PRELOAD");
  return pre == NULL || strstr(pre, "vgpreload") == NULL;
#endif
}

int hmt_fd_count(void) { return hmt_count_files("/proc/self/fd") - 1; /* the DIR's own */ }

long hmt_rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, rss = 0;
  assert_non_null(f);
  assert_int_equal(fscanf(f, "%ld %ld", &size, &rss), 2);
  fclose(f);
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

int hmt_wait_until(int (*pred)(void *), void *arg, double seconds) {
  struct timespec start, now, ms = {0, 1000000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int v = pred(arg);
    if (v)
      return v;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 >
        seconds)
      return pred(arg);
    nanosleep(&ms, NULL);
  }
}

long hmt_scaled(long n) {
  const char *s = getenv("HOTMOD_TEST_SCALE");
#ifdef HM__TSAN
  double f = s ? atof(s) : 0.15;
#else
  double f = s ? atof(s) : 1.0;
#endif
  long v = (long)((double)n * (f > 0 ? f : 1.0));
  return v > 10 ? v : 10;
}

hm_registry *hmt_registry(unsigned flags) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  o.flags = flags | HM_FLAG_QUIET;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  return reg;
}

static void record_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  hmt_events *e = ud;
  (void)mod;
  (void)version;
  pthread_mutex_lock(&e->mu);
  if (ev == HM_EVENT_WARNING && e->nwarn < HMT_MAX_DETAILS)
    snprintf(e->warn[e->nwarn++], sizeof e->warn[0], "%s", hm_event_detail());
  if (ev == HM_EVENT_REJECTED) {
    e->nreject++;
    e->reject_err = err;
    snprintf(e->reject, sizeof e->reject, "%s", hm_event_detail());
  }
  if (ev == HM_EVENT_UNLOADED)
    e->nunloaded++;
  if (ev == HM_EVENT_LEAKED && e->nleaked < HMT_MAX_DETAILS) {
    snprintf(e->leak[e->nleaked], sizeof e->leak[0], "%s", hm_event_detail());
    /* Not an assertion: the reclaimer's thread may deliver it. */
    if (hm_event_mapped(&e->leak_why[e->nleaked], &e->leak_bytes[e->nleaked]) != 0)
      e->leak_why[e->nleaked] = -1;
    e->nleaked++;
  }
  pthread_mutex_unlock(&e->mu);
}

void *hmt_caller_main(void *arg) {
  hmt_caller *c = arg;
  typedef int (*int_fn)(void);
  while (!__atomic_load_n(&c->stop, __ATOMIC_SEQ_CST)) {
    int r = HM_LIVE_CALL(c->entry, int_fn);
    if (r != c->ok[0] && r != c->ok[1])
      c->bad++;
    c->calls++;
  }
  return NULL;
}

void hmt_caller_stop(hmt_caller *c, pthread_t t) {
  __atomic_store_n(&c->stop, 1, __ATOMIC_SEQ_CST);
  pthread_join(t, NULL);
}

int hmt_retired_zero(void *reg) {
  hm_stats st;
  return hm_registry_stats(reg, &st) == 0 && st.retired == 0;
}

hm_registry *hmt_registry_events(hmt_events *e, const hm_registry_options *opts) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg = NULL;
  if (opts != NULL)
    o = *opts;
  memset(e, 0, sizeof *e);
  pthread_mutex_init(&e->mu, NULL);
  o.flags |= HM_FLAG_QUIET;
  o.on_event = record_event;
  o.event_userdata = e;
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  return reg;
}

void hmt_registry_events_free(hm_registry *reg, hmt_events *e) {
  hm_registry_free(reg);
  pthread_mutex_destroy(&e->mu);
}
