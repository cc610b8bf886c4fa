/*
 * codecache: code objects compiled at pack time for the source strings that
 * start-up hands to exec(), eval() and compile().
 *
 * dataclasses, collections.namedtuple and typing.ForwardRef generate Python
 * source while modules import and compile it every time (a FastAPI app
 * parses and compiles some 1,200 such strings: 17% of its start-up). The
 * packer imports the app once in the packed app.bin with recording on
 * (codecache_hook.c) and stores what each of those calls compiled in the
 * member appbin/codecache; at run time a call with the same source, mode,
 * flags, feature version, optimisation level and filename unmarshals that
 * code object instead of compiling (a fresh one per call, as compile()
 * gives). Anything else compiles as before: the cache only ever answers for
 * the exact inputs its code was compiled from.
 *
 * Member format (integers little-endian, offsets from the member's start):
 *   off  size
 *     0     8  magic "APPBINCC"
 *     8     4  format version (1)
 *    12     4  PY_VERSION_HEX of the host that compiled the code objects
 *    16     4  the interpreter's optimisation level then (sys.flags.optimize)
 *    20     4  entry count N
 *    24     8  reserved (0)
 *    32  48*N  entries, sorted by hash:
 *              u64 hash of the source (codecache_hash)
 *              i32 start (Py_file_input, Py_eval_input, ...)
 *              i32 compiler flags (PyCompilerFlags.cf_flags, before compiling)
 *              i32 feature version (PyCompilerFlags.cf_feature_version)
 *              i32 optimize argument (-1: the interpreter's level)
 *              u32 filename offset, u32 filename length (UTF-8)
 *              u32 source offset,   u32 source length
 *              u32 code offset,     u32 code length (marshal format)
 *  then the strings and marshalled code the entries point at.
 *
 * Regular expressions: re._compiler.compile parses its pattern and
 * generates the engine's code in Python (some 9 ms of a FastAPI app's
 * start-up, 74 patterns); the cache holds what that produced for the
 * patterns start-up compiles (CODECACHE_START_REGEX_*, below).
 */
#ifndef APPBIN_CODECACHE_H
#define APPBIN_CODECACHE_H

#include <stddef.h>
#include <stdint.h>

#define CODECACHE_MEMBER "appbin/codecache"
#define CODECACHE_MAGIC "APPBINCC"
#define CODECACHE_FORMAT_VERSION 1
#define CODECACHE_HEADER_SIZE 32
#define CODECACHE_ENTRY_SIZE 48

/* What a compile call was asked: the key of an entry. */
typedef struct codecache_key {
  const char *source; /* not NUL-terminated here */
  size_t source_len;
  const char *filename; /* UTF-8 */
  size_t filename_len;
  int32_t start;
  int32_t flags;
  int32_t feature_version;
  int32_t optimize;
} codecache_key;

typedef struct codecache {
  const uint8_t *data; /* the member's bytes, not owned */
  size_t len;
  uint32_t count;
  uint32_t regex_count; /* entries for regular expressions */
  uint32_t python_version;
  uint32_t optimization_level;
} codecache;

/* An entry's start for a regular expression (codecache_hook.c's hook on
 * re._compiler.compile): source = the pattern (a str's UTF-8, a bytes
 * pattern's bytes), filename empty, flags = the re flags compile() was
 * given, feature version and optimize 0, code = the marshalled tuple of
 * the arguments compile() handed _sre.compile after the pattern (3.11 to
 * 3.14: flags, code, groups, groupindex, indexgroup). CPython's starts are
 * all positive. */
#define CODECACHE_START_REGEX_STR (-1)
#define CODECACHE_START_REGEX_BYTES (-2)

/* The hash entries are sorted by: of the source's bytes. */
uint64_t codecache_hash(const char *source, size_t len);

/* Checks a member's header and every entry (bounds, order) and fills `cc`.
 * Returns 0, or -1 with one line naming the problem in err. */
int codecache_open(codecache *cc, const void *data, size_t len, char *err, size_t errlen);

/* The marshalled code object compiled for exactly `key` (hash: its source's
 * codecache_hash), or NULL. */
const uint8_t *codecache_find(const codecache *cc, const codecache_key *key, uint64_t hash,
                              size_t *code_len);

#endif
