#include "extremap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_SWAPPED (1ULL << 62)
#define PAGEMAP_FILE (1ULL << 61) /* file page or shared anonymous memory */
#define MAX_VMAS 64

typedef struct vma {
  uintptr_t start, end;
  uint64_t offset; /* in the memfd */
  int prot;
} vma;

static long fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static long fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* The mappings of the file (dev, ino) in /proc/self/maps. */
static int find_vmas(dev_t dev, ino_t ino, vma *out, size_t max, size_t *n) {
  FILE *maps = fopen("/proc/self/maps", "re");
  if (!maps)
    return -1;
  char *line = NULL;
  size_t cap = 0;
  int rc = 0;
  *n = 0;
  while (getline(&line, &cap, maps) > 0) {
    unsigned long start, end, offset, inode;
    unsigned major, minor;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &major, &minor,
               &inode) != 7)
      continue;
    if (inode != ino || major != major(dev) || minor != minor(dev))
      continue;
    if (*n == max || perms[3] != 'p') { /* too many, or shared: not the loader's */
      rc = -1;
      break;
    }
    out[(*n)++] = (vma){start, end, offset,
                        (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
                            (perms[2] == 'x' ? PROT_EXEC : 0)};
  }
  free(line);
  fclose(maps);
  return rc;
}

long extremap_to_file(int memfd, int file_fd, uint64_t file_offset, char *err, size_t errlen) {
  long ps = sysconf(_SC_PAGESIZE);
  struct stat st;
  if (ps <= 0 || file_offset % (uint64_t)ps != 0)
    return fail(err, errlen, "the stored object is not page-aligned in the file");
  if (fstat(memfd, &st) != 0)
    return fail(err, errlen, "fstat: %s", strerror(errno));
  vma vmas[MAX_VMAS];
  size_t nvmas;
  if (find_vmas(st.st_dev, st.st_ino, vmas, MAX_VMAS, &nvmas) != 0)
    return fail(err, errlen, "cannot read its mappings in /proc/self/maps");
  size_t npages = ((size_t)st.st_size + (size_t)ps - 1) / (size_t)ps;
  /* File pages that must stay in the memfd: mapped past its end (the bytes
   * beyond it differ in app.bin), or swapped out. */
  unsigned char *keep = calloc(npages ? npages : 1, 1);
  int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  uint64_t *flags = NULL;
  long rc = 0;
  if (!keep || pagemap < 0) {
    rc = fail(err, errlen, "cannot read /proc/self/pagemap");
    goto done;
  }
  /* The ELF header stays readable through the path: a dlopen() of another
   * spelling of it reads the header before it finds the object loaded. */
  if (npages)
    keep[0] = 1;
  for (size_t v = 0; v < nvmas && rc == 0; v++) {
    const vma *m = &vmas[v];
    size_t n = (m->end - m->start) / (size_t)ps;
    uint64_t *more = realloc(flags, n * sizeof(*flags));
    if (!more) {
      rc = fail(err, errlen, "out of memory");
      break;
    }
    flags = more;
    off_t at = (off_t)(m->start / (uintptr_t)ps * sizeof(*flags));
    if (pread(pagemap, flags, n * sizeof(*flags), at) != (ssize_t)(n * sizeof(*flags))) {
      rc = fail(err, errlen, "cannot read /proc/self/pagemap");
      break;
    }
    /* Runs of pages still backed by the memfd (not private copies) that lie
     * inside it, mapped again from the file. Writable mappings stay: a
     * thread could write a page between the look at its flags and the new
     * mapping, and the write would be lost (they are small: data, GOT). */
    for (size_t i = 0; i < n && rc == 0;) {
      uint64_t page_at = m->offset + (uint64_t)i * (uint64_t)ps;
      int copied = (flags[i] & PAGEMAP_PRESENT) && !(flags[i] & PAGEMAP_FILE);
      int stays = (m->prot & PROT_WRITE) || (flags[i] & PAGEMAP_SWAPPED) ||
                  page_at + (uint64_t)ps > (uint64_t)st.st_size;
      if (copied || stays) {
        if (stays && !copied && page_at / (uint64_t)ps < npages)
          keep[page_at / (uint64_t)ps] = 1;
        i++;
        continue;
      }
      size_t j = i + 1;
      while (j < n) {
        uint64_t next_at = m->offset + (uint64_t)j * (uint64_t)ps;
        if (((flags[j] & PAGEMAP_PRESENT) && !(flags[j] & PAGEMAP_FILE)) ||
            (m->prot & PROT_WRITE) || (flags[j] & PAGEMAP_SWAPPED) ||
            next_at + (uint64_t)ps > (uint64_t)st.st_size)
          break;
        j++;
      }
      void *addr = (void *)(m->start + i * (size_t)ps);
      void *got = mmap(addr, (j - i) * (size_t)ps, m->prot, MAP_PRIVATE | MAP_FIXED, file_fd,
                       (off_t)(file_offset + page_at));
      if (got == MAP_FAILED)
        rc = fail(err, errlen, "mmap: %s", strerror(errno));
      i = j;
    }
  }
  /* Nothing maps the memfd's other pages any more: free them. */
  long freed = 0;
  for (size_t p = 0; p < npages && rc == 0;) {
    if (keep[p]) {
      p++;
      continue;
    }
    size_t q = p + 1;
    while (q < npages && !keep[q])
      q++;
    off_t len = (off_t)((q - p) * (size_t)ps);
    if ((off_t)(p * (size_t)ps) + len > st.st_size)
      len = st.st_size - (off_t)(p * (size_t)ps);
    if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(p * (size_t)ps),
                  len) != 0)
      rc = fail(err, errlen, "fallocate: %s", strerror(errno));
    else
      freed += (long)len;
    p = q;
  }
  if (rc == 0)
    rc = freed;
done:
  if (pagemap >= 0)
    close(pagemap);
  free(flags);
  free(keep);
  return rc;
}
