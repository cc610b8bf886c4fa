/*
 * elfstub: a generated shared object that defines nothing and needs a list
 * of libraries by path, so that one dlopen() loads them all.
 *
 * Why: the host loads an extension module's bundled libraries from memfds
 * (/proc/self/fd/N), where the dynamic loader cannot find one by its soname.
 * Loaded one at a time, a library must come after everything it needs, which
 * is impossible when two need each other (pillow's libfreetype and
 * libharfbuzz). glibc maps the DT_NEEDED entries of an object breadth first
 * and only then their own DT_NEEDED, which it first matches against the
 * objects already mapped by name and DT_SONAME (dl-deps.c, dl-load.c): so
 * when a stub needs every library of the group by path, all of them are
 * mapped before any of their dependencies is looked up, and a cycle resolves
 * exactly as it does when the libraries are loaded from a directory.
 *
 * The stub is the smallest object glibc loads (2.36 to 2.41 at least): one
 * read-write PT_LOAD (ld.so relocates the dynamic section in place), a
 * PT_DYNAMIC, a PT_GNU_STACK without PF_X (glibc 2.41's dlopen refuses an
 * object that would need an executable stack), an empty DT_HASH and DT_SYMTAB.
 */
#ifndef APPBIN_ELFSTUB_H
#define APPBIN_ELFSTUB_H

#include <stddef.h>

/* Builds the stub's bytes for `n` (at least 1) paths, each containing a '/'
 * (a name without one would be searched for, not opened). Returns a malloc'd
 * buffer of *len bytes, or NULL (errno EINVAL for bad arguments, ENOMEM). */
unsigned char *elfstub_build(const char *const *paths, size_t n, size_t *len);

#endif
