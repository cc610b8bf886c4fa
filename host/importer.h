/*
 * importer: the `_appbin` built-in module, a meta-path finder and loader in C
 * over the payload archive.
 *
 * Modules are found through an index built once from the archive's member
 * list (roots: stdlib/lib-dynload/, stdlib/, site-packages/, then any
 * directories that .pth files add), loaded from unchecked hash-based .pyc
 * without reading sources or calling stat, and extension modules are loaded
 * from in-memory files (see extload.h). `__file__` follows zipimport's
 * convention: the archive path joined with the member path.
 */
#ifndef APPBIN_IMPORTER_H
#define APPBIN_IMPORTER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "manifest.h"
#include "payload.h"
#include "zipindex.h"

/* Sets up the module index. `archive_path` is the file that holds the
 * payload (used in __file__ and sys.path entries). The index and manifest
 * must outlive the interpreter. Returns 0, or -1 with a message in err. */
int importer_setup(const char *archive_path, const payload *pl, zipindex *zi, const manifest *mf,
                   char *err, size_t errlen);

/* Registers `_appbin` as a built-in module; call before Py_Initialize. */
int importer_register_builtin(void);

/* Puts the finder first on sys.meta_path. Needs the interpreter's core.
 * Frozen stdlib modules (os, stat, codecs...) are left to the interpreter's
 * FrozenImporter, as python3.11 does. */
int importer_install(void);

/* sys._stdlib_dir = "<archive>/stdlib", for the frozen modules' __file__;
 * call after the interpreter's main initialisation (which resets it). */
int importer_set_stdlib_dir(void);

#endif
