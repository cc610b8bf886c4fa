#include "codecache_hook.h"

#include "codecache.h"
#include "codeconst.h"
#include "le.h"
#include "pycompat.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <marshal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* CPython's own, reached through the linker's --wrap. */
PyObject *__real_PyRun_StringFlags(const char *str, int start, PyObject *globals, PyObject *locals,
                                   PyCompilerFlags *flags);
PyObject *__real_Py_CompileStringObject(const char *str, PyObject *filename, int start,
                                        PyCompilerFlags *flags, int optimize);
int __real_PyErr_WarnExplicitObject(PyObject *category, PyObject *message, PyObject *filename,
                                    int lineno, PyObject *module, PyObject *registry);
PyObject *__wrap_PyRun_StringFlags(const char *str, int start, PyObject *globals, PyObject *locals,
                                   PyCompilerFlags *flags);
PyObject *__wrap_Py_CompileStringObject(const char *str, PyObject *filename, int start,
                                        PyCompilerFlags *flags, int optimize);
int __wrap_PyErr_WarnExplicitObject(PyObject *category, PyObject *message, PyObject *filename,
                                    int lineno, PyObject *module, PyObject *registry);
#if PY_VERSION_HEX >= 0x030C0000
int __real__PyErr_WarnExplicitObjectWithContext(PyObject *category, PyObject *message,
                                                PyObject *filename, int lineno);
int __wrap__PyErr_WarnExplicitObjectWithContext(PyObject *category, PyObject *message,
                                                PyObject *filename, int lineno);
#endif

typedef enum cc_state {
  CC_UNLOADED, /* the member is read at the first call */
  CC_OFF,      /* no cache (or not for this interpreter): CPython compiles */
  CC_ON,       /* answering from g.cc */
  CC_RECORD,   /* the packer's training run */
} cc_state;

/* One archive per process, used by the main interpreter only, whose GIL
 * guards all of it. */
static struct {
  zipindex *zi;
  cc_state state;
  codecache cc;
  void *owned;       /* a compressed member's bytes (a stored one is used in place) */
  char *record_path; /* CODECACHE_RECORD_ENV */
  int record_fd;
  int recording;           /* inside a recording compile: nested calls go to CPython */
  PyObject *anon_filename; /* "<string>", PyRun_StringFlags' filename */
  unsigned long hits, misses, recorded;
  unsigned long regex_hits, regex_misses;
} g = {.record_fd = -1};

/* The warnings CPython's parser and compiler issued in this thread: a
 * recording compile records only a source that did not warn. */
static _Thread_local unsigned long compile_warnings;

int __wrap_PyErr_WarnExplicitObject(PyObject *category, PyObject *message, PyObject *filename,
                                    int lineno, PyObject *module, PyObject *registry) {
  compile_warnings++;
  return __real_PyErr_WarnExplicitObject(category, message, filename, lineno, module, registry);
}

#if PY_VERSION_HEX >= 0x030C0000
int __wrap__PyErr_WarnExplicitObjectWithContext(PyObject *category, PyObject *message,
                                                PyObject *filename, int lineno) {
  compile_warnings++;
  return __real__PyErr_WarnExplicitObjectWithContext(category, message, filename, lineno);
}
#endif

void codecache_hook_setup(zipindex *zi, int python_mode) {
  g.zi = zi;
  g.state = CC_UNLOADED;
  /* Only the packer's own `app.bin python` run records: not the processes
   * it starts (a subprocess, a spawned worker), nor a server. */
  const char *record = getenv(CODECACHE_RECORD_ENV);
  g.record_path = python_mode && record && *record ? strdup(record) : NULL;
  unsetenv(CODECACHE_RECORD_ENV);
}

int codecache_hook_recording(void) { return g.record_path != NULL; }

static void stop_recording(const char *why) {
  fprintf(stderr, "app.bin: warning: code cache recording to %s stopped: %s\n", g.record_path, why);
  if (g.record_fd >= 0)
    close(g.record_fd);
  g.record_fd = -1;
  g.state = CC_OFF;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* The packer made the file, holding the magic: records are appended. */
static void start_recording(void) {
  g.record_fd = open(g.record_path, O_WRONLY | O_APPEND | O_CLOEXEC);
  if (g.record_fd < 0) {
    stop_recording(strerror(errno));
    return;
  }
  g.state = CC_RECORD;
}

/* A warning line for a cache this host cannot use (a packer's bug). */
static void cache_unusable(const char *why) {
  fprintf(stderr, "app.bin: warning: %s ignored: %s\n", CODECACHE_MEMBER, why);
  g.state = CC_OFF;
}

static void load(void) {
  g.state = CC_OFF;
  if (!g.anon_filename && !(g.anon_filename = PyUnicode_InternFromString("<string>"))) {
    PyErr_Clear();
    return;
  }
  if (g.record_path) {
    start_recording();
    return;
  }
  const zipindex_entry *e =
      g.zi ? zipindex_find(g.zi, CODECACHE_MEMBER, strlen(CODECACHE_MEMBER)) : NULL;
  if (!e)
    return; /* packed with --no-code-cache, or before there was one */
  char err[512] = "out of memory";
  const void *data = NULL;
  PyThreadState *ts = PyEval_SaveThread(); /* a first read hashes the member */
  if (e->method == ZIPINDEX_STORED) {
    data = zipindex_stored_data(g.zi, e, err, sizeof(err));
  } else if ((g.owned = malloc(e->size ? e->size : 1))) {
    if (zipindex_read(g.zi, e, g.owned, err, sizeof(err)) == 0)
      data = g.owned;
  }
  PyEval_RestoreThread(ts);
  if (!data) { /* damage stops the process in zipindex; this is anything else */
    free(g.owned);
    g.owned = NULL;
    cache_unusable(err);
    return;
  }
  if (codecache_open(&g.cc, data, e->size, err, sizeof(err)) != 0) {
    cache_unusable(err);
    return;
  }
  if (g.cc.python_version != PY_VERSION_HEX) {
    snprintf(err, sizeof(err), "compiled by Python %08x, this host is %08x", g.cc.python_version,
             (unsigned)PY_VERSION_HEX);
    cache_unusable(err);
    return;
  }
  /* -O/-OO compile differently: nothing in the cache is for them. */
  if (g.cc.optimization_level == (uint32_t)appbin_optimization_level())
    g.state = CC_ON;
}

/* Whether a call may be answered or recorded, loading the cache at first:
 * the source of a str (PyCF_IGNORE_COOKIE: bytes are decoded by their coding
 * cookie, through a codec registry that code can change) compiled to code
 * (not an AST), in the main interpreter. */
static int usable(const PyCompilerFlags *flags) {
  if (!flags || (flags->cf_flags & (PyCF_ONLY_AST | PyCF_IGNORE_COOKIE)) != PyCF_IGNORE_COOKIE)
    return 0;
  if (g.state == CC_UNLOADED && Py_IsInitialized())
    load();
  return (g.state == CC_ON || (g.state == CC_RECORD && !g.recording)) &&
         appbin_in_main_interpreter();
}

/* The key of a call; -1 (no exception) when it has none (a filename that
 * is not a str that encodes to UTF-8). */
static int make_key(codecache_key *key, const char *str, PyObject *filename, int start,
                    const PyCompilerFlags *flags, int optimize) {
  Py_ssize_t n;
  const char *name = PyUnicode_Check(filename) ? PyUnicode_AsUTF8AndSize(filename, &n) : NULL;
  if (!name) {
    PyErr_Clear();
    return -1;
  }
  key->source = str;
  key->source_len = strlen(str);
  key->filename = name;
  key->filename_len = (size_t)n;
  key->start = start;
  key->flags = flags->cf_flags;
  key->feature_version = flags->cf_feature_version;
  key->optimize = optimize;
  return 0;
}

/* A new code object for `key` from the cache; NULL without an exception
 * when it has none. */
static PyObject *cached_code(const codecache_key *key) {
  size_t len;
  const uint8_t *code =
      codecache_find(&g.cc, key, codecache_hash(key->source, key->source_len), &len);
  if (!code || len > PY_SSIZE_T_MAX)
    return NULL;
  PyObject *co = PyMarshal_ReadObjectFromString((const char *)code, (Py_ssize_t)len);
  if (co && PyCode_Check(co)) {
    codeconst_untrack(co);
    return co;
  }
  /* The member's digest matched, so this is a packer's bug: compile. */
  Py_XDECREF(co);
  PyErr_Clear();
  cache_unusable("a code object does not unmarshal");
  return NULL;
}

static void record(const codecache_key *key, PyObject *co) {
  assert(g.state == CC_RECORD && g.record_fd >= 0 && PyCode_Check(co));
  PyObject *code = PyMarshal_WriteObjectToString(co, Py_MARSHAL_VERSION);
  if (!code) {
    PyErr_Clear();
    return; /* not marshallable: left out */
  }
  size_t code_len = (size_t)PyBytes_GET_SIZE(code);
  size_t n = CODECACHE_RECORD_SIZE + key->filename_len + key->source_len + code_len;
  uint8_t *buf = malloc(n);
  if (!buf || key->source_len > UINT32_MAX || key->filename_len > UINT32_MAX ||
      code_len > UINT32_MAX) {
    free(buf);
    Py_DECREF(code);
    return;
  }
  le_put64(buf, codecache_hash(key->source, key->source_len));
  le_put32(buf + 8, (uint32_t)key->start);
  le_put32(buf + 12, (uint32_t)key->flags);
  le_put32(buf + 16, (uint32_t)key->feature_version);
  le_put32(buf + 20, (uint32_t)key->optimize);
  le_put32(buf + 24, (uint32_t)key->filename_len);
  le_put32(buf + 28, (uint32_t)key->source_len);
  le_put32(buf + 32, (uint32_t)code_len);
  le_put32(buf + 36, PY_VERSION_HEX);
  le_put32(buf + 40, (uint32_t)appbin_optimization_level());
  le_put32(buf + 44, 0);
  uint8_t *at = buf + CODECACHE_RECORD_SIZE;
  memcpy(at, key->filename, key->filename_len);
  memcpy(at + key->filename_len, key->source, key->source_len);
  memcpy(at + key->filename_len + key->source_len, PyBytes_AS_STRING(code), code_len);
  /* One write: records of forked children interleave whole (O_APPEND). */
  if (write_all(g.record_fd, buf, n) != 0)
    stop_recording(strerror(errno));
  else
    g.recorded++;
  free(buf);
  Py_DECREF(code);
}

/* Compiles as CPython does and records the code object unless the parser
 * or the compiler warned (a cached call would not warn); NULL with
 * CPython's exception when the source does not compile. */
static PyObject *compile_recording(const codecache_key *key, const char *str, PyObject *filename,
                                   PyCompilerFlags *flags) {
  unsigned long warned = compile_warnings;
  g.recording = 1; /* a warning's handler may compile: that goes to CPython */
  PyObject *co = __real_Py_CompileStringObject(str, filename, key->start, flags, key->optimize);
  g.recording = 0;
  if (co && PyCode_Check(co) && compile_warnings == warned)
    record(key, co);
  return co;
}

/* The code object for a call, from the cache or the recording compile; NULL
 * without an exception when CPython is to compile it itself, NULL with one
 * when the call fails (a source that does not compile while recording, an
 * audit hook refusing it). */
static PyObject *code_for(const char *str, PyObject *filename, int start, PyCompilerFlags *flags,
                          int optimize) {
  assert(g.state == CC_ON || g.state == CC_RECORD); /* usable() said so */
  codecache_key key;
  if (make_key(&key, str, filename, start, flags, optimize) != 0)
    return NULL;
  if (g.state == CC_RECORD)
    return compile_recording(&key, str, filename, flags);
  PyObject *co = cached_code(&key);
  if (!co) {
    g.misses++;
    return NULL;
  }
  g.hits++;
  /* What CPython's parser raises first, and the future imports compiling
   * would have merged into the caller's flags. */
  if (PySys_Audit("compile", "yO", str, filename) < 0) {
    Py_DECREF(co);
    return NULL;
  }
  flags->cf_flags |= ((PyCodeObject *)co)->co_flags & PyCF_MASK;
  return co;
}

/* CPython's run_mod() after its compile, and run_eval_code_obj(). */
static PyObject *run_code(PyObject *co, PyObject *globals, PyObject *locals) {
  assert(PyCode_Check(co) && !PyErr_Occurred());
  if (PySys_Audit("exec", "O", co) < 0)
    return NULL;
  appbin_set_unhandled_keyboard_interrupt(0);
#if PY_VERSION_HEX >= 0x030D0000
  if (!globals || !PyDict_Check(globals)) {
    PyErr_SetString(PyExc_SystemError, "globals must be a real dict");
    return NULL;
  }
  int has_builtins = PyDict_ContainsString(globals, "__builtins__");
  if (has_builtins < 0)
    return NULL;
  if (!has_builtins && PyDict_SetItemString(globals, "__builtins__", appbin_interp_builtins()) < 0)
    return NULL;
#else
  if (globals && !_PyDict_GetItemStringWithError(globals, "__builtins__") &&
      (PyErr_Occurred() ||
       PyDict_SetItemString(globals, "__builtins__", appbin_interp_builtins()) < 0))
    return NULL;
#endif
  PyObject *v = PyEval_EvalCode(co, globals, locals);
  if (!v && PyErr_Occurred() == PyExc_KeyboardInterrupt)
    appbin_set_unhandled_keyboard_interrupt(1);
  return v;
}

PyObject *__wrap_PyRun_StringFlags(const char *str, int start, PyObject *globals, PyObject *locals,
                                   PyCompilerFlags *flags) {
  if (!usable(flags))
    return __real_PyRun_StringFlags(str, start, globals, locals, flags);
  PyObject *co = code_for(str, g.anon_filename, start, flags, -1);
  if (!co)
    return PyErr_Occurred() ? NULL : __real_PyRun_StringFlags(str, start, globals, locals, flags);
  PyObject *v = run_code(co, globals, locals);
  Py_DECREF(co);
  return v;
}

PyObject *__wrap_Py_CompileStringObject(const char *str, PyObject *filename, int start,
                                        PyCompilerFlags *flags, int optimize) {
  if (!usable(flags))
    return __real_Py_CompileStringObject(str, filename, start, flags, optimize);
  PyObject *co = code_for(str, filename, start, flags, optimize);
  if (co || PyErr_Occurred())
    return co;
  return __real_Py_CompileStringObject(str, filename, start, flags, optimize);
}

/* ---- regular expressions ------------------------------------------------------ */

#define SRE_FLAG_DEBUG 128 /* re.DEBUG: compile() prints the code, never cached */
#define REGEX_MAX_ARGS 8   /* of _sre.compile, the pattern included (3.11-3.14: 6) */

/* _sre.compile(pattern, *args) for the arguments the cache holds for
 * re._compiler.compile(pattern, flags); NULL without an exception when it
 * holds none (or the call is not one it answers: a str or bytes subclass, a
 * flags object that is not an int, re.DEBUG). */
static PyObject *cached_regex(PyObject *sre_compile, PyObject *pattern, PyObject *flags_obj) {
  if (g.state != CC_ON || !appbin_in_main_interpreter())
    return NULL;
  long flags = 0;
  if (flags_obj) {
    int overflow;
    if (!PyLong_CheckExact(flags_obj))
      return NULL;
    flags = PyLong_AsLongAndOverflow(flags_obj, &overflow);
    if (overflow || flags < INT32_MIN || flags > INT32_MAX) /* cannot fail: an exact int */
      return NULL;
  }
  if (flags & SRE_FLAG_DEBUG)
    return NULL;
  codecache_key key = {.filename = "", .flags = (int32_t)flags};
  if (PyUnicode_CheckExact(pattern)) {
    Py_ssize_t n;
    if (!(key.source = PyUnicode_AsUTF8AndSize(pattern, &n))) {
      PyErr_Clear(); /* lone surrogates: CPython parses it */
      return NULL;
    }
    key.source_len = (size_t)n;
    key.start = CODECACHE_START_REGEX_STR;
  } else if (PyBytes_CheckExact(pattern)) {
    key.source = PyBytes_AS_STRING(pattern);
    key.source_len = (size_t)PyBytes_GET_SIZE(pattern);
    key.start = CODECACHE_START_REGEX_BYTES;
  } else {
    return NULL;
  }
  size_t len;
  const uint8_t *data =
      codecache_find(&g.cc, &key, codecache_hash(key.source, key.source_len), &len);
  if (!data || len > PY_SSIZE_T_MAX) {
    g.regex_misses++;
    return NULL;
  }
  PyObject *parsed = PyMarshal_ReadObjectFromString((const char *)data, (Py_ssize_t)len);
  PyObject *args[REGEX_MAX_ARGS] = {pattern};
  Py_ssize_t n = parsed && PyTuple_CheckExact(parsed) ? PyTuple_GET_SIZE(parsed) : 0;
  if (n < 1 || n >= REGEX_MAX_ARGS) {
    Py_XDECREF(parsed); /* the member's digest matched: a packer's bug */
    PyErr_Clear();
    cache_unusable("a regular expression's entry does not unmarshal");
    return NULL;
  }
  for (Py_ssize_t i = 0; i < n; i++)
    args[i + 1] = PyTuple_GET_ITEM(parsed, i);
  PyObject *compiled = PyObject_Vectorcall(sre_compile, args, (size_t)n + 1, NULL);
  Py_DECREF(parsed);
  if (compiled)
    g.regex_hits++;
  return compiled;
}

/* re._compiler.compile(p, flags=0) in front of CPython's; self is the tuple
 * (CPython's compile, _sre.compile). */
static PyObject *regex_compile(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
  assert(PyTuple_CheckExact(self) && PyTuple_GET_SIZE(self) == 2);
  if (!kwnames && (nargs == 1 || nargs == 2)) {
    PyObject *compiled =
        cached_regex(PyTuple_GET_ITEM(self, 1), args[0], nargs == 2 ? args[1] : NULL);
    if (compiled || PyErr_Occurred())
      return compiled;
  }
  return PyObject_Vectorcall(PyTuple_GET_ITEM(self, 0), args, (size_t)nargs, kwnames);
}

static PyMethodDef regex_compile_def = {
    "compile", (PyCFunction)(void (*)(void))regex_compile, METH_FASTCALL | METH_KEYWORDS,
    "compile(p, flags=0)\n--\n\n"
    "re's compile, answered from app.bin's cache for the patterns start-up compiled "
    "when the packer ran it (CPython's compile is __self__[0])."};

void codecache_hook_wrap_regex_compiler(PyObject *module) {
  if (g.state == CC_UNLOADED)
    load();
  if (g.state != CC_ON || g.cc.regex_count == 0 || !appbin_in_main_interpreter())
    return;
  /* CPython's compile() and the _sre it calls, as the module has them. */
  PyObject *dict = PyModule_GetDict(module); /* borrowed, as are the next two */
  PyObject *compile = PyDict_GetItemString(dict, "compile");
  PyObject *sre = PyDict_GetItemString(dict, "_sre");
  if (!compile || !PyFunction_Check(compile) || !sre || !PyModule_Check(sre))
    return; /* not the compile() the cache was made for */
  Py_INCREF(compile);
  PyObject *sre_compile = PyObject_GetAttrString(sre, "compile");
  PyObject *self = sre_compile ? PyTuple_Pack(2, compile, sre_compile) : NULL;
  Py_DECREF(compile);
  Py_XDECREF(sre_compile);
  PyObject *name = self ? PyModule_GetNameObject(module) : NULL;
  PyObject *wrapper = name ? PyCFunction_NewEx(&regex_compile_def, self, name) : NULL;
  Py_XDECREF(name);
  Py_XDECREF(self);
  /* The cache only saves time: without it (out of memory here), CPython
   * compiles every pattern. */
  if (!wrapper || PyDict_SetItemString(dict, "compile", wrapper) != 0)
    PyErr_Clear();
  Py_XDECREF(wrapper);
}

PyObject *codecache_hook_info(void) {
  static const char *const states[] = {"unloaded", "off", "on", "record"};
  return Py_BuildValue("{sssIsksksksIsksk}", "state", states[g.state], "entries", g.cc.count,
                       "hits", g.hits, "misses", g.misses, "recorded", g.recorded, "regexes",
                       g.cc.regex_count, "regex_hits", g.regex_hits, "regex_misses",
                       g.regex_misses);
}
