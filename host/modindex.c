#include "modindex.h"

#include <stdlib.h>
#include <string.h>

/* The linked CPython's extension suffixes (importlib.machinery.EXTENSION_SUFFIXES);
 * APPBIN_EXT_SUFFIX comes from its sysconfig EXT_SUFFIX (CMakeLists.txt). */
#ifndef APPBIN_EXT_SUFFIX
#error "APPBIN_EXT_SUFFIX (e.g. \".cpython-311-x86_64-linux-gnu.so\") must be defined"
#endif
static const char *const ext_suffixes[] = {APPBIN_EXT_SUFFIX, ".abi3.so", ".so"};

static uint64_t hash_name(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ULL;
  }
  return h;
}

static int ends_with(const char *s, size_t len, const char *suffix, size_t slen) {
  return len > slen && memcmp(s + len - slen, suffix, slen) == 0;
}

/* A path component that can be part of a dotted module name. Like
 * FileFinder, anything but '.' goes (`__import__` reaches names such as
 * "_sysconfigdata__x86_64-linux-gnu"); "pkg-1.0.dist-info" never does. */
static int is_name_component(const char *s, size_t len) { return len > 0 && !memchr(s, '.', len); }

static modindex_module **slot_for(const modindex *mi, const char *name, size_t len) {
  size_t s = hash_name(name, len) & mi->slot_mask;
  for (;; s = (s + 1) & mi->slot_mask) {
    modindex_module *m = mi->slots[s];
    if (!m || (m->name_len == len && memcmp(m->name, name, len) == 0))
      return &mi->slots[s];
  }
}

static int grow(modindex *mi) {
  size_t nslots = (mi->slot_mask + 1) * 2;
  modindex_module **slots = calloc(nslots, sizeof(*slots));
  if (!slots)
    return -1;
  modindex old = *mi;
  mi->slots = slots;
  mi->slot_mask = nslots - 1;
  for (size_t i = 0; i <= old.slot_mask; i++)
    if (old.slots[i])
      *slot_for(mi, old.slots[i]->name, old.slots[i]->name_len) = old.slots[i];
  free(old.slots);
  return 0;
}

static modindex_module *get_or_add(modindex *mi, const char *name, size_t len) {
  modindex_module **slot = slot_for(mi, name, len);
  if (*slot)
    return *slot;
  if ((mi->count + 1) * 2 > mi->slot_mask + 1) {
    if (grow(mi) != 0)
      return NULL;
    slot = slot_for(mi, name, len);
  }
  modindex_module *m = calloc(1, sizeof(*m));
  if (!m || !(m->name = malloc(len + 1))) {
    free(m);
    return NULL;
  }
  memcpy(m->name, name, len);
  m->name[len] = '\0';
  m->name_len = len;
  *slot = m;
  mi->count++;
  return m;
}

static void clear_dirs(modindex_module *m) {
  for (size_t i = 0; i < m->ndirs; i++)
    free(m->dirs[i]);
  free(m->dirs);
  m->dirs = NULL;
  m->ndirs = 0;
}

static int add_dir(modindex_module *m, const char *dir, size_t len) {
  for (size_t i = 0; i < m->ndirs; i++)
    if (strlen(m->dirs[i]) == len && memcmp(m->dirs[i], dir, len) == 0)
      return 0;
  char **dirs = realloc(m->dirs, (m->ndirs + 1) * sizeof(*dirs));
  if (!dirs)
    return -1;
  m->dirs = dirs;
  if (!(dirs[m->ndirs] = malloc(len + 1)))
    return -1;
  memcpy(dirs[m->ndirs], dir, len);
  dirs[m->ndirs][len] = '\0';
  m->ndirs++;
  return 0;
}

/* Records that the directory `dir` (member path) holds name `name`: a
 * namespace portion unless a regular package or module already owns it. */
static int note_namespace(modindex *mi, const char *name, size_t len, const char *dir,
                          size_t dirlen) {
  modindex_module *m = get_or_add(mi, name, len);
  if (!m)
    return -1;
  if (m->kind != MODINDEX_MISSING && m->kind != MODINDEX_NAMESPACE)
    return 0;
  m->kind = MODINDEX_NAMESPACE;
  return add_dir(m, dir, dirlen);
}

/* A directory entry ("pkg/data/") makes every directory on its path a
 * namespace portion, as a directory of data files is for FileFinder. */
static int add_dir_entry(modindex *mi, const zipindex_entry *e, size_t rootlen) {
  const char *rel = e->name + rootlen;
  size_t len = e->name_len - rootlen - 1; /* without the trailing '/' */
  char name[1024];
  if (len == 0 || len >= sizeof(name))
    return 0;
  for (size_t i = 0, last = 0; i <= len; i++) {
    if (i == len || rel[i] == '/') {
      if (!is_name_component(rel + last, i - last))
        return 0;
      last = i + 1;
    }
  }
  for (size_t i = 0; i < len; i++)
    name[i] = rel[i] == '/' ? '.' : rel[i];
  for (size_t i = 1; i <= len; i++)
    if ((i == len || rel[i] == '/') && note_namespace(mi, name, i, e->name, rootlen + i) != 0)
      return -1;
  return 0;
}

/* Turns the file `rel` (relative to root `r`) into a module entry. */
static int add_file(modindex *mi, size_t r, const zipindex_entry *e, size_t rootlen) {
  const char *rel = e->name + rootlen;
  size_t len = e->name_len - rootlen;
  if (len && rel[len - 1] == '/')
    return add_dir_entry(mi, e, rootlen);
  enum { PYC, PY, EXT } type;
  size_t stem;
  if (ends_with(rel, len, ".pyc", 4)) {
    type = PYC, stem = len - 4;
  } else if (ends_with(rel, len, ".py", 3)) {
    type = PY, stem = len - 3;
  } else {
    size_t i;
    for (i = 0; i < sizeof(ext_suffixes) / sizeof(ext_suffixes[0]); i++)
      if (ends_with(rel, len, ext_suffixes[i], strlen(ext_suffixes[i])))
        break;
    if (i == sizeof(ext_suffixes) / sizeof(ext_suffixes[0]))
      return 0;
    type = EXT, stem = len - strlen(ext_suffixes[i]);
  }

  /* Dotted name from the path components; all must be identifiers. */
  char name[1024];
  if (stem >= sizeof(name))
    return 0;
  size_t ncomp = 0, last = 0;
  for (size_t i = 0; i <= stem; i++) {
    if (i == stem || rel[i] == '/') {
      if (!is_name_component(rel + last, i - last))
        return 0;
      ncomp++;
      last = i + 1;
    }
  }
  memcpy(name, rel, stem);
  for (size_t i = 0; i < stem; i++)
    if (name[i] == '/')
      name[i] = '.';
  size_t tail_at = 0; /* offset of the last component */
  for (size_t i = 0; i < stem; i++)
    if (rel[i] == '/')
      tail_at = i + 1;
  int is_init = stem - tail_at == 8 && memcmp(rel + tail_at, "__init__", 8) == 0;
  if (is_init && ncomp < 2)
    return 0;
  size_t namelen = is_init ? tail_at - 1 : stem;

  /* Every directory above the module is a namespace portion unless it turns
   * out to be a regular package. */
  for (size_t i = 0; i < namelen; i++)
    if (rel[i] == '/' && note_namespace(mi, name, i, e->name, rootlen + i) != 0)
      return -1;

  modindex_module *m = get_or_add(mi, name, namelen);
  if (!m)
    return -1;
  if (m->kind != MODINDEX_MISSING && m->kind != MODINDEX_NAMESPACE && m->root != r)
    return 0; /* an earlier root owns this name */
  if (m->kind == MODINDEX_NAMESPACE || m->kind == MODINDEX_MISSING) {
    clear_dirs(m);
    m->kind = MODINDEX_MISSING;
    m->root = r;
  }
  if (is_init) {
    if (m->kind != MODINDEX_PACKAGE) {
      /* A package beats a module of the same name in the same root. */
      m->code = m->source = m->ext = NULL;
      m->kind = MODINDEX_PACKAGE;
      if (add_dir(m, e->name, rootlen + namelen) != 0)
        return -1;
    }
    if (type == PYC)
      m->code = e;
    else if (type == PY)
      m->source = e;
    else
      m->ext = e; /* a compiled __init__ (Cython packages) */
    return 0;
  }
  if (m->kind == MODINDEX_PACKAGE)
    return 0;
  if (type == EXT) {
    m->ext = e;
    m->kind = MODINDEX_EXTENSION;
  } else {
    if (type == PYC)
      m->code = e;
    else
      m->source = e;
    if (m->kind != MODINDEX_EXTENSION) /* extensions come first, as in FileFinder */
      m->kind = MODINDEX_MODULE;
  }
  return 0;
}

int modindex_init(modindex *mi, const zipindex *zi) {
  memset(mi, 0, sizeof(*mi));
  mi->zi = zi;
  mi->slots = calloc(1024, sizeof(*mi->slots));
  if (!mi->slots)
    return -1;
  mi->slot_mask = 1023;
  return 0;
}

int modindex_add_root(modindex *mi, const char *root) {
  for (size_t i = 0; i < mi->nroots; i++)
    if (strcmp(mi->roots[i], root) == 0)
      return 1;
  char **roots = realloc(mi->roots, (mi->nroots + 1) * sizeof(*roots));
  if (!roots)
    return -1;
  mi->roots = roots;
  if (!(roots[mi->nroots] = strdup(root)))
    return -1;
  size_t r = mi->nroots++;
  size_t rootlen = strlen(root);
  for (size_t i = zipindex_lower_bound(mi->zi, root, rootlen); i < mi->zi->count; i++) {
    const zipindex_entry *e = &mi->zi->entries[i];
    if (e->name_len < rootlen || memcmp(e->name, root, rootlen) != 0)
      break;
    if (add_file(mi, r, e, rootlen) != 0)
      return -1;
  }
  return 0;
}

const zipindex_entry *modindex_origin(const modindex_module *m) {
  if (m->ext)
    return m->ext; /* extensions first, as FileFinder does */
  return m->source ? m->source : m->code;
}

/* Length of the directory part of a member path. */
static size_t dir_len(const char *path, size_t len) {
  while (len && path[len - 1] != '/')
    len--;
  return len ? len - 1 : 0;
}

static int is_parent_dir(const modindex_module *parent, const char *dir, size_t len) {
  for (size_t i = 0; i < parent->ndirs; i++)
    if (strlen(parent->dirs[i]) == len && memcmp(parent->dirs[i], dir, len) == 0)
      return 1;
  return 0;
}

/* Whether a submodule lives in one of its parent package's directories: a
 * package from an earlier root shadows a later root's whole subtree. */
static int under_parent(const modindex_module *m, const modindex_module *parent) {
  if (parent->kind != MODINDEX_PACKAGE && parent->kind != MODINDEX_NAMESPACE)
    return 0;
  if (m->kind == MODINDEX_PACKAGE || m->kind == MODINDEX_NAMESPACE) {
    for (size_t i = 0; i < m->ndirs; i++)
      if (is_parent_dir(parent, m->dirs[i], dir_len(m->dirs[i], strlen(m->dirs[i]))))
        return 1;
    return 0;
  }
  const zipindex_entry *origin = modindex_origin(m);
  return is_parent_dir(parent, origin->name, dir_len(origin->name, origin->name_len));
}

const modindex_module *modindex_find(const modindex *mi, const char *name, size_t len) {
  if (!mi->slots)
    return NULL;
  modindex_module *m = *slot_for(mi, name, len);
  if (!m || m->kind == MODINDEX_MISSING)
    return NULL;
  const char *dot = memrchr(name, '.', len);
  if (dot) {
    const modindex_module *parent = modindex_find(mi, name, (size_t)(dot - name));
    if (!parent || !under_parent(m, parent))
      return NULL;
  }
  return m;
}

void modindex_free(modindex *mi) {
  for (size_t i = 0; mi->slots && i <= mi->slot_mask; i++) {
    modindex_module *m = mi->slots[i];
    if (m) {
      clear_dirs(m);
      free(m->name);
      free(m);
    }
  }
  free(mi->slots);
  for (size_t i = 0; i < mi->nroots; i++)
    free(mi->roots[i]);
  free(mi->roots);
  memset(mi, 0, sizeof(*mi));
}
