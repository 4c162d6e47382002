/*
 * The control socket's text, as pure functions over bytes: a request line parsed into a
 * command (what hotmodctl sends), and the escaping of strings into JSON and into Prometheus
 * label values (what the server sends back). No I/O, no allocation, no registry: the
 * libFuzzer target tests/fuzz/fuzz_ctl.c runs it on any input.
 *
 * A request is one line of at most HM__CTL_LINE_MAX bytes ending in "\n": words separated
 * by one space, the first the command. In the other words a byte below 0x21, '%' and 0x7f
 * are written as %XX (two hex digits), so that a word may hold spaces; %00 is refused.
 *
 * Layer 1 (docs/architecture.md): calls nothing.
 */
#include "ctl.h"

#include <string.h>

static int fail(char *why, size_t whylen, const char *msg) {
  if (whylen > 0) {
    size_t n = strlen(msg);
    if (n >= whylen)
      n = whylen - 1;
    memcpy(why, msg, n);
    why[n] = '\0';
  }
  return HM_EINVAL;
}

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decode the word s[0, n) into out[cap]: its length, or -1 (a bad escape, %00, a raw byte
 * that must be escaped, or longer than cap - 1). */
static long decode(const char *s, size_t n, char *out, size_t cap) {
  size_t i, k = 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '%') {
      int hi, lo;
      if (i + 2 >= n)
        return -1;
      hi = hexval((unsigned char)s[i + 1]);
      lo = hexval((unsigned char)s[i + 2]);
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
        return -1;
      c = (unsigned char)(hi * 16 + lo);
      i += 2;
    } else if (c <= 0x20 || c == 0x7f) {
      return -1;
    }
    if (k + 1 >= cap)
      return -1;
    out[k++] = (char)c;
  }
  out[k] = '\0';
  return (long)k;
}

static const struct {
  const char *name;
  int cmd;
  unsigned min, max; /* how many words after the command */
} commands[] = {
    {"status", HM__CTL_STATUS, 0, 1},   {"metrics", HM__CTL_METRICS, 0, 0},
    {"events", HM__CTL_EVENTS, 0, 0},   {"reload", HM__CTL_RELOAD, 1, 2},
    {"rollback", HM__CTL_ROLLBACK, 1, 1}, {"ping", HM__CTL_PING, 0, 0},
};

/* The module word: a valid module name (1-255 bytes, no ':' and no control character). */
static int module_ok(const char *m, size_t n) {
  size_t i;
  if (n == 0 || n > 255 || memchr(m, ':', n) != NULL)
    return 0;
  for (i = 0; i < n; i++)
    if ((unsigned char)m[i] < 0x20 || m[i] == 0x7f)
      return 0;
  return 1;
}

int hm__ctl_parse(const char *line, size_t len, hm__ctl_req *out, char *why, size_t whylen) {
  const char *words[4];
  size_t lens[4], nw = 0, i, start = 0, k;
  memset(out, 0, sizeof *out);
  if (len == 0 || line[len - 1] != '\n')
    return fail(why, whylen, "a request is one line ending in a newline");
  if (len > HM__CTL_LINE_MAX)
    return fail(why, whylen, "request longer than 4096 bytes");
  len--; /* the newline */
  if (len > 0 && line[len - 1] == '\r')
    len--;
  for (i = 0; i <= len; i++) {
    if (i < len && line[i] != ' ')
      continue;
    if (i == start)
      return fail(why, whylen, "empty word (two spaces, or a space at an end)");
    if (nw == 4)
      return fail(why, whylen, "too many words");
    words[nw] = line + start;
    lens[nw++] = i - start;
    start = i + 1;
  }
  for (k = 0; k < sizeof commands / sizeof commands[0]; k++)
    if (lens[0] == strlen(commands[k].name) && memcmp(words[0], commands[k].name, lens[0]) == 0)
      break;
  if (k == sizeof commands / sizeof commands[0])
    return fail(why, whylen,
                "unknown command (status, metrics, events, reload, rollback, ping)");
  if (nw - 1 < commands[k].min || nw - 1 > commands[k].max)
    return fail(why, whylen, commands[k].cmd == HM__CTL_RELOAD ? "usage: reload MODULE [FILE]"
                             : commands[k].cmd == HM__CTL_ROLLBACK ? "usage: rollback MODULE"
                             : commands[k].cmd == HM__CTL_STATUS   ? "usage: status [json]"
                                                                   : "this command takes no words");
  out->cmd = commands[k].cmd;
  if (out->cmd == HM__CTL_STATUS && nw == 2) {
    if (lens[1] != 4 || memcmp(words[1], "json", 4) != 0)
      return fail(why, whylen, "usage: status [json]");
    out->json = 1;
  }
  if (out->cmd == HM__CTL_RELOAD || out->cmd == HM__CTL_ROLLBACK) {
    long n = decode(words[1], lens[1], out->module, sizeof out->module);
    if (n < 0 || !module_ok(out->module, (size_t)n))
      return fail(why, whylen, "bad module name (1-255 bytes, no ':', %XX escapes)");
  }
  if (out->cmd == HM__CTL_RELOAD && nw == 3) {
    long n = decode(words[2], lens[2], out->file, sizeof out->file);
    if (n <= 0)
      return fail(why, whylen, "bad file name (%XX escapes, no %00, under 4096 bytes)");
    out->has_file = 1;
  }
  return 0;
}

/* One byte of valid UTF-8 starts a sequence of this many bytes, or 0 for a byte that cannot
 * start one; the sequence s[0, n) is valid UTF-8 (no overlong forms, no surrogates, at most
 * U+10FFFF): its length, or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len, i;
  unsigned cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    len = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    len = 4, cp = c & 0x07;
  else
    return 0;
  if (len > n)
    return 0;
  for (i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
      (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return len;
}

/* Append p[0, n) to out[cap] at *k (counting what would not fit). */
static void put(char *out, size_t cap, size_t *k, const char *p, size_t n) {
  size_t i;
  for (i = 0; i < n; i++, (*k)++)
    if (*k + 1 < cap)
      out[*k] = p[i];
}

static size_t finish(char *out, size_t cap, size_t k) {
  if (cap > 0)
    out[k < cap ? k : cap - 1] = '\0';
  return k;
}

size_t hm__json_escape(char *out, size_t cap, const char *s) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  size_t n = strlen(s), i = 0, k = 0;
  while (i < n) {
    unsigned char c = u[i];
    size_t len;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(out, cap, &k, e, 2);
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      put(out, cap, &k, e, 6);
      i++;
    } else if ((len = utf8_seq(u + i, n - i)) == 0) {
      /* Not UTF-8 (a path may be any bytes): the replacement character, so that the
       * document stays valid JSON. */
      put(out, cap, &k, "\\ufffd", 6);
      i++;
    } else {
      put(out, cap, &k, s + i, len);
      i += len;
    }
  }
  return finish(out, cap, k);
}

size_t hm__prom_escape(char *out, size_t cap, const char *s) {
  size_t k = 0;
  for (; *s != '\0'; s++) {
    if (*s == '\\' || *s == '"')
      put(out, cap, &k, *s == '\\' ? "\\\\" : "\\\"", 2);
    else if (*s == '\n')
      put(out, cap, &k, "\\n", 2);
    else
      put(out, cap, &k, s, 1);
  }
  return finish(out, cap, k);
}
