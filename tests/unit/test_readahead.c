/* readahead: the background pass reads the pages of the given file range
 * that are not in the page cache (they become resident without this thread
 * touching them), and nothing far past the range; a range misaligned with
 * its mapping is skipped; readahead_wait() returns once the pass is done. */
#include "check.h"
#include "readahead.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MB ((size_t)1 << 20)

/* Pages of [p, p + len) in the page cache. */
static size_t cached_pages(const uint8_t *p, size_t len, size_t page) {
  size_t n = len / page, count = 0;
  unsigned char *vec = malloc(n);
  if (!vec || mincore((void *)p, len, vec) != 0) {
    free(vec);
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    count += vec[i] & 1;
  free(vec);
  return count;
}

/* A file of `len` bytes on a disk (not tmpfs: its cache can be dropped),
 * unlinked, mapped at *map, none of it in the page cache. Returns its
 * descriptor, or -1 (and says why) where the cache cannot be dropped. */
static int uncached_file(size_t len, const uint8_t **map) {
  char path[] = "/var/tmp/appbin-readahead-XXXXXX";
  int fd = mkstemp(path);
  if (!CHECK(fd >= 0))
    return -1;
  unlink(path);
  char *block = malloc(MB);
  int ok = block != NULL;
  for (size_t i = 0; ok && i < MB; i++)
    block[i] = (char)(i * 31 + 7);
  for (size_t at = 0; ok && at < len; at += MB)
    ok = write(fd, block, MB) == (ssize_t)MB;
  free(block);
  *map = MAP_FAILED;
  if (!CHECK(ok && fsync(fd) == 0) ||
      !CHECK((*map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0)) != MAP_FAILED)) {
    close(fd);
    return -1;
  }
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (cached_pages(*map, len, page) > 0) {
    fprintf(stderr, "  (the page cache of /var/tmp cannot be dropped here: not checked)\n");
    munmap((void *)*map, len);
    close(fd);
    return -1;
  }
  return fd;
}

static void test_reads_the_uncached_range(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), len = 48 * MB, from = 1 * MB, want = 3 * MB;
  const uint8_t *map;
  int fd = uncached_file(len, &map);
  if (fd < 0)
    return;
  readahead_start(map + from, fd, (off_t)from, want);
  readahead_wait();
  CHECK_EQ_INT(cached_pages(map + from, want, page), want / page);
  /* Well past the range nothing was read (the kernel's own readahead after
   * a read may add a window beyond it: up to read_ahead_kb, 8 MiB on some
   * disks). */
  CHECK_EQ_INT(cached_pages(map + 24 * MB, 24 * MB, page), 0);
  munmap((void *)map, len);
  close(fd);
}

/* A range whose file offset and address disagree modulo the page size is
 * skipped (the code segments are still read): nothing of the file is read. */
static void test_misaligned_range_is_ignored(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), len = 4 * MB;
  const uint8_t *map;
  int fd = uncached_file(len, &map);
  if (fd < 0)
    return;
  readahead_start(map + 100, fd, 101, MB);
  readahead_wait();
  readahead_start(map, fd, 0, 0); /* no range: the code only */
  readahead_wait();
  CHECK_EQ_INT(cached_pages(map, len, page), 0);
  munmap((void *)map, len);
  close(fd);
}

int main(void) {
  test_reads_the_uncached_range();
  test_misaligned_range_is_ignored();
  return check_summary();
}
