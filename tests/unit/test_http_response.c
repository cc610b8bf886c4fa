/* Response side: date formatting, header validation, head serialization and
 * framing (content-length, chunked, HEAD, 204, HTTP/1.0), 100-continue,
 * pipelined responses in order, abort -> 500. */
#include "http_test_util.h"

#include <fcntl.h>
#include <unistd.h>

/* A consumer whose behaviour is set per test. */
typedef void (*respond_fn)(http_request *req);
static respond_fn g_respond;
static http_request *g_req;
static int g_done;

static void r_on_request(http_request *req) { g_req = req; }
static void r_on_body_end(http_request *req) {
  if (g_respond)
    g_respond(req);
}
static void r_on_done(http_request *req) {
  (void)req;
  g_req = NULL;
  g_done++;
}

static http_server *resp_server(void) {
  http_config cfg;
  http_config_init(&cfg);
  static const http_header extra[] = {{"x-extra", 7, "1", 1}};
  cfg.default_headers = extra;
  cfg.n_default_headers = 1;
  http_callbacks cb = {
      .on_request = r_on_request, .on_body_end = r_on_body_end, .on_request_done = r_on_done};
  return http_server_new(uv_default_loop(), &cfg, &cb, NULL);
}

static capture g_out;
static http_conn *open_conn(http_server *srv, const char *in) {
  capture_reset(&g_out);
  http_conn *c = http_conn_new_detached(srv, capture_sink, &g_out);
  http_conn_feed(c, in, strlen(in));
  return c;
}

static const http_header ct = {"content-type", 12, "text/plain", 10};

static void resp_fixed(http_request *req) {
  CHECK(http_response_start(req, 200, &ct, 1) == 0);
  CHECK(http_response_write(req, "hello", 5, false) == 0);
}
static void resp_stream(http_request *req) {
  CHECK(http_response_start(req, 201, &ct, 1) == 0);
  CHECK(http_response_write(req, "ab", 2, true) == 0);
  CHECK(http_response_write(req, "", 0, true) == 0);
  CHECK(http_response_write(req, "cde", 3, false) == 0);
}
static void resp_declared(http_request *req) {
  http_header h[2] = {ct, {"Content-Length", 14, "4", 1}};
  CHECK(http_response_start(req, 200, h, 2) == 0);
  CHECK(http_response_write(req, "ab", 2, true) == 0);
  CHECK(http_response_write(req, "cd", 2, false) == 0);
}
static void resp_too_much(http_request *req) {
  http_header h[1] = {{"content-length", 14, "2", 1}};
  CHECK(http_response_start(req, 200, h, 1) == 0);
  CHECK(http_response_write(req, "abc", 3, false) == HTTP_ETOOMUCH);
}
static void resp_short(http_request *req) {
  http_header h[1] = {{"content-length", 14, "10", 2}};
  CHECK(http_response_start(req, 200, h, 1) == 0);
  CHECK(http_response_write(req, "abc", 3, false) == HTTP_ESHORT);
}
static void resp_204(http_request *req) {
  CHECK(http_response_start(req, 204, NULL, 0) == 0);
  CHECK(http_response_write(req, "ignored", 7, false) == 0);
}
static void resp_invalid(http_request *req) {
  http_header bad_name = {"x y", 3, "v", 1};
  http_header bad_name2 = {"", 0, "v", 1};
  http_header bad_value = {"x", 1, "a\r\nb", 4};
  http_header bad_value2 = {"x", 1, "a\0b", 3};
  http_header bad_cl = {"content-length", 14, "1x", 2};
  http_header bad_te = {"transfer-encoding", 17, "gzip", 4};
  CHECK(http_response_start(req, 99, NULL, 0) == HTTP_EINVAL_STATUS);
  CHECK(http_response_start(req, 1000, NULL, 0) == HTTP_EINVAL_STATUS);
  CHECK(http_response_start(req, 100, NULL, 0) == HTTP_EINVAL_STATUS);
  CHECK(http_response_start(req, 200, &bad_name, 1) == HTTP_EINVAL_HEADER_NAME);
  CHECK(http_response_start(req, 200, &bad_name2, 1) == HTTP_EINVAL_HEADER_NAME);
  CHECK(http_response_start(req, 200, &bad_value, 1) == HTTP_EINVAL_HEADER_VALUE);
  CHECK(http_response_start(req, 200, &bad_value2, 1) == HTTP_EINVAL_HEADER_VALUE);
  CHECK(http_response_start(req, 200, &bad_cl, 1) == HTTP_EINVAL_CONTENT_LENGTH);
  CHECK(http_response_start(req, 200, &bad_te, 1) == HTTP_EINVAL_HEADER_VALUE);
  CHECK(http_response_write(req, "x", 1, true) == HTTP_ESTATE); /* not started */
  CHECK(!http_response_started(req));
  CHECK(http_response_start(req, 599, &ct, 1) == 0);
  CHECK(http_response_start(req, 200, &ct, 1) == HTTP_ESTATE);
  CHECK(http_response_write(req, "ok", 2, false) == 0);
}
static void resp_abort(http_request *req) { http_response_abort(req); }
static void resp_own_server_date(http_request *req) {
  http_header h[2] = {{"Server", 6, "mine", 4}, {"date", 4, "yesterday", 9}};
  CHECK(http_response_start(req, 200, h, 2) == 0);
  CHECK(http_response_write(req, NULL, 0, false) == 0);
}

static void expect_out(const char *what, const char *needle, bool present) {
  bool has = g_out.data && strstr(g_out.data, needle);
  if (has != present) {
    fprintf(stderr, "%s: expected %s'%s' in:\n%s\n", what, present ? "" : "no ", needle,
            g_out.data ? g_out.data : "(nothing)");
    g_failures++;
  }
}

static void run(http_server *srv, respond_fn fn, const char *in) {
  g_respond = fn;
  http_conn *c = open_conn(srv, in);
  http_conn_free_detached(c);
}

static void test_framing(void) {
  http_server *srv = resp_server();
  run(srv, resp_fixed, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_out("fixed", "HTTP/1.1 200 OK\r\nserver: appbin\r\ndate: ", true);
  expect_out("fixed",
             " GMT\r\nx-extra: 1\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello",
             true);
  expect_out("fixed", "connection", false);

  run(srv, resp_stream, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_out("stream", "HTTP/1.1 201 Created\r\n", true);
  expect_out("stream", "transfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n", true);

  run(srv, resp_stream, "GET / HTTP/1.0\r\n\r\n");
  expect_out("stream-1.0", "chunked", false);
  expect_out("stream-1.0", "connection: close\r\n\r\nabcde", true);

  run(srv, resp_declared, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_out("declared", "Content-Length: 4\r\n\r\nabcd", true);
  expect_out("declared", "chunked", false);

  run(srv, resp_fixed, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_out("head", "content-type: text/plain\r\n\r\n", true);
  expect_out("head", "hello", false);
  expect_out("head", "content-length", false);

  run(srv, resp_204, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_out("204", "HTTP/1.1 204 No Content\r\n", true);
  expect_out("204", "ignored", false);
  expect_out("204", "content-length", false);

  g_done = 0;
  run(srv, resp_too_much, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(g_done == 1);
  expect_out("too-much", "abc", false);

  g_respond = resp_short;
  http_conn *c =
      open_conn(srv, "GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(http_conn_is_closed(c)); /* short body: close, second request not served */
  CHECK(capture_count(&g_out, "HTTP/1.1 200") == 1);
  http_conn_free_detached(c);

  run(srv, resp_invalid, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_out("invalid", "HTTP/1.1 599 \r\n", true);
  expect_out("invalid", "\r\n\r\nok", true);

  run(srv, resp_abort, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_out("abort", "HTTP/1.1 500 Internal Server Error\r\n", true);
  expect_out("abort", "connection: close\r\n", true);

  run(srv, resp_own_server_date, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_out("own-server", "server: appbin", false);
  expect_out("own-server", "Server: mine\r\ndate: yesterday\r\n", true);
  expect_out("own-server", "content-length: 0\r\n", true);

  /* pipelined: three responses, in order, one flush */
  g_respond = resp_fixed;
  c = open_conn(srv, "GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\nGET /3 "
                     "HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(capture_count(&g_out, "HTTP/1.1 200 OK") == 3);
  CHECK(!http_conn_is_closed(c));
  http_conn_free_detached(c);
  http_server_free(srv);
}

/* The consumer answers later (like the ASGI bridge): pipelined requests wait. */
static void test_async_pipeline(void) {
  http_server *srv = resp_server();
  g_respond = NULL;
  g_done = 0;
  http_conn *c =
      open_conn(srv, "GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(g_req != NULL && g_req->target_len == 2 && g_req->target[1] == '1');
  CHECK(g_out.len == 0);
  http_request *first = g_req;
  resp_fixed(first); /* finishing /1 parses /2 and hands it over */
  CHECK(g_done == 1);
  CHECK(g_req != NULL && g_req->target[1] == '2');
  resp_fixed(g_req);
  CHECK(g_done == 2 && g_req == NULL);
  CHECK(capture_count(&g_out, "HTTP/1.1 200 OK") == 2);
  http_conn_free_detached(c);
  http_server_free(srv);
}

/* 100-continue is sent only when the consumer asks for the body. */
static void test_expect_continue(void) {
  http_server *srv = resp_server();
  g_respond = resp_fixed;
  http_conn *c = open_conn(
      srv, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
  CHECK(g_req != NULL && g_req->expect_continue);
  CHECK(g_out.len == 0);
  http_request_body_resume(g_req);
  expect_out("continue", "HTTP/1.1 100 Continue\r\n\r\n", true);
  http_conn_feed(c, "abc", 3);
  expect_out("continue", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", true);
  http_conn_free_detached(c);

  /* answered without reading the body: no 100, connection closes */
  g_respond = NULL;
  c = open_conn(srv,
                "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
  resp_fixed(g_req);
  expect_out("no-continue", "100 Continue", false);
  CHECK(http_conn_is_closed(c));
  http_conn_free_detached(c);
  http_server_free(srv);
}

/* Body pause/resume at the parser level. */
static int g_body_calls;
static void pb_on_request(http_request *req) { g_req = req; }
static void pb_on_body(http_request *req, const char *d, size_t n) {
  (void)d;
  (void)n;
  g_body_calls++;
  http_request_body_pause(req);
}
static void test_body_pause(void) {
  http_config cfg;
  http_config_init(&cfg);
  http_callbacks cb = {.on_request = pb_on_request,
                       .on_body = pb_on_body,
                       .on_body_end = r_on_body_end,
                       .on_request_done = r_on_done};
  http_server *srv = http_server_new(uv_default_loop(), &cfg, &cb, NULL);
  capture_reset(&g_out);
  http_conn *c = http_conn_new_detached(srv, capture_sink, &g_out);
  const char *in = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
                   "chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n";
  g_body_calls = 0;
  http_conn_feed(c, in, strlen(in));
  CHECK(g_body_calls == 1);
  http_request_body_resume(g_req);
  CHECK(g_body_calls == 2);
  http_request_body_resume(g_req);
  CHECK(g_body_calls == 2);
  resp_fixed(g_req);
  CHECK(!http_conn_is_closed(c));
  http_conn_free_detached(c);

  /* paused on the very last body byte: resuming must still complete the
   * message (llhttp owes on_message_complete without further input) */
  g_respond = resp_fixed;
  capture_reset(&g_out);
  c = http_conn_new_detached(srv, capture_sink, &g_out);
  in = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
  g_body_calls = 0;
  http_conn_feed(c, in, strlen(in));
  CHECK(g_body_calls == 1 && g_out.len == 0);
  http_request_body_resume(g_req);
  CHECK(g_done > 0 && g_req == NULL);
  http_conn_free_detached(c);
  http_server_free(srv);
}

static void test_sendfile(void) {
  http_server *srv = resp_server();
  char path[] = "/tmp/appbin-http-test-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  CHECK(write(fd, "0123456789", 10) == 10);
  close(fd);
  g_respond = NULL;
  http_conn *c = open_conn(srv, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(http_response_start(g_req, 200, NULL, 0) == 0);
  CHECK(http_response_sendfile(g_req, open(path, O_RDONLY), 2, 5, false) == 0);
  expect_out("sendfile", "content-length: 5\r\n\r\n23456", true);
  http_conn_free_detached(c);
  c = open_conn(srv, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(http_response_start(g_req, 200, NULL, 0) == 0);
  http_request *r = g_req;
  CHECK(http_response_sendfile(r, open(path, O_RDONLY), 0, -1, true) >= 0);
  CHECK(http_response_write(r, "!", 1, false) == 0);
  expect_out("sendfile-chunked", "chunked\r\n\r\na\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n", true);
  http_conn_free_detached(c);
  unlink(path);
  http_server_free(srv);
}

static void test_validation_and_date(void) {
  char d[HTTP_DATE_LEN + 1];
  http_date_format(784111777, d);
  CHECK(strcmp(d, "Sun, 06 Nov 1994 08:49:37 GMT") == 0);
  http_date_format(0, d);
  CHECK(strcmp(d, "Thu, 01 Jan 1970 00:00:00 GMT") == 0);
  http_date_cache cache = {0};
  CHECK(strlen(http_date_now(&cache)) == HTTP_DATE_LEN);
  CHECK(http_token_valid("content-type", 12));
  CHECK(http_token_valid("X-A!#$%&'*+.^_`|~9", 18));
  CHECK(!http_token_valid("", 0));
  CHECK(!http_token_valid("a b", 3));
  CHECK(!http_token_valid("a:b", 3));
  CHECK(!http_token_valid("a\xe9", 2));
  CHECK(http_value_valid("", 0));
  CHECK(http_value_valid("a b\tc\xe9", 6));
  CHECK(!http_value_valid("a\rb", 3));
  CHECK(!http_value_valid("a\nb", 3));
  CHECK(!http_value_valid("a\x7f", 2));
  CHECK(strcmp(http_status_reason(404), "Not Found") == 0);
  CHECK(strcmp(http_status_reason(599), "") == 0);
  /* invalid server configuration is refused */
  http_config cfg;
  http_config_init(&cfg);
  http_header bad = {"x", 1, "a\nb", 3};
  cfg.default_headers = &bad;
  cfg.n_default_headers = 1;
  http_callbacks cb = {.on_request = r_on_request};
  CHECK(http_server_new(uv_default_loop(), &cfg, &cb, NULL) == NULL);
}

int main(void) {
  test_validation_and_date();
  test_framing();
  test_async_pipeline();
  test_expect_continue();
  test_body_pause();
  test_sendfile();
  capture_reset(&g_out);
  if (g_failures) {
    fprintf(stderr, "%d failure(s)\n", g_failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
