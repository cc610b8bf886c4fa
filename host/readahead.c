#include "readahead.h"

#include <assert.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define READAHEAD_MAX_RANGES 64
#define READAHEAD_CHUNK ((size_t)1 << 20)

/* A loadable segment's file-backed part: page-aligned, mapped at `addr`
 * from `offset` of the file. */
typedef struct {
  char path[256]; /* "" for the main program (/proc/self/exe) */
  int fd;         /* the file's descriptor: the caller's, or opened by the path */
  int owned;      /* fd was opened here (the first range of its path) */
  uintptr_t addr;
  off_t offset;
  size_t len;
  size_t next; /* pages done */
} readahead_range;

typedef struct {
  readahead_range ranges[READAHEAD_MAX_RANGES];
  size_t count;
  uintptr_t page;
} readahead_plan;

static int plan_object(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  readahead_plan *plan = arg;
  const char *name = info->dlpi_name ? info->dlpi_name : "";
  /* The main program has no name here; a name that is not a path (the
   * vDSO's) has no file. */
  if ((name[0] && name[0] != '/') || strlen(name) >= sizeof(plan->ranges[0].path))
    return 0;
  for (int i = 0; i < info->dlpi_phnum && plan->count < READAHEAD_MAX_RANGES; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || ph->p_filesz == 0)
      continue;
    /* The loader maps whole pages: p_vaddr and p_offset agree modulo the
     * page size (the ELF rule); the tail past p_filesz is bss. */
    uintptr_t skew = (uintptr_t)ph->p_offset & (plan->page - 1);
    if (((uintptr_t)ph->p_vaddr & (plan->page - 1)) != skew)
      continue;
    readahead_range *r = &plan->ranges[plan->count++];
    strcpy(r->path, name);
    r->fd = -1;
    r->addr = info->dlpi_addr + ph->p_vaddr - skew;
    r->offset = (off_t)(ph->p_offset - skew);
    r->len = (ph->p_filesz + skew + plan->page - 1) & ~(plan->page - 1);
  }
  return 0;
}

/* Reads the pages of the next window of `r` (READAHEAD_CHUNK) that are not
 * in the page cache yet (mincore): on a warm cache it reads nothing.
 * Returns 0 when the range is done. */
static int read_step(readahead_range *r, uintptr_t page, char *buf, unsigned char *vec) {
  size_t pages = r->len / page, window = READAHEAD_CHUNK / page;
  if (r->fd < 0 || r->next >= pages)
    return 0;
  size_t n = pages - r->next < window ? pages - r->next : window;
  if (mincore((void *)(r->addr + r->next * page), n * page, vec) != 0)
    memset(vec, 0, n); /* unknown: read it all */
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && !(vec[j] & 1))
      j++;
    if (j > i &&
        pread(r->fd, buf, (j - i) * page, r->offset + (off_t)((r->next + i) * page)) <= 0) {
      r->next = pages; /* an error: the faults read what is there */
      return 0;
    }
    i = j + 1; /* past the cached page that ended the run */
  }
  r->next += n;
  return r->next < pages;
}

/* One pass per process, in static storage: a fork() during the pass leaves
 * its child nothing allocated to lose (but the descriptors, which are
 * close-on-exec; readahead_wait() is for a caller that forks). */
static readahead_plan the_plan;
static char the_buf[READAHEAD_CHUNK];
static unsigned char the_vec[READAHEAD_CHUNK / 512]; /* pages of 512 bytes and up */
static atomic_int busy;

/* The ranges in turns, a window of each at a time: the interpreter needs
 * the host's code and the start-up imports at once, from the start. */
static void *readahead_main(void *arg) {
  readahead_plan *plan = arg;
  for (size_t i = 0; i < plan->count; i++) {
    readahead_range *r = &plan->ranges[i];
    if (r->fd >= 0)
      continue; /* the caller's */
    for (size_t k = 0; k < i && r->fd < 0; k++)
      if (plan->ranges[k].owned && strcmp(plan->ranges[k].path, r->path) == 0)
        r->fd = plan->ranges[k].fd;
    if (r->fd < 0) {
      r->fd = open(r->path[0] ? r->path : "/proc/self/exe", O_RDONLY | O_CLOEXEC);
      r->owned = r->fd >= 0;
    }
  }
  for (int more = 1; more;) {
    more = 0;
    for (size_t i = 0; i < plan->count; i++)
      more |= read_step(&plan->ranges[i], plan->page, the_buf, the_vec);
  }
  for (size_t i = 0; i < plan->count; i++)
    if (plan->ranges[i].owned)
      close(plan->ranges[i].fd);
  atomic_store(&busy, 0);
  return NULL;
}

void readahead_start(const void *map, int fd, off_t offset, size_t len) {
  if (atomic_exchange(&busy, 1))
    return; /* a pass is under way */
  readahead_plan *plan = &the_plan;
  memset(plan, 0, sizeof(*plan));
  long ps = sysconf(_SC_PAGESIZE);
  plan->page = ps >= 512 ? (uintptr_t)ps : 4096;
  assert(READAHEAD_CHUNK / plan->page <= sizeof(the_vec));
  dl_iterate_phdr(plan_object, plan);
  uintptr_t skew = (uintptr_t)map & (plan->page - 1);
  if (len > 0 && fd >= 0 && plan->count < READAHEAD_MAX_RANGES &&
      ((uintptr_t)offset & (plan->page - 1)) == skew) {
    readahead_range *r = &plan->ranges[plan->count++];
    r->fd = fd;
    r->addr = (uintptr_t)map - skew;
    r->offset = offset - (off_t)skew;
    r->len = (len + skew + plan->page - 1) & ~(plan->page - 1);
  }
  pthread_attr_t attr;
  pthread_t thread;
  int started = 0;
  if (pthread_attr_init(&attr) == 0) {
    (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* Signals stay with the threads that handle them (Python's main thread). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    started = pthread_create(&thread, &attr, readahead_main, plan) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
  }
  if (!started)
    atomic_store(&busy, 0);
}

void readahead_wait(void) {
  struct timespec nap = {0, 1000 * 1000};
  while (atomic_load(&busy))
    nanosleep(&nap, NULL);
}
