#include "archfs.h"

#include <errno.h>
#include <string.h>

void archfs_init(archfs *fs, const zipindex *zi, const char *root) {
  fs->zi = zi;
  fs->root = root;
  fs->root_len = strlen(root);
  const char *slash = strrchr(root, '/');
  fs->parent_len = slash ? (size_t)(slash - root) : 0;
}

const char *archfs_inside(const archfs *fs, const char *path) {
  /* strncmp, not memcmp: a shorter path must not be read past its end. */
  if (strncmp(path, fs->root, fs->root_len) != 0 || path[fs->root_len] != '/')
    return NULL;
  return path + fs->root_len + 1;
}

static int has_prefix(const zipindex_entry *e, const char *prefix, size_t len) {
  return e->name_len >= len && memcmp(e->name, prefix, len) == 0;
}

/* Whether member[0..m) is a directory; *first gets the first entry under it.
 * Writes member[m] (the buffer holds at least m + 1 bytes). */
static int is_dir(const zipindex *zi, char *member, size_t m, size_t *first) {
  if (m == 0) {
    *first = 0;
    return 1;
  }
  member[m] = '/';
  size_t i = zipindex_lower_bound(zi, member, m + 1);
  int found = i < zi->count && has_prefix(&zi->entries[i], member, m + 1);
  member[m] = '\0';
  *first = i;
  return found;
}

static int is_file(const zipindex *zi, const char *member, size_t m) {
  return m > 0 && zipindex_find(zi, member, m) != NULL;
}

/* Why member[0..m) (neither a file nor a directory) is missing: ENOTDIR when
 * the nearest existing ancestor is a file, else ENOENT (and *parent_ok when
 * that ancestor is its parent). */
static int missing(const zipindex *zi, char *member, size_t m, int *parent_ok) {
  int parent = 1;
  for (size_t p = m; p > 0;) {
    while (p > 0 && member[p - 1] != '/')
      p--;
    size_t plen = p ? p - 1 : 0; /* the ancestor without its trailing slash */
    size_t first;
    char saved = member[plen];
    if (is_file(zi, member, plen)) {
      member[plen] = saved;
      return -ENOTDIR;
    }
    int dir = is_dir(zi, member, plen, &first);
    member[plen] = saved;
    if (dir) {
      *parent_ok = parent;
      return -ENOENT;
    }
    parent = 0;
    p = plen;
  }
  *parent_ok = parent;
  return -ENOENT;
}

int archfs_lookup(const archfs *fs, const char *rest, char member[ARCHFS_PATH_MAX],
                  archfs_node *node, const char **escape, int *parent_ok) {
  const zipindex *zi = fs->zi;
  size_t m = 0;
  int need_dir = 0;  /* a '/' followed the last name: it must be a directory */
  int dot_after = 0; /* and a "." too: a missing name could not be created */
  const char *p = rest;
  *parent_ok = 0;
  member[0] = '\0';
  for (;;) {
    const char *c = p;
    size_t n = strcspn(c, "/");
    p = c + n;
    if (n == 1 && c[0] == '.') {
      need_dir = 1;
      dot_after = m > 0;
    } else if (n == 2 && c[0] == '.' && c[1] == '.') {
      if (m == 0) {
        *escape = p;
        return ARCHFS_ESCAPED;
      }
      size_t first;
      if (is_file(zi, member, m))
        return -ENOTDIR;
      if (!is_dir(zi, member, m, &first)) {
        int err = missing(zi, member, m, parent_ok);
        *parent_ok = 0; /* the path goes on: nothing could be created here */
        return err;
      }
      while (m > 0 && member[m - 1] != '/')
        m--;
      m = m ? m - 1 : 0;
      member[m] = '\0';
      need_dir = dot_after = 0;
    } else if (n > 0) {
      if (n > ARCHFS_NAME_MAX || m + 1 + n + 1 >= ARCHFS_PATH_MAX)
        return -ENAMETOOLONG;
      if (m)
        member[m++] = '/';
      memcpy(member + m, c, n);
      m += n;
      member[m] = '\0';
      need_dir = dot_after = 0;
    }
    if (*p == '\0')
      break;
    p++;
    need_dir = 1;
  }
  if (m == 0) {
    *node = (archfs_node){ARCHFS_DIR, 0, 0};
    return ARCHFS_FOUND;
  }
  const zipindex_entry *e = zipindex_find(zi, member, m);
  if (e) {
    if (need_dir)
      return -ENOTDIR;
    *node = (archfs_node){ARCHFS_FILE, (uint32_t)m, (uint32_t)(e - zi->entries)};
    return ARCHFS_FOUND;
  }
  size_t first;
  if (is_dir(zi, member, m, &first)) {
    *node = (archfs_node){ARCHFS_DIR, (uint32_t)m, (uint32_t)first};
    return ARCHFS_FOUND;
  }
  int err = missing(zi, member, m, parent_ok);
  if (dot_after)
    *parent_ok = 0; /* "name/." names nothing that a create could make */
  return err;
}

int archfs_escape_path(const archfs *fs, const char *escape, char *out, size_t outlen) {
  size_t tail = strlen(escape);
  if (fs->parent_len == 0 && tail == 0) {
    if (outlen < 2)
      return -ENAMETOOLONG;
    memcpy(out, "/", 2);
    return 1;
  }
  if (fs->parent_len + tail + 1 > outlen)
    return -ENAMETOOLONG;
  memmove(out + fs->parent_len, escape, tail + 1); /* escape may point into out */
  memcpy(out, fs->root, fs->parent_len);
  return (int)(fs->parent_len + tail);
}

const char *archfs_node_name(const archfs *fs, const archfs_node *node) {
  return node->len ? fs->zi->entries[node->index].name : "";
}

uint64_t archfs_node_size(const archfs *fs, const archfs_node *node) {
  return node->kind == ARCHFS_FILE ? fs->zi->entries[node->index].size : 0;
}

uint64_t archfs_node_ino(const archfs_node *node) {
  if (node->kind == ARCHFS_FILE)
    return (uint64_t)node->index + 2;
  if (node->len == 0)
    return 1;
  return (1ULL << 62) | (uint64_t)node->len << 32 | node->index;
}

uint64_t archfs_node_pack(const archfs_node *node) {
  return (uint64_t)node->kind << 56 | (uint64_t)(node->len & 0xffffff) << 32 | node->index;
}

archfs_node archfs_node_unpack(uint64_t packed) {
  return (archfs_node){(uint32_t)(packed >> 56), (uint32_t)(packed >> 32) & 0xffffff,
                       (uint32_t)packed};
}

size_t archfs_dir_begin(const archfs_node *dir) { return dir->len ? dir->index : 0; }

/* The first index at or after `from` whose name does not start with
 * prefix[0..len) (the names that do form one run starting at `from`). A
 * directory is skipped in O(log n) however much it holds. */
static size_t skip_run(const zipindex *zi, size_t from, const char *prefix, size_t len) {
  size_t lo = from, hi = zi->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (has_prefix(&zi->entries[mid], prefix, len))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int archfs_dir_next(const archfs *fs, const archfs_node *dir, size_t *cursor, archfs_dirent *out) {
  const zipindex *zi = fs->zi;
  const char *prefix = archfs_node_name(fs, dir);
  size_t plen = dir->len ? dir->len + 1 : 0; /* with the '/' */
  while (*cursor < zi->count) {
    size_t i = *cursor;
    const zipindex_entry *e = &zi->entries[i];
    if (!has_prefix(e, prefix, plen))
      return 0;
    const char *child = e->name + plen;
    size_t rest = e->name_len - plen;
    const char *slash = memchr(child, '/', rest);
    size_t clen = slash ? (size_t)(slash - child) : rest;
    if (clen == 0) { /* "dir/" itself, or an empty component */
      *cursor = i + 1;
      continue;
    }
    out->name = child;
    out->len = clen;
    if (!slash) {
      out->node = (archfs_node){ARCHFS_FILE, (uint32_t)e->name_len, (uint32_t)i};
      *cursor = i + 1;
    } else {
      out->node = (archfs_node){ARCHFS_DIR, (uint32_t)(plen + clen), (uint32_t)i};
      *cursor = skip_run(zi, i + 1, e->name, plen + clen + 1);
    }
    return 1;
  }
  return 0;
}
