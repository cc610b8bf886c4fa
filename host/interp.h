/*
 * interp: configuring and starting the embedded CPython.
 *
 * The interpreter is isolated (no PYTHON* variables, no user site, nothing
 * from the working directory on sys.path in server mode), sys.executable is
 * the app.bin itself and the whole stdlib comes from the payload: the
 * `_appbin` importer is on sys.meta_path before `encodings` is imported.
 */
#ifndef APPBIN_INTERP_H
#define APPBIN_INTERP_H

#include "manifest.h"
#include "payload.h"
#include "zipindex.h"

typedef enum interp_mode {
  INTERP_SERVER, /* sys.argv is app.bin's argv, flags are not Python's */
  INTERP_PYTHON, /* argv is parsed like python3.11's */
} interp_mode;

/* Starts the interpreter over the payload. Returns 0 when it runs, or -1
 * when the process must exit now with *exit_status: after printing why it
 * cannot start, or because the command line asked only for, say, -V. */
int interp_start(const char *exe, const payload *pl, zipindex *zi, const manifest *mf,
                 interp_mode mode, int argc, char **argv, int debug, int *exit_status);

/* INTERP_PYTHON: runs like python3.11 (-c, -m, script, REPL), finalizes and
 * returns the exit status. */
int interp_run_python(void);

/* Finalizes; returns 0, or 120 when flushing stdio failed (as python does). */
int interp_finish(void);

#endif
