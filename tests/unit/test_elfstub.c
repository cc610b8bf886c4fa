/* elfstub: the generated object's layout (read back with <elf.h>), that
 * glibc's dlopen() loads it and the libraries it needs, that those are in
 * its symbol scope, that a missing one fails cleanly, and bad arguments.
 * (Libraries that need each other: tests/e2e/test_packager.py.) */
#include "check.h"
#include "elfstub.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* zlib: on every Debian system, and not linked into this test. */
#define LIBZ "/lib/x86_64-linux-gnu/libz.so.1"

/* Writes bytes to a memfd; returns its /proc/self/fd path in `path`
 * (the fd stays open: see extload.h). */
/* Builds the stub for paths into a memfd; its /proc path goes to path. */
static int stub_in_memfd(const char *const *paths, size_t n, char *path, size_t pathlen) {
  size_t len;
  unsigned char *stub = elfstub_build(paths, n, &len);
  if (!CHECK(stub != NULL))
    return -1;
  int fd = memfd_create("elfstub-test", MFD_CLOEXEC);
  int ok = fd >= 0 && write(fd, stub, len) == (ssize_t)len;
  free(stub);
  if (!CHECK(ok))
    return -1;
  snprintf(path, pathlen, "/proc/self/fd/%d", fd);
  return 0;
}

static void test_layout(void) {
  const char *paths[] = {"/a/libone.so.1", "/b/libtwo.so.2"};
  size_t len = 0;
  unsigned char *stub = elfstub_build(paths, 2, &len);
  if (!CHECK(stub != NULL))
    return;
  Elf64_Ehdr eh;
  memcpy(&eh, stub, sizeof(eh));
  CHECK_MEM(eh.e_ident, ELFMAG, SELFMAG);
  CHECK_EQ_INT(eh.e_ident[EI_CLASS], ELFCLASS64);
  CHECK_EQ_INT(eh.e_type, ET_DYN);
  CHECK_EQ_INT(eh.e_phnum, 3);
  int load = 0, dynamic = 0, stack = 0;
  Elf64_Phdr dyn_ph = {0};
  for (int i = 0; i < eh.e_phnum; i++) {
    Elf64_Phdr ph;
    memcpy(&ph, stub + eh.e_phoff + i * sizeof(ph), sizeof(ph));
    if (ph.p_type == PT_LOAD) {
      load++;
      CHECK_EQ_INT(ph.p_offset, 0);
      CHECK_EQ_INT(ph.p_filesz, len);
      CHECK(ph.p_flags & PF_W); /* ld.so relocates the dynamic section in place */
    } else if (ph.p_type == PT_DYNAMIC) {
      dynamic++;
      dyn_ph = ph;
    } else if (ph.p_type == PT_GNU_STACK) {
      stack++;
      CHECK(!(ph.p_flags & PF_X));
    }
  }
  CHECK(load == 1 && dynamic == 1 && stack == 1);
  if (!CHECK(dyn_ph.p_offset + dyn_ph.p_filesz <= len))
    goto out;
  const char *strtab = NULL;
  size_t needed[2], nneeded = 0, strsz = 0;
  for (size_t at = dyn_ph.p_offset; at < dyn_ph.p_offset + dyn_ph.p_filesz;
       at += sizeof(Elf64_Dyn)) {
    Elf64_Dyn d;
    memcpy(&d, stub + at, sizeof(d));
    if (d.d_tag == DT_NULL)
      break;
    if (d.d_tag == DT_NEEDED && nneeded < 2)
      needed[nneeded++] = d.d_un.d_val;
    if (d.d_tag == DT_STRTAB)
      strtab = (const char *)stub + d.d_un.d_ptr; /* vaddr == offset */
    if (d.d_tag == DT_STRSZ)
      strsz = d.d_un.d_val;
  }
  if (CHECK(strtab != NULL && nneeded == 2)) {
    CHECK_STR(strtab + needed[0], paths[0]);
    CHECK_STR(strtab + needed[1], paths[1]);
    CHECK_EQ_INT((size_t)(strtab - (const char *)stub) + strsz, len);
  }
out:
  free(stub);
}

static void test_dlopen_loads_what_it_needs(void) {
  if (!CHECK(dlopen("libz.so.1", RTLD_NOW | RTLD_NOLOAD) == NULL))
    return;
  const char *paths[] = {LIBZ};
  char path[64];
  if (stub_in_memfd(paths, 1, path, sizeof(path)) != 0)
    return;
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!CHECK(handle != NULL)) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return;
  }
  /* Matched by soname from now on, like the host's extension modules do. */
  CHECK(dlopen("libz.so.1", RTLD_NOW | RTLD_NOLOAD) != NULL);
  /* The stub defines nothing; its scope (its dependencies) has zlib. */
  CHECK(dlsym(handle, "zlibVersion") != NULL);
  /* A second stub for the same path reuses the loaded object. */
  char path2[64];
  if (stub_in_memfd(paths, 1, path2, sizeof(path2)) == 0)
    CHECK(dlopen(path2, RTLD_NOW | RTLD_LOCAL) != NULL);
}

static void test_missing_library(void) {
  const char *paths[] = {"/nonexistent/appbin/libmissing.so.1"};
  char path[64];
  if (stub_in_memfd(paths, 1, path, sizeof(path)) != 0)
    return;
  CHECK(dlopen(path, RTLD_NOW | RTLD_LOCAL) == NULL);
  CHECK_CONTAINS(dlerror(), "/nonexistent/appbin/libmissing.so.1");
}

static void test_bad_arguments(void) {
  const char *no_slash[] = {"libz.so.1"};
  const char *empty[] = {""};
  const char *good[] = {LIBZ};
  size_t len;
  errno = 0;
  CHECK(elfstub_build(no_slash, 1, &len) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(elfstub_build(empty, 1, &len) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(elfstub_build(good, 0, &len) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(elfstub_build(NULL, 1, &len) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(elfstub_build(good, 1, NULL) == NULL && errno == EINVAL);
}

static void test_many_long_paths(void) {
  enum { N = 300 };
  static char buf[N][600];
  const char *paths[N];
  for (int i = 0; i < N; i++) {
    memset(buf[i], 'x', sizeof(buf[i]) - 1);
    buf[i][0] = '/';
    snprintf(buf[i] + sizeof(buf[i]) - 8, 8, "%07d", i);
    paths[i] = buf[i];
  }
  size_t len;
  unsigned char *stub = elfstub_build(paths, N, &len);
  CHECK(stub != NULL && len > N * 600);
  free(stub);
}

int main(void) {
  test_layout();
  test_dlopen_loads_what_it_needs();
  test_missing_library();
  test_bad_arguments();
  test_many_long_paths();
  return check_summary();
}
