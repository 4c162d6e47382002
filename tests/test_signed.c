/* Signed builds: with trusted keys, a build loads only with a minisign signature by one of
 * them over the bytes hotmod read; every way a signature can be wrong is refused with
 * HM_EUNTRUSTED while the old version serves on; the watcher waits for a signature deployed
 * after its build, refuses a stale one after the wait, and follows a release flip; rollback
 * checks the kept copy again; keys rotate; the environment gives keys to a host that set
 * none; hotmod-check --verify says the same offline. Keys are made by minisign itself
 * (`minisign -G -W`), and builds signed by it.
 *
 * In a build without libsodium (CI builds one), only the last test runs: every request for
 * signed builds is refused with -ENOTSUP and a message that says why. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*ifn)(void);

/* Generous: sanitizer and valgrind builds are slow. */
#define DEADLINE 30.0


static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char cmd[16384];
  va_list ap;
  int st;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  st = system(cmd);
  return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

#ifdef HM_TEST_HAVE_SODIUM

static const char *minisign = HM_TEST_MINISIGN;

/* The keys every test uses: made once, in a directory of their own. */
static char *keydir;
static char pub_a[4200], sec_a[4200], pub_b[4200], sec_b[4200], id_a[17];

/* Sign `file` with secret key `sec`: the signature in `out` (NULL: file.minisig), with extra
 * minisign arguments (NULL: none; e.g. -l for the legacy format, -t for a trusted comment). */
static void sign(const char *file, const char *sec, const char *extra, const char *out) {
  char sig[4400];
  snprintf(sig, sizeof sig, "%s.minisig", file);
  assert_int_equal(run("%s -S -s '%s' -m '%s' -x '%s' %s >/dev/null 2>&1", minisign, sec, file,
                       out ? out : sig, extra ? extra : ""),
                   0);
}

/* Copy src to dest (a fresh inode, as a deploy writes it) and sign it there. */
static void place_signed(const char *src, const char *dest, const char *sec, const char *extra) {
  hmt_install(src, dest);
  sign(dest, sec, extra, NULL);
}

static void keygen(const char *pub, const char *sec) {
  assert_int_equal(run("%s -G -W -p '%s' -s '%s' >/dev/null 2>&1", minisign, pub, sec), 0);
}

/* The key id minisign wrote in the public key file's comment ("untrusted comment: minisign
 * public key <ID>"), into id[17]. */
static void key_id_of(const char *pub, char *id) {
  char line[256];
  FILE *f = fopen(pub, "r");
  assert_non_null(f);
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  line[strcspn(line, "\r\n")] = '\0';
  assert_non_null(strrchr(line, ' '));
  snprintf(id, 17, "%.16s", strrchr(line, ' ') + 1);
}

static int group_setup(void **state) {
  (void)state;
  keydir = hmt_tmpdir();
  snprintf(pub_a, sizeof pub_a, "%s/a.pub", keydir);
  snprintf(sec_a, sizeof sec_a, "%s/a.sec", keydir);
  snprintf(pub_b, sizeof pub_b, "%s/b.pub", keydir);
  snprintf(sec_b, sizeof sec_b, "%s/b.sec", keydir);
  keygen(pub_a, sec_a);
  keygen(pub_b, sec_b);
  key_id_of(pub_a, id_a);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  hmt_rm_rf(keydir);
  free(keydir);
  return 0;
}

/* ---- The fixture: a registry trusting key A, its events, and module sq in a directory ---- */

typedef struct fx {
  hm_registry *reg;
  char *dir;
  char path[4200]; /* dir/sq.so */
  char sig[4200];  /* dir/sq.so.minisig */
  hm_module *mod;
  pthread_mutex_t mu;
  int loaded, rejected, rolled_back; /* events */
  int reject_err;
  char reject[1024], loaded_detail[1100];
} fx;

static void on_event(hm_event ev, hm_module *mod, unsigned version, int err, void *ud) {
  fx *f = ud;
  (void)mod;
  (void)version;
  pthread_mutex_lock(&f->mu);
  if (ev == HM_EVENT_LOADED || ev == HM_EVENT_ROLLED_BACK) {
    f->loaded += ev == HM_EVENT_LOADED;
    f->rolled_back += ev == HM_EVENT_ROLLED_BACK;
    snprintf(f->loaded_detail, sizeof f->loaded_detail, "%s", hm_event_detail());
  }
  if (ev == HM_EVENT_REJECTED) {
    f->rejected++;
    f->reject_err = err;
    snprintf(f->reject, sizeof f->reject, "%s", hm_event_detail());
  }
  pthread_mutex_unlock(&f->mu);
}

static int count(fx *f, int *what) {
  int n;
  pthread_mutex_lock(&f->mu);
  n = *what;
  pthread_mutex_unlock(&f->mu);
  return n;
}

/* A registry with options `o` (NULL: trusting key A by its file), events into f. */
static fx *fx_new(hm_registry_options *o) {
  hm_registry_options def = HM_REGISTRY_OPTIONS_INIT;
  static const char *keys[2];
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  keys[0] = pub_a;
  if (o == NULL) {
    o = &def;
    o->trusted_keys = keys;
  }
  pthread_mutex_init(&f->mu, NULL);
  o->flags |= HM_FLAG_QUIET;
  o->on_event = on_event;
  o->event_userdata = f;
  assert_int_equal(hm_registry_new(&f->reg, o), 0);
  f->dir = hmt_tmpdir();
  snprintf(f->path, sizeof f->path, "%s/sq.so", f->dir);
  snprintf(f->sig, sizeof f->sig, "%s/sq.so.minisig", f->dir);
  return f;
}

static int setup(void **state) {
  *state = fx_new(NULL);
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  hm_registry_free(f->reg);
  hmt_rm_rf(f->dir);
  free(f->dir);
  pthread_mutex_destroy(&f->mu);
  free(f);
  return 0;
}

static int version_of(fx *f) {
  hm_live *l;
  assert_int_equal(hm_live_get(f->reg, "sq:version", &l), 0);
  return HM_LIVE_CALL(l, ifn);
}

/* Load square_v<v>, signed by key A, as sq. */
static void load_signed(fx *f, int v) {
  char name[32];
  snprintf(name, sizeof name, "square_v%d", v);
  place_signed(hmt_mod(name), f->path, sec_a, NULL);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  assert_int_equal(version_of(f), v);
}

/* A reload of sq is refused as untrusted, with `why` in the message, and v1 serves on. */
static void expect_untrusted(fx *f, const char *why) {
  int before = count(f, &f->rejected), rc = hm_module_reload(f->mod);
  if (rc != HM_EUNTRUSTED || strstr(hm_errmsg(), why) == NULL)
    fail_msg("expected HM_EUNTRUSTED with \"%s\", got %s: %s", why, hm_err_name(rc),
             hm_errmsg());
  assert_int_equal(count(f, &f->rejected), before + 1);
  assert_int_equal(f->reject_err, HM_EUNTRUSTED);
  assert_int_equal(version_of(f), 1);
}

static void flip_byte(const char *path, size_t at) {
  size_t len;
  unsigned char *buf = hmt_read(path, &len);
  assert_true(at < len);
  buf[at] ^= 0x01;
  hmt_write(path, buf, len);
  free(buf);
}

/* Replace line `n` (1-based) of a text file. */
static void replace_line(const char *path, int n, const char *text) {
  size_t len, i;
  unsigned char *buf = hmt_read(path, &len);
  char out[8192];
  int line = 1;
  size_t o = 0;
  for (i = 0; i < len; i++) {
    if (line == n && (i == 0 || buf[i - 1] == '\n')) {
      o += (size_t)snprintf(out + o, sizeof out - o, "%s\n", text);
      while (i < len && buf[i] != '\n')
        i++;
      line++;
      continue;
    }
    out[o++] = (char)buf[i];
    if (buf[i] == '\n')
      line++;
  }
  hmt_write(path, out, o);
  free(buf);
}

/* ---- Loads and refusals ---------------------------------------------------------------- */

static void t_signed_loads(void **state) {
  fx *f = *state;
  char id[17], comment[300];
  load_signed(f, 1);
  /* The verified trusted comment is the LOADED event's detail, and stays with the version. */
  assert_non_null(strstr(f->loaded_detail, "file:sq.so"));
  assert_non_null(strstr(f->loaded_detail, "timestamp:"));
  assert_int_equal(hm_module_build_signed(f->mod, id, comment, sizeof comment), 1);
  assert_string_equal(id, id_a);
  assert_string_equal(comment, f->loaded_detail);
  /* A comment of the signer's own ("build 1234 from CI") is shown as it was signed. */
  place_signed(hmt_mod("square_v2"), f->path, sec_a, "-t 'build 1234 from CI'");
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_string_equal(f->loaded_detail, "build 1234 from CI");
  assert_int_equal(hm_module_build_signed(f->mod, NULL, comment, 6), 1);
  assert_string_equal(comment, "build");
}

/* The entry of `num` in an info's versions (it must be there). */
static const hm_version_info *entry_of(const hm_module_info *m, unsigned num) {
  size_t i;
  for (i = 0; i < m->nversions; i++)
    if (m->versions[i].version == num)
      return &m->versions[i];
  fail_msg("version %u is not in the description", num);
  return NULL;
}

/* Introspection names the signature of the current version (key id, trusted comment), and
 * each version's comment as its note: a mapped one's, the rollback copy's (the signature it
 * was verified with, kept beside it), and again after a rollback. */
static void t_signed_described(void **state) {
  fx *f = *state;
  hm_module_info m;
  char first[1100];
  load_signed(f, 1);
  snprintf(first, sizeof first, "%s", f->loaded_detail);
  assert_int_equal(hm_module_describe(f->mod, &m), 0);
  assert_string_equal(m.key_id, id_a);
  assert_non_null(strstr(m.trusted_comment, "file:sq.so"));
  assert_string_equal(m.trusted_comment, first);
  assert_string_equal(entry_of(&m, 1)->note, first);
  hm_module_info_clear(&m);
  assert_null(m.key_id);
  assert_null(m.trusted_comment);

  place_signed(hmt_mod("square_v2"), f->path, sec_a, "-t 'build 1234 from CI'");
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_true(hmt_wait_until(hmt_retired_zero, f->reg, DEADLINE));
  assert_int_equal(hm_module_describe(f->mod, &m), 0);
  assert_string_equal(m.key_id, id_a);
  assert_string_equal(m.trusted_comment, "build 1234 from CI");
  assert_string_equal(entry_of(&m, 2)->note, "build 1234 from CI");
  assert_int_equal(entry_of(&m, 1)->mapped, 0); /* the rollback copy */
  assert_string_equal(entry_of(&m, 1)->note, first);
  hm_module_info_clear(&m);

  assert_int_equal(hm_module_rollback(f->mod), 0);
  assert_int_equal(hm_module_describe(f->mod, &m), 0);
  assert_int_equal(m.version, 3);
  assert_string_equal(m.trusted_comment, first);
  assert_string_equal(entry_of(&m, 3)->note, first);
  hm_module_info_clear(&m);
}

/* Descriptions while two threads reload two signed builds (and roll back): the signature
 * is read under the registry's lock, as the rest, while reloads free the old ones. Each
 * picture's current version has one of the two comments, and its note is that comment. */
typedef struct sig_race {
  fx *f;
  char so[2][4200];
  int stop;
  long changes;
  pthread_mutex_t mu;
  char bad[1200]; /* the first unexpected result, for the main thread to report */
} sig_race;

static void *sig_race_reload(void *arg) {
  sig_race *r = arg;
  long i;
  for (i = 0; !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
    int rollback = i % 5 == 4;
    int rc = rollback ? hm_module_rollback(r->f->mod)
                      : hm_module_reload_from(r->f->mod, r->so[i % 2]);
    /* A rollback that a reload overtook says HM_EAGAIN, whatever it was reading then. */
    if (rc != 0 && rc != HM_ENOPREV && rc != HM_EAGAIN) {
      pthread_mutex_lock(&r->mu);
      if (r->bad[0] == '\0')
        snprintf(r->bad, sizeof r->bad, "%s: %s: %s", rollback ? "rollback" : "reload",
                 hm_err_name(rc), hm_errmsg());
      pthread_mutex_unlock(&r->mu);
    }
    __atomic_add_fetch(&r->changes, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

static void t_signed_described_under_reloads(void **state) {
  fx *f = *state;
  sig_race r;
  pthread_t th[2];
  long target = hmt_scaled(200), i, n = 0;
  memset(&r, 0, sizeof r);
  r.f = f;
  pthread_mutex_init(&r.mu, NULL);
  for (i = 0; i < 2; i++) {
    char comment[64];
    snprintf(r.so[i], sizeof r.so[i], "%s/r%ld", f->dir, i);
    assert_int_equal(mkdir(r.so[i], 0700), 0);
    strcat(r.so[i], "/sq.so");
    snprintf(comment, sizeof comment, "-t 'race build %ld'", i + 1);
    place_signed(hmt_mod(i == 0 ? "square_v1" : "square_v2"), r.so[i], sec_a, comment);
  }
  assert_int_equal(hm_module_load(f->reg, "sq", r.so[0], &f->mod), 0);
  for (i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, sig_race_reload, &r), 0);
  for (i = 0; __atomic_load_n(&r.changes, __ATOMIC_RELAXED) < target || i < 50; i++) {
    hm_module_info m;
    size_t k;
    assert_int_equal(hm_module_describe(f->mod, &m), 0);
    assert_string_equal(m.key_id, id_a);
    assert_true(strcmp(m.trusted_comment, "race build 1") == 0 ||
                strcmp(m.trusted_comment, "race build 2") == 0);
    for (k = 0; k < m.nversions; k++)
      if (m.versions[k].why & (1u << HM_MAPPED_CURRENT))
        assert_string_equal(m.versions[k].note, m.trusted_comment);
    hm_module_info_clear(&m);
    n++;
  }
  __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
  for (i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  pthread_mutex_destroy(&r.mu);
  printf("# %ld descriptions while %ld signed reloads and rollbacks ran\n", n, r.changes);
  if (r.bad[0] != '\0')
    fail_msg("%s", r.bad);
}

/* A key id with a zero in its top hex digit is printed without it, as minisign prints it:
 * made until one comes (one key in sixteen). */
static void t_key_id_short(void **state) {
  fx *f = *state;
  char pub[4200], sec[4200], want[17], id[17];
  const char *keys[] = {pub, NULL};
  int tries;
  snprintf(pub, sizeof pub, "%s/short.pub", f->dir);
  snprintf(sec, sizeof sec, "%s/short.sec", f->dir);
  for (tries = 0; tries < 1000; tries++) {
    unlink(pub);
    unlink(sec);
    keygen(pub, sec);
    key_id_of(pub, want);
    if (strlen(want) < 16)
      break;
  }
  assert_true(tries < 1000);
  assert_int_equal(hm_registry_set_trusted_keys(f->reg, keys), 0);
  place_signed(hmt_mod("square_v1"), f->path, sec, NULL);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  assert_int_equal(hm_module_build_signed(f->mod, id, NULL, 0), 1);
  assert_string_equal(id, want);
}

static void t_refusals(void **state) {
  fx *f = *state;
  char other[4200];
  size_t len;
  load_signed(f, 1);

  /* One byte of the module changed after signing. */
  place_signed(hmt_mod("square_v2"), f->path, sec_a, NULL);
  free(hmt_read(f->path, &len));
  flip_byte(f->path, len / 2);
  expect_untrusted(f, "bad signature: the build's bytes");

  /* Signed by a key that is not trusted. */
  place_signed(hmt_mod("square_v2"), f->path, sec_b, NULL);
  expect_untrusted(f, "unknown key id");

  /* A signature cut short. */
  place_signed(hmt_mod("square_v2"), f->path, sec_a, NULL);
  free(hmt_read(f->sig, &len));
  assert_int_equal(truncate(f->sig, (off_t)(len / 2)), 0);
  expect_untrusted(f, "malformed signature");

  /* A trusted comment changed after signing: the global signature does not match. */
  place_signed(hmt_mod("square_v2"), f->path, sec_a, NULL);
  replace_line(f->sig, 3, "trusted comment: timestamp:4000000000\tfile:sq.so\thashed");
  expect_untrusted(f, "bad signature: the trusted comment");

  /* No signature at all. */
  unlink(f->sig);
  expect_untrusted(f, "no signature file sq.so.minisig");

  /* A build signed for another module's file, put in place with its signature. */
  snprintf(other, sizeof other, "%s/other.so", f->dir);
  place_signed(hmt_mod("square_v2"), other, sec_a, NULL);
  assert_int_equal(rename(other, f->path), 0);
  snprintf(other, sizeof other, "%s/other.so.minisig", f->dir);
  assert_int_equal(rename(other, f->sig), 0);
  expect_untrusted(f, "name mismatch: it was signed as file:other.so");

  /* Each refusal said why in its event too, and the statistics count them. */
  assert_non_null(strstr(f->reject, "untrusted build: name mismatch"));
}

/* The timestamp never goes back: an older signed build put back is a replay. */
static void t_replay(void **state) {
  fx *f = *state;
  place_signed(hmt_mod("square_v1"), f->path, sec_a, "-t 'timestamp:1000\tfile:sq.so'");
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  /* Kept aside: the older build and its signature. */
  assert_int_equal(run("cp '%s' '%s.old' && cp '%s' '%s.old'", f->path, f->path, f->sig, f->sig),
                   0);
  place_signed(hmt_mod("square_v2"), f->path, sec_a, "-t 'timestamp:2000\tfile:sq.so'");
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(version_of(f), 2);
  assert_int_equal(run("cp '%s.old' '%s' && cp '%s.old' '%s'", f->path, f->path, f->sig, f->sig),
                   0);
  assert_int_equal(hm_module_reload(f->mod), HM_EUNTRUSTED);
  assert_non_null(strstr(hm_errmsg(), "replay: it was signed at 1970-01-01 00:16:40 UTC"));
  assert_int_equal(version_of(f), 2);
  /* Signed at the same second as the current one: not older. */
  place_signed(hmt_mod("square_v3"), f->path, sec_a, "-t 'timestamp:2000\tfile:sq.so'");
  assert_int_equal(hm_module_reload(f->mod), 0);
}

/* Both of minisign's formats: prehashed (its default, "ED") and legacy (-l, "Ed"). */
static void t_both_formats(void **state) {
  fx *f = *state;
  size_t len;
  unsigned char *sig;
  load_signed(f, 1);
  sig = hmt_read(f->sig, &len);
  assert_non_null(strstr((char *)sig, "\nRU")); /* "ED" in base64 */
  free(sig);
  place_signed(hmt_mod("square_v2"), f->path, sec_a, "-l");
  sig = hmt_read(f->sig, &len);
  assert_non_null(strstr((char *)sig, "\nRW")); /* "Ed" */
  free(sig);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(version_of(f), 2);
  /* And a changed byte is refused in that format too. */
  place_signed(hmt_mod("square_v3"), f->path, sec_a, "-l");
  flip_byte(f->path, 100);
  assert_int_equal(hm_module_reload(f->mod), HM_EUNTRUSTED);
  assert_int_equal(version_of(f), 2);
}

/* Code the signature does not cover: a library that is not a system one, $ORIGIN. */
static void t_unsigned_code(void **state) {
  fx *f = *state;
  load_signed(f, 1);
  place_signed(hmt_mod("lint_needed"), f->path, sec_a, NULL);
  expect_untrusted(f, "(shared-dependency), code its build signature does not cover");
  place_signed(hmt_mod("lint_origin"), f->path, sec_a, NULL);
  expect_untrusted(f, "(origin-runpath)");
}

/* Crash containment runs only verified bytes: an unsigned build that would crash in the
 * probe is refused before the probe starts; signed, the probe catches it. */
static void t_probe_after_check(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {pub_a, NULL};
  fx *f;
  (void)state;
  o.trusted_keys = keys;
  o.flags = HM_FLAG_PROBE;
  f = fx_new(&o);
  hmt_install(hmt_mod("probed_v2_ctorsegv"), f->path);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), HM_EUNTRUSTED);
  sign(f->path, sec_a, NULL, NULL);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), HM_ECRASHED);
  place_signed(hmt_mod("probed_v1"), f->path, sec_a, NULL);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  teardown((void **)&f);
}

/* ---- Rollback --------------------------------------------------------------------------- */

/* The path's signature belongs to build 2 by then: the kept copy of build 1 comes back with
 * its own, checked again over the copy's bytes. */
static void t_rollback_verified(void **state) {
  fx *f = *state;
  char kept[4200];
  load_signed(f, 1);
  place_signed(hmt_mod("square_v2"), f->path, sec_a,
               "-t 'timestamp:4000000000\tfile:sq.so\tv2'");
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_true(hmt_wait_until(hmt_retired_zero, f->reg, DEADLINE)); /* from the copy, then */
  assert_int_equal(hm_module_rollback(f->mod), 0);
  assert_int_equal(version_of(f), 1);
  assert_int_equal(count(f, &f->rolled_back), 1);
  assert_non_null(strstr(f->loaded_detail, "timestamp:")); /* build 1's comment */
  assert_null(strstr(f->loaded_detail, "v2"));

  /* Again, with the kept copy (build 2's now) changed behind hotmod's back: refused. */
  assert_int_equal(hm_module_reload(f->mod), 0); /* build 2 again: 1 is kept */
  assert_true(hmt_wait_until(hmt_retired_zero, f->reg, DEADLINE));
  snprintf(kept, sizeof kept, "%s/sq.3.so", hm_registry_dir(f->reg));
  assert_int_equal(access(kept, F_OK), 0);
  flip_byte(kept, 200);
  assert_int_equal(hm_module_rollback(f->mod), HM_EUNTRUSTED);
  assert_non_null(strstr(hm_errmsg(), "bad signature"));
  assert_int_equal(version_of(f), 2);
}

/* A build a snapshot still keeps loaded comes back as it is, after its signature is checked
 * again over its private copy. */
static void t_rollback_reused(void **state) {
  fx *f = *state;
  hm_snapshot *snap;
  load_signed(f, 1);
  assert_int_equal(hm_snapshot_acquire(f->reg, "sq:version", &snap), 0);
  place_signed(hmt_mod("square_v2"), f->path, sec_a, NULL);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(hm_module_rollback(f->mod), 0);
  assert_int_equal(version_of(f), 1);
  hm_snapshot_release(snap);
}

/* Only one version retired (and not unloaded yet): the one a snapshot pins. */
static int one_retired(void *reg) {
  hm_stats st;
  return hm_registry_stats(reg, &st) == 0 && st.retired == 1;
}

/* Group reloads and group rollbacks take signed builds only, as one module's do: a member
 * whose build is not signed refuses the group, nothing changes; a group rollback checks each
 * member's build again with the keys trusted now (sq2 comes back as it is, still loaded for
 * a snapshot; sq from its kept copy). */
static void t_group_signed(void **state) {
  fx *f = *state;
  const char *only_b[] = {pub_b, NULL}, *only_a[] = {pub_a, NULL};
  char path2[4200];
  hm_module *mods[2];
  hm_snapshot *snap;
  hm_live *l2;
  load_signed(f, 1);
  snprintf(path2, sizeof path2, "%s/sq2.so", f->dir);
  place_signed(hmt_mod("square_v1"), path2, sec_a, NULL);
  assert_int_equal(hm_module_load(f->reg, "sq2", path2, &mods[0]), 0);
  mods[1] = f->mod;
  assert_int_equal(hm_live_get(f->reg, "sq2:version", &l2), 0);
  assert_int_equal(hm_snapshot_acquire(f->reg, "sq2:version", &snap), 0);

  place_signed(hmt_mod("square_v2"), f->path, sec_a, NULL);
  hmt_install(hmt_mod("square_v2"), path2); /* its signature is build 1's */
  assert_int_equal(hm_registry_reload_group(f->reg, mods, NULL, 2), HM_EUNTRUSTED);
  assert_non_null(strstr(hm_errmsg(), "sq2"));
  assert_int_equal(version_of(f), 1);
  assert_int_equal(HM_LIVE_CALL(l2, ifn), 1);
  sign(path2, sec_a, NULL, NULL);
  assert_int_equal(hm_registry_reload_group(f->reg, mods, NULL, 2), 0);
  assert_int_equal(version_of(f), 2);
  assert_int_equal(HM_LIVE_CALL(l2, ifn), 2);
  assert_true(hmt_wait_until(one_retired, f->reg, DEADLINE)); /* sq's v1: from its copy */

  assert_int_equal(hm_registry_set_trusted_keys(f->reg, only_b), 0);
  assert_int_equal(hm_registry_rollback_group(f->reg, mods, 1), HM_EUNTRUSTED); /* reused */
  assert_non_null(strstr(hm_errmsg(), "unknown key id"));
  assert_int_equal(hm_registry_rollback_group(f->reg, mods, 2), HM_EUNTRUSTED);
  assert_non_null(strstr(hm_errmsg(), "unknown key id"));
  assert_int_equal(version_of(f), 2);
  assert_int_equal(HM_LIVE_CALL(l2, ifn), 2);
  assert_int_equal(hm_registry_set_trusted_keys(f->reg, only_a), 0);
  assert_int_equal(hm_registry_rollback_group(f->reg, mods, 2), 0);
  assert_int_equal(version_of(f), 1);
  assert_int_equal(HM_LIVE_CALL(l2, ifn), 1);
  assert_int_equal(count(f, &f->rolled_back), 2);
  hm_snapshot_release(snap);
}

/* ---- Keys ------------------------------------------------------------------------------- */

static void t_rotation(void **state) {
  fx *f = *state;
  const char *only_b[] = {pub_b, NULL}, *empty[] = {NULL};
  char text[512];
  size_t len;
  unsigned char *pub;
  load_signed(f, 1);
  place_signed(hmt_mod("square_v2"), f->path, sec_a, NULL);
  assert_int_equal(hm_module_reload(f->mod), 0);

  /* Key A goes, key B comes (as the text of its file this time). */
  pub = hmt_read(pub_b, &len);
  snprintf(text, sizeof text, "%s", (char *)pub);
  free(pub);
  only_b[0] = text;
  assert_int_equal(hm_registry_set_trusted_keys(f->reg, only_b), 0);
  /* The version A signed serves on ... */
  assert_int_equal(version_of(f), 2);
  /* ... but A's builds load no more, rollbacks to them included; B's do. */
  place_signed(hmt_mod("square_v3"), f->path, sec_a, NULL);
  assert_int_equal(hm_module_reload(f->mod), HM_EUNTRUSTED);
  assert_non_null(strstr(hm_errmsg(), "unknown key id"));
  assert_int_equal(hm_module_rollback(f->mod), HM_EUNTRUSTED);
  assert_int_equal(version_of(f), 2);
  place_signed(hmt_mod("square_v3"), f->path, sec_b, NULL);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(version_of(f), 3);

  /* Signed builds cannot be turned off, and a bad set changes nothing. */
  assert_int_equal(hm_registry_set_trusted_keys(f->reg, NULL), HM_EINVAL);
  assert_int_equal(hm_registry_set_trusted_keys(f->reg, empty), HM_EINVAL);
  only_b[0] = "RWnot-a-key";
  assert_int_equal(hm_registry_set_trusted_keys(f->reg, only_b), HM_ENOENT);
  place_signed(hmt_mod("square_v2"), f->path, sec_b, NULL);
  assert_int_equal(hm_module_reload(f->mod), 0);
}

/* A registry without keys starts requiring signatures once given some. */
static void t_keys_added(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {pub_a, NULL};
  fx *f = fx_new(&o);
  (void)state;
  hmt_install(hmt_mod("square_v1"), f->path);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  assert_int_equal(hm_module_build_signed(f->mod, NULL, NULL, 0), 0);
  {
    /* Loaded without keys: no signature to describe. */
    hm_module_info m;
    assert_int_equal(hm_module_describe(f->mod, &m), 0);
    assert_string_equal(m.key_id, "");
    assert_string_equal(m.trusted_comment, "");
    assert_string_equal(m.versions[0].note, "");
    hm_module_info_clear(&m);
  }
  assert_int_equal(hm_registry_set_trusted_keys(f->reg, keys), 0);
  hmt_install(hmt_mod("square_v2"), f->path);
  assert_int_equal(hm_module_reload(f->mod), HM_EUNTRUSTED);
  /* Nor can the unsigned build before it come back. */
  assert_int_equal(version_of(f), 1);
  sign(f->path, sec_a, NULL, NULL);
  assert_int_equal(hm_module_reload(f->mod), 0);
  assert_int_equal(hm_module_rollback(f->mod), HM_EUNTRUSTED);
  assert_non_null(strstr(hm_errmsg(), "loaded before trusted keys were set"));
  teardown((void **)&f);
}

/* HOTMOD_TRUSTED_KEYS, for hosts that do not change their code: its keys when the host set
 * none; never added to a host's own. */
static void t_environment(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {pub_b, NULL};
  hm_registry *reg = NULL;
  char both[9000];
  fx *f;
  (void)state;
  snprintf(both, sizeof both, "%s:%s", pub_b, pub_a);
  assert_int_equal(setenv("HOTMOD_TRUSTED_KEYS", both, 1), 0);
  f = fx_new(&o);
  hmt_install(hmt_mod("square_v1"), f->path);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), HM_EUNTRUSTED);
  sign(f->path, sec_a, NULL, NULL);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), 0);
  teardown((void **)&f);

  /* The host's own keys win: A's build is refused by a registry trusting B alone. */
  o.trusted_keys = keys;
  f = fx_new(&o);
  place_signed(hmt_mod("square_v1"), f->path, sec_a, NULL);
  assert_int_equal(hm_module_load(f->reg, "sq", f->path, &f->mod), HM_EUNTRUSTED);
  assert_non_null(strstr(hm_errmsg(), "unknown key id"));
  teardown((void **)&f);

  /* Set but empty, or naming a missing file: an error, never "no keys". */
  o.trusted_keys = NULL;
  assert_int_equal(setenv("HOTMOD_TRUSTED_KEYS", "", 1), 0);
  assert_int_equal(hm_registry_new(&reg, &o), HM_EINVAL);
  assert_non_null(strstr(hm_errmsg(), "HOTMOD_TRUSTED_KEYS"));
  assert_int_equal(setenv("HOTMOD_TRUSTED_KEYS", "/nonexistent/key.pub", 1), 0);
  assert_int_equal(hm_registry_new(&reg, &o), HM_ENOENT);
  assert_null(reg);
  unsetenv("HOTMOD_TRUSTED_KEYS");
}

/* Key files pass the trust rules of modules, which no flag waives for them. */
static void t_key_file_trust(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {NULL, NULL};
  char *dir = hmt_tmpdir(), path[4200];
  hm_registry *reg = NULL;
  (void)state;
  snprintf(path, sizeof path, "%s/k.pub", dir);
  hmt_install(pub_a, path);
  keys[0] = path;
  o.trusted_keys = keys;
  o.flags = HM_FLAG_QUIET | HM_FLAG_ALLOW_WRITABLE;
  assert_int_equal(chmod(path, 0646), 0);
  assert_int_equal(hm_registry_new(&reg, &o), HM_EACCES);
  assert_non_null(strstr(hm_errmsg(), "not trusting the key file"));
  assert_int_equal(chmod(path, 0644), 0);
  assert_int_equal(chmod(dir, 0777), 0);
  assert_int_equal(hm_registry_new(&reg, &o), HM_EACCES);
  assert_int_equal(chmod(dir, 0700), 0);
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  hm_registry_free(reg);
  /* Key text that is not a key. */
  keys[0] = "untrusted comment: x\nRWQnot-base64\n";
  assert_int_equal(hm_registry_new(&reg, &o), HM_EINVAL);
  assert_non_null(strstr(hm_errmsg(), "not a minisign public key"));
  hmt_rm_rf(dir);
  free(dir);
}

/* ---- The watcher ------------------------------------------------------------------------ */

typedef struct want {
  fx *f;
  int v;
} want;

static int live_is(void *arg) {
  want *w = arg;
  return version_of(w->f) == w->v;
}

static int rejected_once_more(void *arg) {
  want *w = arg;
  return count(w->f, &w->f->rejected) > w->v;
}

static void wait_version(fx *f, int v) {
  want w = {f, v};
  if (!hmt_wait_until(live_is, &w, DEADLINE))
    fail_msg("version %d never became current (it is %d; last refusal: %s)", v, version_of(f),
             f->reject);
}

/* A build with its signature made beside it in a scratch directory (named sq.so, as it is
 * deployed), not yet in place. */
static void build_signed(fx *f, int v, const char *sec, char *so, char *sig, size_t n) {
  char name[32];
  snprintf(so, n, "%s/build/sq.so", f->dir);
  snprintf(sig, n, "%s/build/sq.so.minisig", f->dir);
  mkdir(hmt_path(f->dir, "build"), 0700);
  snprintf(name, sizeof name, "square_v%d", v);
  hmt_install(hmt_mod(name), so);
  sign(so, sec, NULL, NULL);
}

/* Make the path's signature (build 1's) look as old as it is. */
static void age_signature(fx *f) {
  struct timespec t[2] = {{1000000000, 0}, {1000000000, 0}};
  assert_int_equal(utimensat(AT_FDCWD, f->sig, t, 0), 0);
}

static fx *watched(unsigned wait_ms) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {pub_a, NULL};
  fx *f;
  o.trusted_keys = keys;
  o.signed_wait_ms = wait_ms;
  f = fx_new(&o);
  load_signed(f, 1);
  age_signature(f);
  assert_int_equal(hm_watch_start(f->reg), 0);
  return f;
}

/* The deploy copies the module, and its signature 300 ms later: it loads once that comes. */
static void t_watch_signature_later(void **state) {
  fx *f = watched(600000);
  char so[4200], sig[4200];
  (void)state;
  build_signed(f, 2, sec_a, so, sig, sizeof so);
  hmt_install(so, f->path);
  usleep(300000);
  assert_int_equal(version_of(f), 1);
  hmt_install(sig, f->sig);
  wait_version(f, 2);
  assert_int_equal(count(f, &f->rejected), 0);
  teardown((void **)&f);
}

/* Deploy build 2 signed with `sec` (its signature too when `with_sig`; it is made in `sig`
 * either way) and wait for the watcher to refuse it, saying `why`; build 1 serves on. */
static void watch_refuses(fx *f, const char *sec, int with_sig, const char *why, char *sig) {
  char so[4200];
  want w = {f, count(f, &f->rejected)};
  build_signed(f, 2, sec, so, sig, sizeof so);
  hmt_install(so, f->path);
  if (with_sig)
    hmt_install(sig, f->sig);
  assert_true(hmt_wait_until(rejected_once_more, &w, DEADLINE));
  assert_int_equal(f->reject_err, HM_EUNTRUSTED);
  assert_non_null(strstr(f->reject, why));
  assert_int_equal(version_of(f), 1);
}

/* A signature that never comes (the previous build's stays) is refused after the wait; the
 * refusal is about that pair, so the right signature arriving later still loads it. */
static void t_watch_signature_stale(void **state) {
  fx *f = watched(500);
  char sig[4200];
  (void)state;
  watch_refuses(f, sec_a, 0, "is older than the build and does not verify it", sig);
  hmt_install(sig, f->sig);
  wait_version(f, 2);
  teardown((void **)&f);
}

/* A finished signature newer than the build that does not verify it is refused at once (the
 * wait here is ten minutes). */
static void t_watch_bad_signature_at_once(void **state) {
  fx *f = watched(600000);
  char sig[4200];
  (void)state;
  watch_refuses(f, sec_b, 1, "unknown key id", sig);
  teardown((void **)&f);
}

typedef struct polled {
  fx *f;
  int v, published;
} polled;

static int poll_until(void *arg) {
  polled *p = arg;
  int n = hm_registry_poll(p->f->reg);
  assert_true(n >= 0);
  p->published += n;
  return version_of(p->f) == p->v;
}

/* Queued mode: the watcher prepares a signed build on its thread (checked there, so an
 * unsigned one is refused there) and the poll publishes it with its trusted comment. */
static void t_watch_queued(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {pub_a, NULL};
  char so[4200], sig[4200];
  polled p;
  want w;
  fx *f;
  (void)state;
  o.trusted_keys = keys;
  o.reload_mode = HM_RELOAD_QUEUED;
  o.signed_wait_ms = 200;
  f = fx_new(&o);
  load_signed(f, 1);
  assert_int_equal(hm_watch_start(f->reg), 0);
  w.f = f;
  w.v = 0;
  hmt_install(hmt_mod("square_v2"), f->path); /* and no signature of its own */
  assert_true(hmt_wait_until(rejected_once_more, &w, DEADLINE));
  assert_int_equal(f->reject_err, HM_EUNTRUSTED);
  assert_int_equal(hm_registry_poll(f->reg), 0);
  build_signed(f, 3, sec_a, so, sig, sizeof so);
  hmt_install(so, f->path);
  hmt_install(sig, f->sig);
  p.f = f;
  p.v = 3;
  p.published = 0;
  assert_true(hmt_wait_until(poll_until, &p, DEADLINE));
  assert_int_equal(p.published, 1);
  assert_non_null(strstr(f->loaded_detail, "file:sq.so"));
  teardown((void **)&f);
}

/* current -> releases/N, each release with its module and signature: a flip is a new build,
 * verified with that release's signature. */
static void t_watch_release_flip(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {pub_a, NULL};
  fx *f;
  char rel[4200], cur[4200], tmp[4200], mod[4400];
  int n;
  (void)state;
  o.trusted_keys = keys;
  o.signed_wait_ms = 600000;
  f = fx_new(&o);
  for (n = 1; n <= 3; n++) {
    char name[32];
    snprintf(rel, sizeof rel, "%s/releases/%d", f->dir, n);
    assert_int_equal(run("mkdir -p '%s'", rel), 0);
    snprintf(name, sizeof name, "square_v%d", n);
    place_signed(hmt_mod(name), hmt_path(rel, "sq.so"), sec_a, NULL);
  }
  snprintf(cur, sizeof cur, "%s/current", f->dir);
  assert_int_equal(symlink("releases/1", cur), 0);
  snprintf(mod, sizeof mod, "%s/sq.so", cur);
  assert_int_equal(hm_module_load(f->reg, "sq", mod, &f->mod), 0);
  assert_int_equal(hm_watch_start(f->reg), 0);
  for (n = 2; n <= 3; n++) {
    /* ln -sfn: a new link renamed over the old one. */
    snprintf(tmp, sizeof tmp, "%s/current.tmp", f->dir);
    snprintf(rel, sizeof rel, "releases/%d", n);
    assert_int_equal(symlink(rel, tmp), 0);
    assert_int_equal(rename(tmp, cur), 0);
    wait_version(f, n);
  }
  assert_int_equal(count(f, &f->rejected), 0);
  teardown((void **)&f);
}

/* ---- hotmod-check --verify -------------------------------------------------------------- */

static void t_check_verify(void **state) {
  fx *f = *state;
  const char *check = HM_TEST_CHECK;
  char other[4200];
  place_signed(hmt_mod("square_v1"), f->path, sec_a, NULL);
  assert_int_equal(run("'%s' --verify '%s' '%s' >/dev/null", check, pub_a, f->path), 0);
  assert_int_equal(run("'%s' --verify '%s' '%s' 2>/dev/null", check, pub_b, f->path), 1);
  snprintf(other, sizeof other, "%s/other.so", f->dir);
  assert_int_equal(run("cp '%s' '%s' && cp '%s' '%s.minisig'", f->path, other, f->sig, other), 0);
  assert_int_equal(run("'%s' --verify '%s' '%s' 2>/dev/null", check, pub_a, other), 1);
  unlink(f->sig);
  assert_int_equal(run("'%s' --verify '%s' '%s' 2>/dev/null", check, pub_a, f->path), 1);
  assert_int_equal(run("'%s' --verify '%s' '%s' 2>/dev/null", check, pub_a,
                       hmt_path(f->dir, "missing.so")), 2);
  assert_int_equal(run("'%s' --verify '%s' '%s' 2>/dev/null", check, f->path, other), 2);
}

#endif /* HM_TEST_HAVE_SODIUM */

/* Without libsodium: asking for signed builds fails, with a message that says why, and
 * nothing is made. (With it: a registry with a key is made.) */
static void t_without_sodium(void **state) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {"RWQ5lqUnYspuHXSZpE/PYPxjmIcZmq4cPv+TLNasVZ2y4ll5X8MA5uuo", NULL};
  hm_registry *reg = NULL;
  (void)state;
  o.flags = HM_FLAG_QUIET;
  o.trusted_keys = keys;
#ifdef HM_TEST_HAVE_SODIUM
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  assert_int_equal(hm_registry_set_trusted_keys(reg, keys), 0);
  hm_registry_free(reg);
#else
  assert_int_equal(hm_registry_new(&reg, &o), -ENOTSUP);
  assert_null(reg);
  assert_non_null(strstr(hm_errmsg(), "built without libsodium"));
  o.trusted_keys = NULL;
  assert_int_equal(setenv("HOTMOD_TRUSTED_KEYS", "/dev/null", 1), 0);
  assert_int_equal(hm_registry_new(&reg, &o), -ENOTSUP);
  assert_non_null(strstr(hm_errmsg(), "HOTMOD_TRUSTED_KEYS"));
  unsetenv("HOTMOD_TRUSTED_KEYS");
  assert_int_equal(hm_registry_new(&reg, &o), 0);
  assert_int_equal(hm_registry_set_trusted_keys(reg, keys), -ENOTSUP);
  hm_registry_free(reg);
#endif
  (void)run;
}

int main(void) {
  const struct CMUnitTest tests[] = {
#ifdef HM_TEST_HAVE_SODIUM
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
      T(t_signed_loads),
      T(t_signed_described),
      T(t_signed_described_under_reloads),
      T(t_key_id_short),
      T(t_refusals),
      T(t_replay),
      T(t_both_formats),
      T(t_unsigned_code),
      cmocka_unit_test(t_probe_after_check),
      T(t_rollback_verified),
      T(t_rollback_reused),
      T(t_group_signed),
      T(t_rotation),
      cmocka_unit_test(t_keys_added),
      cmocka_unit_test(t_environment),
      cmocka_unit_test(t_key_file_trust),
      cmocka_unit_test(t_watch_signature_later),
      cmocka_unit_test(t_watch_signature_stale),
      cmocka_unit_test(t_watch_bad_signature_at_once),
      cmocka_unit_test(t_watch_queued),
      cmocka_unit_test(t_watch_release_flip),
      T(t_check_verify),
#endif
      cmocka_unit_test(t_without_sodium),
  };
#ifdef HM_TEST_HAVE_SODIUM
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
#else
  return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
