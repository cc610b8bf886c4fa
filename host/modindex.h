/*
 * modindex: Python module names -> archive members, built from a zipindex.
 *
 * Roots are member-path prefixes searched in the order they were added, like
 * sys.path entries: a regular module or package from an earlier root wins,
 * a regular one anywhere beats a namespace package, and the portions of a
 * namespace package are collected from every root.
 */
#ifndef APPBIN_MODINDEX_H
#define APPBIN_MODINDEX_H

#include "zipindex.h"

#include <stddef.h>

typedef enum modindex_kind {
  MODINDEX_MISSING = 0,
  MODINDEX_MODULE = 1,    /* a .pyc and/or .py */
  MODINDEX_PACKAGE = 2,   /* a directory with __init__ */
  MODINDEX_NAMESPACE = 3, /* a directory without __init__ */
  MODINDEX_EXTENSION = 4, /* a shared object */
} modindex_kind;

typedef struct modindex_module {
  char *name; /* dotted name */
  size_t name_len;
  modindex_kind kind;
  const zipindex_entry *code;   /* .pyc (module, or __init__ of a package) */
  const zipindex_entry *source; /* .py */
  const zipindex_entry *ext;    /* shared object (also a compiled __init__) */
  char **dirs;                  /* member directories (packages: one) */
  size_t ndirs;
  size_t root; /* index of the root that provided the regular module */
} modindex_module;

typedef struct modindex {
  const zipindex *zi;
  modindex_module **slots; /* open addressing by name */
  size_t slot_mask;
  size_t count;
  char **roots; /* member-path prefixes, each ending in '/' */
  size_t nroots;
} modindex;

int modindex_init(modindex *mi, const zipindex *zi);

/* Adds the modules under `root` (a member-path prefix ending in '/').
 * Returns 0, 1 if that root was already added, -1 on out of memory. */
int modindex_add_root(modindex *mi, const char *root);

/* The module named `name`, or NULL; a submodule is found only inside its
 * parent package's directories. */
const modindex_module *modindex_find(const modindex *mi, const char *name, size_t len);

/* The member a module is loaded from: its extension, else its source, else
 * its .pyc (NULL for namespace packages). */
const zipindex_entry *modindex_origin(const modindex_module *m);

void modindex_free(modindex *mi);

#endif
