#include "asgi.h"

#include "asgi_internal.h"
#include "http.h"

#include <structmember.h> /* PyMemberDef */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BODY_HIGH_WATER (256 * 1024) /* pause reading a body buffered beyond this */
#define MAX_RESPONSE_HEADERS 128
#define ACCESS_LOG_FLUSH 16384

static const char *const level_tags[] = {
    "TRACE:    ", "DEBUG:    ", "INFO:     ", "WARNING:  ", "ERROR:    ", "CRITICAL: "};

PyObject *asgi_ClientDisconnected;

/* Interned strings, created once. */
static struct {
  PyObject *type, *asgi, *version, *spec_version, *http_version, *server, *client, *scheme, *method,
      *root_path, *path, *raw_path, *query_string, *headers, *state, *extensions, *body, *more_body,
      *status, *trailers, *file, *offset, *count, *http, *https, *ws, *wss, *websocket,
      *http_request, *http_disconnect, *response_start, *response_body, *response_pathsend,
      *response_zerocopysend, *v1_0, *v1_1, *v3_0, *v2_4, *create_future, *create_task,
      *add_done_callback, *set_result, *set_exception, *done, *cancelled, *exception, *call_soon,
      *call_later, *cancel, *time, *add_reader, *remove_reader, *empty_bytes, *log_exception,
      *pathsend_ext, *zerocopysend_ext, *ws_http_response_ext;
} S;

static int strings_init(void) {
  static const struct {
    PyObject **slot;
    const char *text;
  } table[] = {
      {&S.type, "type"},
      {&S.asgi, "asgi"},
      {&S.version, "version"},
      {&S.spec_version, "spec_version"},
      {&S.http_version, "http_version"},
      {&S.server, "server"},
      {&S.client, "client"},
      {&S.scheme, "scheme"},
      {&S.method, "method"},
      {&S.root_path, "root_path"},
      {&S.path, "path"},
      {&S.raw_path, "raw_path"},
      {&S.query_string, "query_string"},
      {&S.headers, "headers"},
      {&S.state, "state"},
      {&S.extensions, "extensions"},
      {&S.body, "body"},
      {&S.more_body, "more_body"},
      {&S.status, "status"},
      {&S.trailers, "trailers"},
      {&S.file, "file"},
      {&S.offset, "offset"},
      {&S.count, "count"},
      {&S.http, "http"},
      {&S.https, "https"},
      {&S.ws, "ws"},
      {&S.wss, "wss"},
      {&S.websocket, "websocket"},
      {&S.http_request, "http.request"},
      {&S.http_disconnect, "http.disconnect"},
      {&S.response_start, "http.response.start"},
      {&S.response_body, "http.response.body"},
      {&S.response_pathsend, "http.response.pathsend"},
      {&S.response_zerocopysend, "http.response.zerocopysend"},
      {&S.v1_0, "1.0"},
      {&S.v1_1, "1.1"},
      {&S.v3_0, "3.0"},
      {&S.v2_4, "2.4"},
      {&S.create_future, "create_future"},
      {&S.create_task, "create_task"},
      {&S.add_done_callback, "add_done_callback"},
      {&S.set_result, "set_result"},
      {&S.set_exception, "set_exception"},
      {&S.done, "done"},
      {&S.cancelled, "cancelled"},
      {&S.exception, "exception"},
      {&S.call_soon, "call_soon"},
      {&S.call_later, "call_later"},
      {&S.cancel, "cancel"},
      {&S.time, "time"},
      {&S.add_reader, "add_reader"},
      {&S.remove_reader, "remove_reader"},
      {&S.log_exception, "log_exception"},
      {&S.pathsend_ext, "http.response.pathsend"},
      {&S.zerocopysend_ext, "http.response.zerocopysend"},
      {&S.ws_http_response_ext, "websocket.http.response"},
  };
  for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
    if (!*table[i].slot && !(*table[i].slot = PyUnicode_InternFromString(table[i].text)))
      return -1;
  if (!S.empty_bytes && !(S.empty_bytes = PyBytes_FromStringAndSize("", 0)))
    return -1;
  return 0;
}

/* ---- Ready: an awaitable that is already done ------------------------------ */

typedef struct {
  PyObject_HEAD PyObject *value;
} ReadyObject;

static PyTypeObject ReadyType;

PyObject *asgi_ready_new(PyObject *value) {
  ReadyObject *r = PyObject_New(ReadyObject, &ReadyType);
  if (!r)
    return NULL;
  r->value = Py_NewRef(value);
  return (PyObject *)r;
}

static void ready_dealloc(ReadyObject *r) {
  Py_XDECREF(r->value);
  PyObject_Free(r);
}

static PyObject *ready_await(PyObject *self) { return Py_NewRef(self); }

static PySendResult ready_send(PyObject *self, PyObject *arg, PyObject **result) {
  (void)arg;
  ReadyObject *r = (ReadyObject *)self;
  *result = Py_NewRef(r->value);
  return PYGEN_RETURN;
}

static PyObject *ready_next(PyObject *self) {
  ReadyObject *r = (ReadyObject *)self;
  if (r->value == Py_None)
    return NULL; /* StopIteration(None) */
  PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, r->value);
  if (stop) {
    PyErr_SetObject(PyExc_StopIteration, stop);
    Py_DECREF(stop);
  }
  return NULL;
}

static PyAsyncMethods ready_async = {.am_await = ready_await, .am_send = ready_send};

static PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_appbin.Ready",
    .tp_basicsize = sizeof(ReadyObject),
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = ready_next,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("An awaitable whose result is already known."),
};

/* ---- Server and request objects --------------------------------------------- */

typedef struct {
  PyObject_HEAD ServerObject *server;
  http_request *req; /* NULL after the terminal call */
  PyObject *chunks;  /* list of bytes not yet received by the app */
  Py_ssize_t buffered;
  PyObject *receive_waiter, *send_waiter;
  int status;
  unsigned started : 1, complete : 1, body_done : 1, body_sent : 1, disconnected : 1, paused : 1,
      resumed : 1, head : 1;
  char log_prefix[512]; /* client - "METHOD target HTTP/x.y" */
} RequestObject;

static PyTypeObject ServerType;
static PyTypeObject RequestType;

void asgi_log(ServerObject *s, int level, const char *fmt, ...) {
  if (level < s->log_level)
    return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s%s\n", level_tags[level], msg);
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

/* ---- access log ------------------------------------------------------------ */

static void access_log_flush(ServerObject *s) {
  if (s->access_len) {
    fwrite(s->access_buf, 1, s->access_len, stderr);
    fflush(stderr);
    s->access_len = 0;
  }
}

static void access_log_add(ServerObject *s, RequestObject *r) {
  if (!s->access_log || s->log_level > LOG_INFO)
    return;
  char line[800];
  int n = snprintf(line, sizeof(line), "%s%s %d %s\n", level_tags[LOG_INFO], r->log_prefix,
                   r->status, http_status_reason(r->status));
  if (n <= 0)
    return;
  if ((size_t)n >= sizeof(line))
    n = sizeof(line) - 1;
  if (s->access_len + (size_t)n > s->access_cap) {
    access_log_flush(s);
    if ((size_t)n > s->access_cap)
      return;
  }
  memcpy(s->access_buf + s->access_len, line, (size_t)n);
  s->access_len += (size_t)n;
}

/* ---- scope --------------------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c |= 0x20;
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The percent-decoded path as str (UTF-8, invalid bytes replaced), as
 * urllib.parse.unquote gives uvicorn. */
static PyObject *decode_path(const char *p, size_t len) {
  if (!memchr(p, '%', len))
    return PyUnicode_DecodeUTF8(p, (Py_ssize_t)len, "replace");
  char *buf = PyMem_Malloc(len ? len : 1);
  if (!buf)
    return PyErr_NoMemory();
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (p[i] == '%' && i + 2 < len && (hi = hexval(p[i + 1])) >= 0 &&
        (lo = hexval(p[i + 2])) >= 0) {
      buf[n++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      buf[n++] = p[i];
    }
  }
  PyObject *s = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)n, "replace");
  PyMem_Free(buf);
  return s;
}

static int is_trusted(ServerObject *s, const char *host, size_t len) {
  if (s->trust_all_proxies)
    return 1;
  for (size_t i = 0; i < s->ntrusted; i++)
    if (strlen(s->trusted[i]) == len && memcmp(s->trusted[i], host, len) == 0)
      return 1;
  return 0;
}

const http_header *asgi_find_header(const http_request *req, const char *name) {
  size_t len = strlen(name);
  for (size_t i = 0; i < req->n_headers; i++)
    if (req->headers[i].name_len == len && memcmp(req->headers[i].name, name, len) == 0)
      return &req->headers[i];
  return NULL;
}

static void trim(const char **p, size_t *len) {
  while (*len && (**p == ' ' || **p == '\t'))
    (*p)++, (*len)--;
  while (*len && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t'))
    (*len)--;
}

/* scheme and client after trusted X-Forwarded-Proto/For (uvicorn's rules:
 * the client is the right-most address that is not a trusted proxy). */
static int apply_proxy_headers(ServerObject *s, const http_request *req, int websocket,
                               PyObject **scheme, PyObject **client) {
  const char *peer = req->client_host;
  if (!s->proxy_headers || !is_trusted(s, peer, strlen(peer)))
    return 0;
  const http_header *proto = asgi_find_header(req, "x-forwarded-proto");
  if (proto) {
    const char *v = proto->value;
    size_t n = proto->value_len;
    trim(&v, &n);
    /* uvicorn: http, https, ws and wss; for websockets http becomes ws */
    int secure = -1;
    if ((n == 5 && strncasecmp(v, "https", 5) == 0) || (n == 3 && strncasecmp(v, "wss", 3) == 0))
      secure = 1;
    else if ((n == 4 && strncasecmp(v, "http", 4) == 0) || (n == 2 && strncasecmp(v, "ws", 2) == 0))
      secure = 0;
    if (secure >= 0)
      Py_SETREF(*scheme,
                Py_NewRef(websocket ? (secure ? S.wss : S.ws) : (secure ? S.https : S.http)));
  }
  const http_header *fwd = asgi_find_header(req, "x-forwarded-for");
  if (fwd && fwd->value_len) {
    const char *end = fwd->value + fwd->value_len, *start = fwd->value;
    const char *pick = NULL;
    size_t pick_len = 0;
    while (end > start) {
      const char *comma = end;
      while (comma > start && comma[-1] != ',')
        comma--;
      const char *h = comma;
      size_t n = (size_t)(end - comma);
      trim(&h, &n);
      pick = h, pick_len = n;
      if (!is_trusted(s, h, n))
        break;
      end = comma > start ? comma - 1 : start;
    }
    if (pick && pick_len) {
      PyObject *c = Py_BuildValue("(s#i)", pick, (Py_ssize_t)pick_len, 0);
      if (!c)
        return -1;
      Py_SETREF(*client, c);
    }
  }
  return 0;
}

static PyObject *pair_new(PyObject *a, PyObject *b) {
  if (!a || !b) {
    Py_XDECREF(a);
    Py_XDECREF(b);
    return NULL;
  }
  PyObject *t = PyTuple_New(2);
  if (!t) {
    Py_DECREF(a);
    Py_DECREF(b);
    return NULL;
  }
  PyTuple_SET_ITEM(t, 0, a);
  PyTuple_SET_ITEM(t, 1, b);
  return t;
}

static PyObject *addr_new(const char *host, int port) {
  return pair_new(PyUnicode_FromString(host), PyLong_FromLong(port));
}

static PyObject *build_headers(const http_request *req) {
  PyObject *list = PyList_New((Py_ssize_t)req->n_headers);
  if (!list)
    return NULL;
  for (size_t i = 0; i < req->n_headers; i++) {
    const http_header *h = &req->headers[i];
    PyObject *pair = pair_new(PyBytes_FromStringAndSize(h->name, (Py_ssize_t)h->name_len),
                              PyBytes_FromStringAndSize(h->value, (Py_ssize_t)h->value_len));
    if (!pair) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
  }
  return list;
}

/* The method as str: the layer's method strings are static, so the common
 * ones are interned once by address. */
static PyObject *method_str(const http_request *req) {
  static struct {
    const char *key;
    PyObject *str;
  } cache[16];
  for (size_t i = 0; i < sizeof(cache) / sizeof(cache[0]); i++) {
    if (cache[i].key == req->method)
      return Py_NewRef(cache[i].str);
    if (!cache[i].key) {
      PyObject *m = PyUnicode_FromStringAndSize(req->method, (Py_ssize_t)req->method_len);
      if (!m)
        return NULL;
      PyUnicode_InternInPlace(&m);
      cache[i].key = req->method;
      cache[i].str = Py_NewRef(m);
      return m;
    }
  }
  return PyUnicode_FromStringAndSize(req->method, (Py_ssize_t)req->method_len);
}

/* scope["server"]: the same for every request on one listener, so cached. */
static PyObject *server_addr(ServerObject *s, const http_request *req) {
  if (req->unix_socket)
    return pair_new(PyUnicode_FromString(req->server_host), Py_NewRef(Py_None));
  if (req->server_port < 0)
    return Py_NewRef(Py_None);
  if (!s->server_addr || s->server_addr_port != req->server_port ||
      strcmp(s->server_addr_host, req->server_host) != 0) {
    PyObject *a = addr_new(req->server_host, req->server_port);
    if (!a)
      return NULL;
    Py_XSETREF(s->server_addr, a);
    snprintf(s->server_addr_host, sizeof(s->server_addr_host), "%s", req->server_host);
    s->server_addr_port = req->server_port;
  }
  return Py_NewRef(s->server_addr);
}

static PyObject *build_raw_path(ServerObject *s, const http_request *req) {
  Py_ssize_t root = PyBytes_GET_SIZE(s->root_path_bytes);
  PyObject *raw = PyBytes_FromStringAndSize(NULL, root + (Py_ssize_t)req->path_len);
  if (raw) {
    memcpy(PyBytes_AS_STRING(raw), PyBytes_AS_STRING(s->root_path_bytes), (size_t)root);
    memcpy(PyBytes_AS_STRING(raw) + root, req->path, req->path_len);
  }
  return raw;
}

static PyObject *build_full_path(ServerObject *s, const http_request *req) {
  PyObject *path = decode_path(req->path, req->path_len);
  if (!path || PyUnicode_GET_LENGTH(s->root_path) == 0)
    return path;
  PyObject *full = PyUnicode_Concat(s->root_path, path);
  Py_DECREF(path);
  return full;
}

/* The scope's keys in order, with what every request shares: copying this
 * dict (a memcpy of its table) and replacing values costs less than building
 * a new one key by key. */
static PyObject *scope_template(ServerObject *s, int websocket) {
  if (s->scope_template[websocket])
    return s->scope_template[websocket];
  PyObject *keys[] = {S.type,         S.asgi,    S.http_version, S.server,    S.client,
                      S.scheme,       S.method,  S.root_path,    S.path,      S.raw_path,
                      S.query_string, S.headers, S.state,        S.extensions};
  PyObject *t = _PyDict_NewPresized(sizeof(keys) / sizeof(keys[0]));
  for (size_t i = 0; t && i < sizeof(keys) / sizeof(keys[0]); i++) {
    PyObject *value = keys[i] == S.type           ? (websocket ? S.websocket : S.http)
                      : keys[i] == S.http_version ? S.v1_1
                      : keys[i] == S.scheme       ? (websocket ? S.ws : S.http)
                      : keys[i] == S.root_path    ? s->root_path
                                                  : Py_None;
    if ((keys[i] != S.method || !websocket) && PyDict_SetItem(t, keys[i], value) != 0)
      Py_CLEAR(t);
  }
  PyObject *asgi = t ? _PyDict_NewPresized(2) : NULL;
  if (!asgi || PyDict_SetItem(asgi, S.version, S.v3_0) ||
      PyDict_SetItem(asgi, S.spec_version, S.v2_4)) {
    Py_XDECREF(asgi);
    Py_XDECREF(t);
    return NULL;
  }
  s->scope_template[websocket] = t;
  s->scope_asgi = asgi;
  return t;
}

PyObject *asgi_build_scope(ServerObject *s, const http_request *req, int websocket) {
  enum { N = 12 };
  PyObject *keys[N], *values[N] = {NULL};
  int n = 0, ok = 1;
  PyObject *template = scope_template(s, websocket);
  if (!template)
    return NULL;
  PyObject *scheme = Py_NewRef(websocket ? S.ws : S.http);
  PyObject *client = req->unix_socket || req->client_port < 0
                         ? Py_NewRef(Py_None)
                         : addr_new(req->client_host, req->client_port);
  if (!client || (!req->unix_socket && apply_proxy_headers(s, req, websocket, &scheme, &client)))
    ok = 0;
  PyObject *extensions = _PyDict_NewPresized(2);
  PyObject *ext1 = PyDict_New(), *ext2 = websocket ? NULL : PyDict_New();
  if (!extensions || !ext1 || (!websocket && !ext2) ||
      PyDict_SetItem(extensions, websocket ? S.ws_http_response_ext : S.pathsend_ext, ext1) ||
      (!websocket && PyDict_SetItem(extensions, S.zerocopysend_ext, ext2)))
    ok = 0;
  Py_XDECREF(ext1);
  Py_XDECREF(ext2);
#define ADD(key, value) (keys[n] = (key), values[n++] = (value))
  ADD(S.asgi, PyDict_Copy(s->scope_asgi));
  if (req->version_minor == 0)
    ADD(S.http_version, Py_NewRef(S.v1_0));
  ADD(S.server, server_addr(s, req));
  ADD(S.client, client);
  if (scheme != (websocket ? S.ws : S.http))
    ADD(S.scheme, Py_NewRef(scheme));
  Py_DECREF(scheme);
  if (!websocket)
    ADD(S.method, method_str(req));
  ADD(S.path, build_full_path(s, req));
  ADD(S.raw_path, build_raw_path(s, req));
  ADD(S.query_string, PyBytes_FromStringAndSize(req->query, (Py_ssize_t)req->query_len));
  ADD(S.headers, build_headers(req));
  ADD(S.state, s->state ? PyDict_Copy(s->state) : PyDict_New());
  ADD(S.extensions, extensions);
#undef ADD
  PyObject *scope = ok ? PyDict_Copy(template) : NULL;
  for (int i = 0; i < n && scope; i++)
    if (!values[i] || PyDict_SetItem(scope, keys[i], values[i]) != 0)
      Py_CLEAR(scope);
  for (int i = 0; i < n; i++)
    Py_XDECREF(values[i]);
  return scope;
}

/* ---- waking the application -------------------------------------------------- */

/* Resolves a pending future (if still pending) with a result or exception. */
int asgi_resolve(PyObject **waiter, PyObject *result, PyObject *exc_type, const char *msg) {
  PyObject *fut = *waiter;
  if (!fut)
    return 0;
  *waiter = NULL;
  int delivered = 0;
  PyObject *done = PyObject_CallMethodNoArgs(fut, S.done);
  if (done == Py_False) {
    PyObject *r;
    if (exc_type) {
      PyObject *exc = PyObject_CallFunction(exc_type, "s", msg);
      r = exc ? PyObject_CallMethodOneArg(fut, S.set_exception, exc) : NULL;
      Py_XDECREF(exc);
    } else {
      r = PyObject_CallMethodOneArg(fut, S.set_result, result);
    }
    if (!r)
      PyErr_WriteUnraisable(fut);
    delivered = r != NULL;
    Py_XDECREF(r);
  } else if (!done) {
    PyErr_WriteUnraisable(fut);
  }
  Py_XDECREF(done);
  Py_DECREF(fut);
  return delivered;
}

static PyObject *disconnect_message(void) {
  PyObject *msg = _PyDict_NewPresized(1);
  if (msg && PyDict_SetItem(msg, S.type, S.http_disconnect) != 0)
    Py_CLEAR(msg);
  return msg;
}

/* The next http.request message from what is buffered. */
static PyObject *take_body_message(RequestObject *r) {
  PyObject *body;
  Py_ssize_t n = r->chunks ? PyList_GET_SIZE(r->chunks) : 0;
  if (n == 0)
    body = Py_NewRef(S.empty_bytes);
  else if (n == 1)
    body = Py_NewRef(PyList_GET_ITEM(r->chunks, 0));
  else
    body = _PyBytes_Join(S.empty_bytes, r->chunks);
  if (!body || (n && PyList_SetSlice(r->chunks, 0, n, NULL) != 0)) {
    Py_XDECREF(body);
    return NULL;
  }
  r->buffered = 0;
  if (r->body_done)
    r->body_sent = 1;
  if (r->paused && r->req && !r->body_done) {
    r->paused = 0;
    http_request_body_resume(r->req);
    asgi_schedule_pump(r->server);
  }
  PyObject *msg = _PyDict_NewPresized(3);
  if (msg && (PyDict_SetItem(msg, S.type, S.http_request) || PyDict_SetItem(msg, S.body, body) ||
              PyDict_SetItem(msg, S.more_body, r->body_done ? Py_False : Py_True)))
    Py_CLEAR(msg);
  Py_DECREF(body);
  return msg;
}

static void wake_receiver(RequestObject *r) {
  if (!r->receive_waiter)
    return;
  /* A receive() that was cancelled (anyio cancel scopes, is_disconnected())
   * must not take the body with it: the next receive() gets it. */
  PyObject *done = PyObject_CallMethodNoArgs(r->receive_waiter, S.done);
  int waiting = done == Py_False;
  Py_XDECREF(done);
  if (!waiting) {
    if (!done)
      PyErr_WriteUnraisable((PyObject *)r);
    Py_CLEAR(r->receive_waiter);
    return;
  }
  PyObject *msg = r->disconnected ? disconnect_message() : take_body_message(r);
  if (!msg) {
    PyErr_WriteUnraisable((PyObject *)r);
    return;
  }
  asgi_resolve(&r->receive_waiter, msg, NULL, NULL);
  Py_DECREF(msg);
}

/* ---- http layer callbacks ---------------------------------------------------- */

static void finish_with_500(RequestObject *r);
static PyObject *request_receive(RequestObject *r, PyObject *noargs);
static PyObject *request_send(RequestObject *r, PyObject *message);
static PyMethodDef request_methods[] = {
    {"receive", (PyCFunction)request_receive, METH_NOARGS,
     "receive($self, /)\n--\n\nThe next ASGI event: http.request or http.disconnect."},
    {"send", (PyCFunction)request_send, METH_O,
     "send($self, message, /)\n--\n\nSend an ASGI http.response.* message."},
    {NULL, NULL, 0, NULL},
};
static PyObject *runner_new(PyObject *owner, asgi_finish_fn finish, PyObject *awaitable,
                            PyObject *loop);
static void eager_enqueue(ServerObject *s, PyObject *runner);
static void request_finish(PyObject *owner, PyObject *exc, int cancelled);

int asgi_start_app(ServerObject *s, PyObject *scope, PyObject *receive, PyObject *send,
                   PyObject *owner, asgi_finish_fn finish) {
  PyObject *call_args[3] = {scope, receive, send};
  PyObject *coro = PyObject_Vectorcall(s->app, call_args, 3, NULL);
  PyObject *runner = coro ? runner_new(owner, finish, coro, s->loop) : NULL;
  Py_XDECREF(coro);
  if (runner && s->in_pump) {
    eager_enqueue(s, runner); /* its first step runs when uv_run() returns */
    return 0;
  }
  /* asyncio.Task(runner, loop=loop), as loop.create_task() does. */
  PyObject *args[2] = {runner, s->loop};
  PyObject *task = runner ? PyObject_Vectorcall(s->task_type, args, 1, s->loop_kwnames) : NULL;
  Py_XDECREF(runner);
  if (!task)
    return -1;
  Py_DECREF(task);
  return 0;
}

/* client - "METHOD target HTTP/x.y", with the client as the app sees it
 * (scope["client"], after trusted proxy headers), as uvicorn logs it. */
static void format_log_prefix(RequestObject *r, const http_request *req, PyObject *client) {
  char who[128] = "-";
  if (client && PyTuple_Check(client) && PyTuple_GET_SIZE(client) == 2) {
    const char *host = PyUnicode_Check(PyTuple_GET_ITEM(client, 0))
                           ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(client, 0))
                           : NULL;
    long port =
        PyLong_Check(PyTuple_GET_ITEM(client, 1)) ? PyLong_AsLong(PyTuple_GET_ITEM(client, 1)) : -1;
    if (host)
      snprintf(who, sizeof(who), "%s:%ld", host, port);
    PyErr_Clear();
  } else if (req->unix_socket) {
    snprintf(who, sizeof(who), "unix");
  }
  int tlen = (int)(req->target_len > 300 ? 300 : req->target_len);
  snprintf(r->log_prefix, sizeof(r->log_prefix), "%s - \"%.*s %.*s HTTP/%d.%d\"", who,
           (int)req->method_len, req->method, tlen, req->target, req->version_major,
           req->version_minor);
}

static void on_request(http_request *req) {
  ServerObject *s = http_server_user(req->server);
  if (req->upgrade && s->ws_enabled && asgi_ws_is_websocket(req)) {
    asgi_ws_on_request(s, req);
    return;
  }
  RequestObject *r = PyObject_New(RequestObject, &RequestType);
  if (!r) {
    asgi_log_current_exception(s, "cannot allocate a request");
    http_response_abort(req);
    return;
  }
  r->server = (ServerObject *)Py_NewRef(s);
  r->req = req;
  r->chunks = NULL; /* created by the first body chunk */
  r->buffered = 0;
  r->receive_waiter = r->send_waiter = NULL;
  r->status = 0;
  r->started = r->complete = r->body_done = r->body_sent = r->disconnected = r->paused = 0;
  r->resumed = !req->expect_continue;
  r->head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
  req->user = r; /* the layer's reference, dropped in on_request_done */
  PyObject *scope = asgi_build_scope(s, req, 0);
  r->log_prefix[0] = '\0';
  if (scope && s->access_log && s->log_level <= LOG_INFO)
    format_log_prefix(r, req, PyDict_GetItemWithError(scope, S.client));
  PyObject *receive = scope ? PyCFunction_New(&request_methods[0], (PyObject *)r) : NULL;
  PyObject *send = receive ? PyCFunction_New(&request_methods[1], (PyObject *)r) : NULL;
  int rc = send ? asgi_start_app(s, scope, receive, send, (PyObject *)r, request_finish) : -1;
  Py_XDECREF(scope);
  Py_XDECREF(receive);
  Py_XDECREF(send);
  if (rc != 0) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
      PyException_SetTraceback(value, tb);
    asgi_log_exception(s, "Exception in ASGI application", value ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    finish_with_500(r);
    return;
  }
}

/* req->user: a RequestObject, a WebSocket object (asgi_ws.c) or NULL (a
 * request whose object could not be made). */
static RequestObject *request_of(http_request *req) {
  PyObject *u = req->user;
  return u && Py_IS_TYPE(u, &RequestType) ? (RequestObject *)u : NULL;
}

static void on_body(http_request *req, const char *data, size_t len) {
  RequestObject *r = request_of(req);
  if (!r)
    return; /* a WebSocket handshake has no body to give */
  if (!r->chunks && !(r->chunks = PyList_New(0))) {
    asgi_log_current_exception(r->server, "cannot buffer a request body");
    return;
  }
  PyObject *chunk = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
  if (!chunk || PyList_Append(r->chunks, chunk) != 0) {
    Py_XDECREF(chunk);
    asgi_log_current_exception(r->server, "cannot buffer a request body");
    return;
  }
  Py_DECREF(chunk);
  r->buffered += (Py_ssize_t)len;
  if (r->buffered >= BODY_HIGH_WATER && !r->paused) {
    r->paused = 1;
    http_request_body_pause(req);
  }
  wake_receiver(r);
}

static void on_body_end(http_request *req) {
  RequestObject *r = request_of(req);
  if (!r)
    return;
  r->body_done = 1;
  wake_receiver(r);
}

static void on_disconnect(http_request *req) {
  RequestObject *r = request_of(req);
  if (!r) {
    if (asgi_ws_owns(req))
      asgi_ws_on_disconnect(req);
    return;
  }
  r->disconnected = 1;
  wake_receiver(r);
  asgi_resolve(&r->send_waiter, NULL, asgi_ClientDisconnected, "client disconnected");
}

static void on_drain(http_request *req) {
  RequestObject *r = request_of(req);
  if (!r) {
    if (asgi_ws_owns(req))
      asgi_ws_on_drain(req);
    return;
  }
  asgi_resolve(&r->send_waiter, Py_None, NULL, NULL);
}

static void on_request_done(http_request *req) {
  RequestObject *r = request_of(req);
  if (!r) {
    if (asgi_ws_owns(req))
      asgi_ws_on_request_done(req);
    return;
  }
  req->user = NULL;
  r->req = NULL;
  r->complete = 1;
  wake_receiver(r);
  asgi_resolve(&r->send_waiter, Py_None, NULL, NULL);
  Py_DECREF(r);
}

static void on_max_requests(http_server *srv) {
  ServerObject *s = http_server_user(srv);
  asgi_log(s, LOG_INFO, "Maximum request limit reached; shutting down.");
  if (s->on_max_requests && s->on_max_requests != Py_None) {
    PyObject *r = PyObject_CallNoArgs(s->on_max_requests);
    if (!r)
      asgi_log_current_exception(s, "on_max_requests failed");
    Py_XDECREF(r);
  }
}

static void on_log(http_server *srv, int level, const char *msg) {
  static const int map[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR};
  asgi_log(http_server_user(srv), map[level < 0 ? 0 : level > 3 ? 3 : level], "%s", msg);
}

/* ---- finishing ------------------------------------------------------------------ */

static void finish_with_500(RequestObject *r) {
  if (!r->req)
    return;
  if (r->started) {
    http_response_abort(r->req);
  } else {
    static const char body[] = "Internal Server Error";
    http_header h[] = {{"content-type", 12, "text/plain; charset=utf-8", 25},
                       {"connection", 10, "close", 5}};
    r->status = 500;
    r->started = 1;
    if (!r->disconnected && http_response_start(r->req, 500, h, 2) == 0) {
      access_log_add(r->server, r); /* only what the client really gets */
      http_response_write(r->req, body, sizeof(body) - 1, false);
    } else {
      http_response_abort(r->req);
    }
  }
  asgi_schedule_pump(r->server);
}

void asgi_log_exception(ServerObject *s, const char *msg, PyObject *exc) {
  PyObject *text = PyUnicode_FromString(msg);
  PyObject *r =
      text ? PyObject_CallMethodObjArgs(s->runtime, S.log_exception, text, exc, NULL) : NULL;
  Py_XDECREF(text);
  if (!r) {
    PyErr_Clear();
    fprintf(stderr, "%s%s\n", level_tags[LOG_ERROR], msg);
  }
  Py_XDECREF(r);
}

/* The application returned (exc NULL), raised exc, or was cancelled: log
 * what is worth it and make sure the request gets its terminal call. */
static void request_finish(PyObject *owner, PyObject *exc, int cancelled) {
  RequestObject *r = (RequestObject *)owner;
  if (exc) {
    if (!(r->disconnected && PyObject_TypeCheck(exc, (PyTypeObject *)asgi_ClientDisconnected)))
      asgi_log_exception(r->server, "Exception in ASGI application", exc);
    finish_with_500(r);
  } else if (r->req && !r->complete) {
    if (!r->disconnected && !cancelled)
      asgi_log(r->server, LOG_ERROR, "ASGI callable returned without %s response.",
               r->started ? "completing" : "starting");
    finish_with_500(r);
  }
}

/* ---- Runner: the coroutine a request's task runs ------------------------------
 *
 * It drives the application's awaitable and, when that ends, finishes the
 * request inline: no done-callback round trip through the event loop, and
 * the task itself always ends cleanly (errors are logged here) except for
 * cancellation, which propagates. */

typedef struct RunnerObject {
  PyObject_HEAD PyObject *inner; /* the app's awaitable iterator */
  PyObject *owner;               /* the request or websocket */
  asgi_finish_fn finish;
  PyObject *loop;
  PyObject *context;         /* the context of an eager start, for its task */
  PyObject *pending;         /* what the eager first step yielded, or */
  PyObject *pending_exc;     /* the exception it propagated: its task's first step gets it */
  struct RunnerObject *next; /* the server's eager queue (a reference) */
  int done;                  /* the awaitable ended and finish() ran */
} RunnerObject;

static PyTypeObject RunnerType;

static PyObject *runner_new(PyObject *owner, asgi_finish_fn finish, PyObject *awaitable,
                            PyObject *loop) {
  PyObject *inner;
  if (PyCoro_CheckExact(awaitable)) {
    inner = Py_NewRef(awaitable);
  } else {
    unaryfunc getter =
        Py_TYPE(awaitable)->tp_as_async ? Py_TYPE(awaitable)->tp_as_async->am_await : NULL;
    if (!getter)
      return PyErr_Format(PyExc_TypeError, "the ASGI application returned %R, not an awaitable",
                          awaitable);
    if (!(inner = getter(awaitable)))
      return NULL;
  }
  RunnerObject *runner = PyObject_GC_New(RunnerObject, &RunnerType);
  if (!runner) {
    Py_DECREF(inner);
    return NULL;
  }
  runner->inner = inner;
  runner->owner = Py_NewRef(owner);
  runner->finish = finish;
  runner->loop = Py_NewRef(loop);
  runner->context = runner->pending = runner->pending_exc = NULL;
  runner->next = NULL;
  runner->done = 0;
  PyObject_GC_Track(runner);
  return (PyObject *)runner;
}

/* Turns the inner iterator's outcome into the runner's. */
static PySendResult runner_outcome(RunnerObject *self, PySendResult status, PyObject **result) {
  if (status == PYGEN_NEXT || self->done)
    return status;
  self->done = 1;
  if (status == PYGEN_RETURN) {
    Py_CLEAR(*result);
    self->finish(self->owner, NULL, 0);
  } else {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
      PyException_SetTraceback(value, tb);
    int cancelled = value && PyErr_GivenExceptionMatches(value, PyExc_BaseException) &&
                    !PyErr_GivenExceptionMatches(value, PyExc_Exception);
    self->finish(self->owner, cancelled ? NULL : value, cancelled);
    if (cancelled) { /* CancelledError, KeyboardInterrupt, SystemExit: propagate */
      PyErr_Restore(type, value, tb);
      *result = NULL;
      return PYGEN_ERROR;
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
  }
  *result = Py_NewRef(Py_None);
  return PYGEN_RETURN;
}

static PySendResult runner_am_send(PyObject *self, PyObject *arg, PyObject **result) {
  RunnerObject *runner = (RunnerObject *)self;
  if (runner->pending) { /* the eager step's yield, now the task's */
    *result = runner->pending;
    runner->pending = NULL;
    return PYGEN_NEXT;
  }
  if (runner->pending_exc) {
    PyObject *exc = runner->pending_exc;
    runner->pending_exc = NULL;
    PyErr_Restore(Py_NewRef(Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
    *result = NULL;
    return PYGEN_ERROR;
  }
  if (runner->done || !runner->inner) {
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
  }
  return runner_outcome(runner, PyIter_Send(runner->inner, arg, result), result);
}

static PyObject *runner_send(PyObject *self, PyObject *arg) {
  PyObject *result;
  PySendResult status = runner_am_send(self, arg, &result);
  if (status == PYGEN_RETURN) {
    Py_DECREF(result);
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
  }
  return status == PYGEN_NEXT ? result : NULL;
}

static PyObject *runner_next(PyObject *self) { return runner_send(self, Py_None); }

static PyObject *runner_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  RunnerObject *runner = (RunnerObject *)self;
  Py_CLEAR(runner->pending_exc);
  if (runner->pending) {
    /* The task was cancelled before it took over the eager step's future:
     * cancel that future, as Task.cancel() would have. */
    PyObject *fut = runner->pending;
    runner->pending = NULL;
    PyObject *r = PyObject_HasAttr(fut, S.cancel) ? PyObject_CallMethodNoArgs(fut, S.cancel) : NULL;
    if (!r)
      PyErr_Clear();
    Py_XDECREF(r);
    Py_DECREF(fut);
  }
  PyObject *throw = runner->inner ? PyObject_GetAttrString(runner->inner, "throw") : NULL;
  if (!throw &&!PyErr_Occurred())
    PyErr_SetString(PyExc_RuntimeError, "the ASGI application was cleared");
  if (!throw)
    return NULL;
  PyObject *result = PyObject_Vectorcall(throw, args, (size_t)nargs, NULL);
  Py_DECREF(throw);
  PySendResult status = PYGEN_NEXT;
  if (!result) {
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
      PyErr_Clear();
      result = Py_NewRef(Py_None);
      status = PYGEN_RETURN;
    } else {
      status = PYGEN_ERROR;
    }
  }
  status = runner_outcome(runner, status, &result);
  if (status == PYGEN_RETURN) {
    Py_DECREF(result);
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
  }
  return status == PYGEN_NEXT ? result : NULL;
}

static PyObject *runner_close(PyObject *self, PyObject *noargs) {
  (void)noargs;
  RunnerObject *runner = (RunnerObject *)self;
  PyObject *r = PyObject_CallMethod(runner->inner, "close", NULL);
  if (!r)
    PyErr_Clear(); /* iterators without close() */
  Py_XDECREF(r);
  Py_RETURN_NONE;
}

static int runner_traverse(RunnerObject *self, visitproc visit, void *arg) {
  Py_VISIT(self->inner);
  Py_VISIT(self->owner);
  Py_VISIT(self->loop);
  Py_VISIT(self->context);
  Py_VISIT(self->pending);
  Py_VISIT(self->pending_exc);
  return 0;
}

static int runner_clear(RunnerObject *self) {
  Py_CLEAR(self->inner);
  Py_CLEAR(self->owner);
  Py_CLEAR(self->loop);
  Py_CLEAR(self->context);
  Py_CLEAR(self->pending);
  Py_CLEAR(self->pending_exc);
  return 0;
}

static void runner_dealloc(RunnerObject *self) {
  PyObject_GC_UnTrack(self);
  runner_clear(self);
  PyObject_GC_Del(self);
}

static PyMethodDef runner_methods[] = {
    {"send", runner_send, METH_O, "send($self, value, /)\n--\n\nResume the application."},
    {"throw", (PyCFunction)(void (*)(void))runner_throw, METH_FASTCALL,
     "throw($self, typ, val=None, tb=None, /)\n--\n\nRaise inside the application."},
    {"close", runner_close, METH_NOARGS, "close($self, /)\n--\n\nClose the application."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods runner_async = {.am_await = ready_await, .am_send = runner_am_send};

static PyTypeObject RunnerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_appbin.Runner",
    .tp_basicsize = sizeof(RunnerObject),
    .tp_dealloc = (destructor)runner_dealloc,
    .tp_as_async = &runner_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = runner_next,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)runner_traverse,
    .tp_clear = (inquiry)runner_clear,
    .tp_methods = runner_methods,
    .tp_doc = PyDoc_STR("The coroutine a request's task runs: the app, then the finish."),
};

/* ---- Eager first steps -----------------------------------------------------------
 *
 * A request's coroutine often runs to its end without waiting for anything
 * (hello world; a FastAPI endpoint that only computes). Creating an
 * asyncio.Task for it costs more than the rest of the request in Python
 * (Task.__init__ calls the loop's Python get_debug() and call_soon(), names
 * the task and adds it to a WeakSet; then one more loop iteration runs the
 * step). So inside the pump, asgi_start_app() only queues the Runner; once
 * uv_run() has returned (where the task's step would have run, outside any
 * libuv callback, one loop iteration earlier) each queued Runner's first step
 * runs here, as a Task's step runs it: in a copy of the context, with
 * asyncio.current_task() set to a task.
 *
 * That task is an instance of RequestTask, an asyncio.Task subclass whose
 * Task.__init__ runs lazily: on its first attribute access (app code that
 * calls current_task().cancel(), get_name()...) or when the first step
 * suspends. Until then it is an object that sniffio, anyio's cancel scopes
 * (a weak key) and `is` comparisons can use. Once initialised, the task's
 * first step takes over what the eager step left: the future it yielded
 * (Runner.pending) or the exception it propagated (Runner.pending_exc), so
 * from there on it is an ordinary asyncio task. */

static Py_ssize_t task_runner_offset; /* RequestTask's _appbin_runner slot */

static PyObject **task_runner(PyObject *task) {
  return (PyObject **)((char *)task + task_runner_offset);
}

/* Runs Task.__init__(task, runner, loop=..., context=...) if it has not run
 * yet: from then on the task drives the runner through the event loop. */
static int task_materialize(PyObject *task) {
  RunnerObject *runner = (RunnerObject *)*task_runner(task);
  if (!runner)
    return 0;
  *task_runner(task) = NULL;
  PyObject *args = PyTuple_Pack(1, (PyObject *)runner);
  PyObject *kwargs = args ? Py_BuildValue("{sOsO}", "loop", runner->loop, "context",
                                          runner->context ? runner->context : Py_None)
                          : NULL;
  int rc = kwargs ? Py_TYPE(task)->tp_base->tp_init(task, args, kwargs) : -1;
  Py_XDECREF(args);
  Py_XDECREF(kwargs);
  Py_DECREF(runner);
  return rc;
}

static PyObject *task_getattro(PyObject *task, PyObject *name) {
  if (*task_runner(task) && task_materialize(task) != 0)
    return NULL;
  return PyObject_GenericGetAttr(task, name);
}

static int task_setattro(PyObject *task, PyObject *name, PyObject *value) {
  if (*task_runner(task) && task_materialize(task) != 0)
    return -1;
  return PyObject_GenericSetAttr(task, name, value);
}

/* class RequestTask(asyncio.Task): __slots__ = ("_appbin_runner",), with the
 * attribute hooks above. Made once per process. */
static PyObject *request_task_type(PyObject *task_type) {
  static PyObject *type;
  if (type)
    return Py_NewRef(type);
  PyObject *ns = Py_BuildValue("{s(s)ss}", "__slots__", "_appbin_runner", "__module__", "_appbin");
  PyObject *t =
      ns ? PyObject_CallFunction((PyObject *)&PyType_Type, "s(O)O", "RequestTask", task_type, ns)
         : NULL;
  Py_XDECREF(ns);
  PyObject *slot = t ? PyObject_GetAttrString(t, "_appbin_runner") : NULL;
  if (!slot) {
    Py_XDECREF(t);
    return NULL;
  }
  if (!Py_IS_TYPE(slot, &PyMemberDescr_Type)) {
    Py_DECREF(slot);
    Py_DECREF(t);
    return PyErr_Format(PyExc_TypeError, "RequestTask has no slot");
  }
  task_runner_offset = ((PyMemberDescrObject *)slot)->d_member->offset;
  Py_DECREF(slot);
  ((PyTypeObject *)t)->tp_getattro = task_getattro;
  ((PyTypeObject *)t)->tp_setattro = task_setattro;
  PyType_Modified((PyTypeObject *)t);
  type = t;
  return Py_NewRef(type);
}

static void eager_enqueue(ServerObject *s, PyObject *runner) {
  if (s->eager_tail)
    ((RunnerObject *)s->eager_tail)->next = (RunnerObject *)runner;
  else
    s->eager_head = runner;
  s->eager_tail = runner;
}

/* The runner's first step, as its task's first step would run it. -1 with
 * an exception set if it could not be run or handed over to its task. */
static int eager_step(ServerObject *s, RunnerObject *runner) {
  PyObject *context = PyContext_CopyCurrent();
  PyTypeObject *type = (PyTypeObject *)s->eager_task_type;
  PyObject *task = context ? type->tp_alloc(type, 0) : NULL;
  if (!task) {
    Py_XDECREF(context);
    return -1;
  }
  Py_XSETREF(runner->context, context);
  *task_runner(task) = Py_NewRef((PyObject *)runner);
  if (PyContext_Enter(context) != 0) {
    Py_DECREF(task);
    return -1;
  }
  /* asyncio's _enter_task(loop, task), on its dict: no other task may be
   * running (none is, in the pump). */
  PyObject *running = PyDict_SetDefault(s->current_tasks, s->loop, task);
  if (running != task) {
    if (running)
      PyErr_Format(PyExc_RuntimeError,
                   "Cannot enter into task %R while another task %R is "
                   "being executed.",
                   task, running);
    PyContext_Exit(context);
    Py_DECREF(task);
    return -1;
  }
  PyObject *result, *type_, *exc, *tb;
  PySendResult status = runner_am_send((PyObject *)runner, Py_None, &result);
  PyErr_Fetch(&type_, &exc, &tb);
  if (PyDict_DelItem(s->current_tasks, s->loop) != 0) /* _leave_task() */
    PyErr_WriteUnraisable(task);
  if (PyContext_Exit(context) != 0)
    PyErr_WriteUnraisable(task);
  int rc = 0;
  if (status == PYGEN_RETURN) {
    Py_DECREF(result); /* done; a task initialised meanwhile returns None */
  } else if (status == PYGEN_NEXT) {
    runner->pending = result;
    rc = task_materialize(task);
  } else {
    PyErr_NormalizeException(&type_, &exc, &tb);
    if (exc && tb)
      PyException_SetTraceback(exc, tb);
    /* A cancellation nobody can see is dropped; KeyboardInterrupt and
     * SystemExit go through the task to the loop, as they would have. */
    if (exc &&
        (*task_runner(task) == NULL || !PyErr_GivenExceptionMatches(exc, s->cancelled_error))) {
      runner->pending_exc = Py_NewRef(exc);
      rc = task_materialize(task);
    }
    Py_XDECREF(type_);
    Py_XDECREF(exc);
    Py_XDECREF(tb);
  }
  Py_DECREF(task);
  return rc;
}

static void run_eager_queue(ServerObject *s) {
  while (s->eager_head) {
    RunnerObject *runner = (RunnerObject *)s->eager_head;
    s->eager_head = (PyObject *)runner->next;
    if (!s->eager_head)
      s->eager_tail = NULL;
    runner->next = NULL;
    if (eager_step(s, runner) != 0) {
      PyObject *type, *exc, *tb;
      PyErr_Fetch(&type, &exc, &tb);
      PyErr_NormalizeException(&type, &exc, &tb);
      if (!runner->done) { /* answer 500 rather than leave the request hanging */
        runner->done = 1;
        runner->finish(runner->owner, exc ? exc : Py_None, 0);
      } else {
        asgi_log_exception(s, "cannot run the ASGI application", exc ? exc : Py_None);
      }
      Py_XDECREF(type);
      Py_XDECREF(exc);
      Py_XDECREF(tb);
    }
    Py_DECREF(runner);
  }
}

/* ---- receive and send ---------------------------------------------------------- */

static PyObject *request_receive(RequestObject *r, PyObject *noargs) {
  (void)noargs;
  if (r->req && !r->resumed) {
    r->resumed = 1; /* the app wants the body: send 100 Continue */
    http_request_body_resume(r->req);
    asgi_schedule_pump(r->server);
  }
  PyObject *msg = NULL;
  if (r->disconnected || r->complete)
    msg = disconnect_message();
  else if ((r->chunks && PyList_GET_SIZE(r->chunks)) || (r->body_done && !r->body_sent))
    msg = take_body_message(r);
  if (msg) {
    PyObject *ready = asgi_ready_new(msg);
    Py_DECREF(msg);
    return ready;
  }
  if (PyErr_Occurred())
    return NULL;
  PyObject *fut = PyObject_CallNoArgs(r->server->create_future);
  if (!fut)
    return NULL;
  Py_XSETREF(r->receive_waiter, Py_NewRef(fut));
  return fut;
}

static PyObject *runtime_error(RequestObject *r, const char *fmt, PyObject *arg) {
  (void)r;
  return PyErr_Format(PyExc_RuntimeError, fmt, arg);
}

/* Converts ASGI headers into http_header entries pointing into the bytes
 * objects, which `keep` holds. */
int asgi_convert_headers(PyObject *headers, http_header *out, size_t max, size_t *n,
                         PyObject *keep) {
  PyObject *seq = PySequence_Fast(headers, "ASGI 'headers' must be an iterable of pairs");
  if (!seq)
    return -1;
  if (PyList_Append(keep, seq) != 0) {
    Py_DECREF(seq);
    return -1;
  }
  Py_DECREF(seq);
  Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
  if ((size_t)count > max) {
    PyErr_Format(PyExc_RuntimeError, "too many response headers (%zd)", count);
    return -1;
  }
  for (Py_ssize_t i = 0; i < count; i++) {
    PyObject *pair = PySequence_Fast(PySequence_Fast_GET_ITEM(seq, i),
                                     "each ASGI header must be a [name, value] pair");
    if (!pair)
      return -1;
    if (PyList_Append(keep, pair) != 0 || PySequence_Fast_GET_SIZE(pair) != 2) {
      if (!PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "each ASGI header must be a [name, value] pair");
      Py_DECREF(pair);
      return -1;
    }
    Py_DECREF(pair);
    PyObject *name = PySequence_Fast_GET_ITEM(pair, 0);
    PyObject *value = PySequence_Fast_GET_ITEM(pair, 1);
    if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
      PyErr_Format(PyExc_TypeError, "ASGI header names and values must be bytes, got %R", pair);
      return -1;
    }
    out[i].name = PyBytes_AS_STRING(name);
    out[i].name_len = (size_t)PyBytes_GET_SIZE(name);
    out[i].value = PyBytes_AS_STRING(value);
    out[i].value_len = (size_t)PyBytes_GET_SIZE(value);
  }
  *n = (size_t)count;
  return 0;
}

static PyObject *send_start(RequestObject *r, PyObject *message) {
  if (r->started)
    return runtime_error(r, "Expected ASGI message 'http.response.body', but got %R",
                         S.response_start);
  PyObject *status_obj = PyDict_GetItemWithError(message, S.status);
  if (!status_obj)
    return PyErr_Occurred() ? NULL
                            : PyErr_Format(PyExc_KeyError, "http.response.start needs 'status'");
  int overflow;
  long status = PyLong_Check(status_obj) ? PyLong_AsLongAndOverflow(status_obj, &overflow) : -1;
  if (status == -1 && PyErr_Occurred())
    return NULL;
  PyObject *headers = PyDict_GetItemWithError(message, S.headers);
  if (!headers && PyErr_Occurred())
    return NULL;
  PyObject *keep = PyList_New(0);
  if (!keep)
    return NULL;
  http_header hdrs[MAX_RESPONSE_HEADERS];
  size_t n = 0;
  if (headers && asgi_convert_headers(headers, hdrs, MAX_RESPONSE_HEADERS, &n, keep) != 0) {
    Py_DECREF(keep);
    return NULL;
  }
  int rc = status < 100 || status > 999 ? HTTP_EINVAL_STATUS
                                        : http_response_start(r->req, (int)status, hdrs, n);
  Py_DECREF(keep);
  if (rc != 0) {
    asgi_log(r->server, LOG_ERROR, "Invalid response from ASGI application: %s (status %ld)",
             http_strerror(rc), status);
    finish_with_500(r);
    return PyErr_Format(PyExc_RuntimeError, "invalid http.response.start: %s", http_strerror(rc));
  }
  r->started = 1;
  r->status = (int)status;
  return asgi_ready_new(Py_None);
}

/* Handles the result of a body write: done, wait for drain, or error. */
static PyObject *after_write(RequestObject *r, int rc, int more) {
  asgi_schedule_pump(r->server);
  if (!more) {
    r->complete = 1;
  }
  if (rc == HTTP_ECLOSED || (rc < 0 && r->disconnected)) {
    PyErr_SetString(asgi_ClientDisconnected, "client disconnected");
    return NULL;
  }
  if (rc < 0)
    return PyErr_Format(PyExc_RuntimeError, "response body: %s", http_strerror(rc));
  if (rc == 1 && more && r->req) {
    PyObject *fut = PyObject_CallNoArgs(r->server->create_future);
    if (!fut)
      return NULL;
    Py_XSETREF(r->send_waiter, Py_NewRef(fut));
    return fut;
  }
  return asgi_ready_new(Py_None);
}

static int get_more_body(PyObject *message, int *more) {
  PyObject *v = PyDict_GetItemWithError(message, S.more_body);
  if (!v)
    return PyErr_Occurred() ? -1 : (*more = 0, 0);
  int t = PyObject_IsTrue(v);
  if (t < 0)
    return -1;
  *more = t;
  return 0;
}

static PyObject *send_body(RequestObject *r, PyObject *message) {
  int more;
  if (get_more_body(message, &more) != 0)
    return NULL;
  PyObject *body = PyDict_GetItemWithError(message, S.body);
  if (!body && PyErr_Occurred())
    return NULL;
  Py_buffer view = {0};
  if (body && PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) != 0)
    return NULL;
  if (!more)
    access_log_add(r->server, r);
  int rc = http_response_write(r->req, view.buf, (size_t)view.len, more);
  if (body)
    PyBuffer_Release(&view);
  return after_write(r, rc, more);
}

static PyObject *send_pathsend(RequestObject *r, PyObject *message) {
  PyObject *path = PyDict_GetItemWithError(message, S.path);
  if (!path)
    return PyErr_Occurred() ? NULL
                            : PyErr_Format(PyExc_KeyError, "http.response.pathsend needs 'path'");
  PyObject *fs = NULL;
  if (!PyUnicode_FSConverter(path, &fs))
    return NULL;
  int fd = open(PyBytes_AS_STRING(fs), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    Py_DECREF(fs);
    return NULL;
  }
  Py_DECREF(fs);
  access_log_add(r->server, r);
  int rc = http_response_sendfile(r->req, fd, 0, -1, false);
  return after_write(r, rc, 0);
}

static PyObject *send_zerocopy(RequestObject *r, PyObject *message) {
  int more;
  if (get_more_body(message, &more) != 0)
    return NULL;
  PyObject *file = PyDict_GetItemWithError(message, S.file);
  if (!file)
    return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_KeyError, "zerocopysend needs 'file'");
  int fd = PyObject_AsFileDescriptor(file);
  if (fd < 0)
    return NULL;
  long long offset = -1, count = -1;
  PyObject *v = PyDict_GetItemWithError(message, S.offset);
  if (v && v != Py_None && (offset = PyLong_AsLongLong(v)) == -1 && PyErr_Occurred())
    return NULL;
  v = PyDict_GetItemWithError(message, S.count);
  if (v && v != Py_None && (count = PyLong_AsLongLong(v)) == -1 && PyErr_Occurred())
    return NULL;
  if (offset < 0) /* the file's current position, as the extension specifies */
    offset = lseek(fd, 0, SEEK_CUR) < 0 ? 0 : lseek(fd, 0, SEEK_CUR);
  int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (dupfd < 0)
    return PyErr_SetFromErrno(PyExc_OSError);
  if (!more)
    access_log_add(r->server, r);
  int rc = http_response_sendfile(r->req, dupfd, offset, count, more);
  return after_write(r, rc, more);
}

static PyObject *request_send(RequestObject *r, PyObject *message) {
  if (!PyDict_Check(message))
    return PyErr_Format(PyExc_TypeError, "ASGI messages must be dicts, got %R", message);
  PyObject *type = PyDict_GetItemWithError(message, S.type);
  if (!type)
    return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_KeyError, "ASGI message has no 'type'");
  if (r->disconnected) {
    PyErr_SetString(asgi_ClientDisconnected, "client disconnected");
    return NULL;
  }
  if (r->complete || !r->req)
    return runtime_error(r, "Unexpected ASGI message %R sent, after response already completed.",
                         type);
  int is_start = PyUnicode_Check(type) && PyUnicode_Compare(type, S.response_start) == 0;
  if (is_start)
    return send_start(r, message);
  if (!r->started)
    return runtime_error(r, "Expected ASGI message 'http.response.start', but got %R.", type);
  if (PyUnicode_Check(type) && PyUnicode_Compare(type, S.response_body) == 0)
    return send_body(r, message);
  if (PyUnicode_Check(type) && PyUnicode_Compare(type, S.response_pathsend) == 0)
    return send_pathsend(r, message);
  if (PyUnicode_Check(type) && PyUnicode_Compare(type, S.response_zerocopysend) == 0)
    return send_zerocopy(r, message);
  if (PyErr_Occurred())
    return NULL;
  return runtime_error(r, "Unexpected ASGI message %R sent.", type);
}

static void request_dealloc(RequestObject *r) {
  Py_XDECREF(r->chunks);
  Py_XDECREF(r->receive_waiter);
  Py_XDECREF(r->send_waiter);
  Py_XDECREF(r->server);
  PyObject_Free(r);
}

static PyTypeObject RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_appbin.Request",
    .tp_basicsize = sizeof(RequestObject),
    .tp_dealloc = (destructor)request_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = request_methods,
    .tp_doc = PyDoc_STR("One HTTP request in flight: the ASGI receive/send pair."),
};

/* ---- the libuv <-> asyncio pump ------------------------------------------------- */

void asgi_schedule_pump(ServerObject *s) {
  if (s->pump_scheduled || s->closed)
    return;
  PyObject *h = PyObject_CallOneArg(s->call_soon, s->pump);
  if (!h) {
    PyErr_WriteUnraisable((PyObject *)s);
    return;
  }
  Py_DECREF(h);
  s->pump_scheduled = 1;
}

/* Arms an asyncio timer for libuv's next timeout, unless one already fires
 * early enough. */
static int server_arm_timer(ServerObject *s) {
  int timeout = uv_backend_timeout(&s->uv);
  if (timeout < 0)
    return 0;
  if (timeout == 0) {
    asgi_schedule_pump(s);
    return 0;
  }
  PyObject *now_obj = PyObject_CallNoArgs(s->loop_time);
  if (!now_obj)
    return -1;
  double now = PyFloat_AsDouble(now_obj);
  Py_DECREF(now_obj);
  double when = now + timeout / 1000.0;
  if (s->timer && s->timer_when <= when + 0.001 && s->timer_when >= now)
    return 0;
  if (s->timer) {
    PyObject *r = PyObject_CallMethodNoArgs(s->timer, S.cancel);
    Py_XDECREF(r);
    Py_CLEAR(s->timer);
  }
  PyObject *delay = PyFloat_FromDouble(timeout / 1000.0);
  if (!delay)
    return -1;
  s->timer = PyObject_CallFunctionObjArgs(s->call_later, delay, s->pump, NULL);
  Py_DECREF(delay);
  if (!s->timer)
    return -1;
  s->timer_when = when;
  return 0;
}

static PyObject *server_pump(ServerObject *s, PyObject *noargs) {
  (void)noargs;
  s->pump_scheduled = 0;
  if (s->closed)
    Py_RETURN_NONE;
  s->in_pump = 1;
  uv_run(&s->uv, UV_RUN_NOWAIT);
  s->in_pump = 0;
  if (PyErr_Occurred())
    asgi_log_current_exception(s, "error in the HTTP server");
  run_eager_queue(s);
  access_log_flush(s);
  if (server_arm_timer(s) != 0)
    return NULL;
  Py_RETURN_NONE;
}

/* ---- Server type ------------------------------------------------------------------- */

static int dict_int(PyObject *opts, const char *key, long dflt, long *out) {
  PyObject *v = PyDict_GetItemString(opts, key);
  if (!v) {
    *out = dflt;
    return 0;
  }
  *out = PyLong_AsLong(v);
  return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int dict_double(PyObject *opts, const char *key, double dflt, double *out) {
  PyObject *v = PyDict_GetItemString(opts, key);
  if (!v) {
    *out = dflt;
    return 0;
  }
  *out = PyFloat_AsDouble(v);
  return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int parse_trusted(ServerObject *s, const char *ips) {
  for (const char *p = ips; *p;) {
    size_t n = strcspn(p, ",");
    const char *h = p;
    size_t hn = n;
    trim(&h, &hn);
    if (hn == 1 && *h == '*') {
      s->trust_all_proxies = 1;
    } else if (hn) {
      char **t = PyMem_Realloc(s->trusted, (s->ntrusted + 1) * sizeof(*t));
      if (!t)
        return -1;
      s->trusted = t;
      if (!(t[s->ntrusted] = PyMem_Malloc(hn + 1)))
        return -1;
      memcpy(t[s->ntrusted], h, hn);
      t[s->ntrusted++][hn] = '\0';
    }
    p += n + (p[n] == ',');
  }
  return 0;
}

/* --header "Name: value" entries into http_header structs. */
static int parse_default_headers(ServerObject *s, PyObject *list) {
  if (!list)
    return 0;
  PyObject *seq = PySequence_Fast(list, "headers must be a list");
  if (!seq)
    return -1;
  s->default_header_refs = seq;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  s->default_headers = PyMem_Calloc((size_t)n + 1, sizeof(http_header));
  if (!s->default_headers)
    return -1;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
    Py_ssize_t len;
    const char *h = PyUnicode_AsUTF8AndSize(item, &len);
    if (!h)
      return -1;
    const char *colon = memchr(h, ':', (size_t)len);
    if (!colon) {
      PyErr_Format(PyExc_ValueError, "--header %R is not NAME:VALUE", item);
      return -1;
    }
    const char *v = colon + 1;
    size_t vn = (size_t)(h + len - v);
    trim(&v, &vn);
    s->default_headers[i] = (http_header){h, (size_t)(colon - h), v, vn};
  }
  s->n_default_headers = (size_t)n;
  return 0;
}

/* asyncio.Task, with Runner registered as a collections.abc.Coroutine so
 * that Task accepts it. */
static PyObject *runner_task_type(void) {
  PyObject *abc = PyImport_ImportModule("collections.abc");
  PyObject *coroutine = abc ? PyObject_GetAttrString(abc, "Coroutine") : NULL;
  Py_XDECREF(abc);
  PyObject *reg = coroutine ? PyObject_CallMethod(coroutine, "register", "O", &RunnerType) : NULL;
  Py_XDECREF(coroutine);
  if (!reg)
    return NULL;
  Py_DECREF(reg);
  PyObject *asyncio = PyImport_ImportModule("asyncio");
  PyObject *task = asyncio ? PyObject_GetAttrString(asyncio, "Task") : NULL;
  Py_XDECREF(asyncio);
  return task;
}

/* What the eager first steps need from _asyncio and asyncio. */
static int asyncio_hooks(ServerObject *s) {
  PyObject *mod = PyImport_ImportModule("_asyncio");
  if (!mod)
    return -1;
  s->current_tasks = PyObject_GetAttrString(mod, "_current_tasks");
  Py_DECREF(mod);
  if (!s->current_tasks)
    return -1;
  if (!PyDict_Check(s->current_tasks)) {
    PyErr_SetString(PyExc_TypeError, "_asyncio._current_tasks is not a dict");
    return -1;
  }
  if (!(mod = PyImport_ImportModule("asyncio")))
    return -1;
  s->cancelled_error = PyObject_GetAttrString(mod, "CancelledError");
  Py_DECREF(mod);
  return s->cancelled_error ? 0 : -1;
}

static const http_callbacks server_callbacks = {
    .on_request = on_request,
    .on_body = on_body,
    .on_body_end = on_body_end,
    .on_disconnect = on_disconnect,
    .on_drain = on_drain,
    .on_request_done = on_request_done,
    .on_max_requests = on_max_requests,
    .on_log = on_log,
};

static int server_init(ServerObject *s, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"app", "loop", "options", "state", NULL};
  PyObject *app, *loop, *opts, *state = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!|O:Server", kwlist, &app, &loop, &PyDict_Type,
                                   &opts, &state))
    return -1;
  if (s->http || s->uv_ready) {
    PyErr_SetString(PyExc_RuntimeError, "Server.__init__ called twice");
    return -1;
  }
  if (strings_init() != 0)
    return -1;
  s->app = Py_NewRef(app);
  s->loop = Py_NewRef(loop);
  s->state = state == Py_None ? NULL : Py_NewRef(state);
  if (!(s->runtime = PyImport_ImportModule("_appbin_runtime")) ||
      !(s->create_future = PyObject_GetAttr(loop, S.create_future)) ||
      !(s->task_type = runner_task_type()) || !(s->loop_kwnames = Py_BuildValue("(s)", "loop")) ||
      !(s->eager_task_type = request_task_type(s->task_type)) || asyncio_hooks(s) != 0 ||
      !(s->call_soon = PyObject_GetAttr(loop, S.call_soon)) ||
      !(s->call_later = PyObject_GetAttr(loop, S.call_later)) ||
      !(s->loop_time = PyObject_GetAttr(loop, S.time)) ||
      !(s->pump = PyObject_GetAttrString((PyObject *)s, "_pump")))
    return -1;

  PyObject *root = PyDict_GetItemString(opts, "root_path");
  s->root_path = root ? Py_NewRef(root) : PyUnicode_FromString("");
  if (!s->root_path || !PyUnicode_Check(s->root_path) ||
      !(s->root_path_bytes = PyUnicode_AsUTF8String(s->root_path)))
    return -1;

  long log_level, access_log, proxy_headers, max_head, concurrency, max_requests, backlog,
      server_header, date_header;
  double keep_alive, header_timeout;
  if (dict_int(opts, "log_level", LOG_INFO, &log_level) ||
      dict_int(opts, "access_log", 1, &access_log) ||
      dict_int(opts, "proxy_headers", 1, &proxy_headers) ||
      dict_int(opts, "h11_max_incomplete_event_size", 16384, &max_head) ||
      dict_int(opts, "limit_concurrency", 0, &concurrency) ||
      dict_int(opts, "limit_max_requests", 0, &max_requests) ||
      dict_int(opts, "backlog", 2048, &backlog) ||
      dict_int(opts, "server_header", 1, &server_header) ||
      dict_int(opts, "date_header", 1, &date_header) ||
      dict_double(opts, "timeout_keep_alive", 5, &keep_alive) ||
      dict_double(opts, "timeout_request_header", 10, &header_timeout))
    return -1;
  s->log_level = (int)log_level;
  s->access_log = (int)access_log;
  s->proxy_headers = (int)proxy_headers;
  long ws_deflate;
  if (dict_int(opts, "ws_max_size", 16 * 1024 * 1024, &s->ws_max_size) ||
      dict_int(opts, "ws_max_queue", 32, &s->ws_max_queue) ||
      dict_int(opts, "ws_per_message_deflate", 1, &ws_deflate) ||
      dict_double(opts, "ws_ping_interval", 20, &s->ws_ping_interval) ||
      dict_double(opts, "ws_ping_timeout", 20, &s->ws_ping_timeout))
    return -1;
  s->ws_per_message_deflate = ws_deflate != 0;
  if (s->ws_max_queue < 1)
    s->ws_max_queue = 1;
  PyObject *ws = PyDict_GetItemString(opts, "ws");
  const char *ws_s = ws ? PyUnicode_AsUTF8(ws) : "auto";
  if (!ws_s)
    return -1;
  s->ws_enabled = strcmp(ws_s, "none") != 0;
  PyObject *allow = PyDict_GetItemString(opts, "forwarded_allow_ips");
  const char *allow_s = allow ? PyUnicode_AsUTF8(allow) : "127.0.0.1";
  if (!allow_s || parse_trusted(s, allow_s) != 0 ||
      parse_default_headers(s, PyDict_GetItemString(opts, "headers")) != 0)
    return -1;
  s->access_cap = ACCESS_LOG_FLUSH;
  if (!(s->access_buf = PyMem_Malloc(s->access_cap)))
    return -1;

  if (uv_loop_init(&s->uv) != 0) {
    PyErr_SetString(PyExc_OSError, "cannot create the libuv loop");
    return -1;
  }
  s->uv_ready = 1;
  http_config cfg;
  http_config_init(&cfg);
  cfg.max_head_size = (size_t)max_head;
  cfg.keep_alive_timeout_ms = (uint64_t)(keep_alive * 1000);
  cfg.header_timeout_ms = (uint64_t)(header_timeout * 1000);
  cfg.server_header = server_header != 0;
  cfg.date_header = date_header != 0;
  cfg.limit_concurrency = (size_t)concurrency;
  cfg.limit_max_requests = (uint64_t)max_requests;
  cfg.backlog = (int)backlog;
  cfg.default_headers = s->default_headers;
  cfg.n_default_headers = s->n_default_headers;
  s->http = http_server_new(&s->uv, &cfg, &server_callbacks, s);
  if (!s->http) {
    PyErr_SetString(PyExc_ValueError, "invalid HTTP server configuration");
    return -1;
  }
  return 0;
}

static PyObject *listen_error(int rc, const char *where) {
  return PyErr_Format(PyExc_OSError, "cannot listen on %s: %s", where,
                      rc < -20000 ? http_strerror(rc) : uv_strerror(rc));
}

static PyObject *server_listen_tcp(ServerObject *s, PyObject *args) {
  const char *host;
  int port, reuse_port = 0;
  if (!PyArg_ParseTuple(args, "si|p:listen_tcp", &host, &port, &reuse_port))
    return NULL;
  int rc = http_server_listen_tcp(s->http, host, port, reuse_port);
  if (rc != 0) {
    char where[300];
    snprintf(where, sizeof(where), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    return listen_error(rc, where);
  }
  return PyLong_FromLong(http_server_port(s->http));
}

static PyObject *server_listen_unix(ServerObject *s, PyObject *arg) {
  const char *path = PyUnicode_AsUTF8(arg);
  if (!path)
    return NULL;
  int rc = http_server_listen_unix(s->http, path);
  return rc ? listen_error(rc, path) : Py_NewRef(Py_None);
}

static PyObject *server_listen_fd(ServerObject *s, PyObject *arg) {
  int fd = PyLong_AsLong(arg);
  if (fd == -1 && PyErr_Occurred())
    return NULL;
  int rc = http_server_listen_fd(s->http, fd);
  if (rc) {
    char where[32];
    snprintf(where, sizeof(where), "fd %d", fd);
    return listen_error(rc, where);
  }
  return Py_NewRef(Py_None);
}

static PyObject *server_start(ServerObject *s, PyObject *noargs) {
  (void)noargs;
  PyObject *fd = PyLong_FromLong(uv_backend_fd(&s->uv));
  if (!fd)
    return NULL;
  PyObject *r = PyObject_CallMethodObjArgs(s->loop, S.add_reader, fd, s->pump, NULL);
  Py_DECREF(fd);
  if (!r)
    return NULL;
  Py_DECREF(r);
  s->reader_added = 1;
  asgi_schedule_pump(s);
  Py_RETURN_NONE;
}

static void server_on_closed(http_server *srv) {
  ServerObject *s = http_server_user(srv);
  if (s->closed_future)
    asgi_resolve(&s->closed_future, Py_None, NULL, NULL);
}

static PyObject *server_shutdown(ServerObject *s, PyObject *noargs) {
  (void)noargs;
  PyObject *fut = PyObject_CallNoArgs(s->create_future);
  if (!fut)
    return NULL;
  Py_XSETREF(s->closed_future, Py_NewRef(fut));
  http_server_shutdown(s->http, server_on_closed);
  asgi_schedule_pump(s);
  return fut;
}

static PyObject *server_abort(ServerObject *s, PyObject *noargs) {
  (void)noargs;
  http_server_abort(s->http);
  asgi_schedule_pump(s);
  Py_RETURN_NONE;
}

static void server_release(ServerObject *s) {
  if (s->reader_added && s->loop) {
    PyObject *fd = PyLong_FromLong(uv_backend_fd(&s->uv));
    PyObject *r = fd ? PyObject_CallMethodOneArg(s->loop, S.remove_reader, fd) : NULL;
    if (!r)
      PyErr_Clear();
    Py_XDECREF(r);
    Py_XDECREF(fd);
    s->reader_added = 0;
  }
  if (s->timer) {
    PyObject *r = PyObject_CallMethodNoArgs(s->timer, S.cancel);
    if (!r)
      PyErr_Clear();
    Py_XDECREF(r);
    Py_CLEAR(s->timer);
  }
  s->closed = 1;
}

/* Stops everything and frees the libuv loop; the server is unusable after. */
static PyObject *server_close(ServerObject *s, PyObject *noargs) {
  (void)noargs;
  if (s->closed)
    Py_RETURN_NONE;
  server_release(s);
  if (s->http) {
    http_server_abort(s->http);
    /* Run the loop until every handle's close callback ran. */
    for (int i = 0; i < 1000 && uv_run(&s->uv, UV_RUN_NOWAIT) != 0; i++)
      ;
    http_server_free(s->http);
    s->http = NULL;
  }
  access_log_flush(s);
  if (s->uv_ready && uv_loop_close(&s->uv) == 0)
    s->uv_ready = 0;
  Py_RETURN_NONE;
}

static PyObject *server_stats(ServerObject *s, PyObject *noargs) {
  (void)noargs;
  if (!s->http)
    return PyDict_New();
  return Py_BuildValue("{sksksK}", "connections", (unsigned long)http_server_connections(s->http),
                       "active_requests", (unsigned long)http_server_active_requests(s->http),
                       "total_requests", (unsigned long long)http_server_total_requests(s->http));
}

static int server_traverse(ServerObject *s, visitproc visit, void *arg) {
  Py_VISIT(s->app);
  Py_VISIT(s->loop);
  Py_VISIT(s->state);
  Py_VISIT(s->pump);
  Py_VISIT(s->timer);
  Py_VISIT(s->closed_future);
  Py_VISIT(s->on_max_requests);
  Py_VISIT(s->create_future);
  Py_VISIT(s->task_type);
  Py_VISIT(s->eager_task_type);
  Py_VISIT(s->current_tasks);
  Py_VISIT(s->scope_template[0]);
  Py_VISIT(s->scope_template[1]);
  Py_VISIT(s->scope_asgi);
  Py_VISIT(s->cancelled_error);
  Py_VISIT(s->call_soon);
  Py_VISIT(s->call_later);
  Py_VISIT(s->loop_time);
  return 0;
}

static int server_clear(ServerObject *s) {
  Py_CLEAR(s->app);
  Py_CLEAR(s->state);
  Py_CLEAR(s->pump);
  Py_CLEAR(s->timer);
  Py_CLEAR(s->closed_future);
  Py_CLEAR(s->on_max_requests);
  Py_CLEAR(s->create_future);
  Py_CLEAR(s->task_type);
  Py_CLEAR(s->eager_task_type);
  Py_CLEAR(s->current_tasks);
  Py_CLEAR(s->scope_template[0]);
  Py_CLEAR(s->scope_template[1]);
  Py_CLEAR(s->scope_asgi);
  Py_CLEAR(s->cancelled_error);
  while (s->eager_head) { /* never left queued; for safety */
    RunnerObject *runner = (RunnerObject *)s->eager_head;
    s->eager_head = (PyObject *)runner->next;
    runner->next = NULL;
    Py_DECREF(runner);
  }
  s->eager_tail = NULL;
  Py_CLEAR(s->loop_kwnames);
  Py_CLEAR(s->call_soon);
  Py_CLEAR(s->call_later);
  Py_CLEAR(s->loop_time);
  Py_CLEAR(s->loop);
  return 0;
}

static void server_dealloc(ServerObject *s) {
  PyObject_GC_UnTrack(s);
  if (s->http && !s->closed) {
    PyObject *r = server_close(s, NULL);
    Py_XDECREF(r);
  }
  server_clear(s);
  Py_XDECREF(s->runtime);
  Py_XDECREF(s->root_path);
  Py_XDECREF(s->root_path_bytes);
  Py_XDECREF(s->default_header_refs);
  Py_XDECREF(s->server_addr);
  PyMem_Free(s->default_headers);
  for (size_t i = 0; i < s->ntrusted; i++)
    PyMem_Free(s->trusted[i]);
  PyMem_Free(s->trusted);
  PyMem_Free(s->access_buf);
  Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *server_get_port(ServerObject *s, void *closure) {
  (void)closure;
  return PyLong_FromLong(s->http ? http_server_port(s->http) : -1);
}

static PyObject *server_get_on_max(ServerObject *s, void *closure) {
  (void)closure;
  return Py_NewRef(s->on_max_requests ? s->on_max_requests : Py_None);
}

static int server_set_on_max(ServerObject *s, PyObject *v, void *closure) {
  (void)closure;
  Py_XSETREF(s->on_max_requests, Py_XNewRef(v));
  return 0;
}

static PyMethodDef server_methods[] = {
    {"listen_tcp", (PyCFunction)server_listen_tcp, METH_VARARGS,
     "listen_tcp($self, host, port, reuse_port=False, /)\n--\n\nBind and listen; returns the "
     "port."},
    {"listen_unix", (PyCFunction)server_listen_unix, METH_O,
     "listen_unix($self, path, /)\n--\n\nListen on a Unix domain socket."},
    {"listen_fd", (PyCFunction)server_listen_fd, METH_O,
     "listen_fd($self, fd, /)\n--\n\nServe on an inherited listening socket."},
    {"start", (PyCFunction)server_start, METH_NOARGS,
     "start($self, /)\n--\n\nAttach to the asyncio loop and start accepting."},
    {"shutdown", (PyCFunction)server_shutdown, METH_NOARGS,
     "shutdown($self, /)\n--\n\nStop accepting; a future done when all connections closed."},
    {"abort", (PyCFunction)server_abort, METH_NOARGS,
     "abort($self, /)\n--\n\nClose every connection now."},
    {"close", (PyCFunction)server_close, METH_NOARGS,
     "close($self, /)\n--\n\nDetach from the loop and free the server."},
    {"stats", (PyCFunction)server_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nConnection and request counters."},
    {"_pump", (PyCFunction)server_pump, METH_NOARGS,
     "_pump($self, /)\n--\n\nRun libuv once without blocking."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef server_getset[] = {
    {"port", (getter)server_get_port, NULL, "The bound TCP port, or -1.", NULL},
    {"on_max_requests", (getter)server_get_on_max, (setter)server_set_on_max,
     "Called when --limit-max-requests is reached.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_appbin.Server",
    .tp_basicsize = sizeof(ServerObject),
    .tp_dealloc = (destructor)server_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)server_traverse,
    .tp_clear = (inquiry)server_clear,
    .tp_methods = server_methods,
    .tp_getset = server_getset,
    .tp_init = (initproc)server_init,
    .tp_new = PyType_GenericNew,
    .tp_doc = PyDoc_STR("Server(app, loop, options, state=None)\n--\n\n"
                        "The HTTP/1.1 server (libuv + llhttp) serving an ASGI app."),
};

int asgi_add_types(PyObject *module) {
  if (PyType_Ready(&ReadyType) < 0 || PyType_Ready(&RequestType) < 0 ||
      PyType_Ready(&RunnerType) < 0 || PyType_Ready(&ServerType) < 0)
    return -1;
  if (!asgi_ClientDisconnected) {
    asgi_ClientDisconnected = PyErr_NewExceptionWithDoc(
        "_appbin.ClientDisconnected",
        "send() was called after the client closed the connection (ASGI spec 2.4).", PyExc_OSError,
        NULL);
    if (!asgi_ClientDisconnected)
      return -1;
  }
  if (PyModule_AddObjectRef(module, "Server", (PyObject *)&ServerType) < 0 ||
      PyModule_AddObjectRef(module, "ClientDisconnected", asgi_ClientDisconnected) < 0)
    return -1;
  return asgi_ws_init(module);
}
