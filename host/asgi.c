/* asgi: the _appbin.Server type (options, listening, shutdown, teardown), the
 * pump that runs libuv from the asyncio loop, and the module's types. The
 * request side lives in asgi_http.c, the scope in asgi_scope.c, the app's
 * task in asgi_task.c, logging in asgi_log.c, WebSockets in asgi_ws.c. */
#include "asgi.h"

#include "applog.h"
#include "asgi_internal.h"
#include "http.h"
#include "metrics.h"
#include "worker_board.h"

#include <assert.h>
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define ACCESS_LOG_FLUSH 16384

PyObject *asgi_ClientDisconnected;

/* Interned strings, created once. */
static struct {
  PyObject *create_future, *call_soon, *call_later, *time, *add_reader, *remove_reader, *cancel;
} S;

static int strings_init(void) {
  static const asgi_intern_entry table[] = {
      {&S.create_future, "create_future"},
      {&S.call_soon, "call_soon"},
      {&S.call_later, "call_later"},
      {&S.time, "time"},
      {&S.add_reader, "add_reader"},
      {&S.remove_reader, "remove_reader"},
      {&S.cancel, "cancel"},
  };
  return ASGI_INTERN(table);
}

/* ---- the libuv <-> asyncio pump ------------------------------------------------- */

void asgi_schedule_pump(ServerObject *s) {
  if (s->pump_scheduled || s->closed)
    return;
  PyObject *args[2] = {s->pump, s->context};
  PyObject *h = PyObject_Vectorcall(s->call_soon, args, 1, s->context_kwnames);
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
  PyObject *args[3] = {delay, s->pump, s->context};
  s->timer = PyObject_Vectorcall(s->call_later, args, 2, s->context_kwnames);
  Py_DECREF(delay);
  if (!s->timer)
    return -1;
  s->timer_when = when;
  return 0;
}

/* The metrics' gauges, once per pump rather than per event. */
static void server_sync_gauges(ServerObject *s) {
  if (metrics_self && s->http)
    metrics_set_gauges(http_server_connections(s->http), http_server_active_requests(s->http),
                       http_server_streams(s->http));
}

static PyObject *server_pump(ServerObject *s, PyObject *noargs) {
  (void)noargs;
  s->pump_scheduled = 0;
  if (s->closed)
    Py_RETURN_NONE;
  s->in_pump = 1;
  uv_run(&s->uv, UV_RUN_NOWAIT);
  s->in_pump = 0;
  server_sync_gauges(s); /* before the app's steps, which may block */
  if (PyErr_Occurred())
    asgi_log_current_exception(s, "error in the HTTP server");
  asgi_task_run_eager(s);
  server_sync_gauges(s);
  asgi_log_flush(s);
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
  char err[160];
  if (ipallow_parse(&s->trusted, ips, err, sizeof(err)) != 0) {
    PyErr_Format(PyExc_ValueError, "--forwarded-allow-ips: %s", err);
    return -1;
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
    asgi_trim(&v, &vn);
    s->default_headers[i] = (http_header){h, (size_t)(colon - h), v, vn};
  }
  s->n_default_headers = (size_t)n;
  return 0;
}

/* A str option, NULL when None or absent; -1 with an exception. */
static int dict_str(PyObject *opts, const char *key, const char **out) {
  PyObject *v = PyDict_GetItemString(opts, key);
  *out = NULL;
  if (!v || v == Py_None)
    return 0;
  *out = PyUnicode_AsUTF8(v);
  return *out ? 0 : -1;
}

/* The TLS settings of --ssl-certfile and co. (checked by serve_check_tls()
 * already; checked again: the files may have changed since). */
static int server_tls(ServerObject *s, PyObject *opts) {
  http_tls_config cfg = {0};
  long reqs;
  if (dict_str(opts, "ssl_certfile", &cfg.certfile) ||
      dict_str(opts, "ssl_keyfile", &cfg.keyfile) ||
      dict_str(opts, "ssl_keyfile_password", &cfg.password) ||
      dict_str(opts, "ssl_ca_certs", &cfg.ca_certs) ||
      dict_str(opts, "ssl_ciphers", &cfg.ciphers) || dict_int(opts, "ssl_cert_reqs", 0, &reqs))
    return -1;
  if (!cfg.certfile)
    return 0;
  assert(s->tls == NULL); /* server_init() runs once (s->uv_ready) */
  if (reqs < 0 || reqs > 2) {
    PyErr_SetString(PyExc_ValueError, "ssl_cert_reqs must be 0, 1 or 2");
    return -1;
  }
  cfg.cert_reqs = (int)reqs;
  char err[512];
  if (!(s->tls = http_tls_ctx_new(&cfg, err, sizeof(err)))) {
    PyErr_SetString(PyExc_ValueError, err);
    return -1;
  }
  return 0;
}

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
  s->app = Py_NewRef(app);
  s->loop = Py_NewRef(loop);
  s->state = state == Py_None ? NULL : Py_NewRef(state);
  if (!(s->context = PyContext_CopyCurrent()) ||
      !(s->context_kwnames = Py_BuildValue("(s)", "context")) ||
      !(s->runtime = PyImport_ImportModule("_appbin_runtime")) ||
      !(s->create_future = PyObject_GetAttr(loop, S.create_future)) || asgi_task_setup(s) != 0 ||
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
  long log_python;
  if (dict_int(opts, "log_python", 0, &log_python))
    return -1;
  s->log_level = (int)log_level;
  s->log_python = log_python != 0;
  /* Direct lines: the level gates the access log as uvicorn's logger does;
   * through Python, the runtime has decided (the user's logger levels). */
  s->access_log = access_log && (s->log_python || log_level <= LOG_INFO);
  PyObject *rid = PyDict_GetItemString(opts, "request_id_header");
  const char *rid_s = rid ? PyUnicode_AsUTF8(rid) : "x-request-id";
  if (!rid_s)
    return -1;
  if (strlen(rid_s) >= sizeof(s->request_id_header)) {
    PyErr_SetString(PyExc_ValueError, "--request-id-header is too long");
    return -1;
  }
  size_t rid_len = strlen(rid_s);
  for (size_t i = 0; i <= rid_len; i++) /* request header names are lowercase */
    s->request_id_header[i] = (char)tolower((unsigned char)rid_s[i]);
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

  int uv_rc = uv_loop_init(&s->uv);
  if (uv_rc != 0) {
    PyObject *args = Py_BuildValue("(is)", -uv_rc, "cannot create the libuv loop");
    if (args) {
      PyErr_SetObject(PyExc_OSError, args);
      Py_DECREF(args);
    }
    return -1;
  }
  s->uv_ready = 1;
  if (server_tls(s, opts) != 0)
    return -1;
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
  /* request times: for the metrics' histogram and the access log's duration */
  cfg.timing = metrics_self != NULL || (s->access_log && (s->log_python || applog_is_json()));
  cfg.default_headers = s->default_headers;
  cfg.n_default_headers = s->n_default_headers;
  cfg.tls = s->tls;
  s->http = http_server_new(&s->uv, &cfg, &asgi_http_callbacks, s);
  if (!s->http) {
    PyErr_SetString(PyExc_ValueError, "invalid HTTP server configuration");
    return -1;
  }
  return 0;
}

/* OSError(errno, "cannot listen on WHERE: why"). */
static PyObject *listen_error(int rc, const char *where) {
  PyObject *msg = PyUnicode_FromFormat("cannot listen on %s: %s", where,
                                       rc < -20000 ? http_strerror(rc) : uv_strerror(rc));
  if (msg) {
    PyObject *args = Py_BuildValue("(iN)", rc < -20000 ? 0 : -rc, msg);
    if (args) {
      PyErr_SetObject(PyExc_OSError, args);
      Py_DECREF(args);
    }
  }
  return NULL;
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

static void on_beat(uv_timer_t *t) {
  (void)t;
  workers_beat();
}

/* A supervised worker: the supervisor checks that the loop beats, and asks
 * for the Python stacks (SIGUSR2, faulthandler) before it replaces a worker
 * whose loop stays blocked. */
static int start_beating(ServerObject *s) {
  double interval = workers_beat_interval();
  if (interval <= 0)
    return 0;
  PyObject *fh = PyImport_ImportModule("faulthandler");
  PyObject *r = fh ? PyObject_CallMethod(fh, "register", "i", SIGUSR2) : NULL;
  Py_XDECREF(fh);
  if (!r)
    return -1;
  Py_DECREF(r);
  uint64_t ms = (uint64_t)(interval * 1000);
  if (uv_timer_init(&s->uv, &s->beat_timer) != 0 ||
      uv_timer_start(&s->beat_timer, on_beat, ms, ms) != 0) {
    PyErr_SetString(PyExc_OSError, "cannot start the worker's heartbeat timer");
    return -1;
  }
  s->beat_on = 1;
  return 0;
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
  if (!s->beat_on && start_beating(s) != 0)
    return NULL;
  workers_serving();
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
  workers_stopping();
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
  if (s->beat_on) {
    uv_close((uv_handle_t *)&s->beat_timer, NULL);
    s->beat_on = 0;
  }
  if (s->http) {
    http_server_abort(s->http);
    /* Run the loop until every handle's close callback ran. */
    for (int i = 0; i < 1000 && uv_run(&s->uv, UV_RUN_NOWAIT) != 0; i++)
      ;
    http_server_free(s->http);
    s->http = NULL;
  }
  asgi_log_flush(s);
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
  Py_VISIT(s->context);
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
  Py_VISIT(s->access_records);
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
  asgi_task_clear_eager(s); /* never left queued; for safety */
  Py_CLEAR(s->task_kwnames);
  Py_CLEAR(s->context);
  Py_CLEAR(s->context_kwnames);
  Py_CLEAR(s->call_soon);
  Py_CLEAR(s->call_later);
  Py_CLEAR(s->loop_time);
  Py_CLEAR(s->access_records);
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
  ipallow_free(&s->trusted);
  PyMem_Free(s->access_buf);
  http_tls_ctx_free(s->tls);
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
  if (strings_init() != 0 || asgi_log_init() != 0 || asgi_scope_init() != 0 ||
      asgi_task_init() != 0 || asgi_http_init() != 0 || PyType_Ready(&ServerType) < 0)
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
