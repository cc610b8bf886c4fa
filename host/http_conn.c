/* Per-connection state machine: reading, parsing (llhttp), request
 * hand-off, pipelining, timeouts, output queue, closing.
 *
 * One request is handed to the consumer at a time. Pipelined requests stay
 * unparsed in the read buffer (parsing is paused at message-complete) until
 * the current request's terminal call; their responses therefore go out in
 * order. Output produced while parsing a batch is flushed once at the end of
 * the batch, so a pipelined burst costs one read and one write.
 */
#include "http_internal.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

#define CONN_OF_PARSER(p) ((http_conn *)(p)->data)
#define MAX_CHUNK_EXT 4096                  /* chunk-extension bytes allowed per chunk */
#define MAX_CHUNK_LINE (MAX_CHUNK_EXT + 32) /* a chunk-size line, without its CRLF */
#define LINGER_MS 1000                      /* discard input this long after shutdown() */
#define ZERO_COPY_MIN 4096                  /* body writes at least this big skip the copy */
#define FILE_CHUNK 65536                    /* pread() fallback chunk for sendfile */
#define STREAM_FLUSH_MS 10000 /* a closed stream's last output must leave within this */
#define FRESH_GRACE_MS 1000   /* shutting down: how long a new, silent connection may wait */
#define HTTP_TLS_READ 65536   /* ciphertext taken from the socket at once */
#define TLS_SEAL_SLICE 65536  /* plaintext encrypted at once */

static const llhttp_settings_t parser_settings;
static void conn_process(http_conn *c);
static void conn_update(http_conn *c);
static void conn_close_graceful(http_conn *c);
static void conn_maybe_free(http_conn *c);
static void stream_notify_shutdown(http_conn *c);
static bool conn_hold_output(http_conn *c);

/* ---- growable buffers -------------------------------------------------- */

int http_buf_reserve(http_buf *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  size_t cap = b->cap ? b->cap : 512;
  while (cap - b->len < extra)
    cap *= 2;
  char *p = realloc(b->base, cap);
  if (p == NULL)
    return UV_ENOMEM;
  b->base = p;
  b->cap = cap;
  return 0;
}

int http_buf_append(http_buf *b, const void *data, size_t len) {
  if (len == 0)
    return 0;
  if (http_buf_reserve(b, len))
    return UV_ENOMEM;
  memcpy(b->base + b->len, data, len);
  b->len += len;
  return 0;
}

void http_buf_free(http_buf *b) {
  free(b->base);
  b->base = NULL;
  b->len = b->cap = 0;
}

/* ---- lifetime ------------------------------------------------------------ */

static void conn_ref(http_conn *c) { c->refs++; }

static void conn_unref(http_conn *c) {
  c->refs--;
  conn_maybe_free(c);
}

static http_conn *conn_alloc(http_server *srv) {
  http_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->srv = srv;
  c->sf_fd = -1;
  c->client_port = c->server_port = -1;
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->n_conns++;
  return c;
}

http_conn *http_conn_new(http_server *srv, bool pipe) {
  http_conn *c = conn_alloc(srv);
  if (c == NULL)
    return NULL;
  int r = pipe ? uv_pipe_init(srv->loop, &c->h.pipe, 0) : uv_tcp_init(srv->loop, &c->h.tcp);
  if (r == 0) {
    c->handle_open = true;
    c->h.handle.data = c;
    r = uv_timer_init(srv->loop, &c->timer);
  }
  if (r == 0) {
    c->timer_open = true;
    c->timer.data = c;
  }
  c->is_pipe = pipe;
  if (r == 0 && srv->cfg.tls && (c->tls = http_tls_new(srv->cfg.tls)) == NULL)
    r = UV_ENOMEM;
  if (r != 0) {
    http_conn_close_now(c);
    return NULL;
  }
  return c;
}

http_conn *http_conn_new_detached(http_server *srv, http_conn_sink sink, void *ud) {
  http_conn *c = conn_alloc(srv);
  if (c == NULL)
    return NULL;
  c->sink = sink;
  c->sink_data = ud;
  conn_ref(c); /* held until http_conn_free_detached() */
  return c;
}

static void conn_maybe_free(http_conn *c) {
  if (!c->closed || c->handle_open || c->timer_open || c->req_active || c->stream_active ||
      c->refs > 0)
    return;
  http_server *srv = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  srv->n_conns--;
  srv->n_closing--;
  if (c->rbuf)
    http_server__rbuf_put(srv, c->rbuf);
  if (c->sf_fd >= 0)
    close(c->sf_fd);
  http_buf_free(&c->hbuf);
  http_buf_free(&c->wbuf);
  http_buf_free(&c->wfly);
  http_buf_free(&c->tls_spare);
  http_tls_free(c->tls);
  free(c->spans);
  free(c->hdrs);
  free(c);
  http_server__conn_gone(srv);
}

static void on_handle_close(uv_handle_t *h) {
  http_conn *c = h->data;
  c->handle_open = false;
  conn_maybe_free(c);
}

static void on_timer_close(uv_handle_t *h) {
  http_conn *c = h->data;
  c->timer_open = false;
  conn_maybe_free(c);
}

static void conn_mark_closing(http_conn *c) {
  if (!c->closing)
    c->srv->n_closing++;
  c->closing = true;
}

void http_conn_close_now(http_conn *c) {
  if (c->closed)
    return;
  conn_ref(c);
  conn_mark_closing(c);
  c->closed = true;
  c->wbuf.len = 0;
  if (c->sf_fd >= 0) {
    close(c->sf_fd);
    c->sf_fd = -1;
  }
  if (c->req_active && !c->disconnected) {
    c->disconnected = true;
    if (c->srv->cb.on_disconnect && !c->req_internal)
      c->srv->cb.on_disconnect(&c->req);
  }
  if (c->stream_active) {
    c->stream_active = false;
    c->srv->n_streams--;
    if (c->stream.cb.on_close)
      c->stream.cb.on_close(&c->stream);
  }
  if (c->timer_open)
    uv_close((uv_handle_t *)&c->timer, on_timer_close);
  if (c->handle_open)
    uv_close(&c->h.handle, on_handle_close);
  conn_unref(c);
}

void http_conn_free_detached(http_conn *c) {
  http_conn_close_now(c);
  conn_unref(c);
}

bool http_conn_is_closed(const http_conn *c) { return c->closed; }

/* ---- output queue ---------------------------------------------------------- */

size_t http_conn_out_pending(const http_conn *c) {
  return c->wbuf.len + (c->wfly.len - c->wfly_off) + (c->tls ? http_tls_output_pending(c->tls) : 0);
}

int http_conn_out_append(http_conn *c, const void *data, size_t len) {
  if (c->closed)
    return HTTP_ECLOSED;
  return http_buf_append(&c->wbuf, data, len);
}

static void on_write(uv_write_t *wr, int status);

/* Hand wbuf[skip..] to uv_write() (nothing in flight). */
static void conn_submit(http_conn *c, size_t skip) {
  c->resp_head_unsent = false;
  http_buf tmp = c->wfly;
  c->wfly = c->wbuf;
  c->wbuf = tmp;
  c->wbuf.len = 0;
  c->wfly_off = skip;
  uv_buf_t b = uv_buf_init(c->wfly.base + skip, (unsigned)(c->wfly.len - skip));
  int r = uv_write(&c->write_req, &c->h.stream, &b, 1, on_write);
  if (r < 0) {
    c->wfly.len = c->wfly_off = 0;
    http_conn_close_now(c);
    return;
  }
  c->writing = true;
}

/* Output kept for http_server_hold_output(): below the high-water mark,
 * with no file to send after it. */
static bool conn_output_kept(const http_conn *c) {
  return c->output_held && c->srv->hold_output && c->sf_fd < 0 &&
         c->wbuf.len < c->srv->cfg.write_high_water;
}

/* TLS: wbuf's plaintext becomes the ciphertext to write (after what the
 * handshake or an alert left), a slice at a time so that OpenSSL's output
 * buffer stays small, into tls_spare, which then changes places with wbuf. */
static int conn_tls_seal(http_conn *c) {
  http_buf *out = &c->tls_spare;
  out->len = 0;
  size_t done = 0;
  do {
    size_t n = c->wbuf.len - done < TLS_SEAL_SLICE ? c->wbuf.len - done : TLS_SEAL_SLICE;
    if (n && http_tls_write(c->tls, c->wbuf.base + done, n) != 0) {
      http_server__log(c->srv, 1, "TLS: %s: closing the connection", http_tls_error(c->tls));
      return -1;
    }
    done += n;
    size_t pending = http_tls_output_pending(c->tls);
    if (pending) {
      if (http_buf_reserve(out, pending))
        return -1;
      out->len += http_tls_output(c->tls, out->base + out->len, pending);
    }
  } while (done < c->wbuf.len);
  http_buf plain = c->wbuf;
  c->wbuf = *out;
  *out = plain;
  out->len = 0;
  if (out->cap > (1u << 20)) /* one large response: do not keep its size */
    http_buf_free(out);
  return 0;
}

void http_conn_out_flush(http_conn *c) {
  if (c->in_process || c->writing || c->closed || conn_output_kept(c))
    return;
  if (c->tls && conn_tls_seal(c) != 0) {
    http_conn_close_now(c);
    return;
  }
  if (c->wbuf.len == 0)
    return;
  c->resp_head_unsent = false;
  if (c->sink) {
    c->sink(c, c->wbuf.base, c->wbuf.len, c->sink_data);
    c->wbuf.len = 0;
    return;
  }
  uv_buf_t b = uv_buf_init(c->wbuf.base, (unsigned)c->wbuf.len);
  int n = uv_try_write(&c->h.stream, &b, 1);
  if (n == UV_EAGAIN || n == UV_ENOSYS)
    n = 0;
  if (n < 0) {
    http_conn_close_now(c);
    return;
  }
  if ((size_t)n == c->wbuf.len) {
    c->wbuf.len = 0;
    return;
  }
  conn_submit(c, (size_t)n);
}

/* Queue data followed by tail (small, e.g. a chunk's CRLF). Large data is
 * written straight from the caller's memory when nothing is queued; only the
 * part the kernel did not take is copied. */
int http_conn_out_write(http_conn *c, const void *data, size_t len, const char *tail,
                        size_t tail_len) {
  if (c->closed)
    return HTTP_ECLOSED;
  if (len < ZERO_COPY_MIN || c->in_process || c->writing || c->sink || c->output_held || c->tls) {
    if (http_buf_append(&c->wbuf, data, len) || http_buf_append(&c->wbuf, tail, tail_len))
      return UV_ENOMEM;
    http_conn_out_flush(c);
    return 0;
  }
  uv_buf_t b[3];
  unsigned nb = 0;
  c->resp_head_unsent = false;
  if (c->wbuf.len)
    b[nb++] = uv_buf_init(c->wbuf.base, (unsigned)c->wbuf.len);
  b[nb++] = uv_buf_init((char *)data, (unsigned)len);
  if (tail_len)
    b[nb++] = uv_buf_init((char *)tail, (unsigned)tail_len);
  int n = uv_try_write(&c->h.stream, b, nb);
  if (n == UV_EAGAIN || n == UV_ENOSYS)
    n = 0;
  if (n < 0) {
    http_conn_close_now(c);
    return HTTP_ECLOSED;
  }
  size_t done = (size_t)n;
  /* drop what was written from wbuf, then copy the unwritten rest */
  size_t from_w = done < c->wbuf.len ? done : c->wbuf.len;
  memmove(c->wbuf.base, c->wbuf.base + from_w, c->wbuf.len - from_w);
  c->wbuf.len -= from_w;
  done -= from_w;
  size_t from_d = done < len ? done : len;
  done -= from_d;
  if (http_buf_append(&c->wbuf, (const char *)data + from_d, len - from_d) ||
      http_buf_append(&c->wbuf, tail + done, tail_len - done))
    return UV_ENOMEM;
  if (c->wbuf.len)
    conn_submit(c, 0);
  return 0;
}

/* Shrink buffers that grew large for one big response. */
static void conn_trim(http_conn *c) {
  if (c->wfly.cap > (1u << 20) && c->wfly.len == 0)
    http_buf_free(&c->wfly);
}

/* A keep-alive connection idle for IDLE_TRIM_MS, or a stream (WebSocket)
 * at its keepalive ping, keeps no empty output buffer that one response or
 * message grew beyond IDLE_BUF_KEEP (up to 1 MB in each, three with TLS),
 * nor TLS's large buffers: a server holds many such connections. Not at
 * once after each response: a connection serving large responses back to
 * back would regrow them, page faults and all, every time (TLS, 64 KiB
 * responses: a third of the throughput). */
#define IDLE_BUF_KEEP 16384
#define IDLE_TRIM_MS 200
static void conn_trim_idle(http_conn *c) {
  http_buf *bufs[] = {&c->wbuf, &c->wfly, &c->tls_spare};
  for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
    if (bufs[i]->len == 0 && bufs[i]->cap > IDLE_BUF_KEEP)
      http_buf_free(bufs[i]);
  if (c->tls)
    http_tls_trim(c->tls);
}

static void on_write(uv_write_t *wr, int status) {
  http_conn *c = wr->handle->data;
  c->writing = false;
  c->wfly.len = c->wfly_off = 0;
  if (status < 0 || c->closed) {
    http_conn_close_now(c);
    return;
  }
  conn_ref(c);
  conn_trim(c);
  http_conn_out_flush(c);
  if (c->sf_fd >= 0)
    http_conn_pump_file(c);
  http_conn_continue(c);
  conn_unref(c);
}

/* ---- sendfile ---------------------------------------------------------------- */

/* Read up to FILE_CHUNK bytes of the file into wbuf. */
static int pump_pread(http_conn *c) {
  size_t want = c->sf_left < FILE_CHUNK ? (size_t)c->sf_left : FILE_CHUNK;
  if (http_buf_reserve(&c->wbuf, want))
    return -1;
  ssize_t n;
  do
    n = pread(c->sf_fd, c->wbuf.base + c->wbuf.len, want, c->sf_off);
  while (n < 0 && errno == EINTR);
  if (n <= 0)
    return -1;
  c->wbuf.len += (size_t)n;
  c->sf_off += n;
  c->sf_left -= n;
  return 0;
}

void http_conn_pump_file(http_conn *c) {
  while (c->sf_fd >= 0 && !c->closed) {
    if (c->sf_left == 0) {
      close(c->sf_fd);
      c->sf_fd = -1;
      if (c->sf_chunked)
        http_conn_out_append(c, c->sf_final ? "\r\n0\r\n\r\n" : "\r\n", c->sf_final ? 7 : 2);
      http_conn_out_flush(c);
      return;
    }
    if (c->wbuf.len || c->writing) {
      http_conn_out_flush(c);
      if (c->wbuf.len || c->writing || c->closed)
        return; /* on_write() resumes the pump */
      continue;
    }
    if (c->sink || c->sf_pread || c->tls) {
      if (pump_pread(c) < 0)
        goto fail;
      continue;
    }
    uv_os_fd_t sock;
    if (uv_fileno(&c->h.handle, &sock) < 0)
      goto fail;
    off_t off = c->sf_off;
    size_t want = c->sf_left < (1 << 20) ? (size_t)c->sf_left : (1 << 20);
    ssize_t n = sendfile(sock, c->sf_fd, &off, want);
    if (n > 0) {
      c->sf_off += n;
      c->sf_left -= n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      /* Socket full: queue one chunk through libuv, which tells us (on_write)
       * when the socket drained. */
      if (pump_pread(c) < 0)
        goto fail;
      conn_submit(c, 0);
      return;
    }
    if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
      c->sf_pread = true;
      continue;
    }
    goto fail; /* n == 0: file shorter than announced, or an I/O error */
  }
  return;
fail:
  http_server__log(c->srv, 2, "sendfile failed: closing the connection");
  http_conn_close_now(c);
}

/* ---- closing ------------------------------------------------------------------ */

static void on_shutdown(uv_shutdown_t *r, int status) {
  http_conn *c = r->handle->data;
  if (status < 0 || c->closed) {
    http_conn_close_now(c);
    return;
  }
  /* Lingering close: keep reading (and dropping) what the client still sends
   * so the kernel does not answer it with a RST that could destroy the
   * response in flight; stop at EOF or after LINGER_MS. */
  c->lingering = true;
  conn_update(c);
}

static void conn_close_graceful(http_conn *c) {
  if (c->closing)
    return;
  conn_mark_closing(c);
  if (c->sink) {
    c->closed = true;
    conn_maybe_free(c);
    return;
  }
  if (c->tls) {
    /* close_notify: the client can tell the end of a close-delimited body
     * from a cut connection. uv_shutdown() waits for the write. */
    http_tls_close(c->tls);
    http_conn_out_flush(c);
    if (c->closed)
      return;
  }
  if (uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) < 0)
    http_conn_close_now(c);
}

/* ---- timers and read control --------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
  http_conn *c = t->data;
  if (c->timer_mode == TIMER_IDLE_TRIM) { /* still idle: trim, then the rest of keep-alive */
    uint64_t keep_alive = c->srv->cfg.keep_alive_timeout_ms;
    assert(keep_alive == 0 || keep_alive > IDLE_TRIM_MS);
    conn_trim_idle(c);
    c->timer_mode = TIMER_IDLE;
    if (keep_alive) /* else idle for as long as the client likes */
      uv_timer_start(&c->timer, on_timer, keep_alive - IDLE_TRIM_MS, 0);
    return;
  }
  if (c->timer_mode == TIMER_STREAM) {
    c->timer_mode = TIMER_OFF;
    if (c->stream_active && c->stream.cb.on_timer) {
      conn_ref(c);
      c->stream.cb.on_timer(&c->stream);
      conn_unref(c);
    }
    return;
  }
  if (c->timer_mode == TIMER_HEAD)
    http_server__log(c->srv, 1, "request head not received in time: closing the connection");
  c->timer_mode = TIMER_OFF;
  http_conn_close_now(c);
}

static void conn_timer(http_conn *c, uint8_t mode, uint64_t ms) {
  if (!c->timer_open || c->timer_mode == mode)
    return;
  c->timer_mode = mode;
  if (mode == TIMER_OFF || ms == 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Makes rbuf hold its unparsed bytes from its start; false without one. */
static bool conn_rbuf_compact(http_conn *c) {
  if (c->rbuf == NULL) {
    c->rbuf = http_server__rbuf_get(c->srv);
    c->rpos = c->rlen = 0;
    if (c->rbuf == NULL)
      return false;
  }
  if (c->rpos == c->rlen) {
    c->rpos = c->rlen = 0;
  } else if (c->rpos > 0) {
    memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
    c->rlen -= c->rpos;
    c->rpos = 0;
  }
  return true;
}

/* Unparsed bytes in rbuf, or decrypted ones waiting in TLS for room there. */
static bool conn_has_input(const http_conn *c) {
  return (c->rbuf && c->rpos < c->rlen) || c->tls_more;
}

/* TLS: decrypts what was fed into rbuf, up to its end (tls_more then). On a
 * fatal error the connection is closed: -1. */
static int conn_tls_pull(http_conn *c) {
  size_t cap = c->srv->cfg.read_buffer_size;
  c->tls_more = false;
  if (c->tls_eof)
    return 0;
  if (!conn_rbuf_compact(c)) {
    http_conn_close_now(c);
    return -1;
  }
  while (c->rlen < cap) {
    long n = http_tls_read(c->tls, c->rbuf + c->rlen, cap - c->rlen);
    if (n > 0) {
      c->rlen += (size_t)n;
      continue;
    }
    if (n == HTTP_TLS_CLOSED)
      c->tls_eof = true;
    else if (n < 0) {
      http_server__log(c->srv, 1, "TLS: %s: closing the connection", http_tls_error(c->tls));
      http_conn_out_flush(c); /* the alert, if the socket takes it now */
      http_conn_close_now(c);
      return -1;
    }
    return 0;
  }
  c->tls_more = true;
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  http_conn *c = h->data;
  if (c->tls) {
    /* read_cb follows at once: one buffer serves every connection */
    http_server *srv = c->srv;
    if (srv->tls_rbuf == NULL)
      srv->tls_rbuf = malloc(HTTP_TLS_READ);
    *buf = uv_buf_init(srv->tls_rbuf, srv->tls_rbuf ? HTTP_TLS_READ : 0);
    return;
  }
  size_t cap = c->srv->cfg.read_buffer_size;
  if (!conn_rbuf_compact(c)) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(cap - c->rlen));
}

static void conn_on_eof(http_conn *c) {
  c->eof = true;
  if (c->req_active || c->stream_active) {
    /* Like uvicorn: a client that stops sending has gone away, also when it
     * only half-closed. The consumer learns it through on_disconnect(). */
    http_conn_close_now(c);
    return;
  }
  http_conn_continue(c); /* answer what is already buffered, then close */
}

/* The peer ended its side: as a socket's EOF. */
static void conn_read_eof(http_conn *c) {
  uv_read_stop(&c->h.stream);
  c->reading = false;
  conn_on_eof(c);
}

/* A plain HTTP request on the TLS port (a letter first, where a TLS client
 * starts with a handshake record, 0x16) is answered in plain text, as nginx
 * does, not with a closed connection the client cannot explain. */
static bool conn_tls_refuse_plain(http_conn *c, const char *data, size_t len) {
  if (c->tls_fed || len == 0 || data[0] < 'A' || data[0] > 'Z')
    return false;
  http_tls_free(c->tls);
  c->tls = NULL;
  http_server__log(c->srv, 2, "Plain HTTP request on the HTTPS port: answered 400");
  c->parse_dead = true;
  c->keep_alive = false;
  conn_ref(c);
  http_response__error(c, 400, "This port serves HTTPS, not plain HTTP.\n");
  conn_update(c);
  conn_unref(c);
  return true;
}

static void conn_tls_input(http_conn *c, const char *data, size_t len) {
  if (conn_tls_refuse_plain(c, data, len) || c->tls_eof)
    return; /* after the peer's close_notify nothing more is read */
  c->tls_fed = true;
  if (http_tls_feed(c->tls, data, len) != 0) {
    http_conn_close_now(c);
    return;
  }
  conn_ref(c);
  if (conn_tls_pull(c) == 0) {
    http_conn_out_flush(c); /* handshake records */
    if (conn_has_input(c))
      conn_process(c); /* which sees a close_notify among them as the end */
    else if (c->tls_eof && !c->eof && !c->closed)
      conn_read_eof(c);
    else
      conn_update(c);
  }
  conn_unref(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  http_conn *c = s->data;
  if (nread > 0) {
    if (c->lingering) {
      c->rpos = c->rlen = 0;
      return;
    }
    if (c->tls) {
      conn_tls_input(c, buf->base, (size_t)nread);
      return;
    }
    c->rlen += (size_t)nread;
    conn_process(c);
    return;
  }
  if (nread == 0 || nread == UV_ENOBUFS) {
    conn_update(c);
    return;
  }
  if (nread == UV_EOF && !c->lingering) {
    conn_read_eof(c);
    return;
  }
  http_conn_close_now(c);
}

static bool conn_can_parse(const http_conn *c) {
  return !c->closing && !c->parse_dead && c->sf_fd < 0 && !(c->req_active && c->body_done) &&
         !(c->req_active && c->body_paused);
}

/* Re-evaluate reading, timers and closing after any state change. */
static void conn_update(http_conn *c) {
  if (c->closed) {
    conn_maybe_free(c);
    return;
  }
  if (c->rbuf && c->rpos == c->rlen && !c->sink) {
    http_server__rbuf_put(c->srv, c->rbuf);
    c->rbuf = NULL;
    c->rpos = c->rlen = 0;
  }
  bool out_idle = http_conn_out_pending(c) == 0 && !c->writing && c->sf_fd < 0;
  if (!c->req_active && !c->stream_active && !c->closing) {
    if (c->parse_dead)
      c->close_after = true; /* nothing more will be served */
    bool input_done = !conn_has_input(c) || c->parse_dead;
    if (c->eof && input_done) {
      if (c->in_head && !c->parse_dead) {
        http_conn_close_now(c); /* incomplete request head */
        return;
      }
      c->close_after = true;
    }
    if (c->close_after && out_idle) {
      conn_close_graceful(c);
      if (c->closed)
        return;
    }
  }
  if (c->sink)
    return;
  bool want_read;
  /* on_alloc() moves unparsed bytes to the front: only a buffer of them is full */
  bool rbuf_full = (c->rbuf && c->rlen - c->rpos == c->srv->cfg.read_buffer_size) || c->tls_more;
  if (c->lingering)
    want_read = true;
  else if (c->upgraded)
    want_read = c->stream_active && !c->stream_paused && !c->closing && !c->eof && !rbuf_full;
  else
    want_read = !c->closing && !c->eof && !c->parse_dead && !(c->req_active && c->body_paused) &&
                c->sf_fd < 0 && !rbuf_full;
  if (want_read != c->reading) {
    if (want_read)
      want_read = uv_read_start(&c->h.stream, on_alloc, on_read) == 0;
    else
      uv_read_stop(&c->h.stream);
    c->reading = want_read;
  }
  const http_config *cfg = &c->srv->cfg;
  if (c->lingering)
    conn_timer(c, TIMER_LINGER, LINGER_MS);
  else if (c->closing)
    conn_timer(c, TIMER_OFF, 0);
  else if (c->upgraded) {
    if (!c->stream_active) /* output of a closed stream still queued */
      conn_timer(c, TIMER_FLUSH, STREAM_FLUSH_MS);
    /* else: the stream's own timer (http_stream_set_timer) */
  } else if (c->in_head)
    conn_timer(c, TIMER_HEAD, cfg->header_timeout_ms);
  else if (!c->req_active && out_idle && !conn_has_input(c)) {
    if (c->timer_mode != TIMER_IDLE_TRIM && c->timer_mode != TIMER_IDLE) {
      if (cfg->keep_alive_timeout_ms == 0 || cfg->keep_alive_timeout_ms > IDLE_TRIM_MS)
        conn_timer(c, TIMER_IDLE_TRIM, IDLE_TRIM_MS);
      else /* closed soon enough */
        conn_timer(c, TIMER_IDLE, cfg->keep_alive_timeout_ms);
    }
  } else
    conn_timer(c, TIMER_OFF, 0);
}

void http_conn_start(http_conn *c) {
  conn_ref(c);
  conn_update(c);
  conn_unref(c);
}

/* Tell a consumer that waited for on_drain() that output went down. */
static void conn_check_drain(http_conn *c) {
  if (c->want_drain && !c->closed && c->sf_fd < 0 &&
      http_conn_out_pending(c) <= c->srv->cfg.write_low_water) {
    c->want_drain = false;
    if (c->req_active && !c->disconnected && c->srv->cb.on_drain)
      c->srv->cb.on_drain(&c->req);
    else if (c->stream_active && c->stream.cb.on_drain)
      c->stream.cb.on_drain(&c->stream);
  }
}

static bool stream_can_deliver(const http_conn *c) {
  return c->upgraded && c->stream_active && !c->stream_paused && !c->closing && conn_has_input(c);
}

void http_conn_continue(http_conn *c) {
  if (c->in_process)
    return;
  conn_ref(c);
  if (((conn_has_input(c) || c->parser_paused) && conn_can_parse(c)) || stream_can_deliver(c)) {
    conn_process(c);
  } else {
    http_conn_out_flush(c);
    conn_check_drain(c);
    conn_update(c);
  }
  conn_unref(c);
}

void http_conn_shutdown(http_conn *c) {
  c->keep_alive = false;
  if (c->req_active || c->closing)
    return;
  if (c->upgraded) {
    if (c->stream_active && !c->stream_shutdown)
      stream_notify_shutdown(c);
    return;
  }
  if (!c->had_request && !c->parse_dead) {
    /* Accepted but not served yet (its request may be in the socket or on
     * the way): its first request is served, then it closes. A head being
     * read keeps the header timeout; a silent one gets a short grace. */
    if (!c->in_head && !conn_has_input(c) && c->timer_open) {
      c->timer_mode = TIMER_IDLE;
      uv_timer_start(&c->timer, on_timer, FRESH_GRACE_MS, 0);
    }
    return;
  }
  c->parse_dead = true;
  if (c->in_head || http_conn_out_pending(c) == 0)
    http_conn_close_now(c);
  else
    c->close_after = true;
}

/* ---- addresses ----------------------------------------------------------------- */

static void sockaddr_to_str(const struct sockaddr_storage *ss, char *host, size_t n, int *port) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, host, n);
    *port = ntohs(a->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, host, n);
    *port = ntohs(a->sin6_port);
  }
}

static void conn_addresses(http_conn *c) {
  if (c->addr_done)
    return;
  c->addr_done = true;
  if (c->sink)
    return;
  if (c->is_pipe) {
    size_t n = sizeof(c->server_host);
    if (uv_pipe_getsockname(&c->h.pipe, c->server_host, &n) != 0)
      c->server_host[0] = '\0';
    return;
  }
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
    sockaddr_to_str(&ss, c->client_host, sizeof(c->client_host), &c->client_port);
  len = sizeof(ss);
  if (uv_tcp_getsockname(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
    sockaddr_to_str(&ss, c->server_host, sizeof(c->server_host), &c->server_port);
}

/* ---- parsing ---------------------------------------------------------------------- */

#define ABS(c, at) ((c)->abs + (uint64_t)((at) - (c)->exec_base))

static int perr(http_conn *c, int status, const char *msg) {
  c->perr_status = status;
  c->perr_msg = msg;
  return HPE_USER;
}

/* The head grew past the limit: 414 while the request-target is being read,
 * 431 after (RFC 9110 15.5.15 and RFC 6585). */
static int head_too_large(http_conn *c) {
  return c->span_kind == SPAN_URL ? perr(c, 414, "URI Too Long")
                                  : perr(c, 431, "Request Header Fields Too Large");
}

static int head_append(http_conn *c, const char *at, size_t n) {
  if (c->hbuf.len + n > c->srv->cfg.max_head_size)
    return head_too_large(c);
  if (http_buf_append(&c->hbuf, at, n))
    return perr(c, 503, "Service Unavailable");
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  http_conn *c = CONN_OF_PARSER(p);
  c->in_head = true;
  c->in_trailers = false;
  c->hbuf.len = 0;
  c->n_spans = 0;
  c->span_kind = SPAN_NONE;
  c->trailer_bytes = 0;
  c->head_start_abs = UINT64_MAX;
  if (!c->sink)
    conn_timer(c, TIMER_HEAD, c->srv->cfg.header_timeout_ms);
  return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = CONN_OF_PARSER(p);
  uint64_t a = ABS(c, at);
  if (c->span_kind != SPAN_METHOD)
    c->head_start_abs = a;
  c->span_kind = SPAN_METHOD;
  c->method_end_abs = c->span_end_abs = a + n;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = CONN_OF_PARSER(p);
  uint64_t a = ABS(c, at);
  if (c->span_kind == SPAN_METHOD) {
    if (a != c->method_end_abs + 1) /* exactly one SP after the method */
      return perr(c, 400, "Invalid HTTP request line");
  } else if (c->span_kind != SPAN_URL || a != c->span_end_abs) {
    return perr(c, 400, "Invalid HTTP request line");
  }
  c->span_kind = SPAN_URL;
  c->span_end_abs = a + n;
  return head_append(c, at, n);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = CONN_OF_PARSER(p);
  if (!c->in_head) { /* trailers: counted, dropped */
    c->trailer_bytes += n;
    return c->trailer_bytes > c->srv->cfg.max_head_size ? perr(c, 431, "Trailers too large") : 0;
  }
  uint64_t a = ABS(c, at);
  if (c->span_kind == SPAN_FIELD) {
    if (a != c->span_end_abs)
      return perr(c, 400, "Invalid header name");
    c->spans[c->n_spans - 1].name_len += (uint32_t)n;
  } else {
    if (c->span_kind == SPAN_URL)
      c->target_len = c->hbuf.len;
    if (c->n_spans >= c->srv->cfg.max_headers)
      return perr(c, 431, "Too many request headers");
    if (c->n_spans == c->spans_cap) {
      size_t cap = c->spans_cap ? c->spans_cap * 2 : 16;
      http_hdr_span *s = realloc(c->spans, cap * sizeof(*s));
      if (s == NULL)
        return perr(c, 503, "Service Unavailable");
      c->spans = s;
      c->spans_cap = cap;
    }
    c->spans[c->n_spans++] = (http_hdr_span){(uint32_t)c->hbuf.len, (uint32_t)n, 0, 0};
  }
  c->span_kind = SPAN_FIELD;
  c->span_end_abs = a + n;
  return head_append(c, at, n);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = CONN_OF_PARSER(p);
  if (!c->in_head) {
    c->trailer_bytes += n;
    return c->trailer_bytes > c->srv->cfg.max_head_size ? perr(c, 431, "Trailers too large") : 0;
  }
  uint64_t a = ABS(c, at);
  http_hdr_span *s = &c->spans[c->n_spans - 1];
  if (c->span_kind == SPAN_VALUE) {
    /* A second piece of the same value is only fine if it continues right
     * where the previous one stopped (a read boundary); anything else is a
     * line folded with obs-fold, which RFC 9112 lets us reject. */
    if (a != c->span_end_abs)
      return perr(c, 400, "Invalid HTTP request received (obs-fold)");
    s->value_len += (uint32_t)n;
  } else if (c->span_kind == SPAN_FIELD) {
    s->value_off = (uint32_t)c->hbuf.len;
    s->value_len = (uint32_t)n;
  } else {
    return perr(c, 400, "Invalid header");
  }
  c->span_kind = SPAN_VALUE;
  c->span_end_abs = a + n;
  return head_append(c, at, n);
}

static bool ieq(const char *a, size_t an, const char *lit) {
  size_t n = strlen(lit);
  if (an != n)
    return false;
  for (size_t i = 0; i < n; i++) {
    char ch = a[i];
    if (ch >= 'A' && ch <= 'Z')
      ch = (char)(ch + 32);
    if (ch != lit[i])
      return false;
  }
  return true;
}

/* RFC 3986 unreserved and sub-delims but ',': a Host with a comma is two
 * values folded into one (duplicate Host headers joined by a proxy). */
static const bool host_chars[256] = {
    ['0' ... '9'] = true, ['a' ... 'z'] = true, ['A' ... 'Z'] = true, ['-'] = true, ['.'] = true,
    ['_'] = true,         ['~'] = true,         ['!'] = true,         ['$'] = true, ['&'] = true,
    ['\''] = true,        ['('] = true,         [')'] = true,         ['*'] = true, ['+'] = true,
    [';'] = true,         ['='] = true,
};

static bool is_unreserved_or_subdelim(unsigned char ch) { return host_chars[ch]; }

static bool is_hex(char ch) {
  return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f');
}

/* Host = uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2): a reg-name,
 * an IPv4 address (a reg-name's characters too) or an IP-literal in
 * brackets; an empty value is allowed (RFC 9112 3.2). */
static bool host_valid(const char *v, size_t n) {
  size_t i = 0;
  if (n && v[0] == '[') {
    const char *close = memchr(v, ']', n);
    if (!close)
      return false;
    size_t len = (size_t)(close - v - 1);
    const char *lit = v + 1;
    if (len > 1 && (lit[0] == 'v' || lit[0] == 'V')) { /* IPvFuture */
      size_t k = 1;
      while (k < len && is_hex(lit[k]))
        k++;
      if (k == 1 || k >= len || lit[k] != '.' || k + 1 == len)
        return false;
      for (k++; k < len; k++)
        if (!is_unreserved_or_subdelim((unsigned char)lit[k]) && lit[k] != ':' && lit[k] != ',')
          return false;
    } else {
      char buf[64];
      struct in6_addr a6;
      if (len == 0 || len >= sizeof(buf))
        return false;
      memcpy(buf, lit, len);
      buf[len] = '\0';
      if (inet_pton(AF_INET6, buf, &a6) != 1)
        return false;
    }
    i = len + 2;
  } else {
    for (;;) {
      while (i < n && host_chars[(unsigned char)v[i]])
        i++;
      if (i == n || v[i] != '%')
        break;
      if (i + 2 >= n || !is_hex(v[i + 1]) || !is_hex(v[i + 2]))
        return false;
      i += 3;
    }
  }
  if (i == n)
    return true;
  if (v[i] != ':' || n - i - 1 > 5)
    return false;
  long port = 0;
  for (size_t k = i + 1; k < n; k++) {
    if (v[k] < '0' || v[k] > '9')
      return false;
    port = port * 10 + (v[k] - '0');
  }
  return port <= 65535;
}

/* llhttp has checked that chunked is the last transfer coding. Applied
 * twice is a framing error (400); any other coding is one we do not
 * implement, and the app would get the body still coded (501, RFC 9112 6.1). */
static int check_transfer_codings(http_conn *c) {
  size_t chunked = 0, others = 0;
  for (size_t i = 0; i < c->req.n_headers; i++) {
    const http_header *h = &c->req.headers[i];
    if (h->name_len != 17 || memcmp(h->name, "transfer-encoding", 17) != 0)
      continue;
    for (size_t k = 0; k < h->value_len;) {
      size_t start = k;
      while (k < h->value_len && h->value[k] != ',')
        k++;
      size_t end = k++;
      while (start < end && (h->value[start] == ' ' || h->value[start] == '\t'))
        start++;
      while (end > start && (h->value[end - 1] == ' ' || h->value[end - 1] == '\t'))
        end--;
      if (end == start)
        continue; /* an empty list element */
      if (ieq(h->value + start, end - start, "chunked"))
        chunked++;
      else
        others++;
    }
  }
  if (chunked > 1)
    return perr(c, 400, "Transfer-Encoding: chunked applied twice");
  if (others)
    return perr(c, 501, "Not Implemented");
  return 0;
}

/* Turn the spans into the request's public fields. */
/* An absolute-form target (RFC 9112 3.2.2, "http://host/p?q") gives the
 * application its path part, as an origin-form target would. */
static void absolute_form_path(http_request *r) {
  if (r->path_len == 0 || r->path[0] == '/' || r->path[0] == '*')
    return;
  const char *scheme_end = NULL;
  for (size_t i = 0; i + 2 < r->path_len; i++) {
    if (r->path[i] == ':' && r->path[i + 1] == '/' && r->path[i + 2] == '/') {
      scheme_end = r->path + i + 3;
      break;
    }
  }
  if (!scheme_end)
    return;
  const char *end = r->path + r->path_len;
  const char *slash = memchr(scheme_end, '/', (size_t)(end - scheme_end));
  if (slash) {
    r->path_len = (size_t)(end - slash);
    r->path = slash;
  } else {
    r->path = "/";
    r->path_len = 1;
  }
}

static int build_request(http_conn *c) {
  http_request *r = &c->req;
  char *base = c->hbuf.base;
  if (c->span_kind == SPAN_URL || c->n_spans == 0)
    c->target_len = c->hbuf.len;
  if (c->n_spans > c->hdrs_cap) {
    size_t cap = c->n_spans < 16 ? 16 : c->n_spans;
    http_header *h = realloc(c->hdrs, cap * sizeof(*h));
    if (h == NULL)
      return perr(c, 503, "Service Unavailable");
    c->hdrs = h;
    c->hdrs_cap = cap;
  }
  bool expect = false;
  size_t hosts = 0;
  for (size_t i = 0; i < c->n_spans; i++) {
    http_hdr_span *s = &c->spans[i];
    char *name = base + s->name_off;
    const char *value = base + s->value_off;
    size_t vlen = s->value_len;
    if (!http_token_valid(name, s->name_len))
      return perr(c, 400, "Invalid header name");
    for (size_t k = 0; k < s->name_len; k++)
      if (name[k] >= 'A' && name[k] <= 'Z')
        name[k] = (char)(name[k] + 32);
    while (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
      vlen--;
    if (!http_value_valid(value, vlen))
      return perr(c, 400, "Invalid header value");
    c->hdrs[i] = (http_header){name, s->name_len, value, vlen};
    /* RFC 9110 10.1.1: ignored in an HTTP/1.0 request */
    if (s->name_len == 6 && memcmp(name, "expect", 6) == 0)
      expect = c->parser.http_minor >= 1 && ieq(value, vlen, "100-continue");
    if (s->name_len == 4 && memcmp(name, "host", 4) == 0) {
      hosts++;
      if (!host_valid(value, vlen))
        return perr(c, 400, "Invalid Host header");
    }
  }
  /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host; none has two. */
  if (hosts > 1 || (hosts == 0 && c->parser.http_minor == 1))
    return perr(c, 400, hosts ? "Duplicate Host header" : "Missing Host header");
  r->server = c->srv;
  r->method = llhttp_method_name((llhttp_method_t)c->parser.method);
  r->method_len = strlen(r->method);
  r->target = c->target_len ? base : "";
  r->target_len = c->target_len;
  const char *q = memchr(r->target, '?', r->target_len);
  r->path = r->target;
  r->path_len = q ? (size_t)(q - r->target) : r->target_len;
  r->query = q ? q + 1 : "";
  r->query_len = q ? r->target_len - r->path_len - 1 : 0;
  absolute_form_path(r);
  r->version_major = c->parser.http_major;
  r->version_minor = c->parser.http_minor;
  r->headers = c->hdrs;
  r->n_headers = c->n_spans;
  r->chunked = (c->parser.flags & F_CHUNKED) != 0;
  r->content_length =
      (c->parser.flags & F_CONTENT_LENGTH) && !r->chunked ? (int64_t)c->parser.content_length : -1;
  r->expect_continue = expect;
  r->keep_alive = llhttp_should_keep_alive(&c->parser);
  r->upgrade = c->parser.upgrade;
  r->unix_socket = c->is_pipe;
  r->tls = c->tls != NULL;
  conn_addresses(c);
  r->client_host = c->client_host;
  r->client_port = c->client_port;
  r->server_host = c->server_host;
  r->server_port = c->server_port;
  r->user = NULL;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  http_conn *c = CONN_OF_PARSER(p);
  http_server *srv = c->srv;
  c->in_head = false;
  c->had_request = true;
  conn_timer(c, TIMER_OFF, 0);
  if (p->http_major != 1 || p->http_minor > 1)
    return p->http_major == 0 ? perr(c, 400, "Invalid HTTP version")
                              : perr(c, 505, "HTTP Version Not Supported");
  if ((p->flags & F_TRANSFER_ENCODING) && p->http_minor == 0)
    return perr(c, 400, "Transfer-Encoding is not allowed in HTTP/1.0 requests");
  if ((p->flags & F_TRANSFER_ENCODING) && !(p->flags & F_CHUNKED))
    return perr(c, 400, "Transfer-Encoding must end with chunked"); /* llhttp too, later */
  int err = build_request(c);
  if (err)
    return err;
  if ((p->flags & F_CHUNKED) && (err = check_transfer_codings(c)) != 0)
    return err;
  bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
  c->framing = (p->flags & F_CHUNKED) ? FR_CHUNK_LINE : FR_DATA;

  /* fresh per-request state */
  c->keep_alive = c->req.keep_alive && !srv->shutting_down;
  c->body_done = false;
  c->body_expected = has_body;
  c->body_paused = c->req.expect_continue && has_body;
  c->continue_sent = false;
  c->disconnected = false;
  c->resp_started = c->resp_head_open = c->resp_chunked = false;
  c->resp_no_body = c->resp_close_delimited = c->resp_app_connection = false;
  c->resp_remaining = -1;
  c->resp_status = 0;
  c->resp_body_bytes = 0;
  c->resp_complete = false;
  c->want_drain = false;
  c->req_internal = false;
  c->req.start_ns = srv->cfg.timing ? uv_hrtime() : 0;

  if (srv->cfg.limit_concurrency && (srv->n_active >= srv->cfg.limit_concurrency ||
                                     srv->n_conns - srv->n_closing > srv->cfg.limit_concurrency)) {
    http_server__log(srv, 2, "Exceeded concurrency limit.");
    c->parse_dead = true;
    c->keep_alive = false;
    http_response__error(c, 503, "Service Unavailable");
    http_server__count_request(srv);
    return HPE_PAUSED;
  }
  c->req_active = true;
  srv->n_active++;
  http_server__count_request(srv); /* may start a graceful shutdown */
  srv->cb.on_request(&c->req);
  /* a chunked body's first chunk-size line goes through conn_prescan() */
  if (c->parse_dead || c->closing || (c->req_active && c->body_paused && has_body) ||
      (p->flags & F_CHUNKED))
    return HPE_PAUSED;
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = CONN_OF_PARSER(p);
  if (n == 0) /* llhttp flushes an empty span when run on no input */
    return 0;
  if (c->req_active && !c->disconnected && c->srv->cb.on_body)
    c->srv->cb.on_body(&c->req, at, n);
  if (c->parse_dead || c->closing || (c->req_active && c->body_paused))
    return HPE_PAUSED;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  http_conn *c = CONN_OF_PARSER(p);
  c->body_done = true;
  c->in_head = false;
  c->framing = p->upgrade ? FR_DATA : FR_HEAD; /* after an upgrade the bytes are not HTTP */
  c->reqline_seen = c->hs_started = false;
  c->hs_tail[0] = c->hs_tail[1] = 0;
  if (c->req_active && !c->disconnected && c->srv->cb.on_body_end)
    c->srv->cb.on_body_end(&c->req);
  if (!c->keep_alive)
    c->parse_dead = true;
  return HPE_PAUSED; /* the next message's head goes through conn_prescan() */
}

static int on_chunk_header(llhttp_t *p) {
  http_conn *c = CONN_OF_PARSER(p);
  c->ext_bytes = 0;
  c->framing = p->content_length == 0 ? FR_TRAILERS : FR_DATA;
  /* the trailer section starts at the beginning of a line: an empty one ends it */
  c->hs_started = true;
  c->hs_tail[0] = '\r';
  c->hs_tail[1] = '\n';
  return c->parse_dead || c->closing ? HPE_PAUSED : 0;
}

static int on_chunk_complete(llhttp_t *p) {
  http_conn *c = CONN_OF_PARSER(p);
  if (c->framing != FR_DATA)
    return 0; /* the last chunk: trailers were read */
  c->framing = FR_CHUNK_LINE;
  return HPE_PAUSED; /* the next chunk-size line goes through conn_prescan() */
}

static int on_chunk_ext(llhttp_t *p, const char *at, size_t n) {
  (void)at;
  http_conn *c = CONN_OF_PARSER(p);
  c->ext_bytes += n;
  c->trailer_bytes += n;
  if (c->ext_bytes > MAX_CHUNK_EXT || c->trailer_bytes > c->srv->cfg.max_head_size)
    return perr(c, 400, "Chunk extensions too long");
  return 0;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
    .on_chunk_extension_name = on_chunk_ext,
    .on_chunk_extension_value = on_chunk_ext,
};

static void conn_parse_error(http_conn *c, llhttp_errno_t err) {
  int status = 400;
  const char *msg = "Invalid HTTP request received.";
  if (c->perr_status) { /* set by one of our callbacks */
    status = c->perr_status;
    msg = c->perr_msg;
  } else if (err == HPE_CLOSED_CONNECTION) {
    /* strict mode: bytes after a Connection: close request; just close */
    c->parse_dead = true;
    return;
  }
  http_server__log(c->srv, 2, "Invalid HTTP request received: %s (%s)",
                   c->perr_status ? msg : llhttp_get_error_reason(&c->parser),
                   llhttp_errno_name(err));
  c->parse_dead = true;
  c->keep_alive = false;
  c->in_head = false;
  if (status == 400)
    msg = "Invalid HTTP request received."; /* the detail went to the log */
  if (c->req_active) {
    if (c->resp_started) {
      http_conn_close_now(c);
      return;
    }
    /* The body of the current request is broken: the consumer loses the
     * request and the client gets the error instead. */
    c->disconnected = true;
    if (c->srv->cb.on_disconnect)
      c->srv->cb.on_disconnect(&c->req);
    if (c->closed)
      return;
    /* reported once, by the request's terminal call (not complete) */
    c->resp_status = status;
    http_response__simple(c, status, msg, true);
    return;
  }
  http_response__error(c, status, msg);
}

/* ---- shapes llhttp refuses -----------------------------------------------------
 *
 * llhttp 8.1 (strict) refuses a few shapes RFC 9112 allows. They are rewritten
 * into equivalent ones before llhttp reads them, and never past the end of a
 * head or a chunk-size line (body bytes are not looked at):
 *   - in a request head, HTAB in the OWS before a line's CRLF becomes SP:
 *     llhttp takes "Content-Length: 5<HTAB>" for an invalid length and
 *     "chunked<HTAB>" for an unknown coding, but OWS is not part of a value;
 *   - "HTTP/1.2" to "HTTP/1.9" become "HTTP/1.1": a recipient processes a
 *     higher minor version as the highest it implements (RFC 9110 2.5);
 *   - a chunk-size line's extensions (BWS around ';' and '=', quoted-pairs)
 *     are checked against RFC 9112 7.1.1 here and dropped: llhttp reads
 *     "SIZE\r\n". Unknown extensions must be ignored anyway.
 * Chunk sizes, Content-Length and Transfer-Encoding are still read by llhttp
 * alone: framing stays as strict as llhttp is. */

#define MAX_HELD_OWS 256 /* a longer run of trailing OWS is passed on as it is */
#define VERSION_TAIL 10  /* " HTTP/1.1\r" */

static bool is_ows(char ch) { return ch == ' ' || ch == '\t'; }

/* FR_HEAD and FR_TRAILERS: where the head (or the trailer section) ends in
 * data, just past its blank line; len if its end has not arrived. A lone LF
 * before that end is refused (-1, perr set): RFC 9112 2.2 lets a recipient
 * accept one as a line terminator, but llhttp's strict mode takes some shapes
 * (after the request line, "\r\n\n" as the blank line, in trailers) and not
 * others, and this scan and llhttp must agree on where a head ends: with
 * lone LF refused, that is the first CRLF CRLF after the request line began,
 * for both. Empty lines before the request line are skipped (llhttp too). */
static ssize_t head_scan(http_conn *c, const char *data, size_t len) {
  size_t i = 0;
  if (!c->hs_started) {
    for (; i < len && (data[i] == '\r' || data[i] == '\n'); i++)
      if (data[i] == '\n' && (i ? data[i - 1] : c->hs_tail[1]) != '\r')
        return perr(c, 400, "Invalid line ending (lone LF)"), -1;
    if (i == len)
      return (ssize_t)len;
  }
  const char *p = data + i, *end = data + len;
  while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
    size_t at = (size_t)(p - data);
    char prev = at >= 1 ? data[at - 1] : c->hs_tail[1];
    if (prev != '\r')
      return perr(c, 400, "Invalid line ending (lone LF)"), -1;
    /* an empty line (the leading ones were skipped above) */
    char prev2 = at >= 2 ? data[at - 2] : at == 1 ? c->hs_tail[1] : c->hs_tail[0];
    if (prev2 == '\n')
      return (ssize_t)(at + 1);
    p++;
  }
  return (ssize_t)len;
}

/* After feeding data[0..feed) of a head to llhttp: what the next scan needs. */
static void head_scan_fed(http_conn *c, const char *data, size_t feed) {
  if (feed == 0)
    return;
  if (!c->hs_started) {
    size_t i = 0;
    while (i < feed && (data[i] == '\r' || data[i] == '\n'))
      i++;
    c->hs_started = i < feed;
  }
  c->hs_tail[0] = feed >= 2 ? data[feed - 2] : c->hs_tail[1];
  c->hs_tail[1] = data[feed - 1];
}

/* FR_HEAD: how much of data llhttp may read now; -1 after an error. */
static ssize_t prescan_head(http_conn *c, char *data, size_t len) {
  ssize_t hend = head_scan(c, data, len);
  if (hend < 0)
    return -1;
  size_t head = (size_t)hend; /* the head's bytes in data */
  if (!c->reqline_seen) {
    size_t i = 0;
    while (i < head && (data[i] == '\r' || data[i] == '\n'))
      i++; /* empty lines before the request line */
    char *lf = memchr(data + i, '\n', head - i);
    if (!lf) { /* hold back what may be the start of a split " HTTP/1.2" */
      char *sp = memrchr(data + i, ' ', head - i);
      size_t tail = sp ? (size_t)(data + head - sp - 1) : 0;
      if (!c->eof && sp && tail <= 8 && memcmp(sp + 1, "HTTP/1.", tail < 7 ? tail : 7) == 0 &&
          (tail < 8 || (sp[8] >= '0' && sp[8] <= '9')))
        return (ssize_t)(sp - data);
      return (ssize_t)len;
    }
    c->reqline_seen = true;
    if (lf - data >= VERSION_TAIL && lf[-1] == '\r' && memcmp(lf - 10, " HTTP/1.", 8) == 0 &&
        lf[-2] >= '2' && lf[-2] <= '9')
      lf[-2] = '1';
  }
  /* No HTAB: nothing to rewrite, and llhttp may read on past the head (it
   * pauses there when a chunked body follows, see on_headers_complete). */
  char *t = memchr(data, '\t', head);
  if (!t)
    return (ssize_t)len;
  size_t feed = head < len ? head : len;
  for (; t && t < data + feed; t = memchr(t, '\t', (size_t)(data + feed - t))) {
    char *run_end = t;
    while (run_end < data + feed && is_ows(*run_end))
      run_end++;
    if (run_end < data + feed) {
      if (*run_end == '\r')
        for (char *q = t; q < run_end; q++)
          *q = ' ';
      t = run_end;
      continue;
    }
    /* the run reaches the end of what has arrived: wait for what follows */
    char *run = t;
    while (run > data && is_ows(run[-1]))
      run--;
    if (!c->eof && (size_t)(data + feed - run) <= MAX_HELD_OWS)
      feed = (size_t)(run - data);
    break;
  }
  return (ssize_t)feed;
}

static bool is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ) */
static bool chunk_ext_valid(const char *p, const char *end) {
  while (p < end) {
    while (p < end && is_ows(*p))
      p++;
    if (p == end || *p++ != ';')
      return false;
    while (p < end && is_ows(*p))
      p++;
    const char *name = p;
    while (p < end && is_tchar((unsigned char)*p))
      p++;
    if (p == name)
      return false;
    const char *q = p;
    while (q < end && is_ows(*q))
      q++;
    if (q == end || *q != '=')
      continue; /* a name alone; what follows must be ';' */
    for (p = q + 1; p < end && is_ows(*p);)
      p++;
    if (p < end && *p == '"') { /* quoted-string */
      for (p++;; p++) {
        if (p == end)
          return false;
        unsigned char ch = (unsigned char)*p;
        if (ch == '"')
          break;
        if (ch == '\\') {
          if (++p == end)
            return false;
          ch = (unsigned char)*p;
          if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
            return false;
        } else if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) {
          return false;
        }
      }
      p++;
    } else {
      const char *value = p;
      while (p < end && is_tchar((unsigned char)*p))
        p++;
      if (p == value)
        return false;
    }
  }
  return true;
}

/* FR_CHUNK_LINE: a whole chunk-size line is checked and its extensions cut
 * off (*skip bytes dropped from the front); 1 ready, 0 wait, -1 invalid. */
static int prescan_chunk_line(http_conn *c, char *data, size_t len, size_t *skip, size_t *feed) {
  /* The limit holds however the line arrives, and a whole line with its
   * CRLF always fits in the read buffer: waiting for the rest never waits
   * on a full buffer. */
  size_t max_line = c->srv->cfg.read_buffer_size - 2;
  if (max_line > MAX_CHUNK_LINE)
    max_line = MAX_CHUNK_LINE;
  size_t scan = len < max_line + 1 ? len : max_line + 1;
  char *cr = data;
  while (cr < data + scan && *cr != '\r' && *cr != '\n')
    cr++;
  if ((size_t)(cr - data) > max_line)
    return perr(c, 400, "Chunk-size line too long"), -1;
  if (cr == data + len)
    return 0;
  if (*cr == '\n')
    return perr(c, 400, "Invalid chunk-size line (bare LF)"), -1;
  if (cr + 1 == data + len)
    return 0;
  if (cr[1] != '\n')
    return perr(c, 400, "Invalid chunk-size line"), -1;
  size_t digits = 0, line = (size_t)(cr - data);
  while (digits < line && is_hex(data[digits]))
    digits++;
  *skip = 0;
  *feed = line + 2;
  if (digits == line || digits == 0)
    return 1; /* no extension, or no size: llhttp reads (or refuses) the line as it is */
  if (line - digits > MAX_CHUNK_EXT)
    return perr(c, 400, "Chunk extensions too long"), -1;
  if (!chunk_ext_valid(data + digits, cr))
    return perr(c, 400, "Invalid chunk extension"), -1;
  c->trailer_bytes += line - digits;
  if (c->trailer_bytes > c->srv->cfg.max_head_size)
    return perr(c, 400, "Chunk extensions too long"), -1;
  *skip = line - digits;
  memmove(data + *skip, data, digits);
  *feed = digits + 2;
  return 1;
}

/* How many bytes at rbuf + rpos llhttp may read now, after the rewrites
 * above (and after dropping *skip bytes); -1 after an error (perr set). */
static ssize_t conn_prescan(http_conn *c, char *data, size_t len, size_t *skip) {
  *skip = 0;
  switch (c->framing) {
  case FR_HEAD: /* after the peer's EOF nothing is held back: nothing more will come */
    return prescan_head(c, data, len);
  case FR_TRAILERS: {
    ssize_t end = head_scan(c, data, len);
    return end < 0 ? -1 : (ssize_t)len;
  }
  case FR_CHUNK_LINE: {
    size_t feed = 0;
    int r = prescan_chunk_line(c, data, len, skip, &feed);
    return r < 0 ? -1 : (ssize_t)feed;
  }
  default:
    return (ssize_t)len;
  }
}

static void conn_process(http_conn *c) {
  if (c->in_process)
    return;
  conn_ref(c);
  c->in_process = true;
  for (;;) {
    /* TLS: more plaintext once rbuf has room (the parser may hold bytes back) */
    if (c->tls_more && c->rlen - c->rpos < c->srv->cfg.read_buffer_size && conn_tls_pull(c) != 0)
      break;
    if (!((conn_has_input(c) || c->parser_paused) && conn_can_parse(c)))
      break;
    /* A paused parser may owe callbacks that need no input (e.g. message
     * complete right after the last body byte): run it even on nothing. */
    char *data = c->rbuf ? c->rbuf + c->rpos : (char *)"";
    size_t len = c->rlen - c->rpos, skip;
    ssize_t feed = len ? conn_prescan(c, data, len, &skip) : (skip = 0, 0);
    if (feed < 0) {
      conn_parse_error(c, HPE_USER);
      break;
    }
    c->rpos += skip;
    c->abs += skip;
    data += skip;
    len = (size_t)feed;
    if (c->framing == FR_HEAD || c->framing == FR_TRAILERS)
      head_scan_fed(c, data, len);
    c->parser_paused = false;
    c->exec_base = data;
    c->perr_status = 0;
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    size_t used = len;
    if (err != HPE_OK) {
      const char *ep = llhttp_get_error_pos(&c->parser);
      if (ep >= data && ep <= data + len)
        used = (size_t)(ep - data);
    }
    c->rpos += used;
    c->abs += used;
    if (err == HPE_OK) {
      if (used > 0 && conn_has_input(c))
        continue; /* the prescan held part of the input back for this round */
      break;
    }
    if (err == HPE_PAUSED) {
      llhttp_resume(&c->parser);
      c->parser_paused = true;
      continue;
    }
    if (err == HPE_PAUSED_UPGRADE) {
      /* No protocol switch here (yet): the bytes that follow are not HTTP. */
      c->parse_dead = true;
      c->keep_alive = false;
      break;
    }
    conn_parse_error(c, err);
    break;
  }
  /* A head spread over several reads is bounded here (whitespace the parser
   * skips never reaches the span callbacks). */
  if (c->in_head && !c->parse_dead && c->head_start_abs != UINT64_MAX &&
      c->abs - c->head_start_abs > c->srv->cfg.max_head_size) {
    head_too_large(c);
    conn_parse_error(c, HPE_USER);
  }
  /* An upgraded connection: the bytes are the stream's (this also delivers
   * what followed the request head when the upgrade happened in a callback). */
  while (stream_can_deliver(c)) {
    if (c->tls_more && c->rpos == c->rlen && (conn_tls_pull(c) != 0 || c->rpos == c->rlen))
      break;
    size_t len = c->rlen - c->rpos;
    size_t n = c->stream.cb.on_data(&c->stream, c->rbuf + c->rpos, len);
    if (n > len)
      n = len;
    c->rpos += n;
    c->abs += n;
    if (n < len && c->stream_active)
      c->stream_paused = true;
  }
  c->in_process = false;
  if (c->sf_fd >= 0)
    http_conn_pump_file(c);
  if (!conn_hold_output(c))
    http_conn_out_flush(c);
  conn_check_drain(c);
  conn_update(c);
  if (c->tls_eof && !c->eof && !c->closed) /* as the socket's EOF after these bytes */
    conn_read_eof(c);
  conn_unref(c);
}

/* The server holds output (http_server_hold_output) and the next pipelined
 * request was handed over: keep what is queued until the release, or until
 * that request's own response is flushed with it. */
static bool conn_hold_output(http_conn *c) {
  http_server *srv = c->srv;
  if (!srv->hold_output || !c->req_active || c->sink || c->closed || c->writing || c->sf_fd >= 0 ||
      c->wbuf.len >= srv->cfg.write_high_water)
    return false;
  if (c->output_held)
    return true;
  if (srv->n_held == srv->held_cap) {
    size_t cap = srv->held_cap ? srv->held_cap * 2 : 16;
    http_conn **p = realloc(srv->held, cap * sizeof(*p));
    if (p == NULL)
      return false;
    srv->held = p;
    srv->held_cap = cap;
  }
  conn_ref(c);
  srv->held[srv->n_held++] = c;
  c->output_held = true;
  return true;
}

void http_conn_release_output(http_conn *c) {
  c->output_held = false;
  if (!c->closed && !c->in_process) {
    http_conn_out_flush(c);
    conn_check_drain(c);
    conn_update(c);
  }
  conn_unref(c);
}

void http_conn_request_finished(http_conn *c) {
  http_server *srv = c->srv;
  conn_ref(c);
  c->req_active = false;
  srv->n_active--;
  if ((!c->body_done && c->body_expected) || !c->keep_alive || srv->shutting_down) {
    c->keep_alive = false;
    c->parse_dead = true;
    c->close_after = true;
  }
  if (srv->cb.on_response_done && !c->req_internal)
    srv->cb.on_response_done(srv, &c->req, c->resp_status, c->resp_body_bytes, c->resp_complete);
  if (srv->cb.on_request_done && !c->req_internal)
    srv->cb.on_request_done(&c->req);
  c->req.user = NULL;
  http_conn_continue(c);
  conn_unref(c);
}

/* ---- detached connections ---------------------------------------------------------- */

void http_conn_feed(http_conn *c, const char *data, size_t len) {
  size_t cap = c->srv->cfg.read_buffer_size;
  while (len > 0 && !c->closed && !c->closing) {
    if (!conn_rbuf_compact(c))
      return;
    size_t n = cap - c->rlen;
    if (n == 0)
      return; /* the connection stopped reading: the rest would wait */
    if (n > len)
      n = len;
    memcpy(c->rbuf + c->rlen, data, n);
    c->rlen += n;
    data += n;
    len -= n;
    conn_process(c);
  }
}

void http_conn_feed_eof(http_conn *c) {
  if (c->closed || c->eof)
    return;
  conn_on_eof(c);
}

/* ---- upgraded connections: raw byte streams ----------------------------------------- */

void http_conn_upgrade(http_conn *c, const http_stream_callbacks *cb, void *user) {
  http_server *srv = c->srv;
  conn_ref(c);
  c->upgraded = true;
  c->stream_active = true;
  srv->n_streams++;
  c->stream_paused = false;
  c->stream_shutdown = false;
  c->stream.conn = c;
  c->stream.cb = *cb;
  c->stream.user = user;
  c->keep_alive = false;
  c->parse_dead = true; /* llhttp is done with this connection */
  c->parser_paused = false;
  c->want_drain = false;
  c->close_after = false;
  conn_timer(c, TIMER_OFF, 0);
  /* the request's terminal call */
  c->req_active = false;
  srv->n_active--;
  if (srv->cb.on_response_done && !c->req_internal)
    srv->cb.on_response_done(srv, &c->req, 101, 0, true);
  if (srv->cb.on_request_done && !c->req_internal)
    srv->cb.on_request_done(&c->req);
  c->req.user = NULL;
  if (srv->shutting_down && c->stream_active && !c->stream_shutdown)
    stream_notify_shutdown(c);
  http_conn_continue(c); /* send the 101, deliver what followed the head */
  conn_unref(c);
}

static void stream_notify_shutdown(http_conn *c) {
  c->stream_shutdown = true;
  conn_ref(c);
  if (c->stream.cb.on_shutdown)
    c->stream.cb.on_shutdown(&c->stream);
  else
    http_stream_close(&c->stream, true);
  conn_unref(c);
}

void *http_stream_user(const http_stream *st) { return st->user; }

http_server *http_stream_server(const http_stream *st) { return st->conn->srv; }

int http_stream_write(http_stream *st, const void *head, size_t head_len, const void *data,
                      size_t len) {
  http_conn *c = st->conn;
  if (!c->stream_active || c->closed || c->closing)
    return HTTP_ECLOSED;
  int r = http_conn_out_append(c, head, head_len);
  if (r == 0)
    r = len ? http_conn_out_write(c, data, len, NULL, 0) : (http_conn_out_flush(c), 0);
  if (r)
    return r;
  if (c->closed)
    return HTTP_ECLOSED;
  if (http_conn_out_pending(c) > c->srv->cfg.write_high_water) {
    c->want_drain = true;
    return 1;
  }
  return 0;
}

size_t http_stream_pending(const http_stream *st) { return http_conn_out_pending(st->conn); }

void http_stream_pause(http_stream *st) {
  http_conn *c = st->conn;
  if (!c->stream_active || c->stream_paused)
    return;
  c->stream_paused = true;
  if (!c->in_process) {
    conn_ref(c);
    conn_update(c); /* stop reading */
    conn_unref(c);
  }
}

void http_stream_resume(http_stream *st) {
  http_conn *c = st->conn;
  if (!c->stream_active || !c->stream_paused)
    return;
  c->stream_paused = false;
  http_conn_continue(c);
}

void http_stream_trim(http_stream *st) {
  http_conn *c = st->conn;
  if (!c->closed && !c->writing && http_conn_out_pending(c) == 0)
    conn_trim_idle(c);
}

void http_stream_set_timer(http_stream *st, uint64_t ms) {
  http_conn *c = st->conn;
  if (!c->timer_open || !c->stream_active || c->closing)
    return;
  if (ms == 0) {
    if (c->timer_mode == TIMER_STREAM)
      conn_timer(c, TIMER_OFF, 0);
    return;
  }
  c->timer_mode = TIMER_STREAM;
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

void http_stream_close(http_stream *st, bool graceful) {
  http_conn *c = st->conn;
  if (!c->stream_active)
    return;
  conn_ref(c);
  c->stream_active = false;
  c->srv->n_streams--;
  if (c->timer_mode == TIMER_STREAM)
    conn_timer(c, TIMER_OFF, 0);
  if (st->cb.on_close)
    st->cb.on_close(st);
  if (graceful) {
    c->close_after = true;
    http_conn_continue(c);
  } else {
    http_conn_close_now(c);
  }
  conn_unref(c);
}
