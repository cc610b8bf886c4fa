/* manifest: key=value lines, comments, blank lines, CRLF, the last of a
 * repeated key winning, and the malformed texts it must reject (a line
 * without '=', an empty key, a NUL byte) with the line number named. */
#include "check.h"
#include "manifest.h"

#include <stdlib.h>
#include <string.h>

/* Parses `text` from an exact-size heap copy with no NUL after it, so ASan
 * catches any read past `len`. */
static int parse_n(manifest *m, const char *text, size_t len, char *err, size_t errlen) {
  char *copy = malloc(len ? len : 1);
  memcpy(copy, text, len);
  err[0] = '\0';
  int rc = manifest_parse(m, copy, len, err, errlen);
  /* The manifest keeps its own copy. */
  memset(copy, '!', len);
  free(copy);
  return rc;
}

static int parse(manifest *m, const char *text, char *err, size_t errlen) {
  return parse_n(m, text, strlen(text), err, errlen);
}

static void test_basic(void) {
  manifest m;
  char err[256];
  const char *text = "format=1\n"
                     "appbin_version=0.1.0\n"
                     "python_version=3.11.2\n"
                     "app=main:app\n"
                     "factory=0\n"
                     "default.port=9000\n"
                     "preload.site-packages/x/_y.so=appbin/libs/liba.so.1 appbin/libs/libb.so.2\n";
  if (!CHECK_EQ_INT(parse(&m, text, err, sizeof(err)), 0))
    return;
  CHECK_EQ_INT(m.count, 7);
  CHECK_STR(manifest_get(&m, "format"), "1");
  CHECK_STR(manifest_get(&m, "appbin_version"), "0.1.0");
  CHECK_STR(manifest_get(&m, "python_version"), "3.11.2");
  CHECK_STR(manifest_get(&m, "app"), "main:app");
  CHECK_STR(manifest_get(&m, "factory"), "0");
  CHECK_STR(manifest_get(&m, "default.port"), "9000");
  CHECK_STR(manifest_get(&m, "preload.site-packages/x/_y.so"),
            "appbin/libs/liba.so.1 appbin/libs/libb.so.2");
  CHECK_STR(m.entries[0].key, "format");
  CHECK_STR(m.entries[6].key, "preload.site-packages/x/_y.so");
  CHECK(manifest_get(&m, "missing") == NULL);
  CHECK(manifest_get(&m, "") == NULL);
  CHECK(manifest_get(&m, "form") == NULL);
  CHECK(manifest_get(&m, "format=1") == NULL);
  CHECK(manifest_get(&m, "FORMAT") == NULL);
  manifest_free(&m);
  CHECK(m.entries == NULL && m.text == NULL && m.count == 0);
  manifest_free(&m); /* twice is harmless */
}

static void test_values(void) {
  manifest m;
  char err[256];
  /* '=' in a value, an empty value, no newline at the end. */
  if (CHECK_EQ_INT(parse(&m, "a=b=c\nempty=\nspaces=x y  z\nlast=end", err, sizeof(err)), 0)) {
    CHECK_EQ_INT(m.count, 4);
    CHECK_STR(manifest_get(&m, "a"), "b=c");
    CHECK_STR(manifest_get(&m, "empty"), "");
    CHECK_STR(manifest_get(&m, "spaces"), "x y  z");
    CHECK_STR(manifest_get(&m, "last"), "end");
    manifest_free(&m);
  }
  /* UTF-8 and a '#' that does not start the line. */
  if (CHECK_EQ_INT(parse(&m, "name=caf\xc3\xa9\nfrag=a#b\n", err, sizeof(err)), 0)) {
    CHECK_STR(manifest_get(&m, "name"), "caf\xc3\xa9");
    CHECK_STR(manifest_get(&m, "frag"), "a#b");
    manifest_free(&m);
  }
}

static void test_comments_blank_crlf(void) {
  manifest m;
  char err[256];
  const char *text = "# appbin manifest\r\n"
                     "\r\n"
                     "format=1\r\n"
                     "\n"
                     "#app=commented:out\n"
                     "app=main:app\r\n"
                     "#\n"
                     "\r\n"
                     "key=with\rcarriage\r\n"
                     "trailing=\r\n";
  if (CHECK_EQ_INT(parse(&m, text, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(m.count, 4);
    CHECK_STR(manifest_get(&m, "format"), "1");
    CHECK_STR(manifest_get(&m, "app"), "main:app");
    CHECK_STR(manifest_get(&m, "key"), "with\rcarriage"); /* only a line's last \r goes */
    CHECK_STR(manifest_get(&m, "trailing"), "");
    CHECK(manifest_get(&m, "#app") == NULL);
    manifest_free(&m);
  }
  /* Only comments and blank lines, or nothing at all. */
  static const char *const empties[] = {"", "\n", "\r\n", "\n\n\n", "# only\n", "#", "\r"};
  for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
    if (CHECK_EQ_INT(parse(&m, empties[i], err, sizeof(err)), 0)) {
      CHECK_EQ_INT(m.count, 0);
      CHECK(manifest_get(&m, "format") == NULL);
      manifest_free(&m);
    }
  }
}

static void test_last_wins(void) {
  manifest m;
  char err[256];
  if (CHECK_EQ_INT(parse(&m, "k=1\nother=x\nk=2\n# k=4\nk=3\n", err, sizeof(err)), 0)) {
    CHECK_STR(manifest_get(&m, "k"), "3");
    CHECK_STR(manifest_get(&m, "other"), "x");
    manifest_free(&m);
  }
  if (CHECK_EQ_INT(parse(&m, "k=1\nk=\n", err, sizeof(err)), 0)) {
    CHECK_STR(manifest_get(&m, "k"), ""); /* an empty value still wins */
    manifest_free(&m);
  }
}

static void expect_error(const char *text, size_t len, const char *needle, int line) {
  manifest m;
  char err[256];
  memset(&m, 0x5a, sizeof(m));
  int rc = parse_n(&m, text, len, err, sizeof(err));
  check_report_(rc == -1, __FILE__, line, "manifest_parse fails (rc %d)", rc);
  if (rc == -1) {
    check_report_(strstr(err, needle) != NULL, __FILE__, line, "error \"%s\" holds \"%s\"", err,
                  needle);
    check_report_(m.entries == NULL && m.text == NULL && m.count == 0, __FILE__, line,
                  "a zeroed manifest after failure");
  }
  manifest_free(&m);
}
#define EXPECT_ERROR(text, needle) expect_error((text), strlen(text), (needle), __LINE__)
#define EXPECT_ERROR_N(text, len, needle) expect_error((text), (len), (needle), __LINE__)

static void test_errors(void) {
  EXPECT_ERROR("no equals sign", "line 1 ");
  EXPECT_ERROR("format=1\napp=main:app\nbroken\n", "line 3 ");
  EXPECT_ERROR("format=1\napp=main:app\nbroken", "line 3 ");
  /* Blank and comment lines count. */
  EXPECT_ERROR("a=1\n\n# c\nbad\n", "line 4 ");
  EXPECT_ERROR("a=1\r\n\r\n# c\r\nbad\r\n", "line 4 ");
  EXPECT_ERROR("#\n#\n#\n#\n#\n#\n#\n#\n#\n#\nx\n", "line 11 ");
  /* An empty key. */
  EXPECT_ERROR("=value\n", "line 1 ");
  EXPECT_ERROR("a=1\n=\n", "line 2 ");
  /* A space is not a comment or a blank line. */
  EXPECT_ERROR("a=1\n \n", "line 2 ");
  EXPECT_ERROR("a=1\n\t\n", "line 2 ");
  EXPECT_ERROR("a=1\n\r\r\n", "line 2 ");
  /* NUL bytes, anywhere. */
  EXPECT_ERROR_N("a=1\0\n", 5, "NUL");
  EXPECT_ERROR_N("\0", 1, "NUL");
  EXPECT_ERROR_N("format=1\nkey=va\0lue\n", 20, "NUL");
  EXPECT_ERROR_N("# comment \0 here\n", 17, "NUL");
  EXPECT_ERROR_N("a=1\n\0", 5, "NUL");
}

static void test_many_lines(void) {
  enum { N = 10000 };
  size_t cap = N * 24, len = 0;
  char *text = malloc(cap);
  for (int i = 0; i < N; i++)
    len += (size_t)snprintf(text + len, cap - len, "key%d=value%d\n%s", i, i, i % 3 ? "" : "#\n");
  manifest m;
  char err[256];
  if (CHECK_EQ_INT(parse_n(&m, text, len, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(m.count, N);
    CHECK_STR(manifest_get(&m, "key0"), "value0");
    CHECK_STR(manifest_get(&m, "key9999"), "value9999");
    CHECK_STR(manifest_get(&m, "key5000"), "value5000");
    CHECK(manifest_get(&m, "key10000") == NULL);
    manifest_free(&m);
  }
  /* A bad line far down is named by its number. */
  len += (size_t)snprintf(text + len, cap - len, "oops\n");
  char want[32];
  snprintf(want, sizeof(want), "line %d ", N + (N + 2) / 3 + 1);
  expect_error(text, len, want, __LINE__);
  free(text);
}

/* A long line and a small error buffer. */
static void test_bounds(void) {
  size_t n = 100000;
  char *text = malloc(n + 3);
  memcpy(text, "k=", 2);
  memset(text + 2, 'v', n);
  text[n + 2] = '\n';
  manifest m;
  char err[16];
  if (CHECK_EQ_INT(parse_n(&m, text, n + 3, err, sizeof(err)), 0)) {
    CHECK_EQ_INT(strlen(manifest_get(&m, "k")), n);
    manifest_free(&m);
  }
  free(text);
  CHECK_EQ_INT(parse(&m, "bad line here", err, sizeof(err)), -1);
  CHECK_EQ_INT(strlen(err), sizeof(err) - 1);
}

int main(void) {
  test_basic();
  test_values();
  test_comments_blank_crlf();
  test_last_wins();
  test_errors();
  test_many_lines();
  test_bounds();
  return check_summary();
}
