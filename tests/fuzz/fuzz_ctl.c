/* fuzz_ctl.c: the control socket's request parser and its escapers under fuzzing (libFuzzer
 * with clang and HOTMOD_FUZZ=ON, run by `make fuzz`), and, built without libFuzzer, a replay
 * of the files it is given (CTest fuzz_ctl_seeds). Aborts when a promise does not hold:
 *  - hm__ctl_parse gives 0 or HM_EINVAL, a reason on failure, and on success a known
 *    command whose module is a valid name and whose strings end inside their buffers;
 *  - a line the parser took, written out again as hotmodctl writes it, parses the same;
 *  - hm__json_escape's output has no raw control character, quote or backslash that is
 *    not escaped, is valid UTF-8, and a short buffer gets a prefix of the full output;
 *  - hm__prom_escape's output has no raw newline or unescaped quote. */
#include "ctl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                               \
  do {                                                                                         \
    if (!(c)) {                                                                                \
      fprintf(stderr, "fuzz_ctl: %s:%d: %s\n", __FILE__, __LINE__, #c);                       \
      abort();                                                                                 \
    }                                                                                          \
  } while (0)

/* Valid UTF-8 (what JSON must carry). */
static int utf8_ok(const unsigned char *s) {
  while (*s) {
    unsigned c = *s, len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                                      : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    unsigned i;
    if (len == 0)
      return 0;
    for (i = 1; i < len; i++)
      if ((s[i] & 0xc0) != 0x80)
        return 0;
    s += len;
  }
  return 1;
}

static void check_json(const char *s) {
  size_t n = hm__json_escape(NULL, 0, s), i;
  char *out = malloc(n + 1), small[7];
  CHECK(out != NULL);
  CHECK(hm__json_escape(out, n + 1, s) == n);
  CHECK(strlen(out) == n);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)out[i];
    CHECK(c >= 0x20 && c != 0x7f);
    if (c == '\\') {
      CHECK(i + 1 < n && strchr("\"\\u", out[i + 1]) != NULL);
      i++;
    } else {
      CHECK(c != '"');
    }
  }
  CHECK(utf8_ok((const unsigned char *)out));
  CHECK(hm__json_escape(small, sizeof small, s) == n);
  CHECK(strncmp(small, out, strlen(small)) == 0);
  free(out);
}

static void check_prom(const char *s) {
  size_t n = hm__prom_escape(NULL, 0, s), i;
  char *out = malloc(n + 1);
  CHECK(out != NULL);
  CHECK(hm__prom_escape(out, n + 1, s) == n);
  for (i = 0; i < n; i++) {
    CHECK(out[i] != '\n');
    if (out[i] == '\\')
      i++;
    else
      CHECK(out[i] != '"');
  }
  free(out);
}

/* Append word w as hotmodctl does (%XX for bytes <= 0x20, '%' and 0x7f). */
static void put_word(char *req, size_t *len, const char *w) {
  static const char hex[] = "0123456789ABCDEF";
  req[(*len)++] = ' ';
  for (; *w; w++) {
    unsigned char c = (unsigned char)*w;
    if (c <= 0x20 || c == '%' || c == 0x7f) {
      req[(*len)++] = '%';
      req[(*len)++] = hex[c >> 4];
      req[(*len)++] = hex[c & 15];
    } else {
      req[(*len)++] = (char)c;
    }
  }
}

static void check_parse(const uint8_t *data, size_t size) {
  hm__ctl_req rq, again;
  char why[160], *req;
  size_t len = 0;
  int rc;
  memset(why, 'x', sizeof why);
  rc = hm__ctl_parse((const char *)data, size, &rq, why, sizeof why);
  CHECK(rc == 0 || rc == HM_EINVAL);
  if (rc != 0) {
    CHECK(memchr(why, '\0', sizeof why) != NULL && why[0] != '\0');
    return;
  }
  CHECK(rq.cmd >= HM__CTL_STATUS && rq.cmd <= HM__CTL_PING);
  CHECK(memchr(rq.module, '\0', sizeof rq.module) != NULL);
  CHECK(memchr(rq.file, '\0', sizeof rq.file) != NULL);
  if (rq.cmd == HM__CTL_RELOAD || rq.cmd == HM__CTL_ROLLBACK)
    CHECK(rq.module[0] != '\0' && strchr(rq.module, ':') == NULL);
  CHECK(!rq.has_file || (rq.cmd == HM__CTL_RELOAD && rq.file[0] != '\0'));
  /* Written out again, it parses the same. */
  req = malloc(3 * (sizeof rq.module + sizeof rq.file) + 64);
  CHECK(req != NULL);
  {
    static const char *const names[] = {"", "status", "metrics", "events", "reload", "rollback",
                                        "ping"};
    len = (size_t)sprintf(req, "%s", names[rq.cmd]);
  }
  if (rq.json)
    put_word(req, &len, "json");
  if (rq.cmd == HM__CTL_RELOAD || rq.cmd == HM__CTL_ROLLBACK)
    put_word(req, &len, rq.module);
  if (rq.has_file)
    put_word(req, &len, rq.file);
  req[len++] = '\n';
  if (len <= HM__CTL_LINE_MAX) {
    CHECK(hm__ctl_parse(req, len, &again, why, sizeof why) == 0);
    CHECK(again.cmd == rq.cmd && again.json == rq.json && again.has_file == rq.has_file);
    CHECK(strcmp(again.module, rq.module) == 0 && strcmp(again.file, rq.file) == 0);
  }
  free(req);
  check_json(rq.module);
  check_json(rq.file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  check_parse(data, size);
  /* The bytes as a string (up to a NUL) through both escapers. */
  CHECK(s != NULL);
  memcpy(s, data, size);
  s[size] = '\0';
  check_json(s);
  check_prom(s);
  free(s);
  return 0;
}

#ifdef HM_FUZZ_CTL_REPLAY
/* Without libFuzzer: each file given, as one input. */
int main(int argc, char **argv) {
  int i;
  for (i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    unsigned char *buf;
    long n;
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    CHECK(buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
  }
  printf("fuzz_ctl: %d inputs replayed\n", argc - 1);
  return 0;
}
#endif
