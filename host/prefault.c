#include "prefault.h"

#include <link.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static int prefault_main_program(struct dl_phdr_info *info, size_t size, void *page_size) {
  (void)size;
  uintptr_t page = *(const uintptr_t *)page_size;
  uintptr_t relro_end = 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_GNU_RELRO)
      relro_end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(page - 1);
  }
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W) || ph->p_filesz == 0)
      continue;
    /* The file-backed pages only: the .bss past them is mostly never
     * touched (28 of 288 KB), and populating it would add to the RSS. */
    uintptr_t start = (info->dlpi_addr + ph->p_vaddr) & ~(page - 1);
    uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_filesz) & ~(page - 1);
    if (start < relro_end) /* mprotect()ed read-only by the loader */
      start = relro_end;
    if (end > start)
      (void)madvise((void *)start, end - start, MADV_POPULATE_WRITE); /* advice */
  }
  return 1; /* the main program comes first: done */
}

void prefault_program_data(void) {
  long ps = sysconf(_SC_PAGESIZE);
  uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096;
  dl_iterate_phdr(prefault_main_program, &page);
}
