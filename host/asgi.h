/*
 * asgi: the ASGI 3.0 HTTP bridge between the C HTTP layer (http.h) and the
 * application, running on an asyncio event loop.
 *
 * `_appbin.Server(app, loop, options)` owns a libuv loop whose backend fd is
 * registered with the asyncio loop (add_reader): when it is readable, or
 * when a libuv timer is due, or after the application wrote something, the
 * server runs uv_run(UV_RUN_NOWAIT). Each request gets a scope dict and a
 * C `receive`/`send` pair; the application runs as an asyncio task.
 *
 * The Python side (host/runtime/_appbin_runtime.py) drives the server:
 * lifespan, signals, graceful shutdown.
 */
#ifndef APPBIN_ASGI_H
#define APPBIN_ASGI_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Adds the Server type and ClientDisconnected to the _appbin module. */
int asgi_add_types(PyObject *module);

#endif
