/* Responses: validation, head serialization, body framing (content-length,
 * chunked, close-delimited), 100-continue, sendfile, abort. */
#include "http_internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONN_OF_REQ(r) ((http_conn *)((char *)(r)-offsetof(http_conn, req)))

/* tchar per RFC 9110 5.6.2 */
static const uint8_t tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

bool http_token_valid(const char *s, size_t n) {
  if (n == 0)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!tchar[(uint8_t)s[i]])
      return false;
  return true;
}

/* field-value: VCHAR / obs-text / SP / HTAB; no CR, LF, NUL, other CTLs */
bool http_value_valid(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = (uint8_t)s[i];
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
      return false;
  }
  return true;
}

const char *http_strerror(int err) {
  switch (err) {
  case HTTP_OK:
    return "success";
  case HTTP_EINVAL_STATUS:
    return "invalid HTTP status code";
  case HTTP_EINVAL_HEADER_NAME:
    return "invalid header name";
  case HTTP_EINVAL_HEADER_VALUE:
    return "invalid header value";
  case HTTP_EINVAL_CONTENT_LENGTH:
    return "invalid content-length header";
  case HTTP_ESTATE:
    return "call not allowed in the current response state";
  case HTTP_ECLOSED:
    return "client disconnected";
  case HTTP_ETOOMUCH:
    return "response body longer than content-length";
  case HTTP_EFILE:
    return "cannot read the file";
  case HTTP_ESHORT:
    return "response content shorter than Content-Length";
  default:
    return err < 0 && err > -4096 ? uv_strerror(err) : "unknown error";
  }
}

const char *http_status_reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 102:
    return "Processing";
  case 103:
    return "Early Hints";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 203:
    return "Non-Authoritative Information";
  case 204:
    return "No Content";
  case 205:
    return "Reset Content";
  case 206:
    return "Partial Content";
  case 207:
    return "Multi-Status";
  case 208:
    return "Already Reported";
  case 226:
    return "IM Used";
  case 300:
    return "Multiple Choices";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 305:
    return "Use Proxy";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 402:
    return "Payment Required";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 406:
    return "Not Acceptable";
  case 407:
    return "Proxy Authentication Required";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 410:
    return "Gone";
  case 411:
    return "Length Required";
  case 412:
    return "Precondition Failed";
  case 413:
    return "Request Entity Too Large";
  case 414:
    return "Request-URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 416:
    return "Requested Range Not Satisfiable";
  case 417:
    return "Expectation Failed";
  case 418:
    return "I'm a Teapot";
  case 421:
    return "Misdirected Request";
  case 422:
    return "Unprocessable Entity";
  case 423:
    return "Locked";
  case 424:
    return "Failed Dependency";
  case 425:
    return "Too Early";
  case 426:
    return "Upgrade Required";
  case 428:
    return "Precondition Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 451:
    return "Unavailable For Legal Reasons";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  case 506:
    return "Variant Also Negotiates";
  case 507:
    return "Insufficient Storage";
  case 508:
    return "Loop Detected";
  case 510:
    return "Not Extended";
  case 511:
    return "Network Authentication Required";
  default:
    return "";
  }
}

static bool name_is(const http_header *h, const char *lit, size_t n) {
  if (h->name_len != n)
    return false;
  for (size_t i = 0; i < n; i++) {
    char ch = h->name[i];
    if (ch >= 'A' && ch <= 'Z')
      ch = (char)(ch + 32);
    if (ch != lit[i])
      return false;
  }
  return true;
}
#define NAME_IS(h, lit) name_is(h, lit, sizeof(lit) - 1)

/* Case-insensitive search for a token in a comma-separated list. */
static bool list_has(const char *v, size_t n, const char *tok) {
  size_t tn = strlen(tok);
  size_t i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t s = i;
    while (i < n && v[i] != ',')
      i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - s == tn && strncasecmp(v + s, tok, tn) == 0)
      return true;
  }
  return false;
}

static int64_t parse_length(const char *v, size_t n) {
  while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
    n--;
  while (n && (*v == ' ' || *v == '\t'))
    v++, n--;
  if (n == 0 || n > 18)
    return -1;
  int64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    x = x * 10 + (v[i] - '0');
  }
  return x;
}

static char *put_status_line(char *p, int status) {
  memcpy(p, "HTTP/1.1 ", 9);
  p += 9;
  *p++ = (char)('0' + status / 100);
  *p++ = (char)('0' + status / 10 % 10);
  *p++ = (char)('0' + status % 10);
  *p++ = ' ';
  const char *reason = http_status_reason(status);
  size_t rn = strlen(reason);
  memcpy(p, reason, rn);
  p += rn;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

/* Status line + server/date/default headers + the given headers, no final
 * CRLF. */
static int put_head(http_conn *c, int status, const http_header *h, size_t n, bool has_server,
                    bool has_date) {
  http_server *srv = c->srv;
  size_t need = 64 + srv->fixed_headers.len + 64;
  for (size_t i = 0; i < n; i++)
    need += h[i].name_len + h[i].value_len + 4;
  if (http_buf_reserve(&c->wbuf, need))
    return UV_ENOMEM;
  char *p = put_status_line(c->wbuf.base + c->wbuf.len, status);
  if (srv->cfg.server_header && !has_server) {
    memcpy(p, srv->fixed_headers.base, srv->server_line_len);
    p += srv->server_line_len;
  }
  if (srv->cfg.date_header && !has_date) {
    memcpy(p, "date: ", 6);
    memcpy(p + 6, http_date_now(&srv->date), HTTP_DATE_LEN);
    memcpy(p + 6 + HTTP_DATE_LEN, "\r\n", 2);
    p += 8 + HTTP_DATE_LEN;
  }
  size_t dn = srv->fixed_headers.len - srv->server_line_len;
  memcpy(p, srv->fixed_headers.base + srv->server_line_len, dn);
  p += dn;
  for (size_t i = 0; i < n; i++) {
    memcpy(p, h[i].name, h[i].name_len);
    p += h[i].name_len;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, h[i].value, h[i].value_len);
    p += h[i].value_len;
    *p++ = '\r';
    *p++ = '\n';
  }
  c->wbuf.len = (size_t)(p - c->wbuf.base);
  return 0;
}

int http_response__simple(http_conn *c, int status, const char *body, bool close) {
  size_t blen = strlen(body);
  char cl[32];
  int cn = snprintf(cl, sizeof(cl), "%zu", blen);
  http_header h[2] = {{"content-type", 12, "text/plain; charset=utf-8", 25},
                      {"content-length", 14, cl, (size_t)cn}};
  if (c->closed || put_head(c, status, h, 2, false, false))
    return HTTP_ECLOSED;
  if (close)
    http_conn_out_append(c, "connection: close\r\n", 19);
  http_conn_out_append(c, "\r\n", 2);
  http_conn_out_append(c, body, blen);
  if (close) {
    c->keep_alive = false;
    c->close_after = true;
  }
  http_conn_out_flush(c);
  return 0;
}

int http_response_start(http_request *req, int status, const http_header *headers, size_t n) {
  http_conn *c = CONN_OF_REQ(req);
  if (!c->req_active || c->resp_started)
    return HTTP_ESTATE;
  if (c->disconnected)
    return HTTP_ECLOSED;
  if (status < 100 || status > 999 || (status < 200 && status != 101))
    return HTTP_EINVAL_STATUS;
  int64_t cl = -1;
  bool te = false, close = false, has_conn = false, has_server = false, has_date = false;
  for (size_t i = 0; i < n; i++) {
    const http_header *h = &headers[i];
    if (!http_token_valid(h->name, h->name_len))
      return HTTP_EINVAL_HEADER_NAME;
    if (!http_value_valid(h->value, h->value_len))
      return HTTP_EINVAL_HEADER_VALUE;
    switch (h->name_len) {
    case 14:
      if (NAME_IS(h, "content-length")) {
        int64_t v = parse_length(h->value, h->value_len);
        if (v < 0 || (cl >= 0 && v != cl))
          return HTTP_EINVAL_CONTENT_LENGTH;
        cl = v;
      }
      break;
    case 17:
      if (NAME_IS(h, "transfer-encoding")) {
        if (!list_has(h->value, h->value_len, "chunked"))
          return HTTP_EINVAL_HEADER_VALUE;
        te = true;
      }
      break;
    case 10:
      if (NAME_IS(h, "connection")) {
        has_conn = true;
        close |= list_has(h->value, h->value_len, "close");
      }
      break;
    case 6:
      has_server |= NAME_IS(h, "server");
      break;
    case 4:
      has_date |= NAME_IS(h, "date");
      break;
    }
  }
  if (te && cl >= 0)
    return HTTP_EINVAL_CONTENT_LENGTH;
  size_t head_at = c->wbuf.len;
  if (put_head(c, status, headers, n, has_server, has_date))
    return UV_ENOMEM;
  http_server *srv = c->srv;
  c->resp_started = c->resp_head_open = true;
  c->resp_head_at = head_at;
  c->resp_head_unsent = true;
  c->resp_status = status;
  c->resp_no_body = (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0) ||
                    status == 204 || status == 304 || status < 200;
  c->resp_remaining = c->resp_no_body ? -1 : cl;
  c->resp_chunked = te && !c->resp_no_body;
  c->resp_app_connection = has_conn;
  if (close || status == 101 || srv->shutting_down || srv->max_reached)
    c->keep_alive = false;
  return 0;
}

/* Add the framing headers and the blank line once the first body bytes (or
 * the end) are known. */
static void close_head(http_conn *c, size_t first_len, bool final) {
  if (!c->resp_head_open)
    return;
  c->resp_head_open = false;
  char line[48];
  if (c->resp_no_body || c->resp_remaining >= 0 || c->resp_chunked) {
    /* framing given (or no body) */
  } else if (final) {
    int k = snprintf(line, sizeof(line), "content-length: %zu\r\n", first_len);
    http_conn_out_append(c, line, (size_t)k);
    c->resp_remaining = (int64_t)first_len;
  } else if (c->req.version_minor >= 1) {
    http_conn_out_append(c, "transfer-encoding: chunked\r\n", 28);
    c->resp_chunked = true;
  } else {
    c->resp_close_delimited = true;
    c->keep_alive = false;
  }
  if (!c->resp_app_connection) {
    if (!c->keep_alive)
      http_conn_out_append(c, "connection: close\r\n", 19);
    else if (c->req.version_minor == 0)
      http_conn_out_append(c, "connection: keep-alive\r\n", 24);
  }
  http_conn_out_append(c, "\r\n", 2);
}

static void finish(http_conn *c) {
  if (c->resp_remaining > 0 || c->resp_close_delimited)
    c->keep_alive = false; /* short body: the client can only see the end by EOF */
  http_conn_request_finished(c);
}

static int pending_status(http_conn *c) {
  if (http_conn_out_pending(c) > c->srv->cfg.write_high_water || c->sf_fd >= 0) {
    c->want_drain = true;
    return 1;
  }
  return 0;
}

/* Fail a call; a terminal one still releases the request. */
static int fail(http_conn *c, int err, bool more) {
  if (!more) {
    if (c->resp_started && !c->disconnected) {
      c->disconnected = true; /* framing is broken: cut the connection */
      http_conn_close_now(c);
    }
    c->keep_alive = false;
    http_conn_request_finished(c);
  }
  return err;
}

int http_response_write(http_request *req, const void *data, size_t len, bool more) {
  http_conn *c = CONN_OF_REQ(req);
  if (!c->req_active)
    return HTTP_ESTATE;
  if (c->disconnected || c->closed)
    return fail(c, HTTP_ECLOSED, more);
  if (!c->resp_started || c->sf_fd >= 0)
    return fail(c, HTTP_ESTATE, more);
  close_head(c, len, !more);
  if (c->resp_no_body)
    len = 0;
  if (c->resp_remaining >= 0) {
    if ((uint64_t)len > (uint64_t)c->resp_remaining)
      return fail(c, HTTP_ETOOMUCH, more);
    c->resp_remaining -= (int64_t)len;
  }
  if (c->resp_chunked) {
    if (len) {
      char hdr[24];
      int k = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
      http_conn_out_append(c, hdr, (size_t)k);
      if (more)
        http_conn_out_write(c, data, len, "\r\n", 2);
      else
        http_conn_out_write(c, data, len, "\r\n0\r\n\r\n", 7);
    } else if (!more) {
      http_conn_out_append(c, "0\r\n\r\n", 5);
    }
  } else if (len) {
    http_conn_out_write(c, data, len, NULL, 0);
  }
  if (!more) {
    /* A body short of its content-length: finish() closes the connection
     * (the client would wait for bytes that never come); the caller learns
     * why. */
    bool short_body = c->resp_remaining > 0 && !c->resp_no_body;
    http_conn_out_flush(c);
    finish(c);
    return short_body ? HTTP_ESHORT : 0;
  }
  http_conn_out_flush(c);
  if (c->closed)
    return HTTP_ECLOSED;
  return pending_status(c);
}

int http_response_sendfile(http_request *req, int fd, int64_t offset, int64_t count, bool more) {
  http_conn *c = CONN_OF_REQ(req);
  if (!c->req_active) {
    close(fd);
    return HTTP_ESTATE;
  }
  if (c->disconnected || c->closed) {
    close(fd);
    return fail(c, HTTP_ECLOSED, more);
  }
  if (!c->resp_started || c->sf_fd >= 0) {
    close(fd);
    return fail(c, HTTP_ESTATE, more);
  }
  struct stat st;
  if (offset < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return fail(c, HTTP_EFILE, more);
  }
  if (count < 0)
    count = st.st_size > offset ? st.st_size - offset : 0;
  close_head(c, (size_t)count, !more);
  if (c->resp_no_body)
    count = 0;
  if (c->resp_remaining >= 0) {
    if (count > c->resp_remaining) {
      close(fd);
      return fail(c, HTTP_ETOOMUCH, more);
    }
    c->resp_remaining -= count;
  }
  if (count == 0) {
    close(fd);
    return http_response_write(req, NULL, 0, more);
  }
  if (c->resp_chunked) {
    char hdr[24];
    int k = snprintf(hdr, sizeof(hdr), "%llx\r\n", (unsigned long long)count);
    http_conn_out_append(c, hdr, (size_t)k);
  }
  c->sf_fd = fd;
  c->sf_off = offset;
  c->sf_left = count;
  c->sf_final = !more;
  c->sf_chunked = c->resp_chunked;
  http_conn_pump_file(c);
  if (!more) {
    finish(c);
    return 0;
  }
  if (c->closed)
    return HTTP_ECLOSED;
  return pending_status(c);
}

int http_response_flush(http_request *req) {
  http_conn *c = CONN_OF_REQ(req);
  if (!c->req_active)
    return HTTP_ESTATE;
  if (c->disconnected || c->closed)
    return HTTP_ECLOSED;
  if (c->resp_started)
    close_head(c, 0, false);
  http_conn_out_flush(c);
  return 0;
}

void http_response_abort(http_request *req) {
  http_conn *c = CONN_OF_REQ(req);
  if (!c->req_active)
    return;
  c->keep_alive = false;
  if (c->disconnected || c->closed) {
    /* the connection is gone or the layer took it over */
  } else if (!c->resp_started) {
    http_response__simple(c, 500, "Internal Server Error", true);
  } else {
    c->disconnected = true;
    http_conn_close_now(c);
  }
  http_conn_request_finished(c);
}

int http_response_retract(http_request *req) {
  http_conn *c = CONN_OF_REQ(req);
  if (!c->req_active || c->disconnected || c->closed || !c->resp_started || !c->resp_head_open ||
      !c->resp_head_unsent)
    return HTTP_ESTATE;
  c->wbuf.len = c->resp_head_at;
  c->resp_started = c->resp_head_open = false;
  return 0;
}

bool http_response_started(const http_request *req) { return CONN_OF_REQ(req)->resp_started; }

int http_request_upgrade(http_request *req, const http_header *headers, size_t n,
                         const http_stream_callbacks *cb, void *user, http_stream **out) {
  http_conn *c = CONN_OF_REQ(req);
  if (!c->req_active || c->resp_started || !req->upgrade || !c->body_done || c->sf_fd >= 0 ||
      cb == NULL || cb->on_data == NULL)
    return HTTP_ESTATE;
  if (c->disconnected || c->closed || c->closing)
    return HTTP_ECLOSED;
  bool has_server = false, has_date = false;
  for (size_t i = 0; i < n; i++) {
    const http_header *h = &headers[i];
    if (!http_token_valid(h->name, h->name_len))
      return HTTP_EINVAL_HEADER_NAME;
    if (!http_value_valid(h->value, h->value_len))
      return HTTP_EINVAL_HEADER_VALUE;
    has_server |= NAME_IS(h, "server");
    has_date |= NAME_IS(h, "date");
  }
  size_t mark = c->wbuf.len;
  if (put_head(c, 101, headers, n, has_server, has_date) || http_conn_out_append(c, "\r\n", 2)) {
    c->wbuf.len = mark;
    return UV_ENOMEM;
  }
  c->resp_started = true;
  c->resp_status = 101;
  *out = &c->stream;
  http_conn_upgrade(c, cb, user);
  return 0;
}

void http_request_body_pause(http_request *req) {
  http_conn *c = CONN_OF_REQ(req);
  if (c->req_active && !c->body_paused) {
    c->body_paused = true;
    http_conn_continue(c); /* stops reading the socket */
  }
}

void http_request_body_resume(http_request *req) {
  http_conn *c = CONN_OF_REQ(req);
  if (!c->req_active || c->disconnected || c->closed)
    return;
  if (c->req.expect_continue && !c->continue_sent && !c->resp_started && !c->body_done) {
    c->continue_sent = true;
    http_conn_out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    http_conn_out_flush(c);
  }
  if (c->body_paused) {
    c->body_paused = false;
    http_conn_continue(c);
  }
}
