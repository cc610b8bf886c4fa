#include "elfstub.h"

#include <assert.h>
#include <elf.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#define ELFSTUB_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define ELFSTUB_MACHINE EM_AARCH64
#else
#error "elfstub: unknown machine"
#endif

_Static_assert(sizeof(void *) == 8, "elfstub writes 64-bit ELF files");

enum {
  STUB_PHNUM = 3,     /* PT_LOAD, PT_DYNAMIC, PT_GNU_STACK */
  STUB_FIXED_DYN = 6, /* DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT, DT_NULL */
  STUB_ALIGN = 0x1000,
};

/* The layout, all in one segment mapped at offset 0: header, program
 * headers, hash table (nbucket 1, nchain 1, both zero), the null symbol,
 * the dynamic section, the string table. */
typedef struct stub_layout {
  size_t hash, symtab, dynamic, strtab, strsz, total;
} stub_layout;

static size_t align8(size_t v) { return (v + 7) & ~(size_t)7; }

static int layout_of(const char *const *paths, size_t n, stub_layout *l) {
  size_t strsz = 1; /* the empty string at offset 0 */
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(paths[i]);
    if (len == 0 || !strchr(paths[i], '/') || len > SIZE_MAX / 2 - strsz)
      return -1;
    strsz += len + 1;
  }
  if (n > (SIZE_MAX / 2) / sizeof(Elf64_Dyn) - STUB_FIXED_DYN)
    return -1;
  l->hash = sizeof(Elf64_Ehdr) + STUB_PHNUM * sizeof(Elf64_Phdr);
  l->symtab = align8(l->hash + 4 * sizeof(Elf32_Word));
  l->dynamic = align8(l->symtab + sizeof(Elf64_Sym));
  l->strtab = l->dynamic + (n + STUB_FIXED_DYN) * sizeof(Elf64_Dyn);
  if (strsz > SIZE_MAX / 2 - l->strtab)
    return -1;
  l->strsz = strsz;
  l->total = l->strtab + strsz;
  return 0;
}

static void put_dyn(unsigned char *buf, size_t *at, Elf64_Sxword tag, Elf64_Xword value) {
  Elf64_Dyn d = {.d_tag = tag, .d_un = {.d_val = value}};
  memcpy(buf + *at, &d, sizeof(d));
  *at += sizeof(d);
}

unsigned char *elfstub_build(const char *const *paths, size_t n, size_t *len) {
  stub_layout l;
  if (!paths || n == 0 || !len || layout_of(paths, n, &l) != 0) {
    errno = EINVAL;
    return NULL;
  }
  unsigned char *buf = calloc(1, l.total);
  if (!buf)
    return NULL;

  Elf64_Ehdr eh = {
      .e_type = ET_DYN,
      .e_machine = ELFSTUB_MACHINE,
      .e_version = EV_CURRENT,
      .e_phoff = sizeof(Elf64_Ehdr),
      .e_ehsize = sizeof(Elf64_Ehdr),
      .e_phentsize = sizeof(Elf64_Phdr),
      .e_phnum = STUB_PHNUM,
      .e_shentsize = sizeof(Elf64_Shdr),
  };
  memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_ident[EI_OSABI] = ELFOSABI_SYSV;
  memcpy(buf, &eh, sizeof(eh));

  size_t dynsz = l.strtab - l.dynamic;
  Elf64_Phdr ph[STUB_PHNUM] = {
      {.p_type = PT_LOAD,
       .p_flags = PF_R | PF_W,
       .p_filesz = l.total,
       .p_memsz = l.total,
       .p_align = STUB_ALIGN},
      {.p_type = PT_DYNAMIC,
       .p_flags = PF_R | PF_W,
       .p_offset = l.dynamic,
       .p_vaddr = l.dynamic,
       .p_paddr = l.dynamic,
       .p_filesz = dynsz,
       .p_memsz = dynsz,
       .p_align = 8},
      {.p_type = PT_GNU_STACK, .p_flags = PF_R | PF_W, .p_align = 16},
  };
  memcpy(buf + sizeof(eh), ph, sizeof(ph));

  Elf32_Word hash[4] = {1, 1, 0, 0}; /* nbucket, nchain, bucket[0], chain[0] */
  memcpy(buf + l.hash, hash, sizeof(hash));
  /* The null symbol at l.symtab is all zeros already. */

  size_t at = l.dynamic, str = 1;
  for (size_t i = 0; i < n; i++) {
    size_t plen = strlen(paths[i]);
    memcpy(buf + l.strtab + str, paths[i], plen + 1);
    put_dyn(buf, &at, DT_NEEDED, str);
    str += plen + 1;
  }
  put_dyn(buf, &at, DT_HASH, l.hash);
  put_dyn(buf, &at, DT_STRTAB, l.strtab);
  put_dyn(buf, &at, DT_SYMTAB, l.symtab);
  put_dyn(buf, &at, DT_STRSZ, l.strsz);
  put_dyn(buf, &at, DT_SYMENT, sizeof(Elf64_Sym));
  put_dyn(buf, &at, DT_NULL, 0);
  assert(at == l.strtab && str == l.strsz);
  *len = l.total;
  return buf;
}
