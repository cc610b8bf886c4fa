/*
 * extremap: a shared object the dynamic loader loaded from an in-memory copy
 * (a memfd, host/extload.h) is re-pointed at the same bytes in app.bin, and
 * the copy is emptied.
 *
 * Once dlopen() has mapped and relocated the object, its pages are of two
 * kinds: private copies the loader wrote (relocations, RELRO, data written
 * since), which are anonymous memory, and pages still backed by the memfd,
 * touched or not. The memfd holds the whole file in shared memory for the
 * life of the process, which a container's memory accounting counts in full,
 * where python3.11 loading the same file from disk holds only the page cache
 * it touched (which the kernel may drop and read again). So every page still
 * backed by the memfd is mapped again, same address and protection, from the
 * stored member inside app.bin (appbin-pack aligns stored shared objects to
 * the page size), and the memfd's pages are freed but the first (the ELF
 * header, which a dlopen() of another spelling of the path reads before it
 * finds the object loaded). Its descriptor stays open: its /proc/self/fd
 * path must never name other bytes while the loader knows the object by it.
 *
 * The object's segments come from the loader (dl_iterate_phdr), the state
 * of their pages from /proc/self/pagemap (the page flags, which any process
 * may read of itself); without it, or for anything unexpected, the object
 * stays as it is, on its memfd.
 */
#ifndef APPBIN_EXTREMAP_H
#define APPBIN_EXTREMAP_H

#include <stddef.h>
#include <stdint.h>

/* In two steps, so that a caller can decide under a lock whether the
 * memfd's pages may go (host/archfs_libc.h). First the remapping: the
 * pages of the object loaded from `memfd` (by the name `path`, as given to
 * dlopen) that are still backed by it are mapped from `file_fd` at
 * `file_offset` (page-aligned: where the memfd's byte 0 is in that file;
 * the bytes must be the same). Returns the memfd's pages to free, or NULL
 * with a message in err (the object is then left on its memfd, intact). */
typedef struct extremap_plan extremap_plan;
extremap_plan *extremap_remap(const char *path, int memfd, int file_fd, uint64_t file_offset,
                              char *err, size_t errlen);
/* Then their freeing, which neither allocates nor takes a lock (nor
 * formats a message): the bytes of shared memory freed, or -errno. */
long extremap_free_pages(const extremap_plan *plan, int memfd);
void extremap_plan_free(extremap_plan *plan);

#endif
