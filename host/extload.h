/*
 * extload: turns bytes from the archive into files, with nothing written to
 * disk: a memfd. Where memfd (or, for code, /proc) is missing it falls back
 * to a private 0700 directory (under $TMPDIR, /tmp, /dev/shm or /var/tmp)
 * and says so at debug level.
 *
 * Code (extload_write) is reached as /proc/self/fd/N by the dynamic loader;
 * those files stay open for the life of the process: glibc identifies a
 * loaded object by its path string, so a path must never be reused for other
 * bytes. Data (extload_data_fd) is handed out as a read-only descriptor of a
 * sealed memfd, freed when the last descriptor closes.
 */
#ifndef APPBIN_EXTLOAD_H
#define APPBIN_EXTLOAD_H

#include <stddef.h>

/* Writes `len` bytes of code (a shared object: mappable executable) into a
 * new in-memory file named after `name` (a member path; its basename is used)
 * and returns its path in `path` (at least 4096 bytes). Returns 0, or -1 with
 * a message in err. Thread-safe. */
int extload_write(const char *name, const void *data, size_t len, char *path, size_t pathlen,
                  char *err, size_t errlen);

/* For code written by another thread than the one that makes the file
 * (nativeprep.h): a new in-memory file named after `name` whose descriptor
 * is moved above the numbers a program counts on, or -1 where memfd cannot
 * serve code; then extload_write_fd writes `len` bytes into it and gives
 * its path. Returns 0, or -1 with a message in err (the file stays the
 * caller's). */
int extload_code_fd(const char *name);
int extload_write_fd(int fd, const char *name, const void *data, size_t len, char *path,
                     size_t pathlen, char *err, size_t errlen);
/* That path of a memfd, "/proc/self/fd/N" (no allocation). */
void extload_fd_path(int fd, char *path, size_t pathlen);

/* Frees a copy extload_write made that no one has opened or loaded: its
 * path may name other bytes afterwards. */
void extload_discard(const char *path);

/* The descriptor behind a path extload_write gave ("/proc/self/fd/N"), or
 * -1 for a file of the private directory. */
int extload_memfd_of(const char *path);

/* In a fork's child, drops its descriptor of a copy the parent made: a
 * private directory's file stays, the parent's to delete. */
void extload_forget(const char *path);

/* Fills `len` bytes at buf (a writable mapping of the new file); returns 0,
 * or -1 with errno set and a message in err. */
typedef int (*extload_fill_fn)(void *buf, void *ctx, char *err, size_t errlen);

/* A new read-only file of `len` bytes written by `fill`, named after `name`:
 * a sealed memfd reopened O_RDONLY through /proc/self/fd (the memfd itself,
 * sealed, where /proc is missing; an unlinked file of the private directory
 * where memfd is). `cloexec`: the descriptor gets FD_CLOEXEC. Returns the
 * descriptor, or -1 with errno set (ENOMEM when the bytes cannot be mapped)
 * and a message in err. Thread-safe. */
int extload_data_fd(const char *name, size_t len, extload_fill_fn fill, void *ctx, int cloexec,
                    char *err, size_t errlen);

/* An empty in-memory file, sealed against growing: a descriptor that reaches
 * nothing else (archfs's stand-in for an archive directory). `cloexec`: the
 * descriptor gets FD_CLOEXEC. Returns it, or -1 with errno set where memfd
 * is unavailable. */
int extload_empty_fd(int cloexec);

/* pthread_atfork handlers (archfs_libc's): the private directory's lock is
 * taken before fork() and released after it in both processes. */
void extload_fork_prepare(void);
void extload_fork_parent(void);
void extload_fork_child(void);

/* 1 when debug logging is on: set by the interpreter setup. */
extern int extload_debug;

#endif
