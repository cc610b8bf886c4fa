#include "extload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

int extload_debug = 0;

static int memfd_state; /* 0 unknown, 1 usable, -1 unusable */
static char *private_dir;
static unsigned private_seq;

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

static int memfd_open(const char *name, extload_kind kind) {
  /* Kernels since 6.3 know MFD_EXEC/MFD_NOEXEC_SEAL and may require one of
   * them (vm.memfd_noexec); older ones reject the unknown flag with EINVAL. */
  unsigned flags = MFD_CLOEXEC | (kind == EXTLOAD_CODE ? MFD_EXEC : MFD_NOEXEC_SEAL);
  int fd = memfd_create(name, flags);
  if (fd < 0 && errno == EINVAL)
    fd = memfd_create(name, MFD_CLOEXEC);
  return fd;
}

static void private_dir_cleanup(void) {
  if (private_dir) {
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

static int private_dir_create(char *err, size_t errlen) {
  const char *candidates[] = {getenv("TMPDIR"), "/tmp", "/dev/shm", "/var/tmp"};
  for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
    if (!candidates[i] || !*candidates[i])
      continue;
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/appbin-XXXXXX", candidates[i]);
    if (mkdtemp(tmpl)) { /* mkdtemp creates it 0700 */
      private_dir = strdup(tmpl);
      if (!private_dir) {
        rmdir(tmpl);
        break;
      }
      atexit(private_dir_cleanup);
      if (extload_debug)
        fprintf(stderr, "appbin: debug: memfd or /proc unavailable, using %s\n", private_dir);
      return 0;
    }
  }
  snprintf(err, errlen,
           "cannot load native code: memfd_create or /proc is unavailable and no writable "
           "temporary directory was found (set TMPDIR or mount a tmpfs on /tmp)");
  return -1;
}

static int private_file_write(const char *name, const void *data, size_t len, char *path,
                              size_t pathlen, char *err, size_t errlen) {
  if (!private_dir && private_dir_create(err, errlen) != 0)
    return -1;
  /* A fresh name per file: the loader must never see one path twice. */
  snprintf(path, pathlen, "%s/%u-%s", private_dir, private_seq++, basename_of(name));
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0500);
  if (fd < 0) {
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
  }
  if (write_all(fd, data, len) != 0) {
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    close(fd);
    unlink(path);
    return -1;
  }
  close(fd);
  return 0;
}

int extload_write(const char *name, const void *data, size_t len, extload_kind kind, char *path,
                  size_t pathlen, char *err, size_t errlen) {
  if (memfd_state >= 0) {
    int fd = memfd_open(basename_of(name), kind);
    if (fd >= 0) {
      snprintf(path, pathlen, "/proc/self/fd/%d", fd);
      if (memfd_state == 0)
        memfd_state = access(path, F_OK) == 0 ? 1 : -1;
      if (memfd_state > 0 && write_all(fd, data, len) == 0)
        return 0;
      if (memfd_state > 0) {
        snprintf(err, errlen, "cannot write in-memory file for %s: %s", name, strerror(errno));
        close(fd);
        return -1;
      }
      close(fd);
    } else {
      memfd_state = -1;
    }
  }
  return private_file_write(name, data, len, path, pathlen, err, errlen);
}
