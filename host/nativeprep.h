/*
 * nativeprep: the shared objects a server's start-up loads, copied into
 * memory by a second thread ahead of the importer.
 *
 * An extension module is loaded from an in-memory copy (archfs_code_path):
 * for pydantic_core that is 5 MB written while Python waits, some 3 ms of a
 * FastAPI app's 170 ms import. appbin-pack's training run records which
 * members start-up copies, in order (manifest "startup.native"); from the
 * process's first native load on, a thread makes those copies in that
 * order, so that the importer finds each one made. Only stored members
 * are copied (a compressed one would hold the archive's decompression
 * context), at most NATIVEPREP_AHEAD bytes of copies made and not yet used
 * at a time; a copy not used within NATIVEPREP_IDLE_MS of the last use (a
 * program that does not import what a server imports) is freed, and the
 * thread ends. Damage found ahead is not reported: the member is left to
 * its reader, who reports it (a program that never reads it runs). A
 * program that loads no extension module starts no thread.
 */
#ifndef APPBIN_NATIVEPREP_H
#define APPBIN_NATIVEPREP_H

#include "manifest.h"
#include "zipindex.h"

#include <stddef.h>

#define NATIVEPREP_AHEAD ((size_t)16 << 20)
#define NATIVEPREP_IDLE_MS 1000
#define NATIVEPREP_MAX_FILES 64 /* the list's first so many copies at most */

/* Reads the list of `mf` (members of `zi` missing from it are left out).
 * Call once, before any thread starts, after archfs_mount. Returns 0, or -1
 * when out of memory. */
int nativeprep_init(zipindex *zi, const manifest *mf);

/* Starts the thread, on the first call of this process that has a list. */
void nativeprep_start(void);

/* Stops the thread and waits for it: call before the archive goes away.
 * Copies made stay, as if the importer had made them. */
void nativeprep_stop(void);

typedef struct nativeprep_info {
  size_t listed;    /* members on the list */
  size_t made;      /* copies the thread made */
  size_t used;      /* of those, given out since */
  size_t discarded; /* freed unused */
  int running;
} nativeprep_info;

void nativeprep_get_info(nativeprep_info *info);

#endif
