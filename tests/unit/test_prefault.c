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
#include <sys/mman.h>
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

/* Whether this kernel has MADV_POPULATE_WRITE (Linux 5.14; not under
 * gVisor or qemu-user, say): tried on a page of its own. */
static int have_populate_write(void) {
  void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return 0;
  int ok = madvise(p, 4096, MADV_POPULATE_WRITE) == 0;
  munmap(p, 4096);
  return ok;
}

int main(void) {
  /* Read before any CHECK writes the counters check.h keeps in .bss. */
  uint64_t bss_before = pagemap_entry(&bss_pages[PAGES / 2 * 4096]);
  uint64_t before = pagemap_entry(&data_pages[PAGES / 2 * 4096]);
  if (sysconf(_SC_PAGESIZE) != 4096 || pagemap_entry(&pagemap_entry) == 0 ||
      !have_populate_write()) {
    fprintf(stderr, "  (no 4 KiB pages, no /proc/self/pagemap or no MADV_POPULATE_WRITE: "
                    "not checked)\n");
    return check_summary();
  }
  prefault_program_data();
  uint64_t bss_after = pagemap_entry(&bss_pages[PAGES / 2 * 4096]);
  uint64_t after[PAGES];
  for (int i = 0; i < PAGES; i++)
    after[i] = pagemap_entry(&data_pages[i * 4096]);
  /* Untouched before: not present (or a file page, if read ahead). */
  CHECK(!PRESENT(before) || FILE_OR_SHARED(before));
  CHECK(!PRESENT(bss_before));
  for (int i = 1; i < PAGES; i++) { /* page 0 may share the section's start with others */
    CHECK(PRESENT(after[i]));
    CHECK(!FILE_OR_SHARED(after[i])); /* a private copy: copy-on-write broken */
  }
  /* .bss is not populated (most of the host's is never touched). */
  CHECK(!PRESENT(bss_after));
  /* The data reads back as initialised. */
  CHECK_EQ_INT(data_pages[0], 1);
  CHECK_EQ_INT(data_pages[4096], 0);
  return check_summary();
}
