/* cli: every kind of option (string, integer, seconds, --x/--no-x, flags,
 * levels, enums, repeatable headers) in both "--opt v" and "--opt=v" forms,
 * bad values, unknown options and missing values (exit status 2 and a
 * message naming the flag), the precedence built-in < manifest
 * default.<opt> < APPBIN_<OPT> < argv, python mode detection, the
 * healthcheck subcommand, --help and --version. */
#include "check.h"
#include "cli.h"

#include <stdlib.h>
#include <string.h>

extern char **environ;

#define ARGV(...) ((char *[]){__VA_ARGS__, NULL})

static char err[512];
static cli_options o;

static int argc_of(char **argv) {
  int n = 0;
  while (argv[n])
    n++;
  return n;
}

static int run_mf(const manifest *mf, char **argv) {
  memset(err, 0, sizeof(err));
  memset(&o, 0x5a, sizeof(o));
  return cli_parse(argc_of(argv), argv, mf, &o, err, sizeof(err));
}

static int run(char **argv) { return run_mf(NULL, argv); }

/* Removes every APPBIN_* variable, so the caller's environment cannot
 * change the results. */
static void clear_appbin_env(void) {
  for (;;) {
    char name[256] = "";
    for (char **e = environ; e && *e; e++) {
      if (strncmp(*e, "APPBIN_", 7) == 0) {
        size_t n = strcspn(*e, "=");
        if (n < sizeof(name)) {
          memcpy(name, *e, n);
          name[n] = '\0';
        }
        break;
      }
    }
    if (!name[0])
      return;
    unsetenv(name);
  }
}

static manifest mf;

static void parse_manifest(const char *text) {
  char merr[256];
  manifest_free(&mf);
  if (manifest_parse(&mf, text, strlen(text), merr, sizeof(merr)) != 0) {
    fprintf(stderr, "bad test manifest: %s\n", merr);
    exit(2);
  }
}

static void test_defaults(void) {
  if (!CHECK_EQ_INT(run(ARGV("app.bin")), 0))
    fprintf(stderr, "  err: %s\n", err);
  CHECK_EQ_INT(o.mode, CLI_SERVE);
  CHECK(o.app == NULL);
  CHECK_EQ_INT(o.factory, 0);
  CHECK_STR(o.host, "127.0.0.1");
  CHECK_EQ_INT(o.port, 8000);
  CHECK(o.uds == NULL);
  CHECK_EQ_INT(o.fd, -1);
  CHECK_EQ_INT(o.backlog, 2048);
  CHECK_EQ_INT(o.workers, 1);
  CHECK_STR(o.root_path, "");
  CHECK_EQ_INT(o.proxy_headers, 1);
  CHECK_STR(o.forwarded_allow_ips, "127.0.0.1");
  CHECK_EQ_INT(o.server_header, 1);
  CHECK_EQ_INT(o.date_header, 1);
  CHECK_EQ_INT(o.nheaders, 0);
  CHECK_EQ_INT(o.h11_max_incomplete_event_size, 16384);
  CHECK(o.timeout_keep_alive == 5);
  CHECK(o.timeout_request_header == 10);
  CHECK(o.timeout_graceful_shutdown == 30);
  CHECK_EQ_INT(o.limit_concurrency, 0);
  CHECK_EQ_INT(o.limit_max_requests, 0);
  CHECK_EQ_INT(o.limit_max_requests_jitter, 0);
  CHECK(o.timeout_worker_healthcheck == 30);
  CHECK_EQ_INT(o.lifespan, LIFESPAN_AUTO);
  CHECK_EQ_INT(o.log_level, LOG_INFO);
  CHECK_EQ_INT(o.access_log, 1);
  CHECK_STR(o.ws, "auto");
  CHECK_EQ_INT(o.ws_max_size, 16 * 1024 * 1024);
  CHECK_EQ_INT(o.ws_max_queue, 32);
  CHECK(o.ws_ping_interval == 20);
  CHECK(o.ws_ping_timeout == 20);
  CHECK_EQ_INT(o.ws_per_message_deflate, 1);
  CHECK_STR(o.health_path, "/health");
  CHECK(o.health_timeout == 5);
  CHECK_EQ_INT(o.python_argc, 0);
  CHECK(o.python_argv == NULL);

  /* The packed app and factory flag come from the manifest. */
  parse_manifest("format=1\napp=main:app\nfactory=1\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_STR(o.app, "main:app");
  CHECK_EQ_INT(o.factory, 1);
  parse_manifest("format=1\napp=main:app\nfactory=0\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_EQ_INT(o.factory, 0);
  /* argc 0 (execve with an empty argv) is a plain serve. */
  char *none[] = {NULL};
  memset(&o, 0, sizeof(o));
  CHECK_EQ_INT(cli_parse(0, none, NULL, &o, err, sizeof(err)), 0);
  CHECK_EQ_INT(o.mode, CLI_SERVE);
}

static void test_option_kinds(void) {
  /* Integers, both forms. */
  CHECK_EQ_INT(run(ARGV("app.bin", "--port", "9000")), 0);
  CHECK_EQ_INT(o.port, 9000);
  CHECK_EQ_INT(run(ARGV("app.bin", "--port=9000")), 0);
  CHECK_EQ_INT(o.port, 9000);
  CHECK_EQ_INT(run(ARGV("app.bin", "--port", "0")), 0);
  CHECK_EQ_INT(o.port, 0);
  CHECK_EQ_INT(run(ARGV("app.bin", "--port", "65535")), 0);
  CHECK_EQ_INT(o.port, 65535);
  CHECK_EQ_INT(run(ARGV("app.bin", "--port", "1", "--port", "2")), 0);
  CHECK_EQ_INT(o.port, 2); /* the last one wins */
  CHECK_EQ_INT(run(ARGV("app.bin", "--fd", "3", "--backlog", "10", "--workers", "4")), 0);
  CHECK_EQ_INT(o.fd, 3);
  CHECK_EQ_INT(o.backlog, 10);
  CHECK_EQ_INT(o.workers, 4);
  CHECK_EQ_INT(run(ARGV("app.bin", "--limit-max-requests", "9223372036854775807")), 0);
  CHECK(o.limit_max_requests == 9223372036854775807L);
  CHECK_EQ_INT(run(ARGV("app.bin", "--limit-concurrency=100", "--ws-max-size", "1")), 0);
  CHECK_EQ_INT(o.limit_concurrency, 100);
  CHECK_EQ_INT(o.ws_max_size, 1);
  CHECK_EQ_INT(run(ARGV("app.bin", "--h11-max-incomplete-event-size", "1024")), 0);
  CHECK_EQ_INT(o.h11_max_incomplete_event_size, 1024);

  /* Strings. */
  CHECK_EQ_INT(run(ARGV("app.bin", "--host", "0.0.0.0", "--uds=/run/app.sock")), 0);
  CHECK_STR(o.host, "0.0.0.0");
  CHECK_STR(o.uds, "/run/app.sock");
  CHECK_EQ_INT(run(ARGV("app.bin", "--root-path", "")), 0); /* may be empty */
  CHECK_STR(o.root_path, "");
  CHECK_EQ_INT(run(ARGV("app.bin", "--root-path=/api", "--forwarded-allow-ips", "*")), 0);
  CHECK_STR(o.root_path, "/api");
  CHECK_STR(o.forwarded_allow_ips, "*");
  CHECK_EQ_INT(run(ARGV("app.bin", "--forwarded-allow-ips", "10.0.0.0/8, ::1,fd00::/8")), 0);
  CHECK_STR(o.forwarded_allow_ips, "10.0.0.0/8, ::1,fd00::/8");
  CHECK_EQ_INT(run(ARGV("app.bin", "--forwarded-allow-ips", "10.0.0.1/8")), 2);
  CHECK_CONTAINS(err, "--forwarded-allow-ips");
  CHECK_CONTAINS(err, "'10.0.0.1/8' has host bits set");
  CHECK_EQ_INT(run(ARGV("app.bin", "--forwarded-allow-ips", "proxy.local")), 2);
  CHECK_CONTAINS(err, "'proxy.local' is not an IP address");
  CHECK_EQ_INT(run(ARGV("app.bin", "--limit-max-requests-jitter", "50",
                        "--timeout-worker-healthcheck", "2.5")),
               0);
  CHECK_EQ_INT(o.limit_max_requests_jitter, 50);
  CHECK(o.timeout_worker_healthcheck == 2.5);
  CHECK_EQ_INT(run(ARGV("app.bin", "--timeout-worker-healthcheck", "0")), 0);
  CHECK(o.timeout_worker_healthcheck == 0);
  CHECK_EQ_INT(run(ARGV("app.bin", "--host=a=b")), 0); /* the first '=' splits */
  CHECK_STR(o.host, "a=b");
  CHECK_EQ_INT(run(ARGV("app.bin", "--app", "pkg.mod:make_app", "--factory")), 0);
  CHECK_STR(o.app, "pkg.mod:make_app");
  CHECK_EQ_INT(o.factory, 1);

  /* Booleans: --x / --no-x. */
  CHECK_EQ_INT(run(ARGV("app.bin", "--no-access-log")), 0);
  CHECK_EQ_INT(o.access_log, 0);
  CHECK_EQ_INT(run(ARGV("app.bin", "--no-access-log", "--access-log")), 0);
  CHECK_EQ_INT(o.access_log, 1);
  CHECK_EQ_INT(run(ARGV("app.bin", "--no-proxy-headers", "--no-server-header", "--no-date-header",
                        "--no-ws-per-message-deflate")),
               0);
  CHECK_EQ_INT(o.proxy_headers, 0);
  CHECK_EQ_INT(o.server_header, 0);
  CHECK_EQ_INT(o.date_header, 0);
  CHECK_EQ_INT(o.ws_per_message_deflate, 0);

  /* Seconds. */
  CHECK_EQ_INT(run(ARGV("app.bin", "--timeout-keep-alive", "2.5", "--timeout-graceful-shutdown=0")),
               0);
  CHECK(o.timeout_keep_alive == 2.5);
  CHECK(o.timeout_graceful_shutdown == 0);
  CHECK_EQ_INT(run(ARGV("app.bin", "--ws-ping-interval", "1e3", "--ws-ping-timeout", "0.001")), 0);
  CHECK(o.ws_ping_interval == 1000);
  CHECK(o.ws_ping_timeout == 0.001);
  CHECK_EQ_INT(run(ARGV("app.bin", "--timeout-request-header", "10000000")), 0);
  CHECK(o.timeout_request_header == 1e7);

  /* Enumerations. */
  static const struct {
    const char *v;
    cli_lifespan want;
  } spans[] = {{"auto", LIFESPAN_AUTO}, {"on", LIFESPAN_ON}, {"off", LIFESPAN_OFF}};
  for (size_t i = 0; i < 3; i++) {
    CHECK_EQ_INT(run(ARGV("app.bin", "--lifespan", (char *)spans[i].v)), 0);
    CHECK_EQ_INT(o.lifespan, spans[i].want);
  }
  static const char *const levels[] = {"trace", "debug", "info", "warning", "error", "critical"};
  for (int i = 0; i < 6; i++) {
    CHECK_EQ_INT(run(ARGV("app.bin", "--log-level", (char *)levels[i])), 0);
    CHECK_EQ_INT(o.log_level, i);
    CHECK_STR(cli_log_level_name((cli_log_level)i), levels[i]);
  }
  CHECK_EQ_INT(run(ARGV("app.bin", "--log-level=DEBUG")), 0);
  CHECK_EQ_INT(o.log_level, LOG_DEBUG);
  CHECK_EQ_INT(run(ARGV("app.bin", "--ws", "none")), 0);
  CHECK_STR(o.ws, "none");

  /* Repeatable headers, kept as given and in order. */
  CHECK_EQ_INT(run(ARGV("app.bin", "--header", "X:1", "--header=Y: two", "--header", "X:1")), 0);
  CHECK_EQ_INT(o.nheaders, 3);
  CHECK_STR(o.headers[0], "X:1");
  CHECK_STR(o.headers[1], "Y: two");
  CHECK_STR(o.headers[2], "X:1");
  CHECK_EQ_INT(run(ARGV("app.bin", "--header", "X-Empty:")), 0);
  CHECK_EQ_INT(o.nheaders, 1);
  CHECK_EQ_INT(run(ARGV("app.bin", "--header", "X-Tab:\ta\tb")), 0);
  CHECK_EQ_INT(run(ARGV("app.bin", "--header", "!#$%&'*+-.^_`|~0aZ:v")), 0);

  /* Everything at once, in the healthcheck mode too. */
  CHECK_EQ_INT(run(ARGV("app.bin", "healthcheck", "--port", "9001", "--health-path", "/ready",
                        "--health-timeout=0.5")),
               0);
  CHECK_EQ_INT(o.mode, CLI_HEALTHCHECK);
  CHECK_EQ_INT(o.port, 9001);
  CHECK_STR(o.health_path, "/ready");
  CHECK(o.health_timeout == 0.5);
}

/* Expects exit status 2 with every needle in the message. */
static void expect_bad(const char *n1, const char *n2, char **argv, int line) {
  int rc = run(argv);
  char joined[256] = "";
  for (int i = 1; argv[i]; i++)
    snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), " %s", argv[i]);
  check_report_(rc == 2, __FILE__, line, "rc 2 for%s (got %d)", joined, rc);
  if (n1)
    check_report_(strstr(err, n1) != NULL, __FILE__, line, "error \"%s\" holds \"%s\"", err, n1);
  if (n2)
    check_report_(strstr(err, n2) != NULL, __FILE__, line, "error \"%s\" holds \"%s\"", err, n2);
}
#define EXPECT_BAD(n1, n2, ...) expect_bad((n1), (n2), ARGV("app.bin", __VA_ARGS__), __LINE__)

static void test_bad_values(void) {
  EXPECT_BAD("--port", "70000", "--port", "70000");
  EXPECT_BAD("--port", "65536", "--port", "65536");
  EXPECT_BAD("--port", "abc", "--port", "abc");
  EXPECT_BAD("--port", "abc", "--port=abc");
  EXPECT_BAD("--port", NULL, "--port", "-1");
  EXPECT_BAD("--port", NULL, "--port", "9000x");
  EXPECT_BAD("--port", NULL, "--port", "9000.0");
  EXPECT_BAD("--port", NULL, "--port", "");
  EXPECT_BAD("--port", NULL, "--port=");
  EXPECT_BAD("--port", NULL, "--port", "99999999999999999999999");
  EXPECT_BAD("--fd", NULL, "--fd", "2147483648");
  EXPECT_BAD("--workers", NULL, "--workers", "0");
  EXPECT_BAD("--workers", NULL, "--workers", "1025");
  EXPECT_BAD("--backlog", NULL, "--backlog", "0");
  EXPECT_BAD("--h11-max-incomplete-event-size", NULL, "--h11-max-incomplete-event-size", "1023");
  EXPECT_BAD("--limit-max-requests", NULL, "--limit-max-requests", "9223372036854775808");
  EXPECT_BAD("--lifespan", "maybe", "--lifespan", "maybe");
  EXPECT_BAD("--lifespan", NULL, "--lifespan", "");
  EXPECT_BAD("--log-level", "loud", "--log-level", "loud");
  EXPECT_BAD("--log-level", NULL, "--log-level", "");
  EXPECT_BAD("--timeout-keep-alive", "-1", "--timeout-keep-alive", "-1");
  EXPECT_BAD("--timeout-keep-alive", NULL, "--timeout-keep-alive", "nan");
  EXPECT_BAD("--timeout-keep-alive", NULL, "--timeout-keep-alive", "inf");
  EXPECT_BAD("--timeout-keep-alive", NULL, "--timeout-keep-alive", "1e400");
  EXPECT_BAD("--timeout-keep-alive", NULL, "--timeout-keep-alive", "10000001");
  EXPECT_BAD("--timeout-keep-alive", NULL, "--timeout-keep-alive", "5s");
  EXPECT_BAD("--timeout-keep-alive", NULL, "--timeout-keep-alive", "");
  EXPECT_BAD("--ws", NULL, "--ws", "wsproto");
  EXPECT_BAD("--host", NULL, "--host", "");
  EXPECT_BAD("--uds", NULL, "--uds=");
  EXPECT_BAD("--header", NULL, "--header", "nocolon");
  EXPECT_BAD("--header", NULL, "--header", ":value");
  EXPECT_BAD("--header", NULL, "--header", "bad name:1");
  EXPECT_BAD("--header", NULL, "--header", "X\xc3\xa9:1");
  EXPECT_BAD("--header", NULL, "--header", "X:a\r\nInjected: 1");
  EXPECT_BAD("--header", NULL, "--header", "X:a\nb");
  EXPECT_BAD("--header", NULL, "--header", "X:\x01");
  /* --app must be MODULE:ATTR. */
  EXPECT_BAD("--app", "nocolon", "--app", "nocolon");
  EXPECT_BAD("--app", NULL, "--app", ":app");
  EXPECT_BAD("--app", NULL, "--app", "main:");
  /* Flags take no value. */
  EXPECT_BAD("--access-log", "no value", "--access-log=false");
  EXPECT_BAD("--factory", "no value", "--factory=1");
  EXPECT_BAD("--no-access-log", NULL, "--no-access-log=1");

  /* Too many headers. */
  char *argv[2 + 2 * (CLI_MAX_HEADERS + 1) + 1];
  int n = 0;
  argv[n++] = "app.bin";
  for (int i = 0; i <= CLI_MAX_HEADERS; i++) {
    argv[n++] = "--header";
    argv[n++] = "X:1";
  }
  argv[n] = NULL;
  expect_bad("--header", "at most", argv, __LINE__);
  argv[n - 2] = NULL; /* exactly the maximum */
  CHECK_EQ_INT(run(argv), 0);
  CHECK_EQ_INT(o.nheaders, CLI_MAX_HEADERS);
}

static void test_unknown_and_missing(void) {
  EXPECT_BAD("--bogus", NULL, "--bogus");
  EXPECT_BAD("--bogus", NULL, "--bogus=1");
  EXPECT_BAD("--bogus'", NULL, "--bogus=1"); /* the name alone, not "=1" */
  EXPECT_BAD("--Port", NULL, "--Port", "1");
  EXPECT_BAD("--por", NULL, "--por", "1"); /* no prefix matching */
  EXPECT_BAD("--ports", NULL, "--ports", "1");
  EXPECT_BAD("--no-port", NULL, "--no-port");
  EXPECT_BAD("--no-factory", NULL, "--no-factory");
  EXPECT_BAD("--no-", NULL, "--no-");
  EXPECT_BAD("--no-no-access-log", NULL, "--no-no-access-log");
  EXPECT_BAD("unknown option", NULL, "--=1");
  EXPECT_BAD("--port", "--port 9000", "--port 9000"); /* one argument, not two */
  /* Missing values. */
  EXPECT_BAD("--port", "needs a value", "--port");
  EXPECT_BAD("--header", "needs a value", "--header");
  EXPECT_BAD("--lifespan", "needs a value", "--no-access-log", "--lifespan");
  EXPECT_BAD("--log-level", "needs a value", "--log-level");
  /* Not options. */
  EXPECT_BAD("'serve'", NULL, "serve");
  EXPECT_BAD("'--'", NULL, "--");
  EXPECT_BAD("'-'", NULL, "-");
  EXPECT_BAD("'x'", NULL, "--port", "1", "x");
  EXPECT_BAD("'-p'", NULL, "--port", "1", "-p");
  EXPECT_BAD("'python'", NULL, "--port", "1", "python");
  EXPECT_BAD("'healthcheck'", NULL, "--port", "1", "healthcheck");
  /* A value that looks like an option is still the value. */
  EXPECT_BAD("--port", "--workers", "--port", "--workers", "2");
  CHECK_EQ_INT(run(ARGV("app.bin", "--host", "--weird-host")), 0);
  CHECK_STR(o.host, "--weird-host");
}

static void test_precedence(void) {
  /* port: built-in < manifest < environment < argv. */
  parse_manifest("format=1\ndefault.port=8001\n");
  CHECK_EQ_INT(run(ARGV("app.bin")), 0);
  CHECK_EQ_INT(o.port, 8000);
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_EQ_INT(o.port, 8001);
  setenv("APPBIN_PORT", "8002", 1);
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_EQ_INT(o.port, 8002);
  CHECK_EQ_INT(run(ARGV("app.bin")), 0); /* a host with no payload reads it too */
  CHECK_EQ_INT(o.port, 8002);
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin", "--port", "8003")), 0);
  CHECK_EQ_INT(o.port, 8003);
  unsetenv("APPBIN_PORT");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin", "--port=8003")), 0);
  CHECK_EQ_INT(o.port, 8003);

  /* A boolean through the three layers, with dashes as underscores. */
  parse_manifest("format=1\ndefault.access-log=false\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_EQ_INT(o.access_log, 0);
  setenv("APPBIN_ACCESS_LOG", "yes", 1);
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_EQ_INT(o.access_log, 1);
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin", "--no-access-log")), 0);
  CHECK_EQ_INT(o.access_log, 0);
  unsetenv("APPBIN_ACCESS_LOG");
  static const char *const yes[] = {"1", "true", "yes", "on", "TRUE", "On"};
  static const char *const no[] = {"0", "false", "no", "off", "FALSE", "Off"};
  for (int i = 0; i < 6; i++) {
    setenv("APPBIN_SERVER_HEADER", no[i], 1);
    CHECK_EQ_INT(run(ARGV("app.bin")), 0);
    CHECK_EQ_INT(o.server_header, 0);
    setenv("APPBIN_SERVER_HEADER", yes[i], 1);
    CHECK_EQ_INT(run(ARGV("app.bin")), 0);
    CHECK_EQ_INT(o.server_header, 1);
  }
  unsetenv("APPBIN_SERVER_HEADER");

  /* Other kinds through the environment and the manifest. */
  setenv("APPBIN_TIMEOUT_KEEP_ALIVE", "7.5", 1);
  setenv("APPBIN_LOG_LEVEL", "warning", 1);
  setenv("APPBIN_FACTORY", "1", 1);
  setenv("APPBIN_H11_MAX_INCOMPLETE_EVENT_SIZE", "2048", 1);
  parse_manifest("format=1\napp=main:app\ndefault.lifespan=off\ndefault.log-level=error\n"
                 "default.host=0.0.0.0\ndefault.root-path=/x\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK(o.timeout_keep_alive == 7.5);
  CHECK_EQ_INT(o.log_level, LOG_WARNING);
  CHECK_EQ_INT(o.factory, 1);
  CHECK_EQ_INT(o.h11_max_incomplete_event_size, 2048);
  CHECK_EQ_INT(o.lifespan, LIFESPAN_OFF);
  CHECK_STR(o.host, "0.0.0.0");
  CHECK_STR(o.root_path, "/x");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin", "--log-level", "trace", "--lifespan", "on")), 0);
  CHECK_EQ_INT(o.log_level, LOG_TRACE);
  CHECK_EQ_INT(o.lifespan, LIFESPAN_ON);
  unsetenv("APPBIN_TIMEOUT_KEEP_ALIVE");
  unsetenv("APPBIN_LOG_LEVEL");
  unsetenv("APPBIN_FACTORY");
  unsetenv("APPBIN_H11_MAX_INCOMPLETE_EVENT_SIZE");

  /* The app: manifest app=, then default.app=, then APPBIN_APP, then --app. */
  parse_manifest("format=1\napp=packed:app\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_STR(o.app, "packed:app");
  setenv("APPBIN_APP", "env:app", 1);
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_STR(o.app, "env:app");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin", "--app", "argv:app")), 0);
  CHECK_STR(o.app, "argv:app");
  setenv("APPBIN_APP", "broken", 1);
  expect_bad("--app", "broken", ARGV("app.bin"), __LINE__);
  unsetenv("APPBIN_APP");

  /* Bad values in the lower layers are errors too, naming their source. */
  parse_manifest("format=1\ndefault.port=abc\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 2);
  CHECK_CONTAINS(err, "--port");
  CHECK_CONTAINS(err, "payload default");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin", "--port", "1")), 2); /* argv does not hide it */
  parse_manifest("format=1\ndefault.bogus=1\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 2);
  CHECK_CONTAINS(err, "bogus");
  parse_manifest("format=1\ndefault.no-access-log=1\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 2);
  CHECK_CONTAINS(err, "no-access-log");
  parse_manifest("format=1\ndefault.=1\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 2);
  setenv("APPBIN_PORT", "abc", 1);
  CHECK_EQ_INT(run(ARGV("app.bin")), 2);
  CHECK_CONTAINS(err, "APPBIN_PORT");
  CHECK_CONTAINS(err, "--port");
  CHECK_EQ_INT(run(ARGV("app.bin", "--port", "1")), 2);
  setenv("APPBIN_PORT", "", 1);
  CHECK_EQ_INT(run(ARGV("app.bin")), 2);
  unsetenv("APPBIN_PORT");
  setenv("APPBIN_ACCESS_LOG", "maybe", 1);
  CHECK_EQ_INT(run(ARGV("app.bin")), 2);
  CHECK_CONTAINS(err, "APPBIN_ACCESS_LOG");
  unsetenv("APPBIN_ACCESS_LOG");

  /* Unrelated manifest keys and environment variables are ignored. */
  parse_manifest("format=1\npython_version=3.11.2\npreload.x.so=appbin/libs/y.so\n"
                 "defaults.port=1\nDEFAULT.port=1\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin")), 0);
  CHECK_EQ_INT(o.port, 8000);
  setenv("APPBIN_BOGUS", "1", 1);
  setenv("APPBIN_port", "1", 1);
  setenv("PORT", "1", 1);
  CHECK_EQ_INT(run(ARGV("app.bin")), 0);
  CHECK_EQ_INT(o.port, 8000);
  unsetenv("APPBIN_BOGUS");
  unsetenv("APPBIN_port");
  unsetenv("PORT");

  /* Headers from every layer add up. */
  parse_manifest("format=1\ndefault.header=A:1\n");
  setenv("APPBIN_HEADER", "B:2", 1);
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin", "--header", "C:3")), 0);
  CHECK_EQ_INT(o.nheaders, 3);
  CHECK(o.nheaders == 3 && strcmp(o.headers[0], "A:1") == 0 && strcmp(o.headers[1], "B:2") == 0 &&
        strcmp(o.headers[2], "C:3") == 0);
  unsetenv("APPBIN_HEADER");
}

static void test_python_mode(void) {
  const struct {
    int want;
    char **argv;
  } cases[] = {
      {1, ARGV("python3")},
      {1, ARGV("python")},
      {1, ARGV("/usr/local/bin/python3.11", "script.py")},
      {1, ARGV("./python3", "-c", "print(1)")},
      {1, ARGV("app.bin", "python")},
      {1, ARGV("app.bin", "python", "-c", "import sys")},
      {1, ARGV("/opt/app.bin", "python", "--version")},
      {1, ARGV("app.bin", "-c", "import sys")},
      {1, ARGV("app.bin", "-B", "-S", "-I", "-c", "from multiprocessing.spawn import x")},
      {1, ARGV("app.bin", "-m", "pip")},
      {1, ARGV("app.bin", "-V")},
      {1, ARGV("app.bin", "-Wignore")},
      {0, ARGV("app.bin")},
      {0, ARGV("app.bin", "--port", "9000")},
      {0, ARGV("app.bin", "-h")},
      {0, ARGV("app.bin", "--help")},
      {0, ARGV("app.bin", "--version")},
      {0, ARGV("app.bin", "-")},
      {0, ARGV("app.bin", "healthcheck")},
      {0, ARGV("app.bin", "pythonx")},
      {0, ARGV("app.bin", "Python")},
      {0, ARGV("app.bin", "--port", "1", "python")},
      {0, ARGV("/usr/bin/app.bin", "--port", "-c")},
      {1, ARGV("py", "-x")}, /* not python*, but a single-dash option */
      {0, ARGV("/python3/app.bin")},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char **argv = cases[i].argv;
    int want = cases[i].want;
    int got = cli_is_python_mode(argc_of(argv), argv);
    check_report_(got == want, __FILE__, __LINE__, "cli_is_python_mode(%s %s) == %d (got %d)",
                  argv[0], argv[1] ? argv[1] : "", want, got);
  }
  CHECK_EQ_INT(cli_is_python_mode(0, ARGV("ignored")), 0);

  /* python_argv: what follows the program name or "python". */
  CHECK_EQ_INT(run(ARGV("app.bin", "python", "-c", "print(1)")), 0);
  CHECK_EQ_INT(o.mode, CLI_PYTHON);
  CHECK_EQ_INT(o.python_argc, 2);
  CHECK(o.python_argc == 2 && strcmp(o.python_argv[0], "-c") == 0 &&
        strcmp(o.python_argv[1], "print(1)") == 0 && o.python_argv[2] == NULL);
  CHECK_EQ_INT(run(ARGV("app.bin", "python")), 0);
  CHECK_EQ_INT(o.mode, CLI_PYTHON);
  CHECK_EQ_INT(o.python_argc, 0);
  CHECK(o.python_argv && o.python_argv[0] == NULL);
  CHECK_EQ_INT(run(ARGV("app.bin", "-B", "-c", "x")), 0);
  CHECK_EQ_INT(o.python_argc, 3);
  CHECK(o.python_argc == 3 && strcmp(o.python_argv[0], "-B") == 0);
  CHECK_EQ_INT(run(ARGV("python3", "script.py", "--port", "1")), 0);
  CHECK_EQ_INT(o.mode, CLI_PYTHON);
  CHECK_EQ_INT(o.python_argc, 3);
  CHECK(o.python_argc == 3 && strcmp(o.python_argv[0], "script.py") == 0);
  CHECK_EQ_INT(run(ARGV("python3")), 0);
  CHECK_EQ_INT(o.python_argc, 0);
  /* Invoked as python3, "python" is the script to run, like python3 python. */
  CHECK_EQ_INT(run(ARGV("python3", "python", "-x")), 0);
  /* Regression test (was a bug): cli_parse (cli.c, "int skip = argc > 1 && strcmp(argv[1],
   * "python") == 0 ? 2 : 1") drops argv[1] == "python" even when argv[0]
   * already selected python mode: "python3 python -x" runs with
   * python_argv {"-x"} instead of {"python", "-x"}. */
  CHECK_EQ_INT(o.python_argc, 2);
  /* Server options in the environment do not break the interpreter. */
  setenv("APPBIN_PORT", "not-a-port", 1);
  CHECK_EQ_INT(run(ARGV("app.bin", "python", "-c", "x")), 0);
  CHECK_EQ_INT(o.mode, CLI_PYTHON);
  unsetenv("APPBIN_PORT");
  /* The packed app is still known in python mode. */
  parse_manifest("format=1\napp=main:app\n");
  CHECK_EQ_INT(run_mf(&mf, ARGV("app.bin", "-c", "x")), 0);
  CHECK_STR(o.app, "main:app");
}

static void test_modes(void) {
  CHECK_EQ_INT(run(ARGV("app.bin", "--help")), 0);
  CHECK_EQ_INT(o.mode, CLI_HELP);
  CHECK_EQ_INT(run(ARGV("app.bin", "-h")), 0);
  CHECK_EQ_INT(o.mode, CLI_HELP);
  CHECK_EQ_INT(run(ARGV("app.bin", "--version")), 0);
  CHECK_EQ_INT(o.mode, CLI_VERSION);
  CHECK_EQ_INT(run(ARGV("app.bin", "--port", "1", "--help", "--bogus")), 0);
  CHECK_EQ_INT(o.mode, CLI_HELP); /* --help stops parsing */
  CHECK_EQ_INT(run(ARGV("app.bin", "healthcheck")), 0);
  CHECK_EQ_INT(o.mode, CLI_HEALTHCHECK);
  CHECK_EQ_INT(run(ARGV("app.bin", "healthcheck", "--help")), 0);
  CHECK_EQ_INT(o.mode, CLI_HELP);
  CHECK_EQ_INT(run(ARGV("app.bin", "healthcheck", "--version")), 0);
  CHECK_EQ_INT(o.mode, CLI_VERSION);
  EXPECT_BAD("--bogus", NULL, "healthcheck", "--bogus");
  EXPECT_BAD("'healthcheck'", NULL, "healthcheck", "healthcheck");
  /* The healthcheck does not validate the app (it does not load it). */
  CHECK_EQ_INT(run(ARGV("app.bin", "healthcheck", "--app", "nocolon")), 0);
  /* Environment defaults apply to the healthcheck. */
  setenv("APPBIN_PORT", "9100", 1);
  CHECK_EQ_INT(run(ARGV("app.bin", "healthcheck")), 0);
  CHECK_EQ_INT(o.port, 9100);
  unsetenv("APPBIN_PORT");
}

static void test_help_text(void) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!CHECK(f != NULL))
    return;
  cli_print_help(f, "myapp.bin");
  fclose(f);
  CHECK_CONTAINS(text, "usage: myapp.bin [OPTIONS]");
  CHECK_CONTAINS(text, "myapp.bin python [ARGS]");
  CHECK_CONTAINS(text, "myapp.bin healthcheck");
  static const char *const opts[] = {
      "--app MODULE:ATTR",
      "--factory",
      "--host HOST",
      "--port PORT",
      "--uds PATH",
      "--fd FD",
      "--backlog N",
      "--workers N",
      "--root-path PATH",
      "--proxy-headers/--no-proxy-headers",
      "--forwarded-allow-ips IPS",
      "--server-header/--no-server-header",
      "--date-header/--no-date-header",
      "--header NAME:VALUE",
      "--h11-max-incomplete-event-size BYTES",
      "--timeout-keep-alive SECONDS",
      "--timeout-request-header SECONDS",
      "--timeout-graceful-shutdown SECONDS",
      "--limit-concurrency N",
      "--limit-max-requests N",
      "--limit-max-requests-jitter N",
      "--timeout-worker-healthcheck SECONDS",
      "--lifespan auto|on|off",
      "--log-level LEVEL",
      "--access-log/--no-access-log",
      "--ws auto|none",
      "--ws-max-size BYTES",
      "--ws-max-queue N",
      "--ws-ping-interval SECONDS",
      "--ws-ping-timeout SECONDS",
      "--ws-per-message-deflate/--no-ws-per-message-deflate",
      "--health-path PATH",
      "--health-timeout SECONDS",
  };
  for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
    CHECK_CONTAINS(text, opts[i]);
  CHECK(text && strstr(text, "(null)") == NULL);
  CHECK_CONTAINS(text, "exit status");
  /* Every option the help lists parses. */
  for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
    char name[64];
    size_t n = strcspn(opts[i], " /");
    snprintf(name, sizeof(name), "%.*s", (int)n, opts[i]);
    int rc = run(ARGV("app.bin", name, "1"));
    /* "1" is a fine value for most; flags reject it as an argument. */
    check_report_(strstr(err, "unknown option") == NULL, __FILE__, __LINE__,
                  "%s is known (rc %d, err \"%s\")", name, rc, err);
  }
  free(text);
}

/* Messages are cut to the buffer, never past it (ASan). */
static void test_small_err_buffer(void) {
  char **cases[] = {
      ARGV("app.bin", "--lifespan", "maybe"),
      ARGV("app.bin", "--port", "abc"),
      ARGV("app.bin", "--bogus"),
      ARGV("app.bin", "--port"),
      ARGV("app.bin", "stray"),
      ARGV("app.bin", "--app", "x"),
      ARGV("app.bin", "--factory=1"),
      ARGV("app.bin", "--header", "bad"),
  };
  static const size_t sizes[] = {1, 2, 12, 40};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
      char *small = malloc(sizes[k]);
      memset(small, 'x', sizes[k]);
      int rc = cli_parse(argc_of(cases[i]), cases[i], NULL, &o, small, sizes[k]);
      CHECK_EQ_INT(rc, 2);
      CHECK(strnlen(small, sizes[k]) < sizes[k]);
      free(small);
    }
  }
}

int main(void) {
  clear_appbin_env();
  test_defaults();
  test_option_kinds();
  test_bad_values();
  test_unknown_and_missing();
  test_precedence();
  test_python_mode();
  test_modes();
  test_help_text();
  test_small_err_buffer();
  manifest_free(&mf);
  return check_summary();
}
