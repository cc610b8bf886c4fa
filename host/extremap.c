#include "extremap.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_SWAPPED (1ULL << 62)
#define PAGEMAP_FILE (1ULL << 61) /* file page or shared anonymous memory */
#define MAX_VMAS 64

typedef struct vma {
  uintptr_t start, end;
  uint64_t offset; /* in the memfd */
  int prot;        /* PROT_WRITE: the loader's data, which stays */
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

typedef struct segments {
  const char *path; /* the name the object was loaded by */
  uintptr_t page;
  vma *out;
  size_t max, n;
  int found, overflow;
} segments;

/* dl_iterate_phdr: the file-backed pages of the object's PT_LOAD segments,
 * as the loader mapped them (with their protection, from the segment's
 * flags). */
static int find_segments(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  segments *s = arg;
  if (!info->dlpi_name || strcmp(info->dlpi_name, s->path) != 0)
    return 0;
  s->found = 1;
  for (size_t i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || ph->p_filesz == 0)
      continue;
    if (s->n == s->max || ph->p_vaddr % s->page != ph->p_offset % s->page) {
      s->overflow = 1;
      return 1;
    }
    uintptr_t start = (info->dlpi_addr + ph->p_vaddr) & ~(s->page - 1);
    uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_filesz + s->page - 1) & ~(s->page - 1);
    s->out[s->n++] =
        (vma){start, end, ph->p_offset & ~(uint64_t)(s->page - 1),
              (ph->p_flags & PF_R ? PROT_READ : 0) | (ph->p_flags & PF_W ? PROT_WRITE : 0) |
                  (ph->p_flags & PF_X ? PROT_EXEC : 0)};
  }
  return 1;
}

/* Whether another segment maps the page at `addr` too (segments that share
 * a page keep it where the loader put it). */
static int page_shared(const vma *vmas, size_t n, size_t self, uintptr_t addr) {
  for (size_t i = 0; i < n; i++)
    if (i != self && addr >= vmas[i].start && addr < vmas[i].end)
      return 1;
  return 0;
}

struct extremap_plan {
  size_t npages, page;
  off_t size;          /* the memfd's */
  unsigned char *keep; /* per memfd page: it must stay */
};

extremap_plan *extremap_remap(const char *path, int memfd, int file_fd, uint64_t file_offset,
                              char *err, size_t errlen) {
  long ps = sysconf(_SC_PAGESIZE);
  struct stat st;
  if (ps <= 0 || file_offset % (uint64_t)ps != 0) {
    fail(err, errlen, "the stored object is not page-aligned in the file");
    return NULL;
  }
  if (fstat(memfd, &st) != 0) {
    fail(err, errlen, "fstat: %s", strerror(errno));
    return NULL;
  }
  vma vmas[MAX_VMAS];
  segments seg = {path, (uintptr_t)ps, vmas, MAX_VMAS, 0, 0, 0};
  dl_iterate_phdr(find_segments, &seg);
  if (!seg.found || seg.overflow) {
    fail(err, errlen, "%s", seg.found ? "unexpected segments" : "not loaded");
    return NULL;
  }
  size_t nvmas = seg.n;
  size_t npages = ((size_t)st.st_size + (size_t)ps - 1) / (size_t)ps;
  /* File pages that must stay in the memfd: mapped past its end (the bytes
   * beyond it differ in app.bin), or swapped out. */
  extremap_plan *plan = malloc(sizeof(*plan));
  unsigned char *keep = calloc(npages ? npages : 1, 1);
  int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  uint64_t *flags = NULL;
  long rc = 0;
  if (!plan || !keep) {
    rc = fail(err, errlen, "out of memory");
    goto done;
  }
  if (pagemap < 0) {
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
                  page_at + (uint64_t)ps > (uint64_t)st.st_size ||
                  page_shared(vmas, nvmas, v, m->start + i * (size_t)ps);
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
            next_at + (uint64_t)ps > (uint64_t)st.st_size ||
            page_shared(vmas, nvmas, v, m->start + j * (size_t)ps))
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
done:
  if (pagemap >= 0)
    close(pagemap);
  free(flags);
  if (rc != 0) {
    free(keep);
    free(plan);
    return NULL;
  }
  *plan = (extremap_plan){npages, (size_t)ps, st.st_size, keep};
  return plan;
}

long extremap_free_pages(const extremap_plan *plan, int memfd) {
  long freed = 0;
  size_t ps = plan->page;
  for (size_t p = 0; p < plan->npages;) {
    if (plan->keep[p]) {
      p++;
      continue;
    }
    size_t q = p + 1;
    while (q < plan->npages && !plan->keep[q])
      q++;
    off_t len = (off_t)((q - p) * ps);
    if ((off_t)(p * ps) + len > plan->size)
      len = plan->size - (off_t)(p * ps);
    if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(p * ps), len) != 0)
      return errno > 0 ? -errno : -EIO;
    freed += (long)len;
    p = q;
  }
  return freed;
}

void extremap_plan_free(extremap_plan *plan) {
  if (plan)
    free(plan->keep);
  free(plan);
}
