#include "importer.h"

#include "archfs_libc.h"
#include "asgi.h"
#include "codecache_hook.h"
#include "codeconst.h"
#include "elfstub.h"
#include "extload.h"
#include "extremap.h"
#include "modindex.h"
#include "nativeprep.h"
#include "version.h"

#include <dlfcn.h>
#include <errno.h>
#include <marshal.h>
#include <stdio.h>
#include <string.h>

/* One payload per process: the importer's state is global. */
static struct {
  char *archive; /* path of the file holding the payload */
  size_t archive_len;
  const payload *payload;
  zipindex *zi;
  const manifest *mf;
  modindex mi;
  PyObject *finder;         /* the AppbinImporter instance */
  PyObject *module_spec;    /* importlib.machinery.ModuleSpec */
  PyObject *origin_kwnames; /* ("origin",) */
  PyObject *builtins_key;   /* "__builtins__" */
  PyObject *namespace_path; /* _bootstrap_external._NamespacePath, when first needed */
  PyObject *pathfinder_get_spec;
  PyObject *fix_co_filename;
  PyObject *create_dynamic;
  PyObject *exec_dynamic;
  PyObject *loaded_native; /* dict: member -> path of its in-memory file */
  PyObject *preloaded;     /* set: library members loaded by preload_libraries() */
  PyObject *frozen;        /* set: stdlib modules the interpreter has frozen */
  long magic;
} g;

/* ---- archive access ------------------------------------------------------- */

/* Reads a member into a new bytes object. */
static PyObject *read_member(const zipindex_entry *e) {
  if (e->size > (uint64_t)PY_SSIZE_T_MAX)
    return PyErr_Format(PyExc_MemoryError, "archive member %s is too large", e->name);
  PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)e->size);
  if (!bytes)
    return NULL;
  char err[512];
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = zipindex_read(g.zi, e, PyBytes_AS_STRING(bytes), err, sizeof(err));
  Py_END_ALLOW_THREADS if (rc != 0) {
    Py_DECREF(bytes);
    return PyErr_Format(PyExc_OSError, "appbin: %s", err);
  }
  return bytes;
}

/* A member's bytes without copying them where they need no decompression:
 * a stored member is used in place, in the archive's mapping (checked as
 * zipindex_read would); a compressed one is read into a new bytes object
 * left in *owner for the caller to release (NULL otherwise). */
static const char *member_bytes(const zipindex_entry *e, PyObject **owner) {
  *owner = NULL;
  if (e->method != ZIPINDEX_STORED) {
    *owner = read_member(e);
    return *owner ? PyBytes_AS_STRING(*owner) : NULL;
  }
  char err[512];
  PyThreadState *ts = PyEval_SaveThread(); /* a first read hashes the member */
  const char *data = zipindex_stored_data(g.zi, e, err, sizeof(err));
  PyEval_RestoreThread(ts);
  if (!data)
    PyErr_Format(PyExc_OSError, "appbin: %s", err);
  return data;
}

/* "<archive>/<member>" as a str. */
static PyObject *archive_path_of(const char *member, size_t len) {
  char stack[1024];
  size_t n = g.archive_len + 1 + len;
  char *buf = n < sizeof(stack) ? stack : PyMem_Malloc(n + 1);
  if (!buf)
    return PyErr_NoMemory();
  memcpy(buf, g.archive, g.archive_len);
  buf[g.archive_len] = '/';
  memcpy(buf + g.archive_len + 1, member, len);
  buf[n] = '\0'; /* decoding before the codecs are up needs a C string */
  PyObject *s = PyUnicode_DecodeFSDefaultAndSize(buf, (Py_ssize_t)n);
  if (buf != stack)
    PyMem_Free(buf);
  return s;
}

/* The member named by an absolute path inside the archive, or NULL (without
 * an exception) when the path is elsewhere. */
static const char *member_of_path(const char *path, size_t *len) {
  size_t n = strlen(path);
  if (n <= g.archive_len + 1 || memcmp(path, g.archive, g.archive_len) != 0 ||
      path[g.archive_len] != '/')
    return NULL;
  *len = n - g.archive_len - 1;
  return path + g.archive_len + 1;
}

static const modindex_module *lookup(PyObject *fullname) {
  Py_ssize_t len;
  const char *name = PyUnicode_AsUTF8AndSize(fullname, &len);
  if (!name)
    return NULL;
  return modindex_find(&g.mi, name, (size_t)len);
}

static const zipindex_entry *origin_entry(const modindex_module *m) { return modindex_origin(m); }

/* ModuleSpec(name, loader, origin=origin): origin is keyword-only. */
static PyObject *make_spec(PyObject *name, PyObject *loader, PyObject *origin) {
  PyObject *args[3] = {name, loader, origin};
  return PyObject_Vectorcall(g.module_spec, args, 2, origin ? g.origin_kwnames : NULL);
}

/* ---- native code ---------------------------------------------------------- */

/* Path of an in-memory copy of a native member, made once per member. */
static PyObject *native_path(const zipindex_entry *e) {
  PyObject *key = PyUnicode_FromStringAndSize(e->name, (Py_ssize_t)e->name_len);
  if (!key)
    return NULL;
  PyObject *path = PyDict_GetItemWithError(g.loaded_native, key);
  if (path || PyErr_Occurred()) {
    Py_DECREF(key);
    Py_XINCREF(path);
    return path;
  }
  /* archfs keeps one in-memory copy per member, shared with dlopen() of
   * the member's archive path (ctypes.CDLL), so neither loads it twice. */
  char buf[4096], err[1536];
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = archfs_code_path(e, buf, sizeof(buf), err, sizeof(err));
  Py_END_ALLOW_THREADS if (rc != 0) {
    Py_DECREF(key);
    return PyErr_Format(PyExc_ImportError, "appbin: %s", err);
  }
  path = PyUnicode_DecodeFSDefault(buf);
  if (!path || PyDict_SetItem(g.loaded_native, key, path) != 0) {
    Py_DECREF(key);
    Py_XDECREF(path);
    return NULL;
  }
  Py_DECREF(key);
  return path;
}

typedef struct copy_pages {
  const extremap_plan *plan;
  int memfd;
} copy_pages;

static long free_copy_pages(void *arg) {
  const copy_pages *c = arg;
  return extremap_free_pages(c->plan, c->memfd);
}

/* Once the loader has loaded a stored member from its memfd copy, maps the
 * pages still backed by the copy from app.bin instead and frees the copy:
 * what stays resident is what was touched, as for a file on disk. */
static void release_native_copy(const zipindex_entry *e, PyObject *path) {
  const char *cpath = PyUnicode_AsUTF8(path);
  char err[512];
  if (!cpath) {
    PyErr_Clear();
    return;
  }
  if (e->method != ZIPINDEX_STORED)
    return; /* a compressed member */
  /* The copy was made: its bytes in our mapping of app.bin are not needed. */
  const char *data = zipindex_stored_data(g.zi, e, err, sizeof(err));
  zipindex_release(g.zi, e);
  int memfd = extload_memfd_of(cpath);
  if (g.payload->fd < 0 || memfd < 0)
    return; /* the private directory's file */
  extremap_plan *plan =
      data ? extremap_remap(cpath, memfd, g.payload->fd,
                            (uint64_t)(data - (const char *)g.payload->map), err, sizeof(err))
           : NULL;
  long freed = -1;
  int released = 0, remapped = plan != NULL;
  if (plan) {
    copy_pages pages = {plan, memfd};
    released = archfs_code_release(e, free_copy_pages, &pages, &freed);
    extremap_plan_free(plan);
    if (released > 0 && freed < 0)
      snprintf(err, sizeof(err), "fallocate: %s", strerror((int)-freed));
  }
  if (!extload_debug)
    return;
  if (!remapped)
    fprintf(stderr, "appbin: debug: %s stays on its in-memory copy: %s\n", e->name, err);
  else if (released < 0)
    fprintf(stderr,
            "appbin: debug: %s mapped from the archive, its copy kept: a process forked while "
            "it loaded shares it\n",
            e->name);
  else if (released > 0 && freed >= 0)
    fprintf(stderr, "appbin: debug: %s mapped from the archive, %ld bytes of copy freed\n", e->name,
            freed);
  else if (released > 0)
    fprintf(stderr, "appbin: debug: %s mapped from the archive, its copy kept: %s\n", e->name, err);
}

/* The member whose in-memory path `path` is, for messages; NULL if none. */
static const char *member_of_native_path(PyObject *libs, PyObject *paths, const char *path) {
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(paths); i++) {
    const char *p = PyUnicode_AsUTF8(PyList_GET_ITEM(paths, i));
    if (!p) {
      PyErr_Clear();
      continue;
    }
    if (strcmp(p, path) == 0)
      return PyUnicode_AsUTF8(PyList_GET_ITEM(libs, i));
  }
  return NULL;
}

/* ImportError for a failed dlopen of the libraries `libs` of `ext`, naming
 * the member behind the first in-memory path in dlerror's message. */
static void preload_error(const zipindex_entry *ext, PyObject *libs, PyObject *paths,
                          const char *why) {
  const char *member = NULL;
  char path[64];
  const char *at = strstr(why, "/proc/self/fd/");
  if (at) {
    size_t n = strspn(at + 14, "0123456789");
    if (n > 0 && 14 + n < sizeof(path)) {
      memcpy(path, at, 14 + n);
      path[14 + n] = '\0';
      member = member_of_native_path(libs, paths, path);
    }
  }
  if (member)
    PyErr_Format(PyExc_ImportError, "appbin: cannot load the libraries of %s: %s (%s is %s)",
                 ext->name, why, path, member);
  else
    PyErr_Format(PyExc_ImportError, "appbin: cannot load the libraries of %s: %s", ext->name, why);
}

/* Loads the libraries an extension module needs (manifest "preload.<ext>", in
 * the dynamic loader's breadth-first order) so that its dlopen finds them
 * already loaded by soname. One dlopen() of a stub needing all of them by
 * path (elfstub.h) maps them all before resolving any of their own needs,
 * so libraries that need each other load, and every library's symbol scope
 * is the one it would have when loaded from a directory. Handles stay open
 * for the life of the process, and so does the stub's file: its path must
 * never name other bytes (see extload.h). */
static int preload_libraries(const zipindex_entry *ext) {
  char key[1024];
  if (snprintf(key, sizeof(key), "preload.%s", ext->name) >= (int)sizeof(key))
    return 0;
  const char *line = manifest_get(g.mf, key);
  if (!line)
    return 0;
  PyObject *libs = PyList_New(0), *paths = PyList_New(0);
  const char **cpaths = NULL;
  unsigned char *stub = NULL;
  int rc = -1, fresh = 0;
  if (!libs || !paths)
    goto done;
  for (const char *p = line; *p;) {
    p += strspn(p, " ");
    size_t n = strcspn(p, " ");
    if (n == 0)
      break;
    const zipindex_entry *lib = zipindex_find(g.zi, p, n);
    if (!lib) {
      PyErr_Format(PyExc_ImportError, "appbin: %s needs %.*s, which the archive lacks", ext->name,
                   (int)n, p);
      goto done;
    }
    PyObject *member = PyUnicode_FromStringAndSize(lib->name, (Py_ssize_t)lib->name_len);
    if (!member)
      goto done;
    int loaded = PySet_Contains(g.preloaded, member);
    PyObject *path = loaded < 0 ? NULL : native_path(lib);
    int failed = !path || PyList_Append(libs, member) != 0 || PyList_Append(paths, path) != 0;
    Py_DECREF(member);
    Py_XDECREF(path);
    if (failed)
      goto done;
    fresh |= !loaded;
    p += n;
  }
  if (!fresh) {
    rc = 0;
    goto done;
  }
  Py_ssize_t count = PyList_GET_SIZE(paths);
  cpaths = PyMem_Calloc((size_t)count, sizeof(*cpaths));
  if (!cpaths) {
    PyErr_NoMemory();
    goto done;
  }
  for (Py_ssize_t i = 0; i < count; i++)
    if (!(cpaths[i] = PyUnicode_AsUTF8(PyList_GET_ITEM(paths, i))))
      goto done;
  size_t stub_len;
  stub = elfstub_build(cpaths, (size_t)count, &stub_len);
  if (!stub) {
    PyErr_Format(PyExc_ImportError, "appbin: cannot build the loader stub for %s: %s", ext->name,
                 strerror(errno));
    goto done;
  }
  char stub_path[4096], err[1536];
  if (extload_write("appbin-preload-stub", stub, stub_len, stub_path, sizeof(stub_path), err,
                    sizeof(err)) != 0) {
    PyErr_Format(PyExc_ImportError, "appbin: %s", err);
    goto done;
  }
  if (!dlopen(stub_path, RTLD_NOW | RTLD_LOCAL)) {
    const char *why = dlerror();
    preload_error(ext, libs, paths, why ? why : "unknown error");
    goto done;
  }
  for (Py_ssize_t i = 0; i < count; i++) {
    PyObject *member = PyList_GET_ITEM(libs, i);
    int loaded = PySet_Contains(g.preloaded, member);
    if (loaded < 0 || (!loaded && PySet_Add(g.preloaded, member) != 0))
      goto done;
    if (loaded)
      continue;
    Py_ssize_t len;
    const char *name = PyUnicode_AsUTF8AndSize(member, &len);
    if (!name)
      goto done;
    if (extload_debug)
      fprintf(stderr, "appbin: debug: preloaded %s for %s\n", name, ext->name);
    const zipindex_entry *lib = zipindex_find(g.zi, name, (size_t)len);
    if (lib)
      release_native_copy(lib, PyList_GET_ITEM(paths, i));
  }
  rc = 0;
done:
  free(stub);
  PyMem_Free(cpaths);
  Py_XDECREF(libs);
  Py_XDECREF(paths);
  return rc;
}

static PyObject *create_extension(PyObject *spec, PyObject *name, const modindex_module *m) {
  if (preload_libraries(m->ext) != 0)
    return NULL;
  PyObject *path = native_path(m->ext);
  if (!path)
    return NULL;
  PyObject *tmp_spec = make_spec(name, Py_None, path);
  if (!tmp_spec) {
    Py_DECREF(path);
    return NULL;
  }
  PyObject *module = PyObject_CallOneArg(g.create_dynamic, tmp_spec);
  Py_DECREF(tmp_spec);
  if (module)
    release_native_copy(m->ext, path);
  /* From the first extension module loaded on (its loading done: the
   * loader's mmap() calls and the thread's page faults would take turns),
   * the thread of nativeprep.h makes the copies a server's start-up loads
   * ahead of native_path. */
  nativeprep_start();
  Py_DECREF(path);
  if (!module)
    return NULL;
  if (PyModule_Check(module)) {
    /* Single-phase modules got the /proc path as __file__: use ours. */
    PyObject *origin = PyObject_GetAttrString(spec, "origin");
    if (!origin || PyObject_SetAttrString(module, "__file__", origin) != 0) {
      Py_XDECREF(origin);
      Py_DECREF(module);
      return NULL;
    }
    Py_DECREF(origin);
  }
  return module;
}

/* ---- code objects ----------------------------------------------------------- */

static PyObject *compile_source(const modindex_module *m, PyObject *filename) {
  PyObject *source = read_member(m->source);
  if (!source)
    return NULL;
  PyObject *code =
      Py_CompileStringObject(PyBytes_AS_STRING(source), filename, Py_file_input, NULL, -1);
  Py_DECREF(source);
  return code;
}

static PyObject *load_pyc(const modindex_module *m, PyObject *filename) {
  if (m->code->size > (uint64_t)PY_SSIZE_T_MAX)
    return PyErr_Format(PyExc_MemoryError, "archive member %s is too large", m->code->name);
  PyObject *owner;
  const unsigned char *p = (const unsigned char *)member_bytes(m->code, &owner);
  if (!p)
    return NULL;
  Py_ssize_t n = (Py_ssize_t)m->code->size;
  long magic = n >= 16 ? (long)(p[0] | p[1] << 8 | p[2] << 16 | (unsigned long)p[3] << 24) : -1;
  if (magic != g.magic) {
    Py_XDECREF(owner);
    if (m->source)
      return compile_source(m, filename);
    return PyErr_Format(PyExc_ImportError, "appbin: bad magic number in %s", m->code->name);
  }
  PyObject *code = PyMarshal_ReadObjectFromString((const char *)p + 16, n - 16);
  if (!owner)
    zipindex_release(g.zi, m->code); /* unmarshalled: the code object holds copies */
  Py_XDECREF(owner);
  if (!code)
    return NULL;
  if (!PyCode_Check(code)) {
    Py_DECREF(code);
    return PyErr_Format(PyExc_ImportError, "appbin: %s holds no code object", m->code->name);
  }
  codeconst_untrack(code);
  /* The packer compiled with the member path; tracebacks want ours. */
  PyObject *r = PyObject_CallFunctionObjArgs(g.fix_co_filename, code, filename, NULL);
  if (!r) {
    Py_DECREF(code);
    return NULL;
  }
  Py_DECREF(r);
  return code;
}

static PyObject *get_code_for(const modindex_module *m) {
  if (m->ext || m->kind == MODINDEX_NAMESPACE)
    Py_RETURN_NONE;
  const zipindex_entry *origin = origin_entry(m);
  PyObject *filename = archive_path_of(origin->name, origin->name_len);
  if (!filename)
    return NULL;
  PyObject *code = m->code ? load_pyc(m, filename) : compile_source(m, filename);
  Py_DECREF(filename);
  return code;
}

/* ---- the AppbinImporter type ------------------------------------------------ */

typedef struct {
  PyObject_HEAD
} ImporterObject;

static PyObject *not_found(PyObject *fullname) {
  return PyErr_Format(PyExc_ImportError, "appbin: no module named %R in the archive", fullname);
}

static PyObject *dirs_as_paths(const modindex_module *m) {
  PyObject *list = PyList_New((Py_ssize_t)m->ndirs);
  if (!list)
    return NULL;
  for (size_t i = 0; i < m->ndirs; i++) {
    PyObject *p = archive_path_of(m->dirs[i], strlen(m->dirs[i]));
    if (!p) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, p);
  }
  return list;
}

/* _NamespacePath(name, paths, PathFinder._get_spec), as PathFinder makes
 * for namespace packages (the external bootstrap exists only after the
 * interpreter's main initialisation, hence the lazy lookup). */
static PyObject *namespace_path(PyObject *fullname, PyObject *paths) {
  if (!paths)
    return NULL;
  if (!g.namespace_path) {
    PyObject *ext = PyImport_ImportModule("_frozen_importlib_external");
    PyObject *finder = ext ? PyObject_GetAttrString(ext, "PathFinder") : NULL;
    g.pathfinder_get_spec = finder ? PyObject_GetAttrString(finder, "_get_spec") : NULL;
    g.namespace_path =
        ext && g.pathfinder_get_spec ? PyObject_GetAttrString(ext, "_NamespacePath") : NULL;
    Py_XDECREF(finder);
    Py_XDECREF(ext);
    if (!g.namespace_path)
      return NULL;
  }
  return PyObject_CallFunctionObjArgs(g.namespace_path, fullname, paths, g.pathfinder_get_spec,
                                      NULL);
}

PyDoc_STRVAR(find_spec_doc, "find_spec($self, fullname, path=None, target=None, /)\n--\n\n"
                            "Return a ModuleSpec for a module in the archive, or None.");

static PyObject *importer_find_spec(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 3 || !PyUnicode_Check(args[0])) {
    PyErr_SetString(PyExc_TypeError, "find_spec(fullname, path=None, target=None)");
    return NULL;
  }
  PyObject *fullname = args[0];
  /* Frozen stdlib modules come from the interpreter itself (FrozenImporter,
   * later on sys.meta_path), as they do for python3.11: no archive read, no
   * unmarshalling. */
  int frozen = g.frozen ? PySet_Contains(g.frozen, fullname) : 0;
  if (frozen != 0) {
    if (frozen < 0)
      return NULL;
    Py_RETURN_NONE;
  }
  const modindex_module *m = lookup(fullname);
  if (!m) {
    if (PyErr_Occurred())
      return NULL;
    Py_RETURN_NONE;
  }
  PyObject *spec, *locations = NULL;
  if (m->kind == MODINDEX_NAMESPACE) {
    /* Our loader (not None), so that importlib.resources asks us. */
    spec = make_spec(fullname, self, NULL);
  } else {
    const zipindex_entry *origin = origin_entry(m);
    PyObject *path = archive_path_of(origin->name, origin->name_len);
    if (!path)
      return NULL;
    spec = make_spec(fullname, self, path);
    Py_DECREF(path);
    if (spec && PyObject_SetAttrString(spec, "has_location", Py_True) != 0)
      Py_CLEAR(spec);
  }
  if (!spec)
    return NULL;
  if (m->kind == MODINDEX_PACKAGE || m->kind == MODINDEX_NAMESPACE) {
    locations = dirs_as_paths(m);
    if (locations && m->kind == MODINDEX_NAMESPACE)
      Py_SETREF(locations, namespace_path(fullname, locations));
    if (!locations || PyObject_SetAttrString(spec, "submodule_search_locations", locations) != 0) {
      Py_XDECREF(locations);
      Py_DECREF(spec);
      return NULL;
    }
    Py_DECREF(locations);
  }
  return spec;
}

static PyObject *importer_create_module(PyObject *self, PyObject *spec) {
  (void)self;
  PyObject *name = PyObject_GetAttrString(spec, "name");
  if (!name)
    return NULL;
  PyObject *result = NULL;
  const modindex_module *m = PyUnicode_Check(name) ? lookup(name) : NULL;
  if (m && m->ext)
    result = create_extension(spec, name, m);
  else if (!PyErr_Occurred())
    result = Py_NewRef(Py_None);
  Py_DECREF(name);
  return result;
}

static PyObject *call_runtime(const char *func, PyObject *arg1, PyObject *arg2);

/* Modules that learn once loaded where the archive is: pkg_resources that
 * our modules' files are files, sysconfig and site that the stdlib and
 * site-packages are <app.bin>/stdlib and <app.bin>/site-packages
 * (_appbin_runtime.adopt_<name>). */
static const char *const adopted[] = {"pkg_resources", "sysconfig", "site"};

static int adopt_if_named(const modindex_module *m, PyObject *module) {
  for (size_t i = 0; i < sizeof(adopted) / sizeof(adopted[0]); i++) {
    size_t len = strlen(adopted[i]);
    if (m->name_len != len || memcmp(m->name, adopted[i], len) != 0)
      continue;
    char func[32];
    snprintf(func, sizeof(func), "adopt_%s", adopted[i]);
    PyObject *r = call_runtime(func, module, Py_None);
    if (!r)
      return -1;
    Py_DECREF(r);
    return 0;
  }
  return 0;
}

/* The module whose compile() the code cache answers for (codecache_hook.h). */
#define REGEX_COMPILER "re._compiler"

static PyObject *importer_exec_module(PyObject *self, PyObject *module) {
  (void)self;
  PyObject *spec = PyObject_GetAttrString(module, "__spec__");
  if (!spec)
    return NULL;
  PyObject *name = PyObject_GetAttrString(spec, "name");
  Py_DECREF(spec);
  if (!name)
    return NULL;
  const modindex_module *m = PyUnicode_Check(name) ? lookup(name) : NULL;
  if (!m) {
    PyObject *r = PyErr_Occurred() ? NULL : not_found(name);
    Py_DECREF(name);
    return r;
  }
  Py_DECREF(name);
  if (m->ext)
    return PyObject_CallOneArg(g.exec_dynamic, module);
  if (m->kind == MODINDEX_NAMESPACE)
    Py_RETURN_NONE;
  PyObject *code = get_code_for(m);
  if (!code)
    return NULL;
  /* As exec() does: code that reads globals()["__builtins__"] needs it. */
  PyObject *dict = PyModule_GetDict(module);
  int has_builtins = dict ? PyDict_Contains(dict, g.builtins_key) : -1;
  if (has_builtins == 0 && PyDict_SetItem(dict, g.builtins_key, PyEval_GetBuiltins()) != 0)
    has_builtins = -1;
  PyObject *r = has_builtins >= 0 ? PyEval_EvalCode(code, dict, dict) : NULL;
  Py_DECREF(code);
  if (!r)
    return NULL;
  Py_DECREF(r);
  if (adopt_if_named(m, module) != 0)
    return NULL;
  if (m->name_len == strlen(REGEX_COMPILER) && memcmp(m->name, REGEX_COMPILER, m->name_len) == 0)
    codecache_hook_wrap_regex_compiler(module);
  Py_RETURN_NONE;
}

static const modindex_module *lookup_or_raise(PyObject *fullname) {
  if (!PyUnicode_Check(fullname)) {
    PyErr_SetString(PyExc_TypeError, "module name must be str");
    return NULL;
  }
  const modindex_module *m = lookup(fullname);
  if (!m && !PyErr_Occurred())
    not_found(fullname);
  return m;
}

static PyObject *importer_get_code(PyObject *self, PyObject *fullname) {
  (void)self;
  const modindex_module *m = lookup_or_raise(fullname);
  return m ? get_code_for(m) : NULL;
}

static PyObject *importer_get_source(PyObject *self, PyObject *fullname) {
  (void)self;
  const modindex_module *m = lookup_or_raise(fullname);
  if (!m)
    return NULL;
  if (!m->source)
    Py_RETURN_NONE;
  PyObject *data = read_member(m->source);
  if (!data)
    return NULL;
  PyObject *external = PyImport_ImportModule("_frozen_importlib_external");
  PyObject *text = external ? PyObject_CallMethod(external, "decode_source", "O", data) : NULL;
  Py_XDECREF(external);
  Py_DECREF(data);
  return text;
}

static PyObject *importer_get_filename(PyObject *self, PyObject *fullname) {
  (void)self;
  const modindex_module *m = lookup_or_raise(fullname);
  if (!m)
    return NULL;
  if (m->kind == MODINDEX_NAMESPACE)
    return not_found(fullname);
  const zipindex_entry *origin = origin_entry(m);
  return archive_path_of(origin->name, origin->name_len);
}

static PyObject *importer_is_package(PyObject *self, PyObject *fullname) {
  (void)self;
  const modindex_module *m = lookup_or_raise(fullname);
  if (!m)
    return NULL;
  return PyBool_FromLong(m->kind == MODINDEX_PACKAGE || m->kind == MODINDEX_NAMESPACE);
}

static PyObject *read_disk_file(PyObject *path) {
  PyObject *io = PyImport_ImportModule("_io");
  if (!io)
    return NULL;
  PyObject *f = PyObject_CallMethod(io, "open_code", "O", path);
  Py_DECREF(io);
  if (!f)
    return NULL;
  PyObject *data = PyObject_CallMethod(f, "read", NULL);
  PyObject *r = PyObject_CallMethod(f, "close", NULL);
  Py_DECREF(f);
  if (!r) {
    Py_XDECREF(data);
    return NULL;
  }
  Py_DECREF(r);
  return data;
}

static PyObject *importer_get_data(PyObject *self, PyObject *path) {
  (void)self;
  if (!PyUnicode_Check(path)) {
    PyErr_SetString(PyExc_TypeError, "get_data() argument must be str");
    return NULL;
  }
  const char *cpath = PyUnicode_AsUTF8(path);
  if (!cpath)
    return NULL;
  size_t len;
  const char *member = member_of_path(cpath, &len);
  const zipindex_entry *e = member ? zipindex_find(g.zi, member, len) : NULL;
  /* Other spellings ("pkg/../pkg/x", a directory) and real files: through
   * the file system, where archfs serves the archive's with its errors. */
  return e ? read_member(e) : read_disk_file(path);
}

static PyObject *call_runtime(const char *func, PyObject *arg1, PyObject *arg2) {
  PyObject *rt = PyImport_ImportModule("_appbin_runtime");
  if (!rt)
    return NULL;
  PyObject *r = PyObject_CallMethod(rt, func, "OO", arg1, arg2);
  Py_DECREF(rt);
  return r;
}

static PyObject *importer_get_resource_reader(PyObject *self, PyObject *fullname) {
  (void)self;
  const modindex_module *m = lookup_or_raise(fullname);
  if (!m)
    return NULL;
  if (m->kind != MODINDEX_PACKAGE && m->kind != MODINDEX_NAMESPACE)
    Py_RETURN_NONE;
  PyObject *dirs = PyList_New((Py_ssize_t)m->ndirs);
  for (size_t i = 0; dirs && i < m->ndirs; i++) {
    PyObject *d = PyUnicode_FromString(m->dirs[i]);
    if (!d) {
      Py_CLEAR(dirs);
      break;
    }
    PyList_SET_ITEM(dirs, (Py_ssize_t)i, d);
  }
  if (!dirs)
    return NULL;
  PyObject *r = call_runtime("resource_reader", fullname, dirs);
  Py_DECREF(dirs);
  return r;
}

static PyObject *importer_invalidate_caches(PyObject *self, PyObject *noargs) {
  (void)self, (void)noargs;
  Py_RETURN_NONE;
}

static PyObject *importer_repr(PyObject *self) {
  (void)self;
  return PyUnicode_FromFormat("<AppbinImporter %s>", g.archive);
}

static PyMethodDef importer_methods[] = {
    {"find_spec", (PyCFunction)(void (*)(void))importer_find_spec, METH_FASTCALL, find_spec_doc},
    {"create_module", importer_create_module, METH_O,
     "create_module($self, spec, /)\n--\n\nLoad an extension module; None for Python code."},
    {"exec_module", importer_exec_module, METH_O,
     "exec_module($self, module, /)\n--\n\nRun a module's code in its namespace."},
    {"get_code", importer_get_code, METH_O,
     "get_code($self, fullname, /)\n--\n\nThe module's code object (None for extensions)."},
    {"get_source", importer_get_source, METH_O,
     "get_source($self, fullname, /)\n--\n\nThe module's source text, or None."},
    {"get_filename", importer_get_filename, METH_O,
     "get_filename($self, fullname, /)\n--\n\nThe module's __file__."},
    {"is_package", importer_is_package, METH_O,
     "is_package($self, fullname, /)\n--\n\nWhether the module is a package."},
    {"get_data", importer_get_data, METH_O,
     "get_data($self, path, /)\n--\n\nThe bytes of a file in the archive (or on disk)."},
    {"get_resource_reader", importer_get_resource_reader, METH_O,
     "get_resource_reader($self, fullname, /)\n--\n\nA reader for importlib.resources."},
    {"invalidate_caches", importer_invalidate_caches, METH_NOARGS,
     "invalidate_caches($self, /)\n--\n\nNothing to do: the archive never changes."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ImporterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_appbin.AppbinImporter",
    .tp_basicsize = sizeof(ImporterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("Meta-path finder and loader for modules in the appbin archive."),
    .tp_methods = importer_methods,
    .tp_repr = importer_repr,
};

/* ---- module-level functions (used by the runtime helpers) ------------------- */

static const char *member_arg(PyObject *arg, size_t *len) {
  Py_ssize_t n;
  const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
  if (s) {
    while (n > 0 && s[n - 1] == '/')
      n--;
    *len = (size_t)n;
  }
  return s;
}

static PyObject *appbin_read(PyObject *mod, PyObject *arg) {
  (void)mod;
  size_t len;
  const char *member = member_arg(arg, &len);
  if (!member)
    return NULL;
  const zipindex_entry *e = zipindex_find(g.zi, member, len);
  if (!e) {
    errno = ENOENT;
    return PyErr_SetFromErrnoWithFilenameObject(PyExc_FileNotFoundError, arg);
  }
  return read_member(e);
}

static PyObject *appbin_stat(PyObject *mod, PyObject *arg) {
  (void)mod;
  size_t len;
  const char *member = member_arg(arg, &len);
  if (!member)
    return NULL;
  if (zipindex_find(g.zi, member, len))
    return PyLong_FromLong(1);
  return PyLong_FromLong(zipindex_is_dir(g.zi, member, len) ? 2 : 0);
}

static PyObject *appbin_listdir(PyObject *mod, PyObject *arg) {
  (void)mod;
  size_t len;
  const char *dir = member_arg(arg, &len);
  if (!dir)
    return NULL;
  char prefix[4096];
  if (len + 2 > sizeof(prefix))
    return PyErr_Format(PyExc_ValueError, "path too long");
  memcpy(prefix, dir, len);
  if (len)
    prefix[len++] = '/';
  PyObject *names = PyList_New(0);
  if (!names)
    return NULL;
  const char *last = NULL;
  size_t last_len = 0;
  for (size_t i = zipindex_lower_bound(g.zi, prefix, len); i < g.zi->count; i++) {
    const zipindex_entry *e = &g.zi->entries[i];
    if (e->name_len < len || memcmp(e->name, prefix, len) != 0)
      break;
    const char *child = e->name + len;
    size_t clen = strcspn(child, "/");
    if (clen == 0 || (last && last_len == clen && memcmp(last, child, clen) == 0))
      continue;
    last = child, last_len = clen;
    PyObject *s = PyUnicode_FromStringAndSize(child, (Py_ssize_t)clen);
    if (!s || PyList_Append(names, s) != 0) {
      Py_XDECREF(s);
      Py_DECREF(names);
      return NULL;
    }
    Py_DECREF(s);
  }
  return names;
}

static PyObject *appbin_add_root(PyObject *mod, PyObject *arg) {
  (void)mod;
  size_t len;
  const char *dir = member_arg(arg, &len);
  if (!dir)
    return NULL;
  char root[4096];
  if (len + 2 > sizeof(root))
    return PyErr_Format(PyExc_ValueError, "path too long");
  memcpy(root, dir, len);
  root[len] = '/';
  root[len + 1] = '\0';
  int rc = modindex_add_root(&g.mi, root);
  if (rc < 0)
    return PyErr_NoMemory();
  return PyBool_FromLong(rc == 0);
}

static PyObject *appbin_manifest(PyObject *mod, PyObject *noargs) {
  (void)mod, (void)noargs;
  PyObject *d = PyDict_New();
  for (size_t i = 0; d && i < g.mf->count; i++) {
    PyObject *v = PyUnicode_FromString(g.mf->entries[i].value);
    if (!v || PyDict_SetItemString(d, g.mf->entries[i].key, v) != 0) {
      Py_XDECREF(v);
      Py_CLEAR(d);
      break;
    }
    Py_DECREF(v);
  }
  return d;
}

static PyObject *appbin_release_memory(PyObject *mod, PyObject *noargs) {
  (void)mod, (void)noargs;
  payload_drop_cache(g.payload);
  zipindex_hold_releases(g.zi, 0); /* from now on readers drop what they read */
  Py_RETURN_NONE;
}

static PyObject *appbin_verify_wait(PyObject *mod, PyObject *noargs) {
  (void)mod, (void)noargs;
  char err[512];
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = zipindex_verify_wait(g.zi, err, sizeof(err));
  Py_END_ALLOW_THREADS if (rc != 0) return PyErr_Format(PyExc_OSError, "appbin: %s", err);
  Py_RETURN_NONE;
}

static PyObject *appbin_archive_info(PyObject *mod, PyObject *noargs) {
  (void)mod, (void)noargs;
  size_t stored = 0;
  for (size_t i = 0; i < g.zi->count; i++)
    stored += g.zi->entries[i].method == ZIPINDEX_STORED;
  return Py_BuildValue("{snsnsnsi}", "members", (Py_ssize_t)g.zi->count, "stored",
                       (Py_ssize_t)stored, "checked", (Py_ssize_t)zipindex_checked_count(g.zi),
                       "all_checked", atomic_load(&g.zi->all_checked));
}

static PyObject *appbin_native_copies(PyObject *mod, PyObject *noargs) {
  (void)mod, (void)noargs;
  return PySequence_List(g.loaded_native);
}

static PyObject *appbin_native_prep_info(PyObject *mod, PyObject *noargs) {
  (void)mod, (void)noargs;
  nativeprep_info info;
  nativeprep_get_info(&info);
  return Py_BuildValue("{snsnsnsnsO}", "listed", (Py_ssize_t)info.listed, "made",
                       (Py_ssize_t)info.made, "used", (Py_ssize_t)info.used, "discarded",
                       (Py_ssize_t)info.discarded, "running", info.running ? Py_True : Py_False);
}

static PyObject *appbin_code_cache_info(PyObject *mod, PyObject *noargs) {
  (void)mod, (void)noargs;
  return codecache_hook_info();
}

static PyMethodDef appbin_functions[] = {
    {"verify_wait", appbin_verify_wait, METH_NOARGS,
     "verify_wait()\n--\n\nReturn once every byte of the archive is verified (the check "
     "started with the server); a damaged archive ends the process."},
    {"release_memory", appbin_release_memory, METH_NOARGS,
     "release_memory()\n--\n\nDrop the archive's pages from memory and from the page "
     "cache (they are read again if needed): call once start-up imports are done."},
    {"read", appbin_read, METH_O, "read(member, /)\n--\n\nThe bytes of an archive member."},
    {"stat", appbin_stat, METH_O,
     "stat(member, /)\n--\n\n0 when missing, 1 for a file, 2 for a directory."},
    {"listdir", appbin_listdir, METH_O,
     "listdir(dir, /)\n--\n\nNames directly under an archive directory ('' is the root)."},
    {"add_root", appbin_add_root, METH_O,
     "add_root(dir, /)\n--\n\nImport modules from an archive directory too (for .pth)."},
    {"manifest", appbin_manifest, METH_NOARGS, "manifest()\n--\n\nThe payload manifest as a dict."},
    {"archive_info", appbin_archive_info, METH_NOARGS,
     "archive_info()\n--\n\nThe archive's member count (directories included), how many "
     "are stored, how many have been checked against their digests so far, and whether all "
     "have."},
    {"native_copies", appbin_native_copies, METH_NOARGS,
     "native_copies()\n--\n\nThe shared objects (members) the importer has loaded from "
     "in-memory copies, in the order it first asked for them (appbin-pack's training run "
     "records this as the manifest's startup.native)."},
    {"native_prep_info", appbin_native_prep_info, METH_NOARGS,
     "native_prep_info()\n--\n\nThe copies of startup.native made ahead of the importer: "
     "how many are listed, made, used since, freed unused, and whether the thread runs."},
    {"code_cache_info", appbin_code_cache_info, METH_NOARGS,
     "code_cache_info()\n--\n\nThe pack-time code cache's state and this process's hits and "
     "misses (exec(), eval(), compile() of strings)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef appbin_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_appbin",
    .m_doc = PyDoc_STR("The appbin host: archive access and the C importer."),
    .m_size = -1,
    .m_methods = appbin_functions,
};

static PyObject *init_appbin_module(void) {
  if (PyType_Ready(&ImporterType) < 0)
    return NULL;
  PyObject *m = PyModule_Create(&appbin_module);
  if (!m)
    return NULL;
  if (!g.finder)
    g.finder = PyObject_New(PyObject, &ImporterType);
  PyObject *archive = PyUnicode_DecodeFSDefault(g.archive ? g.archive : "");
  if (!g.finder || !archive || PyModule_AddObjectRef(m, "importer", g.finder) < 0 ||
      PyModule_AddObject(m, "archive_path", archive) < 0 ||
      PyModule_AddObjectRef(m, "AppbinImporter", (PyObject *)&ImporterType) < 0 ||
      asgi_add_types(m) < 0) {
    Py_XDECREF(archive);
    Py_DECREF(m);
    return NULL;
  }
  return m;
}

/* ---- setup ------------------------------------------------------------------ */

int importer_setup(const char *archive_path, const payload *pl, zipindex *zi, const manifest *mf,
                   char *err, size_t errlen) {
  g.payload = pl;
  g.archive = strdup(archive_path);
  if (!g.archive)
    goto oom;
  g.archive_len = strlen(archive_path);
  g.zi = zi;
  g.mf = mf;
  /* The archive as a read-only directory tree at "<archive>/", for the open,
   * stat and listdir of Python code and of C libraries. */
  if (archfs_mount(archive_path, zi, err, errlen) != 0)
    return -1;
  if (nativeprep_init(zi, mf) != 0 || modindex_init(&g.mi, zi) != 0)
    goto oom;
  static const char *const roots[] = {"stdlib/lib-dynload/", "stdlib/", "site-packages/"};
  for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++)
    if (modindex_add_root(&g.mi, roots[i]) < 0)
      goto oom;
  return 0;
oom:
  snprintf(err, errlen, "out of memory building the module index");
  return -1;
}

int importer_register_builtin(void) {
  return PyImport_AppendInittab("_appbin", init_appbin_module);
}

static PyObject *attr_of(const char *module, const char *attr) {
  PyObject *m = PyImport_ImportModule(module);
  if (!m)
    return NULL;
  PyObject *a = PyObject_GetAttrString(m, attr);
  Py_DECREF(m);
  return a;
}

/* The names FrozenImporter will serve: _imp._frozen_module_names() (3.11+)
 * that _imp.is_frozen() accepts (it honours -X frozen_modules=off). An
 * interpreter without them gets an empty set: everything from the archive. */
static PyObject *frozen_stdlib_names(void) {
  PyObject *names = PySet_New(NULL);
  PyObject *imp = names ? PyImport_ImportModule("_imp") : NULL;
  if (!imp) {
    Py_XDECREF(names);
    return NULL;
  }
  PyObject *all = PyObject_HasAttrString(imp, "_frozen_module_names")
                      ? PyObject_CallMethod(imp, "_frozen_module_names", NULL)
                      : PyTuple_New(0);
  PyObject *it = all ? PyObject_GetIter(all) : NULL;
  for (PyObject *name; it && (name = PyIter_Next(it)) != NULL;) {
    PyObject *yes = PyObject_CallMethod(imp, "is_frozen", "O", name);
    int ok = yes && (!PyObject_IsTrue(yes) || PySet_Add(names, name) == 0);
    Py_XDECREF(yes);
    Py_DECREF(name);
    if (!ok)
      Py_CLEAR(it);
  }
  int failed = !it || PyErr_Occurred();
  Py_XDECREF(it);
  Py_XDECREF(all);
  Py_DECREF(imp);
  if (failed) {
    Py_DECREF(names);
    return NULL;
  }
  return names;
}

int importer_set_stdlib_dir(void) {
  PyObject *stdlib_dir = archive_path_of("stdlib", 6);
  int rc = stdlib_dir ? PySys_SetObject("_stdlib_dir", stdlib_dir) : -1;
  Py_XDECREF(stdlib_dir);
  return rc;
}

int importer_install(void) {
  PyObject *mod = PyImport_ImportModule("_appbin");
  if (!mod)
    return -1;
  Py_DECREF(mod);
  g.magic = APPBIN_PYC_MAGIC; /* importlib cannot tell it before main init */
  g.module_spec = attr_of("_frozen_importlib", "ModuleSpec");
  g.fix_co_filename = attr_of("_imp", "_fix_co_filename");
  g.create_dynamic = attr_of("_imp", "create_dynamic");
  g.exec_dynamic = attr_of("_imp", "exec_dynamic");
  g.loaded_native = PyDict_New();
  g.preloaded = PySet_New(NULL);
  g.frozen = frozen_stdlib_names();
  g.origin_kwnames = Py_BuildValue("(s)", "origin");
  g.builtins_key = PyUnicode_InternFromString("__builtins__");
  if (!g.origin_kwnames || !g.builtins_key || !g.module_spec || !g.fix_co_filename ||
      !g.create_dynamic || !g.exec_dynamic || !g.loaded_native || !g.preloaded || !g.frozen)
    return -1;
  PyObject *meta_path = PySys_GetObject("meta_path"); /* borrowed */
  if (!meta_path || !PyList_Check(meta_path)) {
    PyErr_SetString(PyExc_RuntimeError, "sys.meta_path is missing");
    return -1;
  }
  return PyList_Insert(meta_path, 0, g.finder);
}
