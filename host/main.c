/*
 * app.bin: a Python ASGI application and its whole environment in one file.
 *
 * main() finds the payload appended to this executable, checks its index,
 * reads the command line, and hands over to the interpreter (python mode),
 * the server (the default) or the health probe.
 *
 * What is hashed when (host/payload.h has the format): the index (central
 * directory) always, before anything is read from the archive; a member the
 * first time it is read; and, for a server, every member, in a background
 * thread started here that the server waits for before it listens (a
 * supervisor of several workers checks before it forks them). Damage found
 * at any point ends the process with one line naming the member. In python
 * mode a second thread checks members ahead of the imports once there are
 * more than a few, but only what the program reads must be intact.
 */
#include "cli.h"
#include "healthcheck.h"
#include "interp.h"
#include "manifest.h"
#include "ops.h"
#include "payload.h"
#include "pid1.h"
#include "prefault.h"
#include "serve.h"
#include "sha256.h"
#include "version.h"
#include "workers.h"
#include "zipindex.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MANIFEST_MEMBER "appbin/manifest"

/* The path of this executable: /proc/self/exe, else argv[0] resolved. */
static int find_self(const char *argv0, char *out, size_t outlen) {
  ssize_t n = readlink("/proc/self/exe", out, outlen - 1);
  if (n > 0) {
    out[n] = '\0';
    return 0;
  }
  char resolved[PATH_MAX];
  if (strchr(argv0, '/') && realpath(argv0, resolved)) {
    snprintf(out, outlen, "%s", resolved);
    return 0;
  }
  const char *path = getenv("PATH");
  for (const char *p = path; p && *p;) {
    size_t len = strcspn(p, ":");
    char candidate[PATH_MAX];
    snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)len, p, argv0);
    if (access(candidate, X_OK) == 0 && realpath(candidate, resolved)) {
      snprintf(out, outlen, "%s", resolved);
      return 0;
    }
    p += len + (p[len] == ':');
  }
  return -1;
}

static int read_manifest(zipindex *zi, manifest *mf, char *err, size_t errlen) {
  const zipindex_entry *e = zipindex_find(zi, MANIFEST_MEMBER, strlen(MANIFEST_MEMBER));
  if (!e) {
    snprintf(err, errlen, "payload has no %s", MANIFEST_MEMBER);
    return -1;
  }
  if (e->size > 16 * 1024 * 1024) {
    snprintf(err, errlen, "payload manifest is too large");
    return -1;
  }
  char *text = malloc(e->size + 1);
  if (!text) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int rc = zipindex_read(zi, e, text, err, errlen);
  if (rc == 0)
    rc = manifest_parse(mf, text, e->size, err, errlen);
  free(text);
  if (rc != 0)
    return -1;
  const char *format = manifest_get(mf, "format");
  if (!format || strcmp(format, "2") != 0) {
    snprintf(err, errlen, "payload manifest format '%s' is not supported (this host reads 2)",
             format ? format : "(missing)");
    manifest_free(mf);
    return -1;
  }
  return 0;
}

static const char *damage_exe = "app.bin";

/* zipindex's damage handler: no byte of a damaged member may be used, and a
 * damaged app.bin must not go on running (nor serving), so it stops here,
 * from whichever thread found the damage. */
static void on_damage(const char *message) {
  char line[2048];
  int n = snprintf(line, sizeof(line), "app.bin: error: %s: %s\n", damage_exe, message);
  if (n > 0)
    (void)!write(STDERR_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
  _exit(1);
}

static void print_version(const payload *p, const manifest *mf) {
  printf("appbin %s\npython %s\n", APPBIN_VERSION, APPBIN_PYTHON_VERSION);
  if (!p->map) {
    printf("payload: none (this host reads format %d)\n", PAYLOAD_FORMAT_VERSION);
    return;
  }
  char hex[2 * SHA256_DIGEST_SIZE + 1];
  sha256_hex(p->trailer.index_sha256, hex);
  const char *packed_by = manifest_get(mf, "appbin_version");
  const char *py = manifest_get(mf, "python_version");
  const char *app = manifest_get(mf, "app");
  printf("payload: format %u, %zu bytes, index sha256 %s\n", p->trailer.version, p->archive_size,
         hex);
  printf("packed by: appbin-pack %s (stdlib %s)\n", packed_by ? packed_by : "?", py ? py : "?");
  printf("app: %s%s\n", app ? app : "(none)",
         app && manifest_get(mf, "factory") && strcmp(manifest_get(mf, "factory"), "1") == 0
             ? " (factory)"
             : "");
}

int main(int argc, char **argv) {
  const char *prog = "app.bin";
  char exe[PATH_MAX], err[1024];
  /* A server's SIGTERM and SIGINT stay blocked, so pending, until the runtime
   * has its handlers (_catch_early_signals unblocks them): as PID 1 (a
   * container) a signal with no handler is discarded, so a `docker stop`
   * in the first milliseconds was lost and the server went on to serve.
   * Python mode gets the mask back once its init is forked (pid1.c), other
   * commands once the command line is read. */
  sigset_t stop_signals, startup_mask;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, &startup_mask);
  if (find_self(argc > 0 ? argv[0] : "app.bin", exe, sizeof(exe)) != 0) {
    fprintf(stderr, "%s: error: cannot find my own executable file\n", prog);
    return 1;
  }

  /* Static: the verifier and nativeprep.h's thread read them up to the
   * process's end, exit() after main's return and from inside Python
   * (sys.exit) included. */
  static payload p;
  int rc = payload_open(&p, exe, err, sizeof(err));
  if (rc < 0) {
    fprintf(stderr, "%s: error: %s\n", prog, err);
    return 1;
  }
  int has_payload = rc == 0;
  static zipindex zi;
  static manifest mf;
  damage_exe = exe;
  if (has_payload) {
    if (zipindex_open_verified(&zi, p.archive, p.archive_size, p.trailer.index_sha256, err,
                               sizeof(err)) != 0) {
      fprintf(stderr, "%s: error: %s: %s\n", prog, exe, err);
      return 1;
    }
    zipindex_on_damage(&zi, on_damage);
    zipindex_release_behind(&zi); /* p.map is a read-only mapping of the file */
    if (read_manifest(&zi, &mf, err, sizeof(err)) != 0) {
      fprintf(stderr, "%s: error: %s: %s\n", prog, exe, err);
      return 1;
    }
  }

  cli_options opts;
  if (cli_parse(argc, argv, has_payload ? &mf : NULL, &opts, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s: error: %s\n", prog, err);
    return 2;
  }
  if (opts.mode != CLI_SERVE && opts.mode != CLI_PYTHON)
    sigprocmask(SIG_SETMASK, &startup_mask, NULL);
  switch (opts.mode) {
  case CLI_HELP:
    cli_print_help(stdout, prog);
    return 0;
  case CLI_VERSION:
    print_version(&p, &mf);
    return 0;
  case CLI_HEALTHCHECK:
    return healthcheck_run(&opts);
  case CLI_PYTHON:
  case CLI_SERVE:
    break;
  }
  if (!has_payload) {
    fprintf(stderr, "%s: error: %s has no payload: make an app.bin with appbin-pack\n", prog, exe);
    return 1;
  }
  int debug = opts.log_level <= LOG_DEBUG;
  /* As a container's PID 1, one process forks an init in front of itself
   * (pid1.c); a supervisor of workers is one already. */
  pid_t child = opts.mode == CLI_PYTHON || opts.workers <= 1 ? pid1_fork_init() : 0;
  if (child > 0) { /* the init: nothing of the archive stays mapped in it */
    zipindex_close(&zi);
    manifest_free(&mf);
    payload_close(&p);
    return pid1_run_init(child, &opts);
  }
  if (opts.mode == CLI_PYTHON) /* held until here: the init gets what came */
    sigprocmask(SIG_SETMASK, &startup_mask, NULL);
  /* A process that runs Python, while it is the only thread (the verifier
   * and the metrics thread come later); a supervisor of workers runs none. */
  if (opts.mode == CLI_PYTHON || opts.workers <= 1)
    prefault_program_data();
  if (opts.mode == CLI_PYTHON) {
    /* A program that imports more than the interpreter's own start-up gets
     * the other members checked in a second thread, ahead of its imports;
     * `python -c pass` and the like hash only what they read. */
    zipindex_verify_start_after(&zi, 16);
    /* Python sees argv[0] followed by what came after "python". */
    char **pyargv = calloc((size_t)opts.python_argc + 2, sizeof(*pyargv));
    if (!pyargv) {
      fprintf(stderr, "%s: error: out of memory\n", prog);
      return 1;
    }
    pyargv[0] = argv[0];
    memcpy(pyargv + 1, opts.python_argv, (size_t)opts.python_argc * sizeof(*pyargv));
    if (interp_start(exe, &p, &zi, &mf, INTERP_PYTHON, opts.python_argc + 1, pyargv, debug, &rc) !=
        0)
      return rc;
    return interp_run_python();
  }
  if ((rc = ops_prepare(&opts)) != 0)
    return rc;
  /* The server listens only once every byte is verified: the check runs
   * beside the interpreter's start-up (the runtime waits for it before it
   * binds), or, under a supervisor, before the workers are forked. */
  if (opts.workers > 1) {
    if (zipindex_verify_wait(&zi, err, sizeof(err)) != 0) {
      fprintf(stderr, "%s: error: %s: %s\n", prog, exe, err);
      return 1;
    }
    /* The supervisor reads nothing more: none of the checked pages stays
     * resident in it (the workers fault in what they import). */
    payload_release_pages(&p);
  } else {
    zipindex_verify_start(&zi); /* without a thread the runtime's wait checks */
  }
  if (opts.workers > 1) {
    int is_worker;
    rc = workers_run(&opts, &is_worker);
    if (!is_worker)
      return rc;
  }
  if (ops_start_serving(&opts, &zi) != 0)
    return 1;
  /* Start-up's reads drop nothing one by one: the runtime drops the whole
   * mapping once the server has started (_appbin.release_memory()). */
  zipindex_hold_releases(&zi, 1);
  if (interp_start(exe, &p, &zi, &mf, INTERP_SERVER, argc, argv, debug, &rc) != 0)
    return rc;
  rc = serve_run(&opts);
  int fin = interp_finish();
  return rc ? rc : fin;
}
