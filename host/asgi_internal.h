/* What the files of the ASGI bridge share: asgi.c (the Server, the pump, the
 * module's types), asgi_log.c, asgi_scope.c, asgi_task.c, asgi_http.c and
 * asgi_ws.c. Not part of any public API: every symbol here is hidden from the
 * executable's dynamic symbol table (the host is linked with --export-dynamic
 * for extension modules). */
#ifndef APPBIN_ASGI_INTERNAL_H
#define APPBIN_ASGI_INTERNAL_H

#include "pycompat.h" /* Python.h */

#include "http.h"
#include "http_tls.h"
#include "ipallow.h"

#pragma GCC visibility push(hidden)

enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_CRITICAL };

/* One _appbin.Server. asgi.c owns it and releases every reference in it;
 * the other files read it and fill only what their comments name. */
typedef struct ServerObject {
  PyObject_HEAD uv_loop_t uv;
  http_server *http;
  http_tls_ctx *tls; /* --ssl-certfile: the server's TLS settings */
  int uv_ready, closed, reader_added;
  PyObject *app, *loop, *state, *root_path, *root_path_bytes, *runtime;
  PyObject *create_future, *call_soon, *call_later, *loop_time;
  /* The context Server() was made in: every request starts in a copy of it,
   * and the pump runs in it (not in the request whose send() woke it). */
  PyObject *context, *context_kwnames; /* ("context",) */
  /* set by asgi_task_setup() */
  PyObject *task_type, *task_kwnames; /* asyncio.Task, ("loop", "context") */
  PyObject *eager_task_type;          /* the lazily initialised Task subclass */
  /* _asyncio._current_tasks ({loop: task}) on 3.11 to 3.13, the function
   * _asyncio._swap_current_task on 3.14 (APPBIN_ASYNCIO_TASK_IN_TSTATE) */
  PyObject *current_tasks;
  PyObject *cancelled_error;         /* asyncio.CancelledError */
  PyObject *eager_head, *eager_tail; /* asgi_task.c's queue: Runners whose first step is due */
  int in_pump;                       /* inside server_pump's uv_run() */
  int in_eager;                      /* inside asgi_task_run_eager()'s loop */
  PyObject *pump;                    /* bound _pump method */
  PyObject *timer;
  double timer_when;
  int pump_scheduled;
  PyObject *closed_future;
  PyObject *on_max_requests;
  uv_timer_t beat_timer; /* --workers: tells the supervisor the loop is alive */
  int beat_on;
  int log_level, access_log, proxy_headers;
  /* asgi_log.c's: lines through the runtime's logging module (--log-config),
   * access records waiting there for the flush, the request id header */
  int log_python;
  PyObject *access_records;
  char request_id_header[64]; /* lowercase; "" for none */
  ipallow trusted;            /* --forwarded-allow-ips */
  char *access_buf;           /* allocated by asgi.c, filled and flushed by asgi_log.c */
  size_t access_len, access_cap;
  http_header *default_headers;
  size_t n_default_headers;
  PyObject *default_header_refs;
  /* asgi_scope.c's caches */
  PyObject *server_addr;                    /* cached scope["server"] */
  PyObject *scope_template[2], *scope_asgi; /* see scope_template() */
  char server_addr_host[64];
  int server_addr_port;
  /* WebSockets (--ws*) */
  int ws_enabled;          /* --ws auto (not none) */
  long ws_max_size;        /* bytes per message */
  long ws_max_queue;       /* messages buffered before reading pauses */
  double ws_ping_interval; /* seconds; 0: no keepalive pings */
  double ws_ping_timeout;  /* seconds; 0: no timeout */
  int ws_per_message_deflate;
} ServerObject;

/* Each asgi file interns the strings it looks up once, from a table. */
typedef struct asgi_intern_entry {
  PyObject **slot;
  const char *text;
} asgi_intern_entry;

static inline int asgi_intern(const asgi_intern_entry *table, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!*table[i].slot && !(*table[i].slot = PyUnicode_InternFromString(table[i].text)))
      return -1;
  return 0;
}
#define ASGI_INTERN(table) asgi_intern((table), sizeof(table) / sizeof((table)[0]))

/* Leading and trailing blanks (spaces, tabs) off [*p, *p + *len). */
static inline void asgi_trim(const char **p, size_t *len) {
  while (*len && (**p == ' ' || **p == '\t'))
    (*p)++, (*len)--;
  while (*len && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t'))
    (*len)--;
}

/* --- host/asgi.c: the module (which owns ClientDisconnected) and the pump --- */
/* send() after the client went away (ASGI spec 2.4), an OSError subclass. */
extern PyObject *asgi_ClientDisconnected;
/* Runs uv_run() soon from the asyncio loop: after anything that may have
 * queued libuv work outside uv_run() (writes, reads resumed, closes). */
void asgi_schedule_pump(ServerObject *s);

/* --- host/asgi_log.c: stderr; the access lines wait in s->access_buf --- */
int asgi_log_init(void); /* interned strings */
/* Logging to stderr in uvicorn's format (level: LOG_*). */
void asgi_log(ServerObject *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An exception with its traceback, at ERROR, through the runtime. */
void asgi_log_exception(ServerObject *s, const char *msg, PyObject *exc);
/* The current Python exception (cleared). */
void asgi_log_current_exception(ServerObject *s, const char *msg);
/* The client as the access log names it ("host:port", "unix" or "-"), from
 * scope["client"] (after trusted proxy headers), as uvicorn logs it. */
#define ASGI_LOG_CLIENT_MAX 96
void asgi_log_client(char out[ASGI_LOG_CLIENT_MAX], const http_request *req, PyObject *client);
/* The HTTP layer's on_response_done, through asgi_http.c: the metrics, and
 * the access line of a request the app answered whole (client from
 * asgi_log_client, NULL for none: a WebSocket handshake, a layer error). */
void asgi_log_response(ServerObject *s, const http_request *req, const char *client, int status,
                       uint64_t body_bytes, bool complete);
/* Writes the buffered access lines (after each pump, and on close). */
void asgi_log_flush(ServerObject *s);

/* --- host/asgi_scope.c: scopes are new dicts the caller owns --- */
int asgi_scope_init(void); /* interned strings */
/* The first request header with this (lowercase) name, or NULL. */
const http_header *asgi_find_header(const http_request *req, const char *name);
/* The scope of an http (websocket 0) or websocket (1) request, without the
 * websocket-only "subprotocols". */
PyObject *asgi_build_scope(ServerObject *s, const http_request *req, int websocket);

/* --- host/asgi_task.c: the app's task holds its owner through the Runner --- */
int asgi_task_init(void); /* interned strings, the Ready and Runner types */
/* An awaitable already done with value (new reference). */
PyObject *asgi_ready_new(PyObject *value);
/* Resolves a pending future with result (exc_type NULL) or exc_type(msg), and
 * clears *waiter. A future that is already done (cancelled) is left alone.
 * Returns 1 if the future took the result, else 0. */
int asgi_resolve(PyObject **waiter, PyObject *result, PyObject *exc_type, const char *msg);
/* Called once when the application's coroutine ends: returned (exc NULL,
 * cancelled 0), raised exc, or was cancelled (cancelled 1). */
typedef void (*asgi_finish_fn)(PyObject *owner, PyObject *exc, int cancelled);
/* Calls app(scope, receive, send) and runs the result as an asyncio task;
 * finish(owner, ...) runs when it ends. -1 with an exception set if the app
 * could not be started. Inside the pump, the coroutine's first step runs
 * eagerly once uv_run() returns, and a Task is only set up if it suspends
 * (see "Eager first steps" in asgi_task.c). */
int asgi_start_app(ServerObject *s, PyObject *scope, PyObject *receive, PyObject *send,
                   PyObject *owner, asgi_finish_fn finish);
/* Server.__init__: the task fields of s (asyncio.Task with Runner registered
 * as a Coroutine, RequestTask, _current_tasks, CancelledError). */
int asgi_task_setup(ServerObject *s);
/* The queued first steps, once uv_run() has returned. */
void asgi_task_run_eager(ServerObject *s);
/* Drops the queued Runners without running them (the Server's tp_clear). */
void asgi_task_clear_eager(ServerObject *s);

/* --- host/asgi_http.c: req->user holds a Request until on_request_done --- */
int asgi_http_init(void); /* interned strings, the Request type */
/* The HTTP layer's callbacks for a Server (http_server_new). */
extern const http_callbacks asgi_http_callbacks;
/* ASGI [name, value] pairs into http_header entries pointing into the bytes
 * objects, which `keep` (a list) holds. At most max entries. */
int asgi_convert_headers(PyObject *headers, http_header *out, size_t max, size_t *n,
                         PyObject *keep);

/* --- host/asgi_ws.c: req->user and the upgraded stream each hold a WebSocket --- */
int asgi_ws_init(PyObject *module); /* types and interned strings */
/* An upgrade request asking for a WebSocket (GET, Upgrade: websocket). */
int asgi_ws_is_websocket(const http_request *req);
/* on_request for such a request: validates the handshake, starts the app. */
void asgi_ws_on_request(ServerObject *s, http_request *req);
/* The HTTP layer's per-request callbacks while the handshake is pending
 * (req->user is a WebSocket object). */
int asgi_ws_owns(const http_request *req);
void asgi_ws_on_disconnect(http_request *req);
void asgi_ws_on_drain(http_request *req);
void asgi_ws_on_request_done(http_request *req);

#pragma GCC visibility pop

#endif
