/* pycompat: the CPython C API differences between the versions an appbin
 * host embeds (3.11 from Debian 12's libpython3.11; 3.13 and 3.14 built by
 * cpython-patches/build-cpython.sh). Every version-dependent use of a private
 * or changed API goes through here, so that the next version fails to build
 * here, loudly, instead of misbehaving at run time. */
#ifndef APPBIN_PYCOMPAT_H
#define APPBIN_PYCOMPAT_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>

/* The versions whose private APIs below were checked. 3.12 builds too (it
 * has what 3.11 and 3.13 have) but is not a supported host. */
#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030F0000
#error "appbin hosts embed CPython 3.11 to 3.14: check host/pycompat.h for a new version"
#endif

/* The free-threaded build (3.13t/3.14t) is not supported: the ASGI bridge
 * and the importer assume the GIL (see README, "Free-threaded Python"). */
#ifdef Py_GIL_DISABLED
#error "appbin does not support free-threaded CPython (Py_GIL_DISABLED)"
#endif

/* A dict sized for n items. _PyDict_NewPresized is private but exported
 * (Include/cpython/dictobject.h) in 3.11 to 3.14. */
static inline PyObject *appbin_dict_presized(Py_ssize_t n) { return _PyDict_NewPresized(n); }

/* sep.join(iterable) for bytes: public as PyBytes_Join since 3.14, where the
 * private _PyBytes_Join became a deprecated alias. */
static inline PyObject *appbin_bytes_join(PyObject *sep, PyObject *iterable) {
#if PY_VERSION_HEX >= 0x030E0000
  return PyBytes_Join(sep, iterable);
#else
  return _PyBytes_Join(sep, iterable);
#endif
}

/* Where asyncio keeps the running task. 3.11 to 3.13: the dict
 * _asyncio._current_tasks ({loop: task}), which the eager first steps update
 * directly as _enter_task()/_leave_task() do. 3.14: the thread state
 * (asyncio_running_task), reached only through _asyncio._swap_current_task. */
#if PY_VERSION_HEX >= 0x030E0000
#define APPBIN_ASYNCIO_TASK_IN_TSTATE 1
#else
#define APPBIN_ASYNCIO_TASK_IN_TSTATE 0
#endif

/* pythonrun.c's run_eval_code_obj() state, for code the host runs in its
 * place (codecache_hook.c), in pycompat.c: the flag Py_RunMain reads to exit
 * as if killed by SIGINT after an unhandled KeyboardInterrupt
 * (_Py_UnhandledKeyboardInterrupt in 3.11,
 * _PyRuntime.signals.unhandled_keyboard_interrupt since 3.12), and the
 * interpreter's builtins dict (a borrowed reference). */
void appbin_set_unhandled_keyboard_interrupt(int value);
PyObject *appbin_interp_builtins(void);

/* The running interpreter's PyConfig.optimization_level (-O, -OO), which
 * code can not change after start-up as it can replace sys.flags. */
int appbin_optimization_level(void);

/* Whether the calling thread runs the main interpreter (3.12+ subinterpreters
 * may have GILs of their own). */
int appbin_in_main_interpreter(void);

/* struct _frozen (PyImport_FrozenModules): host/runtime/freeze.py writes
 * designated initializers for name, code, size and is_package, the fields
 * every version has (3.11 and 3.12 have a fifth, get_code, left NULL). */

#endif
