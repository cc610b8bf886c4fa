#include "nativeprep.h"

#include "archfs_libc.h"
#include "extload.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
  const zipindex_entry **list; /* in load order */
  atomic_uchar *made;          /* per list item: this thread made the copy it has */
  atomic_int *fds;             /* per list item: the file for its copy, until taken */
  atomic_int fd_filling;       /* the file taken and being filled, or -1 (also once the
                                  copy owns it: archfs_code_prepare) */
  size_t count;
  atomic_size_t made_count; /* copies made, discarded ones included */
  atomic_size_t discarded;
  atomic_int started; /* nativeprep_start() ran (once per process image) */
  atomic_int stopping;
  atomic_int running;  /* made and not yet joined */
  atomic_int finished; /* its work is done */
  pthread_t thread;
  pid_t thread_pid; /* a fork's child has no thread to join */
} g;

/* Closes the files made for copies the thread has not taken: when it is
 * through, and in a fork's child (they are the parent's business). */
static void close_untaken_files(void) {
  for (size_t k = 0; k < g.count; k++) {
    int fd = atomic_exchange(&g.fds[k], -1);
    if (fd >= 0)
      close(fd);
  }
}

/* In a fork's child the file being filled is never finished either (the
 * copy may even be made: archfs's child handler, which runs first, closed
 * it then, and a second close fails harmlessly). */
static void fork_child(void) {
  close_untaken_files();
  int fd = atomic_exchange(&g.fd_filling, -1);
  if (fd >= 0)
    close(fd);
}

int nativeprep_init(zipindex *zi, const manifest *mf) {
  const char *line = manifest_get(mf, "startup.native");
  if (!line)
    return 0;
  size_t words = 0;
  for (const char *p = line; *p;) {
    p += strspn(p, " ");
    size_t n = strcspn(p, " ");
    words += n > 0;
    p += n;
  }
  if (words == 0)
    return 0;
  g.list = calloc(words, sizeof(*g.list));
  g.made = calloc(words, sizeof(*g.made));
  g.fds = calloc(words, sizeof(*g.fds));
  if (!g.list || !g.made || !g.fds || pthread_atfork(NULL, NULL, fork_child) != 0) {
    free(g.list);
    free(g.made);
    free(g.fds);
    g.list = NULL;
    g.made = NULL;
    g.fds = NULL;
    return -1;
  }
  for (size_t k = 0; k < words; k++)
    atomic_init(&g.fds[k], -1);
  atomic_init(&g.fd_filling, -1);
  for (const char *p = line; *p;) {
    p += strspn(p, " ");
    size_t n = strcspn(p, " ");
    const zipindex_entry *e = n ? zipindex_find(zi, p, n) : NULL;
    if (e && e->size > 0)
      g.list[g.count++] = e;
    p += n;
  }
  return 0;
}

/* Bytes of the copies this thread made (of the first `upto` items) that no
 * one has used yet. */
static size_t unused_bytes(size_t upto) {
  size_t bytes = 0;
  for (size_t k = 0; k < upto; k++)
    if (atomic_load(&g.made[k]) && archfs_code_state(g.list[k]) == ARCHFS_CODE_UNUSED)
      bytes += (size_t)g.list[k]->size;
  return bytes;
}

/* Waits for a use (or a stop) for up to NATIVEPREP_IDLE_MS; 0 when none came. */
static int wait_for_use(unsigned *events) {
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += NATIVEPREP_IDLE_MS / 1000;
  deadline.tv_nsec += (long)(NATIVEPREP_IDLE_MS % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  unsigned before = *events;
  archfs_code_wait(events, &deadline);
  return *events != before;
}

static void *prep_main(void *arg) {
  (void)arg;
  unsigned events = 0;
  int idle = 0;
  for (size_t k = 0; k < g.count && !idle && !atomic_load(&g.stopping); k++) {
    const zipindex_entry *e = g.list[k];
    if (atomic_load(&g.fds[k]) < 0 || archfs_code_state(e) != ARCHFS_CODE_NONE)
      continue; /* not for this thread (nativeprep_start), or the importer got there first */
    while (unused_bytes(k) + (size_t)e->size > NATIVEPREP_AHEAD)
      if (!wait_for_use(&events) || atomic_load(&g.stopping)) {
        idle = 1;
        break;
      }
    char err[512];
    /* A failure (damage included) is the importer's to report, when it
     * makes the copy itself. */
    int fd = -1;
    if (!idle && !atomic_load(&g.stopping)) {
      atomic_store(&g.fd_filling, atomic_load(&g.fds[k]));
      fd = atomic_exchange(&g.fds[k], -1);
    }
    if (fd >= 0 && archfs_code_prepare(e, &g.fd_filling, err, sizeof(err)) == 1) {
      atomic_store(&g.made[k], 1);
      atomic_fetch_add(&g.made_count, 1);
    } else if (fd >= 0) {
      /* Out of fd_filling before the number can be reused: a fork's child
       * closes what it holds. */
      atomic_store(&g.fd_filling, -1);
      close(fd);
    }
  }
  close_untaken_files();
  while (!idle && !atomic_load(&g.stopping) && unused_bytes(g.count) > 0)
    idle = !wait_for_use(&events);
  if (!atomic_load(&g.stopping))
    for (size_t k = 0; k < g.count; k++)
      if (atomic_load(&g.made[k]) && archfs_code_discard(g.list[k])) {
        atomic_store(&g.made[k], 0);
        atomic_fetch_add(&g.discarded, 1);
      }
  if (extload_debug) {
    nativeprep_info info;
    nativeprep_get_info(&info);
    fprintf(stderr,
            "appbin: debug: %zu of %zu start-up shared objects copied ahead, %zu used, %zu "
            "freed unused\n",
            info.made, info.listed, info.used, info.discarded);
  }
  atomic_store(&g.finished, 1);
  return NULL;
}

void nativeprep_start(void) {
  if (g.count == 0 || atomic_exchange(&g.started, 1) || archfs_code_init() != 0)
    return;
  /* The files are made here, in the importing thread, as the importer's
   * own are: the other thread creates no descriptor a program could have
   * expected to get (it closes only these, which are high). A compressed
   * member would hold the archive's decompression context for the length
   * of a large frame, and one larger than the bound is the importer's to
   * copy, if it ever needs it. */
  size_t files = 0;
  for (size_t k = 0; k < g.count && files < NATIVEPREP_MAX_FILES; k++) {
    const zipindex_entry *e = g.list[k];
    if (e->method != ZIPINDEX_STORED || e->size > NATIVEPREP_AHEAD ||
        archfs_code_state(e) != ARCHFS_CODE_NONE)
      continue;
    int fd = extload_code_fd(e->name);
    if (fd < 0)
      break; /* no memfd: the importer's own copies say why */
    atomic_store(&g.fds[k], fd);
    files++;
  }
  if (files == 0)
    return;
  /* Signals stay with the threads that handle them (Python's main thread). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  g.thread_pid = getpid();
  if (pthread_create(&g.thread, NULL, prep_main, NULL) == 0)
    atomic_store(&g.running, 1);
  else
    close_untaken_files();
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void nativeprep_stop(void) {
  if (!atomic_load(&g.running) || g.thread_pid != getpid())
    return;
  atomic_store(&g.stopping, 1);
  archfs_code_wake();
  pthread_join(g.thread, NULL);
  atomic_store(&g.running, 0);
}

void nativeprep_get_info(nativeprep_info *info) {
  memset(info, 0, sizeof(*info));
  info->listed = g.count;
  info->made = atomic_load(&g.made_count);
  for (size_t k = 0; k < g.count; k++)
    info->used += atomic_load(&g.made[k]) && archfs_code_state(g.list[k]) == ARCHFS_CODE_USED;
  info->discarded = atomic_load(&g.discarded);
  info->running = atomic_load(&g.running) && !atomic_load(&g.finished) && g.thread_pid == getpid();
}
