/* asgi_http: one HTTP request in flight: the HTTP layer's callbacks, the
 * Request object behind the app's receive and send, and finishing a request
 * (a 500 when the application fails before or while answering). */
#include "asgi_internal.h"

#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define BODY_HIGH_WATER (256 * 1024) /* pause reading a body buffered beyond this */
#define MAX_RESPONSE_HEADERS 128

/* Interned strings, created once. */
static struct {
  PyObject *type, *client, *path, *headers, *body, *more_body, *status, *file, *offset, *count,
      *http_request, *http_disconnect, *response_start, *response_body, *response_pathsend,
      *response_zerocopysend, *done, *empty_bytes;
} S;

static int strings_init(void) {
  static const asgi_intern_entry table[] = {
      {&S.type, "type"},
      {&S.client, "client"},
      {&S.path, "path"},
      {&S.headers, "headers"},
      {&S.body, "body"},
      {&S.more_body, "more_body"},
      {&S.status, "status"},
      {&S.file, "file"},
      {&S.offset, "offset"},
      {&S.count, "count"},
      {&S.http_request, "http.request"},
      {&S.http_disconnect, "http.disconnect"},
      {&S.response_start, "http.response.start"},
      {&S.response_body, "http.response.body"},
      {&S.response_pathsend, "http.response.pathsend"},
      {&S.response_zerocopysend, "http.response.zerocopysend"},
      {&S.done, "done"},
  };
  if (ASGI_INTERN(table) != 0)
    return -1;
  if (!S.empty_bytes && !(S.empty_bytes = PyBytes_FromStringAndSize("", 0)))
    return -1;
  return 0;
}

typedef struct {
  PyObject_HEAD ServerObject *server;
  http_request *req; /* NULL after the terminal call */
  PyObject *chunks;  /* list of bytes not yet received by the app */
  Py_ssize_t buffered;
  PyObject *receive_waiter, *send_waiter;
  int status;
  unsigned started : 1, complete : 1, body_done : 1, body_sent : 1, disconnected : 1, paused : 1,
      resumed : 1, head : 1;
  char log_client[ASGI_LOG_CLIENT_MAX]; /* for the access log (asgi_log.c) */
} RequestObject;

static PyTypeObject RequestType;

/* ---- waking the application -------------------------------------------------- */

static PyObject *disconnect_message(void) {
  PyObject *msg = appbin_dict_presized(1);
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
    body = appbin_bytes_join(S.empty_bytes, r->chunks);
  if (!body || (n && PyList_SetSlice(r->chunks, 0, n, NULL) != 0)) {
    Py_XDECREF(body);
    return NULL;
  }
  r->buffered = 0;
  /* Whether this message ends the body is decided now: resuming may parse
   * more of it at once (the rest of the read buffer, or TLS's decrypted
   * input), and what it buffers, up to the end, goes in the next message. */
  int last = r->body_done;
  if (last)
    r->body_sent = 1;
  if (r->paused && r->req && !last) {
    r->paused = 0;
    http_request_body_resume(r->req);
    asgi_schedule_pump(r->server);
  }
  PyObject *msg = appbin_dict_presized(3);
  if (msg && (PyDict_SetItem(msg, S.type, S.http_request) || PyDict_SetItem(msg, S.body, body) ||
              PyDict_SetItem(msg, S.more_body, last ? Py_False : Py_True)))
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
static void request_finish(PyObject *owner, PyObject *exc, int cancelled);

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
  r->log_client[0] = '\0';
  if (scope && s->access_log)
    asgi_log_client(r->log_client, req, PyDict_GetItemWithError(scope, S.client));
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
  assert(r->req == req && Py_REFCNT(r) >= 1);
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

/* The access log and the metrics (asgi_log.c): the layer calls this for
 * every response, right before on_request_done. */
static void on_response_done(http_server *srv, const http_request *req, int status,
                             uint64_t body_bytes, bool complete) {
  RequestObject *r = req ? request_of((http_request *)req) : NULL;
  asgi_log_response(http_server_user(srv), req, r && r->log_client[0] ? r->log_client : NULL,
                    status, body_bytes, complete);
}

static void on_log(http_server *srv, int level, const char *msg) {
  static const int map[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR};
  asgi_log(http_server_user(srv), map[level < 0 ? 0 : level > 3 ? 3 : level], "%s", msg);
}

/* ---- finishing ------------------------------------------------------------------ */

/* Ownership: the layer holds one reference to a request from on_request to
 * on_request_done, which runs inside the terminal call (the response's last
 * write, http_response_abort). Whoever makes that call must hold a reference
 * of its own (send()'s bound self, the Runner's owner, or a local one), else
 * the object is freed under it. */
#define ASSERT_CALLER_HOLDS(r) assert(!(r)->req || Py_REFCNT(r) >= 2)

static void finish_with_500(RequestObject *r) {
  if (!r->req)
    return;
  ServerObject *s = r->server;
  Py_INCREF(r); /* on_request calls this holding only the layer's reference */
  if (r->started && http_response_retract(r->req) == 0)
    r->started = 0; /* nothing of the response left yet: a 500 replaces it */
  if (r->started) {
    http_response_abort(r->req);
  } else {
    static const char body[] = "Internal Server Error";
    http_header h[] = {{"content-type", 12, "text/plain; charset=utf-8", 25},
                       {"connection", 10, "close", 5}};
    r->status = 500;
    r->started = 1;
    if (!r->disconnected && http_response_start(r->req, 500, h, 2) == 0) {
      http_response_write(r->req, body, sizeof(body) - 1, false);
    } else {
      http_response_abort(r->req);
    }
  }
  assert(!r->req); /* the terminal call ran on_request_done */
  asgi_schedule_pump(s);
  Py_DECREF(r);
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
  ASSERT_CALLER_HOLDS(r);
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
  ASSERT_CALLER_HOLDS(r);
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
  ASSERT_CALLER_HOLDS(r);
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

const http_callbacks asgi_http_callbacks = {
    .on_request = on_request,
    .on_body = on_body,
    .on_body_end = on_body_end,
    .on_disconnect = on_disconnect,
    .on_drain = on_drain,
    .on_request_done = on_request_done,
    .on_max_requests = on_max_requests,
    .on_log = on_log,
    .on_response_done = on_response_done,
};

int asgi_http_init(void) {
  if (strings_init() != 0 || PyType_Ready(&RequestType) < 0)
    return -1;
  return 0;
}
