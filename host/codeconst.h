/*
 * codeconst: the tuples of the code objects the host unmarshals (from .pyc
 * members and the code cache), untracked as the cyclic collector would
 * untrack them.
 *
 * Unmarshalling creates the tuples of a code object (co_consts, co_names,
 * co_localsplusnames, the constant tuples inside them) tracked by the
 * collector, which untracks a tuple only when a collection of its
 * generation finds it holding nothing that could be part of a cycle
 * (_PyTuple_MaybeUntrack; a tuple whose nested tuples are still tracked at
 * that moment waits for a later pass). A FastAPI app's imports make some
 * 24,000 such tuples, a third of the objects the young collections of
 * `app.bin python` (and of imports while serving) traverse; a server
 * imports its app with the collector off. Untracking them at once,
 * innermost first, applies the collector's own rule earlier: the tuples are
 * immutable and complete, so no cycle through them is missed. Tuples inside
 * frozenset constants are left to the collector.
 *
 * The code object's fields are those of CPython's unstable layout
 * (Include/cpython/code.h), the same in 3.11 to 3.14.
 */
#ifndef APPBIN_CODECONST_H
#define APPBIN_CODECONST_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>

/* Untracks the tuples of `code` (a code object just unmarshalled, nested
 * code objects included) that hold only objects that cannot be in a cycle.
 * Cannot fail. */
void codeconst_untrack(PyObject *code);

#endif
