#include "payload.h"

#include "le.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int payload_error(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

int payload_parse_trailer(const uint8_t *tail, uint64_t file_size, payload_trailer *out, char *err,
                          size_t errlen) {
  if (memcmp(tail, PAYLOAD_MAGIC, PAYLOAD_MAGIC_LEN) != 0)
    return payload_error(err, errlen, "no appbin payload (trailer magic not found)");
  out->version = le32(tail + 8);
  out->flags = le32(tail + 12);
  out->archive_offset = le64(tail + 16);
  out->archive_size = le64(tail + 24);
  memcpy(out->index_sha256, tail + 32, 32);
  if (out->version != PAYLOAD_FORMAT_VERSION)
    return payload_error(err, errlen,
                         "payload format version %u is not supported (this host reads %u): "
                         "pack it again with the appbin-pack of this host's version",
                         out->version, PAYLOAD_FORMAT_VERSION);
  if (out->flags != 0)
    return payload_error(err, errlen, "payload has unknown flags 0x%x", out->flags);
  /* The archive must end exactly where the trailer starts. */
  if (file_size < PAYLOAD_TRAILER_SIZE || out->archive_offset > file_size - PAYLOAD_TRAILER_SIZE ||
      out->archive_size != file_size - PAYLOAD_TRAILER_SIZE - out->archive_offset)
    return payload_error(err, errlen,
                         "payload is truncated or damaged (archive at %llu+%llu, file size %llu)",
                         (unsigned long long)out->archive_offset,
                         (unsigned long long)out->archive_size, (unsigned long long)file_size);
  if (out->archive_size < 22)
    return payload_error(err, errlen, "payload archive is too small to be a zip (%llu bytes)",
                         (unsigned long long)out->archive_size);
  return 0;
}

int payload_open(payload *p, const char *path, char *err, size_t errlen) {
  memset(p, 0, sizeof(*p));
  p->fd = -1;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return payload_error(err, errlen, "cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    payload_error(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  uint64_t size = (uint64_t)st.st_size;
  uint8_t tail[PAYLOAD_TRAILER_SIZE];
  if (size < PAYLOAD_TRAILER_SIZE ||
      pread(fd, tail, sizeof(tail), (off_t)(size - sizeof(tail))) != (ssize_t)sizeof(tail) ||
      memcmp(tail, PAYLOAD_MAGIC, PAYLOAD_MAGIC_LEN) != 0) {
    close(fd);
    snprintf(err, errlen, "%s has no appbin payload", path);
    return 1;
  }
  if (payload_parse_trailer(tail, size, &p->trailer, err, errlen) != 0) {
    close(fd);
    return -1;
  }
  void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    payload_error(err, errlen, "cannot map %s: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  p->fd = fd; /* stored shared objects get mapped from it (host/extremap.h) */
  p->map = map;
  p->map_size = (size_t)size;
  p->archive = p->map + p->trailer.archive_offset;
  p->archive_size = (size_t)p->trailer.archive_size;
  p->path = strdup(path);
  if (!p->path) {
    payload_close(p);
    return payload_error(err, errlen, "out of memory");
  }
  return 0;
}

void payload_release_pages(const payload *p) {
  if (p && p->map)
    madvise((void *)p->map, p->map_size, MADV_DONTNEED);
}

void payload_drop_cache(const payload *p) {
  if (!p || !p->map)
    return;
  payload_release_pages(p);
  if (p->fd >= 0)
    (void)posix_fadvise(p->fd, 0, 0, POSIX_FADV_DONTNEED); /* advice: failure changes nothing */
}

void payload_close(payload *p) {
  if (p->map)
    munmap((void *)p->map, p->map_size);
  if (p->fd >= 0 && p->map)
    close(p->fd);
  free(p->path);
  memset(p, 0, sizeof(*p));
  p->fd = -1;
}
