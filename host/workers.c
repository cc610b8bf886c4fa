#include "workers.h"

#include "applog.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 1024
#define EARLY_EXIT_SECONDS 5.0 /* a worker failing this soon is not restarted */
#define KILL_GRACE_SECONDS 5.0 /* after the graceful timeout, before SIGKILL */

typedef struct worker {
  pid_t pid;
  double started;
} worker;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Log lines in the format of the workers' own (applog: text or JSON). */
#define log_info(...) applog(LOG_INFO, __VA_ARGS__)

static int bind_unix(const char *path, int backlog) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sun.sun_path)) {
    fprintf(stderr, "app.bin: error: --uds path is too long: %s\n", path);
    return -1;
  }
  strcpy(sun.sun_path, path);
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
    unlink(path); /* a stale socket from an earlier run */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(fd, backlog) != 0) {
    fprintf(stderr, "app.bin: error: cannot listen on %s: %s\n", path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  chmod(path, 0666);
  return fd;
}

int workers_bind(const cli_options *o) {
  if (o->fd >= 0)
    return o->fd;
  if (o->uds)
    return bind_unix(o->uds, o->backlog);
  char port[16];
  snprintf(port, sizeof(port), "%d", o->port);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
  int gai = getaddrinfo(*o->host ? o->host : NULL, port, &hints, &res);
  if (gai != 0) {
    fprintf(stderr, "app.bin: error: cannot listen on %s:%d: %s\n", o->host, o->port,
            gai_strerror(gai));
    return -1;
  }
  int fd = -1, err = 0;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
                    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, o->backlog) != 0)) {
      err = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0)
    fprintf(stderr, "app.bin: error: cannot listen on %s:%d: %s\n", o->host, o->port,
            strerror(err ? err : EADDRNOTAVAIL));
  return fd;
}

/* Forks one worker; returns its pid in the parent, 0 in the child. */
static pid_t spawn(worker *w, const sigset_t *oldmask) {
  pid_t pid = fork();
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, oldmask, NULL);
    return 0;
  }
  if (pid < 0) {
    fprintf(stderr, "app.bin: error: fork failed: %s\n", strerror(errno));
    return -1;
  }
  w->pid = pid;
  w->started = now();
  log_info("Started worker process [%d]", (int)pid);
  return pid;
}

static void signal_all(worker *ws, int n, int sig) {
  for (int i = 0; i < n; i++)
    if (ws[i].pid > 0)
      kill(ws[i].pid, sig);
}

static int alive(const worker *ws, int n) {
  int count = 0;
  for (int i = 0; i < n; i++)
    count += ws[i].pid > 0;
  return count;
}

static int exit_status(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

int workers_run(cli_options *opts, int *is_worker) {
  *is_worker = 0;
  int n = opts->workers;
  int fd = workers_bind(opts);
  if (fd < 0)
    return 1;
  /* The socket is inherited across fork; workers must keep it open. */
  opts->fd = fd;
  worker *ws = calloc((size_t)n, sizeof(*ws));
  if (!ws)
    return 1;

  sigset_t mask, oldmask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, &oldmask);
  log_info("Started parent process [%d]", (int)getpid());
  if (opts->uds)
    log_info("appbin running on unix socket %s (Press CTRL+C to quit)", opts->uds);
  else
    log_info("appbin running on http://%s%s%s:%d (Press CTRL+C to quit)",
             strchr(opts->host, ':') ? "[" : "", opts->host, strchr(opts->host, ':') ? "]" : "",
             opts->port);
  for (int i = 0; i < n; i++) {
    pid_t pid = spawn(&ws[i], &oldmask);
    if (pid == 0) {
      free(ws);
      *is_worker = 1;
      return 0;
    }
  }

  int stopping = 0, status_out = 0;
  double deadline = 0;
  while (alive(ws, n) > 0) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
    int sig = sigtimedwait(&mask, NULL, &ts);
    if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
      stopping = 1;
      deadline = now() + opts->timeout_graceful_shutdown + KILL_GRACE_SECONDS;
      log_info("Stopping parent process [%d]", (int)getpid());
      signal_all(ws, n, SIGTERM);
    } else if (sig == SIGINT || sig == SIGTERM) {
      signal_all(ws, n, SIGKILL); /* a second signal: no more waiting */
    }
    if (stopping && now() > deadline)
      signal_all(ws, n, SIGKILL);
    for (;;) {
      int status;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0)
        break;
      for (int i = 0; i < n; i++) {
        if (ws[i].pid != pid)
          continue;
        ws[i].pid = 0;
        int code = exit_status(status);
        if (stopping) {
          if (code != 0 && !status_out)
            status_out = code;
          break;
        }
        if (WIFEXITED(status) && code != 0 && now() - ws[i].started < EARLY_EXIT_SECONDS) {
          /* Failing at start (bad app, lifespan failure): restarting would loop. */
          applog(LOG_ERROR, "Worker [%d] failed to start (exit %d); stopping", (int)pid, code);
          stopping = 1;
          status_out = code;
          deadline = now() + opts->timeout_graceful_shutdown + KILL_GRACE_SECONDS;
          signal_all(ws, n, SIGTERM);
          break;
        }
        applog(LOG_WARNING, "Worker [%d] exited (status %d); restarting", (int)pid, code);
        if (spawn(&ws[i], &oldmask) == 0) {
          free(ws);
          *is_worker = 1;
          return 0;
        }
        break;
      }
    }
  }
  close(fd);
  if (opts->uds)
    unlink(opts->uds);
  free(ws);
  log_info("Finished parent process [%d]", (int)getpid());
  return status_out;
}
