/* applog: JSON string escaping (quotes, controls, UTF-8 kept, bytes that are
 * not UTF-8 replaced, truncation that never splits an escape or a
 * character), the timestamp shape, uvicorn's level prefixes with and
 * without colours, and whole lines in both formats (stderr to a file). */
#include "applog.h"
#include "check.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void expect_escape(const char *in, size_t n, size_t cap, const char *want, int line) {
  char out[256];
  memset(out, 'X', sizeof(out));
  size_t got = applog_json_escape(out, cap, in, n);
  check_report_(strcmp(out, want) == 0, __FILE__, line, "escape gives \"%s\", want \"%s\"", out,
                want);
  check_report_(got == strlen(out), __FILE__, line, "returned length %zu", got);
}
#define ESC(in, cap, want) expect_escape((in), sizeof(in) - 1, (cap), (want), __LINE__)

static void test_escape(void) {
  ESC("plain /path?q=1", 256, "plain /path?q=1");
  ESC("a\"b\\c", 256, "a\\\"b\\\\c");
  ESC("\n\r\t\x01\x1f\x7f", 256, "\\n\\r\\t\\u0001\\u001f\\u007f");
  ESC("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 256,
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  ESC("\x98", 256, "\\ufffd");
  ESC("a\xc3", 256, "a\\ufffd");
  ESC("\xc0\xaf", 256, "\\ufffd\\ufffd");            /* overlong */
  ESC("\xed\xa0\x80", 256, "\\ufffd\\ufffd\\ufffd"); /* surrogate */
  ESC("\xf4\x90\x80\x80", 256, "\\ufffd\\ufffd\\ufffd\\ufffd");
  ESC("a\0b", 256, "a\\u0000b");
  /* truncation: whole escapes and characters only */
  ESC("abcdef", 4, "abc");
  ESC("ab\"cd", 4, "ab");
  ESC("ab\x01", 8, "ab");
  ESC("a\xe2\x82\xac", 4, "a");
  ESC("abc", 1, "");
  char out[4] = "xyz";
  CHECK_EQ_INT((long long)applog_json_escape(out, 0, "abc", 3), 0);
  CHECK_STR(out, "xyz");
}

static void test_time_and_prefixes(void) {
  char now[25];
  applog_time(now);
  CHECK_EQ_INT((long long)strlen(now), 24);
  CHECK(now[4] == '-' && now[7] == '-' && now[10] == 'T' && now[13] == ':' && now[16] == ':' &&
        now[19] == '.' && now[23] == 'Z');
  applog_setup(LOG_INFO, 0, 0);
  CHECK_STR(applog_level_prefix(LOG_INFO), "INFO:     ");
  CHECK_STR(applog_level_prefix(LOG_WARNING), "WARNING:  ");
  CHECK_STR(applog_level_prefix(LOG_CRITICAL), "CRITICAL: ");
  CHECK_STR(applog_level_name(LOG_ERROR), "ERROR");
  applog_setup(LOG_INFO, 0, 1);
  CHECK_STR(applog_level_prefix(LOG_INFO), "\033[32mINFO\033[0m:     ");
  CHECK_STR(applog_level_prefix(LOG_ERROR), "\033[31mERROR\033[0m:    ");
  CHECK_EQ_INT(applog_colors(), 1);
  applog_setup(LOG_INFO, 1, 1); /* JSON never has colours */
  CHECK_EQ_INT(applog_colors(), 0);
  CHECK_EQ_INT(applog_is_json(), 1);
  CHECK_EQ_INT(applog_enabled(LOG_DEBUG), 0);
  CHECK_EQ_INT(applog_enabled(LOG_INFO), 1);
}

/* Runs applog lines with stderr sent to a temporary file; returns its text. */
static char *capture(void (*emit)(void)) {
  static char text[8192];
  char path[] = "/tmp/appbin-applog-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0)
    return strcpy(text, "");
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  emit();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
  text[n > 0 ? n : 0] = '\0';
  close(fd);
  unlink(path);
  return text;
}

static void emit_text(void) {
  applog_setup(LOG_INFO, 0, 0);
  applog(LOG_INFO, "Started worker process [%d]", 42);
  applog(LOG_DEBUG, "not shown");
  applog(LOG_WARNING, "careful");
}

static void emit_json(void) {
  applog_setup(LOG_DEBUG, 1, -1);
  applog(LOG_ERROR, "bad \"thing\"\n%s", "second line");
  applog_message(LOG_DEBUG, "uvicorn.access", "x\xff");
}

static void test_lines(void) {
  CHECK_STR(capture(emit_text), "INFO:     Started worker process [42]\nWARNING:  careful\n");
  char *json = capture(emit_json);
  char *second = strchr(json, '\n');
  if (!CHECK(second != NULL))
    return;
  *second++ = '\0';
  CHECK(strncmp(json, "{\"time\":\"", 9) == 0);
  CHECK(strstr(json, "\",\"level\":\"ERROR\",\"logger\":\"uvicorn.error\","
                     "\"message\":\"bad \\\"thing\\\"\\nsecond line\"}") != NULL);
  CHECK(strstr(second, "\"level\":\"DEBUG\",\"logger\":\"uvicorn.access\","
                       "\"message\":\"x\\ufffd\"}\n") != NULL);
}

int main(void) {
  test_escape();
  test_time_and_prefixes();
  test_lines();
  return check_summary();
}
