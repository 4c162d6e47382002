/*
 * Signed builds, the registry's side: its trusted keys (from the options, from
 * HOTMOD_TRUSTED_KEYS, or replaced by hm_registry_set_trusted_keys), and the check every load
 * makes with them: a build signature by one of the keys over the very bytes that were read,
 * then the module's policies on the signed trusted comment (no replay, the file's name). What
 * a version was verified with stays with it (hm__signed), for the host to see and for
 * rollback to check again.
 *
 * Layer 7 (docs/architecture.md): calls file.c, minisig.c and the leaves.
 */
#include "reload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* More keys than this in one set is a mistake (each load looks for its key among them). */
#define HM__MAX_TRUSTED_KEYS 256

/* A set of trusted keys: replaced whole, and kept alive by the loads that use it. */
struct hm__keyset {
  int refs; /* atomic: the registry's, and each load under way that took it */
  size_t n;
  hm__pubkey keys[];
};

static void keyset_put(const hm__allocator *a, hm__keyset *k) {
  if (k != NULL && __atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL) == 0)
    hm__free(a, k);
}

/* The registry's set, with a reference for the caller; NULL when it has none. */
static hm__keyset *keyset_get(hm_registry *reg) {
  hm__keyset *k;
  pthread_mutex_lock(&reg->lock);
  k = reg->keys;
  if (k != NULL)
    __atomic_add_fetch(&k->refs, 1, __ATOMIC_ACQ_REL);
  pthread_mutex_unlock(&reg->lock);
  return k;
}

/* A list entry that is a key itself rather than a file's path: the text of a minisign.pub
 * file, or its key line ("RW" and 54 more base64 characters). */
static int is_key_text(const char *s) {
  size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=");
  return strncmp(s, "untrusted comment:", 18) == 0 ||
         (strncmp(s, "RW", 2) == 0 && n == 56 && strspn(s + n, "\r\n") == strlen(s + n));
}

/* One entry of a key list (`what` names the list in messages) into *out. */
static int key_from(const hm__allocator *a, const char *entry, const char *what, size_t i,
                    int paths_only, hm__pubkey *out) {
  char why[512], *text = NULL;
  size_t len;
  int rc;
  if (!paths_only && is_key_text(entry)) {
    if ((rc = hm__minisign_key(entry, strlen(entry), out, why, sizeof why)) != 0)
      return hm__fail(rc, "%s, key %zu: %s", what, i + 1, why);
    return 0;
  }
  if (entry[0] == '\0')
    return hm__fail(HM_EINVAL, "%s, key %zu: an empty path", what, i + 1);
  if ((rc = hm__keyfile_read(a, entry, &text, &len)) != 0) {
    if (rc == HM_ENOENT && !paths_only) {
      snprintf(why, sizeof why, "%s", hm_errmsg()); /* hm__fail writes where it points */
      hm__fail(rc, "%s, key %zu: %s (an entry is the text of a minisign public key, or the "
                   "path of its file)", what, i + 1, why);
    }
    return rc;
  }
  rc = hm__minisign_key(text, len, out, why, sizeof why);
  hm__free(a, text);
  return rc != 0 ? hm__fail(rc, "%s, key file %s: %s", what, entry, why) : 0;
}

/* A new set from `list` (n entries), each key text or a key file's path (paths only for the
 * environment's). */
static int keyset_make(const hm__allocator *a, const char *const *list, size_t n,
                       const char *what, int paths_only, hm__keyset **out) {
  hm__keyset *k;
  size_t i;
  int rc;
  *out = NULL;
  if (!hm__minisig_available())
    return hm__fail(-ENOTSUP, "%s: this hotmod was built without libsodium, so it cannot "
                              "check build signatures; refusing to run without the check "
                              "(rebuild hotmod with libsodium-dev installed)", what);
  if (n == 0 || n > HM__MAX_TRUSTED_KEYS)
    return hm__fail(HM_EINVAL, "%s: %zu keys (1 to %d are taken%s)", what, n,
                    HM__MAX_TRUSTED_KEYS,
                    n == 0 ? "; an empty list does not turn signed builds off" : "");
  k = hm__malloc(a, sizeof *k + n * sizeof k->keys[0]);
  if (k == NULL)
    return hm__fail(HM_ENOMEM, "out of memory reading the trusted keys");
  k->refs = 1;
  k->n = n;
  for (i = 0; i < n; i++) {
    if ((rc = key_from(a, list[i], what, i, paths_only, &k->keys[i])) != 0) {
      hm__free(a, k);
      return rc;
    }
  }
  *out = k;
  return 0;
}

static size_t list_len(const char *const *list) {
  size_t n = 0;
  while (list[n] != NULL)
    n++;
  return n;
}

/* HOTMOD_TRUSTED_KEYS=FILE[:FILE...]: paths only, split at ':' into a list. */
static int keys_from_env(const hm__allocator *a, const char *env, hm__keyset **out) {
  size_t n = 1, i = 0, len = strlen(env);
  char *copy = hm__malloc(a, len + 1), *p;
  const char **list;
  int rc;
  for (p = (char *)env; *p; p++)
    n += *p == ':';
  list = hm__calloc(a, n + 1, sizeof *list);
  if (copy == NULL || list == NULL) {
    hm__free(a, copy);
    hm__free(a, list);
    return hm__fail(HM_ENOMEM, "out of memory reading HOTMOD_TRUSTED_KEYS");
  }
  memcpy(copy, env, len + 1);
  for (p = copy; p != NULL; i++) {
    char *colon = strchr(p, ':');
    if (colon != NULL)
      *colon = '\0';
    list[i] = p;
    p = colon != NULL ? colon + 1 : NULL;
  }
  rc = keyset_make(a, list, n, "HOTMOD_TRUSTED_KEYS", 1, out);
  hm__free(a, list);
  hm__free(a, copy);
  return rc;
}

int hm__keys_load(const hm__allocator *a, const char *const *opt, hm__keyset **out) {
  const char *env;
  *out = NULL;
  if (opt != NULL)
    return keyset_make(a, opt, list_len(opt), "hm_registry_options.trusted_keys", 0, out);
  /* Only for a host that set no keys of its own: the environment adds none to those. */
  env = secure_getenv("HOTMOD_TRUSTED_KEYS");
  return env != NULL ? keys_from_env(a, env, out) : 0;
}

void hm__keys_free(hm_registry *reg) {
  keyset_put(&reg->a, reg->keys);
  reg->keys = NULL;
}

int hm_registry_set_trusted_keys(hm_registry *reg, const char *const *keys) {
  hm__keyset *k, *old;
  int rc;
  if (reg == NULL || keys == NULL)
    return hm__fail(HM_EINVAL, "hm_registry_set_trusted_keys: NULL %s (signed builds cannot "
                               "be turned off once on: make a new registry)",
                    reg == NULL ? "registry" : "key list");
  rc = keyset_make(&reg->a, keys, list_len(keys), "hm_registry_set_trusted_keys", 0, &k);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&reg->lock);
  old = reg->keys;
  reg->keys = k;
  __atomic_store_n(&reg->signing, 1, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&reg->lock);
  keyset_put(&reg->a, old);
  return 0;
}

/* ---- The check -------------------------------------------------------------------------- */

static int untrusted(const char *path, const char *fmt, const char *a1, const char *a2) {
  char why[1024];
  snprintf(why, sizeof why, fmt, a1, a2);
  return hm__fail(HM_EUNTRUSTED, "%s: untrusted build: %s", path, why);
}

static const char *base_name(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash != NULL ? slash + 1 : path;
}

/* A timestamp for messages, as minisign's are: seconds since 1970, UTC. */
static void when(long long t, char *out, size_t n) {
  time_t tt = (time_t)t;
  struct tm tm;
  if (gmtime_r(&tt, &tm) == NULL || strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    snprintf(out, n, "%lld", t);
}

/* The signature file as read, its bytes parsed and verified over buf[0..len) with `k`; the
 * index of the key, or the error with the detail recorded for `path`. */
static int verify(const hm__keyset *k, const hm__sigfile *sf, const unsigned char *buf,
                  size_t len, const char *path, hm__minisig *ms) {
  char why[512], sname[300];
  int rc;
  snprintf(sname, sizeof sname, "%s.minisig", sf->name[0] ? sf->name : base_name(path));
  if (sf->rc == HM_ENOENT || sf->rc == -ENAMETOOLONG)
    return untrusted(path, "no signature file %s beside it (with trusted keys set, every build "
                           "must be signed: minisign -Sm %s)", sname, base_name(path));
  if (sf->rc == -EINVAL || sf->rc == -EFBIG)
    return untrusted(path, "malformed signature: %s is %s", sname,
                     sf->rc == -EINVAL ? "not a regular file" : "too large for one");
  if (sf->rc != 0)
    return hm__fail(sf->rc, "%s: cannot read its signature file %s: %s", path, sname,
                    hm_strerror(sf->rc));
  if ((rc = hm__minisig_parse(sf->buf, sf->len, ms, why, sizeof why)) != 0 ||
      (rc = hm__minisig_verify(ms, k->keys, k->n, buf, len, why, sizeof why)) < 0)
    return rc == HM_EUNTRUSTED ? untrusted(path, "%s (%s)", why, sname)
                               : hm__fail(rc, "%s: %s", path, why);
  return rc;
}

/* A number of at most 18 digits from a trusted comment's field, or -1. */
static long long number(const char *s, size_t n) {
  long long v = 0;
  size_t i;
  if (n == 0 || n > 18)
    return -1;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

/* The module's policies on a verified trusted comment (see hotmod.h, "Signed builds"). *ts
 * gets its timestamp, -1 when it has none. */
static int policies(hm__job *j, const hm__minisig *ms, const hm__sigfile *sf, long long *ts) {
  hm_registry *reg = j->reg;
  const char *file = NULL, *stamp = NULL, *name = base_name(j->path);
  size_t fn = 0, sn = 0;
  unsigned flags = reg->signed_flags;
  long long newest;
  char a1[300], a2[300];
  int has_file = hm__minisig_field(ms->comment, ms->comment_len, "file:", &file, &fn) == 0;
  int has_stamp = hm__minisig_field(ms->comment, ms->comment_len, "timestamp:", &stamp, &sn) == 0;
  *ts = has_stamp ? number(stamp, sn) : -1;
  if (j->flags & HM__RELOAD_ROLLBACK)
    return 0; /* an explicit rollback goes back on purpose, under its old name */
  if ((flags & HM_SIGNED_REQUIRE_FIELDS) && (!has_file || *ts < 0))
    return untrusted(j->path, "its trusted comment has no %s field, and the registry requires "
                              "it (HM_SIGNED_REQUIRE_FIELDS)%s",
                     !has_file ? "file:" : "timestamp:", "");
  if (has_file && !(flags & HM_SIGNED_ALLOW_RENAME) &&
      !(fn == strlen(name) && memcmp(file, name, fn) == 0) &&
      !(fn == strlen(sf->name) && memcmp(file, sf->name, fn) == 0)) {
    snprintf(a1, sizeof a1, "%.*s", (int)(fn < 255 ? fn : 255), file);
    return untrusted(j->path, "name mismatch: it was signed as file:%s, but is loaded as %s "
                              "(a build signed for another module?)", a1, name);
  }
  if (*ts < 0 || (flags & HM_SIGNED_ALLOW_REPLAY))
    return 0;
  pthread_mutex_lock(&reg->lock);
  newest = j->mod->signed_ts;
  pthread_mutex_unlock(&reg->lock);
  if (*ts < newest) {
    when(*ts, a1, sizeof a1);
    when(newest, a2, sizeof a2);
    return hm__fail(HM_EUNTRUSTED,
                    "%s: untrusted build: replay: it was signed at %s, before the build module "
                    "%s already loaded (signed at %s): an older build put back?",
                    j->path, a1, j->mod->name, a2);
  }
  return 0;
}

static hm__signed *signed_new(const hm__allocator *a, const hm__sigfile *sf,
                              const hm__minisig *ms, long long ts) {
  hm__signed *s = hm__malloc(a, sizeof *s + sf->len + 1 + ms->comment_len + 1);
  if (s == NULL)
    return NULL;
  s->timestamp = ts;
  memcpy(s->key_id, ms->key_id, sizeof s->key_id);
  s->raw_len = sf->len;
  memcpy(s->raw, sf->buf, sf->len);
  s->raw[sf->len] = '\0';
  s->comment = (char *)s->raw + sf->len + 1;
  memcpy(s->comment, ms->comment, ms->comment_len);
  s->comment[ms->comment_len] = '\0';
  return s;
}

int hm__signed_check(hm__job *j, const hm__file *f, unsigned *untrusted_lint,
                     hm__signed **out) {
  hm__keyset *k = keyset_get(j->reg);
  hm__minisig ms;
  long long ts = -1;
  int rc;
  *out = NULL;
  *untrusted_lint = 0;
  if (k == NULL)
    return 0;
  if (!f->sig.asked) {
    /* Read before keys were set: the signature was not looked for. Not final: read again. */
    rc = hm__fail(-ESTALE, "%s: trusted keys were set while it was being read; read again",
                  j->path);
  } else if ((rc = verify(k, &f->sig, f->buf, f->len, j->path, &ms)) >= 0 &&
             (rc = policies(j, &ms, &f->sig, &ts)) == 0) {
    /* Libraries it needs that are not system ones, and $ORIGIN, bring code the signature
     * does not cover: the loader refuses them. */
    *untrusted_lint = HM__LINT_NEEDED | HM__LINT_ORIGIN;
    if ((*out = signed_new(&j->reg->a, &f->sig, &ms, ts)) == NULL)
      rc = hm__fail(HM_ENOMEM, "out of memory loading %s", j->path);
  }
  keyset_put(&j->reg->a, k);
  return rc;
}

int hm__signed_verifies(hm_registry *reg, const hm__file *f) {
  hm__keyset *k = keyset_get(reg);
  hm__minisig ms;
  char why[512];
  int ok = k != NULL && f->sig.rc == 0 &&
           hm__minisig_parse(f->sig.buf, f->sig.len, &ms, why, sizeof why) == 0 &&
           hm__minisig_verify(&ms, k->keys, k->n, f->buf, f->len, why, sizeof why) >= 0;
  keyset_put(&reg->a, k);
  return ok;
}

int hm__signed_recheck(hm_module *mod, unsigned build, const char *copy, const hm__signed *s,
                       const char *path) {
  hm_registry *reg = mod->reg;
  hm__keyset *k = keyset_get(reg);
  hm__file f;
  hm__minisig ms;
  int rc = 0;
  if (k == NULL)
    return 0;
  memset(&f, 0, sizeof f);
  if (s == NULL)
    rc = hm__fail(HM_EUNTRUSTED, "%s: untrusted build: no signature file: build %u of module "
                                 "%s was loaded before trusted keys were set",
                  path, build, mod->name);
  else if (copy != NULL)
    rc = hm__file_read(&reg->a, copy, HM__READ_ALLOW_WRITABLE, &f, NULL);
  if (rc == 0 && copy != NULL) {
    f.sig.buf = (unsigned char *)s->raw;
    f.sig.len = s->raw_len;
    rc = verify(k, &f.sig, f.buf, f.len, path, &ms);
    f.sig.buf = NULL;
  }
  hm__file_release(&reg->a, &f);
  keyset_put(&reg->a, k);
  return rc < 0 ? rc : 0;
}

hm__signed *hm__signed_dup(const hm__allocator *a, const hm__signed *s) {
  hm__sigfile sf;
  hm__minisig ms;
  if (s == NULL)
    return NULL;
  memset(&sf, 0, sizeof sf);
  memset(&ms, 0, sizeof ms);
  sf.buf = (unsigned char *)s->raw;
  sf.len = s->raw_len;
  memcpy(ms.key_id, s->key_id, sizeof ms.key_id);
  ms.comment = s->comment;
  ms.comment_len = strlen(s->comment);
  return signed_new(a, &sf, &ms, s->timestamp);
}

void hm__signed_published(hm_module *mod, const hm__version *v) {
  if (v->sig != NULL && v->sig->timestamp > mod->signed_ts)
    mod->signed_ts = v->sig->timestamp;
}

int hm_module_build_signed(hm_module *mod, char *key_id, char *comment, size_t size) {
  hm_registry *reg;
  int rc;
  if (mod == NULL)
    return hm__fail(HM_EINVAL, "hm_module_build_signed: NULL module");
  reg = mod->reg;
  pthread_mutex_lock(&reg->lock);
  if (mod->cur == NULL) {
    rc = hm__fail(HM_ENOMOD, "module %s is not loaded", mod->name);
  } else if (mod->cur->sig == NULL) {
    rc = 0;
  } else {
    if (key_id != NULL)
      hm__key_id_hex(mod->cur->sig->key_id, key_id);
    if (comment != NULL && size != 0)
      snprintf(comment, size, "%s", mod->cur->sig->comment);
    rc = 1;
  }
  pthread_mutex_unlock(&reg->lock);
  return rc;
}
