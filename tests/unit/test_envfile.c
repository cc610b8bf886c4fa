/* envfile: each dotenv form python-dotenv 1.x reads (comments, export,
 * quotes and their escapes, multi-line values, inline comments, ${VAR}
 * expansion with defaults, repeated keys), the errors (a line it cannot
 * parse, bad UTF-8, NUL), and envfile_load() leaving variables that are
 * already set alone. tests/e2e/test_server_ops.py compares the same forms
 * with python-dotenv itself. */
#include "check.h"
#include "envfile.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[512];
static envfile ef;

/* The environment of the expansions: FROM_ENV=env, EMPTY="". */
static const char *lookup(const char *name, void *ud) {
  (void)ud;
  if (strcmp(name, "FROM_ENV") == 0)
    return "env";
  if (strcmp(name, "EMPTY") == 0)
    return "";
  return NULL;
}

static int parse(const char *text) {
  envfile_free(&ef);
  err[0] = '\0';
  return envfile_parse("t.env", text, strlen(text), lookup, NULL, &ef, err, sizeof(err));
}

/* The value of the last entry named key ("<unset>" for a bare KEY, "<none>"
 * when absent). */
static const char *get(const char *key) {
  for (size_t i = ef.count; i-- > 0;)
    if (strcmp(ef.entries[i].key, key) == 0)
      return ef.entries[i].value ? ef.entries[i].value : "<unset>";
  return "<none>";
}

#define EXPECT_VALUE(text, key, want)                                                              \
  do {                                                                                             \
    if (CHECK_EQ_INT(parse(text), 0))                                                              \
      CHECK_STR(get(key), want);                                                                   \
    else                                                                                           \
      fprintf(stderr, "  err: %s\n", err);                                                         \
  } while (0)

static void test_forms(void) {
  EXPECT_VALUE("A=1", "A", "1");
  EXPECT_VALUE("A=1\n", "A", "1");
  EXPECT_VALUE("  A = 1  \n", "A", "1");
  EXPECT_VALUE("export A=1", "A", "1");
  EXPECT_VALUE("export\tA=1", "A", "1");
  EXPECT_VALUE("export=1", "export", "1");
  EXPECT_VALUE("exportA=1", "exportA", "1");
  EXPECT_VALUE("# comment\nA=1\n# another\n", "A", "1");
  EXPECT_VALUE("\n\n   \nA=1\n\n", "A", "1");
  EXPECT_VALUE("A=", "A", "");
  EXPECT_VALUE("A=\nB=2", "A", "");
  EXPECT_VALUE("A", "A", "<unset>");
  EXPECT_VALUE("A # just a name", "A", "<unset>");
  /* unquoted values: an inline comment needs blanks before '#' */
  EXPECT_VALUE("A=a b c", "A", "a b c");
  EXPECT_VALUE("A=value # comment", "A", "value");
  EXPECT_VALUE("A=value\t# comment", "A", "value");
  EXPECT_VALUE("A=val#ue", "A", "val#ue");
  EXPECT_VALUE("A=#novalue", "A", "#novalue");
  EXPECT_VALUE("A= # comment", "A", "");
  EXPECT_VALUE("A=a# b #c", "A", "a# b");
  EXPECT_VALUE("A=a\\nb", "A", "a\\nb");
  /* single quotes: only \\ and \' are escapes */
  EXPECT_VALUE("A='a b'", "A", "a b");
  EXPECT_VALUE("A='a # b'", "A", "a # b");
  EXPECT_VALUE("A='a\\nb'", "A", "a\\nb");
  EXPECT_VALUE("A='it\\'s'", "A", "it's");
  EXPECT_VALUE("A='back\\\\slash'", "A", "back\\slash");
  EXPECT_VALUE("A='x' # comment", "A", "x");
  EXPECT_VALUE("A=''", "A", "");
  /* double quotes: \\ \' \" \a \b \f \n \r \t \v */
  EXPECT_VALUE("A=\"a b\"", "A", "a b");
  EXPECT_VALUE("A=\"a\\nb\\tc\"", "A", "a\nb\tc");
  EXPECT_VALUE("A=\"say \\\"hi\\\"\"", "A", "say \"hi\"");
  EXPECT_VALUE("A=\"\\a\\b\\f\\r\\v\\'\"", "A", "\a\b\f\r\v'");
  EXPECT_VALUE("A=\"\\d\\u00e9\"", "A", "\\d\\u00e9");
  EXPECT_VALUE("A=\"a\\\\\"", "A", "a\\");
  EXPECT_VALUE("A=\"\"", "A", "");
  EXPECT_VALUE("A=\"caf\xc3\xa9\"", "A", "caf\xc3\xa9");
  /* quoted values span lines */
  EXPECT_VALUE("A=\"line1\nline2\"\nB=2", "A", "line1\nline2");
  EXPECT_VALUE("A=\"line1\nline2\"\nB=2", "B", "2");
  EXPECT_VALUE("A='-----BEGIN KEY-----\nabc\n-----END KEY-----'", "A",
               "-----BEGIN KEY-----\nabc\n-----END KEY-----");
  /* quoted keys */
  EXPECT_VALUE("'A B'=1", "A B", "1");
  /* CRLF and CR line ends, a BOM */
  EXPECT_VALUE("A=1\r\nB=2\r\n", "A", "1");
  EXPECT_VALUE("A=1\r\nB=2\r\n", "B", "2");
  EXPECT_VALUE("A=1\rB=2", "B", "2");
  EXPECT_VALUE("A=\"x\r\ny\"", "A", "x\ny");
  EXPECT_VALUE("\xef\xbb\xbf"
               "A=1",
               "A", "1");
  /* a repeated key: the last value */
  EXPECT_VALUE("A=1\nA=2", "A", "2");
}

static void test_expansion(void) {
  EXPECT_VALUE("A=${FROM_ENV}", "A", "env");
  EXPECT_VALUE("A=x${FROM_ENV}y", "A", "xenvy");
  EXPECT_VALUE("A=${MISSING}", "A", "");
  EXPECT_VALUE("A=${MISSING:-fallback}", "A", "fallback");
  EXPECT_VALUE("A=${MISSING:-a:b}", "A", "a:b");
  EXPECT_VALUE("A=${MISSING:-}", "A", "");
  EXPECT_VALUE("A=${EMPTY:-x}", "A", ""); /* set but empty: no default */
  EXPECT_VALUE("A=${FROM_ENV:-x}", "A", "env");
  EXPECT_VALUE("B=1\nA=${B}", "A", "1");
  EXPECT_VALUE("A=${B}\nB=1", "A", ""); /* not yet defined */
  EXPECT_VALUE("B=1\nA=${B}\nB=2", "A", "1");
  EXPECT_VALUE("B=b\nA=\"${B}-x\"", "A", "b-x");
  EXPECT_VALUE("B=b\nA='${B}'", "A", "b"); /* python-dotenv expands single quotes too */
  EXPECT_VALUE("B\nA=${B:-x}", "A", "");   /* a bare KEY counts as set, to "" */
  EXPECT_VALUE("FROM_ENV=file\nA=${FROM_ENV}", "A", "env"); /* the environment first */
  EXPECT_VALUE("A=$FROM_ENV", "A", "$FROM_ENV");            /* only ${...} */
  EXPECT_VALUE("A=${A:x}", "A", "${A:x}");
  EXPECT_VALUE("A=${A:x}${FROM_ENV}", "A", "${A:x}env");
  EXPECT_VALUE("A=${unclosed", "A", "${unclosed");
  EXPECT_VALUE("A=${}", "A", "");
}

static void expect_error(const char *text, const char *want, int line) {
  int rc = parse(text);
  check_report_(rc == -1, __FILE__, line, "parse of \"%s\" fails", text);
  check_report_(strstr(err, want) != NULL, __FILE__, line, "error \"%s\" holds \"%s\"", err, want);
  check_report_(ef.count == 0, __FILE__, line, "no entries after an error");
}
#define EXPECT_ERROR(text, want) expect_error((text), (want), __LINE__)

static void test_errors(void) {
  EXPECT_ERROR("A=\"unterminated", "line 1: unterminated double-quoted value");
  EXPECT_ERROR("A=1\nB='x\n", "line 2: unterminated single-quoted value");
  EXPECT_ERROR("A=1\n\nB=\"x\" junk", "line 3: unexpected text after the value");
  EXPECT_ERROR("A='x'=y", "unexpected text");
  EXPECT_ERROR("A B=1", "line 1: expected '=' after the name");
  EXPECT_ERROR("=1", "expected a variable name");
  EXPECT_ERROR("export ", "expected a variable name");
  EXPECT_ERROR("''=1", "quoted key");
  EXPECT_ERROR("'A=B'=1", "'=' in the variable name");
  EXPECT_ERROR("A=1\nB=\xff\n", "line 2: not UTF-8");
  EXPECT_ERROR("A=\xc3", "not UTF-8");
  EXPECT_ERROR("A=\xed\xa0\x80", "not UTF-8"); /* a surrogate */
  const char nul[] = "A=1\nB=x\0y";
  envfile_free(&ef);
  CHECK_EQ_INT(envfile_parse("t.env", nul, sizeof(nul) - 1, lookup, NULL, &ef, err, sizeof(err)),
               -1);
  CHECK(strstr(err, "line 2: a NUL byte") != NULL);
  /* a tiny error buffer stays terminated */
  char small[8];
  CHECK_EQ_INT(envfile_parse("t.env", "A=\"x", 4, lookup, NULL, &ef, small, sizeof(small)), -1);
  CHECK(strlen(small) < sizeof(small));
}

static void test_load(void) {
  char path[] = "/tmp/appbin-envfile-XXXXXX";
  int fd = mkstemp(path);
  if (!CHECK(fd >= 0))
    return;
  const char text[] = "APPBIN_T_NEW=new\nAPPBIN_T_SET=file\nAPPBIN_T_REF=${APPBIN_T_SET}\n"
                      "APPBIN_T_BARE\nAPPBIN_T_DUP=1\nAPPBIN_T_DUP=2\n";
  CHECK(write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1));
  close(fd);
  setenv("APPBIN_T_SET", "env", 1);
  unsetenv("APPBIN_T_NEW");
  unsetenv("APPBIN_T_BARE");
  size_t nset = 99;
  envfile loaded;
  if (CHECK_EQ_INT(envfile_load(path, &nset, &loaded, err, sizeof(err)), 0)) {
    CHECK_EQ_INT((long long)nset, 3);
    CHECK_EQ_INT((long long)loaded.count, 6);
    envfile_free(&loaded);
  }
  CHECK_STR(getenv("APPBIN_T_NEW"), "new");
  CHECK_STR(getenv("APPBIN_T_SET"), "env"); /* already set: left alone */
  CHECK_STR(getenv("APPBIN_T_REF"), "env");
  CHECK(getenv("APPBIN_T_BARE") == NULL);
  CHECK_STR(getenv("APPBIN_T_DUP"), "2");
  unlink(path);

  CHECK_EQ_INT(envfile_load(path, &nset, &loaded, err, sizeof(err)), -1);
  CHECK(strstr(err, "No such file") != NULL);
  CHECK_EQ_INT(envfile_load("/tmp", &nset, &loaded, err, sizeof(err)), -1);
  CHECK(strstr(err, "directory") != NULL);
}

int main(void) {
  test_forms();
  test_expansion();
  test_errors();
  test_load();
  envfile_free(&ef);
  return check_summary();
}
