/* libFuzzer harness for host/envfile.c and applog_json_escape (host/applog.c):
 * arbitrary bytes as a dotenv file (every entry has a non-empty name without
 * '=' or NUL, and values without NUL; an error leaves no entries), and as a
 * string for a JSON log line (the output is always the inside of a valid JSON
 * string: no raw control character or quote, known escapes only, UTF-8,
 * within its capacity, whatever the cut). */
#include "applog.h"
#include "envfile.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *lookup(const char *name, void *ud) {
  (void)ud;
  return strcmp(name, "A") == 0 ? "a${B}" : strcmp(name, "E") == 0 ? "" : NULL;
}

static size_t utf8_len(const unsigned char *s, size_t n) {
  if (s[0] < 0x80)
    return 1;
  size_t len = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
               : s[0] >= 0xe0 && s[0] <= 0xef ? 3
               : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                              : 0;
  if (!len || len > n)
    return 0;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  return len;
}

static void check_json_string(const char *out, size_t n) {
  const unsigned char *s = (const unsigned char *)out;
  for (size_t i = 0; i < n;) {
    if (s[i] == '\\') {
      if (i + 1 >= n)
        abort();
      char e = (char)s[i + 1];
      if (e == 'u') {
        if (i + 6 > n)
          abort();
        for (int k = 2; k < 6; k++)
          if (!strchr("0123456789abcdef", s[i + k]))
            abort();
        i += 6;
      } else if (strchr("\"\\nrt", e) && e) {
        i += 2;
      } else {
        abort();
      }
      continue;
    }
    if (s[i] < 0x20 || s[i] == '"')
      abort();
    size_t len = utf8_len(s + i, n - i);
    if (!len)
      abort();
    i += len;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  envfile ef;
  char err[256];
  if (envfile_parse("fuzz.env", (const char *)data, size, lookup, NULL, &ef, err, sizeof(err)) ==
      0) {
    for (size_t i = 0; i < ef.count; i++) {
      if (!ef.entries[i].key[0] || strchr(ef.entries[i].key, '='))
        abort();
      if (ef.entries[i].line < 1)
        abort();
    }
    envfile_free(&ef);
  } else if (ef.count != 0 || !err[0]) {
    abort();
  }
  static const size_t caps[] = {1, 2, 7, 64, 100000};
  char *out = malloc(6 * size + 8);
  if (!out)
    return 0;
  for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
    size_t cap = caps[k] < 6 * size + 8 ? caps[k] : 6 * size + 8;
    size_t n = applog_json_escape(out, cap, (const char *)data, size);
    if (n >= cap || out[n] != '\0')
      abort();
    check_json_string(out, n);
  }
  free(out);
  return 0;
}
