/* libFuzzer harness for host/archfs.c: arbitrary paths looked up in an
 * archive whose member names also come from the input, checked against a
 * model that walks the path the way the kernel does (every component before
 * the last must be an existing directory; "." and ".." as components; a
 * trailing slash needs a directory), plus directory listings and escapes.
 *
 * Input: byte 0 = number of member names (low 3 bits; 0 uses a fixed
 * archive), then that many names each ended by '\n', then the path. */
#include "archfs.h"
#include "ziptest.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAMES 8
#define ROOT "/r/app.bin"

static const char *const fixed[] = {"stdlib/os.py", "a/b/c.txt", "a/b.txt", "a/b-c/d",
                                    "a/b0",         "z/",        "z/y/",    "top"};

typedef struct model {
  char *names[MAX_NAMES];
  size_t count;
  int conflict; /* a name is also a directory prefix: no exact comparison */
} model;

static int has_prefix_slash(const char *name, const char *p, size_t plen) {
  return strncmp(name, p, plen) == 0 && name[plen] == '/';
}

static int m_is_file(const model *m, const char *p, size_t plen) {
  for (size_t i = 0; i < m->count; i++)
    if (plen && strlen(m->names[i]) == plen && memcmp(m->names[i], p, plen) == 0)
      return 1;
  return 0;
}

static int m_is_dir(const model *m, const char *p, size_t plen) {
  if (plen == 0)
    return 1;
  for (size_t i = 0; i < m->count; i++)
    if (has_prefix_slash(m->names[i], p, plen))
      return 1;
  return 0;
}

/* The kernel's walk over the model. Returns ARCHFS_FOUND (kind in *kind,
 * normalised path in cur), ARCHFS_ESCAPED (*tail), or -errno. */
static int m_resolve(const model *m, const char *path, char *cur, uint32_t *kind, int *parent_ok,
                     const char **tail) {
  size_t clen = 0;
  const char *p = path;
  int trailing = 0;
  *parent_ok = 0;
  cur[0] = '\0';
  for (;;) {
    while (*p == '/')
      p++;
    if (!*p)
      break;
    const char *c = p;
    size_t n = strcspn(c, "/");
    p = c + n;
    /* Looking inside cur: it must be an existing directory. */
    if (m_is_file(m, cur, clen))
      return -ENOTDIR;
    if (!m_is_dir(m, cur, clen))
      return -ENOENT;
    trailing = *p == '/';
    if (n == 1 && c[0] == '.')
      continue;
    if (n == 2 && c[0] == '.' && c[1] == '.') {
      if (clen == 0) {
        *tail = p;
        return ARCHFS_ESCAPED;
      }
      while (clen > 0 && cur[clen - 1] != '/')
        clen--;
      clen = clen ? clen - 1 : 0;
      cur[clen] = '\0';
      continue;
    }
    if (clen)
      cur[clen++] = '/';
    memcpy(cur + clen, c, n);
    clen += n;
    cur[clen] = '\0';
    if (!trailing && *p == '\0')
      break;
  }
  if (m_is_file(m, cur, clen)) {
    if (trailing)
      return -ENOTDIR;
    *kind = ARCHFS_FILE;
    return ARCHFS_FOUND;
  }
  if (m_is_dir(m, cur, clen)) {
    *kind = ARCHFS_DIR;
    return ARCHFS_FOUND;
  }
  size_t parent = clen;
  while (parent > 0 && cur[parent - 1] != '/')
    parent--;
  parent = parent ? parent - 1 : 0;
  *parent_ok = !m_is_file(m, cur, parent) && m_is_dir(m, cur, parent);
  return -ENOENT;
}

static void check_listing(const archfs *fs, const model *m, const archfs_node *dir,
                          const char *name, int exact) {
  size_t cursor = archfs_dir_begin(dir), seen = 0;
  archfs_dirent de;
  char child[ARCHFS_PATH_MAX + 300];
  while (archfs_dir_next(fs, dir, &cursor, &de)) {
    if (de.len == 0 || memchr(de.name, '/', de.len))
      abort(); /* a listed name is one non-empty component */
    if (++seen > 4 * MAX_NAMES + 16)
      abort(); /* listings end */
    int n =
        snprintf(child, sizeof(child), "%s%s%.*s", name, *name ? "/" : "", (int)de.len, de.name);
    if (exact && n > 0 && (size_t)n < sizeof(child)) {
      int is_dir = m_is_dir(m, child, (size_t)n), is_file = m_is_file(m, child, (size_t)n);
      if ((de.node.kind == ARCHFS_DIR) != is_dir || (de.node.kind == ARCHFS_FILE) != is_file)
        abort();
    }
  }
}

static void run(const archfs *fs, const model *m, const char *path) {
  char member[ARCHFS_PATH_MAX], want[ARCHFS_PATH_MAX * 2];
  archfs_node node;
  const char *escape = NULL, *want_tail = NULL;
  int parent_ok, want_parent_ok;
  uint32_t want_kind = 0;
  int rc = archfs_lookup(fs, path, member, &node, &escape, &parent_ok);
  if (rc == ARCHFS_FOUND) {
    if (node.len != strlen(member) || memcmp(archfs_node_name(fs, &node), member, node.len) != 0)
      abort(); /* the node names what the member says */
    if (member[0] == '/' || (node.len && member[node.len - 1] == '/') || strstr(member, "//"))
      abort(); /* normalised */
    archfs_node back = archfs_node_unpack(archfs_node_pack(&node));
    if (memcmp(&back, &node, sizeof(node)) != 0)
      abort();
    if (node.kind == ARCHFS_DIR)
      check_listing(fs, m, &node, member, !m->conflict);
  } else if (rc == ARCHFS_ESCAPED) {
    if (escape < path || escape > path + strlen(path) || (*escape && *escape != '/'))
      abort(); /* a suffix of the input, empty or starting with '/' */
    char out[64];
    int n = archfs_escape_path(fs, escape, out, sizeof(out));
    if (n >= 0 && ((size_t)n != strlen(out) || strncmp(out, "/r", 2) != 0))
      abort();
  } else if (rc != -ENOENT && rc != -ENOTDIR && rc != -ENAMETOOLONG) {
    abort();
  }
  /* Against the model, where lengths keep clear of the limits. */
  if (m->conflict || strlen(path) >= 1024 || rc == -ENAMETOOLONG)
    return;
  int want_rc = m_resolve(m, path, want, &want_kind, &want_parent_ok, &want_tail);
  if (rc != want_rc)
    abort();
  if (rc == ARCHFS_FOUND && (node.kind != want_kind || strcmp(member, want) != 0))
    abort();
  if (rc == ARCHFS_ESCAPED && escape != want_tail)
    abort();
  if (rc == -ENOENT && parent_ok != want_parent_ok)
    abort();
}

/* archfs_inside on the path as given (often shorter than the root: it must
 * not be read past its end) and with the root in front. */
static void check_inside(const archfs *fs, const char *path) {
  const char *rest = archfs_inside(fs, path);
  size_t n = strlen(path);
  if (rest && (rest < path + fs->root_len + 1 || rest > path + n))
    abort();
  char *full = malloc(fs->root_len + 1 + n + 1);
  memcpy(full, fs->root, fs->root_len);
  full[fs->root_len] = '/';
  memcpy(full + fs->root_len + 1, path, n + 1);
  if (archfs_inside(fs, full) != full + fs->root_len + 1)
    abort();
  full[fs->root_len] = 'x'; /* "/r/app.binx...": a sibling, not inside */
  if (archfs_inside(fs, full) != NULL)
    abort();
  free(full);
}

/* Names must be "clean" for the model: non-empty components (a trailing '/'
 * marks an explicit directory entry). */
static int clean(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || name[0] == '/' || strstr(name, "//") || n > 200)
    return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t want = data[0] & 7, pos = 1;
  model m = {.count = 0};
  const char *src[MAX_NAMES];
  char *owned[MAX_NAMES] = {0};
  size_t count = 0;
  for (; count < want && pos < size; count++) {
    const uint8_t *nl = memchr(data + pos, '\n', size - pos);
    size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos;
    owned[count] = malloc(n + 1);
    memcpy(owned[count], data + pos, n);
    owned[count][n] = '\0';
    src[count] = owned[count];
    pos += n + (nl != NULL);
  }
  if (count == 0) {
    count = sizeof(fixed) / sizeof(fixed[0]);
    memcpy(src, fixed, sizeof(fixed));
  }
  size_t plen = size - pos;
  char *path = malloc(plen + 1);
  memcpy(path, data + pos, plen);
  path[plen] = '\0'; /* a NUL inside ends the C string early, as for the caller */

  ziptest z;
  zt_init(&z);
  int all_clean = 1;
  for (size_t i = 0; i < count; i++) {
    zt_add_str(&z, src[i], "x");
    all_clean &= clean(src[i]) && strlen(src[i]) == strcspn(src[i], "\0");
  }
  size_t zlen;
  uint8_t *zip = zt_finish(&z, 0, &zlen);
  zipindex zi;
  char err[256];
  if (zipindex_open(&zi, zip, zlen, err, sizeof(err)) == 0) {
    archfs fs;
    archfs_init(&fs, &zi, ROOT);
    /* The model sees the names as the index does: sorted, without an
     * explicit directory entry's slash meaning a file. */
    for (size_t i = 0; i < zi.count && m.count < MAX_NAMES; i++) {
      const zipindex_entry *e = &zi.entries[i];
      char *name = strndup(e->name, e->name_len);
      if (e->name_len && name[e->name_len - 1] == '/')
        name[e->name_len - 1] = '\0'; /* "d/": a directory "d" with nothing in it... */
      m.names[m.count++] = name;
    }
    for (size_t i = 0; i < m.count; i++) {
      size_t n = strlen(m.names[i]);
      if (zi.entries[i].name_len != n) {
        /* ...which the model knows as "d/." below it: a directory. */
        char *dir = malloc(n + 3);
        memcpy(dir, m.names[i], n);
        memcpy(dir + n, "/.", 3);
        free(m.names[i]);
        m.names[i] = dir;
      }
    }
    for (size_t i = 0; i < m.count; i++)
      for (size_t j = 0; j < m.count; j++)
        if (i != j && zi.entries[i].name_len == strlen(m.names[i]) &&
            has_prefix_slash(m.names[j], m.names[i], strlen(m.names[i])))
          m.conflict = 1;
    if (!all_clean)
      m.conflict = 1;
    run(&fs, &m, path);
    check_inside(&fs, path);
    zipindex_close(&zi);
  }
  for (size_t i = 0; i < m.count; i++)
    free(m.names[i]);
  for (size_t i = 0; i < MAX_NAMES; i++)
    free(owned[i]);
  free(zip);
  free(path);
  return 0;
}
