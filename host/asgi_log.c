/* asgi_log: the server's log lines and access log, and its metrics.
 *
 * Two ways out. Direct (the default): lines are written here in C, as
 * uvicorn's text or as JSON (applog.c decides the shape and the colours);
 * access lines wait in s->access_buf and go out once per pump. Through
 * Python (--log-config, s->log_python): messages go to the runtime's log(),
 * that is the "uvicorn.error" logger, and access records are queued and
 * handed to the "uvicorn.access" logger after each pump with uvicorn's
 * arguments, so that the user's handlers and formatters apply. Exceptions
 * always go through the runtime (their tracebacks need Python). */
#include "asgi_internal.h"

#include "applog.h"
#include "metrics.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Interned strings, created once. */
static struct { PyObject *log_exception, *log, *emit_access; } S;

static int strings_init(void) {
  static const asgi_intern_entry table[] = {
      {&S.log_exception, "log_exception"},
      {&S.log, "log"},
      {&S.emit_access, "emit_access"},
  };
  return ASGI_INTERN(table);
}

int asgi_log_init(void) { return strings_init(); }

/* runtime.log(level, msg), keeping whatever exception is being handled. */
static void log_via_runtime(ServerObject *s, int level, const char *msg) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyObject *lvl = PyLong_FromLong(level);
  PyObject *text = lvl ? PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace") : NULL;
  PyObject *r = text ? PyObject_CallMethodObjArgs(s->runtime, S.log, lvl, text, NULL) : NULL;
  if (!r) {
    PyErr_Clear();
    applog_message(level, "uvicorn.error", msg);
  }
  Py_XDECREF(r);
  Py_XDECREF(text);
  Py_XDECREF(lvl);
  PyErr_Restore(type, value, tb);
}

void asgi_log(ServerObject *s, int level, const char *fmt, ...) {
  if (level < s->log_level)
    return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (s->log_python)
    log_via_runtime(s, level, msg);
  else
    applog_message(level, "uvicorn.error", msg);
}

/* Logs the current Python exception with a traceback, through the runtime. */
void asgi_log_current_exception(ServerObject *s, const char *msg) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb && value)
    PyException_SetTraceback(value, tb);
  asgi_log_exception(s, msg, value ? value : Py_None);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
}

void asgi_log_exception(ServerObject *s, const char *msg, PyObject *exc) {
  PyObject *text = PyUnicode_FromString(msg);
  PyObject *r =
      text ? PyObject_CallMethodObjArgs(s->runtime, S.log_exception, text, exc, NULL) : NULL;
  Py_XDECREF(text);
  if (!r) {
    PyErr_Clear();
    applog_message(LOG_ERROR, "uvicorn.error", msg);
  }
  Py_XDECREF(r);
}

/* ---- access log ------------------------------------------------------------ */

void asgi_log_client(char out[ASGI_LOG_CLIENT_MAX], const http_request *req, PyObject *client) {
  strcpy(out, "-");
  if (client && PyTuple_Check(client) && PyTuple_GET_SIZE(client) == 2) {
    /* "host:port" with memcpy: snprintf would cost more than the line */
    PyObject *h = PyTuple_GET_ITEM(client, 0), *p = PyTuple_GET_ITEM(client, 1);
    Py_ssize_t hlen;
    const char *host = PyUnicode_Check(h) ? PyUnicode_AsUTF8AndSize(h, &hlen) : NULL;
    long port = PyLong_Check(p) ? PyLong_AsLong(p) : -1;
    PyErr_Clear();
    if (!host || (size_t)hlen > ASGI_LOG_CLIENT_MAX - 24)
      return;
    char digits[24], *d = digits + sizeof(digits);
    unsigned long v = port < 0 ? (unsigned long)-port : (unsigned long)port;
    do
      *--d = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    if (port < 0)
      *--d = '-';
    memcpy(out, host, (size_t)hlen);
    out[hlen] = ':';
    memcpy(out + hlen + 1, d, (size_t)(digits + sizeof(digits) - d));
    out[hlen + 1 + (digits + sizeof(digits) - d)] = '\0';
  } else if (req->unix_socket) {
    strcpy(out, "unix");
  }
}

static void flush_records(ServerObject *s) {
  PyObject *records = s->access_records;
  if (!records || PyList_GET_SIZE(records) == 0)
    return;
  s->access_records = NULL;
  PyObject *r = PyObject_CallMethodObjArgs(s->runtime, S.emit_access, records, NULL);
  if (!r)
    asgi_log_current_exception(s, "cannot write the access log");
  Py_XDECREF(r);
  Py_DECREF(records);
}

void asgi_log_flush(ServerObject *s) {
  if (s->access_len) {
    fwrite(s->access_buf, 1, s->access_len, stderr);
    fflush(stderr);
    s->access_len = 0;
  }
  flush_records(s);
}

/* Room for a line of at most max bytes at the end of the access buffer
 * (flushing it first if needed); the caller adds what it wrote to
 * access_len. Lines are built in place with memcpy: an snprintf costs more
 * than the rest of the access log. */
static char *line_start(ServerObject *s, size_t max) {
  assert(max <= s->access_cap);
  if (s->access_len + max > s->access_cap)
    asgi_log_flush(s);
  return s->access_buf + s->access_len;
}

static inline char *put(char *p, const char *src, size_t n) {
  memcpy(p, src, n);
  return p + n;
}
#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_uint(char *p, uint64_t v) {
  char digits[20];
  int n = 0;
  do
    digits[n++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (n)
    *p++ = digits[--n];
  return p;
}

/* The request id header's value, or NULL. */
static const http_header *request_id(ServerObject *s, const http_request *req) {
  return s->request_id_header[0] ? asgi_find_header(req, s->request_id_header) : NULL;
}

#define TEXT_TARGET_MAX 300
#define TEXT_LINE_MAX (64 + ASGI_LOG_CLIENT_MAX + 64 + TEXT_TARGET_MAX + 128)

/* uvicorn's colours: the request line bold, the status by class. */
static const char *const status_colours[6] = {"",         "\033[97m", "\033[32m",
                                              "\033[33m", "\033[31m", "\033[91m"};

/* INFO:     client - "METHOD target HTTP/x.y" status reason */
static void access_text(ServerObject *s, const http_request *req, const char *client, int status) {
  char *start = line_start(s, TEXT_LINE_MAX), *p = start;
  int colours = applog_colors(), cls = status / 100;
  const char *prefix = applog_level_prefix(LOG_INFO), *reason = http_status_reason(status);
  p = put(p, prefix, strlen(prefix));
  p = put(p, client, strnlen(client, ASGI_LOG_CLIENT_MAX));
  p = PUT_LIT(p, " - \"");
  if (colours)
    p = PUT_LIT(p, "\033[1m");
  p = put(p, req->method, req->method_len > 32 ? 32 : req->method_len);
  *p++ = ' ';
  p = put(p, req->target, req->target_len > TEXT_TARGET_MAX ? TEXT_TARGET_MAX : req->target_len);
  p = PUT_LIT(p, " HTTP/");
  p = put_uint(p, (uint64_t)req->version_major % 10);
  *p++ = '.';
  p = put_uint(p, (uint64_t)req->version_minor % 10);
  if (colours)
    p = PUT_LIT(p, "\033[0m");
  p = PUT_LIT(p, "\" ");
  if (colours) {
    const char *c = status_colours[cls >= 1 && cls <= 5 ? cls : 0];
    p = put(p, c, strlen(c));
  }
  p = put_uint(p, (uint64_t)(status < 0 ? 0 : status % 1000));
  *p++ = ' ';
  p = put(p, reason, strnlen(reason, 64));
  if (colours)
    p = PUT_LIT(p, "\033[0m");
  *p++ = '\n';
  s->access_len += (size_t)(p - start);
}

#define JSON_PATH_MAX 2048 /* escaped bytes */
#define JSON_ID_MAX 256
/* the fixed part (names, time, numbers) is under 300 bytes */
#define JSON_LINE_MAX (512 + 6 * ASGI_LOG_CLIENT_MAX + 6 * 32 + JSON_PATH_MAX + JSON_ID_MAX)

static void access_json(ServerObject *s, const http_request *req, const char *client, int status,
                        uint64_t body_bytes) {
  char *start = line_start(s, JSON_LINE_MAX), *p = start;
  uint64_t us = req->start_ns ? (uv_hrtime() - req->start_ns) / 1000 : 0;
  p = PUT_LIT(p, "{\"time\":\"");
  applog_time(p); /* 24 characters and a NUL */
  p += 24;
  p = PUT_LIT(p, "\",\"level\":\"INFO\",\"logger\":\"uvicorn.access\",\"client\":\"");
  p += applog_json_escape(p, 6 * ASGI_LOG_CLIENT_MAX, client, strlen(client));
  p = PUT_LIT(p, "\",\"method\":\"");
  p += applog_json_escape(p, 6 * 32, req->method, req->method_len > 32 ? 32 : req->method_len);
  p = PUT_LIT(p, "\",\"path\":\"");
  p += applog_json_escape(p, JSON_PATH_MAX, req->target, req->target_len);
  p = PUT_LIT(p, "\",\"http_version\":\"");
  p = put_uint(p, (uint64_t)req->version_major % 10);
  *p++ = '.';
  p = put_uint(p, (uint64_t)req->version_minor % 10);
  p = PUT_LIT(p, "\",\"status\":");
  p = put_uint(p, (uint64_t)(status < 0 ? 0 : status));
  p = PUT_LIT(p, ",\"duration_ms\":");
  p = put_uint(p, us / 1000);
  *p++ = '.';
  *p++ = (char)('0' + us % 1000 / 100);
  *p++ = (char)('0' + us % 100 / 10);
  *p++ = (char)('0' + us % 10);
  p = PUT_LIT(p, ",\"bytes\":");
  p = put_uint(p, body_bytes);
  const http_header *id = request_id(s, req);
  if (id) {
    p = PUT_LIT(p, ",\"request_id\":\"");
    p += applog_json_escape(p, JSON_ID_MAX, id->value, id->value_len);
    *p++ = '"';
  }
  p = PUT_LIT(p, "}\n");
  s->access_len += (size_t)(p - start);
}

/* (client, method, path, version, status, duration_ms, bytes, request_id) for
 * the runtime's emit_access(): uvicorn's five log arguments, then extras. */
static void access_record(ServerObject *s, const http_request *req, const char *client, int status,
                          uint64_t body_bytes) {
  if (!s->access_records && !(s->access_records = PyList_New(0))) {
    PyErr_Clear();
    return;
  }
  const http_header *id_header = request_id(s, req);
  double ms = req->start_ns ? (double)(uv_hrtime() - req->start_ns) / 1e6 : 0.0;
  char version[16];
  snprintf(version, sizeof(version), "%d.%d", req->version_major, req->version_minor);
  PyObject *path = PyUnicode_DecodeLatin1(req->target, (Py_ssize_t)req->target_len, NULL);
  PyObject *id =
      id_header ? PyUnicode_DecodeLatin1(id_header->value, (Py_ssize_t)id_header->value_len, NULL)
                : Py_NewRef(Py_None);
  PyObject *rec =
      path && id ? Py_BuildValue("(ss#OsidKO)", client, req->method, (Py_ssize_t)req->method_len,
                                 path, version, status, ms, (unsigned long long)body_bytes, id)
                 : NULL;
  if (!rec || PyList_Append(s->access_records, rec) != 0)
    PyErr_Clear();
  Py_XDECREF(rec);
  Py_XDECREF(path);
  Py_XDECREF(id);
}

void asgi_log_response(ServerObject *s, const http_request *req, const char *client, int status,
                       uint64_t body_bytes, bool complete) {
  metrics_observe(status, body_bytes, req ? req->start_ns : 0);
  if (!req || !client || !complete || !s->access_log)
    return;
  if (s->log_python)
    access_record(s, req, client, status, body_bytes);
  else if (applog_is_json())
    access_json(s, req, client, status, body_bytes);
  else
    access_text(s, req, client, status);
}
