#include "serve.h"

#include "http_tls.h"

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MIN_NOFILE 64 /* open files a server needs to start, with some connections */

static const char *const lifespan_names[] = {"auto", "on", "off"};

static int put(PyObject *d, const char *key, PyObject *value) {
  if (!value)
    return -1;
  int rc = PyDict_SetItemString(d, key, value);
  Py_DECREF(value);
  return rc;
}

/* --limit-max-requests plus this process's draw from 0..--limit-max-requests-
 * jitter (uvicorn 0.41+: workers do not all restart at once). */
static long max_requests(const cli_options *o) {
  if (o->limit_max_requests <= 0 || o->limit_max_requests_jitter <= 0)
    return o->limit_max_requests;
  uint64_t r;
  if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
    r = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
  long draw = (long)(r % ((uint64_t)o->limit_max_requests_jitter + 1));
  return o->limit_max_requests > LONG_MAX - draw ? LONG_MAX : o->limit_max_requests + draw;
}

static PyObject *str_or_none(const char *s) {
  return s ? PyUnicode_FromString(s) : Py_NewRef(Py_None);
}

/* The options as the runtime's serve() and _appbin.Server read them. */
static PyObject *options_dict(const cli_options *o) {
  PyObject *d = PyDict_New();
  if (!d)
    return NULL;
  PyObject *headers = PyList_New(o->nheaders);
  for (int i = 0; headers && i < o->nheaders; i++) {
    PyObject *h = PyUnicode_FromString(o->headers[i]);
    if (!h) {
      Py_CLEAR(headers);
      break;
    }
    PyList_SET_ITEM(headers, i, h);
  }
  if (put(d, "app", str_or_none(o->app)) || put(d, "factory", PyBool_FromLong(o->factory)) ||
      put(d, "host", PyUnicode_FromString(o->host)) || put(d, "port", PyLong_FromLong(o->port)) ||
      put(d, "uds", str_or_none(o->uds)) || put(d, "fd", PyLong_FromLong(o->fd)) ||
      put(d, "backlog", PyLong_FromLong(o->backlog)) ||
      put(d, "workers", PyLong_FromLong(o->workers)) ||
      put(d, "root_path", PyUnicode_FromString(o->root_path)) ||
      put(d, "proxy_headers", PyLong_FromLong(o->proxy_headers)) ||
      put(d, "forwarded_allow_ips", PyUnicode_FromString(o->forwarded_allow_ips)) ||
      put(d, "server_header", PyLong_FromLong(o->server_header)) ||
      put(d, "date_header", PyLong_FromLong(o->date_header)) || put(d, "headers", headers) ||
      put(d, "h11_max_incomplete_event_size", PyLong_FromLong(o->h11_max_incomplete_event_size)) ||
      put(d, "timeout_keep_alive", PyFloat_FromDouble(o->timeout_keep_alive)) ||
      put(d, "timeout_request_header", PyFloat_FromDouble(o->timeout_request_header)) ||
      put(d, "timeout_graceful_shutdown", PyFloat_FromDouble(o->timeout_graceful_shutdown)) ||
      put(d, "limit_concurrency", PyLong_FromLong(o->limit_concurrency)) ||
      put(d, "limit_max_requests", PyLong_FromLong(max_requests(o))) ||
      put(d, "lifespan", PyUnicode_FromString(lifespan_names[o->lifespan])) ||
      put(d, "log_level", PyLong_FromLong(o->log_level)) ||
      put(d, "access_log", PyLong_FromLong(o->access_log)) ||
      put(d, "ws", PyUnicode_FromString(o->ws)) ||
      put(d, "ws_max_size", PyLong_FromLong(o->ws_max_size)) ||
      put(d, "ws_max_queue", PyLong_FromLong(o->ws_max_queue)) ||
      put(d, "ws_ping_interval", PyFloat_FromDouble(o->ws_ping_interval)) ||
      put(d, "ws_ping_timeout", PyFloat_FromDouble(o->ws_ping_timeout)) ||
      put(d, "ws_per_message_deflate", PyLong_FromLong(o->ws_per_message_deflate)) ||
      /* logging (the runtime's configure_logging) */
      put(d, "log_config", str_or_none(o->log_config)) ||
      put(d, "log_level_set", PyLong_FromLong(o->log_level_set)) ||
      put(d, "use_colors", PyLong_FromLong(o->use_colors)) ||
      put(d, "log_format", PyUnicode_FromString(cli_log_format_name(o->log_format))) ||
      put(d, "request_id_header", PyUnicode_FromString(o->request_id_header)) ||
      /* TLS (_appbin.Server) */
      put(d, "ssl_certfile", str_or_none(o->ssl_certfile)) ||
      put(d, "ssl_keyfile", str_or_none(o->ssl_keyfile)) ||
      put(d, "ssl_keyfile_password", str_or_none(o->ssl_keyfile_password)) ||
      put(d, "ssl_ca_certs", str_or_none(o->ssl_ca_certs)) ||
      put(d, "ssl_cert_reqs", PyLong_FromLong(o->ssl_cert_reqs)) ||
      put(d, "ssl_ciphers", str_or_none(o->ssl_ciphers))) {
    Py_DECREF(d);
    return NULL;
  }
  return d;
}

int serve_check_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
      rl.rlim_cur >= MIN_NOFILE)
    return 0;
  fprintf(stderr,
          "app.bin: error: too few file descriptors: the open-file limit (RLIMIT_NOFILE) is "
          "%llu, a server needs at least %d (raise it: ulimit -n, systemd LimitNOFILE=, "
          "docker run --ulimit nofile=)\n",
          (unsigned long long)rl.rlim_cur, MIN_NOFILE);
  return -1;
}

int serve_check_tls(const cli_options *o) {
  if (!o->ssl_certfile)
    return 0;
  http_tls_config cfg = {o->ssl_certfile, o->ssl_keyfile, o->ssl_keyfile_password,
                         o->ssl_ca_certs, o->ssl_ciphers, o->ssl_cert_reqs};
  char err[512];
  http_tls_ctx *ctx = http_tls_ctx_new(&cfg, err, sizeof(err));
  if (!ctx) {
    fprintf(stderr, "app.bin: error: %s\n", err);
    return -1;
  }
  http_tls_ctx_free(ctx);
  return 0;
}

int serve_run(const cli_options *opts) {
  if (serve_check_fd_limit() != 0 || serve_check_tls(opts) != 0)
    return 1;
  if (!opts->app) {
    fprintf(stderr, "app.bin: error: no application: pack with --app MODULE:ATTR or pass --app\n");
    return 1;
  }
  PyObject *options = options_dict(opts);
  PyObject *rt = options ? PyImport_ImportModule("_appbin_runtime") : NULL;
  PyObject *status = rt ? PyObject_CallMethod(rt, "serve", "O", options) : NULL;
  Py_XDECREF(rt);
  Py_XDECREF(options);
  if (!status) {
    if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
      /* sys.exit() from the app: the interpreter's own handling exits. */
      PyErr_Print();
      return 1;
    }
    PyErr_Print();
    fprintf(stderr, "app.bin: error: the server stopped on an unexpected error\n");
    return 1;
  }
  long rc = PyLong_AsLong(status);
  Py_DECREF(status);
  if (rc == -1 && PyErr_Occurred()) {
    PyErr_Print();
    return 1;
  }
  return (int)rc;
}
