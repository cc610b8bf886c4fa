/* asgi_scope: the scope dict of an http or websocket request: the per-server
 * template it is copied from, the client and server addresses (after trusted
 * proxy headers), path, headers. */
#include "asgi_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Interned strings, created once. */
static struct {
  PyObject *type, *asgi, *version, *spec_version, *http_version, *server, *client, *scheme, *method,
      *root_path, *path, *raw_path, *query_string, *headers, *state, *extensions, *http, *https,
      *ws, *wss, *websocket, *v1_0, *v1_1, *v3_0, *v2_4, *pathsend_ext, *zerocopysend_ext,
      *ws_http_response_ext;
} S;

static int strings_init(void) {
  static const asgi_intern_entry table[] = {
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
      {&S.http, "http"},
      {&S.https, "https"},
      {&S.ws, "ws"},
      {&S.wss, "wss"},
      {&S.websocket, "websocket"},
      {&S.v1_0, "1.0"},
      {&S.v1_1, "1.1"},
      {&S.v3_0, "3.0"},
      {&S.v2_4, "2.4"},
      {&S.pathsend_ext, "http.response.pathsend"},
      {&S.zerocopysend_ext, "http.response.zerocopysend"},
      {&S.ws_http_response_ext, "websocket.http.response"},
  };
  return ASGI_INTERN(table);
}

int asgi_scope_init(void) { return strings_init(); }

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c |= 0x20;
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static PyObject *pair_new(PyObject *a, PyObject *b);

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

const http_header *asgi_find_header(const http_request *req, const char *name) {
  size_t len = strlen(name);
  for (size_t i = 0; i < req->n_headers; i++)
    if (req->headers[i].name_len == len && memcmp(req->headers[i].name, name, len) == 0)
      return &req->headers[i];
  return NULL;
}

/* One X-Forwarded-For entry: "host", "host:port" (one colon) or
 * "[v6]:port", as uvicorn parses them; anything else is all host, port 0. */
static void forwarded_host_port(const char *v, size_t n, const char **host, size_t *host_len,
                                int *port) {
  *host = v, *host_len = n, *port = 0;
  const char *colon = NULL, *digits_end = v + n;
  if (n && v[0] == '[') {
    const char *close = memchr(v, ']', n);
    if (!close)
      return;
    if (close + 1 != v + n && close[1] != ':')
      return; /* "[x]y": kept whole */
    *host = v + 1, *host_len = (size_t)(close - v - 1);
    if (close + 1 == v + n)
      return;
    colon = close + 1;
  } else {
    const char *first = memchr(v, ':', n);
    if (!first || memchr(first + 1, ':', (size_t)(v + n - first - 1)))
      return; /* no port, or an IPv6 literal */
    colon = first;
  }
  long p = 0;
  const char *d = colon + 1;
  if (d == digits_end || digits_end - d > 9)
    return;
  for (; d < digits_end; d++) {
    if (*d < '0' || *d > '9')
      return;
    p = p * 10 + (*d - '0');
  }
  if (v[0] != '[')
    *host_len = (size_t)(colon - v);
  *port = (int)p;
}

static int is_forwarded_for(const http_header *h) {
  return h->name_len == 15 && memcmp(h->name, "x-forwarded-for", 15) == 0;
}

/* The entry of one X-Forwarded-For value that ends at end (blanks off). */
static const char *entry_before(const char *start, const char *end, size_t *len) {
  const char *p = end;
  while (p > start && p[-1] != ',')
    p--;
  const char *t = p;
  size_t n = (size_t)(end - p);
  asgi_trim(&t, &n);
  *len = n;
  return t;
}

/* scheme and client after trusted X-Forwarded-Proto/For, by uvicorn's rules:
 * the last X-Forwarded-Proto; the client is the right-most X-Forwarded-For
 * address that is not a trusted proxy (the left-most if all are, or with
 * '*'). Values are latin-1, as uvicorn decodes them. A unix socket's peer
 * has no address: only '*' trusts it. */
static int apply_proxy_headers(ServerObject *s, const http_request *req, int websocket,
                               PyObject **scheme, PyObject **client) {
  if (!s->proxy_headers)
    return 0;
  if (req->unix_socket ? !s->trusted.any
                       : !ipallow_match(&s->trusted, req->client_host, strlen(req->client_host)))
    return 0;
  const http_header *proto = NULL;
  for (size_t i = 0; i < req->n_headers; i++)
    if (req->headers[i].name_len == 17 &&
        memcmp(req->headers[i].name, "x-forwarded-proto", 17) == 0)
      proto = &req->headers[i];
  if (proto) {
    const char *v = proto->value;
    size_t n = proto->value_len;
    asgi_trim(&v, &n);
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
  /* Every X-Forwarded-For header makes one list (uvicorn joins them with
   * ", "), walked from its right end. */
  const char *host = NULL, *first = NULL;
  size_t host_len = 0, first_len = 0;
  int port = 0, found = 0;
  for (size_t i = req->n_headers; i-- > 0 && !found;) {
    const http_header *h = &req->headers[i];
    if (!is_forwarded_for(h))
      continue;
    const char *end = h->value + h->value_len;
    for (;;) {
      size_t n;
      const char *e = entry_before(h->value, end, &n);
      first = e, first_len = n; /* the left-most so far */
      if (!s->trusted.any) {
        forwarded_host_port(e, n, &host, &host_len, &port);
        if (!ipallow_match(&s->trusted, host, host_len)) {
          found = 1;
          break;
        }
      }
      while (end > h->value && end[-1] != ',')
        end--;
      if (end == h->value)
        break;
      end--; /* the comma */
    }
  }
  if (!first)
    return 0;
  if (!found) /* '*', or every address is a trusted proxy: the left-most */
    forwarded_host_port(first, first_len, &host, &host_len, &port);
  if (host_len == 0)
    return 0;
  PyObject *c =
      pair_new(PyUnicode_DecodeLatin1(host, (Py_ssize_t)host_len, NULL), PyLong_FromLong(port));
  if (!c)
    return -1;
  Py_SETREF(*client, c);
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
  PyObject *t = appbin_dict_presized(sizeof(keys) / sizeof(keys[0]));
  for (size_t i = 0; t && i < sizeof(keys) / sizeof(keys[0]); i++) {
    PyObject *value = keys[i] == S.type           ? (websocket ? S.websocket : S.http)
                      : keys[i] == S.http_version ? S.v1_1
                      : keys[i] == S.scheme       ? (websocket ? S.ws : S.http)
                      : keys[i] == S.root_path    ? s->root_path
                                                  : Py_None;
    if ((keys[i] != S.method || !websocket) && PyDict_SetItem(t, keys[i], value) != 0)
      Py_CLEAR(t);
  }
  PyObject *asgi = t ? appbin_dict_presized(2) : NULL;
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
  PyObject *scheme =
      Py_NewRef(websocket ? (req->tls ? S.wss : S.ws) : (req->tls ? S.https : S.http));
  PyObject *client = req->unix_socket || req->client_port < 0
                         ? Py_NewRef(Py_None)
                         : addr_new(req->client_host, req->client_port);
  if (!client || apply_proxy_headers(s, req, websocket, &scheme, &client))
    ok = 0;
  PyObject *extensions = appbin_dict_presized(2);
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
