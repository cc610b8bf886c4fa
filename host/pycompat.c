/* The few CPython internals the host must touch, behind pycompat.h: this is
 * the only file built with Py_BUILD_CORE (CPython's internal headers). */
#define Py_BUILD_CORE 1
#include "pycompat.h"

#include <internal/pycore_interp.h>
#include <internal/pycore_pystate.h>
#if PY_VERSION_HEX >= 0x030C0000
#include <internal/pycore_runtime.h>
#else
#include <internal/pycore_pylifecycle.h>
#endif

void appbin_set_unhandled_keyboard_interrupt(int value) {
#if PY_VERSION_HEX >= 0x030C0000
  _PyRuntime.signals.unhandled_keyboard_interrupt = value;
#else
  _Py_UnhandledKeyboardInterrupt = value;
#endif
}

PyObject *appbin_interp_builtins(void) { return _PyInterpreterState_GET()->builtins; }

int appbin_optimization_level(void) { return _Py_GetConfig()->optimization_level; }

int appbin_in_main_interpreter(void) {
  return PyInterpreterState_Get() == PyInterpreterState_Main();
}
