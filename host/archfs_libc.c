/* The libc interposition of archfs: see archfs_libc.h for what and why.
 *
 * Every path function starts with route_at(): outside the archive (one
 * prefix comparison for an absolute path, one load for a relative one) it
 * returns ROUTE_OUT and the caller hands the path to glibc unchanged; a call
 * that then fails with ENOTDIR gets a second look (reroute) for the spellings
 * that reach app.bin some other way. Nothing here takes a lock: the
 * descriptor table and the virtual working directory are atomics, so the
 * functions stay usable between fork() and exec() (subprocess's child calls
 * close, dup2 and chdir there); a vfork() child, which shares its parent's
 * memory, leaves both as they are (owner_pid). */
#undef _FORTIFY_SOURCE

#include "archfs_libc.h"

#include "archfs.h"
#include "extload.h"

#include <assert.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* glibc's fortified and pre-2.33 entry points, not in its headers without
 * _FORTIFY_SOURCE or any more: binaries built elsewhere still call them. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
char *__realpath_chk(const char *path, char *resolved, size_t resolvedlen);
char *__getcwd_chk(char *buf, size_t size, size_t buflen);
ssize_t __readlink_chk(const char *path, char *buf, size_t len, size_t buflen);
ssize_t __readlinkat_chk(int dirfd, const char *path, char *buf, size_t len, size_t buflen);
int __xstat(int ver, const char *path, struct stat *st);
int __xstat64(int ver, const char *path, struct stat64 *st);
int __lxstat(int ver, const char *path, struct stat *st);
int __lxstat64(int ver, const char *path, struct stat64 *st);
int __fxstat(int ver, int fd, struct stat *st);
int __fxstat64(int ver, int fd, struct stat64 *st);
int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags);
int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags);
int __xmknod(int ver, const char *path, mode_t mode, dev_t *dev);
int __xmknodat(int ver, int dirfd, const char *path, mode_t mode, dev_t *dev);

_Static_assert(sizeof(struct stat) == sizeof(struct stat64), "x86-64: one stat layout");
_Static_assert(sizeof(struct dirent) == sizeof(struct dirent64), "x86-64: one dirent layout");

/* st_dev of the tree: an unnamed device (major 0, like tmpfs or FUSE) with
 * the last minor number, which the kernel hands out last; no real file shares
 * it, and the archive root looks like a mount point. */
#define ARCHFS_DEV makedev(0, 0xfffff)
#define ARCHFS_BLKSIZE 4096

/* ---- glibc's own functions ------------------------------------------------ */

/* clang-format off */
#define ARCHFS_REAL_FUNCS(X)                                                                       \
  X(open) X(open64) X(__open_2) X(__open64_2) X(openat) X(openat64) X(__openat_2)                  \
  X(__openat64_2) X(creat) X(creat64) X(fopen) X(fopen64)                                          \
  X(stat) X(stat64) X(lstat) X(lstat64) X(fstat) X(fstat64) X(fstatat) X(fstatat64) X(statx)       \
  X(access) X(faccessat) X(euidaccess) X(eaccess)                                                  \
  X(opendir) X(fdopendir) X(readdir) X(readdir64) X(readdir_r) X(readdir64_r) X(closedir)          \
  X(dirfd) X(rewinddir) X(seekdir) X(telldir) X(scandir) X(scandir64) X(scandirat) X(scandirat64)  \
  X(readlink) X(readlinkat) X(__readlink_chk) X(__readlinkat_chk)                                  \
  X(realpath) X(__realpath_chk) X(canonicalize_file_name)                                          \
  X(getcwd) X(__getcwd_chk) X(get_current_dir_name) X(chdir) X(fchdir)                             \
  X(statvfs) X(statvfs64) X(fstatvfs) X(fstatvfs64) X(statfs) X(statfs64) X(fstatfs) X(fstatfs64)  \
  X(close) X(fclose) X(dup) X(dup2) X(dup3) X(fcntl) X(fcntl64) X(close_range) X(closefrom)        \
  X(mkdir) X(mkdirat) X(rmdir) X(unlink) X(unlinkat) X(rename) X(renameat) X(renameat2)            \
  X(link) X(linkat) X(symlink) X(symlinkat) X(chmod) X(fchmodat) X(lchmod) X(chown) X(lchown)      \
  X(fchownat) X(truncate) X(truncate64) X(utime) X(utimes) X(lutimes) X(futimesat) X(utimensat)    \
  X(mknod) X(mknodat) X(mkfifo) X(mkfifoat)                                                        \
  X(getxattr) X(lgetxattr) X(listxattr) X(llistxattr) X(setxattr) X(lsetxattr) X(removexattr)      \
  X(lremovexattr) X(dlopen) X(glob) X(glob64) X(freopen) X(freopen64)
/* clang-format on */

#define ARCHFS_DECLARE_REAL(name) static void *next_##name;
ARCHFS_REAL_FUNCS(ARCHFS_DECLARE_REAL)

/* The next definition of `name` after ours (glibc's, or a sanitizer's). All
 * are looked up at mount time; a call before that (from a constructor, or
 * before main) looks its function up then. */
static void *real_fn(void **slot, const char *name) {
  void *fn = __atomic_load_n(slot, __ATOMIC_RELAXED);
  if (!fn) {
    fn = dlsym(RTLD_NEXT, name);
    if (!fn) { /* glibc >= 2.36 has every one */
      char msg[128];
      int len = snprintf(msg, sizeof(msg), "app.bin: error: the C library lacks %s\n", name);
      (void)!write(2, msg, len > 0 ? (size_t)len : 0);
      abort();
    }
    __atomic_store_n(slot, fn, __ATOMIC_RELAXED);
  }
  return fn;
}

#define REAL(name) ((__typeof__(&name))real_fn(&next_##name, #name))

/* ---- state ------------------------------------------------------------------ */

static struct {
  int mounted; /* written once, before any thread; cleared at exit */
  archfs fs;
  zipindex *zi;
  char *root;
  dev_t exe_dev;
  ino_t exe_ino;
  uid_t uid;
  gid_t gid;
  struct timespec mtime, ctime;
} g;

/* Descriptors that name archive files and directories: the packed node and
 * the inode of the real file behind the descriptor (a memfd; app.bin for
 * directories where memfd is missing), compared with fstat's before the
 * node is believed, so a descriptor closed behind our back (by glibc
 * internally) and reused is never taken for an archive file. */
#define FD_CHUNK 1024
#define FD_CHUNKS 1024 /* descriptors below 2^20 */
typedef struct fd_slot {
  uint64_t node; /* archfs_node_pack, 0 = not tracked */
  uint64_t real_ino;
} fd_slot;
static fd_slot *fd_chunks[FD_CHUNKS];

/* The virtual working directory: a packed directory node, 0 when the real
 * working directory is in effect. */
static uint64_t vcwd;

/* The process the table and vcwd describe: set at mount and in fork()
 * children. A vfork() child (_posixsubprocess's, which closes every
 * descriptor and chdirs before exec) runs in its parent's memory: it must
 * change neither. getpid() is only asked when something would change. */
static pid_t owner_pid;

static int in_owner(void) { return getpid() == __atomic_load_n(&owner_pid, __ATOMIC_RELAXED); }

static fd_slot *fd_slot_of(int fd, int create) {
  if (fd < 0 || fd >= FD_CHUNK * FD_CHUNKS)
    return NULL;
  fd_slot **cp = &fd_chunks[fd / FD_CHUNK];
  fd_slot *chunk = __atomic_load_n(cp, __ATOMIC_ACQUIRE);
  if (!chunk && create) {
    fd_slot *fresh = calloc(FD_CHUNK, sizeof(*fresh));
    if (!fresh)
      return NULL;
    if (__atomic_compare_exchange_n(cp, &chunk, fresh, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      chunk = fresh;
    else
      free(fresh);
  }
  return chunk ? &chunk[fd % FD_CHUNK] : NULL;
}

static int fd_track(int fd, const archfs_node *node, uint64_t real_ino) {
  fd_slot *s = in_owner() ? fd_slot_of(fd, 1) : NULL;
  if (!s)
    return -1;
  __atomic_store_n(&s->real_ino, real_ino, __ATOMIC_RELAXED);
  __atomic_store_n(&s->node, archfs_node_pack(node), __ATOMIC_RELEASE);
  return 0;
}

static void fd_forget(int fd) {
  fd_slot *s = fd_slot_of(fd, 0);
  if (s && __atomic_load_n(&s->node, __ATOMIC_RELAXED) && in_owner())
    __atomic_store_n(&s->node, 0, __ATOMIC_RELEASE);
}

/* The node of a tracked descriptor whose real inode is `real_ino`. */
static int fd_check(int fd, uint64_t real_ino, archfs_node *node) {
  fd_slot *s = fd_slot_of(fd, 0);
  uint64_t packed = s ? __atomic_load_n(&s->node, __ATOMIC_ACQUIRE) : 0;
  if (!packed)
    return 0;
  if (__atomic_load_n(&s->real_ino, __ATOMIC_RELAXED) != real_ino) {
    fd_forget(fd);
    return 0;
  }
  *node = archfs_node_unpack(packed);
  return 1;
}

/* The node of a tracked descriptor (one fstat to be sure of it). */
static int fd_node(int fd, archfs_node *node) {
  fd_slot *s = fd_slot_of(fd, 0);
  if (!s || !__atomic_load_n(&s->node, __ATOMIC_RELAXED))
    return 0;
  struct stat64 st;
  if (REAL(fstat64)(fd, &st) != 0)
    return 0;
  return fd_check(fd, st.st_ino, node);
}

/* After dup-like calls: `to` names what `from` names. */
static void fd_copy(int from, int to) {
  fd_slot *s = fd_slot_of(from, 0);
  uint64_t packed = s ? __atomic_load_n(&s->node, __ATOMIC_ACQUIRE) : 0;
  if (packed) {
    archfs_node node = archfs_node_unpack(packed);
    if (fd_track(to, &node, __atomic_load_n(&s->real_ino, __ATOMIC_RELAXED)) == 0)
      return;
  }
  fd_forget(to);
}

static void fd_forget_range(unsigned first, unsigned last) {
  int owner = -1; /* asked at the first tracked descriptor */
  for (unsigned c = first / FD_CHUNK; c < FD_CHUNKS && c <= last / FD_CHUNK; c++) {
    fd_slot *chunk = __atomic_load_n(&fd_chunks[c], __ATOMIC_ACQUIRE);
    for (unsigned i = 0; chunk && i < FD_CHUNK; i++) {
      unsigned fd = c * FD_CHUNK + i;
      if (fd < first || fd > last || !__atomic_load_n(&chunk[i].node, __ATOMIC_RELAXED))
        continue;
      if (owner < 0)
        owner = in_owner();
      if (!owner)
        return;
      __atomic_store_n(&chunk[i].node, 0, __ATOMIC_RELEASE);
    }
  }
}

/* ---- routing paths ------------------------------------------------------------ */

enum {
  ROUTE_OUT,   /* hand r.path to glibc */
  ROUTE_IN,    /* r.node */
  ROUTE_ERR,   /* errno says why (r.parent_ok for ENOENT) */
  ROUTE_AGAIN, /* internal: r.path changed (left the archive through "..") */
  ROUTE_DONE,  /* reroute: glibc's answer stands */
};

/* Every interposed function holds one on its stack, also for paths outside
 * the archive (a signal handler on a small alternate stack may call them):
 * the scratch space of lookups lives in the frames of the functions below,
 * which only paths inside (or through) the archive reach. */
typedef struct route {
  const char *path; /* the caller's path, or buf */
  archfs_node node;
  int parent_ok;
  int depth;
  int saved_errno;           /* the caller's, for a success after reroute */
  char buf[ARCHFS_PATH_MAX]; /* an escaped path */
} route;

/* Resolves `rest` from the directory `base`. */
__attribute__((noinline)) static int route_rest(route *r, const archfs_node *base,
                                                const char *rest) {
  char member[ARCHFS_PATH_MAX];
  const char *escape;
  int rc = archfs_lookup_at(&g.fs, base, rest, member, &r->node, &escape, &r->parent_ok);
  if (rc == ARCHFS_FOUND)
    return ROUTE_IN;
  if (rc < 0) {
    errno = -rc;
    return ROUTE_ERR;
  }
  if (++r->depth > 40 || archfs_escape_path(&g.fs, escape, r->buf, sizeof(r->buf)) < 0) {
    errno = r->depth > 40 ? ELOOP : ENAMETOOLONG;
    return ROUTE_ERR;
  }
  r->path = r->buf;
  return ROUTE_AGAIN;
}

/* The base directory a relative path starts from: 0 when it is not ours. */
static int route_base(int dirfd, archfs_node *base) {
  if (dirfd == AT_FDCWD) {
    uint64_t packed = __atomic_load_n(&vcwd, __ATOMIC_ACQUIRE);
    if (!packed)
      return 0;
    *base = archfs_node_unpack(packed);
    return 1;
  }
  return fd_node(dirfd, base);
}

static const archfs_node root_node = {ARCHFS_DIR, 0, 0};

static int route_path(route *r, int dirfd) {
  for (;;) {
    const char *rest = r->path;
    archfs_node base = root_node;
    if (r->path[0] == '/') {
      rest = archfs_inside(&g.fs, r->path);
      if (!rest)
        return ROUTE_OUT;
    } else {
      if (r->path[0] == '\0' || !route_base(dirfd, &base))
        return ROUTE_OUT;
      if (base.kind != ARCHFS_DIR) {
        errno = ENOTDIR;
        return ROUTE_ERR;
      }
    }
    /* The kernel takes no path of PATH_MAX bytes or more, whatever it
     * names (an escaped path in r->buf is always shorter). */
    if (strnlen(r->path, ARCHFS_PATH_MAX) == ARCHFS_PATH_MAX) {
      errno = ENAMETOOLONG;
      return ROUTE_ERR;
    }
    int k = route_rest(r, &base, rest);
    if (k != ROUTE_AGAIN)
      return k;
  }
}

/* glibc's headers declare most path parameters nonnull, so the compiler
 * would drop a NULL check of one (the empty asm hides what it believes),
 * and handing NULL on to glibc's function would be undefined: a NULL path is
 * answered here as the kernel answers glibc's call (EFAULT). */
static inline void *nullable(const void *p) {
  __asm__("" : "+r"(p));
  return (void *)p;
}

/* Where `path` (relative to dirfd) leads. */
static int route_at(int dirfd, const char *path, route *r) {
  path = nullable(path);
  r->path = path;
  r->depth = 0;
  r->parent_ok = 0;
  r->saved_errno = errno;
  if (!path) {
    errno = EFAULT;
    return ROUTE_ERR;
  }
  if (!g.mounted)
    return ROUTE_OUT;
  return route_path(r, dirfd);
}

/* glibc failed on r->path: with ENOTDIR the path may go through app.bin by
 * another name. Finds the first regular file on the path; if it is app.bin,
 * routes the rest (errno as the caller had it, unless ROUTE_ERR). ROUTE_DONE
 * (errno ENOTDIR again) when it is not ours. */
__attribute__((noinline)) static int reroute(int dirfd, route *r) {
  if (errno != ENOTDIR || !g.mounted)
    return ROUTE_DONE;
  const char *p = r->path;
  size_t n = strnlen(p, ARCHFS_PATH_MAX);
  char prefix[ARCHFS_PATH_MAX];
  for (size_t i = 1; i < n; i++) {
    if (p[i] != '/' || p[i - 1] == '/')
      continue;
    memcpy(prefix, p, i);
    prefix[i] = '\0';
    struct stat64 st;
    if (REAL(fstatat64)(dirfd, prefix, &st, 0) != 0)
      break;
    if (S_ISDIR(st.st_mode))
      continue;
    if (S_ISREG(st.st_mode) && st.st_ino == g.exe_ino && st.st_dev == g.exe_dev) {
      int k = route_rest(r, &root_node, p + i + 1);
      if (k == ROUTE_AGAIN)
        k = route_path(r, AT_FDCWD);
      if (k != ROUTE_ERR)
        errno = r->saved_errno;
      return k;
    }
    break;
  }
  errno = ENOTDIR;
  return ROUTE_DONE;
}

/* Hands a path outside the archive to glibc: `call` (using r.path) is made,
 * and its result returned unless it failed with ENOTDIR through app.bin. What
 * follows the macro handles ROUTE_IN and ROUTE_ERR. */
#define PASS_OUTSIDE(type, failed, dirfd, path, r, k, call)                                        \
  route r;                                                                                         \
  int k = route_at((dirfd), (path), &r);                                                           \
  while (k == ROUTE_OUT) {                                                                         \
    type ret_ = (call);                                                                            \
    if (!failed(ret_) || (k = reroute((dirfd), &r)) == ROUTE_DONE)                                 \
      return ret_;                                                                                 \
  }

#define FAILED_INT(x) ((x) < 0)
#define FAILED_PTR(x) ((x) == NULL)

/* ---- what archive nodes answer ----------------------------------------------- */

static int fail(int err) {
  errno = err;
  return -1;
}

static void node_stat(const archfs_node *n, struct stat *st) {
  memset(st, 0, sizeof(*st));
  uint64_t size = archfs_node_size(&g.fs, n);
  st->st_dev = ARCHFS_DEV;
  st->st_ino = archfs_node_ino(n);
  st->st_mode = n->kind == ARCHFS_DIR ? S_IFDIR | 0555 : S_IFREG | 0444;
  st->st_nlink = 1; /* as btrfs does for directories: "unknown", never trusted by find */
  st->st_uid = g.uid;
  st->st_gid = g.gid;
  st->st_size = (off_t)size;
  st->st_blksize = ARCHFS_BLKSIZE;
  st->st_blocks = (blkcnt_t)((size + 511) / 512);
  st->st_atim = g.mtime;
  st->st_mtim = g.mtime;
  st->st_ctim = g.ctime;
}

static int node_stat64(const archfs_node *n, void *out) {
  struct stat st;
  node_stat(n, &st);
  memcpy(out, &st, sizeof(st));
  return 0;
}

static void node_statx(const archfs_node *n, struct statx *stx) {
  struct stat st;
  node_stat(n, &st);
  memset(stx, 0, sizeof(*stx));
  stx->stx_mask = STATX_BASIC_STATS;
  stx->stx_blksize = (uint32_t)st.st_blksize;
  stx->stx_nlink = (uint32_t)st.st_nlink;
  stx->stx_uid = st.st_uid;
  stx->stx_gid = st.st_gid;
  stx->stx_mode = (uint16_t)st.st_mode;
  stx->stx_ino = st.st_ino;
  stx->stx_size = (uint64_t)st.st_size;
  stx->stx_blocks = (uint64_t)st.st_blocks;
  stx->stx_atime = (struct statx_timestamp){st.st_atim.tv_sec, (uint32_t)st.st_atim.tv_nsec, 0};
  stx->stx_mtime = (struct statx_timestamp){st.st_mtim.tv_sec, (uint32_t)st.st_mtim.tv_nsec, 0};
  stx->stx_ctime = (struct statx_timestamp){st.st_ctim.tv_sec, (uint32_t)st.st_ctim.tv_nsec, 0};
  stx->stx_dev_major = major(st.st_dev);
  stx->stx_dev_minor = minor(st.st_dev);
}

static int node_access(const archfs_node *n, int mode) {
  if (mode & W_OK)
    return fail(EROFS);
  if ((mode & X_OK) && n->kind != ARCHFS_DIR)
    return fail(EACCES);
  return 0;
}

static int fill_member(void *buf, void *ctx, char *err, size_t errlen) {
  return zipindex_read_data(g.zi, ctx, buf, err, errlen);
}

/* A descriptor for a directory, tracked as the node: an empty sealed memfd
 * of its own, reopened O_PATH (read() fails with EBADF, not EISDIR, but
 * fails). A raw openat() relative to it fails with ENOTDIR, and chmod,
 * utimes or a link through /proc/self/fd/N or AT_EMPTY_PATH reach only it.
 * Where memfd is missing, app.bin opened O_PATH (through /proc/self/exe: the
 * running file even if its path now names a newer one). */
static int open_placeholder(const archfs_node *n, int flags) {
  int saved = errno;
  int fd = extload_empty_fd(flags & O_CLOEXEC);
  if (fd >= 0) {
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    int path_fd = REAL(open)(proc, O_PATH | (flags & O_CLOEXEC));
    if (path_fd >= 0) {
      REAL(close)(fd);
      fd = path_fd;
    }
  }
  if (fd < 0)
    fd = REAL(open)("/proc/self/exe", O_PATH | (flags & O_CLOEXEC));
  if (fd < 0)
    fd = REAL(open)(g.root, O_PATH | (flags & O_CLOEXEC));
  if (fd < 0)
    return -1;
  struct stat64 st;
  if (REAL(fstat64)(fd, &st) != 0 || fd_track(fd, n, st.st_ino) != 0) {
    REAL(close)(fd);
    return fail(EMFILE);
  }
  errno = saved;
  return fd;
}

static int open_member(const archfs_node *n, int flags) {
  zipindex_entry *e = &g.zi->entries[n->index];
  int saved = errno; /* the read and the memfd's making leave theirs */
  char err[1536] = "";
  int fd = extload_data_fd(e->name, (size_t)e->size, fill_member, e, flags & O_CLOEXEC, err,
                           sizeof(err));
  if (fd < 0) {
    /* Out of descriptors or memory: what open() says anyway. Anything else
     * (a damaged member, no memfd and nowhere to write) gets one line. */
    int saved = errno;
    if (saved != EMFILE && saved != ENFILE && saved != ENOMEM) {
      char line[2048];
      int len = saved == EIO
                    ? snprintf(line, sizeof(line), "app.bin: error: %s\n", err)
                    : snprintf(line, sizeof(line), "app.bin: error: cannot open %s/%s: %s\n",
                               g.root, e->name, err);
      if (len > 0)
        (void)!write(2, line, (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1);
    }
    errno = saved;
    return -1;
  }
  struct stat64 st;
  if (REAL(fstat64)(fd, &st) == 0)
    (void)fd_track(fd, n, st.st_ino); /* beyond the table: untracked, still readable */
  errno = saved;
  return fd;
}

static int node_open(const archfs_node *n, int flags) {
  int acc = flags & O_ACCMODE;
  if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL))
    return fail(EEXIST);
  if ((flags & O_TMPFILE) == O_TMPFILE)
    return fail(n->kind == ARCHFS_DIR ? EROFS : ENOTDIR);
  if (n->kind == ARCHFS_DIR) {
    if (acc != O_RDONLY || (flags & O_CREAT))
      return fail(EISDIR);
    return open_placeholder(n, flags);
  }
  if (flags & O_DIRECTORY)
    return fail(ENOTDIR);
  if (acc != O_RDONLY || (flags & O_TRUNC))
    return fail(EROFS);
  return open_member(n, flags); /* O_PATH too: reopened through /proc, it reads the member */
}

/* An archive path that does not exist: a create there is refused as EROFS
 * when its directory exists, as the kernel does on a read-only mount. */
static int missing_error(const route *r, int creates) {
  return creates && errno == ENOENT && r->parent_ok ? fail(EROFS) : -1;
}

/* ---- open ------------------------------------------------------------------------- */

enum open_kind { OPEN, OPEN64, OPEN_2, OPEN64_2, OPENAT, OPENAT64, OPENAT_2, OPENAT64_2 };

static int real_open(enum open_kind kind, int dirfd, const char *path, int flags, mode_t mode) {
  switch (kind) {
  case OPEN:
    return REAL(open)(path, flags, mode);
  case OPEN64:
    return REAL(open64)(path, flags, mode);
  case OPEN_2:
    return REAL(__open_2)(path, flags);
  case OPEN64_2:
    return REAL(__open64_2)(path, flags);
  case OPENAT:
    return REAL(openat)(dirfd, path, flags, mode);
  case OPENAT64:
    return REAL(openat64)(dirfd, path, flags, mode);
  case OPENAT_2:
    return REAL(__openat_2)(dirfd, path, flags);
  case OPENAT64_2:
    return REAL(__openat64_2)(dirfd, path, flags);
  }
  return fail(EINVAL);
}

static int open_common(enum open_kind kind, int dirfd, const char *path, int flags, mode_t mode) {
  PASS_OUTSIDE(int, FAILED_INT, dirfd, path, r, k, real_open(kind, dirfd, r.path, flags, mode));
  if (k == ROUTE_ERR)
    return missing_error(&r, flags & O_CREAT);
  return node_open(&r.node, flags);
}

/* The mode argument exists only with O_CREAT or O_TMPFILE. */
#define OPEN_MODE(flags, mode)                                                                     \
  do {                                                                                             \
    if ((flags)&O_CREAT || ((flags)&O_TMPFILE) == O_TMPFILE) {                                     \
      va_list ap;                                                                                  \
      va_start(ap, flags);                                                                         \
      mode = va_arg(ap, mode_t);                                                                   \
      va_end(ap);                                                                                  \
    }                                                                                              \
  } while (0)

int open(const char *path, int flags, ...) {
  mode_t mode = 0;
  OPEN_MODE(flags, mode);
  return open_common(OPEN, AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...) {
  mode_t mode = 0;
  OPEN_MODE(flags, mode);
  return open_common(OPEN64, AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
  mode_t mode = 0;
  OPEN_MODE(flags, mode);
  return open_common(OPENAT, dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
  mode_t mode = 0;
  OPEN_MODE(flags, mode);
  return open_common(OPENAT64, dirfd, path, flags, mode);
}

/* The fortified forms abort on O_CREAT without a mode: glibc's do that. */
int __open_2(const char *path, int flags) {
  if (flags & O_CREAT || (flags & O_TMPFILE) == O_TMPFILE)
    return REAL(__open_2)(path, flags);
  return open_common(OPEN_2, AT_FDCWD, path, flags, 0);
}

int __open64_2(const char *path, int flags) {
  if (flags & O_CREAT || (flags & O_TMPFILE) == O_TMPFILE)
    return REAL(__open64_2)(path, flags);
  return open_common(OPEN64_2, AT_FDCWD, path, flags, 0);
}

int __openat_2(int dirfd, const char *path, int flags) {
  if (flags & O_CREAT || (flags & O_TMPFILE) == O_TMPFILE)
    return REAL(__openat_2)(dirfd, path, flags);
  return open_common(OPENAT_2, dirfd, path, flags, 0);
}

int __openat64_2(int dirfd, const char *path, int flags) {
  if (flags & O_CREAT || (flags & O_TMPFILE) == O_TMPFILE)
    return REAL(__openat64_2)(dirfd, path, flags);
  return open_common(OPENAT64_2, dirfd, path, flags, 0);
}

int creat(const char *path, mode_t mode) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(creat)(r.path, mode));
  if (k == ROUTE_ERR)
    return missing_error(&r, 1);
  return node_open(&r.node, O_CREAT | O_WRONLY | O_TRUNC);
}

int creat64(const char *path, mode_t mode) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(creat64)(r.path, mode));
  if (k == ROUTE_ERR)
    return missing_error(&r, 1);
  return node_open(&r.node, O_CREAT | O_WRONLY | O_TRUNC);
}

/* fopen's mode string as open() flags. */
static int fopen_flags(const char *mode) {
  int flags;
  switch (mode[0]) {
  case 'r':
    flags = O_RDONLY;
    break;
  case 'w':
    flags = O_WRONLY | O_CREAT | O_TRUNC;
    break;
  case 'a':
    flags = O_WRONLY | O_CREAT | O_APPEND;
    break;
  default:
    return -1;
  }
  for (const char *m = mode + 1; *m && *m != ','; m++) {
    if (*m == '+')
      flags = (flags & ~O_ACCMODE) | O_RDWR;
    else if (*m == 'x')
      flags |= O_EXCL;
    else if (*m == 'e')
      flags |= O_CLOEXEC;
  }
  return flags;
}

static FILE *fopen_node(const route *r, int k, const char *mode) {
  int flags = fopen_flags(mode);
  if (flags < 0) {
    errno = EINVAL;
    return NULL;
  }
  if (k == ROUTE_ERR) {
    missing_error(r, flags & O_CREAT);
    return NULL;
  }
  int fd = node_open(&r->node, flags);
  if (fd < 0)
    return NULL;
  FILE *f = fdopen(fd, mode);
  if (!f) {
    int saved = errno;
    close(fd);
    errno = saved;
  }
  return f;
}

FILE *fopen(const char *path, const char *mode) {
  PASS_OUTSIDE(FILE *, FAILED_PTR, AT_FDCWD, path, r, k, REAL(fopen)(r.path, mode));
  return fopen_node(&r, k, mode);
}

FILE *fopen64(const char *path, const char *mode) {
  PASS_OUTSIDE(FILE *, FAILED_PTR, AT_FDCWD, path, r, k, REAL(fopen64)(r.path, mode));
  return fopen_node(&r, k, mode);
}

/* ---- stat ------------------------------------------------------------------------- */

int stat(const char *path, struct stat *st) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(stat)(r.path, st));
  return k == ROUTE_ERR ? -1 : node_stat64(&r.node, st);
}

int stat64(const char *path, struct stat64 *st) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(stat64)(r.path, st));
  return k == ROUTE_ERR ? -1 : node_stat64(&r.node, st);
}

int lstat(const char *path, struct stat *st) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(lstat)(r.path, st));
  return k == ROUTE_ERR ? -1 : node_stat64(&r.node, st);
}

int lstat64(const char *path, struct stat64 *st) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(lstat64)(r.path, st));
  return k == ROUTE_ERR ? -1 : node_stat64(&r.node, st);
}

int fstat(int fd, struct stat *st) {
  int rc = REAL(fstat)(fd, st);
  archfs_node n;
  if (rc == 0 && fd_check(fd, st->st_ino, &n))
    node_stat64(&n, st);
  return rc;
}

int fstat64(int fd, struct stat64 *st) {
  int rc = REAL(fstat64)(fd, st);
  archfs_node n;
  if (rc == 0 && fd_check(fd, st->st_ino, &n))
    node_stat64(&n, st);
  return rc;
}

/* An empty path with AT_EMPTY_PATH asks about dirfd itself (so does NULL
 * since Linux 6.11: glibc's call is then made with ""). */
static int names_dirfd(const char *path, int flags) {
  path = nullable(path);
  return (flags & AT_EMPTY_PATH) && (!path || path[0] == '\0');
}

/* Whether dirfd is AT_FDCWD with a virtual working directory, *node. */
static int names_vcwd(int dirfd, archfs_node *node) {
  return dirfd == AT_FDCWD && route_base(AT_FDCWD, node);
}

static int fstatat_common(int dirfd, const char *path, void *st, int flags, int is64) {
  archfs_node n;
  if (names_dirfd(path, flags)) {
    if (names_vcwd(dirfd, &n))
      return node_stat64(&n, st);
    int rc = is64 ? REAL(fstatat64)(dirfd, "", st, flags) : REAL(fstatat)(dirfd, "", st, flags);
    if (rc == 0 && fd_check(dirfd, ((struct stat *)st)->st_ino, &n))
      node_stat64(&n, st);
    return rc;
  }
  PASS_OUTSIDE(int, FAILED_INT, dirfd, path, r, k,
               is64 ? REAL(fstatat64)(dirfd, r.path, st, flags)
                    : REAL(fstatat)(dirfd, r.path, st, flags));
  return k == ROUTE_ERR ? -1 : node_stat64(&r.node, st);
}

int fstatat(int dirfd, const char *path, struct stat *st, int flags) {
  return fstatat_common(dirfd, path, st, flags, 0);
}

int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags) {
  return fstatat_common(dirfd, path, st, flags, 1);
}

int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *stx) {
  archfs_node n;
  if (names_dirfd(path, flags)) {
    if (names_vcwd(dirfd, &n)) {
      node_statx(&n, stx);
      return 0;
    }
    int rc = REAL(statx)(dirfd, "", flags, mask, stx);
    if (rc == 0 && fd_check(dirfd, stx->stx_ino, &n))
      node_statx(&n, stx);
    return rc;
  }
  PASS_OUTSIDE(int, FAILED_INT, dirfd, path, r, k, REAL(statx)(dirfd, r.path, flags, mask, stx));
  if (k == ROUTE_ERR)
    return -1;
  node_statx(&r.node, stx);
  return 0;
}

/* Before glibc 2.33 stat() and friends were inline calls of these; wheels
 * built for old glibc still call them. Version 1 (_STAT_VER_LINUX) is the
 * only layout on x86-64 (0, _STAT_VER_KERNEL, is accepted as glibc does). */
#define XSTAT_VERSION_OK(ver) ((ver) == 0 || (ver) == 1)

int __xstat(int ver, const char *path, struct stat *st) {
  return XSTAT_VERSION_OK(ver) ? stat(path, st) : fail(EINVAL);
}

int __xstat64(int ver, const char *path, struct stat64 *st) {
  return XSTAT_VERSION_OK(ver) ? stat64(path, st) : fail(EINVAL);
}

int __lxstat(int ver, const char *path, struct stat *st) {
  return XSTAT_VERSION_OK(ver) ? lstat(path, st) : fail(EINVAL);
}

int __lxstat64(int ver, const char *path, struct stat64 *st) {
  return XSTAT_VERSION_OK(ver) ? lstat64(path, st) : fail(EINVAL);
}

int __fxstat(int ver, int fd, struct stat *st) {
  return XSTAT_VERSION_OK(ver) ? fstat(fd, st) : fail(EINVAL);
}

int __fxstat64(int ver, int fd, struct stat64 *st) {
  return XSTAT_VERSION_OK(ver) ? fstat64(fd, st) : fail(EINVAL);
}

int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags) {
  return XSTAT_VERSION_OK(ver) ? fstatat(dirfd, path, st, flags) : fail(EINVAL);
}

int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags) {
  return XSTAT_VERSION_OK(ver) ? fstatat64(dirfd, path, st, flags) : fail(EINVAL);
}

/* ---- access ---------------------------------------------------------------------- */

int access(const char *path, int mode) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(access)(r.path, mode));
  return k == ROUTE_ERR ? -1 : node_access(&r.node, mode);
}

int faccessat(int dirfd, const char *path, int mode, int flags) {
  archfs_node n;
  if (names_dirfd(path, flags) && (names_vcwd(dirfd, &n) || fd_node(dirfd, &n)))
    return node_access(&n, mode);
  PASS_OUTSIDE(int, FAILED_INT, dirfd, path, r, k, REAL(faccessat)(dirfd, r.path, mode, flags));
  return k == ROUTE_ERR ? -1 : node_access(&r.node, mode);
}

int euidaccess(const char *path, int mode) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(euidaccess)(r.path, mode));
  return k == ROUTE_ERR ? -1 : node_access(&r.node, mode);
}

int eaccess(const char *path, int mode) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(eaccess)(r.path, mode));
  return k == ROUTE_ERR ? -1 : node_access(&r.node, mode);
}

/* ---- directories --------------------------------------------------------------- */

/* A DIR of ours. glibc's DIR starts with its descriptor (never negative), so
 * the negative first word tells the two apart. */
#define DIR_MAGIC ((int32_t)0xa5c3f0d1)
#define DIR_MAGIC2 0x61726366u /* "arcf" */

typedef struct archfs_dirstream {
  int32_t magic;
  uint32_t magic2;
  int fd; /* tracked; closed by closedir */
  archfs_node node;
  long pos; /* 0: "." next, 1: ".." next, 2: cursor */
  size_t cursor;
  union {
    struct dirent d;
    struct dirent64 d64;
  } ent;
} archfs_dirstream;

static archfs_dirstream *ours(DIR *d) {
  archfs_dirstream *s = (archfs_dirstream *)(void *)d;
  return s && s->magic == DIR_MAGIC && s->magic2 == DIR_MAGIC2 ? s : NULL;
}

static DIR *dirstream_new(int fd, const archfs_node *n) {
  archfs_dirstream *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->magic = DIR_MAGIC;
  s->magic2 = DIR_MAGIC2;
  s->fd = fd;
  s->node = *n;
  s->cursor = archfs_dir_begin(n);
  return (DIR *)(void *)s;
}

static long dir_tell(const archfs_dirstream *s) {
  return s->pos < 2 ? s->pos : 2 + (long)s->cursor;
}

static struct dirent64 *dir_read(archfs_dirstream *s) {
  struct dirent64 *out = &s->ent.d64;
  archfs_dirent de;
  if (s->pos < 2) {
    out->d_ino = s->pos == 0 ? archfs_node_ino(&s->node) : 1;
    memcpy(out->d_name, s->pos == 0 ? "." : "..", s->pos == 0 ? 2 : 3);
    out->d_type = DT_DIR;
    s->pos++;
  } else {
    do {
      if (!archfs_dir_next(&g.fs, &s->node, &s->cursor, &de))
        return NULL; /* the end: errno unchanged */
    } while (de.len > ARCHFS_NAME_MAX);
    out->d_ino = archfs_node_ino(&de.node);
    memcpy(out->d_name, de.name, de.len);
    out->d_name[de.len] = '\0';
    out->d_type = de.node.kind == ARCHFS_DIR ? DT_DIR : DT_REG;
  }
  out->d_off = dir_tell(s);
  out->d_reclen = sizeof(*out);
  return out;
}

static DIR *opendir_node(const route *r, int k) {
  if (k == ROUTE_ERR)
    return NULL;
  if (r->node.kind != ARCHFS_DIR) {
    errno = ENOTDIR;
    return NULL;
  }
  int fd = open_placeholder(&r->node, O_CLOEXEC);
  if (fd < 0)
    return NULL;
  DIR *d = dirstream_new(fd, &r->node);
  if (!d) {
    close(fd);
    errno = ENOMEM;
  }
  return d;
}

DIR *opendir(const char *path) {
  PASS_OUTSIDE(DIR *, FAILED_PTR, AT_FDCWD, path, r, k, REAL(opendir)(r.path));
  return opendir_node(&r, k);
}

DIR *fdopendir(int fd) {
  archfs_node n;
  if (!fd_node(fd, &n))
    return REAL(fdopendir)(fd);
  if (n.kind != ARCHFS_DIR) {
    errno = ENOTDIR;
    return NULL;
  }
  DIR *d = dirstream_new(fd, &n);
  if (!d)
    errno = ENOMEM;
  return d;
}

struct dirent *readdir(DIR *d) {
  archfs_dirstream *s = ours(d);
  if (!s)
    return REAL(readdir)(d);
  return dir_read(s) ? &s->ent.d : NULL;
}

struct dirent64 *readdir64(DIR *d) {
  archfs_dirstream *s = ours(d);
  return s ? dir_read(s) : REAL(readdir64)(d);
}

/* Deprecated, still called by older code. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
int readdir_r(DIR *d, struct dirent *entry, struct dirent **result) {
  archfs_dirstream *s = ours(d);
  if (!s)
    return REAL(readdir_r)(d, entry, result);
  *result = dir_read(s) ? memcpy(entry, &s->ent.d, sizeof(*entry)) : NULL;
  return 0;
}

int readdir64_r(DIR *d, struct dirent64 *entry, struct dirent64 **result) {
  archfs_dirstream *s = ours(d);
  if (!s)
    return REAL(readdir64_r)(d, entry, result);
  *result = dir_read(s) ? memcpy(entry, &s->ent.d64, sizeof(*entry)) : NULL;
  return 0;
}
#pragma GCC diagnostic pop

int closedir(DIR *d) {
  if (!nullable(d))
    return fail(EINVAL); /* glibc's answer */
  archfs_dirstream *s = ours(d);
  if (!s)
    return REAL(closedir)(d);
  int fd = s->fd;
  s->magic = 0;
  free(s);
  return close(fd);
}

int dirfd(DIR *d) {
  archfs_dirstream *s = ours(d);
  return s ? s->fd : REAL(dirfd)(d);
}

void rewinddir(DIR *d) {
  archfs_dirstream *s = ours(d);
  if (!s) {
    REAL(rewinddir)(d);
    return;
  }
  s->pos = 0;
  s->cursor = archfs_dir_begin(&s->node);
}

long telldir(DIR *d) {
  archfs_dirstream *s = ours(d);
  return s ? dir_tell(s) : REAL(telldir)(d);
}

void seekdir(DIR *d, long pos) {
  archfs_dirstream *s = ours(d);
  if (!s) {
    REAL(seekdir)(d, pos);
    return;
  }
  if (pos < 2) {
    s->pos = pos < 0 ? 0 : pos;
    s->cursor = archfs_dir_begin(&s->node);
  } else {
    s->pos = 2;
    size_t cursor = (size_t)(pos - 2);
    s->cursor = cursor < g.zi->count ? cursor : g.zi->count;
  }
}

typedef int (*dirent_filter)(const struct dirent *);
typedef int (*dirent_compar)(const struct dirent **, const struct dirent **);

/* glibc's scandir opens the directory with its internal opendir: ours
 * lists archive directories itself. */
static int scandir_node(const route *r, int k, struct dirent ***namelist, dirent_filter filter,
                        dirent_compar compar) {
  DIR *d = opendir_node(r, k);
  if (!d)
    return -1;
  struct dirent **list = NULL, *de;
  size_t n = 0, cap = 0;
  while ((de = readdir(d)) != NULL) {
    if (filter && !filter(de))
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      struct dirent **grown = realloc(list, cap * sizeof(*list));
      if (!grown)
        goto oom;
      list = grown;
    }
    if (!(list[n] = malloc(sizeof(*de))))
      goto oom;
    memcpy(list[n++], de, sizeof(*de));
  }
  closedir(d);
  if (compar)
    qsort(list, n, sizeof(*list), (int (*)(const void *, const void *))(void (*)(void))compar);
  *namelist = list;
  return (int)n;
oom:
  while (n)
    free(list[--n]);
  free(list);
  closedir(d);
  errno = ENOMEM;
  return -1;
}

int scandir(const char *path, struct dirent ***namelist, dirent_filter filter,
            dirent_compar compar) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k,
               REAL(scandir)(r.path, namelist, filter, compar));
  return scandir_node(&r, k, namelist, filter, compar);
}

int scandir64(const char *path, struct dirent64 ***namelist, int (*filter)(const struct dirent64 *),
              int (*compar)(const struct dirent64 **, const struct dirent64 **)) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k,
               REAL(scandir64)(r.path, namelist, filter, compar));
  return scandir_node(&r, k, (struct dirent ***)namelist, (dirent_filter)(void (*)(void))filter,
                      (dirent_compar)(void (*)(void))compar);
}

int scandirat(int dirfd, const char *path, struct dirent ***namelist, dirent_filter filter,
              dirent_compar compar) {
  PASS_OUTSIDE(int, FAILED_INT, dirfd, path, r, k,
               REAL(scandirat)(dirfd, r.path, namelist, filter, compar));
  return scandir_node(&r, k, namelist, filter, compar);
}

int scandirat64(int dirfd, const char *path, struct dirent64 ***namelist,
                int (*filter)(const struct dirent64 *),
                int (*compar)(const struct dirent64 **, const struct dirent64 **)) {
  PASS_OUTSIDE(int, FAILED_INT, dirfd, path, r, k,
               REAL(scandirat64)(dirfd, r.path, namelist, filter, compar));
  return scandir_node(&r, k, (struct dirent ***)namelist, (dirent_filter)(void (*)(void))filter,
                      (dirent_compar)(void (*)(void))compar);
}

/* ---- links and real paths ------------------------------------------------------ */

/* Nothing in the archive is a symbolic link. */
ssize_t readlink(const char *path, char *buf, size_t len) {
  PASS_OUTSIDE(ssize_t, FAILED_INT, AT_FDCWD, path, r, k, REAL(readlink)(r.path, buf, len));
  return k == ROUTE_ERR ? -1 : fail(EINVAL);
}

ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t len) {
  PASS_OUTSIDE(ssize_t, FAILED_INT, dirfd, path, r, k, REAL(readlinkat)(dirfd, r.path, buf, len));
  return k == ROUTE_ERR ? -1 : fail(EINVAL);
}

ssize_t __readlink_chk(const char *path, char *buf, size_t len, size_t buflen) {
  PASS_OUTSIDE(ssize_t, FAILED_INT, AT_FDCWD, path, r, k,
               REAL(__readlink_chk)(r.path, buf, len, buflen));
  return k == ROUTE_ERR ? -1 : fail(EINVAL);
}

ssize_t __readlinkat_chk(int dirfd, const char *path, char *buf, size_t len, size_t buflen) {
  PASS_OUTSIDE(ssize_t, FAILED_INT, dirfd, path, r, k,
               REAL(__readlinkat_chk)(dirfd, r.path, buf, len, buflen));
  return k == ROUTE_ERR ? -1 : fail(EINVAL);
}

/* "<root>/<member>" (the root itself as "<root>/") into out, or its length
 * when out is NULL. */
static size_t node_path(const archfs_node *n, char *out) {
  size_t len = g.fs.root_len + 1 + n->len;
  if (out) {
    memcpy(out, g.root, g.fs.root_len);
    out[g.fs.root_len] = '/';
    memcpy(out + g.fs.root_len + 1, archfs_node_name(&g.fs, n), n->len);
    out[len] = '\0';
  }
  return len;
}

/* glibc's realpath walks the path with its internal lstat and fails inside
 * the archive; the archive's paths are canonical once normalised. */
static char *realpath_node(const route *r, int k, char *resolved, size_t resolvedlen) {
  if (k == ROUTE_ERR) {
    if (!r->path)
      errno = EINVAL; /* glibc's answer for NULL */
    return NULL;
  }
  size_t len = node_path(&r->node, NULL);
  if (len + 1 > PATH_MAX || (resolved && len + 1 > resolvedlen)) {
    errno = ENAMETOOLONG;
    return NULL;
  }
  char *out = resolved ? resolved : malloc(len + 1);
  if (!out) {
    errno = ENOMEM;
    return NULL;
  }
  node_path(&r->node, out);
  return out;
}

char *realpath(const char *path, char *resolved) {
  PASS_OUTSIDE(char *, FAILED_PTR, AT_FDCWD, path, r, k, REAL(realpath)(r.path, resolved));
  return realpath_node(&r, k, resolved, PATH_MAX);
}

char *__realpath_chk(const char *path, char *resolved, size_t resolvedlen) {
  PASS_OUTSIDE(char *, FAILED_PTR, AT_FDCWD, path, r, k,
               REAL(__realpath_chk)(r.path, resolved, resolvedlen));
  return realpath_node(&r, k, resolved, resolvedlen);
}

char *canonicalize_file_name(const char *path) {
  PASS_OUTSIDE(char *, FAILED_PTR, AT_FDCWD, path, r, k, REAL(canonicalize_file_name)(r.path));
  return realpath_node(&r, k, NULL, 0);
}

/* ---- working directory -------------------------------------------------------- */

static char *vcwd_path(char *buf, size_t size) {
  archfs_node n = archfs_node_unpack(__atomic_load_n(&vcwd, __ATOMIC_ACQUIRE));
  size_t len = node_path(&n, NULL);
  if (!buf) {
    size_t alloc = size ? size : len + 1;
    if (alloc < len + 1) {
      errno = ERANGE;
      return NULL;
    }
    if (!(buf = malloc(alloc))) {
      errno = ENOMEM;
      return NULL;
    }
  } else if (size < len + 1) {
    errno = size ? ERANGE : EINVAL;
    return NULL;
  }
  node_path(&n, buf);
  return buf;
}

char *getcwd(char *buf, size_t size) {
  if (!__atomic_load_n(&vcwd, __ATOMIC_ACQUIRE))
    return REAL(getcwd)(buf, size);
  return vcwd_path(buf, size);
}

char *__getcwd_chk(char *buf, size_t size, size_t buflen) {
  if (!__atomic_load_n(&vcwd, __ATOMIC_ACQUIRE))
    return REAL(__getcwd_chk)(buf, size, buflen);
  return vcwd_path(buf, size);
}

char *get_current_dir_name(void) {
  if (!__atomic_load_n(&vcwd, __ATOMIC_ACQUIRE))
    return REAL(get_current_dir_name)();
  return vcwd_path(NULL, 0);
}

/* A vfork() child's chdir into the archive changes nothing: the program it
 * executes starts in the real working directory anyway. */
static int enter_node(const archfs_node *n) {
  if (n->kind != ARCHFS_DIR)
    return fail(ENOTDIR);
  if (in_owner())
    __atomic_store_n(&vcwd, archfs_node_pack(n), __ATOMIC_RELEASE);
  return 0;
}

/* After the kernel's working directory changed: the virtual one ends. */
static void leave_vcwd(void) {
  if (__atomic_load_n(&vcwd, __ATOMIC_RELAXED) && in_owner())
    __atomic_store_n(&vcwd, 0, __ATOMIC_RELEASE);
}

/* Entering an archive directory only changes the virtual working directory
 * (the kernel's stays where it was); entering a real one ends it. */
int chdir(const char *path) {
  route r;
  int k = route_at(AT_FDCWD, path, &r);
  while (k == ROUTE_OUT) {
    int rc = REAL(chdir)(r.path);
    if (rc == 0)
      leave_vcwd();
    if (rc == 0 || (k = reroute(AT_FDCWD, &r)) == ROUTE_DONE)
      return rc;
  }
  return k == ROUTE_ERR ? -1 : enter_node(&r.node);
}

int fchdir(int fd) {
  archfs_node n;
  if (fd_node(fd, &n))
    return enter_node(&n);
  int rc = REAL(fchdir)(fd);
  if (rc == 0)
    leave_vcwd();
  return rc;
}

/* ---- file systems --------------------------------------------------------------- */

static int node_statvfs(void *out) {
  struct statvfs sv;
  memset(&sv, 0, sizeof(sv));
  sv.f_bsize = sv.f_frsize = ARCHFS_BLKSIZE;
  uint64_t bytes = 0;
  for (size_t i = 0; i < g.zi->count; i++)
    bytes += g.zi->entries[i].size;
  sv.f_blocks = (fsblkcnt_t)((bytes + ARCHFS_BLKSIZE - 1) / ARCHFS_BLKSIZE);
  sv.f_files = (fsfilcnt_t)g.zi->count;
  sv.f_fsid = (unsigned long)ARCHFS_DEV;
  sv.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
  sv.f_namemax = ARCHFS_NAME_MAX;
  memcpy(out, &sv, sizeof(sv));
  return 0;
}

_Static_assert(sizeof(struct statvfs) == sizeof(struct statvfs64), "x86-64: one statvfs layout");
_Static_assert(sizeof(struct statfs) == sizeof(struct statfs64), "x86-64: one statfs layout");

/* statfs(2)'s view of the same: a read-only file system (f_flags has
 * ST_VALID, as the kernel sets it since 2.6.36, and ST_RDONLY), of
 * squashfs's type, the kernel's read-only compressed archive. */
#define ARCHFS_FS_MAGIC 0x73717368 /* SQUASHFS_MAGIC */
#define ARCHFS_ST_VALID 0x0020

static int node_statfs(void *out) {
  struct statvfs sv;
  node_statvfs(&sv);
  struct statfs sf;
  memset(&sf, 0, sizeof(sf));
  sf.f_type = ARCHFS_FS_MAGIC;
  sf.f_bsize = (__fsword_t)sv.f_bsize;
  sf.f_frsize = (__fsword_t)sv.f_frsize;
  sf.f_blocks = sv.f_blocks;
  sf.f_files = sv.f_files;
  sf.f_namelen = (__fsword_t)sv.f_namemax;
  memcpy(&sf.f_fsid, &sv.f_fsid,
         sizeof(sf.f_fsid) < sizeof(sv.f_fsid) ? sizeof(sf.f_fsid) : sizeof(sv.f_fsid));
  sf.f_flags = (__fsword_t)(sv.f_flag | ARCHFS_ST_VALID);
  memcpy(out, &sf, sizeof(sf));
  return 0;
}

int statvfs(const char *path, struct statvfs *out) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(statvfs)(r.path, out));
  return k == ROUTE_ERR ? -1 : node_statvfs(out);
}

int statvfs64(const char *path, struct statvfs64 *out) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(statvfs64)(r.path, out));
  return k == ROUTE_ERR ? -1 : node_statvfs(out);
}

int fstatvfs(int fd, struct statvfs *out) {
  archfs_node n;
  return fd_node(fd, &n) ? node_statvfs(out) : REAL(fstatvfs)(fd, out);
}

int fstatvfs64(int fd, struct statvfs64 *out) {
  archfs_node n;
  return fd_node(fd, &n) ? node_statvfs(out) : REAL(fstatvfs64)(fd, out);
}

int statfs(const char *path, struct statfs *out) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(statfs)(r.path, out));
  return k == ROUTE_ERR ? -1 : node_statfs(out);
}

int statfs64(const char *path, struct statfs64 *out) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(statfs64)(r.path, out));
  return k == ROUTE_ERR ? -1 : node_statfs(out);
}

int fstatfs(int fd, struct statfs *out) {
  archfs_node n;
  return fd_node(fd, &n) ? node_statfs(out) : REAL(fstatfs)(fd, out);
}

int fstatfs64(int fd, struct statfs64 *out) {
  archfs_node n;
  return fd_node(fd, &n) ? node_statfs(out) : REAL(fstatfs64)(fd, out);
}

/* ---- descriptors ------------------------------------------------------------------ */

int close(int fd) {
  fd_forget(fd);
  return REAL(close)(fd);
}

/* glibc's fclose closes the descriptor internally, past close() above.
 * fileno() says EBADF for a stream without one (fmemopen, fopencookie). */
int fclose(FILE *f) {
  if (f) {
    int saved = errno;
    int fd = fileno(f);
    errno = saved;
    if (fd >= 0)
      fd_forget(fd);
  }
  return REAL(fclose)(f);
}

int dup(int fd) {
  int nfd = REAL(dup)(fd);
  if (nfd >= 0)
    fd_copy(fd, nfd);
  return nfd;
}

int dup2(int fd, int nfd) {
  int rc = REAL(dup2)(fd, nfd);
  if (rc >= 0 && fd != nfd)
    fd_copy(fd, rc);
  return rc;
}

int dup3(int fd, int nfd, int flags) {
  int rc = REAL(dup3)(fd, nfd, flags);
  if (rc >= 0)
    fd_copy(fd, rc);
  return rc;
}

/* Every fcntl argument is an int, a long or a pointer: passed on as one
 * machine word, as glibc's own fcntl reads it. */
static int fcntl_common(int fd, int cmd, void *arg, int is64) {
  int rc = is64 ? REAL(fcntl64)(fd, cmd, arg) : REAL(fcntl)(fd, cmd, arg);
  if (rc >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
    fd_copy(fd, rc);
  return rc;
}

int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return fcntl_common(fd, cmd, arg, 0);
}

int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return fcntl_common(fd, cmd, arg, 1);
}

int close_range(unsigned first, unsigned last, int flags) {
  int rc = REAL(close_range)(first, last, flags);
  if (rc == 0 && !(flags & CLOSE_RANGE_CLOEXEC))
    fd_forget_range(first, last);
  return rc;
}

void closefrom(int lowfd) {
  fd_forget_range(lowfd < 0 ? 0 : (unsigned)lowfd, ~0U);
  REAL(closefrom)(lowfd);
}

/* ---- writes: a read-only file system ---------------------------------------------- */

enum write_kind {
  WRITE_CREATE, /* makes a name: EEXIST over an existing one, else EROFS */
  WRITE_REMOVE, /* removes or renames a name: EROFS once the directory exists */
  WRITE_MODIFY, /* changes an existing file: ENOENT when missing, else EROFS */
};

static int refuse(const route *r, int k, enum write_kind kind) {
  if (k == ROUTE_ERR)
    return missing_error(r, kind != WRITE_MODIFY);
  return fail(kind == WRITE_CREATE ? EEXIST : EROFS);
}

#define REFUSE_WRITE(dirfd, path, kind, call)                                                      \
  do {                                                                                             \
    PASS_OUTSIDE(int, FAILED_INT, dirfd, path, r, k, call);                                        \
    return refuse(&r, k, kind);                                                                    \
  } while (0)

/* The kernel checks the file's type before the mount: EISDIR for a
 * directory, EROFS for a file. */
static int truncate_node(const route *r, int k) {
  if (k == ROUTE_ERR)
    return -1;
  return fail(r->node.kind == ARCHFS_DIR ? EISDIR : EROFS);
}

int mkdir(const char *path, mode_t mode) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_CREATE, REAL(mkdir)(r.path, mode));
}

int mkdirat(int dirfd, const char *path, mode_t mode) {
  REFUSE_WRITE(dirfd, path, WRITE_CREATE, REAL(mkdirat)(dirfd, r.path, mode));
}

int mknod(const char *path, mode_t mode, dev_t dev) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_CREATE, REAL(mknod)(r.path, mode, dev));
}

int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev) {
  REFUSE_WRITE(dirfd, path, WRITE_CREATE, REAL(mknodat)(dirfd, r.path, mode, dev));
}

int __xmknod(int ver, const char *path, mode_t mode, dev_t *dev) {
  return ver == 0 ? mknod(path, mode, *dev) : fail(EINVAL);
}

int __xmknodat(int ver, int dirfd, const char *path, mode_t mode, dev_t *dev) {
  return ver == 0 ? mknodat(dirfd, path, mode, *dev) : fail(EINVAL);
}

int mkfifo(const char *path, mode_t mode) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_CREATE, REAL(mkfifo)(r.path, mode));
}

int mkfifoat(int dirfd, const char *path, mode_t mode) {
  REFUSE_WRITE(dirfd, path, WRITE_CREATE, REAL(mkfifoat)(dirfd, r.path, mode));
}

int symlink(const char *target, const char *path) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_CREATE, REAL(symlink)(target, r.path));
}

int symlinkat(const char *target, int dirfd, const char *path) {
  REFUSE_WRITE(dirfd, path, WRITE_CREATE, REAL(symlinkat)(target, dirfd, r.path));
}

int rmdir(const char *path) { REFUSE_WRITE(AT_FDCWD, path, WRITE_REMOVE, REAL(rmdir)(r.path)); }

int unlink(const char *path) { REFUSE_WRITE(AT_FDCWD, path, WRITE_REMOVE, REAL(unlink)(r.path)); }

int unlinkat(int dirfd, const char *path, int flags) {
  REFUSE_WRITE(dirfd, path, WRITE_REMOVE, REAL(unlinkat)(dirfd, r.path, flags));
}

int chmod(const char *path, mode_t mode) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(chmod)(r.path, mode));
}

int lchmod(const char *path, mode_t mode) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(lchmod)(r.path, mode));
}

int fchmodat(int dirfd, const char *path, mode_t mode, int flags) {
  REFUSE_WRITE(dirfd, path, WRITE_MODIFY, REAL(fchmodat)(dirfd, r.path, mode, flags));
}

int chown(const char *path, uid_t uid, gid_t gid) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(chown)(r.path, uid, gid));
}

int lchown(const char *path, uid_t uid, gid_t gid) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(lchown)(r.path, uid, gid));
}

int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags) {
  REFUSE_WRITE(dirfd, path, WRITE_MODIFY, REAL(fchownat)(dirfd, r.path, uid, gid, flags));
}

int truncate(const char *path, off_t len) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(truncate)(r.path, len));
  return truncate_node(&r, k);
}

int truncate64(const char *path, off64_t len) {
  PASS_OUTSIDE(int, FAILED_INT, AT_FDCWD, path, r, k, REAL(truncate64)(r.path, len));
  return truncate_node(&r, k);
}

int utime(const char *path, const struct utimbuf *times) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(utime)(r.path, times));
}

int utimes(const char *path, const struct timeval times[2]) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(utimes)(r.path, times));
}

int lutimes(const char *path, const struct timeval times[2]) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(lutimes)(r.path, times));
}

int futimesat(int dirfd, const char *path, const struct timeval times[2]) {
  REFUSE_WRITE(dirfd, path, WRITE_MODIFY, REAL(futimesat)(dirfd, r.path, times));
}

int utimensat(int dirfd, const char *path, const struct timespec times[2], int flags) {
  if (!nullable(path))
    return fail(EINVAL); /* glibc's answer (futimens is its own function) */
  REFUSE_WRITE(dirfd, path, WRITE_MODIFY, REAL(utimensat)(dirfd, r.path, times, flags));
}

int setxattr(const char *path, const char *name, const void *value, size_t size, int flags) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(setxattr)(r.path, name, value, size, flags));
}

int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(lsetxattr)(r.path, name, value, size, flags));
}

int removexattr(const char *path, const char *name) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(removexattr)(r.path, name));
}

int lremovexattr(const char *path, const char *name) {
  REFUSE_WRITE(AT_FDCWD, path, WRITE_MODIFY, REAL(lremovexattr)(r.path, name));
}

/* Archive files have no extended attributes (shutil.copy2 asks). */
ssize_t getxattr(const char *path, const char *name, void *value, size_t size) {
  PASS_OUTSIDE(ssize_t, FAILED_INT, AT_FDCWD, path, r, k,
               REAL(getxattr)(r.path, name, value, size));
  return k == ROUTE_ERR ? -1 : fail(ENODATA);
}

ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size) {
  PASS_OUTSIDE(ssize_t, FAILED_INT, AT_FDCWD, path, r, k,
               REAL(lgetxattr)(r.path, name, value, size));
  return k == ROUTE_ERR ? -1 : fail(ENODATA);
}

ssize_t listxattr(const char *path, char *list, size_t size) {
  PASS_OUTSIDE(ssize_t, FAILED_INT, AT_FDCWD, path, r, k, REAL(listxattr)(r.path, list, size));
  return k == ROUTE_ERR ? -1 : 0;
}

ssize_t llistxattr(const char *path, char *list, size_t size) {
  PASS_OUTSIDE(ssize_t, FAILED_INT, AT_FDCWD, path, r, k, REAL(llistxattr)(r.path, list, size));
  return k == ROUTE_ERR ? -1 : 0;
}

/* Routes both paths of a rename or link: 1 when both are outside (glibc's
 * turn), else 0 with the answer in *rc: EROFS when both are in the archive,
 * EXDEV when one is (as between two mounts). */
static int route_pair(int fd1, const char *p1, route *a, int fd2, const char *p2, route *b,
                      int *rc) {
  *rc = -1;
  int ka = route_at(fd1, p1, a);
  if (ka == ROUTE_ERR && !(errno == ENOENT && a->parent_ok))
    return 0;
  int kb = route_at(fd2, p2, b);
  if (kb == ROUTE_ERR && !(errno == ENOENT && b->parent_ok))
    return 0;
  if (ka == ROUTE_OUT && kb == ROUTE_OUT)
    return 1;
  *rc = fail(ka != ROUTE_OUT && kb != ROUTE_OUT ? EROFS : EXDEV);
  return 0;
}

/* glibc's answer for two outside paths, unless its ENOTDIR came from a path
 * through app.bin. */
static int pair_result(int rc, int fd1, route *a, int fd2, route *b) {
  if (rc >= 0 || errno != ENOTDIR)
    return rc;
  int ka = reroute(fd1, a);
  errno = ENOTDIR;
  int kb = reroute(fd2, b);
  int a_in = ka == ROUTE_IN || ka == ROUTE_ERR, b_in = kb == ROUTE_IN || kb == ROUTE_ERR;
  if (!a_in && !b_in)
    return fail(ENOTDIR);
  return fail(a_in && b_in ? EROFS : EXDEV);
}

#define REFUSE_PAIR(fd1, p1, fd2, p2, call)                                                        \
  do {                                                                                             \
    route a, b;                                                                                    \
    int rc_;                                                                                       \
    if (route_pair(fd1, p1, &a, fd2, p2, &b, &rc_))                                                \
      return pair_result((call), fd1, &a, fd2, &b);                                                \
    return rc_;                                                                                    \
  } while (0)

int rename(const char *from, const char *to) {
  REFUSE_PAIR(AT_FDCWD, from, AT_FDCWD, to, REAL(rename)(a.path, b.path));
}

int renameat(int fd1, const char *from, int fd2, const char *to) {
  REFUSE_PAIR(fd1, from, fd2, to, REAL(renameat)(fd1, a.path, fd2, b.path));
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned flags) {
  REFUSE_PAIR(fd1, from, fd2, to, REAL(renameat2)(fd1, a.path, fd2, b.path, flags));
}

int link(const char *from, const char *to) {
  REFUSE_PAIR(AT_FDCWD, from, AT_FDCWD, to, REAL(link)(a.path, b.path));
}

int linkat(int fd1, const char *from, int fd2, const char *to, int flags) {
  REFUSE_PAIR(fd1, from, fd2, to, REAL(linkat)(fd1, a.path, fd2, b.path, flags));
}

/* ---- glob(3) and freopen --------------------------------------------------------- */

/* glibc's glob and freopen open files with its internal functions. */
static int pattern_is_ours(const char *pattern) {
  if (!g.mounted)
    return 0;
  if (pattern[0] == '/')
    return archfs_inside(&g.fs, pattern) != NULL;
  return __atomic_load_n(&vcwd, __ATOMIC_ACQUIRE) != 0;
}

static void *glob_opendir(const char *path) { return opendir(path); }
static struct dirent *glob_readdir(void *d) { return readdir(d); }
static struct dirent64 *glob_readdir64(void *d) { return readdir64(d); }
static void glob_closedir(void *d) { closedir(d); }

/* A pattern in the archive is matched with glob's GLOB_ALTDIRFUNC hooks
 * pointing at our functions (unless the caller brought its own). */
int glob(const char *pattern, int flags, int (*errfunc)(const char *, int), glob_t *pglob) {
  if (!pattern_is_ours(pattern) || (flags & GLOB_ALTDIRFUNC))
    return REAL(glob)(pattern, flags, errfunc, pglob);
  pglob->gl_opendir = glob_opendir;
  pglob->gl_readdir = glob_readdir;
  pglob->gl_closedir = glob_closedir;
  pglob->gl_stat = stat;
  pglob->gl_lstat = lstat;
  return REAL(glob)(pattern, flags | GLOB_ALTDIRFUNC, errfunc, pglob);
}

int glob64(const char *pattern, int flags, int (*errfunc)(const char *, int), glob64_t *pglob) {
  if (!pattern_is_ours(pattern) || (flags & GLOB_ALTDIRFUNC))
    return REAL(glob64)(pattern, flags, errfunc, pglob);
  pglob->gl_opendir = glob_opendir;
  pglob->gl_readdir = glob_readdir64;
  pglob->gl_closedir = glob_closedir;
  pglob->gl_stat = stat64;
  pglob->gl_lstat = lstat64;
  return REAL(glob64)(pattern, flags | GLOB_ALTDIRFUNC, errfunc, pglob);
}

/* freopen closes the stream even when the open fails, so only app.bin's own
 * path in front is recognised (no second try after ENOTDIR); the member is
 * opened and glibc reopens it through /proc/self/fd. */
static FILE *freopen_common(const char *path, const char *mode, FILE *stream, int is64) {
  route r;
  int k = path ? route_at(AT_FDCWD, path, &r) : ROUTE_OUT;
  if (k == ROUTE_OUT) {
    path = path ? r.path : NULL;
    return is64 ? REAL(freopen64)(path, mode, stream) : REAL(freopen)(path, mode, stream);
  }
  int flags = fopen_flags(mode);
  int fd = flags < 0        ? fail(EINVAL)
           : k == ROUTE_ERR ? missing_error(&r, flags & O_CREAT)
                            : node_open(&r.node, flags);
  if (fd < 0) {
    int saved = errno;
    fclose(stream); /* as glibc's freopen does when the open fails */
    errno = saved;
    return NULL;
  }
  char proc[64];
  snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
  FILE *f = is64 ? REAL(freopen64)(proc, mode, stream) : REAL(freopen)(proc, mode, stream);
  int saved = errno;
  struct stat64 st;
  if (f && REAL(fstat64)(fileno(f), &st) == 0)
    (void)fd_track(fileno(f), &r.node, st.st_ino);
  close(fd);
  errno = saved;
  return f;
}

FILE *freopen(const char *path, const char *mode, FILE *stream) {
  return freopen_common(path, mode, stream, 0);
}

FILE *freopen64(const char *path, const char *mode, FILE *stream) {
  return freopen_common(path, mode, stream, 1);
}

/* ---- shared objects by archive path ------------------------------------------ */

/* One in-memory copy per member, made outside the lock (a large shared
 * object takes milliseconds) by the first thread that asks; others asking
 * for the same member wait for it. code_events counts uses and wake-ups,
 * for archfs_code_wait. */
static pthread_mutex_t code_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t code_changed; /* CLOCK_MONOTONIC, set up by archfs_mount */
/* Per entry index: its in-memory copy, either a path (malloc'ed) or, for a
 * copy made ahead of use, the memfd its path names: the copying thread
 * allocates nothing (a fork under an allocator that does not lock itself
 * across fork(), such as libasan's, then cannot leave the child waiting on
 * a lock that thread held). */
static char **code_paths;
static int *code_fds;             /* -1: none */
static unsigned char *code_state; /* CODE_* bits */
static unsigned code_events;
static unsigned code_making; /* entries with CODE_MAKING */
/* CODE_SHARED: given out and not yet released when the process forked, so
 * parent and child may both have it mapped (archfs_code_release). */
enum { CODE_MAKING = 1, CODE_USED = 2, CODE_RELEASED = 4, CODE_SHARED = 8 };

/* code_changed on the monotonic clock (archfs_code_wait's deadlines); a
 * fork's child sets it up again. */
static int code_changed_init(void) {
  pthread_condattr_t attr;
  if (pthread_condattr_init(&attr) != 0)
    return -1;
  int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
                   pthread_cond_init(&code_changed, &attr) != 0
               ? -1
               : 0;
  pthread_condattr_destroy(&attr);
  return rc;
}

/* archfs_code_path's copy, for a reader: a stored member straight from the
 * mapping (checked on this first use), a compressed one decompressed first. */
static int code_copy_for_reader(const zipindex_entry *e, char *path, size_t pathlen, char *err,
                                size_t errlen) {
  if (e->method == ZIPINDEX_STORED) {
    const void *stored = zipindex_stored_data(g.zi, e, err, errlen);
    return stored ? extload_write(e->name, stored, (size_t)e->size, path, pathlen, err, errlen)
                  : -1;
  }
  void *data = e->size <= SIZE_MAX ? malloc(e->size ? (size_t)e->size : 1) : NULL;
  if (!data) {
    snprintf(err, errlen, "out of memory reading %s", e->name);
    return -1;
  }
  int rc = zipindex_read(g.zi, e, data, err, errlen) == 0
               ? extload_write(e->name, data, (size_t)e->size, path, pathlen, err, errlen)
               : -1;
  free(data);
  return rc;
}

/* archfs_code_prepare's copy, ahead of any reader, into `fd`: stored members
 * only, damage left for the reader to report; allocates nothing. */
static int code_copy_ahead(const zipindex_entry *e, int fd, char *path, size_t pathlen, char *err,
                           size_t errlen) {
  if (e->method != ZIPINDEX_STORED) {
    snprintf(err, errlen, "member %s is compressed", e->name);
    return -1;
  }
  const void *stored = zipindex_stored_data_ahead(g.zi, e, err, errlen);
  return stored ? extload_write_fd(fd, e->name, stored, (size_t)e->size, path, pathlen, err, errlen)
                : -1;
}

/* The per-entry tables, code_lock held; 0, or -1 when out of memory. */
static int code_tables(void) {
  if (code_paths)
    return 0;
  code_paths = calloc(g.zi->count, sizeof(*code_paths));
  code_fds = malloc(g.zi->count * sizeof(*code_fds));
  code_state = calloc(g.zi->count, 1);
  if (!code_paths || !code_fds || !code_state) {
    free(code_paths);
    free(code_fds);
    free(code_state);
    code_paths = NULL;
    code_fds = NULL;
    code_state = NULL;
    return -1;
  }
  for (size_t i = 0; i < g.zi->count; i++)
    code_fds[i] = -1;
  return 0;
}

static int has_copy(size_t i) { return code_paths[i] || code_fds[i] >= 0; }

/* Drops entry i's copy (code_lock held): `forget` only closes a memfd and
 * leaves a file of the private directory (a fork's child's view). */
static void drop_copy(size_t i, int forget) {
  if (code_fds[i] >= 0) {
    close(code_fds[i]);
    code_fds[i] = -1;
    return;
  }
  if (forget)
    extload_forget(code_paths[i]);
  else
    extload_discard(code_paths[i]);
  free(code_paths[i]);
  code_paths[i] = NULL;
}

int archfs_code_init(void) {
  pthread_mutex_lock(&code_lock);
  int rc = code_tables();
  pthread_mutex_unlock(&code_lock);
  return rc;
}

/* archfs_code_path (`filling` NULL), or archfs_code_prepare (not marked
 * used; the file in *filling). Returns 1 when this call made the copy, 0
 * when it was there, -1 on error. */
static int code_copy(const zipindex_entry *e, atomic_int *filling, char *path, size_t pathlen,
                     char *err, size_t errlen) {
  int use = !filling, ahead_fd = use ? -1 : atomic_load(filling);
  size_t i = (size_t)(e - g.zi->entries);
  assert(i < g.zi->count && (use || ahead_fd >= 0));
  int rc = -1, made_here = 0;
  pthread_mutex_lock(&code_lock);
  /* A copy made ahead finds the tables made (archfs_code_init): it must
   * not allocate them itself. */
  if (!use && !code_paths) {
    snprintf(err, errlen, "archfs_code_init was not called");
    goto done;
  }
  if (code_tables() != 0) {
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  while (!has_copy(i) && (code_state[i] & CODE_MAKING))
    pthread_cond_wait(&code_changed, &code_lock);
  if (!has_copy(i)) {
    code_state[i] |= CODE_MAKING;
    code_making++;
    pthread_mutex_unlock(&code_lock);
    char *made = NULL;
    int ok = use ? code_copy_for_reader(e, path, pathlen, err, errlen) == 0
                 : code_copy_ahead(e, ahead_fd, path, pathlen, err, errlen) == 0;
    if (ok && use && !(made = strdup(path))) {
      extload_discard(path);
      snprintf(err, errlen, "out of memory");
      ok = 0;
    }
    pthread_mutex_lock(&code_lock);
    code_state[i] &= (unsigned char)~CODE_MAKING;
    code_making--;
    code_paths[i] = made;
    if (ok && !use) {
      /* The copy owns the file from here; under the lock fork() takes, so
       * that a fork's child sees it either the caller's or the copy's. */
      code_fds[i] = ahead_fd;
      atomic_store(filling, -1);
    }
    pthread_cond_broadcast(&code_changed);
    if (!ok)
      goto done;
    made_here = 1;
  }
  if (use && !(code_state[i] & CODE_USED)) {
    code_state[i] |= CODE_USED;
    code_events++;
    pthread_cond_broadcast(&code_changed);
  }
  if (code_fds[i] >= 0)
    extload_fd_path(code_fds[i], path, pathlen);
  else
    snprintf(path, pathlen, "%s", code_paths[i]);
  rc = made_here;
done:
  pthread_mutex_unlock(&code_lock);
  return rc;
}

int archfs_code_path(const zipindex_entry *e, char *path, size_t pathlen, char *err,
                     size_t errlen) {
  return code_copy(e, NULL, path, pathlen, err, errlen) < 0 ? -1 : 0;
}

int archfs_code_prepare(const zipindex_entry *e, atomic_int *filling, char *err, size_t errlen) {
  char path[4096];
  return code_copy(e, filling, path, sizeof(path), err, errlen);
}

int archfs_code_state(const zipindex_entry *e) {
  size_t i = (size_t)(e - g.zi->entries);
  assert(i < g.zi->count);
  pthread_mutex_lock(&code_lock);
  int state = !code_paths || !has_copy(i)   ? ARCHFS_CODE_NONE
              : (code_state[i] & CODE_USED) ? ARCHFS_CODE_USED
                                            : ARCHFS_CODE_UNUSED;
  pthread_mutex_unlock(&code_lock);
  return state;
}

int archfs_code_discard(const zipindex_entry *e) {
  size_t i = (size_t)(e - g.zi->entries);
  assert(i < g.zi->count);
  int freed = 0;
  pthread_mutex_lock(&code_lock);
  if (code_paths && has_copy(i) && !(code_state[i] & CODE_USED)) {
    drop_copy(i, 0);
    zipindex_release(g.zi, e); /* the pages the copy was made from */
    freed = 1;
  }
  pthread_mutex_unlock(&code_lock);
  return freed;
}

int archfs_code_release(const zipindex_entry *e, long (*free_pages)(void *arg), void *arg,
                        long *freed) {
  size_t i = (size_t)(e - g.zi->entries);
  assert(i < g.zi->count);
  pthread_mutex_lock(&code_lock);
  assert(code_state && (code_state[i] & CODE_USED));
  int rc = (code_state[i] & CODE_RELEASED) ? 0 : (code_state[i] & CODE_SHARED) ? -1 : 1;
  code_state[i] |= CODE_RELEASED;
  /* Under the lock fork()'s handlers take: no fork between the look at
   * CODE_SHARED and the pages' going. */
  if (rc == 1)
    *freed = free_pages(arg);
  pthread_mutex_unlock(&code_lock);
  return rc;
}

void archfs_code_wait(unsigned *events, const struct timespec *deadline) {
  pthread_mutex_lock(&code_lock);
  while (code_events == *events && pthread_cond_timedwait(&code_changed, &code_lock, deadline) == 0)
    ;
  *events = code_events;
  pthread_mutex_unlock(&code_lock);
}

void archfs_code_wake(void) {
  pthread_mutex_lock(&code_lock);
  code_events++;
  pthread_cond_broadcast(&code_changed);
  pthread_mutex_unlock(&code_lock);
}

/* Whether dlopen(file) names an archive file the quick way (app.bin's own
 * path in front, or relative to an archive working directory). */
static int dlopen_is_ours(const char *file) {
  if (!file || !g.mounted)
    return 0;
  if (file[0] == '/')
    return archfs_inside(&g.fs, file) != NULL;
  return strchr(file, '/') && __atomic_load_n(&vcwd, __ATOMIC_ACQUIRE);
}

static void *dlopen_member(const char *file, int mode) {
  route r;
  char path[4096], err[512];
  if (route_at(AT_FDCWD, file, &r) == ROUTE_IN && r.node.kind == ARCHFS_FILE &&
      archfs_code_path(&g.zi->entries[r.node.index], path, sizeof(path), err, sizeof(err)) == 0)
    return REAL(dlopen)(path, mode);
  return REAL(dlopen)(file, mode); /* glibc's own failure and message */
}

/* glibc's dlopen finds its caller from its return address (the caller's
 * RUNPATH, $ORIGIN): a path that is not ours goes on as a sibling call, so
 * glibc sees the real caller, not the host. */
__attribute__((optimize("O2", "optimize-sibling-calls"))) void *dlopen(const char *file, int mode) {
  if (!dlopen_is_ours(file))
    return REAL(dlopen)(file, mode);
  return dlopen_member(file, mode);
}

/* ---- mounting --------------------------------------------------------------------- */

static void unmount_at_exit(void) { g.mounted = 0; }

/* A fork while another thread reads a member (the importer and open() both
 * read with the GIL released) would leave the child zipindex's zstd context
 * lock, which it could never take: fork waits for the read in progress. */
static void fork_prepare(void) {
  pthread_mutex_lock(&code_lock);
  pthread_mutex_lock(&g.zi->dctx_lock);
  extload_fork_prepare(); /* last: held alone or inside code_lock, never waiting for one */
}

/* Both sides of a fork, code_lock held: a copy given out and not yet
 * released may be mapped by both, and neither may free its pages. */
static void mark_shared_copies(void) {
  for (size_t i = 0; code_state && i < g.zi->count; i++)
    if ((code_state[i] & (CODE_USED | CODE_RELEASED)) == CODE_USED)
      code_state[i] |= CODE_SHARED;
}

static void fork_done(void) {
  mark_shared_copies();
  extload_fork_parent();
  pthread_mutex_unlock(&g.zi->dctx_lock);
  pthread_mutex_unlock(&code_lock);
}

static void fork_child(void) {
  __atomic_store_n(&owner_pid, getpid(), __ATOMIC_RELAXED);
  /* A copy another thread was making is never finished here (fork does
   * not wait for it: under a sanitizer, fork holds the allocator the
   * making thread may need), and one made ahead of use is the parent's: a
   * memfd is the same file in both, whichever loads it first frees its
   * pages (extremap.h) under the other, and the parent may delete a
   * private directory's file unused. The child's first use makes its own.
   * The parent's waiters are not the child's. */
  code_changed_init();
  code_making = 0;
  mark_shared_copies();
  for (size_t i = 0; code_state && i < g.zi->count; i++) {
    code_state[i] &= (unsigned char)~CODE_MAKING;
    if (has_copy(i) && !(code_state[i] & CODE_USED))
      drop_copy(i, 1);
  }
  extload_fork_child();
  pthread_mutex_unlock(&g.zi->dctx_lock);
  pthread_mutex_unlock(&code_lock);
}

#define ARCHFS_RESOLVE(name) (void)real_fn(&next_##name, #name);

int archfs_mount(const char *exe, zipindex *zi, char *err, size_t errlen) {
  ARCHFS_REAL_FUNCS(ARCHFS_RESOLVE)
  struct stat64 st;
  if (REAL(stat64)(exe, &st) != 0) {
    snprintf(err, errlen, "cannot stat %s: %s", exe, strerror(errno));
    return -1;
  }
  g.zi = zi;
  g.root = strdup(exe);
  if (code_changed_init() != 0) {
    free(g.root);
    g.root = NULL;
    snprintf(err, errlen, "cannot set up a condition variable");
    return -1;
  }
  if (!g.root || atexit(unmount_at_exit) != 0 ||
      pthread_atfork(fork_prepare, fork_done, fork_child) != 0) {
    free(g.root);
    g.root = NULL;
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  archfs_init(&g.fs, zi, g.root);
  g.exe_dev = st.st_dev;
  g.exe_ino = st.st_ino;
  g.uid = st.st_uid;
  g.gid = st.st_gid;
  g.mtime = st.st_mtim;
  g.ctime = st.st_ctim;
  owner_pid = getpid();
  g.mounted = 1;
  return 0;
}
