/*
 * archfs: the payload archive seen as a read-only directory tree rooted at
 * "<app.bin>/" (the paths __file__ and __path__ already name): lexical path
 * normalisation, lookups and directory listings over the zip index.
 *
 * Pure functions of the index: no system calls, no allocation, safe from any
 * thread (the index is read-only after zipindex_open). archfs_libc.c serves
 * them to Python and to C code by defining libc's file functions.
 *
 * The tree: every member is a file; a directory is any proper prefix of a
 * member name that ends before a '/' (explicit "dir/" entries add nothing
 * else). Files are 0444, directories 0555. Paths follow the kernel's rules
 * inside the tree ("." and empty components are skipped, ".." must leave a
 * directory, a file followed by '/' is ENOTDIR); a ".." above the root leaves
 * the archive for the real directory holding app.bin.
 */
#ifndef APPBIN_ARCHFS_H
#define APPBIN_ARCHFS_H

#include "zipindex.h"

#include <stddef.h>
#include <stdint.h>

/* Longest member path a lookup handles (the kernel's PATH_MAX). */
#define ARCHFS_PATH_MAX 4096
/* Longest single component (NAME_MAX). */
#define ARCHFS_NAME_MAX 255

typedef struct archfs {
  const zipindex *zi;
  const char *root; /* app.bin's absolute path, without a trailing slash */
  size_t root_len;
  size_t parent_len; /* root[0..parent_len) is its directory ("" for "/app.bin") */
} archfs;

enum { ARCHFS_FILE = 1, ARCHFS_DIR = 2 };

/* A file or directory of the tree. Its path is the first `len` bytes of
 * entries[index].name: for a file its whole name, for a directory the name of
 * the first member under it. The root directory is {ARCHFS_DIR, 0, 0}. */
typedef struct archfs_node {
  uint32_t kind;
  uint32_t len;
  uint32_t index;
} archfs_node;

/* What archfs_lookup found. */
enum { ARCHFS_FOUND = 0, ARCHFS_ESCAPED = 1 };

/* Sets fs up for the archive of `zi` at `root` (absolute, no trailing slash,
 * kept by reference). */
void archfs_init(archfs *fs, const zipindex *zi, const char *root);

/* The part of an absolute `path` after "<root>/", or NULL when the path does
 * not start with exactly that (the one comparison every outside path pays). */
const char *archfs_inside(const archfs *fs, const char *path);

/* Resolves `rest`, a path relative to the archive root (what archfs_inside
 * returns, or a directory's path + "/" + a relative path). `member` receives
 * the normalised member path (NUL-terminated).
 *   ARCHFS_FOUND: *node is set.
 *   ARCHFS_ESCAPED: a ".." climbed above the root: the path continues in the
 *     real directory holding app.bin with *escape (a suffix of rest, empty or
 *     starting with '/'): see archfs_escape_path.
 *   -ENOENT: nothing there; *parent_ok says whether the parent is an existing
 *     directory (where a create would have happened: EROFS rather than
 *     ENOENT for the caller).
 *   -ENOTDIR: a file used as a directory.
 *   -ENAMETOOLONG: the path or a component is too long. */
int archfs_lookup(const archfs *fs, const char *rest, char member[ARCHFS_PATH_MAX],
                  archfs_node *node, const char **escape, int *parent_ok);

/* Writes "<root's directory><escape>" ("/" when both are empty) into out.
 * Returns its length, or -ENAMETOOLONG when it does not fit in outlen. */
int archfs_escape_path(const archfs *fs, const char *escape, char *out, size_t outlen);

/* The node's path inside the archive (len bytes, not NUL-terminated; "" for
 * the root). */
const char *archfs_node_name(const archfs *fs, const archfs_node *node);

/* Size in bytes (0 for directories). */
uint64_t archfs_node_size(const archfs *fs, const archfs_node *node);

/* A stable inode number, unique in the tree: 1 for the root, 2 + entry index
 * for files, bit 62 set for other directories. */
uint64_t archfs_node_ino(const archfs_node *node);

/* Packs a node into 64 bits (never 0) and back, for lock-free tables. */
uint64_t archfs_node_pack(const archfs_node *node);
archfs_node archfs_node_unpack(uint64_t packed);

/* One name listed in a directory. */
typedef struct archfs_dirent {
  const char *name; /* not NUL-terminated: points into the index */
  size_t len;
  archfs_node node;
} archfs_dirent;

/* Lists `dir`: start with *cursor = archfs_dir_begin(dir) and call
 * archfs_dir_next until it returns 0. Names come in bytewise order, each
 * once in a well-formed archive; a cursor can be saved and restored (telldir). */
size_t archfs_dir_begin(const archfs_node *dir);
int archfs_dir_next(const archfs *fs, const archfs_node *dir, size_t *cursor, archfs_dirent *out);

#endif
