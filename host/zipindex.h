/*
 * zipindex: the archive's members, read once from the zip central directory
 * into a sorted array with a hash index by name, and read from the archive's
 * bytes (which stay where the caller keeps them, typically a file mapping).
 *
 * Members are stored, deflated (zlib) or zstd frames (method 93). The
 * reader is zip's subset that appbin-pack writes and more: an archive
 * comment, zip64 end records; no encryption, no data descriptors, no zip64
 * member sizes, no multi-disk archives.
 *
 * Two ways to open an archive:
 * - zipindex_open_verified(): the archive of an app.bin (host/payload.h).
 *   Its index (the central directory and the end records) must hash to the
 *   SHA-256 the caller got from the payload trailer, and every member carries
 *   in its central directory entry the SHA-256 of its record (local header,
 *   name and data): a member is checked against it the first time it is read,
 *   before any of its bytes is decompressed or returned. zipindex_verify_all()
 *   (or the background thread of zipindex_verify_start()) checks every member
 *   and that the records and the index cover the archive without a gap, so
 *   that, once it succeeded, every byte of the archive is known intact.
 * - zipindex_open(): any such zip, without digests; reads check the CRC-32.
 *
 * Damage (a digest or CRC mismatch, a local header that disagrees with the
 * central directory, a frame that does not decompress to the recorded size)
 * is reported by the damage handler when one is set (zipindex_on_damage),
 * which is expected not to return; else the call fails with a message
 * naming the member.
 *
 * zipindex_read and the verification may run in several threads at once;
 * the rest is read-only after open.
 */
#ifndef APPBIN_ZIPINDEX_H
#define APPBIN_ZIPINDEX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ZIPINDEX_SHA256_SIZE 32
/* Central directory extra field holding a member's record SHA-256 ("ab"). */
#define ZIPINDEX_DIGEST_FIELD 0x6261

typedef struct zipindex_entry {
  const char *name; /* NUL-terminated, valid while the index is open */
  size_t name_len;
  uint64_t size;         /* uncompressed size */
  uint64_t comp_size;    /* size in the archive */
  uint64_t zip_index;    /* position in the central directory */
  uint64_t offset;       /* of the local header, from the archive's start */
  const uint8_t *digest; /* SHA-256 of the record, inside the index; NULL unverified */
  uint32_t crc;          /* CRC-32 of the uncompressed bytes */
  uint16_t method;       /* ZIPINDEX_STORED, _DEFLATED or _ZSTD */
} zipindex_entry;

enum { ZIPINDEX_STORED = 0, ZIPINDEX_DEFLATED = 8, ZIPINDEX_ZSTD = 93 };

/* Called with a one-line message (naming the member) when damage is found. */
typedef void (*zipindex_damage_fn)(const char *message);

typedef struct zipindex {
  const uint8_t *data; /* the archive, not owned */
  size_t len;
  uint64_t index_offset;   /* where the central directory starts */
  zipindex_entry *entries; /* sorted by name, bytewise */
  size_t count;
  char *names;     /* the entries' names, one allocation */
  uint32_t *slots; /* open addressing: entry index + 1, 0 = empty */
  size_t slot_mask;
  _Atomic unsigned char *checked; /* per entry: its record matched its digest */
  atomic_int all_checked;         /* zipindex_verify_all() succeeded */
  int verified;                   /* opened with zipindex_open_verified */
  zipindex_damage_fn on_damage;
  pthread_mutex_t dctx_lock; /* guards dctx */
  int lock_ready;
  void *dctx; /* ZSTD_DCtx, made on the first zstd read */
  pthread_t verifier;
  atomic_int verifier_started; /* a thread was asked for (once) */
  atomic_int verifier_running; /* it was made and not yet joined */
  pid_t verifier_pid;          /* by this process (a fork's child has none) */
  int verifier_quiet;          /* a prefetch for readers: reports no damage */
  int verifier_rc;
  char verifier_err[512];
  void *verifier_order;               /* the thread's sorting room, made and freed by others */
  pthread_mutex_t verifier_join_lock; /* set up with the thread: one joiner at a time */
  unsigned start_after;               /* zipindex_verify_start_after(); 0: never */
  int release_behind;           /* zipindex_release_behind(): data is a read-only file mapping */
  _Atomic uintptr_t kept_block; /* zipindex_release(): the block the last record read ended in */
  atomic_int release_held;      /* zipindex_hold_releases(): readers drop nothing for now */
  atomic_uint first_reads;      /* members readers checked themselves */
} zipindex;

/* Opens the zip archive held in `data` (not copied: must outlive the index),
 * without digests: reads check each member's CRC-32. Rejects member names
 * that are empty or absolute, or hold a "." or ".." component, a backslash
 * or a NUL, duplicate names, and members compressed with a method other
 * than the three above. Returns 0, or -1 with a message in err. */
int zipindex_open(zipindex *zi, const void *data, size_t len, char *err, size_t errlen);

/* zipindex_open, for an archive whose index must hash to `index_sha256`
 * (the central directory and end records: the bytes from the central
 * directory's start to the end of `data`) and whose every member carries
 * its digest. Returns 0, or -1 with a message in err (a mismatch says
 * "damaged"). */
int zipindex_open_verified(zipindex *zi, const void *data, size_t len,
                           const uint8_t index_sha256[ZIPINDEX_SHA256_SIZE], char *err,
                           size_t errlen);

/* Sets the handler called on damage (NULL: the call fails instead). */
void zipindex_on_damage(zipindex *zi, zipindex_damage_fn fn);

/* Joins a verifier thread still running, then frees everything. */
void zipindex_close(zipindex *zi);

/* The member named exactly `name` (of `len` bytes), or NULL. */
const zipindex_entry *zipindex_find(const zipindex *zi, const char *name, size_t len);

/* Reads a whole member into `buf`, which holds at least entry->size bytes.
 * Returns 0, or -1 with a message in err (after the damage handler, if any,
 * returned) and errno ENOMEM (out of memory) or EIO (anything else: a
 * damaged member). */
int zipindex_read(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen);

/* zipindex_read for data a reader can do without (a file opened by path):
 * damage is not reported to the damage handler, the call fails with EIO and
 * the message, and the caller says what it does about it. */
int zipindex_read_data(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen);

/* The bytes of a stored member, in place (verified, as zipindex_read would):
 * no copy. NULL with a message in err for a compressed member (say so with
 * "compressed") or on damage. */
const void *zipindex_stored_data(zipindex *zi, const zipindex_entry *e, char *err, size_t errlen);

/* zipindex_stored_data for bytes read ahead of any reader (nativeprep.h):
 * damage is not reported (no handler call), and the member stays unchecked
 * for its reader to find it; the check does not count as a reader's. */
const void *zipindex_stored_data_ahead(zipindex *zi, const zipindex_entry *e, char *err,
                                       size_t errlen);

/* Checks every member not checked yet against its digest, and that the
 * members' records and the index tile the archive. Returns 0 (and marks the
 * index all-checked), or -1 with a message in err. Unverified archives fail. */
int zipindex_verify_all(zipindex *zi, char *err, size_t errlen);

/* Runs zipindex_verify_all() in a new thread (with every signal blocked).
 * Returns 0, or -1 when no thread could be made (zipindex_verify_wait then
 * checks in the caller's thread). */
int zipindex_verify_start(zipindex *zi);

/* Once readers have checked `reads` members themselves, starts a thread
 * that checks the others in archive order ahead of them, so that they find
 * most members checked already: for a program that reads many members on
 * one core while another is free. It checks the stored members (the
 * start-up code appbin-pack lays out first) and stops at the first
 * compressed member no reader has checked yet. It reports no damage (the
 * reader of a damaged member does) and needs no waiting for. */
void zipindex_verify_start_after(zipindex *zi, unsigned reads);

/* Declares that the archive's bytes are a read-only mapping of a file
 * (never anonymous or heap memory): the verification then drops the pages it
 * has hashed from the process's resident set as it goes (madvise
 * MADV_DONTNEED; they stay in the page cache and fault back in, with the
 * same bytes, when read again), so that checking the whole archive does not
 * leave it all resident. */
void zipindex_release_behind(zipindex *zi);

/* While `held` (a server's start-up, which drops the whole mapping once it
 * is done), zipindex_release() does nothing: start-up's reads then make no
 * madvise at all. */
void zipindex_hold_releases(zipindex *zi, int held);

/* Under zipindex_release_behind(), drops the pages of a member's record
 * from the resident set: for a caller done with the bytes
 * zipindex_stored_data gave (zipindex_read does it itself). Whole 64 KiB
 * blocks go, those it shares with its neighbours included, but for the
 * block it ends in, which the next call drops (whichever record that
 * reads): at most one block stays. Otherwise does nothing. */
void zipindex_release(zipindex *zi, const zipindex_entry *e);

/* Waits for the verifier thread (or, without one, runs the check now) and
 * returns its result: 0 when every byte is intact, -1 with err. */
int zipindex_verify_wait(zipindex *zi, char *err, size_t errlen);

/* How many members (directories included) have been checked against their
 * digests so far, by readers or the verifier thread. */
size_t zipindex_checked_count(const zipindex *zi);

/* Index of the first entry whose name is >= the given prefix; iterate from
 * there while names start with it to list a directory. */
size_t zipindex_lower_bound(const zipindex *zi, const char *prefix, size_t len);

/* Whether some member's name starts with `dir` followed by '/' (dir given
 * without the trailing slash; an empty dir is the archive root). */
int zipindex_is_dir(const zipindex *zi, const char *dir, size_t len);

#endif
