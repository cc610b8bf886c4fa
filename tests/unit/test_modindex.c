/* modindex: module names over a synthetic archive with the host's roots
 * ("stdlib/lib-dynload/", "stdlib/", "site-packages/", in that order):
 * modules from .pyc/.py, packages, extension suffixes, the precedence rules
 * (extension over source, package over module, earlier root first, regular
 * over namespace), namespace packages spanning roots, names that are not
 * modules, and a large archive for the hash table. */
#include "check.h"
#include "modindex.h"
#include "ziptest.h"

#include <stdlib.h>
#include <string.h>

#define EXT APPBIN_EXT_SUFFIX /* the linked CPython's, e.g. .cpython-311-x86_64-linux-gnu.so */

static const char *const files[] = {
    /* modules, packages */
    "stdlib/os.py",
    "stdlib/os.pyc",
    "stdlib/onlypyc.pyc",
    "stdlib/onlypy.py",
    "stdlib/json/__init__.py",
    "stdlib/json/__init__.pyc",
    "stdlib/json/decoder.py",
    "stdlib/json/decoder.pyc",
    "stdlib/email/mime/text.py", /* package email has no __init__ here */
    /* extensions */
    "stdlib/lib-dynload/_ssl" EXT,
    "stdlib/lib-dynload/_dyn" EXT,
    "stdlib/_dyn.py", /* lib-dynload is an earlier root */
    "site-packages/abi.abi3.so",
    "site-packages/plain.so",
    "site-packages/pkg/__init__.py",
    "site-packages/pkg/_speed" EXT,
    "site-packages/pkg/sub/__init__.pyc",
    "site-packages/pkg/sub/leaf.pyc",
    "site-packages/old.cpython-310-x86_64-linux-gnu.so",
    "site-packages/arm.cpython-311-aarch64-linux-gnu.so",
    "site-packages/win.pyd",
    "site-packages/win2.cp311-win_amd64.pyd",
    /* extension beats source in the same root, whatever the sort order */
    "site-packages/fast.py",
    "site-packages/fast" EXT,
    "site-packages/fast2.py",
    "site-packages/fast2.pyc",
    "site-packages/fast2.so",
    /* package beats module (and extension) in the same root */
    "site-packages/dual.py",
    "site-packages/dual/__init__.py",
    "site-packages/dual2" EXT,
    "site-packages/dual2/__init__.pyc",
    /* the earlier root wins */
    "stdlib/shadow.py",
    "site-packages/shadow.py",
    "stdlib/shadowmod.py",
    "site-packages/shadowmod/__init__.py",
    "stdlib/shadowpkg/__init__.py",
    "site-packages/shadowpkg.py",
    "stdlib/mixed.py",
    "site-packages/mixed" EXT,
    /* regular beats namespace, in either root order */
    "stdlib/nsmod/x.py",
    "site-packages/nsmod.py",
    "stdlib/modns.py",
    "site-packages/modns/y.py",
    "stdlib/nspkg/a.py",
    "site-packages/nspkg/__init__.py",
    /* a namespace package in two roots, with a nested namespace */
    "stdlib/ns/a.py",
    "stdlib/ns/a.pyc",
    "site-packages/ns/b.py",
    "site-packages/ns/deep/c.py",
    /* not modules */
    "site-packages/foo-1.0.dist-info/METADATA",
    "site-packages/foo-1.0.dist-info/entry.py",
    "site-packages/pkg/__pycache__/mod.cpython-311.pyc",
    "site-packages/1bad.py",
    "site-packages/a.b.py",
    "site-packages/__init__.py",
    "site-packages/.hidden.py",
    "site-packages/README.txt",
    "site-packages/stub.pyi",
    "site-packages/gui.pyw",
    "site-packages/.py",
    "site-packages/x/.py",
    "site-packages/bad-dir/mod.py",
    "site-packages/sp ace.py",
    "stdlib/lib-dynload/notes.txt",
    "appbin/manifest",
    "appbin/libs/libfoo.so.1",
    "appbin/libs/libbar.so",
    /* non-ASCII identifiers */
    "site-packages/\xc3\xbcnicode.py",
    /* directory entries */
    "site-packages/emptydir/",
    "stdlib/",
};
#define NFILES (sizeof(files) / sizeof(files[0]))

static uint8_t *zip;
static zipindex zi;
static modindex mi;

static const modindex_module *find(const char *name) {
  return modindex_find(&mi, name, strlen(name));
}

static int open_index(const char *const *names, size_t n) {
  ziptest z;
  zt_init(&z);
  for (size_t i = 0; i < n; i++)
    zt_add_str(&z, names[i], names[i]);
  size_t len;
  zip = zt_finish(&z, 0, &len);
  char err[256] = "";
  if (!CHECK_EQ_INT(zipindex_open(&zi, zip, len, err, sizeof(err)), 0)) {
    fprintf(stderr, "  err: %s\n", err);
    free(zip);
    return -1;
  }
  CHECK_EQ_INT(modindex_init(&mi, &zi), 0);
  return 0;
}

static void close_index(void) {
  modindex_free(&mi);
  zipindex_close(&zi);
  free(zip);
  zip = NULL;
}

static int add_roots(void) {
  int ok = CHECK_EQ_INT(modindex_add_root(&mi, "stdlib/lib-dynload/"), 0);
  ok &= CHECK_EQ_INT(modindex_add_root(&mi, "stdlib/"), 0);
  ok &= CHECK_EQ_INT(modindex_add_root(&mi, "site-packages/"), 0);
  return ok;
}

static const char *entry_name(const zipindex_entry *e) { return e ? e->name : NULL; }

/* Checks one module: kind, root, and the members behind it (NULL = none). */
static void expect(const char *name, modindex_kind kind, size_t root, const char *code,
                   const char *source, const char *ext, int line) {
  const modindex_module *m = find(name);
  if (!check_report_(m != NULL, __FILE__, line, "module %s found", name))
    return;
  check_report_(m->kind == kind, __FILE__, line, "%s: kind %d (want %d)", name, m->kind, kind);
  check_report_(strcmp(m->name, name) == 0 && m->name_len == strlen(name), __FILE__, line,
                "%s: name \"%s\"", name, m->name);
  if (kind != MODINDEX_NAMESPACE)
    check_report_(m->root == root, __FILE__, line, "%s: root %zu (want %zu)", name, m->root, root);
  const char *got[3] = {entry_name(m->code), entry_name(m->source), entry_name(m->ext)};
  const char *want[3] = {code, source, ext};
  static const char *const what[3] = {"code", "source", "ext"};
  for (int i = 0; i < 3; i++) {
    int ok = got[i] && want[i] ? strcmp(got[i], want[i]) == 0 : got[i] == want[i];
    check_report_(ok, __FILE__, line, "%s: %s is %s (want %s)", name, what[i],
                  got[i] ? got[i] : "NULL", want[i] ? want[i] : "NULL");
  }
}
#define EXPECT(name, kind, root, code, source, ext)                                                \
  expect((name), (kind), (root), (code), (source), (ext), __LINE__)

/* Checks a package's or namespace's directories, in order. */
static void expect_dirs(const char *name, const char *const *dirs, size_t n, int line) {
  const modindex_module *m = find(name);
  if (!check_report_(m != NULL, __FILE__, line, "module %s found", name))
    return;
  if (!check_report_(m->ndirs == n, __FILE__, line, "%s: %zu dirs (want %zu)", name, m->ndirs, n))
    return;
  for (size_t i = 0; i < n; i++)
    check_report_(strcmp(m->dirs[i], dirs[i]) == 0, __FILE__, line, "%s: dirs[%zu] is %s (want %s)",
                  name, i, m->dirs[i], dirs[i]);
}
#define EXPECT_DIRS(name, ...)                                                                     \
  do {                                                                                             \
    static const char *const dirs_[] = {__VA_ARGS__};                                              \
    expect_dirs((name), dirs_, sizeof(dirs_) / sizeof(dirs_[0]), __LINE__);                        \
  } while (0)
#define EXPECT_NO_DIRS(name) expect_dirs((name), NULL, 0, __LINE__)

#define MISSING(name) check_report_(find(name) == NULL, __FILE__, __LINE__, "no module %s", name)

enum { DYNLOAD = 0, STDLIB = 1, SITE = 2 };

static void test_modules(void) {
  EXPECT("os", MODINDEX_MODULE, STDLIB, "stdlib/os.pyc", "stdlib/os.py", NULL);
  EXPECT_NO_DIRS("os");
  EXPECT("onlypyc", MODINDEX_MODULE, STDLIB, "stdlib/onlypyc.pyc", NULL, NULL);
  EXPECT("onlypy", MODINDEX_MODULE, STDLIB, NULL, "stdlib/onlypy.py", NULL);
  EXPECT("json", MODINDEX_PACKAGE, STDLIB, "stdlib/json/__init__.pyc", "stdlib/json/__init__.py",
         NULL);
  EXPECT_DIRS("json", "stdlib/json");
  EXPECT("json.decoder", MODINDEX_MODULE, STDLIB, "stdlib/json/decoder.pyc",
         "stdlib/json/decoder.py", NULL);
  EXPECT("email", MODINDEX_NAMESPACE, 0, NULL, NULL, NULL);
  EXPECT_DIRS("email", "stdlib/email");
  EXPECT("email.mime", MODINDEX_NAMESPACE, 0, NULL, NULL, NULL);
  EXPECT_DIRS("email.mime", "stdlib/email/mime");
  EXPECT("email.mime.text", MODINDEX_MODULE, STDLIB, NULL, "stdlib/email/mime/text.py", NULL);
  EXPECT("pkg.sub", MODINDEX_PACKAGE, SITE, "site-packages/pkg/sub/__init__.pyc", NULL, NULL);
  EXPECT_DIRS("pkg.sub", "site-packages/pkg/sub");
  EXPECT("pkg.sub.leaf", MODINDEX_MODULE, SITE, "site-packages/pkg/sub/leaf.pyc", NULL, NULL);
  EXPECT("\xc3\xbcnicode", MODINDEX_MODULE, SITE, NULL, "site-packages/\xc3\xbcnicode.py", NULL);
}

static void test_extensions(void) {
  EXPECT("_ssl", MODINDEX_EXTENSION, DYNLOAD, NULL, NULL, "stdlib/lib-dynload/_ssl" EXT);
  EXPECT("_dyn", MODINDEX_EXTENSION, DYNLOAD, NULL, NULL, "stdlib/lib-dynload/_dyn" EXT);
  EXPECT("abi", MODINDEX_EXTENSION, SITE, NULL, NULL, "site-packages/abi.abi3.so");
  EXPECT("plain", MODINDEX_EXTENSION, SITE, NULL, NULL, "site-packages/plain.so");
  EXPECT("pkg", MODINDEX_PACKAGE, SITE, NULL, "site-packages/pkg/__init__.py", NULL);
  EXPECT_DIRS("pkg", "site-packages/pkg");
  EXPECT("pkg._speed", MODINDEX_EXTENSION, SITE, NULL, NULL, "site-packages/pkg/_speed" EXT);
  /* Suffixes of other Pythons and platforms are not extensions here. */
  MISSING("old");
  MISSING("old.cpython-310-x86_64-linux-gnu");
  MISSING("arm");
  MISSING("win");
  MISSING("win2");
  /* Extension over source in the same root (FileFinder order). */
  EXPECT("fast", MODINDEX_EXTENSION, SITE, NULL, "site-packages/fast.py", "site-packages/fast" EXT);
  EXPECT("fast2", MODINDEX_EXTENSION, SITE, "site-packages/fast2.pyc", "site-packages/fast2.py",
         "site-packages/fast2.so");
}

static void test_precedence(void) {
  /* Package over module, and over extension, in the same root. */
  EXPECT("dual", MODINDEX_PACKAGE, SITE, NULL, "site-packages/dual/__init__.py", NULL);
  EXPECT_DIRS("dual", "site-packages/dual");
  EXPECT("dual2", MODINDEX_PACKAGE, SITE, "site-packages/dual2/__init__.pyc", NULL, NULL);
  EXPECT_DIRS("dual2", "site-packages/dual2");
  /* The earlier root wins, whatever the kinds. */
  EXPECT("shadow", MODINDEX_MODULE, STDLIB, NULL, "stdlib/shadow.py", NULL);
  EXPECT("shadowmod", MODINDEX_MODULE, STDLIB, NULL, "stdlib/shadowmod.py", NULL);
  EXPECT_NO_DIRS("shadowmod");
  EXPECT("shadowpkg", MODINDEX_PACKAGE, STDLIB, NULL, "stdlib/shadowpkg/__init__.py", NULL);
  EXPECT_DIRS("shadowpkg", "stdlib/shadowpkg");
  EXPECT("mixed", MODINDEX_MODULE, STDLIB, NULL, "stdlib/mixed.py", NULL);
  /* Regular beats namespace, from a later root or an earlier one. */
  EXPECT("nsmod", MODINDEX_MODULE, SITE, NULL, "site-packages/nsmod.py", NULL);
  EXPECT_NO_DIRS("nsmod");
  EXPECT("modns", MODINDEX_MODULE, STDLIB, NULL, "stdlib/modns.py", NULL);
  EXPECT_NO_DIRS("modns");
  EXPECT("nspkg", MODINDEX_PACKAGE, SITE, NULL, "site-packages/nspkg/__init__.py", NULL);
  EXPECT_DIRS("nspkg", "site-packages/nspkg");
}

static void test_namespace(void) {
  EXPECT("ns", MODINDEX_NAMESPACE, 0, NULL, NULL, NULL);
  EXPECT_DIRS("ns", "stdlib/ns", "site-packages/ns");
  EXPECT("ns.a", MODINDEX_MODULE, STDLIB, "stdlib/ns/a.pyc", "stdlib/ns/a.py", NULL);
  EXPECT("ns.b", MODINDEX_MODULE, SITE, NULL, "site-packages/ns/b.py", NULL);
  EXPECT("ns.deep", MODINDEX_NAMESPACE, 0, NULL, NULL, NULL);
  EXPECT_DIRS("ns.deep", "site-packages/ns/deep");
  EXPECT("ns.deep.c", MODINDEX_MODULE, SITE, NULL, "site-packages/ns/deep/c.py", NULL);
}

static void test_not_modules(void) {
  MISSING("foo-1.0.dist-info");
  MISSING("foo-1.0.dist-info.entry");
  MISSING("foo-1");
  MISSING("entry");
  MISSING("pkg.__pycache__");
  MISSING("pkg.__pycache__.mod");
  MISSING("pkg.__pycache__.mod.cpython-311");
  MISSING("a.b");
  MISSING("a");
  MISSING("__init__");
  MISSING("");
  MISSING(".hidden");
  MISSING("hidden");
  MISSING("README");
  MISSING("stub");
  MISSING("gui");
  MISSING("x");
  MISSING("mod");
  MISSING("notes");
  MISSING("appbin");
  MISSING("libfoo");
  MISSING("libbar");
  MISSING("stdlib");
  MISSING("site-packages");
  /* Components that are not identifiers but hold no '.' are found, as
   * FileFinder finds them (__import__("_sysconfigdata__x86_64-linux-gnu")). */
  CHECK(modindex_find(&mi, "1bad", 4) != NULL);
  CHECK(modindex_find(&mi, "bad-dir.mod", 11) != NULL);
  CHECK(modindex_find(&mi, "sp ace", 6) != NULL);
  CHECK(modindex_find(&mi, "lib-dynload._ssl", 16) != NULL);
  /* A directory entry, even of an empty directory, is a namespace portion,
   * as an empty directory on sys.path is importable. */
  CHECK(modindex_find(&mi, "emptydir", 8) != NULL &&
        modindex_find(&mi, "emptydir", 8)->kind == MODINDEX_NAMESPACE);
  /* Lookups by near-miss names. */
  MISSING("json.");
  MISSING(".json");
  MISSING("json.decoder.");
  MISSING("JSON");
  MISSING("jso");
  MISSING("json.__init__");
  MISSING("os.py");
  CHECK(modindex_find(&mi, "json", 3) == NULL);
  CHECK(modindex_find(&mi, "jsonx", 4) != NULL); /* the length counts, not a NUL */
}

static void test_add_root_twice(void) {
  size_t count = mi.count;
  CHECK_EQ_INT(modindex_add_root(&mi, "site-packages/"), 1);
  CHECK_EQ_INT(modindex_add_root(&mi, "stdlib/"), 1);
  CHECK_EQ_INT(modindex_add_root(&mi, "stdlib/lib-dynload/"), 1);
  CHECK_EQ_INT(mi.count, count);
  CHECK_EQ_INT(mi.nroots, 3);
  CHECK_STR(mi.roots[0], "stdlib/lib-dynload/");
  CHECK_STR(mi.roots[1], "stdlib/");
  CHECK_STR(mi.roots[2], "site-packages/");
  /* A root with no members adds nothing. */
  CHECK_EQ_INT(modindex_add_root(&mi, "nothing-here/"), 0);
  CHECK_EQ_INT(mi.count, count);
  CHECK_EQ_INT(mi.nroots, 4);
}

/* Every entry of the hash table is consistent with its kind. */
static void test_invariants(void) {
  size_t seen = 0, bad = 0;
  for (size_t i = 0; i <= mi.slot_mask; i++) {
    const modindex_module *m = mi.slots[i];
    if (!m)
      continue;
    seen++;
    /* A submodule shadowed by its parent's package from an earlier root is
     * indexed but not found (test_shadowed_package_submodules checks which). */
    const modindex_module *found = modindex_find(&mi, m->name, m->name_len);
    int ok = (found == m || (!found && strchr(m->name, '.'))) && strlen(m->name) == m->name_len;
    switch (m->kind) {
    case MODINDEX_MODULE:
      ok &= (m->code || m->source) && m->ndirs == 0;
      break;
    case MODINDEX_PACKAGE:
      ok &= m->ndirs == 1;
      break;
    case MODINDEX_NAMESPACE:
      ok &= m->ndirs >= 1 && !m->code && !m->source && !m->ext;
      break;
    case MODINDEX_EXTENSION:
      ok &= m->ext != NULL && m->ndirs == 0;
      break;
    default:
      ok = 0;
    }
    if (!ok && bad++ < 5)
      fprintf(stderr, "  inconsistent entry %s (kind %d)\n", m->name, m->kind);
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(seen, mi.count);
  CHECK(mi.count * 2 <= mi.slot_mask + 1);
}

static void test_synthetic(void) {
  if (open_index(files, NFILES) != 0)
    return;
  /* Nothing is found before a root is added. */
  CHECK(find("os") == NULL);
  if (add_roots()) {
    test_modules();
    test_extensions();
    test_precedence();
    test_namespace();
    test_not_modules();
    test_invariants();
    test_add_root_twice();
  }
  close_index();
  CHECK(mi.slots == NULL && mi.count == 0 && mi.roots == NULL);
  modindex_free(&mi); /* twice is harmless */
}

/* Root order decides: the same archive with site-packages first. */
static void test_root_order(void) {
  static const char *const names[] = {"stdlib/shadow.py", "site-packages/shadow.py",
                                      "stdlib/ns/a.py", "site-packages/ns/b.py"};
  if (open_index(names, 4) != 0)
    return;
  CHECK_EQ_INT(modindex_add_root(&mi, "site-packages/"), 0);
  CHECK_EQ_INT(modindex_add_root(&mi, "stdlib/"), 0);
  EXPECT("shadow", MODINDEX_MODULE, 0, NULL, "site-packages/shadow.py", NULL);
  EXPECT_DIRS("ns", "site-packages/ns", "stdlib/ns");
  close_index();
}

/* A package whose __init__ is only an extension module. */
static void test_init_extension(void) {
  static const char *const names[] = {"site-packages/cpkg/__init__" EXT,
                                      "site-packages/cpkg/helper.py"};
  if (open_index(names, 2) != 0)
    return;
  CHECK_EQ_INT(modindex_add_root(&mi, "site-packages/"), 0);
  const modindex_module *m = find("cpkg");
  /* Regression test (was a bug): modindex.c (add_file, "an __init__ extension module is not
   * supported") still marks cpkg as MODINDEX_PACKAGE, with code, source and
   * ext all NULL; importer.c's find_spec then takes origin_entry(m)->name
   * from a NULL entry and crashes on "import cpkg". Either no package, or
   * one with something to load, is expected. */
  CHECK(m == NULL || m->kind != MODINDEX_PACKAGE || m->code || m->source || m->ext);
  close_index();
}

/* A package from an earlier root shadows a later root's package of the
 * same name entirely, as with sys.path: its submodules must not leak in. */
static void test_shadowed_package_submodules(void) {
  static const char *const names[] = {
      "stdlib/pkg/__init__.py",    "stdlib/pkg/both.py",         "site-packages/pkg/__init__.py",
      "site-packages/pkg/both.py", "site-packages/pkg/extra.py",
  };
  if (open_index(names, sizeof(names) / sizeof(names[0])) != 0)
    return;
  CHECK_EQ_INT(modindex_add_root(&mi, "stdlib/"), 0);
  CHECK_EQ_INT(modindex_add_root(&mi, "site-packages/"), 0);
  EXPECT("pkg", MODINDEX_PACKAGE, 0, NULL, "stdlib/pkg/__init__.py", NULL);
  EXPECT_DIRS("pkg", "stdlib/pkg");
  EXPECT("pkg.both", MODINDEX_MODULE, 0, NULL, "stdlib/pkg/both.py", NULL);
  const modindex_module *m = find("pkg.extra");
  /* Regression test (was a bug): modindex indexes every root's files by dotted name without
   * checking that the parent package came from that root, and importer.c's
   * find_spec ignores the `path` argument; so "import pkg.extra" loads
   * site-packages/pkg/extra.py although pkg.__path__ is ["stdlib/pkg"]
   * (CPython: ModuleNotFoundError). */
  if (!CHECK(m == NULL))
    fprintf(stderr, "  pkg.extra -> %s\n", entry_name(m->source));
  close_index();
}

/* Deep paths around the 1024-byte name buffer in add_file. */
static void test_long_names(void) {
  static char bufs[12][1200];
  const char *names[12];
  for (int i = 0; i < 12; i++) {
    size_t stem = 1018 + (size_t)i; /* module path lengths 1018..1029 */
    char *p = bufs[i];
    memcpy(p, "site-packages/", 14);
    size_t n = 14;
    for (size_t k = 0; k < stem; k++)
      p[n++] = (k % 8 == 7) ? '/' : (char)('a' + (k + (size_t)i) % 26);
    if (p[n - 1] == '/')
      p[n - 1] = 'z';
    memcpy(p + n, ".py", 4);
    names[i] = p;
  }
  if (open_index(names, 12) != 0)
    return;
  CHECK_EQ_INT(modindex_add_root(&mi, "site-packages/"), 0);
  for (int i = 0; i < 12; i++) {
    size_t stem = strlen(names[i]) - 14 - 3;
    char dotted[1200];
    memcpy(dotted, names[i] + 14, stem);
    for (size_t k = 0; k < stem; k++)
      if (dotted[k] == '/')
        dotted[k] = '.';
    const modindex_module *m = modindex_find(&mi, dotted, stem);
    if (stem < 1024)
      CHECK(m != NULL && m->kind == MODINDEX_MODULE && m->source &&
            strcmp(m->source->name, names[i]) == 0);
    else
      CHECK(m == NULL); /* skipped, not truncated */
  }
  close_index();
}

/* 20000 modules in 200 packages: the hash table grows many times. */
static void test_large(void) {
  enum { NPKG = 200, NMOD = 100 };
  size_t n = NPKG * (NMOD + 1);
  char **names = malloc(n * sizeof(*names));
  size_t k = 0;
  for (int p = 0; p < NPKG; p++) {
    char buf[64];
    snprintf(buf, sizeof(buf), "site-packages/p%03d/__init__.py", p);
    names[k++] = strdup(buf);
    for (int m = 0; m < NMOD; m++) {
      snprintf(buf, sizeof(buf), "site-packages/p%03d/m%03d.py", p, m);
      names[k++] = strdup(buf);
    }
  }
  if (open_index((const char *const *)names, n) == 0) {
    CHECK_EQ_INT(zi.count, n);
    CHECK_EQ_INT(modindex_add_root(&mi, "stdlib/"), 0);
    CHECK_EQ_INT(modindex_add_root(&mi, "site-packages/"), 0);
    CHECK_EQ_INT(mi.count, n);
    CHECK(mi.slot_mask + 1 >= 2 * n);
    int bad = 0;
    for (int p = 0; p < NPKG; p++) {
      char name[32], member[64];
      snprintf(name, sizeof(name), "p%03d", p);
      const modindex_module *m = find(name);
      if (!m || m->kind != MODINDEX_PACKAGE || m->ndirs != 1)
        bad++;
      for (int j = 0; j < NMOD; j++) {
        snprintf(name, sizeof(name), "p%03d.m%03d", p, j);
        snprintf(member, sizeof(member), "site-packages/p%03d/m%03d.py", p, j);
        m = find(name);
        if (!m || m->kind != MODINDEX_MODULE || !m->source || strcmp(m->source->name, member) != 0)
          bad++;
        snprintf(name, sizeof(name), "p%03d.m%03d", p, j + NMOD);
        if (find(name))
          bad++;
      }
    }
    CHECK_EQ_INT(bad, 0);
    test_invariants();
    close_index();
  }
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

int main(void) {
  test_synthetic();
  test_root_order();
  test_init_extension();
  test_shadowed_package_submodules();
  test_long_names();
  test_large();
  return check_summary();
}
