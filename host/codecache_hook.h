/*
 * codecache_hook: the host in front of CPython's compilation of source
 * strings, answering from the pack-time code cache (codecache.h).
 *
 * The host links libpython statically with `-Wl,--wrap` for
 * PyRun_StringFlags (exec() and eval() of a string) and
 * Py_CompileStringObject (compile() of a string): libpython's calls to them
 * land in __wrap_* here, which either run/return a code object unmarshalled
 * from the cache or call the real function (__real_*). A cached exec() runs
 * its code object exactly as CPython's run_mod() does after compiling: the
 * "exec" audit event, globals' __builtins__, PyEval_EvalCode and the
 * unhandled-KeyboardInterrupt flag. Extension modules calling these
 * functions get CPython's own (the dynamic symbols are not wrapped).
 *
 * Recording (the packer's training run, `app.bin python`): with
 * APPBIN_CODECACHE_RECORD=FILE in the environment (removed from it at once,
 * so that the processes the program starts do not record), every such call
 * compiles as usual and, unless the parser or the compiler warned (a cached
 * call would not warn: PyErr_WarnExplicitObject and, 3.12+,
 * _PyErr_WarnExplicitObjectWithContext are wrapped to count warnings),
 * appends a record to FILE, which the packer made holding the magic
 * "APPBINCR" (8 bytes). A record, little-endian: u64 hash, i32 start, i32
 * flags, i32 feature version, i32 optimize, u32 filename length, u32 source
 * length, u32 code length, u32 PY_VERSION_HEX, u32 optimisation level, u32
 * 0, then the filename, source and marshalled code bytes. The hash seed is
 * fixed while recording, so that generated source that depends on a set's
 * order is the same at every pack. The packer turns the records into
 * appbin/codecache.
 */
#ifndef APPBIN_CODECACHE_HOOK_H
#define APPBIN_CODECACHE_HOOK_H

#include "pycompat.h"
#include "zipindex.h"

#define CODECACHE_RECORD_ENV "APPBIN_CODECACHE_RECORD"
#define CODECACHE_RECORD_MAGIC "APPBINCR"
#define CODECACHE_RECORD_SIZE 48 /* a record's fixed part */

/* Before the interpreter is configured: the archive holding the cache (its
 * member is read at the first compile of a string, or when the importer
 * runs re._compiler); `python_mode`: whether
 * this is `app.bin python`, the only mode that records. */
void codecache_hook_setup(zipindex *zi, int python_mode);

/* Whether this process records (interp.c then fixes the hash seed). */
int codecache_hook_recording(void);

/* Called by the importer once it ran re._compiler: puts the cache in front
 * of its compile() (the module's global, which re._compile calls) when the
 * cache holds regular expressions. A call the cache answers gets
 * _sre.compile() of the recorded arguments: the same pattern object
 * (same code, flags, groups) as CPython's parse would give; anything else
 * goes to CPython's compile(). The packer's training run records the
 * arguments its compile() handed _sre.compile (packager/appbin_packer/
 * codecache.py), keeping only patterns that compiled without a warning
 * and whose recorded arguments give a pattern equal to CPython's. Raises
 * nothing: without the wrapper, CPython compiles every pattern. */
void codecache_hook_wrap_regex_compiler(PyObject *module);

/* _appbin.code_cache_info(): {"state": "unloaded" | "off" | "on" |
 * "record", "entries", "hits", "misses", "recorded", "regexes" (entries of
 * regular expressions), "regex_hits", "regex_misses"} (counts of calls). */
PyObject *codecache_hook_info(void);

#endif
