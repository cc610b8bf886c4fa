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
 * Recording (the packer's training run): with APPBIN_CODECACHE_RECORD=FILE
 * in the environment, every such call compiles with warnings turned into
 * errors (a source whose compilation warns is never cached: a cached call
 * would not warn), runs as usual, and appends its key and marshalled code
 * object to FILE:
 *   header  "APPBINCR", u32 PY_VERSION_HEX, u32 sys.flags.optimize
 *   records u64 hash, i32 start, i32 flags, i32 feature version,
 *           i32 optimize, u32 filename length, u32 source length,
 *           u32 code length, then filename, source and code bytes
 * (little-endian). The packer turns that into appbin/codecache.
 */
#ifndef APPBIN_CODECACHE_HOOK_H
#define APPBIN_CODECACHE_HOOK_H

#include "pycompat.h"
#include "zipindex.h"

#define CODECACHE_RECORD_ENV "APPBIN_CODECACHE_RECORD"
#define CODECACHE_RECORD_MAGIC "APPBINCR"

/* Before the interpreter runs any code: the archive holding the cache (its
 * member is read at the first compile of a string). */
void codecache_hook_setup(zipindex *zi);

/* _appbin.code_cache_info(): {"state": "unloaded" | "off" | "on" |
 * "record", "entries", "hits", "misses", "recorded"} (counts of calls). */
PyObject *codecache_hook_info(void);

#endif
