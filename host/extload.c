#include "extload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

int extload_debug = 0;

static int memfd_state;      /* code: 0 unknown, 1 usable, -1 unusable */
static int data_memfd_state; /* data: 0 usable so far, -1 unusable (atomic) */
static int memfd_errno;      /* why memfd_create failed (0: /proc is what is missing) */
static char *private_dir;
static pid_t private_dir_owner; /* the process that made it (and removes it at exit) */
static int private_dir_noexec;  /* on a file system mounted noexec */
static unsigned private_seq;
/* Guards private_dir and private_seq: data files are made from any thread.
 * Held across fork() (extload_fork_*), so a child never inherits it held. */
static pthread_mutex_t private_lock = PTHREAD_MUTEX_INITIALIZER;

void extload_fork_prepare(void) { pthread_mutex_lock(&private_lock); }

void extload_fork_parent(void) { pthread_mutex_unlock(&private_lock); }

void extload_fork_child(void) { pthread_mutex_unlock(&private_lock); }

/* "Function not implemented (ENOSYS)" */
static const char *errno_text(int err, char *buf, size_t len) {
  const char *name = strerrorname_np(err);
  snprintf(buf, len, "%s (%s)", strerror(err), name ? name : "?");
  return buf;
}

static const char *basename_of(const char *name) {
  const char *slash = strrchr(name, '/');
  return slash ? slash + 1 : name;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

static int memfd_open(const char *name, int code) {
  /* Kernels since 6.3 know MFD_EXEC/MFD_NOEXEC_SEAL and may require one of
   * them (vm.memfd_noexec); older ones reject the unknown flag with EINVAL. */
  unsigned base = MFD_CLOEXEC | (code ? 0 : MFD_ALLOW_SEALING);
  int fd = memfd_create(name, base | (code ? MFD_EXEC : MFD_NOEXEC_SEAL));
  if (fd < 0 && errno == EINVAL)
    fd = memfd_create(name, base);
  if (fd < 0 && errno != EMFILE && errno != ENFILE && errno != ENOMEM)
    __atomic_store_n(&memfd_errno, errno, __ATOMIC_RELAXED);
  return fd;
}

static void private_dir_cleanup(void) {
  /* A fork() child (a worker, multiprocessing's) shares the directory: only
   * its maker removes it. */
  if (private_dir && getpid() == private_dir_owner) {
    DIR *d = opendir(private_dir);
    if (d) {
      for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (de->d_name[0] != '.')
          unlinkat(dirfd(d), de->d_name, 0);
      closedir(d);
    }
    rmdir(private_dir);
    free(private_dir);
    private_dir = NULL;
  }
}

/* Why there is no in-memory file: "memfd_create failed: <reason>" or
 * "/proc is not mounted". */
static const char *why_no_memfd(char *buf, size_t len) {
  int err = __atomic_load_n(&memfd_errno, __ATOMIC_RELAXED);
  if (!err)
    return "/proc/self/fd is unavailable";
  char text[128];
  snprintf(buf, len, "memfd_create failed: %s", errno_text(err, text, sizeof(text)));
  return buf;
}

/* Makes the private directory, or says in err (one line) why none could be
 * made, with errno set to memfd_create's error (EACCES if memfd worked).
 * Directories on a file system mounted noexec (Docker's /dev/shm and
 * --tmpfs mounts) are tried last: data can be read from them, but the
 * dynamic loader cannot map code from them. */
static int private_dir_create(char *err, size_t errlen) {
  static int registered;
  const char *candidates[] = {getenv("TMPDIR"), "/tmp", "/dev/shm", "/var/tmp"};
  enum { N = sizeof(candidates) / sizeof(candidates[0]) };
  char tried[1024] = "", why[192], text[128];
  size_t used = 0;
  int last = EACCES, noexec[N];
  for (size_t i = 0; i < N; i++) {
    struct statvfs sv;
    noexec[i] = candidates[i] && statvfs(candidates[i], &sv) == 0 && (sv.f_flag & ST_NOEXEC);
  }
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < N; i++) {
      if (!candidates[i] || !*candidates[i] || noexec[i] != pass)
        continue;
      char tmpl[4096];
      snprintf(tmpl, sizeof(tmpl), "%s/appbin-XXXXXX", candidates[i]);
      if (mkdtemp(tmpl)) { /* mkdtemp creates it 0700 */
        private_dir = strdup(tmpl);
        if (!private_dir) {
          rmdir(tmpl);
          snprintf(err, errlen, "out of memory");
          errno = ENOMEM;
          return -1;
        }
        private_dir_noexec = noexec[i];
        private_dir_owner = getpid();
        if (!registered)
          registered = atexit(private_dir_cleanup) == 0;
        if (extload_debug)
          fprintf(stderr, "appbin: debug: memfd or /proc unavailable, using %s (%s)%s\n",
                  private_dir, why_no_memfd(why, sizeof(why)),
                  noexec[i] ? "; noexec: no code can load from it" : "");
        return 0;
      }
      last = errno;
      int n = snprintf(tried + used, sizeof(tried) - used, "%s%s: %s", used ? ", " : "",
                       candidates[i], errno_text(last, text, sizeof(text)));
      if (n > 0 && (size_t)n < sizeof(tried) - used)
        used += (size_t)n;
    }
  }
  snprintf(err, errlen,
           "%s, and no writable temporary directory was found (%s); set TMPDIR to a writable "
           "directory or mount a tmpfs on /tmp",
           why_no_memfd(why, sizeof(why)), used ? tried : "none to try");
  int mfd = __atomic_load_n(&memfd_errno, __ATOMIC_RELAXED);
  errno = mfd ? mfd : last;
  return -1;
}

/* A new file of the private directory, open for writing, its path in path;
 * `code`: one the dynamic loader will map. */
static int private_file_create(const char *name, int code, char *path, size_t pathlen, char *err,
                               size_t errlen) {
  pthread_mutex_lock(&private_lock);
  if (!private_dir && private_dir_create(err, errlen) != 0) {
    int saved = errno;
    pthread_mutex_unlock(&private_lock);
    errno = saved;
    return -1;
  }
  if (code && private_dir_noexec) {
    char why[192];
    snprintf(err, errlen,
             "%s, and the only writable temporary directory, %s, is on a file system mounted "
             "noexec, where code cannot be mapped; set TMPDIR to a writable directory mounted "
             "exec, or mount one on /tmp (docker run --tmpfs /tmp:exec)",
             why_no_memfd(why, sizeof(why)), private_dir);
    pthread_mutex_unlock(&private_lock);
    errno = EACCES;
    return -1;
  }
  /* A fresh name per file: the loader must never see one path twice, and a
   * fork() child shares the directory (and the counter's value). */
  snprintf(path, pathlen, "%s/%ld-%u-%s", private_dir, (long)getpid(), private_seq++,
           basename_of(name));
  pthread_mutex_unlock(&private_lock);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0500);
  if (fd < 0)
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
  return fd;
}

static int private_file_write(const char *name, const void *data, size_t len, char *path,
                              size_t pathlen, char *err, size_t errlen) {
  int fd = private_file_create(name, 1, path, pathlen, err, errlen);
  if (fd < 0)
    return -1;
  if (write_all(fd, data, len) != 0) {
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    close(fd);
    unlink(path);
    return -1;
  }
  close(fd);
  return 0;
}

/* A new memfd for code, its /proc path in `path`; -1 where memfd cannot
 * serve code (the first call probes /proc: threads racing to it find the
 * same answer) or for want of descriptors or memory. */
static int code_memfd(const char *name, char *path, size_t pathlen) {
  int state = __atomic_load_n(&memfd_state, __ATOMIC_RELAXED);
  if (state < 0)
    return -1;
  int fd = memfd_open(basename_of(name), 1);
  if (fd < 0) {
    if (errno != EMFILE && errno != ENFILE && errno != ENOMEM)
      __atomic_store_n(&memfd_state, -1, __ATOMIC_RELAXED); /* not for want of resources */
    return -1;
  }
  snprintf(path, pathlen, "/proc/self/fd/%d", fd);
  if (state == 0) {
    state = access(path, F_OK) == 0 ? 1 : -1;
    __atomic_store_n(&memfd_state, state, __ATOMIC_RELAXED);
    if (state < 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

int extload_write(const char *name, const void *data, size_t len, char *path, size_t pathlen,
                  char *err, size_t errlen) {
  int fd = code_memfd(name, path, pathlen);
  if (fd >= 0) {
    if (write_all(fd, data, len) == 0)
      return 0;
    snprintf(err, errlen, "cannot write in-memory file for %s: %s", name, strerror(errno));
    close(fd);
    return -1;
  }
  if (private_file_write(name, data, len, path, pathlen, err, errlen) == 0)
    return 0;
  char why[1024];
  snprintf(why, sizeof(why), "%s", err);
  snprintf(err, errlen, "cannot load the native code of %s: %s", name, why);
  return -1;
}

int extload_code_fd(const char *name) {
  char path[64];
  int fd = code_memfd(name, path, sizeof(path));
  if (fd < 0)
    return -1;
  /* Out of the low numbers a program may count on getting back (close(0),
   * then open()), since another thread closes it if it goes unused. */
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur >= 256) {
    rlim_t base = lim.rlim_cur / 2 < 1024 ? lim.rlim_cur / 2 : 1024;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, (int)base);
    if (high >= 0) {
      close(fd);
      fd = high;
    }
  }
  return fd;
}

int extload_write_fd(int fd, const char *name, const void *data, size_t len, char *path,
                     size_t pathlen, char *err, size_t errlen) {
  if (write_all(fd, data, len) != 0) {
    /* The errno's name, not strerror's text: that may load a translation
     * (malloc), and the copying thread allocates nothing. */
    const char *why = strerrorname_np(errno);
    snprintf(err, errlen, "cannot write in-memory file for %s: %s", name, why ? why : "error");
    return -1;
  }
  extload_fd_path(fd, path, pathlen);
  return 0;
}

void extload_fd_path(int fd, char *path, size_t pathlen) {
  snprintf(path, pathlen, "/proc/self/fd/%d", fd);
}

int extload_memfd_of(const char *path) {
  int fd;
  char tail;
  return sscanf(path, "/proc/self/fd/%d%c", &fd, &tail) == 1 ? fd : -1;
}

void extload_discard(const char *path) {
  int fd = extload_memfd_of(path);
  if (fd >= 0)
    close(fd);
  else
    unlink(path);
}

void extload_forget(const char *path) {
  int fd = extload_memfd_of(path);
  if (fd >= 0)
    close(fd);
}

/* ---- read-only data ------------------------------------------------------ */

/* Files up to this size are filled from a heap buffer with write(): cheaper
 * than faulting in a shared mapping page by page (a third less time per open
 * for the typical small data or source file); larger ones are filled in
 * place through a mapping, without a second copy of their bytes in memory. */
#define FILL_BY_WRITE_MAX (1u << 20)

/* Sizes the file and lets `fill` write its bytes. */
static int fill_file(int fd, size_t len, extload_fill_fn fill, void *ctx, const char *name,
                     char *err, size_t errlen) {
  if (len == 0)
    return 0;
  if (len <= FILL_BY_WRITE_MAX) {
    void *buf = malloc(len);
    if (!buf) {
      snprintf(err, errlen, "out of memory reading %s", name);
      errno = ENOMEM;
      return -1;
    }
    int rc = fill(buf, ctx, err, errlen);
    if (rc == 0 && write_all(fd, buf, len) != 0) {
      snprintf(err, errlen, "cannot write an in-memory file for %s: %s", name, strerror(errno));
      rc = -1;
    }
    int saved = errno;
    free(buf);
    errno = saved;
    return rc;
  }
  if (ftruncate(fd, (off_t)len) != 0) {
    snprintf(err, errlen, "cannot size an in-memory file for %s: %s", name, strerror(errno));
    return -1;
  }
  void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    snprintf(err, errlen, "cannot map %zu bytes for %s: %s", len, name, strerror(errno));
    return -1;
  }
  int rc = fill(map, ctx, err, errlen);
  int saved = errno;
  munmap(map, len);
  errno = saved;
  return rc;
}

/* Returns the descriptor, -1 with errno set, or -2 when memfd_create itself
 * is unavailable (not merely out of descriptors or memory). */
static int data_memfd(const char *name, size_t len, extload_fill_fn fill, void *ctx, int cloexec,
                      char *err, size_t errlen) {
  int fd = memfd_open(basename_of(name), 0);
  if (fd < 0) {
    if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
      snprintf(err, errlen, "cannot make an in-memory file for %s: %s", name, strerror(errno));
      return -1;
    }
    return -2;
  }
  /* write() left the offset at the end: the reader starts at 0 (the /proc
   * reopen below would too, not the memfd itself where /proc is missing). */
  if (fill_file(fd, len, fill, ctx, name, err, errlen) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  /* Sealed: nobody can change the bytes, even through a writable descriptor
   * of the same file (where /proc is missing, the caller gets this one). */
  (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  char proc[64];
  snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
  int ro = open(proc, O_RDONLY | (cloexec ? O_CLOEXEC : 0));
  if (ro >= 0) {
    close(fd);
    return ro;
  }
  if (!cloexec)
    (void)fcntl(fd, F_SETFD, 0);
  return fd;
}

/* Without memfd: an unlinked file of the private directory, written with
 * write() (a full disk is an error, not SIGBUS through a mapping). */
static int data_private_file(const char *name, size_t len, extload_fill_fn fill, void *ctx,
                             int cloexec, char *err, size_t errlen) {
  void *buf = malloc(len ? len : 1);
  if (!buf) {
    snprintf(err, errlen, "out of memory reading %s", name);
    errno = ENOMEM;
    return -1;
  }
  int ro = -1, saved = 0;
  char path[4096];
  int fd = fill(buf, ctx, err, errlen) == 0
               ? private_file_create(name, 0, path, sizeof(path), err, errlen)
               : -1;
  saved = errno;
  if (fd >= 0) {
    if (write_all(fd, buf, len) != 0) {
      saved = errno;
      snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    } else if ((ro = open(path, O_RDONLY | (cloexec ? O_CLOEXEC : 0))) < 0) {
      saved = errno;
      snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    }
    close(fd);
    unlink(path);
  }
  free(buf);
  errno = saved;
  return ro;
}

int extload_empty_fd(int cloexec) {
  int fd = memfd_open("appbin-dir", 0);
  if (fd < 0)
    return -1;
  (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  if (!cloexec)
    (void)fcntl(fd, F_SETFD, 0);
  return fd;
}

int extload_data_fd(const char *name, size_t len, extload_fill_fn fill, void *ctx, int cloexec,
                    char *err, size_t errlen) {
  /* A member larger than the machine's memory cannot be materialised; say so
   * instead of letting page faults on the memfd meet the OOM killer. */
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if ((uint64_t)len > (uint64_t)SIZE_MAX / 2 ||
      (pages > 0 && page > 0 && (uint64_t)len > (uint64_t)pages * (uint64_t)page)) {
    snprintf(err, errlen, "%s (%zu bytes) is larger than this machine's memory", name, len);
    errno = ENOMEM;
    return -1;
  }
  if (__atomic_load_n(&data_memfd_state, __ATOMIC_RELAXED) == 0) {
    int fd = data_memfd(name, len, fill, ctx, cloexec, err, errlen);
    if (fd != -2)
      return fd;
    __atomic_store_n(&data_memfd_state, -1, __ATOMIC_RELAXED);
    if (extload_debug)
      fprintf(stderr, "appbin: debug: memfd unavailable for data files, using a private dir\n");
  }
  return data_private_file(name, len, fill, ctx, cloexec, err, errlen);
}
