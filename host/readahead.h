/*
 * readahead: reads, in a background thread, the file pages the interpreter
 * is about to need, ahead of it: the loadable segments of the code mapped
 * now (the host's ELF part of app.bin, libc, libm, the dynamic loader), then
 * the archive's start-up code (appbin-pack lays it out first).
 *
 * Python's start-up runs through megabytes of the host's code and its
 * imports through the stored .pyc, a page at a time in the order it reaches
 * them. Where app.bin is not in the page cache of the mount it is read from
 * (a container's root file system served by fuse-overlayfs is a new mount,
 * its cache empty, at every start), each first touch of a page is a major
 * fault: the main thread waits for a small read (~160 of them for `import
 * fastapi` in Docker). A second thread reading front to back turns most of
 * them into large reads beside the interpreter's start. MADV_WILLNEED would
 * not: the kernel clamps it to one readahead window (128 KiB on FUSE). Pages
 * already cached (mincore) are not read again: on a warm cache the pass is
 * a few system calls.
 */
#ifndef APPBIN_READAHEAD_H
#define APPBIN_READAHEAD_H

#include <stddef.h>
#include <sys/types.h>

/* Starts the thread (detached; it ends when done): the loadable segments of
 * every object loaded now (dl_iterate_phdr), then `len` bytes of `fd` from
 * `offset`, mapped at `map` (len 0: none; fd must stay open for the life of
 * the process). Best effort: where a thread or a file cannot be had,
 * nothing is read ahead. A call while a pass is under way does nothing. */
void readahead_start(const void *map, int fd, off_t offset, size_t len);

/* Returns once no pass is under way: before a fork() whose child must not
 * inherit the pass's descriptors (a supervisor forking its workers). */
void readahead_wait(void);

#endif
