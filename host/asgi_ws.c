/* The ASGI websocket scope (spec 2.4) over RFC 6455, on the HTTP layer's
 * upgrade hand-off (http_request_upgrade) and host/ws_frame.c.
 *
 * One WebSocket object per handshake request. Its life:
 *   CONNECTING  the request is held by the layer (req); receive() gives
 *               websocket.connect; the app answers with websocket.accept
 *               (-> 101, the connection becomes a byte stream), websocket.close
 *               (-> 403) or websocket.http.response.start (a denial response).
 *   RESPONSE    the denial response's body is being sent.
 *   OPEN        frames both ways on the stream until the close handshake, a
 *               protocol error, a keepalive timeout or a lost connection.
 *   DONE        the HTTP answer was sent (403 / denial / error).
 * References: the layer holds one through req->user until the request's
 * terminal call (on_request_done), the stream one until its on_close; the
 * app's task holds one through the Runner, receive and send.
 *
 * Flow control: messages wait in a queue for receive(); when it holds
 * --ws-max-queue of them the stream is paused (the socket is not read) until
 * the app takes one. send() waits for the layer's drain when the output is
 * above the high-water mark, as http's send does.
 */
#include "asgi_internal.h"
#include "ws_frame.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CLOSE_TIMEOUT_MS 10000   /* wait this long for the peer's close reply */
#define COMPRESS_MIN 64          /* shorter messages are sent uncompressed */
#define SCRATCH_KEEP (64 * 1024) /* a larger compression buffer is freed after use */
#define MAX_ACCEPT_HEADERS 128

enum ws_state { ST_CONNECTING, ST_RESPONSE, ST_OPEN, ST_DONE };
enum ws_timer { WT_NONE, WT_PING, WT_PONG, WT_CLOSE, WT_TRIM };
/* A message larger than this may grow buffers worth giving back once the
 * connection is quiet: at the next keepalive ping, or without pings after
 * TRIM_DELAY_S (http_stream_trim). */
#define TRIM_AFTER_LEN 16384
#define TRIM_DELAY_S 0.2

static struct {
  PyObject *type, *text, *bytes, *code, *reason, *subprotocol, *subprotocols, *headers, *status,
      *body, *more_body, *connect, *receive, *disconnect, *accept, *send, *close, *response_start,
      *response_body, *empty;
} W;

typedef struct {
  PyObject_HEAD ServerObject *server;
  http_request *req;   /* until the request's terminal call */
  http_stream *stream; /* after accept, until on_close */
  int state, timer;
  unsigned connect_taken : 1, close_sent : 1, lost : 1, paused : 1, deflate : 1, ping_pending : 1;
  uint32_t ping_payload;
  PyObject **ring; /* messages for receive(): a ring buffer */
  size_t ring_cap, ring_head, ring_len;
  PyObject *receive_waiter, *send_waiter;
  PyObject *disconnect; /* the websocket.disconnect message, once known */
  ws_parser parser;
  ws_deflater deflater;
  ws_buf scratch; /* compressed payloads */
  char extensions[160];
  char accept[29];
  char log_prefix[400]; /* client - "WebSocket /path?query" */
} WebSocketObject;

static PyTypeObject WebSocketType;

/* The layer holds one reference through req->user until on_request_done,
 * which runs inside the request's terminal call (the last write, an abort,
 * the upgrade): whoever makes that call must hold another one. */
#define ASSERT_CALLER_HOLDS(ws) assert(!(ws)->req || Py_REFCNT(ws) >= 2)
/* The same for the stream: its on_close drops the stream's reference. */
#define ASSERT_CALLER_HOLDS_STREAM(ws) assert(!(ws)->stream || Py_REFCNT(ws) >= 2)

static int strings_init(void) {
  static const asgi_intern_entry table[] = {
      {&W.type, "type"},
      {&W.text, "text"},
      {&W.bytes, "bytes"},
      {&W.code, "code"},
      {&W.reason, "reason"},
      {&W.subprotocol, "subprotocol"},
      {&W.subprotocols, "subprotocols"},
      {&W.headers, "headers"},
      {&W.status, "status"},
      {&W.body, "body"},
      {&W.more_body, "more_body"},
      {&W.connect, "websocket.connect"},
      {&W.receive, "websocket.receive"},
      {&W.disconnect, "websocket.disconnect"},
      {&W.accept, "websocket.accept"},
      {&W.send, "websocket.send"},
      {&W.close, "websocket.close"},
      {&W.response_start, "websocket.http.response.start"},
      {&W.response_body, "websocket.http.response.body"},
      {&W.empty, ""},
  };
  return ASGI_INTERN(table);
}

static int type_is(PyObject *type, PyObject *str) {
  return type == str || (PyUnicode_Check(type) && PyUnicode_Compare(type, str) == 0);
}

/* ---- handshake checks ----------------------------------------------------------- */

/* Case-insensitive search for a token in a comma-separated header value. */
static int list_has(const char *v, size_t n, const char *tok) {
  size_t tn = strlen(tok), i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t start = i;
    while (i < n && v[i] != ',')
      i++;
    size_t end = i;
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
      end--;
    if (end - start == tn && strncasecmp(v + start, tok, tn) == 0)
      return 1;
  }
  return 0;
}

static int header_is(const http_header *h, const char *name) {
  size_t n = strlen(name);
  return h->name_len == n && memcmp(h->name, name, n) == 0;
}

int asgi_ws_is_websocket(const http_request *req) {
  if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0)
    return 0;
  for (size_t i = 0; i < req->n_headers; i++)
    if (header_is(&req->headers[i], "upgrade") &&
        list_has(req->headers[i].value, req->headers[i].value_len, "websocket"))
      return 1;
  return 0;
}

int asgi_ws_owns(const http_request *req) {
  return req->user && Py_IS_TYPE((PyObject *)req->user, &WebSocketType);
}

/* ---- messages ---------------------------------------------------------------------- */

static PyObject *message1(PyObject *type) {
  PyObject *m = appbin_dict_presized(1);
  if (m && PyDict_SetItem(m, W.type, type) != 0)
    Py_CLEAR(m);
  return m;
}

/* {"type": type, key: value}; steals value. */
static PyObject *message2(PyObject *type, PyObject *key, PyObject *value) {
  if (!value)
    return NULL;
  PyObject *m = appbin_dict_presized(2);
  if (m && (PyDict_SetItem(m, W.type, type) != 0 || PyDict_SetItem(m, key, value) != 0))
    Py_CLEAR(m);
  Py_DECREF(value);
  return m;
}

static PyObject *disconnect_message(int code, const char *reason, size_t reason_len) {
  PyObject *c = PyLong_FromLong(code);
  PyObject *r = PyUnicode_DecodeUTF8(reason ? reason : "", (Py_ssize_t)reason_len, "replace");
  PyObject *m = c && r ? appbin_dict_presized(3) : NULL;
  if (m && (PyDict_SetItem(m, W.type, W.disconnect) != 0 || PyDict_SetItem(m, W.code, c) != 0 ||
            PyDict_SetItem(m, W.reason, r) != 0))
    Py_CLEAR(m);
  Py_XDECREF(c);
  Py_XDECREF(r);
  return m;
}

/* ---- the receive queue ----------------------------------------------------------- */

static int ring_push(WebSocketObject *ws, PyObject *msg) {
  if (ws->ring_len == ws->ring_cap) {
    size_t cap = ws->ring_cap ? ws->ring_cap * 2 : 8;
    PyObject **r = PyMem_Malloc(cap * sizeof(*r));
    if (!r) {
      PyErr_NoMemory();
      return -1;
    }
    for (size_t i = 0; i < ws->ring_len; i++)
      r[i] = ws->ring[(ws->ring_head + i) % ws->ring_cap];
    PyMem_Free(ws->ring);
    ws->ring = r;
    ws->ring_cap = cap;
    ws->ring_head = 0;
  }
  ws->ring[(ws->ring_head + ws->ring_len) % ws->ring_cap] = Py_NewRef(msg);
  ws->ring_len++;
  return 0;
}

static PyObject *ring_pop(WebSocketObject *ws) {
  PyObject *m = ws->ring[ws->ring_head];
  ws->ring_head = (ws->ring_head + 1) % ws->ring_cap;
  ws->ring_len--;
  return m;
}

/* A message for the app: straight to a waiting receive(), else queued. */
static int deliver(WebSocketObject *ws, PyObject *msg) {
  if (ws->ring_len == 0 && ws->receive_waiter && asgi_resolve(&ws->receive_waiter, msg, NULL, NULL))
    return 0;
  return ring_push(ws, msg);
}

/* The connection is over (or ending) for the app: remember why, and wake
 * a receive() that waits with nothing queued. */
static void set_disconnect(WebSocketObject *ws, int code, const char *reason, size_t reason_len) {
  if (!ws->disconnect) {
    ws->disconnect = disconnect_message(code, reason, reason_len);
    if (!ws->disconnect) {
      asgi_log_current_exception(ws->server, "cannot build websocket.disconnect");
      return;
    }
  }
  if (ws->ring_len == 0 && ws->receive_waiter)
    asgi_resolve(&ws->receive_waiter, ws->disconnect, NULL, NULL);
}

/* ---- writing frames ------------------------------------------------------------------ */

static int write_frame(WebSocketObject *ws, int opcode, bool rsv1, const void *data, size_t len) {
  if (!ws->stream)
    return HTTP_ECLOSED;
  uint8_t hdr[WS_MAX_HEADER];
  size_t hl = ws_frame_header(hdr, opcode, true, rsv1, len);
  return http_stream_write(ws->stream, hdr, hl, data, len);
}

static void arm_trim(WebSocketObject *ws, size_t len);

/* A data message, compressed when permessage-deflate was negotiated. */
static int write_message(WebSocketObject *ws, int opcode, const void *data, size_t len) {
  arm_trim(ws, len);
  if (!ws->deflate || len < COMPRESS_MIN)
    return write_frame(ws, opcode, false, data, len);
  ws->scratch.len = 0;
  if (ws_deflate_message(&ws->deflater, data, len, &ws->scratch) != 0)
    return UV_ENOMEM;
  int rc = write_frame(ws, opcode, true, ws->scratch.base, ws->scratch.len);
  if (ws->scratch.cap > SCRATCH_KEEP)
    ws_buf_free(&ws->scratch);
  return rc;
}

/* libuv may hold work queued outside uv_run() (a write that did not go out
 * at once, a shutdown): run it soon. */
static void after_io(WebSocketObject *ws) {
  if (!ws->stream || http_stream_pending(ws->stream) > 0)
    asgi_schedule_pump(ws->server);
}

static void send_close_frame(WebSocketObject *ws, int code, const char *reason, size_t len) {
  uint8_t payload[125];
  size_t n = ws_close_payload(payload, code, reason, len);
  write_frame(ws, WS_OP_CLOSE, false, payload, n);
  ws->close_sent = 1;
}

/* Ends the connection from our side without waiting for the peer (protocol
 * error, keepalive timeout, shutdown, failing app): the close frame, then a
 * graceful TCP close. */
static void fail_connection(WebSocketObject *ws, int code, const char *reason) {
  ASSERT_CALLER_HOLDS_STREAM(ws);
  size_t rlen = reason ? strlen(reason) : 0;
  ws->lost = 1;
  set_disconnect(ws, code, reason, rlen);
  if (!ws->stream)
    return;
  if (!ws->close_sent)
    send_close_frame(ws, code, reason, rlen);
  if (ws->stream)
    http_stream_close(ws->stream, true);
  asgi_schedule_pump(ws->server);
}

static void set_timer(WebSocketObject *ws, int kind, double seconds) {
  if (!ws->stream)
    return;
  ws->timer = kind;
  uint64_t ms = (uint64_t)(seconds * 1000.0);
  http_stream_set_timer(ws->stream, ms ? ms : 1);
}

static void arm_trim(WebSocketObject *ws, size_t len) {
  if (len > TRIM_AFTER_LEN && ws->server->ws_ping_interval <= 0 && ws->timer == WT_NONE &&
      ws->stream && !ws->close_sent)
    set_timer(ws, WT_TRIM, TRIM_DELAY_S);
}

/* The app sent websocket.close, or returned: the close frame, then wait
 * (a while) for the peer's reply. */
static void start_close(WebSocketObject *ws, int code, const char *reason, size_t rlen) {
  send_close_frame(ws, code, reason, rlen);
  if (!ws->stream)
    return;
  set_timer(ws, WT_CLOSE, CLOSE_TIMEOUT_MS / 1000.0);
  if (ws->paused) { /* read on: the reply is behind the queued messages */
    ws->paused = 0;
    http_stream_resume(ws->stream);
  }
  after_io(ws);
}

/* ---- the stream (after accept) ---------------------------------------------------------- */

static uint32_t next_random(void) {
  static uint64_t x;
  if (x == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    x = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&x;
    x |= 1;
  }
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return (uint32_t)(x >> 16);
}

/* One parser event. Returns -1 when the stream is gone. */
static int on_event(WebSocketObject *ws, ws_event ev) {
  ws_parser *p = &ws->parser;
  ServerObject *s = ws->server;
  switch (ev) {
  case WS_EV_TEXT:
  case WS_EV_BINARY: {
    if (ws->close_sent)
      return 0; /* the app is past websocket.close: dropped */
    PyObject *data =
        ev == WS_EV_TEXT
            ? PyUnicode_DecodeUTF8((const char *)p->msg.base, (Py_ssize_t)p->msg.len, NULL)
            : PyBytes_FromStringAndSize((const char *)p->msg.base, (Py_ssize_t)p->msg.len);
    arm_trim(ws, p->msg.len);
    ws_parser_message_taken(p);
    PyObject *msg = message2(W.receive, ev == WS_EV_TEXT ? W.text : W.bytes, data);
    int rc = msg ? deliver(ws, msg) : -1;
    Py_XDECREF(msg);
    if (rc != 0) {
      asgi_log_current_exception(s, "cannot queue a WebSocket message");
      fail_connection(ws, WS_CLOSE_INTERNAL_ERROR, NULL);
      return -1;
    }
    if ((long)ws->ring_len >= s->ws_max_queue && !ws->paused) {
      ws->paused = 1;
      http_stream_pause(ws->stream);
    }
    return 0;
  }
  case WS_EV_PING:
    if (!ws->close_sent)
      write_frame(ws, WS_OP_PONG, false, p->ctrl, p->ctrl_len);
    return ws->stream ? 0 : -1;
  case WS_EV_PONG:
    if (ws->ping_pending && p->ctrl_len == 4 && memcmp(p->ctrl, &ws->ping_payload, 4) == 0) {
      ws->ping_pending = 0;
      if (ws->timer == WT_PONG)
        set_timer(ws, WT_PING, s->ws_ping_interval);
    }
    return 0;
  case WS_EV_CLOSE:
    ASSERT_CALLER_HOLDS_STREAM(ws);
    if (!ws->close_sent) { /* the peer starts the closing handshake: answer it */
      ws->lost = 1;
      set_disconnect(ws, p->close_code, p->close_reason, p->close_reason_len);
      send_close_frame(ws, p->close_code, NULL, 0);
    }
    if (ws->stream)
      http_stream_close(ws->stream, true);
    return -1;
  case WS_EV_ERROR:
    asgi_log(s, LOG_WARNING, "%s: WebSocket protocol error: %s (closing with %d)", ws->log_prefix,
             p->error, p->error_code);
    fail_connection(ws, p->error_code, p->error);
    return -1;
  case WS_EV_NONE:
    break;
  }
  return 0;
}

static size_t stream_on_data(http_stream *st, const char *data, size_t len) {
  WebSocketObject *ws = http_stream_user(st);
  if (ws->paused)
    return 0;
  Py_INCREF(ws);
  size_t off = 0;
  while (off < len && ws->stream && !ws->paused) {
    size_t used;
    ws_event ev = ws_parser_feed(&ws->parser, (const uint8_t *)data + off, len - off, &used);
    off += used;
    if (ev != WS_EV_NONE && on_event(ws, ev) != 0)
      break;
  }
  if (!ws->stream)
    off = len;
  after_io(ws);
  Py_DECREF(ws);
  return off;
}

static void stream_on_drain(http_stream *st) {
  WebSocketObject *ws = http_stream_user(st);
  asgi_resolve(&ws->send_waiter, Py_None, NULL, NULL);
}

static void stream_on_timer(http_stream *st) {
  WebSocketObject *ws = http_stream_user(st);
  ServerObject *s = ws->server;
  Py_INCREF(ws);
  int kind = ws->timer;
  ws->timer = WT_NONE;
  switch (kind) {
  case WT_PING:
    if (!ws->close_sent) {
      http_stream_trim(st);
      ws->ping_payload = next_random();
      ws->ping_pending = 1;
      write_frame(ws, WS_OP_PING, false, &ws->ping_payload, 4);
      if (s->ws_ping_timeout > 0)
        set_timer(ws, WT_PONG, s->ws_ping_timeout);
      else
        set_timer(ws, WT_PING, s->ws_ping_interval);
    }
    break;
  case WT_PONG:
    asgi_log(s, LOG_INFO, "%s: WebSocket keepalive ping timeout", ws->log_prefix);
    fail_connection(ws, WS_CLOSE_INTERNAL_ERROR, "keepalive ping timeout");
    break;
  case WT_TRIM:
    http_stream_trim(st);
    break;
  case WT_CLOSE: /* no close reply in time */
    ASSERT_CALLER_HOLDS_STREAM(ws);
    if (ws->stream)
      http_stream_close(ws->stream, false);
    break;
  }
  after_io(ws);
  Py_DECREF(ws);
}

static void stream_on_shutdown(http_stream *st) {
  WebSocketObject *ws = http_stream_user(st);
  Py_INCREF(ws);
  if (ws->close_sent) { /* closing already: do not wait for the reply */
    ws->lost = 1;
    if (ws->stream)
      http_stream_close(ws->stream, true);
  } else {
    fail_connection(ws, WS_CLOSE_SERVICE_RESTART, NULL);
  }
  asgi_schedule_pump(ws->server);
  Py_DECREF(ws);
}

static void stream_on_close(http_stream *st) {
  WebSocketObject *ws = http_stream_user(st);
  ws->stream = NULL;
  ws->timer = WT_NONE;
  if (!ws->close_sent)
    ws->lost = 1;
  set_disconnect(ws, WS_CLOSE_ABNORMAL, NULL, 0);
  asgi_resolve(&ws->send_waiter, NULL, asgi_ClientDisconnected, "client disconnected");
  /* nothing more will be parsed or compressed: give the memory back now */
  ws_parser_free(&ws->parser);
  ws_deflater_free(&ws->deflater);
  ws_buf_free(&ws->scratch);
  asgi_schedule_pump(ws->server);
  Py_DECREF(ws); /* the stream's reference */
}

static const http_stream_callbacks stream_callbacks = {
    .on_data = stream_on_data,
    .on_drain = stream_on_drain,
    .on_timer = stream_on_timer,
    .on_shutdown = stream_on_shutdown,
    .on_close = stream_on_close,
};

/* ---- HTTP answers to the handshake request ------------------------------------------------ */

static void plain_response(http_request *req, int status, const char *body,
                           const http_header *extra, size_t n_extra) {
  char len[24];
  int ln = snprintf(len, sizeof(len), "%zu", strlen(body));
  http_header h[4] = {{"content-type", 12, "text/plain; charset=utf-8", 25},
                      {"content-length", 14, len, (size_t)ln},
                      {"connection", 10, "close", 5}};
  size_t n = 3;
  for (size_t i = 0; i < n_extra && n < 4; i++)
    h[n++] = extra[i];
  if (http_response_start(req, status, h, n) == 0)
    http_response_write(req, body, strlen(body), false);
  else
    http_response_abort(req);
}

static void log_prefix_init(char *out, size_t cap, const http_request *req) {
  int tlen = (int)(req->target_len > 300 ? 300 : req->target_len);
  if (req->unix_socket || req->client_port < 0)
    snprintf(out, cap, "unix - \"WebSocket %.*s\"", tlen, req->target);
  else
    snprintf(out, cap, "%s:%d - \"WebSocket %.*s\"", req->client_host, req->client_port, tlen,
             req->target);
}

/* A bad handshake never reaches the app (uvicorn's websockets does the same). */
static void reject_handshake(ServerObject *s, http_request *req, int status, const char *why) {
  char prefix[400];
  log_prefix_init(prefix, sizeof(prefix), req);
  asgi_log(s, LOG_INFO, "%s %d (%s)", prefix, status, why);
  http_header version = {"sec-websocket-version", 21, "13", 2};
  plain_response(req, status, why, &version, status == 426);
  asgi_schedule_pump(s);
}

/* The app failed before answering the handshake. */
static void respond_500(WebSocketObject *ws) {
  if (!ws->req)
    return;
  ws->state = ST_DONE;
  Py_INCREF(ws); /* the terminal call may drop the last other reference */
  plain_response(ws->req, 500, "Internal Server Error", NULL, 0);
  assert(!ws->req);
  asgi_schedule_pump(ws->server);
  Py_DECREF(ws);
}

/* ---- the application finished ------------------------------------------------------------- */

static void ws_finish(PyObject *owner, PyObject *exc, int cancelled) {
  WebSocketObject *ws = (WebSocketObject *)owner;
  ServerObject *s = ws->server;
  if (exc && !(ws->lost && PyObject_TypeCheck(exc, (PyTypeObject *)asgi_ClientDisconnected)))
    asgi_log_exception(s, "Exception in ASGI application", exc);
  switch (ws->state) {
  case ST_CONNECTING:
    if (ws->req) {
      if (!exc && !cancelled && !ws->lost)
        asgi_log(s, LOG_ERROR, "ASGI callable returned without completing handshake.");
      ASSERT_CALLER_HOLDS(ws);
      if (ws->lost || cancelled)
        http_response_abort(ws->req);
      else
        respond_500(ws);
    }
    ws->state = ST_DONE;
    break;
  case ST_RESPONSE:
    if (ws->req) {
      if (!exc && !cancelled && !ws->lost)
        asgi_log(s, LOG_ERROR, "ASGI callable returned without completing the response.");
      ASSERT_CALLER_HOLDS(ws);
      http_response_abort(ws->req);
    }
    ws->state = ST_DONE;
    break;
  case ST_OPEN:
    if (ws->stream && !ws->close_sent) {
      if (exc || cancelled)
        fail_connection(ws, WS_CLOSE_INTERNAL_ERROR, NULL);
      else
        start_close(ws, WS_CLOSE_NORMAL, NULL, 0);
    }
    break;
  default:
    break;
  }
  asgi_schedule_pump(s);
}

/* ---- receive ------------------------------------------------------------------------------- */

static PyObject *ws_receive(WebSocketObject *ws, PyObject *noargs) {
  (void)noargs;
  PyObject *msg = NULL;
  if (!ws->connect_taken) {
    ws->connect_taken = 1;
    msg = message1(W.connect);
  } else if (ws->ring_len) {
    msg = ring_pop(ws);
    /* read on once half the queue is taken (not after every message) */
    if (ws->paused && (long)ws->ring_len <= ws->server->ws_max_queue / 2 && ws->stream) {
      ws->paused = 0;
      http_stream_resume(ws->stream); /* may queue more, or end the stream */
      asgi_schedule_pump(ws->server);
    }
  } else if (ws->disconnect) {
    msg = Py_NewRef(ws->disconnect);
  } else {
    PyObject *fut = PyObject_CallNoArgs(ws->server->create_future);
    if (!fut)
      return NULL;
    Py_XSETREF(ws->receive_waiter, Py_NewRef(fut));
    return fut;
  }
  if (!msg)
    return NULL;
  PyObject *ready = asgi_ready_new(msg);
  Py_DECREF(msg);
  return ready;
}

/* ---- send ---------------------------------------------------------------------------------- */

static PyObject *client_disconnected(void) {
  PyErr_SetString(asgi_ClientDisconnected, "client disconnected");
  return NULL;
}

/* Waits for the drain when a write left the output above the high-water mark. */
static PyObject *after_write(WebSocketObject *ws, int rc) {
  if (rc == HTTP_ECLOSED)
    return client_disconnected();
  if (rc == UV_ENOMEM)
    return PyErr_NoMemory();
  if (rc < 0)
    return PyErr_Format(PyExc_RuntimeError, "WebSocket write failed: %s", http_strerror(rc));
  after_io(ws);
  if (rc == 1 && (ws->stream || ws->req)) {
    PyObject *fut = PyObject_CallNoArgs(ws->server->create_future);
    if (!fut)
      return NULL;
    Py_XSETREF(ws->send_waiter, Py_NewRef(fut));
    return fut;
  }
  return asgi_ready_new(Py_None);
}

static PyObject *get_optional(PyObject *message, PyObject *key) {
  PyObject *v = PyDict_GetItemWithError(message, key);
  return v == Py_None ? NULL : v;
}

static PyObject *ws_accept(WebSocketObject *ws, PyObject *message) {
  ServerObject *s = ws->server;
  if (!ws->req)
    return client_disconnected();
  PyObject *sub = get_optional(message, W.subprotocol);
  if (!sub && PyErr_Occurred())
    return NULL;
  Py_ssize_t sub_len = 0;
  const char *sub_s = NULL;
  if (sub) {
    if (!PyUnicode_Check(sub))
      return PyErr_Format(PyExc_TypeError, "websocket.accept 'subprotocol' must be str, not %R",
                          sub);
    if (!(sub_s = PyUnicode_AsUTF8AndSize(sub, &sub_len)))
      return NULL;
  }
  PyObject *headers = get_optional(message, W.headers);
  if (!headers && PyErr_Occurred())
    return NULL;
  http_header h[MAX_ACCEPT_HEADERS + 5];
  size_t n = 0;
  h[n++] = (http_header){"upgrade", 7, "websocket", 9};
  h[n++] = (http_header){"connection", 10, "Upgrade", 7};
  h[n++] = (http_header){"sec-websocket-accept", 20, ws->accept, strlen(ws->accept)};
  if (sub_s && sub_len)
    h[n++] = (http_header){"sec-websocket-protocol", 22, sub_s, (size_t)sub_len};
  if (ws->deflate)
    h[n++] = (http_header){"sec-websocket-extensions", 24, ws->extensions, strlen(ws->extensions)};
  PyObject *keep = PyList_New(0);
  if (!keep)
    return NULL;
  size_t m = 0;
  if (headers && asgi_convert_headers(headers, h + n, MAX_ACCEPT_HEADERS, &m, keep) != 0) {
    Py_DECREF(keep);
    return NULL;
  }
  n += m;
  ws->state = ST_OPEN; /* callbacks may run inside the upgrade call */
  Py_INCREF(ws);       /* the stream's reference, dropped in on_close */
  /* ws->stream is set before any callback; on_close clears it again */
  int rc = http_request_upgrade(ws->req, h, n, &stream_callbacks, ws, &ws->stream);
  Py_DECREF(keep);
  if (rc != 0) {
    ws->state = ST_CONNECTING;
    ws->stream = NULL;
    Py_DECREF(ws);
    if (rc == HTTP_ECLOSED)
      return client_disconnected();
    return PyErr_Format(PyExc_RuntimeError, "invalid websocket.accept: %s", http_strerror(rc));
  }
  asgi_log(s, LOG_INFO, "%s [accepted]", ws->log_prefix);
  if (ws->stream && !ws->close_sent && s->ws_ping_interval > 0)
    set_timer(ws, WT_PING, s->ws_ping_interval);
  asgi_schedule_pump(s);
  return asgi_ready_new(Py_None);
}

/* websocket.close before accept: 403. */
static PyObject *ws_reject(WebSocketObject *ws) {
  if (!ws->req)
    return client_disconnected();
  asgi_log(ws->server, LOG_INFO, "%s 403", ws->log_prefix);
  ws->state = ST_DONE;
  set_disconnect(ws, WS_CLOSE_ABNORMAL, NULL, 0);
  http_header h[] = {{"content-type", 12, "text/plain; charset=utf-8", 25},
                     {"content-length", 14, "0", 1},
                     {"connection", 10, "close", 5}};
  ASSERT_CALLER_HOLDS(ws);
  if (http_response_start(ws->req, 403, h, 3) == 0)
    http_response_write(ws->req, NULL, 0, false);
  else
    http_response_abort(ws->req);
  asgi_schedule_pump(ws->server);
  return asgi_ready_new(Py_None);
}

/* websocket.http.response.start: a denial response instead of the upgrade. */
static PyObject *ws_response_start(WebSocketObject *ws, PyObject *message) {
  if (!ws->req)
    return client_disconnected();
  PyObject *status_obj = PyDict_GetItemWithError(message, W.status);
  if (!status_obj)
    return PyErr_Occurred()
               ? NULL
               : PyErr_Format(PyExc_KeyError, "websocket.http.response.start needs 'status'");
  long status = PyLong_Check(status_obj) ? PyLong_AsLong(status_obj) : -1;
  if (status == -1 && PyErr_Occurred())
    return NULL;
  if (status < 200 || status > 599)
    return PyErr_Format(PyExc_RuntimeError, "Invalid HTTP status code '%R' in response.",
                        status_obj);
  PyObject *headers = get_optional(message, W.headers);
  if (!headers && PyErr_Occurred())
    return NULL;
  PyObject *keep = PyList_New(0);
  if (!keep)
    return NULL;
  http_header h[MAX_ACCEPT_HEADERS + 1];
  size_t n = 0;
  if (headers && asgi_convert_headers(headers, h, MAX_ACCEPT_HEADERS, &n, keep) != 0) {
    Py_DECREF(keep);
    return NULL;
  }
  int has_connection = 0;
  for (size_t i = 0; i < n; i++)
    has_connection |= h[i].name_len == 10 && strncasecmp(h[i].name, "connection", 10) == 0;
  if (!has_connection) /* the connection ends with the response */
    h[n++] = (http_header){"connection", 10, "close", 5};
  int rc = http_response_start(ws->req, (int)status, h, n);
  Py_DECREF(keep);
  if (rc == HTTP_ECLOSED)
    return client_disconnected();
  if (rc != 0)
    return PyErr_Format(PyExc_RuntimeError, "invalid websocket.http.response.start: %s",
                        http_strerror(rc));
  ws->state = ST_RESPONSE;
  asgi_log(ws->server, LOG_INFO, "%s %ld", ws->log_prefix, status);
  return asgi_ready_new(Py_None);
}

static PyObject *ws_response_body(WebSocketObject *ws, PyObject *message) {
  if (!ws->req)
    return client_disconnected();
  PyObject *more_obj = PyDict_GetItemWithError(message, W.more_body);
  if (!more_obj && PyErr_Occurred())
    return NULL;
  int more = more_obj ? PyObject_IsTrue(more_obj) : 0;
  if (more < 0)
    return NULL;
  PyObject *body = get_optional(message, W.body);
  if (!body && PyErr_Occurred())
    return NULL;
  Py_buffer view = {0};
  if (body && PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) != 0)
    return NULL;
  if (!more) {
    ws->state = ST_DONE;
    set_disconnect(ws, WS_CLOSE_ABNORMAL, NULL, 0);
  }
  ASSERT_CALLER_HOLDS(ws);
  int rc = http_response_write(ws->req, view.buf, (size_t)view.len, more);
  if (body)
    PyBuffer_Release(&view);
  asgi_schedule_pump(ws->server);
  if (!more && rc == 1)
    rc = 0;
  return after_write(ws, rc);
}

static PyObject *ws_send_data(WebSocketObject *ws, PyObject *message) {
  PyObject *bytes = get_optional(message, W.bytes);
  if (!bytes && PyErr_Occurred())
    return NULL;
  PyObject *text = bytes ? NULL : get_optional(message, W.text);
  if (!bytes && !text && PyErr_Occurred())
    return NULL;
  int rc;
  if (bytes) {
    Py_buffer view;
    if (PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) != 0)
      return NULL;
    rc = write_message(ws, WS_OP_BINARY, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
  } else if (text) {
    if (!PyUnicode_Check(text))
      return PyErr_Format(PyExc_TypeError, "websocket.send 'text' must be str, not %R", text);
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    if (!utf8)
      return NULL;
    rc = write_message(ws, WS_OP_TEXT, utf8, (size_t)len);
  } else {
    return PyErr_Format(PyExc_RuntimeError, "websocket.send needs 'bytes' or 'text'");
  }
  return after_write(ws, rc);
}

static PyObject *ws_app_close(WebSocketObject *ws, PyObject *message) {
  PyObject *code_obj = get_optional(message, W.code);
  if (!code_obj && PyErr_Occurred())
    return NULL;
  long code = code_obj ? PyLong_AsLong(code_obj) : WS_CLOSE_NORMAL;
  if (code == -1 && PyErr_Occurred())
    return NULL;
  if (code != WS_CLOSE_NO_STATUS && !ws_close_code_valid((int)code))
    return PyErr_Format(PyExc_RuntimeError, "invalid WebSocket close code %ld", code);
  PyObject *reason = get_optional(message, W.reason);
  if (!reason && PyErr_Occurred())
    return NULL;
  const char *r = "";
  Py_ssize_t rlen = 0;
  if (reason) {
    if (!PyUnicode_Check(reason))
      return PyErr_Format(PyExc_TypeError, "websocket.close 'reason' must be str, not %R", reason);
    if (!(r = PyUnicode_AsUTF8AndSize(reason, &rlen)))
      return NULL;
  }
  set_disconnect(ws, (int)code, r, (size_t)rlen);
  start_close(ws, (int)code, r, (size_t)rlen);
  return asgi_ready_new(Py_None);
}

static PyObject *ws_send(WebSocketObject *ws, PyObject *message) {
  if (!PyDict_Check(message))
    return PyErr_Format(PyExc_TypeError, "ASGI messages must be dicts, got %R", message);
  PyObject *type = PyDict_GetItemWithError(message, W.type);
  if (!type)
    return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_KeyError, "ASGI message has no 'type'");
  if (ws->lost)
    return client_disconnected();
  switch (ws->state) {
  case ST_CONNECTING:
    if (type_is(type, W.accept))
      return ws_accept(ws, message);
    if (type_is(type, W.close))
      return ws_reject(ws);
    if (type_is(type, W.response_start))
      return ws_response_start(ws, message);
    if (PyErr_Occurred())
      return NULL;
    return PyErr_Format(PyExc_RuntimeError,
                        "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                        "'websocket.http.response.start' but got %R.",
                        type);
  case ST_RESPONSE:
    if (type_is(type, W.response_body))
      return ws_response_body(ws, message);
    if (PyErr_Occurred())
      return NULL;
    return PyErr_Format(PyExc_RuntimeError,
                        "Expected ASGI message 'websocket.http.response.body' but got %R.", type);
  case ST_OPEN:
    if (ws->close_sent)
      return PyErr_Format(PyExc_RuntimeError,
                          "Unexpected ASGI message %R, after sending 'websocket.close'.", type);
    if (!ws->stream)
      return client_disconnected();
    if (type_is(type, W.send))
      return ws_send_data(ws, message);
    if (type_is(type, W.close))
      return ws_app_close(ws, message);
    if (PyErr_Occurred())
      return NULL;
    return PyErr_Format(PyExc_RuntimeError,
                        "Expected ASGI message 'websocket.send' or 'websocket.close', but got %R.",
                        type);
  default:
    return PyErr_Format(PyExc_RuntimeError,
                        "Unexpected ASGI message %R, after sending 'websocket.close' or response "
                        "already completed.",
                        type);
  }
}

static PyMethodDef ws_methods[] = {
    {"receive", (PyCFunction)ws_receive, METH_NOARGS,
     "receive($self, /)\n--\n\nThe next ASGI event: websocket.connect, .receive or .disconnect."},
    {"send", (PyCFunction)ws_send, METH_O,
     "send($self, message, /)\n--\n\nSend an ASGI websocket.* message."},
    {NULL, NULL, 0, NULL},
};

/* ---- the HTTP layer's request callbacks (before the upgrade) -------------------------------- */

void asgi_ws_on_disconnect(http_request *req) {
  WebSocketObject *ws = req->user;
  ws->lost = 1;
  set_disconnect(ws, WS_CLOSE_ABNORMAL, NULL, 0);
  asgi_resolve(&ws->send_waiter, NULL, asgi_ClientDisconnected, "client disconnected");
}

void asgi_ws_on_drain(http_request *req) {
  WebSocketObject *ws = req->user;
  asgi_resolve(&ws->send_waiter, Py_None, NULL, NULL);
}

void asgi_ws_on_request_done(http_request *req) {
  WebSocketObject *ws = req->user;
  assert(ws->req == req);
  req->user = NULL;
  ws->req = NULL;
  if (ws->state != ST_OPEN)
    asgi_resolve(&ws->send_waiter, Py_None, NULL, NULL);
  Py_DECREF(ws); /* the layer's reference */
}

/* ---- a handshake request arrives --------------------------------------------------------------
 */

static const http_header *single_header(const http_request *req, const char *name, int *count) {
  const http_header *found = NULL;
  *count = 0;
  for (size_t i = 0; i < req->n_headers; i++)
    if (header_is(&req->headers[i], name)) {
      if (!found)
        found = &req->headers[i];
      (*count)++;
    }
  return found;
}

/* scope["subprotocols"]: every Sec-WebSocket-Protocol token, in order. */
static PyObject *subprotocols_list(const http_request *req) {
  PyObject *list = PyList_New(0);
  for (size_t i = 0; list && i < req->n_headers; i++) {
    const http_header *h = &req->headers[i];
    if (!header_is(h, "sec-websocket-protocol"))
      continue;
    size_t k = 0;
    while (k < h->value_len) {
      size_t start = k;
      while (k < h->value_len && h->value[k] != ',')
        k++;
      size_t end = k++;
      while (start < end && (h->value[start] == ' ' || h->value[start] == '\t'))
        start++;
      while (end > start && (h->value[end - 1] == ' ' || h->value[end - 1] == '\t'))
        end--;
      if (end == start)
        continue;
      PyObject *tok = PyUnicode_DecodeLatin1(h->value + start, (Py_ssize_t)(end - start), NULL);
      if (!tok || PyList_Append(list, tok) != 0) {
        Py_XDECREF(tok);
        Py_CLEAR(list);
        break;
      }
      Py_DECREF(tok);
    }
  }
  return list;
}

static void negotiate_deflate(WebSocketObject *ws, const http_request *req) {
  for (size_t i = 0; i < req->n_headers; i++) {
    const http_header *h = &req->headers[i];
    ws_deflate_params dp;
    if (header_is(h, "sec-websocket-extensions") &&
        ws_deflate_negotiate(h->value, h->value_len, &dp, ws->extensions, sizeof(ws->extensions))) {
      ws->deflate = 1;
      ws_parser_set_deflate(&ws->parser, &dp);
      ws_deflater_init(&ws->deflater, dp.server_bits, dp.server_no_context_takeover);
      return;
    }
  }
}

void asgi_ws_on_request(ServerObject *s, http_request *req) {
  int nkeys, nversions;
  const http_header *key = single_header(req, "sec-websocket-key", &nkeys);
  const http_header *version = single_header(req, "sec-websocket-version", &nversions);
  if (req->version_major != 1 || req->version_minor < 1) {
    reject_handshake(s, req, 400, "WebSocket handshakes need HTTP/1.1");
    return;
  }
  if (req->content_length > 0 || req->chunked) {
    reject_handshake(s, req, 400, "A WebSocket handshake has no body");
    return;
  }
  if (!key || nkeys != 1 || !ws_key_valid(key->value, key->value_len)) {
    reject_handshake(s, req, 400, "Missing or invalid Sec-WebSocket-Key header");
    return;
  }
  if (!version || nversions != 1 || version->value_len != 2 ||
      memcmp(version->value, "13", 2) != 0) {
    reject_handshake(s, req, 426, "Unsupported WebSocket version (Sec-WebSocket-Version: 13)");
    return;
  }

  WebSocketObject *ws = PyObject_New(WebSocketObject, &WebSocketType);
  if (!ws) {
    asgi_log_current_exception(s, "cannot allocate a WebSocket");
    http_response_abort(req);
    return;
  }
  ws->server = (ServerObject *)Py_NewRef(s);
  ws->req = req;
  ws->stream = NULL;
  ws->state = ST_CONNECTING;
  ws->timer = WT_NONE;
  ws->connect_taken = ws->close_sent = ws->lost = ws->paused = ws->deflate = 0;
  ws->ping_pending = 0;
  ws->ping_payload = 0;
  ws->ring = NULL;
  ws->ring_cap = ws->ring_head = ws->ring_len = 0;
  ws->receive_waiter = ws->send_waiter = ws->disconnect = NULL;
  ws_parser_init(&ws->parser, (uint64_t)s->ws_max_size);
  ws_deflater_init(&ws->deflater, 15, false);
  ws->scratch = (ws_buf){0};
  ws->extensions[0] = '\0';
  ws_accept_key(key->value, key->value_len, ws->accept);
  log_prefix_init(ws->log_prefix, sizeof(ws->log_prefix), req);
  if (s->ws_per_message_deflate)
    negotiate_deflate(ws, req);
  req->user = ws; /* the layer's reference, dropped in on_request_done */

  PyObject *scope = asgi_build_scope(s, req, 1);
  PyObject *subprotocols = scope ? subprotocols_list(req) : NULL;
  int rc = subprotocols ? PyDict_SetItem(scope, W.subprotocols, subprotocols) : -1;
  Py_XDECREF(subprotocols);
  PyObject *receive = rc == 0 ? PyCFunction_New(&ws_methods[0], (PyObject *)ws) : NULL;
  PyObject *send = receive ? PyCFunction_New(&ws_methods[1], (PyObject *)ws) : NULL;
  rc = send ? asgi_start_app(s, scope, receive, send, (PyObject *)ws, ws_finish) : -1;
  Py_XDECREF(scope);
  Py_XDECREF(receive);
  Py_XDECREF(send);
  if (rc != 0) {
    asgi_log_current_exception(s, "Exception in ASGI application");
    respond_500(ws);
  }
}

/* ---- the type ------------------------------------------------------------------------------ */

static void ws_dealloc(WebSocketObject *ws) {
  while (ws->ring_len)
    Py_DECREF(ring_pop(ws));
  PyMem_Free(ws->ring);
  Py_XDECREF(ws->receive_waiter);
  Py_XDECREF(ws->send_waiter);
  Py_XDECREF(ws->disconnect);
  ws_parser_free(&ws->parser);
  ws_deflater_free(&ws->deflater);
  ws_buf_free(&ws->scratch);
  Py_XDECREF(ws->server);
  PyObject_Free(ws);
}

static PyTypeObject WebSocketType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_appbin.WebSocket",
    .tp_basicsize = sizeof(WebSocketObject),
    .tp_dealloc = (destructor)ws_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = ws_methods,
    .tp_doc = PyDoc_STR("One WebSocket connection: the ASGI receive/send pair."),
};

int asgi_ws_init(PyObject *module) {
  (void)module;
  if (strings_init() != 0 || PyType_Ready(&WebSocketType) < 0)
    return -1;
  return 0;
}
