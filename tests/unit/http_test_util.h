/* Helpers for the HTTP layer unit tests: a detached connection (no socket)
 * whose output is captured, and a tiny consumer. */
#ifndef APPBIN_HTTP_TEST_UTIL_H
#define APPBIN_HTTP_TEST_UTIL_H

#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures;
#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
      g_failures++;                                                                                \
    }                                                                                              \
  } while (0)

typedef struct capture {
  char *data;
  size_t len;
} capture;

static inline void capture_sink(http_conn *c, const char *data, size_t len, void *ud) {
  (void)c;
  capture *cap = ud;
  cap->data = realloc(cap->data, cap->len + len + 1);
  memcpy(cap->data + cap->len, data, len);
  cap->len += len;
  cap->data[cap->len] = '\0';
}

static inline void capture_reset(capture *cap) {
  free(cap->data);
  cap->data = NULL;
  cap->len = 0;
}

/* Count occurrences of needle in the capture. */
static inline int capture_count(const capture *cap, const char *needle) {
  int n = 0;
  const char *p = cap->data;
  size_t nl = strlen(needle);
  while (p && (p = memmem(p, cap->len - (size_t)(p - cap->data), needle, nl)) != NULL) {
    n++;
    p += nl;
  }
  return n;
}

/* --- a consumer: answers "<method> <target> body=<n>" when the body ends;
 * behaviour switches by target. --- */
typedef struct tstate {
  uint64_t body;
  int requests, disconnects, done;
  http_request *held; /* /hold: not answered until the test does */
} tstate;
static tstate g_ts;

static inline void t_on_request(http_request *req) {
  g_ts.requests++;
  req->user = NULL;
  if (req->target_len == 5 && memcmp(req->target, "/hold", 5) == 0)
    g_ts.held = req;
  else if (!(req->target_len == 9 && memcmp(req->target, "/expect-n", 9) == 0))
    http_request_body_resume(req);
  g_ts.body = 0;
}

static inline void t_on_body(http_request *req, const char *data, size_t len) {
  (void)req;
  (void)data;
  g_ts.body += len;
}

static inline void t_on_body_end(http_request *req) {
  if (g_ts.held == req)
    return;
  char buf[256];
  int n = snprintf(buf, sizeof(buf), "%s %.*s body=%llu", req->method, (int)req->target_len,
                   req->target, (unsigned long long)g_ts.body);
  http_header h = {"content-type", 12, "text/plain", 10};
  if (http_response_start(req, 200, &h, 1) == 0)
    http_response_write(req, buf, (size_t)n, false);
  else
    http_response_abort(req);
}

static inline void t_on_disconnect(http_request *req) {
  g_ts.disconnects++;
  if (g_ts.held == req)
    g_ts.held = NULL;
  http_response_abort(req);
}

static inline void t_on_done(http_request *req) {
  (void)req;
  g_ts.done++;
}

static inline http_server *test_server(const http_config *cfg_in) {
  http_config cfg;
  if (cfg_in)
    cfg = *cfg_in;
  else
    http_config_init(&cfg);
  http_callbacks cb = {.on_request = t_on_request,
                       .on_body = t_on_body,
                       .on_body_end = t_on_body_end,
                       .on_disconnect = t_on_disconnect,
                       .on_request_done = t_on_done};
  return http_server_new(uv_default_loop(), &cfg, &cb, NULL);
}

/* Feed input (whole, or in pieces of step bytes) to a fresh detached
 * connection; return whether it ended up closed. */
static inline bool run_conn(http_server *srv, const char *in, size_t len, size_t step,
                            capture *out) {
  memset(&g_ts, 0, sizeof(g_ts));
  http_conn *c = http_conn_new_detached(srv, capture_sink, out);
  for (size_t i = 0; i < len; i += step)
    http_conn_feed(c, in + i, len - i < step ? len - i : step);
  bool closed = http_conn_is_closed(c);
  if (g_ts.held) {
    http_request *r = g_ts.held;
    g_ts.held = NULL;
    http_response_abort(r);
  }
  http_conn_free_detached(c);
  return closed;
}

#endif
