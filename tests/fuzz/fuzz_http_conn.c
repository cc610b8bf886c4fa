/* libFuzzer harness: arbitrary bytes through the connection state machine
 * (parser, request hand-off, pipelining, body pause/resume, responses of
 * every framing, errors, the upgrade hand-off to a raw byte stream), on a
 * detached connection (no sockets).
 *
 * Input: byte 0 = consumer behaviour flags, byte 1 = segmentation seed (its
 * top bit: upgrade requests get a 101 and become echoing streams), the rest =
 * what the client sends. */
#include "http_internal.h"

#include <stdlib.h>
#include <string.h>

static http_server *srv;
static uint8_t flags;
static http_request *held;
static size_t out_bytes;
static bool upgrade_mode;
static http_stream *stream;
static size_t take_max; /* the stream consumer takes at most this per call (0: all) */

static size_t s_on_data(http_stream *st, const char *d, size_t n) {
  size_t take = take_max && n > take_max ? take_max : n;
  http_stream_write(st, "<", 1, d, take);
  if (take && d[0] == 'Q')
    http_stream_close(st, d[take - 1] & 1);
  return take;
}
static void s_on_close(http_stream *st) {
  (void)st;
  stream = NULL;
}
static void s_on_shutdown(http_stream *st) { http_stream_close(st, true); }
static const http_stream_callbacks stream_cb = {
    .on_data = s_on_data, .on_close = s_on_close, .on_shutdown = s_on_shutdown};

static void sink(http_conn *c, const char *d, size_t n, void *ud) {
  (void)c;
  (void)d;
  (void)ud;
  out_bytes += n;
}

static void respond(http_request *req) {
  static const http_header h[] = {{"content-type", 12, "text/plain", 10},
                                  {"content-length", 14, "5", 1},
                                  {"connection", 10, "close", 5}};
  static const http_header up = {"upgrade", 7, "fuzz", 4};
  if (upgrade_mode && req->upgrade && stream == NULL &&
      http_request_upgrade(req, &up, 1, &stream_cb, NULL, &stream) == 0)
    return;
  switch ((flags >> 4) & 3) {
  case 0: /* content-length computed */
    if (http_response_start(req, 200, h, 1) == 0)
      http_response_write(req, "hello", 5, false);
    else
      http_response_abort(req);
    break;
  case 1: /* chunked */
    if (http_response_start(req, 201, h, 1) == 0) {
      http_response_write(req, "he", 2, true);
      http_response_flush(req);
      http_response_write(req, "llo", 3, false);
    } else {
      http_response_abort(req);
    }
    break;
  case 2: /* declared length, maybe connection: close */
    if (http_response_start(req, 200, h, (flags & 0x40) ? 3 : 2) == 0)
      http_response_write(req, "hello", 5, false);
    else
      http_response_abort(req);
    break;
  default:
    http_response_abort(req);
    break;
  }
}

static void on_request(http_request *req) {
  /* touch every field the consumer may read */
  volatile size_t sum = req->method_len + req->target_len + req->path_len + req->query_len;
  for (size_t i = 0; i < req->n_headers; i++)
    sum += (uint8_t)req->headers[i].name[0] + req->headers[i].value_len +
           (req->headers[i].value_len ? (uint8_t)req->headers[i].value[0] : 0);
  (void)sum;
  if (flags & 1)
    http_request_body_resume(req);
  if (flags & 2) {
    respond(req);
    return;
  }
  if (held == NULL && (flags & 4))
    held = req;
}

static void on_body(http_request *req, const char *d, size_t n) {
  volatile uint8_t x = n ? (uint8_t)d[n - 1] : 0;
  (void)x;
  if (flags & 8)
    http_request_body_pause(req);
}

static void on_body_end(http_request *req) {
  if (held == req)
    return;
  respond(req);
}

static void on_disconnect(http_request *req) {
  if (held == req)
    held = NULL;
  http_response_abort(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (srv == NULL) {
    http_config cfg;
    http_config_init(&cfg);
    cfg.max_head_size = 2048;
    cfg.max_headers = 20;
    cfg.read_buffer_size = 1024;
    http_callbacks cb = {.on_request = on_request,
                         .on_body = on_body,
                         .on_body_end = on_body_end,
                         .on_disconnect = on_disconnect};
    srv = http_server_new(uv_default_loop(), &cfg, &cb, NULL);
  }
  if (size < 2)
    return 0;
  flags = data[0];
  uint32_t seed = data[1] | 1u;
  upgrade_mode = data[1] & 0x80;
  take_max = data[1] & 0x40 ? (data[1] & 0x0f) : 0;
  stream = NULL;
  data += 2;
  size -= 2;
  held = NULL;
  http_conn *c = http_conn_new_detached(srv, sink, NULL);
  size_t i = 0;
  while (i < size && !http_conn_is_closed(c)) {
    seed = seed * 1103515245u + 12345u;
    size_t step = (flags & 0x80) ? size - i : 1 + (seed >> 16) % 64;
    if (step > size - i)
      step = size - i;
    http_conn_feed(c, (const char *)data + i, step);
    i += step;
    /* the consumer catches up between reads */
    if (held && (seed & 0x100)) {
      http_request *r = held;
      held = NULL;
      http_request_body_resume(r);
      if (!http_conn_is_closed(c) && c->req_active && &c->req == r && c->body_done)
        respond(r);
      else if (c->req_active && &c->req == r)
        held = r;
    } else if (c->req_active && c->body_paused && !held) {
      http_request_body_resume(&c->req);
    }
    if (stream && (seed & 0x200))
      http_stream_resume(stream); /* a paused stream consumer catches up */
  }
  if (stream && (seed & 4))
    http_stream_close(stream, seed & 8);
  if (c->req_active) {
    if (seed & 2)
      http_conn_feed_eof(c);
    if (c->req_active)
      http_response_abort(&c->req);
  }
  held = NULL;
  http_conn_free_detached(c);
  return 0;
}
