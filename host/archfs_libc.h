/*
 * archfs_libc: the archive's directory tree (archfs.h) behind libc's own file
 * functions, so that Python code, extension modules and the C libraries they
 * link open, stat and list "<app.bin>/site-packages/..." like real files.
 *
 * The host defines open/openat/fopen/stat/statx/opendir/readdir/access/
 * realpath/getcwd/chdir/... (their 64-bit, fortified and pre-2.33 __xstat
 * variants too). The host is linked with --export-dynamic and holds
 * libpython, so these definitions come first in the global lookup scope:
 * libpython's calls and every shared object loaded later reach them. A path
 * outside the archive costs one prefix comparison and goes to glibc's own
 * function (found with dlsym(RTLD_NEXT) at mount time), with errno and
 * results untouched. Other spellings of an archive path (relative, through a
 * symlink to app.bin, /proc/self/exe/...) fail in the kernel with ENOTDIR,
 * since they go through a regular file; only then is the path's regular-file
 * prefix compared with app.bin's (st_dev, st_ino) and the rest mapped.
 *
 * Opening a file materialises the member as a sealed memfd handed out
 * O_RDONLY (see extload_data_fd); directories are served from the index. The
 * tree is read-only: writes fail with EROFS (EEXIST for a create over an
 * existing name). Descriptors of archive files and directories are tracked
 * (fstat, fdopendir, *at() relative to them, fchdir), and chdir into an
 * archive directory sets a virtual working directory that getcwd reports
 * and relative paths resolve against. dlopen() of an archive path loads the
 * member's in-memory copy (archfs_code_path).
 */
#ifndef APPBIN_ARCHFS_LIBC_H
#define APPBIN_ARCHFS_LIBC_H

#include "zipindex.h"

#include <stdatomic.h>

#include <stddef.h>
#include <time.h>

/* Serves the archive of `zi` at "<exe>/" from now on. Call once, before any
 * thread starts; `zi` must stay valid until exit (the view is withdrawn by an
 * atexit handler). Returns 0, or -1 with a message in err (nothing served). */
int archfs_mount(const char *exe, zipindex *zi, char *err, size_t errlen);

/* The path ("/proc/self/fd/N", or a file of extload's private directory)
 * of the one in-memory copy of member `e` that the dynamic loader may open,
 * made on first use; the same for every caller, so a library is never
 * loaded twice. Thread-safe. Returns 0, or -1 with a message in err. */
int archfs_code_path(const zipindex_entry *e, char *path, size_t pathlen, char *err, size_t errlen);

/* Called once the dynamic loader has loaded `e`'s copy, given out by
 * archfs_code_path, to free the copy's pages (host/extremap.h): runs
 * `free_pages(arg)` (which must neither allocate nor take a lock) under the
 * lock fork() takes, its result in *freed, and returns 1; or returns 0 if
 * the copy was released already, -1 if its pages must stay: a fork since
 * the copy was given out left it mapped in the other process too (a memfd
 * is one file in both). */
int archfs_code_release(const zipindex_entry *e, long (*free_pages)(void *arg), void *arg,
                        long *freed);

/* For copies made ahead of use (host/nativeprep.h); all thread-safe. */

/* Sets up what archfs_code_prepare needs, so that it allocates nothing
 * itself; called before the first. Returns 0, or -1 when out of memory. */
int archfs_code_init(void);

/* Makes the copy of stored member `e` archfs_code_path would, if there is
 * none yet, in the file *filling holds (extload_code_fd), without counting
 * as a use; damage is left for a reader to report; allocates nothing (nor
 * does archfs_code_discard of such a copy). Returns 1 when it made it: the
 * copy owns the file from then on, and *filling was set to -1 under the
 * lock fork() takes; 0 when there was one, or -1 with a message in err
 * (the file stays the caller's in both). */
int archfs_code_prepare(const zipindex_entry *e, atomic_int *filling, char *err, size_t errlen);

enum { ARCHFS_CODE_NONE, ARCHFS_CODE_UNUSED, ARCHFS_CODE_USED };
/* Whether `e` has a copy, and whether archfs_code_path has given it out. */
int archfs_code_state(const zipindex_entry *e);

/* Frees the copy of `e` if archfs_code_path has never given it out;
 * returns 1 if it did. */
int archfs_code_discard(const zipindex_entry *e);

/* Returns once a copy is used or archfs_code_wake() is called after
 * `*events` was read (it is updated), or at `deadline` (CLOCK_MONOTONIC);
 * *events starts at 0. */
void archfs_code_wait(unsigned *events, const struct timespec *deadline);
void archfs_code_wake(void);

#endif
