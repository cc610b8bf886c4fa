/* Internal structures shared by host/http_*.c. Not part of the public API. */
#ifndef APPBIN_HTTP_INTERNAL_H
#define APPBIN_HTTP_INTERNAL_H

#include "http.h"
#include "http_date.h"
#include "http_tls.h"

#include <llhttp.h>

/* A growable byte buffer. */
typedef struct http_buf {
  char *base;
  size_t len;
  size_t cap;
} http_buf;

int http_buf_reserve(http_buf *b, size_t extra); /* 0 or UV_ENOMEM */
int http_buf_append(http_buf *b, const void *data, size_t len);
void http_buf_free(http_buf *b);

typedef struct http_listener {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  http_server *srv;
  bool is_pipe;
  char *unlink_path; /* unix socket created by us: removed at close */
} http_listener;

/* Output sink replacing the socket for tests and fuzzing (detached conns). */
typedef void (*http_conn_sink)(http_conn *c, const char *data, size_t len, void *ud);

struct http_server {
  uv_loop_t *loop;
  http_config cfg;
  http_callbacks cb;
  void *user;

  http_listener **listeners;
  size_t n_listeners;
  size_t n_listeners_open; /* handles not yet closed */

  http_conn *conns; /* doubly linked list of live connections */
  size_t n_conns;
  size_t n_closing; /* of n_conns: closing (lingering, handle closing) */
  size_t n_active;  /* requests handed to the consumer, not yet terminal */
  size_t n_streams; /* upgraded connections whose stream is active */
  uint64_t n_requests;

  uint64_t nofile;       /* RLIMIT_NOFILE when created */
  int fd_warn_at;        /* an accepted fd this high is near the limit */
  uint64_t fd_warned_at; /* uv_now() of the last such warning, 0 never */
  bool accepting;
  bool max_reached;
  bool shutting_down;
  bool closed_notified;
  void (*on_closed)(http_server *srv);

  bool hold_output;        /* http_server_hold_output() */
  struct http_conn **held; /* connections whose output waits for the release (a ref each) */
  size_t n_held, held_cap;

  char **rbuf_pool; /* free read buffers (cfg.read_buffer_size each) */
  char *tls_rbuf;   /* cfg.tls: ciphertext of one read, fed at once (HTTP_TLS_READ) */
  size_t n_rbuf_pool;

  http_date_cache date;
  http_buf fixed_headers; /* "server: x\r\n" + default headers, serialized */
  size_t server_line_len; /* length of the server line at its start */
  char *server_name;
};

/* Parse-time header record: offsets into http_conn.hbuf (which may move). */
typedef struct http_hdr_span {
  uint32_t name_off, name_len, value_off, value_len;
} http_hdr_span;

enum http_span_kind { SPAN_NONE, SPAN_METHOD, SPAN_URL, SPAN_FIELD, SPAN_VALUE };
/* What llhttp reads next (see "Shapes llhttp refuses" in http_conn.c). */
enum http_framing { FR_HEAD, FR_DATA, FR_CHUNK_LINE, FR_TRAILERS };
enum http_timer_mode {
  TIMER_OFF,
  TIMER_IDLE_TRIM, /* keep-alive, its first IDLE_TRIM_MS: then conn_trim_idle() */
  TIMER_IDLE,
  TIMER_HEAD,
  TIMER_LINGER,
  TIMER_STREAM,
  TIMER_FLUSH
};

/* An upgraded connection's consumer side (embedded in http_conn). */
struct http_stream {
  http_conn *conn;
  http_stream_callbacks cb;
  void *user;
};

struct http_conn {
  http_server *srv;
  http_conn *prev, *next;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_timer_t timer;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  llhttp_t parser;

  http_conn_sink sink; /* non-NULL: detached, output goes here */
  void *sink_data;

  /* --- input --- */
  char *rbuf; /* from srv->rbuf_pool while it holds unparsed bytes */
  size_t rpos, rlen;
  uint64_t abs;          /* stream offset of rbuf[rpos] */
  const char *exec_base; /* data pointer of the running llhttp_execute() */

  /* --- request head being parsed (valid while req_active too) --- */
  http_buf hbuf;     /* target + header names + values */
  size_t target_len; /* hbuf[0..target_len) is the request-target */
  http_hdr_span *spans;
  size_t n_spans, spans_cap;
  http_header *hdrs; /* pointer form, built at headers-complete */
  size_t hdrs_cap;
  uint8_t span_kind;       /* enum http_span_kind of the last span */
  uint64_t span_end_abs;   /* stream offset just past the last span */
  uint64_t method_end_abs; /* stream offset just past the method */
  uint64_t head_start_abs; /* stream offset where the head began */
  size_t trailer_bytes;    /* bytes of trailers / chunk extensions */
  size_t ext_bytes;        /* chunk-extension bytes of the current chunk */
  uint8_t framing;         /* enum http_framing */
  bool reqline_seen;       /* FR_HEAD: the request line's end was prescanned */
  bool hs_started;         /* FR_HEAD: a byte of the request line was fed (FR_TRAILERS: set) */
  char hs_tail[2];         /* FR_HEAD/FR_TRAILERS: the last two bytes fed to llhttp */
  int perr_status;         /* error found by a callback: status to answer */
  const char *perr_msg;

  /* --- the current request (at most one at a time) --- */
  http_request req;
  int64_t resp_remaining; /* declared content-length left, -1 = none */
  uint64_t resp_body_bytes;
  int resp_status;
  size_t resp_head_at;   /* where the open head starts in wbuf */
  bool resp_head_unsent; /* no byte of wbuf left since the head was queued */
  bool resp_complete;    /* the whole response was queued (for on_response_done) */

  /* --- output --- */
  http_buf wbuf;   /* queued, not yet handed to the kernel/libuv */
  http_buf wfly;   /* bytes of the uv_write in flight */
  size_t wfly_off; /* wfly[0..wfly_off) was written before the uv_write */
  int sf_fd;       /* sendfile source, -1 if none */
  int64_t sf_off, sf_left;
  bool sf_final;   /* sendfile is the end of the response */
  bool sf_chunked; /* chunk-encoded: CRLF (and last-chunk) after the file */
  bool sf_pread;   /* sendfile(2) unusable: pread() + write */

  /* --- TLS (cfg.tls): rbuf holds plaintext, wbuf plaintext until flushed --- */
  http_tls *tls;
  http_buf tls_spare; /* the other buffer of conn_tls_seal() */
  bool tls_more;      /* the last pull filled rbuf: more plaintext may wait in tls */
  bool tls_eof;       /* the peer's close_notify was read */
  bool tls_fed;       /* ciphertext was read */

  /* --- after http_request_upgrade(): a raw byte stream --- */
  http_stream stream;

  /* --- client/server address strings --- */
  char client_host[64];
  char server_host[108];
  int client_port, server_port;

  /* --- flags --- */
  int refs; /* > 0: somebody up the stack still uses the struct */
  uint8_t timer_mode;
  bool handle_open, timer_open;
  bool reading;       /* uv_read_start active */
  bool writing;       /* uv_write in flight */
  bool in_process;    /* inside conn_process(): defer flush / recursion */
  bool parser_paused; /* llhttp returned HPE_PAUSED: resume it */
  bool in_head;       /* between message-begin and headers-complete */
  bool in_trailers;   /* after the last chunk, parsing trailers */
  bool req_active;    /* req handed to the consumer, no terminal call yet */
  bool req_internal;  /* req answered by the layer (503), never shown */
  bool had_request;   /* a request head was read on this connection */
  bool body_done;     /* message complete seen for req */
  bool body_expected; /* content-length > 0 or chunked */
  bool body_paused;   /* consumer paused the body (or expect-continue) */
  bool continue_sent;
  bool disconnected; /* on_disconnect delivered / req is dead */
  bool resp_started;
  bool resp_head_open; /* head in wbuf, framing line + CRLF not yet added */
  bool resp_chunked;
  bool resp_no_body; /* HEAD / 1xx / 204 / 304 */
  bool resp_close_delimited;
  bool resp_app_connection; /* consumer sent its own Connection header */
  bool keep_alive;          /* may serve another request after this one */
  bool close_after;         /* close once output is flushed */
  bool parse_dead;          /* stop parsing for good (error, upgrade, close) */
  bool eof;                 /* peer half-closed */
  bool closing;             /* graceful/hard close started */
  bool lingering;           /* shut down for writing, draining input */
  bool closed;              /* socket gone (detached: sink closed) */
  bool want_drain;
  bool output_held; /* in srv->held */
  bool addr_done;
  bool is_pipe;
  bool upgraded;        /* 101 sent: bytes go to stream.cb.on_data, not llhttp */
  bool stream_active;   /* the stream's consumer holds it (no terminal event yet) */
  bool stream_paused;   /* the consumer paused delivery */
  bool stream_shutdown; /* on_shutdown delivered */
};

/* http_conn.c */
http_conn *http_conn_new(http_server *srv, bool pipe); /* handle inited; caller accepts */
void http_conn_start(http_conn *c);                    /* after accept: start reading */
void http_conn_close_now(http_conn *c);                /* hard close; on_disconnect if needed */
void http_conn_release_output(http_conn *c);           /* srv->held: write what was kept */
void http_conn_shutdown(http_conn *c);                 /* server stopping: close if idle */
void http_conn_out_flush(http_conn *c);
int http_conn_out_append(http_conn *c, const void *data, size_t len);
int http_conn_out_write(http_conn *c, const void *data, size_t len, const char *tail,
                        size_t tail_len); /* zero-copy when possible */
size_t http_conn_out_pending(const http_conn *c);
void http_conn_request_finished(http_conn *c); /* after the terminal call */
void http_conn_pump_file(http_conn *c);
void http_conn_continue(http_conn *c); /* consumer resumed: process buffered input */
/* http_request_upgrade(): the 101 head is queued; hand the connection over */
void http_conn_upgrade(http_conn *c, const http_stream_callbacks *cb, void *user);

/* Detached connections (tests, fuzzing): no socket, no timers. */
http_conn *http_conn_new_detached(http_server *srv, http_conn_sink sink, void *ud);
void http_conn_feed(http_conn *c, const char *data, size_t len);
void http_conn_feed_eof(http_conn *c);
bool http_conn_is_closed(const http_conn *c);
/* Free a detached connection (closes it first; in-flight requests are
 * disconnected and must still get their terminal call before this). */
void http_conn_free_detached(http_conn *c);

/* http_server.c */
void http_server__conn_gone(http_server *srv);
void http_server__log(http_server *srv, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
char *http_server__rbuf_get(http_server *srv);
void http_server__rbuf_put(http_server *srv, char *buf);
void http_server__count_request(http_server *srv);

/* http_response.c */
bool http_token_valid(const char *s, size_t n);
bool http_value_valid(const char *s, size_t n);
/* Serialize a complete small response (layer-generated errors). */
int http_response__simple(http_conn *c, int status, const char *body, bool close);
/* The layer's own error answer to a connection: sent, and reported to
 * on_response_done without a request. */
void http_response__error(http_conn *c, int status, const char *body);

#endif
