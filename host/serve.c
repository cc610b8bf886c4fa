#include "serve.h"

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>

/* Imports MODULE:ATTR through the runtime; NULL after printing why. */
static PyObject *load_app(const cli_options *opts) {
  if (!opts->app) {
    fprintf(stderr, "app.bin: error: no application: pack with --app MODULE:ATTR or pass --app\n");
    return NULL;
  }
  PyObject *rt = PyImport_ImportModule("_appbin_runtime");
  if (!rt) {
    PyErr_Print();
    return NULL;
  }
  PyObject *app = PyObject_CallMethod(rt, "load_app", "si", opts->app, opts->factory);
  if (!app) {
    PyObject *load_error = PyObject_GetAttrString(rt, "AppLoadError");
    if (load_error && PyErr_ExceptionMatches(load_error)) {
      PyObject *type, *value, *tb;
      PyErr_Fetch(&type, &value, &tb);
      PyObject *msg = value ? PyObject_Str(value) : NULL;
      fprintf(stderr, "app.bin: error: %s\n", msg ? PyUnicode_AsUTF8(msg) : "cannot load the app");
      Py_XDECREF(msg);
      Py_XDECREF(type);
      Py_XDECREF(value);
      Py_XDECREF(tb);
      PyErr_Clear();
    } else {
      PyErr_Print();
      fprintf(stderr, "app.bin: error: importing the app '%s' failed\n", opts->app);
    }
    Py_XDECREF(load_error);
  }
  Py_DECREF(rt);
  return app;
}

int serve_run(const cli_options *opts) {
  PyObject *app = load_app(opts);
  if (!app)
    return 1;
  Py_DECREF(app);
  fprintf(stderr, "app.bin: error: this host has no HTTP server yet\n");
  return 1;
}
