/*
 * minisign's formats, parsed and verified over bytes: a public key (minisign.pub), a build
 * signature (the .minisig file) and the build's bytes. Pure: no I/O, no allocation, no
 * registry. libsodium does the cryptography (Ed25519, BLAKE2b-512) and the base64; nothing
 * of it is written here. Without libsodium every entry point says so (-ENOTSUP).
 *
 * Layer 1 (docs/architecture.md): calls only the leaves (and libsodium).
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#ifdef HM__HAVE_SODIUM
#include <sodium.h>
#endif

/* The parts of minisign's files: a two-letter algorithm, the key id, then the key or the
 * signature. "Ed" signs the bytes themselves (legacy); "ED" signs their BLAKE2b-512 hash
 * (minisign's default since 0.8: "prehashed"). Public keys always say "Ed". */
#define ALG_LEN 2
#define PK_LEN 32
#define SIG_LEN 64
#define HASH_LEN 64
#define KEY_BLOB (ALG_LEN + HM__KEY_ID_LEN + PK_LEN)
#define SIG_BLOB (ALG_LEN + HM__KEY_ID_LEN + SIG_LEN)

static const char untrusted_tag[] = "untrusted comment: ";
static const char trusted_tag[] = "trusted comment: ";

int hm__minisig_available(void) {
#ifdef HM__HAVE_SODIUM
  /* Thread-safe, and cheap once done; -1 only when the library cannot start at all. */
  return sodium_init() >= 0;
#else
  return 0;
#endif
}

void hm__key_id_hex(const unsigned char id[HM__KEY_ID_LEN], char out[17]) {
  /* As minisign prints it (in minisign.pub's comment, for one): the id read as a
   * little-endian 64-bit number, in upper-case hex without leading zeros. */
  unsigned long long v = 0;
  int i;
  for (i = HM__KEY_ID_LEN - 1; i >= 0; i--)
    v = v << 8 | id[i];
  snprintf(out, 17, "%llX", v);
}

/* One line of text[0..len) from *at: its start and length without "\n" or "\r\n"; *at moves
 * past it. 0 at the end of the text. */
static int next_line(const char *text, size_t len, size_t *at, const char **line, size_t *n) {
  const char *nl;
  if (*at >= len)
    return 0;
  *line = text + *at;
  nl = memchr(*line, '\n', len - *at);
  *n = nl != NULL ? (size_t)(nl - *line) : len - *at;
  *at += *n + (nl != NULL);
  if (*n > 0 && (*line)[*n - 1] == '\r')
    --*n;
  return 1;
}

/* Nothing but blank lines from *at on: what may follow the last line of minisign's files. */
static int only_blank_lines(const char *text, size_t len, size_t *at) {
  const char *line;
  size_t ln;
  while (next_line(text, len, at, &line, &ln))
    if (ln != 0)
      return 0;
  return 1;
}

static int starts_with(const char *s, size_t n, const char *tag) {
  size_t t = strlen(tag);
  return n >= t && memcmp(s, tag, t) == 0;
}

/* Exactly `want` bytes from the base64 text s[0..n), else -1. */
static int unbase64(const char *s, size_t n, unsigned char *out, size_t want) {
#ifdef HM__HAVE_SODIUM
  size_t got = 0;
  const char *end = NULL;
  if (sodium_base642bin(out, want, s, n, NULL, &got, &end, sodium_base64_VARIANT_ORIGINAL) != 0)
    return -1;
  return got == want && end == s + n ? 0 : -1;
#else
  (void)s, (void)n, (void)out, (void)want;
  return -1;
#endif
}

static int no_sodium(char *why, size_t n) {
  snprintf(why, n, "this hotmod was built without libsodium: it cannot check build "
                   "signatures (rebuild it with libsodium-dev installed)");
  return -ENOTSUP;
}

int hm__minisign_key(const char *text, size_t len, hm__pubkey *out, char *why, size_t n) {
  const char *line = NULL;
  size_t at = 0, ln = 0;
  unsigned char blob[KEY_BLOB];
  if (!hm__minisig_available())
    return no_sodium(why, n);
  memset(out, 0, sizeof *out);
  if (memchr(text, '\0', len) != NULL)
    len = strlen(text);
  /* The file's comment line is optional: the key line alone is a key too. */
  if (!next_line(text, len, &at, &line, &ln) ||
      (starts_with(line, ln, untrusted_tag) && !next_line(text, len, &at, &line, &ln))) {
    snprintf(why, n, "no key line (a minisign public key is a line \"RW...\" of 56 "
                     "characters, after its \"untrusted comment:\" line)");
    return HM_EINVAL;
  }
  if (unbase64(line, ln, blob, sizeof blob) != 0 || memcmp(blob, "Ed", ALG_LEN) != 0) {
    snprintf(why, n, "not a minisign public key (its key line must be the base64 of an "
                     "Ed25519 key: 56 characters beginning \"RW\")");
    return HM_EINVAL;
  }
  if (!only_blank_lines(text, len, &at)) {
    snprintf(why, n, "text after the key line of a minisign public key");
    return HM_EINVAL;
  }
  memcpy(out->id, blob + ALG_LEN, HM__KEY_ID_LEN);
  memcpy(out->pk, blob + ALG_LEN + HM__KEY_ID_LEN, PK_LEN);
  return 0;
}

int hm__minisig_parse(const unsigned char *bytes, size_t len, hm__minisig *out, char *why,
                      size_t n) {
  const char *text = (const char *)bytes, *line = NULL;
  size_t at = 0, ln = 0;
  unsigned char blob[SIG_BLOB];
  if (!hm__minisig_available())
    return no_sodium(why, n);
  memset(out, 0, sizeof *out);
  if (memchr(text, '\0', len) != NULL) {
    snprintf(why, n, "malformed signature: a NUL byte in it");
    return HM_EUNTRUSTED;
  }
  if (!next_line(text, len, &at, &line, &ln) || !starts_with(line, ln, untrusted_tag)) {
    snprintf(why, n, "malformed signature: it does not begin with \"%s\"", untrusted_tag);
    return HM_EUNTRUSTED;
  }
  if (!next_line(text, len, &at, &line, &ln) || unbase64(line, ln, blob, sizeof blob) != 0 ||
      (memcmp(blob, "Ed", ALG_LEN) != 0 && memcmp(blob, "ED", ALG_LEN) != 0)) {
    snprintf(why, n, "malformed signature: its second line is not a minisign signature "
                     "(the base64 of \"Ed\" or \"ED\", a key id and 64 bytes)");
    return HM_EUNTRUSTED;
  }
  out->prehashed = blob[1] == 'D';
  memcpy(out->key_id, blob + ALG_LEN, HM__KEY_ID_LEN);
  memcpy(out->sig, blob + ALG_LEN + HM__KEY_ID_LEN, SIG_LEN);
  if (!next_line(text, len, &at, &line, &ln) || !starts_with(line, ln, trusted_tag)) {
    snprintf(why, n, "malformed signature: no \"%s\" line (cut short?)", trusted_tag);
    return HM_EUNTRUSTED;
  }
  out->comment = line + strlen(trusted_tag);
  out->comment_len = ln - strlen(trusted_tag);
  if (out->comment_len > HM__MINISIG_COMMENT_MAX) {
    snprintf(why, n, "malformed signature: a trusted comment of %zu bytes (at most %d)",
             out->comment_len, HM__MINISIG_COMMENT_MAX);
    return HM_EUNTRUSTED;
  }
  if (!next_line(text, len, &at, &line, &ln) || unbase64(line, ln, out->global, SIG_LEN) != 0) {
    snprintf(why, n, "malformed signature: its last line is not the trusted comment's "
                     "signature (cut short?)");
    return HM_EUNTRUSTED;
  }
  if (!only_blank_lines(text, len, &at)) {
    snprintf(why, n, "malformed signature: text after its fourth line");
    return HM_EUNTRUSTED;
  }
  return 0;
}

int hm__minisig_verify(const hm__minisig *s, const hm__pubkey *keys, size_t nkeys,
                       const unsigned char *buf, size_t len, char *why, size_t n) {
#ifdef HM__HAVE_SODIUM
  unsigned char hash[HASH_LEN], global[SIG_LEN + HM__MINISIG_COMMENT_MAX];
  char id[17];
  size_t k;
  if (!hm__minisig_available())
    return no_sodium(why, n);
  for (k = 0; k < nkeys; k++)
    if (memcmp(keys[k].id, s->key_id, HM__KEY_ID_LEN) == 0)
      break;
  hm__key_id_hex(s->key_id, id);
  if (k == nkeys) {
    snprintf(why, n, "unknown key id %s: signed by a key that is not trusted", id);
    return HM_EUNTRUSTED;
  }
  if (s->prehashed && crypto_generichash(hash, sizeof hash, buf, len, NULL, 0) != 0) {
    snprintf(why, n, "bad signature: cannot hash the build");
    return HM_EUNTRUSTED;
  }
  if (crypto_sign_verify_detached(s->sig, s->prehashed ? hash : buf,
                                  s->prehashed ? sizeof hash : len, keys[k].pk) != 0) {
    snprintf(why, n, "bad signature: the build's bytes are not what key %s signed", id);
    return HM_EUNTRUSTED;
  }
  /* The trusted comment is the signer's word only with this second signature, over the
   * first one and the comment together. */
  memcpy(global, s->sig, SIG_LEN);
  memcpy(global + SIG_LEN, s->comment, s->comment_len);
  if (crypto_sign_verify_detached(s->global, global, SIG_LEN + s->comment_len, keys[k].pk) !=
      0) {
    snprintf(why, n, "bad signature: the trusted comment is not what key %s signed (forged "
                     "or damaged)", id);
    return HM_EUNTRUSTED;
  }
  return (int)k;
#else
  (void)s, (void)keys, (void)nkeys, (void)buf, (void)len;
  return no_sodium(why, n);
#endif
}

/* The value of `field` ("timestamp:", "file:") in a trusted comment of minisign's shape:
 * fields separated by tabs. 0 and *val, *vn set when it is there. */
int hm__minisig_field(const char *comment, size_t len, const char *field, const char **val,
                      size_t *vn) {
  size_t at = 0, fl = strlen(field);
  while (at < len) {
    const char *tab = memchr(comment + at, '\t', len - at);
    size_t end = tab != NULL ? (size_t)(tab - comment) : len;
    if (end - at >= fl && memcmp(comment + at, field, fl) == 0) {
      *val = comment + at + fl;
      *vn = end - at - fl;
      return 0;
    }
    at = end + 1;
  }
  return -1;
}
