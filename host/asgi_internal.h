/* Pieces of the ASGI bridge (host/asgi.c) shared with the WebSocket side
 * (host/asgi_ws.c). Not part of any public API: every symbol here is hidden
 * from the executable's dynamic symbol table (the host is linked with
 * --export-dynamic for extension modules). */
#ifndef APPBIN_ASGI_INTERNAL_H
#define APPBIN_ASGI_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "http.h"

#pragma GCC visibility push(hidden)

enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_CRITICAL };

typedef struct ServerObject {
  PyObject_HEAD uv_loop_t uv;
  http_server *http;
  int uv_ready, closed, reader_added;
  PyObject *app, *loop, *state, *root_path, *root_path_bytes, *runtime;
  PyObject *create_future, *call_soon, *call_later, *loop_time;
  PyObject *task_type, *loop_kwnames; /* asyncio.Task, ("loop",) */
  PyObject *eager_task_type;          /* the lazily initialised Task subclass */
  PyObject *current_tasks;            /* _asyncio._current_tasks: {loop: task} */
  PyObject *cancelled_error;          /* asyncio.CancelledError */
  PyObject *eager_head, *eager_tail;  /* Runners whose first step is due */
  int in_pump;                        /* inside server_pump's uv_run() */
  PyObject *pump;                     /* bound _pump method */
  PyObject *timer;
  double timer_when;
  int pump_scheduled;
  PyObject *closed_future;
  PyObject *on_max_requests;
  int log_level, access_log, proxy_headers, trust_all_proxies;
  char **trusted; /* --forwarded-allow-ips */
  size_t ntrusted;
  char *access_buf;
  size_t access_len, access_cap;
  http_header *default_headers;
  size_t n_default_headers;
  PyObject *default_header_refs;
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

/* send() after the client went away (ASGI spec 2.4), an OSError subclass. */
extern PyObject *asgi_ClientDisconnected;

/* Logging to stderr in uvicorn's format (level: LOG_*). */
void asgi_log(ServerObject *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An exception with its traceback, at ERROR, through the runtime. */
void asgi_log_exception(ServerObject *s, const char *msg, PyObject *exc);
/* The current Python exception (cleared). */
void asgi_log_current_exception(ServerObject *s, const char *msg);

/* An awaitable already done with value (new reference). */
PyObject *asgi_ready_new(PyObject *value);
/* Resolves a pending future with result (exc_type NULL) or exc_type(msg), and
 * clears *waiter. A future that is already done (cancelled) is left alone.
 * Returns 1 if the future took the result, else 0. */
int asgi_resolve(PyObject **waiter, PyObject *result, PyObject *exc_type, const char *msg);
/* Runs uv_run() soon from the asyncio loop: after anything that may have
 * queued libuv work outside uv_run() (writes, reads resumed, closes). */
void asgi_schedule_pump(ServerObject *s);

/* The first request header with this (lowercase) name, or NULL. */
const http_header *asgi_find_header(const http_request *req, const char *name);
/* The scope of an http (websocket 0) or websocket (1) request, without the
 * websocket-only "subprotocols". */
PyObject *asgi_build_scope(ServerObject *s, const http_request *req, int websocket);
/* ASGI [name, value] pairs into http_header entries pointing into the bytes
 * objects, which `keep` (a list) holds. At most max entries. */
int asgi_convert_headers(PyObject *headers, http_header *out, size_t max, size_t *n,
                         PyObject *keep);

/* Called once when the application's coroutine ends: returned (exc NULL,
 * cancelled 0), raised exc, or was cancelled (cancelled 1). */
typedef void (*asgi_finish_fn)(PyObject *owner, PyObject *exc, int cancelled);
/* Calls app(scope, receive, send) and runs the result as an asyncio task;
 * finish(owner, ...) runs when it ends. -1 with an exception set if the app
 * could not be started. Inside the pump, the coroutine's first step runs
 * eagerly once uv_run() returns, and a Task is only set up if it suspends
 * (see "Eager first steps" in asgi.c). */
int asgi_start_app(ServerObject *s, PyObject *scope, PyObject *receive, PyObject *send,
                   PyObject *owner, asgi_finish_fn finish);

/* --- host/asgi_ws.c --- */
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
