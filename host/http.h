/* appbin HTTP/1.1 server layer (libuv + llhttp, no Python).
 *
 * Threading: everything runs on the thread that owns the uv_loop_t given to
 * http_server_new(). Nothing here blocks; the layer works when the loop is
 * driven in uv_run(UV_RUN_NOWAIT) steps from another event loop. libuv only
 * updates its epoll interest set inside uv_run(), so a consumer that calls
 * into the layer from outside uv_run() (e.g. from an asyncio task) must make
 * sure uv_run(loop, UV_RUN_NOWAIT) runs again soon afterwards.
 *
 * Ownership summary
 *   http_server  created by http_server_new(), freed by http_server_free()
 *                once it is closed (see http_server_shutdown()).
 *   http_request owned by the layer. It is handed to the consumer by
 *                on_request() and stays valid until the consumer's terminal
 *                call: http_response_write(more=false),
 *                http_response_sendfile(more=false) or http_response_abort().
 *                on_request_done() runs inside that terminal call, right before
 *                the object is recycled; the consumer must not touch it after
 *                the terminal call returns. Every request handed out gets
 *                exactly one terminal call, even after on_disconnect().
 *   strings      all const char * in http_request point into layer memory that
 *                stays valid, unchanged, until the terminal call.
 *   data passed  to on_body() is valid only during the callback.
 *   data given   to http_response_*() is copied or written before the call
 *                returns; the caller keeps ownership.
 *
 * Re-entrancy: callbacks run from inside uv_run() or from inside the
 * consumer's own calls: finishing a response may immediately parse the next
 * pipelined request and call on_request() for it; a write that fails calls
 * on_disconnect() before returning; a write may call on_drain(). Callbacks
 * may call any http_request_* / http_response_* function on their own
 * request. After a terminal call returns, the consumer's per-request state
 * may already have been released by its on_request_done().
 */
#ifndef APPBIN_HTTP_H
#define APPBIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct http_server http_server;
typedef struct http_conn http_conn;

/* Error codes returned by the layer: 0 on success, negative on failure.
 * Listening functions may also return libuv error codes (UV_E*). */
enum {
  HTTP_OK = 0,
  HTTP_EINVAL_STATUS = -20001, /* status outside 100..999 */
  HTTP_EINVAL_HEADER_NAME = -20002,
  HTTP_EINVAL_HEADER_VALUE = -20003,
  HTTP_EINVAL_CONTENT_LENGTH = -20004,
  HTTP_ESTATE = -20005,   /* call not allowed now (e.g. start twice, write first) */
  HTTP_ECLOSED = -20006,  /* client disconnected; call is a no-op */
  HTTP_ETOOMUCH = -20007, /* body longer than the declared content-length */
  HTTP_EFILE = -20008,    /* sendfile: bad fd / read error */
  HTTP_ESHORT = -20009,   /* finished short of the declared content-length */
};
const char *http_strerror(int err);

typedef struct http_header {
  const char *name; /* request headers: lowercased, not NUL-terminated */
  size_t name_len;
  const char *value; /* as received, OWS trimmed, not NUL-terminated */
  size_t value_len;
} http_header;

typedef struct http_request {
  /* --- read-only for the consumer --- */
  http_server *server;
  const char *method; /* NUL-terminated, static ("GET") */
  size_t method_len;
  const char *target; /* raw request-target, e.g. "/a%20b?x=1" */
  size_t target_len;
  const char *path; /* raw (not percent-decoded) part of target before '?' */
  size_t path_len;
  const char *query; /* raw part after '?', without it; "" if none */
  size_t query_len;
  int version_major; /* 1 */
  int version_minor; /* 0 or 1 */
  const http_header *headers;
  size_t n_headers;
  int64_t content_length;  /* -1 if no Content-Length header */
  bool chunked;            /* Transfer-Encoding: chunked */
  bool expect_continue;    /* Expect: 100-continue */
  bool keep_alive;         /* client wants keep-alive (HTTP version + Connection) */
  bool upgrade;            /* Connection: upgrade + Upgrade, or CONNECT */
  bool unix_socket;        /* accepted on a unix socket: client_* are empty */
  bool tls;                /* the connection is TLS (cfg.tls) */
  const char *client_host; /* NUL-terminated, "" if unknown */
  int client_port;         /* -1 if unknown */
  const char *server_host; /* NUL-terminated; socket path for unix sockets */
  int server_port;         /* -1 if unknown / unix */
  uint64_t start_ns;       /* uv_hrtime() once the head was parsed (0 unless cfg.timing) */
  /* --- consumer-owned --- */
  void *user;
} http_request;

typedef struct http_callbacks {
  /* Headers complete. The consumer starts its handler here. For requests with
   * Expect: 100-continue the body is held back (and "100 Continue" not sent)
   * until http_request_body_resume(). Required. */
  void (*on_request)(http_request *req);
  /* A piece of request body (de-chunked). Valid only during the call. */
  void (*on_body)(http_request *req, const char *data, size_t len);
  /* The whole body was received (also called for requests without body). */
  void (*on_body_end)(http_request *req);
  /* The connection failed or the client went away before the response was
   * finished. Further writes return HTTP_ECLOSED; a terminal call is still
   * required. Called at most once per request. */
  void (*on_disconnect)(http_request *req);
  /* Pending output fell below the low-water mark after a write reported it
   * over the high-water mark. */
  void (*on_drain)(http_request *req);
  /* The request object is about to be recycled (inside the terminal call). */
  void (*on_request_done)(http_request *req);
  /* limit_max_requests reached: the server stopped accepting. The consumer
   * typically calls http_server_shutdown(). */
  void (*on_max_requests)(http_server *srv);
  /* Diagnostics (invalid requests, accept errors). level: 0 debug, 1 info,
   * 2 warning, 3 error. May be NULL. */
  void (*on_log)(http_server *srv, int level, const char *msg);
  /* A response is over (for access logs and metrics): every request handed
   * out, inside its terminal call right before on_request_done() (req set,
   * status 0 if none was started; complete: the whole response was queued,
   * 101 for an upgrade), and each error the layer answered itself (req
   * NULL: 400, 431, 503...). body_bytes: body bytes queued. May be NULL. */
  void (*on_response_done)(http_server *srv, const http_request *req, int status,
                           uint64_t body_bytes, bool complete);
} http_callbacks;

typedef struct http_config {
  size_t max_head_size;               /* request line + headers, bytes; 431 beyond (16384) */
  size_t max_headers;                 /* header count; 431 beyond (100) */
  size_t read_buffer_size;            /* per-connection read buffer (16384) */
  uint64_t keep_alive_timeout_ms;     /* idle connection timeout (5000; 0 = none) */
  uint64_t header_timeout_ms;         /* whole request head must arrive within (10000; 0 = none) */
  size_t write_high_water;            /* http_response_write() returns 1 above (65536) */
  size_t write_low_water;             /* on_drain() below (16384) */
  bool server_header;                 /* send "server: <server_name>" (true) */
  const char *server_name;            /* ("appbin"); copied */
  bool date_header;                   /* send "date:" (true) */
  const http_header *default_headers; /* extra headers on every response; copied */
  size_t n_default_headers;
  size_t limit_concurrency;    /* 503 when this many requests/connections are active (0 = off) */
  uint64_t limit_max_requests; /* stop accepting after this many requests (0 = off) */
  int backlog;                 /* listen backlog (2048) */
  bool timing;                 /* stamp http_request.start_ns (false) */
  struct http_tls_ctx *tls;    /* serve TLS with these settings (NULL: plain); borrowed */
} http_config;

/* Fill *cfg with the defaults shown above. */
void http_config_init(http_config *cfg);

/* --- server ------------------------------------------------------------- */

/* Create a server on loop. cfg and cb are copied. Returns NULL on OOM or an
 * invalid config. user is returned by http_server_user(). */
http_server *http_server_new(uv_loop_t *loop, const http_config *cfg, const http_callbacks *cb,
                             void *user);
void *http_server_user(const http_server *srv);
uv_loop_t *http_server_loop(const http_server *srv);

/* Listen on host:port (host: IPv4/IPv6 literal or name; "" / NULL = all
 * IPv4 interfaces). SO_REUSEADDR always, SO_REUSEPORT when reuse_port.
 * port 0 picks a free port: see http_server_port(). */
int http_server_listen_tcp(http_server *srv, const char *host, int port, bool reuse_port);
/* Listen on a unix socket path (a stale socket file is replaced; mode 0666). */
int http_server_listen_unix(http_server *srv, const char *path);
/* Listen on an inherited, already bound socket fd (TCP or unix). */
int http_server_listen_fd(http_server *srv, int fd);
/* Port of the first TCP listener, or -1. */
int http_server_port(const http_server *srv);

/* Graceful stop: close the listeners, close idle keep-alive connections,
 * let in-flight requests finish (their connections close afterwards).
 * on_closed runs once every connection is gone (possibly inside this call).
 * Call http_server_abort() to cut in-flight requests short. */
void http_server_shutdown(http_server *srv, void (*on_closed)(http_server *srv));
/* Close every connection now (in-flight requests get on_disconnect). */
void http_server_abort(http_server *srv);
/* Free a server whose on_closed has run, or that never listened and has no
 * connections. Handles must have been closed by running the loop. */
void http_server_free(http_server *srv);

/* While held (a consumer running the first steps of several requests in a
 * row), a connection whose next pipelined request has been handed over
 * keeps its output until the hold ends or that request writes: a pipelined
 * burst answered at once goes out in one write instead of one per response.
 * Releasing writes what was kept. */
void http_server_hold_output(http_server *srv, bool hold);

/* Counters. */
size_t http_server_connections(const http_server *srv);
size_t http_server_active_requests(const http_server *srv);
uint64_t http_server_total_requests(const http_server *srv);
/* Upgraded connections (http_request_upgrade) not yet closed. */
size_t http_server_streams(const http_server *srv);

/* --- request body flow ---------------------------------------------------- */

/* Stop delivering on_body() (and reading the socket) until resumed. */
void http_request_body_pause(http_request *req);
/* Deliver the body; for Expect: 100-continue requests also sends
 * "100 Continue" (once, if the response has not started). */
void http_request_body_resume(http_request *req);

/* --- response ------------------------------------------------------------- */

/* Start the response: validates status (100..999; 1xx other than 101 are
 * rejected) and headers (token names; values without CR, LF, NUL or other
 * controls but HTAB), then serializes the head into the output buffer. It is
 * sent together with the first body write (call http_response_flush() to
 * send it alone). Framing: a content-length header given here is enforced;
 * otherwise if the first write is also the last the layer adds
 * content-length itself, else it uses chunked encoding (HTTP/1.1) or
 * close-delimited (HTTP/1.0). HEAD, 204 and 304 responses never carry a body
 * (written bytes are dropped). Returns 0 or HTTP_E*; on error nothing was
 * queued and the consumer may start again (e.g. with a 500). */
int http_response_start(http_request *req, int status, const http_header *headers, size_t n);

/* Append body bytes; more=false finishes the response (terminal call).
 * Returns 0, 1 if output is above the high-water mark (wait for on_drain()
 * before writing more), or a negative HTTP_E* code. A terminal call always
 * releases the request, even when it returns an error. */
int http_response_write(http_request *req, const void *data, size_t len, bool more);

/* Send count bytes of fd from offset (count < 0: to end of file). The layer
 * takes ownership of fd and closes it. Uses sendfile(2). more=false finishes
 * the response (terminal call). Same return values as http_response_write. */
int http_response_sendfile(http_request *req, int fd, int64_t offset, int64_t count, bool more);

/* Push out anything queued (e.g. the head of a response whose first body
 * chunk comes later). */
int http_response_flush(http_request *req);

/* Terminal call: give up on the request. If the response has not started,
 * a 500 is sent when possible; otherwise the connection is closed. */
void http_response_abort(http_request *req);

/* Withdraws a started response none of whose bytes has left yet (no body
 * write, no flush since http_response_start()): the request is as before
 * the start, so that, say, a 500 can replace it. 0, or HTTP_ESTATE when it
 * is too late. */
int http_response_retract(http_request *req);

/* True once http_response_start() succeeded. */
bool http_response_started(const http_request *req);

/* Reason phrase for a status code ("" if unknown). */
const char *http_status_reason(int status);

/* --- protocol upgrade (101 Switching Protocols) ------------------------------
 *
 * http_request_upgrade() answers an upgrade request (req->upgrade, its body
 * fully received, no response started) with "101 Switching Protocols" plus
 * the given headers (server, date and default headers are added as for any
 * response), and turns the connection into a raw byte stream. It is the
 * request's terminal call: on_request_done() runs inside it. Bytes the client
 * sent after its request head are delivered to on_data() (possibly inside
 * the call: *out is set before any callback runs).
 *
 * The stream lives until its terminal event: the consumer's
 * http_stream_close(), or the layer's on_close() when the connection fails
 * (peer EOF or reset, write error, http_server_abort()). on_close() runs
 * exactly once, inside http_stream_close() too; the consumer must not use the
 * stream after it. The connection still counts for http_server_shutdown(),
 * which calls on_shutdown() on each live stream (at once for a stream that
 * is upgraded while the server is shutting down, inside the upgrade call).
 *
 * Re-entrancy: on_data() may run inside http_stream_resume(); on_close() may
 * run inside http_stream_write() (the write failed) and any call that closes;
 * on_drain() inside a write. Writes made inside on_data() are sent together
 * once the batch of input is processed. The stream's timer is its own: the
 * layer's keep-alive and header timeouts do not apply to streams.
 */
typedef struct http_stream http_stream;

typedef struct http_stream_callbacks {
  /* Bytes from the peer; valid only during the call. Returns how many were
   * taken: the rest stays buffered and delivery pauses (as by
   * http_stream_pause()) until http_stream_resume() offers it again. Required. */
  size_t (*on_data)(http_stream *st, const char *data, size_t len);
  /* Pending output fell below the low-water mark after a write returned 1. */
  void (*on_drain)(http_stream *st);
  /* The timer set by http_stream_set_timer() fired. */
  void (*on_timer)(http_stream *st);
  /* The server is shutting down gracefully: wind the stream up (a NULL
   * callback closes it gracefully at once). */
  void (*on_shutdown)(http_stream *st);
  /* The stream is over (see above). */
  void (*on_close)(http_stream *st);
} http_stream_callbacks;

/* Returns 0, HTTP_ESTATE (not an upgrade request, body not fully received,
 * response started), HTTP_ECLOSED, HTTP_EINVAL_HEADER_* or UV_ENOMEM; on
 * error the request is untouched and still needs its terminal call. */
int http_request_upgrade(http_request *req, const http_header *headers, size_t n,
                         const http_stream_callbacks *cb, void *user, http_stream **out);

void *http_stream_user(const http_stream *st);
http_server *http_stream_server(const http_stream *st);
/* Queue head (may be NULL/0) then data, written together; data of 4 KiB or
 * more is written from the caller's memory when possible. Returns 0, 1 if
 * output is above the high-water mark (wait for on_drain()), or
 * HTTP_ECLOSED / UV_ENOMEM. */
int http_stream_write(http_stream *st, const void *head, size_t head_len, const void *data,
                      size_t len);
/* Bytes queued and not yet taken by the kernel. */
size_t http_stream_pending(const http_stream *st);
/* Stop / restart on_data() and reading the socket. */
void http_stream_pause(http_stream *st);
void http_stream_resume(http_stream *st);
/* on_timer() once after ms milliseconds (replacing an earlier timer); 0
 * stops it. */
void http_stream_set_timer(http_stream *st, uint64_t ms);
/* A quiet moment of the stream (a keepalive ping's): output buffers that
 * messages grew are freed if nothing is waiting in them, as for an idle
 * keep-alive connection. */
void http_stream_trim(http_stream *st);
/* Terminal call. graceful: send what is queued, then shut the connection
 * down for writing (the peer's further input is drained and dropped for a
 * moment); otherwise drop the output and close at once. on_close() runs
 * inside. */
void http_stream_close(http_stream *st, bool graceful);

#ifdef __cplusplus
}
#endif
#endif
