/* Request parsing through a detached connection: valid requests, pipelining,
 * and the smuggling / malformed shapes that must get a 400 (or 431/505) and
 * a closed connection. Every case is fed whole, byte by byte, and in 7-byte
 * pieces; the output must not depend on the segmentation. */
#include "http_test_util.h"

typedef struct pcase {
  const char *name;
  const char *in;
  int status;       /* status of the last response (0: no response at all) */
  int n_ok;         /* number of 200 responses */
  bool closed;      /* connection closed at the end */
  const char *body; /* substring expected in the output, or NULL */
} pcase;

#define R "\r\n"
static const pcase cases[] = {
    /* --- valid --- */
    {"simple", "GET / HTTP/1.1" R "Host: a" R R, 200, 1, false, "GET / body=0"},
    {"http10", "GET / HTTP/1.0" R R, 200, 1, true, "connection: close"},
    {"http10-keepalive", "GET / HTTP/1.0" R "Connection: keep-alive" R R, 200, 1, false,
     "connection: keep-alive"},
    {"conn-close", "GET / HTTP/1.1" R "Host: t" R "Connection: close" R R, 200, 1, true,
     "connection: close"},
    {"content-length", "POST /p HTTP/1.1" R "Host: t" R "Content-Length: 5" R R "hello", 200, 1,
     false, "POST /p body=5"},
    {"chunked",
     "POST /c HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "5" R "hello" R "3" R "abc" R
     "0" R R,
     200, 1, false, "body=8"},
    {"chunked-ext",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "5;a=b" R "hello" R "0" R R,
     200, 1, false, "body=5"},
    {"chunked-trailer",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "1" R "x" R "0" R
     "X-T: y" R R,
     200, 1, false, "body=1"},
    {"pipelined",
     "GET /1 HTTP/1.1" R "Host: t" R R "GET /2 HTTP/1.1" R "Host: t" R R "POST /3 HTTP/1.1" R
     "Host: t" R "Content-Length: 2" R R "ab",
     200, 3, false, "POST /3 body=2"},
    {"pipeline-then-close",
     "GET /1 HTTP/1.1" R "Host: t" R "Connection: close" R R "GET /2 HTTP/1.1" R "Host: t" R R, 200,
     1, true, NULL},
    {"leading-crlf", R R "GET / HTTP/1.1" R "Host: t" R R, 200, 1, false, NULL},
    {"query", "GET /a%20b?x=1&y HTTP/1.1" R "Host: t" R R, 200, 1, false, "GET /a%20b?x=1&y"},
    {"absolute-form", "GET http://h/p?q HTTP/1.1" R "Host: t" R R, 200, 1, false, NULL},
    {"options-star", "OPTIONS * HTTP/1.1" R "Host: t" R R, 200, 1, false, "OPTIONS *"},
    {"upgrade",
     "GET / HTTP/1.1" R "Host: t" R "Connection: Upgrade" R "Upgrade: websocket" R R "xyz", 200, 1,
     true, NULL},
    {"empty-value", "GET / HTTP/1.1" R "Host: t" R "X:" R "Y:  " R R, 200, 1, false, NULL},
    {"obs-text-value", "GET / HTTP/1.1" R "Host: t" R "X: caf\xe9" R R, 200, 1, false, NULL},
    /* --- malformed / smuggling: 400 + close --- */
    {"no-host", "GET / HTTP/1.1" R R, 400, 0, true, "Invalid HTTP request"},
    {"two-hosts", "GET / HTTP/1.1" R "Host: a" R "Host: b" R R, 400, 0, true, NULL},
    {"two-hosts-http10", "GET / HTTP/1.0" R "Host: a" R "Host: b" R R, 400, 0, true, NULL},
    {"cl-and-te",
     "POST / HTTP/1.1" R "Host: t" R "Content-Length: 3" R "Transfer-Encoding: chunked" R R "0" R R,
     400, 0, true, "Invalid HTTP request"},
    {"te-and-cl",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R "Content-Length: 3" R R "0" R R,
     400, 0, true, NULL},
    {"cl-dup-same",
     "POST / HTTP/1.1" R "Host: t" R "Content-Length: 3" R "Content-Length: 3" R R "abc", 400, 0,
     true, NULL},
    {"cl-dup-diff",
     "POST / HTTP/1.1" R "Host: t" R "Content-Length: 3" R "Content-Length: 4" R R "abcd", 400, 0,
     true, NULL},
    {"cl-list", "POST / HTTP/1.1" R "Host: t" R "Content-Length: 3, 3" R R "abc", 400, 0, true,
     NULL},
    {"cl-plus", "POST / HTTP/1.1" R "Host: t" R "Content-Length: +3" R R "abc", 400, 0, true, NULL},
    {"cl-neg", "POST / HTTP/1.1" R "Host: t" R "Content-Length: -1" R R, 400, 0, true, NULL},
    {"cl-hex", "POST / HTTP/1.1" R "Host: t" R "Content-Length: 0x3" R R "abc", 400, 0, true, NULL},
    {"cl-space", "POST / HTTP/1.1" R "Host: t" R "Content-Length: 1 2" R R, 400, 0, true, NULL},
    {"cl-empty", "POST / HTTP/1.1" R "Host: t" R "Content-Length:" R R, 400, 0, true, NULL},
    {"cl-overflow", "POST / HTTP/1.1" R "Host: t" R "Content-Length: 99999999999999999999999" R R,
     400, 0, true, NULL},
    {"te-chunked-gzip",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked, gzip" R R "0" R R, 400, 0, true,
     NULL},
    {"te-gzip", "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: gzip" R R "abc", 400, 0, true,
     NULL},
    {"te-twice",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R "Transfer-Encoding: chunked" R R
     "0" R R,
     400, 0, true, NULL},
    {"te-xchunked", "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: xchunked" R R "0" R R, 400,
     0, true, NULL},
    {"te-space-before-colon",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding : chunked" R R "0" R R, 400, 0, true, NULL},
    {"te-vtab",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding:\x0b"
     "chunked" R R "0" R R,
     400, 0, true, NULL},
    {"te-http10", "POST / HTTP/1.0" R "Transfer-Encoding: chunked" R R "0" R R, 400, 0, true, NULL},
    {"space-before-colon", "GET / HTTP/1.1" R "Host: t" R "Host : a" R R, 400, 0, true, NULL},
    {"tab-before-colon", "GET / HTTP/1.1" R "Host: t" R "Host\t: a" R R, 400, 0, true, NULL},
    {"obs-fold", "GET / HTTP/1.1" R "Host: t" R "X: a" R " b" R R, 400, 0, true, NULL},
    {"obs-fold-tab", "GET / HTTP/1.1" R "Host: t" R "X: a" R "\tb" R R, 400, 0, true, NULL},
    {"leading-space-header", "GET / HTTP/1.1" R "Host: t" R " Host: a" R R, 400, 0, true, NULL},
    {"bare-lf", "GET / HTTP/1.1\nHost: a\n\n", 400, 0, true, NULL},
    {"bare-lf-header", "GET / HTTP/1.1" R "Host: a\nX: b" R R, 400, 0, true, NULL},
    {"bare-cr-header", "GET / HTTP/1.1" R "Host: a\rX: b" R R, 400, 0, true, NULL},
    {"bare-cr-end", "GET / HTTP/1.1" R "Host: a" R "\rGET /smuggled HTTP/1.1" R "Host: t" R R, 400,
     0, true, NULL},
    {"empty-name", "GET / HTTP/1.1" R "Host: t" R ": x" R R, 400, 0, true, NULL},
    {"no-colon", "GET / HTTP/1.1" R "Host: t" R "Xyz" R R, 400, 0, true, NULL},
    {"bad-name-char", "GET / HTTP/1.1" R "Host: t" R "X(y): z" R R, 400, 0, true, NULL},
    {"nul-in-value", "GET / HTTP/1.1" R "Host: t" R "X: a\0b" R R, 400, 0, true, NULL},
    {"ctl-in-value",
     "GET / HTTP/1.1" R "Host: t" R "X: a\x01"
     "b" R R,
     400, 0, true, NULL},
    {"del-in-value",
     "GET / HTTP/1.1" R "Host: t" R "X: a\x7f"
     "b" R R,
     400, 0, true, NULL},
    {"space-in-target", "GET /a b HTTP/1.1" R "Host: t" R R, 400, 0, true, NULL},
    {"ctl-in-target", "GET /a\x01 HTTP/1.1" R "Host: t" R R, 400, 0, true, NULL},
    {"two-spaces", "GET  / HTTP/1.1" R "Host: t" R R, 400, 0, true, NULL},
    {"lowercase-method", "get / HTTP/1.1" R "Host: t" R R, 400, 0, true, NULL},
    {"unknown-method", "FOO / HTTP/1.1" R "Host: t" R R, 400, 0, true, NULL},
    {"http09", "GET /" R R, 400, 0, true, NULL},
    {"http12", "GET / HTTP/1.2" R R, 400, 0, true, NULL},
    {"http20", "GET / HTTP/2.0" R R, 505, 0, true, NULL},
    {"lowercase-http", "GET / http/1.1" R R, 400, 0, true, NULL},
    {"chunk-size-bad",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "zz" R "abc" R "0" R R, 400,
     0, true, NULL},
    {"chunk-size-neg",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "-3" R "abc" R "0" R R, 400,
     0, true, NULL},
    {"chunk-size-0x",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "0x3" R "abc" R "0" R R, 400,
     0, true, NULL},
    {"chunk-size-space",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "3 " R "abc" R "0" R R, 400,
     0, true, NULL},
    {"chunk-size-overflow",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "fffffffffffffffffff" R
     "abc" R "0" R R,
     400, 0, true, NULL},
    {"chunk-no-crlf",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "3" R "abcX0" R R, 400, 0,
     true, NULL},
    {"chunk-bare-lf",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "3\nabc\n0\n\n", 400, 0, true,
     NULL},
    {"chunk-ext-ctl",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "3;a\x01" R "abc" R "0" R R,
     400, 0, true, NULL},
    {"chunk-ext-lf",
     "POST / HTTP/1.1" R "Host: t" R "Transfer-Encoding: chunked" R R "3;a\nabc" R "0" R R, 400, 0,
     true, NULL},
    /* second request of a pipeline is broken: first answered, then 400 */
    {"pipeline-then-garbage", "GET /1 HTTP/1.1" R "Host: t" R R "GARBAGE" R R, 400, 1, true, NULL},
    {"get-body-no-length", "GET / HTTP/1.1" R "Host: t" R R "abc", 400, 1, true, NULL},
};

static int last_status(const capture *out) {
  const char *p = out->data, *last = NULL;
  while (p && (p = strstr(p, "HTTP/1.1 ")) != NULL) {
    if (strncmp(p + 9, "100", 3) != 0)
      last = p;
    p += 9;
  }
  return last ? atoi(last + 9) : 0;
}

static void run_case(http_server *srv, const pcase *pc, size_t len, size_t step) {
  capture out = {0};
  bool closed = run_conn(srv, pc->in, len, step, &out);
  int st = last_status(&out);
  int n_ok = capture_count(&out, "HTTP/1.1 200 ");
  bool ok = st == pc->status && n_ok == pc->n_ok && closed == pc->closed &&
            (pc->body == NULL || (out.data && strstr(out.data, pc->body)));
  if (!ok) {
    fprintf(stderr,
            "case %s (step %zu): status %d (want %d), 200s %d (want %d), closed %d (want %d)\n%s\n",
            pc->name, step, st, pc->status, n_ok, pc->n_ok, closed, pc->closed,
            out.data ? out.data : "(no output)");
    g_failures++;
  }
  capture_reset(&out);
}

static void test_limits(void) {
  http_config cfg;
  http_config_init(&cfg);
  cfg.max_head_size = 1024;
  cfg.max_headers = 10;
  http_server *srv = test_server(&cfg);
  char big[4096];
  /* one huge header */
  int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: t\r\nX: %02000d\r\n\r\n", 0);
  for (size_t step = 1; step <= (size_t)n; step = step * 3 + 1) {
    capture out = {0};
    CHECK(run_conn(srv, big, (size_t)n, step, &out));
    CHECK(out.data && strncmp(out.data, "HTTP/1.1 431 ", 13) == 0);
    capture_reset(&out);
  }
  /* too many headers */
  n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: t\r\n");
  for (int i = 0; i < 11; i++)
    n += snprintf(big + n, sizeof(big) - (size_t)n, "X%d: y\r\n", i);
  n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n");
  capture out = {0};
  CHECK(run_conn(srv, big, (size_t)n, (size_t)n, &out));
  CHECK(out.data && strncmp(out.data, "HTTP/1.1 431 ", 13) == 0);
  capture_reset(&out);
  /* ten headers (Host and nine more) are fine */
  n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: t\r\n");
  for (int i = 0; i < 9; i++)
    n += snprintf(big + n, sizeof(big) - (size_t)n, "X%d: y\r\n", i);
  n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n");
  CHECK(!run_conn(srv, big, (size_t)n, 1, &out));
  CHECK(out.data && strncmp(out.data, "HTTP/1.1 200 ", 13) == 0);
  capture_reset(&out);
  /* a long target: 414 (RFC 9110 15.5.15), not 431 */
  n = snprintf(big, sizeof(big), "GET /%02000d HTTP/1.1\r\nHost: t\r\n\r\n", 0);
  CHECK(run_conn(srv, big, (size_t)n, 100, &out));
  CHECK(out.data && strncmp(out.data, "HTTP/1.1 414 ", 13) == 0);
  capture_reset(&out);
  /* chunk extensions flood */
  n = snprintf(big, sizeof(big),
               "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;");
  for (int i = 0; i < 3000; i++)
    big[n++] = 'a';
  n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\nx\r\n0\r\n\r\n");
  CHECK(run_conn(srv, big, (size_t)n, 512, &out));
  CHECK(out.data && strstr(out.data, "HTTP/1.1 400 ") != NULL);
  capture_reset(&out);
  http_server_free(srv);
}

/* The request fields handed to the consumer. */
static http_request g_seen;
static char g_seen_hdrs[512];
static void seen_on_request(http_request *req) {
  g_seen = *req;
  int n = 0;
  for (size_t i = 0; i < req->n_headers; i++)
    n += snprintf(g_seen_hdrs + n, sizeof(g_seen_hdrs) - (size_t)n, "%.*s=%.*s;",
                  (int)req->headers[i].name_len, req->headers[i].name,
                  (int)req->headers[i].value_len, req->headers[i].value);
  http_response_start(req, 204, NULL, 0);
  http_response_write(req, NULL, 0, false);
}

static void test_request_fields(void) {
  http_config cfg;
  http_config_init(&cfg);
  http_callbacks cb = {.on_request = seen_on_request};
  http_server *srv = http_server_new(uv_default_loop(), &cfg, &cb, NULL);
  const char *in = "PUT /a/b?c=d&e HTTP/1.1\r\nHost: x\r\nX-Mixed-Case:  v  v \t\r\n"
                   "Content-Length: 0\r\nExpect: 100-Continue\r\n\r\n";
  for (size_t step = 1; step <= strlen(in); step += 5) {
    capture out = {0};
    http_conn *c = http_conn_new_detached(srv, capture_sink, &out);
    memset(&g_seen, 0, sizeof(g_seen));
    for (size_t i = 0; i < strlen(in); i += step)
      http_conn_feed(c, in + i, strlen(in) - i < step ? strlen(in) - i : step);
    CHECK(strcmp(g_seen.method, "PUT") == 0);
    CHECK(g_seen.target_len == 10 && g_seen.path_len == 4 && g_seen.query_len == 5);
    CHECK(g_seen.version_major == 1 && g_seen.version_minor == 1);
    CHECK(g_seen.content_length == 0 && !g_seen.chunked && g_seen.keep_alive);
    CHECK(g_seen.expect_continue);
    CHECK(g_seen.n_headers == 4);
    CHECK(strcmp(g_seen_hdrs, "host=x;x-mixed-case=v  v;content-length=0;expect=100-Continue;") ==
          0);
    CHECK(out.data && strncmp(out.data, "HTTP/1.1 204 No Content\r\n", 25) == 0);
    CHECK(out.data && strstr(out.data, "content-length") == NULL);
    CHECK(!http_conn_is_closed(c));
    http_conn_free_detached(c);
    capture_reset(&out);
  }
  http_server_free(srv);
}

int main(void) {
  http_server *srv = test_server(NULL);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t len = strlen(cases[i].in);
    if (strcmp(cases[i].name, "nul-in-value") == 0)
      len = strlen("GET / HTTP/1.1\r\nHost: t\r\nX: a") + 1 + strlen("b\r\n\r\n");
    /* nul-in-value: the literal holds a NUL; feed the full array */
    if (len > strlen(cases[i].in)) {
      static char buf[128];
      memcpy(buf, "GET / HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n", len);
      pcase pc = cases[i];
      pc.in = buf;
      run_case(srv, &pc, len, len);
      run_case(srv, &pc, len, 1);
      continue;
    }
    run_case(srv, &cases[i], len, len);
    run_case(srv, &cases[i], len, 1);
    run_case(srv, &cases[i], len, 7);
  }
  http_server_free(srv);
  test_limits();
  test_request_fields();
  if (g_failures) {
    fprintf(stderr, "%d failure(s)\n", g_failures);
    return 1;
  }
  printf("ok: %zu parser cases\n", sizeof(cases) / sizeof(cases[0]));
  return 0;
}
