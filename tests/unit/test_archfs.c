/* archfs: the archive as a directory tree. Lookups of every spelling a path
 * can take ("." / ".." / "//" / trailing slashes, files used as directories,
 * missing parents, names sharing a prefix, ".." above the root), listings
 * (order, each name once, subtrees skipped, explicit directory entries,
 * cursors resumed), inode numbers and the node packing. */
#include "archfs.h"
#include "check.h"
#include "ziptest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {
    "stdlib/os.py",
    "site-packages/pkg/__init__.py",
    "site-packages/pkg/data/a.txt",
    "site-packages/pkg/data/sub/b.json",
    "site-packages/pkg/data.txt",
    "site-packages/pkg-x/y",
    "site-packages/pkg.x/z",
    "site-packages/pkg0/w",
    "emptydir/",
    "z/",
    "z/inner/",
    "top.txt",
};
#define NNAMES (sizeof(names) / sizeof(names[0]))

static zipindex zi;
static archfs fs;
static uint8_t *zip_data;

static void setup(void) {
  ziptest z;
  zt_init(&z);
  for (size_t i = 0; i < NNAMES; i++)
    zt_add_str(&z, names[i], names[i]);
  size_t len;
  zip_data = zt_finish(&z, 0, &len);
  char err[256];
  if (zipindex_open(&zi, zip_data, len, err, sizeof(err)) != 0) {
    fprintf(stderr, "zipindex_open: %s\n", err);
    exit(1);
  }
  archfs_init(&fs, &zi, "/srv/app/app.bin");
}

/* Looks `rest` up; returns the result code and the node's name in `name`. */
static int look(const char *rest, archfs_node *node, char *name, int *parent_ok) {
  char member[ARCHFS_PATH_MAX];
  const char *escape = NULL;
  int po = -1;
  int rc = archfs_lookup(&fs, rest, member, node, &escape, &po);
  name[0] = '\0';
  if (rc == ARCHFS_FOUND) {
    memcpy(name, archfs_node_name(&fs, node), node->len);
    name[node->len] = '\0';
    CHECK_STR(member, name);
  } else if (rc == ARCHFS_ESCAPED) {
    strcpy(name, escape);
  }
  if (parent_ok)
    *parent_ok = po;
  return rc;
}

static void expect_found(const char *rest, uint32_t kind, const char *want) {
  archfs_node node;
  char name[ARCHFS_PATH_MAX];
  int rc = look(rest, &node, name, NULL);
  if (!CHECK_EQ_INT(rc, ARCHFS_FOUND)) {
    fprintf(stderr, "  for \"%s\"\n", rest);
    return;
  }
  CHECK_EQ_INT(node.kind, kind);
  CHECK_STR(name, want);
}

static void expect_error(const char *rest, int err, int parent_ok) {
  archfs_node node;
  char name[ARCHFS_PATH_MAX];
  int po;
  int rc = look(rest, &node, name, &po);
  if (!CHECK_EQ_INT(rc, -err))
    fprintf(stderr, "  for \"%s\"\n", rest);
  else if (err == ENOENT)
    CHECK_EQ_INT(po, parent_ok);
}

static void expect_escape(const char *rest, const char *tail, const char *real) {
  archfs_node node;
  char name[ARCHFS_PATH_MAX];
  if (!CHECK_EQ_INT(look(rest, &node, name, NULL), ARCHFS_ESCAPED))
    return;
  CHECK_STR(name, tail);
  char out[ARCHFS_PATH_MAX];
  CHECK(archfs_escape_path(&fs, name, out, sizeof(out)) == (int)strlen(real));
  CHECK_STR(out, real);
}

static void test_inside(void) {
  CHECK_STR(archfs_inside(&fs, "/srv/app/app.bin/stdlib/os.py"), "stdlib/os.py");
  CHECK_STR(archfs_inside(&fs, "/srv/app/app.bin/"), "");
  CHECK(archfs_inside(&fs, "/srv/app/app.bin") == NULL);
  CHECK(archfs_inside(&fs, "/srv/app/app.bin2/stdlib") == NULL);
  CHECK(archfs_inside(&fs, "/srv/app/app.bi") == NULL);
  CHECK(archfs_inside(&fs, "/srv/app//app.bin/stdlib") == NULL);
  CHECK(archfs_inside(&fs, "srv/app/app.bin/stdlib") == NULL);
  CHECK(archfs_inside(&fs, "") == NULL);
}

static void test_lookups(void) {
  expect_found("", ARCHFS_DIR, "");
  expect_found("/", ARCHFS_DIR, "");
  expect_found(".", ARCHFS_DIR, "");
  expect_found("stdlib", ARCHFS_DIR, "stdlib");
  expect_found("stdlib/", ARCHFS_DIR, "stdlib");
  expect_found("stdlib//", ARCHFS_DIR, "stdlib");
  expect_found("stdlib/.", ARCHFS_DIR, "stdlib");
  expect_found("stdlib/os.py", ARCHFS_FILE, "stdlib/os.py");
  expect_found("stdlib//os.py", ARCHFS_FILE, "stdlib/os.py");
  expect_found("./stdlib/./os.py", ARCHFS_FILE, "stdlib/os.py");
  expect_found("//stdlib///os.py", ARCHFS_FILE, "stdlib/os.py");
  expect_found("site-packages/pkg/data/../data/a.txt", ARCHFS_FILE, "site-packages/pkg/data/a.txt");
  expect_found("site-packages/pkg/data/sub/../../__init__.py", ARCHFS_FILE,
               "site-packages/pkg/__init__.py");
  expect_found("stdlib/../site-packages/pkg/data.txt", ARCHFS_FILE, "site-packages/pkg/data.txt");
  expect_found("site-packages/pkg/data", ARCHFS_DIR, "site-packages/pkg/data");
  expect_found("site-packages/pkg/data/sub/..", ARCHFS_DIR, "site-packages/pkg/data");
  expect_found("emptydir", ARCHFS_DIR, "emptydir");
  expect_found("z/inner/", ARCHFS_DIR, "z/inner");
  expect_found("top.txt", ARCHFS_FILE, "top.txt");

  expect_error("stdlib/os.py/", ENOTDIR, 0);
  expect_error("stdlib/os.py/.", ENOTDIR, 0);
  expect_error("stdlib/os.py/..", ENOTDIR, 0);
  expect_error("stdlib/os.py/x", ENOTDIR, 0);
  expect_error("top.txt/x/y", ENOTDIR, 0);
  expect_error("stdlib/nope.py", ENOENT, 1);
  expect_error("nope", ENOENT, 1);
  expect_error("site-packages/pkg/data/nope", ENOENT, 1);
  expect_error("site-packages/nope/x", ENOENT, 0);
  expect_error("site-packages/nope/../pkg", ENOENT, 0);
  expect_error("site-packages/pk", ENOENT, 1); /* a prefix of a name is nothing */
  expect_error("site-packages/pkg/data.tx", ENOENT, 1);
  expect_error("stdlib/os.py/../os.py", ENOTDIR, 0);
  expect_error("stdlib/new/", ENOENT, 1); /* mkdir("new/") creates "new" */
  expect_error("stdlib/new/.", ENOENT, 0);

  expect_escape("..", "", "/srv/app");
  expect_escape("../x", "/x", "/srv/app/x");
  expect_escape("stdlib/../../y/../z", "/y/../z", "/srv/app/y/../z");
  expect_escape("./..//etc", "//etc", "/srv/app//etc");

  char longname[ARCHFS_NAME_MAX + 2];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  expect_error(longname, ENAMETOOLONG, 0);
  static char longpath[2 * ARCHFS_PATH_MAX];
  for (size_t i = 0; i + 2 < sizeof(longpath); i += 2)
    memcpy(longpath + i, "a/", 2);
  longpath[sizeof(longpath) - 2] = '\0';
  expect_error(longpath, ENAMETOOLONG, 0);
  /* Long but all "." components: normalises to nothing. */
  for (size_t i = 0; i + 2 < sizeof(longpath); i += 2)
    memcpy(longpath + i, "./", 2);
  expect_found(longpath, ARCHFS_DIR, "");
}

static void test_escape_from_root_directory(void) {
  archfs top;
  archfs_init(&top, &zi, "/app.bin");
  char out[16];
  CHECK_EQ_INT(archfs_escape_path(&top, "", out, sizeof(out)), 1);
  CHECK_STR(out, "/");
  CHECK_EQ_INT(archfs_escape_path(&top, "/etc", out, sizeof(out)), 4);
  CHECK_STR(out, "/etc");
  CHECK_EQ_INT(archfs_escape_path(&fs, "/0123456789", out, sizeof(out)), -ENAMETOOLONG);
  /* The tail may live in the output buffer (the interposition does that). */
  char buf[64] = "xxxxxxxxxxxxxxxxxxxxxx/tail";
  CHECK_EQ_INT(archfs_escape_path(&fs, buf + 22, buf, sizeof(buf)), 13);
  CHECK_STR(buf, "/srv/app/tail");
}

/* "a,b,c": the names listed in a directory, with 'd' after directories. */
static void listing(const char *rest, char *out, size_t outlen) {
  archfs_node dir;
  char name[ARCHFS_PATH_MAX];
  out[0] = '\0';
  if (!CHECK_EQ_INT(look(rest, &dir, name, NULL), ARCHFS_FOUND) ||
      !CHECK_EQ_INT(dir.kind, ARCHFS_DIR))
    return;
  size_t cursor = archfs_dir_begin(&dir), used = 0;
  archfs_dirent de;
  while (archfs_dir_next(&fs, &dir, &cursor, &de)) {
    used += (size_t)snprintf(out + used, outlen - used, "%s%.*s%s", used ? "," : "", (int)de.len,
                             de.name, de.node.kind == ARCHFS_DIR ? "/" : "");
    /* Each child looked up by path is the same node. */
    char path[ARCHFS_PATH_MAX];
    snprintf(path, sizeof(path), "%s/%.*s", rest, (int)de.len, de.name);
    archfs_node child;
    if (CHECK_EQ_INT(look(path, &child, name, NULL), ARCHFS_FOUND)) {
      CHECK_EQ_INT(child.kind, de.node.kind);
      CHECK_EQ_INT(archfs_node_ino(&child), archfs_node_ino(&de.node));
    }
  }
}

static void test_listings(void) {
  char out[1024];
  listing("", out, sizeof(out));
  CHECK_STR(out, "emptydir/,site-packages/,stdlib/,top.txt,z/");
  listing("site-packages", out, sizeof(out));
  CHECK_STR(out, "pkg-x/,pkg.x/,pkg/,pkg0/");
  listing("site-packages/pkg", out, sizeof(out));
  CHECK_STR(out, "__init__.py,data.txt,data/");
  listing("site-packages/pkg/data/", out, sizeof(out));
  CHECK_STR(out, "a.txt,sub/");
  listing("emptydir", out, sizeof(out));
  CHECK_STR(out, "");
  listing("z", out, sizeof(out));
  CHECK_STR(out, "inner/");
  listing("z/inner", out, sizeof(out));
  CHECK_STR(out, "");
}

static void test_cursor_resumes(void) {
  archfs_node dir;
  char name[ARCHFS_PATH_MAX];
  if (!CHECK_EQ_INT(look("site-packages", &dir, name, NULL), ARCHFS_FOUND))
    return;
  size_t cursor = archfs_dir_begin(&dir);
  archfs_dirent de;
  CHECK(archfs_dir_next(&fs, &dir, &cursor, &de));
  size_t saved = cursor;
  CHECK(archfs_dir_next(&fs, &dir, &cursor, &de));
  CHECK(de.len == 5 && memcmp(de.name, "pkg.x", 5) == 0);
  cursor = saved;
  CHECK(archfs_dir_next(&fs, &dir, &cursor, &de));
  CHECK(de.len == 5 && memcmp(de.name, "pkg.x", 5) == 0);
  while (archfs_dir_next(&fs, &dir, &cursor, &de))
    ;
  CHECK(!archfs_dir_next(&fs, &dir, &cursor, &de)); /* stays at the end */
}

/* Walks the whole tree: inode numbers are unique and nodes survive packing. */
static size_t walk(const archfs_node *dir, uint64_t *inos, size_t n) {
  size_t cursor = archfs_dir_begin(dir);
  archfs_dirent de;
  while (archfs_dir_next(&fs, dir, &cursor, &de)) {
    archfs_node back = archfs_node_unpack(archfs_node_pack(&de.node));
    CHECK(archfs_node_pack(&de.node) != 0);
    CHECK(back.kind == de.node.kind && back.len == de.node.len && back.index == de.node.index);
    inos[n++] = archfs_node_ino(&de.node);
    if (de.node.kind == ARCHFS_DIR)
      n = walk(&de.node, inos, n);
  }
  return n;
}

static void test_inodes_unique(void) {
  uint64_t inos[64];
  archfs_node root = {ARCHFS_DIR, 0, 0};
  inos[0] = archfs_node_ino(&root);
  size_t n = walk(&root, inos, 1);
  CHECK_EQ_INT(n, 21); /* 9 files + 11 directories + the root */
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      CHECK(inos[i] != inos[j]);
  CHECK_EQ_INT(archfs_node_ino(&root), 1);
}

static void test_sizes(void) {
  archfs_node node;
  char name[ARCHFS_PATH_MAX];
  if (CHECK_EQ_INT(look("stdlib/os.py", &node, name, NULL), ARCHFS_FOUND))
    CHECK_EQ_INT(archfs_node_size(&fs, &node), strlen("stdlib/os.py"));
  if (CHECK_EQ_INT(look("stdlib", &node, name, NULL), ARCHFS_FOUND))
    CHECK_EQ_INT(archfs_node_size(&fs, &node), 0);
}

static void test_empty_archive(void) {
  ziptest z;
  zt_init(&z);
  size_t len;
  uint8_t *data = zt_finish(&z, 0, &len);
  zipindex empty;
  char err[256];
  if (!CHECK(zipindex_open(&empty, data, len, err, sizeof(err)) == 0)) {
    free(data);
    return;
  }
  archfs efs;
  archfs_init(&efs, &empty, "/app.bin");
  char member[ARCHFS_PATH_MAX];
  archfs_node node;
  const char *escape;
  int po;
  CHECK_EQ_INT(archfs_lookup(&efs, "", member, &node, &escape, &po), ARCHFS_FOUND);
  size_t cursor = archfs_dir_begin(&node);
  archfs_dirent de;
  CHECK(!archfs_dir_next(&efs, &node, &cursor, &de));
  CHECK_EQ_INT(archfs_lookup(&efs, "x", member, &node, &escape, &po), -ENOENT);
  CHECK_EQ_INT(po, 1);
  zipindex_close(&empty);
  free(data);
}

int main(void) {
  setup();
  test_inside();
  test_lookups();
  test_escape_from_root_directory();
  test_listings();
  test_cursor_resumes();
  test_inodes_unique();
  test_sizes();
  test_empty_archive();
  zipindex_close(&zi);
  free(zip_data);
  return check_summary();
}
