/* The upgrade hand-off (http_request_upgrade) and raw byte streams on
 * detached connections: the 101 head, bytes that followed the request head,
 * partial consumption and pause/resume, writes, closing, EOF, server
 * shutdown, and the refusals. */
#include "http_test_util.h"

static http_request *g_req;
static bool g_upgrade_in_callback; /* upgrade from on_body_end */
static int g_done, g_disconnects;

typedef struct stream_state {
  char data[4096];
  size_t len;
  size_t take_max; /* on_data takes at most this much (0: all) */
  int closes, shutdowns, drains;
  http_stream *st;
} stream_state;
static stream_state g_ss;

static size_t s_on_data(http_stream *st, const char *data, size_t len) {
  CHECK(http_stream_user(st) == &g_ss);
  size_t take = g_ss.take_max && len > g_ss.take_max ? g_ss.take_max : len;
  if (g_ss.len + take < sizeof(g_ss.data)) {
    memcpy(g_ss.data + g_ss.len, data, take);
    g_ss.len += take;
  }
  /* an echo, like a protocol answering inside its input callback */
  if (take >= 4 && memcmp(data, "ECHO", 4) == 0)
    CHECK(http_stream_write(st, "<", 1, data, take) == 0);
  return take;
}
static void s_on_close(http_stream *st) {
  (void)st;
  g_ss.closes++;
  g_ss.st = NULL;
}
static void s_on_shutdown(http_stream *st) {
  g_ss.shutdowns++;
  http_stream_write(st, "bye", 3, NULL, 0);
  http_stream_close(st, true);
}
static void s_on_drain(http_stream *st) {
  (void)st;
  g_ss.drains++;
}
static const http_stream_callbacks stream_cb = {
    .on_data = s_on_data,
    .on_close = s_on_close,
    .on_shutdown = s_on_shutdown,
    .on_drain = s_on_drain,
};

static const http_header up_headers[] = {{"Upgrade", 7, "test", 4},
                                         {"Connection", 10, "Upgrade", 7}};

static void u_on_request(http_request *req) { g_req = req; }
static void u_on_body_end(http_request *req) {
  if (g_upgrade_in_callback) {
    CHECK(http_request_upgrade(req, up_headers, 2, &stream_cb, &g_ss, &g_ss.st) == 0);
    g_req = NULL;
  }
}
static void u_on_disconnect(http_request *req) {
  (void)req;
  g_disconnects++;
}
static void u_on_done(http_request *req) {
  (void)req;
  g_done++;
  g_req = NULL;
}

static http_server *upgrade_server(void) {
  http_config cfg;
  http_config_init(&cfg);
  http_callbacks cb = {.on_request = u_on_request,
                       .on_body_end = u_on_body_end,
                       .on_disconnect = u_on_disconnect,
                       .on_request_done = u_on_done};
  return http_server_new(uv_default_loop(), &cfg, &cb, NULL);
}

static capture g_out;

static http_conn *start(http_server *srv, const char *in) {
  memset(&g_ss, 0, sizeof(g_ss));
  g_req = NULL;
  g_done = g_disconnects = 0;
  capture_reset(&g_out);
  http_conn *c = http_conn_new_detached(srv, capture_sink, &g_out);
  http_conn_feed(c, in, strlen(in));
  return c;
}

static const char UPGRADE_REQ[] = "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                                  "Upgrade: test\r\n\r\n";

static void test_basic(http_server *srv) {
  char in[512];
  snprintf(in, sizeof(in), "%sHELLO", UPGRADE_REQ);
  http_conn *c = start(srv, in);
  CHECK(g_req != NULL && g_req->upgrade);
  CHECK(g_out.len == 0);
  if (!g_req) {
    http_conn_free_detached(c);
    return;
  }
  http_stream *st = NULL;
  CHECK(http_request_upgrade(g_req, up_headers, 2, &stream_cb, &g_ss, &st) == 0);
  g_ss.st = st;
  CHECK(st != NULL);
  CHECK(g_done == 1);
  CHECK(g_out.data && strncmp(g_out.data, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
  CHECK(capture_count(&g_out, "Upgrade: test\r\n") == 1);
  CHECK(capture_count(&g_out, "server: appbin\r\n") == 1);
  CHECK(capture_count(&g_out, "content-length") == 0);
  CHECK(capture_count(&g_out, "\r\n\r\n") == 1);
  /* what followed the head arrived inside the upgrade call */
  CHECK(g_ss.len == 5 && memcmp(g_ss.data, "HELLO", 5) == 0);
  /* more input, and an echo written from inside on_data */
  http_conn_feed(c, "ECHO1", 5);
  CHECK(g_ss.len == 10);
  CHECK(capture_count(&g_out, "<ECHO1") == 1);
  /* writes from outside a callback, a large one too */
  CHECK(http_stream_write(st, "ab", 2, "cd", 2) == 0);
  CHECK(capture_count(&g_out, "abcd") == 1);
  static char big[100000];
  memset(big, 'z', sizeof(big));
  size_t before = g_out.len;
  CHECK(http_stream_write(st, "H", 1, big, sizeof(big)) >= 0);
  CHECK(g_out.len == before + 1 + sizeof(big));
  CHECK(http_stream_pending(st) == 0);
  /* partial consumption pauses delivery until resume */
  g_ss.take_max = 2;
  http_conn_feed(c, "123456", 6);
  CHECK(g_ss.len == 12);
  http_conn_feed(c, "78", 2); /* buffered behind the paused stream */
  CHECK(g_ss.len == 12);
  g_ss.take_max = 0;
  http_stream_resume(st);
  CHECK(g_ss.len == 18 && memcmp(g_ss.data + 10, "12345678", 8) == 0);
  /* explicit pause */
  http_stream_pause(st);
  http_conn_feed(c, "X", 1);
  CHECK(g_ss.len == 18);
  http_stream_resume(st);
  CHECK(g_ss.len == 19);
  /* graceful close: on_close inside, then the connection closes */
  CHECK(http_stream_write(st, "last", 4, NULL, 0) == 0);
  http_stream_close(st, true);
  CHECK(g_ss.closes == 1);
  CHECK(http_conn_is_closed(c));
  CHECK(capture_count(&g_out, "last") == 1);
  CHECK(g_disconnects == 0);
  http_conn_free_detached(c);
  CHECK(g_ss.closes == 1);
}

static void test_in_callback(http_server *srv) {
  char in[512];
  /* the upgrade happens inside on_body_end, while llhttp runs: the bytes
   * after the head still reach the stream, and nothing is parsed as HTTP */
  snprintf(in, sizeof(in), "%sGET / HTTP/1.1\r\n\r\n", UPGRADE_REQ);
  g_upgrade_in_callback = true;
  http_conn *c = start(srv, in);
  g_upgrade_in_callback = false;
  CHECK(g_done == 1);
  CHECK(g_ss.st != NULL);
  CHECK(g_ss.len == 18 && memcmp(g_ss.data, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
  CHECK(capture_count(&g_out, "HTTP/1.1 ") == 1);
  /* EOF from the peer ends the stream */
  http_conn_feed_eof(c);
  CHECK(g_ss.closes == 1);
  CHECK(g_ss.st == NULL);
  CHECK(http_conn_is_closed(c));
  http_conn_free_detached(c);
}

static void test_refusals(http_server *srv) {
  http_stream *st = NULL;
  /* not an upgrade request */
  http_conn *c = start(srv, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(g_req != NULL);
  if (g_req) {
    CHECK(http_request_upgrade(g_req, up_headers, 2, &stream_cb, &g_ss, &st) == HTTP_ESTATE);
    http_response_abort(g_req);
  }
  http_conn_free_detached(c);
  /* bad header, response already started */
  c = start(srv, UPGRADE_REQ);
  CHECK(g_req != NULL);
  if (g_req) {
    http_header bad = {"x y", 3, "1", 1};
    CHECK(http_request_upgrade(g_req, &bad, 1, &stream_cb, &g_ss, &st) == HTTP_EINVAL_HEADER_NAME);
    CHECK(g_out.len == 0);
    CHECK(http_response_start(g_req, 403, NULL, 0) == 0);
    CHECK(http_request_upgrade(g_req, up_headers, 2, &stream_cb, &g_ss, &st) == HTTP_ESTATE);
    CHECK(http_response_write(g_req, NULL, 0, false) == 0);
    CHECK(capture_count(&g_out, "HTTP/1.1 403 Forbidden") == 1);
  }
  http_conn_free_detached(c);
  /* the body of an upgrade request has not arrived yet */
  c = start(srv, "GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: "
                 "x\r\nContent-Length: 5\r\n\r\nab");
  CHECK(g_req != NULL);
  if (g_req) {
    CHECK(http_request_upgrade(g_req, up_headers, 2, &stream_cb, &g_ss, &st) == HTTP_ESTATE);
    http_response_abort(g_req);
  }
  http_conn_free_detached(c);
}

static void test_shutdown(http_server *srv) {
  http_conn *c = start(srv, UPGRADE_REQ);
  CHECK(g_req != NULL);
  if (!g_req) {
    http_conn_free_detached(c);
    return;
  }
  CHECK(http_request_upgrade(g_req, up_headers, 0, &stream_cb, &g_ss, &g_ss.st) == 0);
  http_server_shutdown(srv, NULL);
  CHECK(g_ss.shutdowns == 1);
  CHECK(g_ss.closes == 1);
  CHECK(capture_count(&g_out, "bye") == 1);
  CHECK(http_conn_is_closed(c));
  http_conn_free_detached(c);
}

int main(void) {
  http_server *srv = upgrade_server();
  test_basic(srv);
  test_in_callback(srv);
  test_refusals(srv);
  test_shutdown(srv);
  http_server_free(srv);
  capture_reset(&g_out);
  if (g_failures) {
    fprintf(stderr, "%d failure(s)\n", g_failures);
    return 1;
  }
  printf("test_http_upgrade: ok\n");
  return 0;
}
