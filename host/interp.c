#include "interp.h"

#include "codecache_hook.h"
#include "extload.h"
#include "importer.h"
#include "nativeprep.h"
#include "runtime_frozen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The exit status for a status that stops start-up (printing why). */
static int status_exit(PyStatus status, const char *what) {
  if (PyStatus_IsExit(status))
    return status.exitcode;
  fprintf(stderr, "app.bin: error: %s: %s%s%s\n", what, status.func ? status.func : "",
          status.func ? ": " : "", status.err_msg ? status.err_msg : "failed");
  return 1;
}

static PyStatus set_path(PyConfig *config, wchar_t **field, const char *path) {
  return PyConfig_SetBytesString(config, field, path);
}

static PyStatus add_search_path(PyConfig *config, const char *exe, const char *member) {
  char buf[8192];
  snprintf(buf, sizeof(buf), "%s/%s", exe, member);
  wchar_t *w = Py_DecodeLocale(buf, NULL);
  if (!w)
    return PyStatus_NoMemory();
  PyStatus status = PyWideStringList_Append(&config->module_search_paths, w);
  PyMem_RawFree(w);
  return status;
}

static PyStatus configure(PyConfig *config, const char *exe, interp_mode mode, int argc,
                          char **argv) {
  PyConfig_InitIsolatedConfig(config);
  config->parse_argv = mode == INTERP_PYTHON;
  /* `python script.py` puts the script's directory first, as python does;
   * server mode never adds anything from the working directory. */
  config->safe_path = mode == INTERP_SERVER;
  config->isolated = mode == INTERP_SERVER; /* -I still works in python mode */
  config->site_import = 0;                  /* .pth files are processed by the runtime */
  config->write_bytecode = 0;
  config->pathconfig_warnings = 0;
  config->install_signal_handlers = 1;
  config->_init_main = 0; /* the importer goes in before encodings loads */

  /* The packer's recording run: see codecache_hook.h. */
  if (codecache_hook_recording()) {
    config->use_hash_seed = 1;
    config->hash_seed = 0;
  }

  PyStatus status = PyConfig_SetBytesArgv(config, argc, argv);
  if (PyStatus_Exception(status))
    return status;
  wchar_t **fields[] = {&config->program_name,    &config->executable,  &config->base_executable,
                        &config->prefix,          &config->exec_prefix, &config->base_prefix,
                        &config->base_exec_prefix};
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
    status = set_path(config, fields[i], exe);
    if (PyStatus_Exception(status))
      return status;
  }
  /* `home` too: Python's path calculation then looks for nothing on disk
   * (pyvenv.cfg, a ._pth file, a build directory's markers beside the
   * executable: seven failing lookups, each a round trip to the daemon on a
   * FUSE root file system such as Docker's fuse-overlayfs). It reads home as
   * "prefix:exec_prefix" and sets both from it, so a path with a ':' keeps
   * the lookups rather than split sys.prefix in two. */
  if (!strchr(exe, ':')) {
    status = set_path(config, &config->home, exe);
    if (PyStatus_Exception(status))
      return status;
  }
  config->module_search_paths_set = 1;
  static const char *const paths[] = {"stdlib", "stdlib/lib-dynload", "site-packages"};
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    status = add_search_path(config, exe, paths[i]);
    if (PyStatus_Exception(status))
      return status;
  }
  return PyStatus_Ok();
}

static int run_runtime_setup(void) {
  PyObject *rt = PyImport_ImportModule("_appbin_runtime");
  PyObject *r = rt ? PyObject_CallMethod(rt, "setup", NULL) : NULL;
  Py_XDECREF(rt);
  if (!r) {
    PyErr_Print();
    return -1;
  }
  Py_DECREF(r);
  return 0;
}

int interp_start(const char *exe, const payload *pl, zipindex *zi, const manifest *mf,
                 interp_mode mode, int argc, char **argv, int debug, int *exit_status) {
  char err[512];
  *exit_status = 1;
  extload_debug = debug;
  if (importer_setup(exe, pl, zi, mf, err, sizeof(err)) != 0) {
    fprintf(stderr, "app.bin: error: %s\n", err);
    return -1;
  }
  codecache_hook_setup(zi, mode == INTERP_PYTHON);
  PyImport_FrozenModules = appbin_frozen_modules;
  if (importer_register_builtin() != 0) {
    fprintf(stderr, "app.bin: error: cannot register the _appbin module\n");
    return -1;
  }

  /* UTF-8 mode, whatever the locale: what python3.11 gives under C.UTF-8
   * and coerces the C locale to, without depending on the image's locales. */
  PyPreConfig preconfig;
  PyPreConfig_InitIsolatedConfig(&preconfig);
  preconfig.utf8_mode = 1;
  preconfig.configure_locale = 1;
  PyStatus status = Py_PreInitialize(&preconfig);
  if (PyStatus_Exception(status)) {
    *exit_status = status_exit(status, "cannot initialise Python");
    return -1;
  }

  PyConfig config;
  status = configure(&config, exe, mode, argc, argv);
  if (!PyStatus_Exception(status))
    status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) {
    *exit_status = status_exit(status, "cannot initialise Python");
    return -1;
  }

  if (importer_install() != 0) {
    PyErr_Print();
    fprintf(stderr, "app.bin: error: cannot install the archive importer\n");
    return -1;
  }
  status = _Py_InitializeMain();
  if (PyStatus_Exception(status)) {
    *exit_status = status_exit(status, "cannot initialise Python");
    return -1;
  }
  if (importer_set_stdlib_dir() != 0) {
    PyErr_Print();
    return -1;
  }
  if (run_runtime_setup() != 0) {
    fprintf(stderr, "app.bin: error: the appbin runtime failed to start\n");
    return -1;
  }
  *exit_status = 0;
  return 0;
}

/* The thread of nativeprep.h stops before main()'s archive goes away. */
int interp_run_python(void) {
  int rc = Py_RunMain();
  nativeprep_stop();
  return rc;
}

int interp_finish(void) {
  int rc = Py_FinalizeEx() < 0 ? 120 : 0;
  nativeprep_stop();
  return rc;
}
