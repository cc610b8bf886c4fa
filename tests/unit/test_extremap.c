/* extremap: a shared object loaded from a memfd is re-pointed at the same
 * bytes inside another file (as app.bin holds a stored member) and its copy
 * freed; the object keeps working, its written data survives, no code runs
 * from the memfd any more, and what cannot be remapped (an unaligned
 * offset, bytes that differ past the file's end) stays as it was. */
#include "check.h"
#include "extremap.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint8_t *so_bytes;
static size_t so_len;

static void read_probe(void) {
  FILE *f = fopen(EXTREMAP_PROBE_PATH, "rb");
  if (!f || fseek(f, 0, SEEK_END) != 0) {
    perror(EXTREMAP_PROBE_PATH);
    exit(2);
  }
  so_len = (size_t)ftell(f);
  rewind(f);
  so_bytes = malloc(so_len);
  if (!so_bytes || fread(so_bytes, 1, so_len, f) != so_len)
    exit(2);
  fclose(f);
}

typedef struct loaded {
  char path[64];
  int memfd;
  void *handle;
  int (*bump)(void);
  uint32_t (*sum)(void);
} loaded;

/* The probe written to a memfd and loaded from it, as extload does. */
static loaded load_from_memfd(void) {
  loaded l = {"", -1, NULL, NULL, NULL};
  l.memfd = memfd_create("extremap_probe.so", MFD_CLOEXEC);
  if (l.memfd < 0 || write(l.memfd, so_bytes, so_len) != (ssize_t)so_len)
    return l;
  snprintf(l.path, sizeof(l.path), "/proc/self/fd/%d", l.memfd);
  l.handle = dlopen(l.path, RTLD_NOW | RTLD_LOCAL);
  if (l.handle) {
    l.bump = (int (*)(void))dlsym(l.handle, "extremap_probe_bump");
    l.sum = (uint32_t(*)(void))dlsym(l.handle, "extremap_probe_sum");
  }
  return l;
}

/* A file holding `before` junk bytes, the probe, then junk. */
static int container(const char *name, size_t before) {
  char path[128];
  snprintf(path, sizeof(path), "/tmp/appbin-test-extremap-%d-%s", (int)getpid(), name);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  unlink(path);
  uint8_t junk[4096];
  memset(junk, 0xcc, sizeof(junk));
  for (size_t done = 0; fd >= 0 && done < before; done += sizeof(junk))
    if (write(fd, junk, before - done < sizeof(junk) ? before - done : sizeof(junk)) < 0)
      return -1;
  if (fd >= 0 && (write(fd, so_bytes, so_len) != (ssize_t)so_len ||
                  write(fd, junk, sizeof(junk)) != (ssize_t)sizeof(junk)))
    return -1;
  return fd;
}

/* Executable or any mapping of the memfd left in /proc/self/maps. */
static int memfd_mappings(int memfd, int executable_only) {
  struct stat st;
  if (fstat(memfd, &st) != 0)
    return -1;
  FILE *maps = fopen("/proc/self/maps", "re");
  char line[512];
  int n = 0;
  while (maps && fgets(line, sizeof(line), maps)) {
    unsigned long inode;
    char perms[8];
    if (sscanf(line, "%*x-%*x %7s %*x %*x:%*x %lu", perms, &inode) == 2 && inode == st.st_ino &&
        (!executable_only || perms[2] == 'x'))
      n++;
  }
  if (maps)
    fclose(maps);
  return n;
}

static void test_remap(void) {
  loaded l = load_from_memfd();
  if (!CHECK(l.handle && l.bump && l.sum)) {
    fprintf(stderr, "  dlopen: %s\n", dlerror());
    return;
  }
  uint32_t sum = l.sum();
  CHECK_EQ_INT(l.bump(), 41); /* its data page is a private copy now */
  CHECK(memfd_mappings(l.memfd, 1) > 0);
  int fd = container("aligned", 8192);
  char err[256] = "";
  struct stat before, after;
  fstat(l.memfd, &before);
  extremap_plan *plan = extremap_remap(l.path, l.memfd, fd, 8192, err, sizeof(err));
  if (!CHECK(plan != NULL))
    fprintf(stderr, "  err: %s\n", err);
  long freed = plan ? extremap_free_pages(plan, l.memfd) : -1;
  extremap_plan_free(plan);
  if (!CHECK(freed > 0))
    fprintf(stderr, "  freed: %ld\n", freed);
  fstat(l.memfd, &after);
  CHECK_EQ_INT(after.st_size, before.st_size); /* the path still names the object */
  CHECK(after.st_blocks < before.st_blocks);
  CHECK_EQ_INT(memfd_mappings(l.memfd, 1), 0);
  /* It works as before: code, read-only data, and the written counter. */
  CHECK_EQ_INT(l.sum(), sum);
  CHECK_EQ_INT(l.bump(), 42);
  CHECK(dlsym(l.handle, "extremap_probe_counter") != NULL);
  /* The header is still readable through the path, and another spelling
   * of it finds the object loaded. */
  char magic[4] = "";
  CHECK(pread(l.memfd, magic, 4, 0) == 4 && memcmp(magic,
                                                   "\x7f"
                                                   "ELF",
                                                   4) == 0);
  char other[80];
  snprintf(other, sizeof(other), "/proc/self/fd/../fd/%d", l.memfd);
  void *again = dlopen(other, RTLD_NOW | RTLD_LOCAL);
  if (CHECK(again != NULL)) {
    CHECK(dlsym(again, "extremap_probe_bump") == (void *)l.bump);
    dlclose(again);
  } else {
    fprintf(stderr, "  dlopen(%s): %s\n", other, dlerror());
  }
  close(fd);
  /* Closing the file does not matter: the mappings hold it. */
  CHECK_EQ_INT(l.sum(), sum);
}

static void test_unaligned_offset_is_refused(void) {
  loaded l = load_from_memfd();
  if (!CHECK(l.handle))
    return;
  uint32_t sum = l.sum();
  int fd = container("unaligned", 100);
  char err[256] = "";
  CHECK(extremap_remap(l.path, l.memfd, fd, 100, err, sizeof(err)) == NULL);
  CHECK_CONTAINS(err, "aligned");
  CHECK(memfd_mappings(l.memfd, 1) > 0);
  CHECK_EQ_INT(l.sum(), sum);
  close(fd);
}

static void test_not_loaded(void) {
  /* A memfd the loader does not know: refused, left alone. */
  int memfd = memfd_create("plain", MFD_CLOEXEC);
  CHECK(memfd >= 0 && write(memfd, so_bytes, so_len) == (ssize_t)so_len);
  int fd = container("plain", 4096);
  char err[256] = "", path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
  struct stat before, after;
  fstat(memfd, &before);
  CHECK(extremap_remap(path, memfd, fd, 4096, err, sizeof(err)) == NULL);
  CHECK_CONTAINS(err, "not loaded");
  fstat(memfd, &after);
  CHECK_EQ_INT(after.st_blocks, before.st_blocks);
  close(memfd);
  close(fd);
}

int main(void) {
  read_probe();
  test_remap();
  test_unaligned_offset_is_refused();
  test_not_loaded();
  free(so_bytes);
  return check_summary();
}
