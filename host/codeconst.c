#include "codeconst.h"

#include <assert.h>

/* Deeper constants stay as they are: the collector untracks them later. */
#define CODECONST_MAX_DEPTH 100

static void untrack_code(PyObject *code, int depth);

/* Whether a tuple holding `item` must stay tracked: CPython's
 * _PyObject_GC_MAY_BE_TRACKED, as _PyTuple_MaybeUntrack applies it. */
static int keeps_tuple_tracked(PyObject *item) {
  if (!PyObject_IS_GC(item))
    return 0;
  if (PyTuple_CheckExact(item))
    return PyObject_GC_IsTracked(item);
  return 1;
}

/* Untracks `t` once its items are what they will stay, innermost first. */
static void untrack_tuple(PyObject *t, int depth) {
  assert(PyTuple_CheckExact(t));
  if (depth > CODECONST_MAX_DEPTH || !PyObject_GC_IsTracked(t))
    return;
  int keep = 0;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
    PyObject *item = PyTuple_GET_ITEM(t, i);
    if (item == NULL) /* never from marshal; CPython keeps such a tuple tracked */
      return;
    if (PyTuple_CheckExact(item))
      untrack_tuple(item, depth + 1);
    else if (PyCode_Check(item))
      untrack_code(item, depth + 1);
    keep = keep || keeps_tuple_tracked(item);
  }
  if (!keep)
    PyObject_GC_UnTrack(t);
}

static void untrack_code(PyObject *code, int depth) {
  assert(PyCode_Check(code));
  PyCodeObject *co = (PyCodeObject *)code;
  untrack_tuple(co->co_consts, depth);
  untrack_tuple(co->co_names, depth);
  untrack_tuple(co->co_localsplusnames, depth);
}

void codeconst_untrack(PyObject *code) { untrack_code(code, 0); }
