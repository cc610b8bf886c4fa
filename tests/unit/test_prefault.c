/* prefault: after prefault_program_data() the main program's initialised,
 * writable data pages are present and private (copy-on-write broken, no
 * longer backed by the file), its read-only data untouched, before this
 * thread ever wrote them; .bss pages are left alone. Read off
 * /proc/self/pagemap (present: bit 63; file-backed or shared: bit 61). */
#include "check.h"
#include "prefault.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#define PAGES 8

/* Initialised, writable, never written below: in .data, page-aligned. */
static volatile char data_pages[PAGES * 4096] __attribute__((aligned(4096))) = {1};
static volatile char bss_pages[PAGES * 4096] __attribute__((aligned(4096)));

/* The pagemap entry of the page holding p, or 0 where it cannot be read. */
static uint64_t pagemap_entry(const volatile void *p) {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  uint64_t entry = 0;
  if (fd >= 0) {
    off_t at = (off_t)((uintptr_t)p / (uintptr_t)sysconf(_SC_PAGESIZE) * sizeof(entry));
    if (pread(fd, &entry, sizeof(entry), at) != (ssize_t)sizeof(entry))
      entry = 0;
    close(fd);
  }
  return entry;
}

#define PRESENT(e) (((e) >> 63) & 1)
#define FILE_OR_SHARED(e) (((e) >> 61) & 1)

int main(void) {
  if (sysconf(_SC_PAGESIZE) != 4096 || pagemap_entry(&pagemap_entry) == 0) {
    fprintf(stderr, "  (no 4 KiB pages or no /proc/self/pagemap: not checked)\n");
    return check_summary();
  }
  /* Untouched so far: not present (or a file page, if read ahead). */
  uint64_t before = pagemap_entry(&data_pages[PAGES / 2 * 4096]);
  CHECK(!PRESENT(before) || FILE_OR_SHARED(before));
  prefault_program_data();
  for (int i = 1; i < PAGES; i++) { /* page 0 may share the section's start with others */
    uint64_t e = pagemap_entry(&data_pages[i * 4096]);
    CHECK(PRESENT(e));
    CHECK(!FILE_OR_SHARED(e)); /* a private copy: copy-on-write broken */
  }
  /* .bss is not populated (most of the host's is never touched). */
  CHECK(!PRESENT(pagemap_entry(&bss_pages[PAGES / 2 * 4096])));
  /* The data reads back as initialised. */
  CHECK_EQ_INT(data_pages[0], 1);
  CHECK_EQ_INT(data_pages[4096], 0);
  return check_summary();
}
