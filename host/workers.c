/* workers: the --workers supervisor (no Python in it) and the worker side of
 * its shared board.
 *
 *   board      shared memory made before the first fork: per worker its
 *              state (starting, serving) and the last beat of its event
 *              loop; the supervisor's restart counter.
 *   spawning   fork a worker into a slot; SIGTERM/SIGINT stay blocked in
 *              it until the runtime has its handlers (a worker killed half
 *              way through start-up would leave queued connections to a
 *              reset).
 *   exits      a worker that dies after it served is replaced at once; one
 *              that fails before (start-up) with a status is a broken app
 *              and stops everything; one killed by a signal or exiting 0
 *              before serving is restarted with back-off, and after
 *              MAX_START_FAILURES in a row the supervisor gives up.
 *   health     a serving worker whose loop has not beaten for
 *              --timeout-worker-healthcheck is reported (its Python stacks
 *              dumped, faulthandler on SIGUSR2), killed and replaced.
 *   signals    the first SIGTERM/SIGINT drains: after RELAY_DELAY, SIGTERM
 *              to every worker not already stopping, whatever arrived. A
 *              group signal (systemd's control-group kill, Ctrl-C in a
 *              terminal) reaches the workers directly too: the delay keeps
 *              the relay from arriving while the worker's handler for the
 *              direct one runs (nested signal handlers write their numbers
 *              in reverse order: the relay could pass for a second signal),
 *              and a worker that stops already gets no relay at all. A
 *              later SIGINT (a second Ctrl-C) is relayed as SIGINT at once:
 *              workers stop without waiting. A later SIGTERM is ignored.
 */
#include "workers.h"

#include "applog.h"
#include "ops.h"
#include "serve.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_START_FAILURES 5   /* start-up failures in a row before giving up */
#define BACKOFF_FIRST 0.5      /* seconds before the first restart after one */
#define BACKOFF_MAX 8.0        /* doubling up to this */
#define KILL_GRACE_SECONDS 5.0 /* after the graceful timeout, before SIGKILL */
#define DUMP_GRACE_SECONDS 1.0 /* after the stack dump of a blocked worker, before SIGKILL */
#define RELAY_DELAY 0.1        /* seconds between a stop signal and its relay */
#define TICK_MS 50             /* the supervisor's loop */

/* ---- the board -------------------------------------------------------------------- */

enum { SLOT_STARTING, SLOT_SERVING, SLOT_STOPPING };

typedef struct worker_slot {
  atomic_int state;
  atomic_uint_least64_t beat_ms; /* CLOCK_MONOTONIC ms of the loop's last beat */
} worker_slot;

typedef struct worker_board {
  atomic_uint_least64_t restarts; /* workers replaced since start-up */
  int n;
  worker_slot slot[];
} worker_board;

static worker_board *board;    /* mapped in the supervisor, inherited by workers */
static worker_slot *self_slot; /* in a worker: its own slot */
static double self_beat_interval;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double now(void) { return (double)now_ms() / 1000.0; }

static worker_board *board_new(int n) {
  size_t size = sizeof(worker_board) + (size_t)n * sizeof(worker_slot);
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  worker_board *b = p;
  atomic_init(&b->restarts, 0);
  b->n = n;
  for (int i = 0; i < n; i++) {
    atomic_init(&b->slot[i].state, SLOT_STARTING);
    atomic_init(&b->slot[i].beat_ms, 0);
  }
  return b;
}

double workers_beat_interval(void) { return self_slot ? self_beat_interval : 0; }

void workers_serving(void) {
  if (!self_slot)
    return;
  atomic_store(&self_slot->beat_ms, now_ms());
  atomic_store(&self_slot->state, SLOT_SERVING);
}

void workers_stopping(void) {
  if (self_slot)
    atomic_store(&self_slot->state, SLOT_STOPPING);
}

void workers_beat(void) {
  if (self_slot)
    atomic_store(&self_slot->beat_ms, now_ms());
}

int workers_is_worker(void) { return self_slot != NULL; }

uint64_t workers_restarts(void) { return board ? atomic_load(&board->restarts) : 0; }

/* ---- logging ------------------------------------------------------------------------ */

/* The supervisor's lines, in the shape of the workers' (applog: uvicorn's
 * text or JSON, --log-level applies); level is "INFO:", "WARNING:"... */
static void log_line(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(const char *level, const char *fmt, ...) {
  static const char *const names[] = {
      "TRACE:", "DEBUG:", "INFO:", "WARNING:", "ERROR:", "CRITICAL:"};
  int lvl = LOG_INFO;
  for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
    if (strcmp(level, names[i]) == 0)
      lvl = i;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  applog_message(lvl, "uvicorn.error", msg);
}

/* "exit 3", "killed by SIGSEGV" */
static const char *describe_status(int status, char *buf, size_t len) {
  if (WIFEXITED(status))
    snprintf(buf, len, "exit %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, len, "killed by SIG%s",
             sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
  else
    snprintf(buf, len, "status %d", status);
  return buf;
}

static int exit_status(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

/* ---- binding -------------------------------------------------------------------------- */

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

/* ---- the supervisor ------------------------------------------------------------------- */

typedef struct worker {
  pid_t pid;         /* 0: not running */
  double restart_at; /* > 0: a restart is due then (back-off) */
  double kill_at;    /* > 0: SIGKILL then (a blocked worker whose stacks were dumped) */
} worker;

typedef struct supervisor {
  cli_options *opts;
  worker *ws;
  int n;
  sigset_t oldmask;
  int stopping;       /* a SIGTERM/SIGINT arrived, or start-up failed */
  double relay_at;    /* stopping: SIGTERM the workers then (0: done) */
  double deadline;    /* stopping: SIGKILL what is left after this */
  int status;         /* the supervisor's exit status */
  int start_failures; /* start-up failures in a row (reset once a worker serves) */
  int listen_fd;      /* closed once stopping: the workers hold it while they drain */
} supervisor;

/* Forks a worker into slot i. Returns its pid in the supervisor, 0 in the
 * worker (which returns all the way to main() to start Python), -1 on error. */
static pid_t spawn(supervisor *sv, int i) {
  atomic_store(&board->slot[i].state, SLOT_STARTING);
  atomic_store(&board->slot[i].beat_ms, 0);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    /* A supervisor killed with SIGKILL cannot stop its workers: the kernel
     * sends each SIGTERM when it dies, and they drain as on any SIGTERM
     * (in-flight requests finish within --timeout-graceful-shutdown, then
     * the listening socket is closed with the process). Draining rather
     * than exiting at once: the requests in flight did nothing wrong, and
     * with nobody left to SIGKILL a worker that outlives the drain, the
     * runtime's own graceful timeout bounds it. If the supervisor died
     * before prctl() took effect, getppid() tells. The signal stays
     * pending (blocked below) until the runtime has its handlers. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
      kill(getpid(), SIGTERM);
    /* SIGTERM/SIGINT stay blocked until the runtime has its handlers
     * (serve() unblocks them); SIGCHLD is the supervisor's. */
    sigset_t mask = sv->oldmask;
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigdelset(&mask, SIGCHLD);
    sigprocmask(SIG_SETMASK, &mask, NULL);
    self_slot = &board->slot[i];
    double t = sv->opts->timeout_worker_healthcheck;
    self_beat_interval = t <= 0 ? 0 : t / 4 < 1.0 ? t / 4 : 1.0;
    return 0;
  }
  if (pid < 0) {
    fprintf(stderr, "app.bin: error: fork failed: %s\n", strerror(errno));
    return -1;
  }
  sv->ws[i].pid = pid;
  sv->ws[i].restart_at = sv->ws[i].kill_at = 0;
  log_line("INFO:", "Started worker process [%d]", (int)pid);
  return pid;
}

static void signal_all(supervisor *sv, int sig) {
  for (int i = 0; i < sv->n; i++)
    if (sv->ws[i].pid > 0)
      kill(sv->ws[i].pid, sig);
}

/* Stops serving: the workers get SIGTERM after delay (see "signals"). */
static void begin_stop(supervisor *sv, int status, double delay) {
  if (sv->stopping)
    return;
  sv->stopping = 1;
  sv->status = status;
  sv->relay_at = now() + delay;
  sv->deadline = now() + sv->opts->timeout_graceful_shutdown + KILL_GRACE_SECONDS;
  for (int i = 0; i < sv->n; i++)
    sv->ws[i].restart_at = 0;
  /* The workers keep the socket open while they drain; once the last one
   * closes it, new connections are refused instead of queueing for nobody. */
  if (sv->listen_fd >= 0) {
    close(sv->listen_fd);
    sv->listen_fd = -1;
  }
}

static void relay_stop(supervisor *sv) {
  sv->relay_at = 0;
  for (int i = 0; i < sv->n; i++)
    if (sv->ws[i].pid > 0 && atomic_load(&board->slot[i].state) != SLOT_STOPPING)
      kill(sv->ws[i].pid, SIGTERM);
}

static void on_signal(supervisor *sv, int sig) {
  if (!sv->stopping) {
    log_line("INFO:", "Received SIG%s: stopping workers (in-flight requests finish)",
             sig == SIGINT ? "INT" : "TERM");
    log_line("INFO:", "Stopping parent process [%d]", (int)getpid());
    begin_stop(sv, 0, RELAY_DELAY);
  } else if (sig == SIGINT) {
    log_line("WARNING:", "Received SIGINT again: workers stop at once");
    signal_all(sv, SIGINT);
  } else {
    log_line("INFO:", "Received SIGTERM while stopping: still waiting for workers");
  }
}

static double backoff(int failures) {
  double d = BACKOFF_FIRST;
  for (int i = 1; i < failures && d < BACKOFF_MAX; i++)
    d *= 2;
  return d < BACKOFF_MAX ? d : BACKOFF_MAX;
}

/* A worker ended. Returns 1 in a freshly spawned worker. */
static int on_exit_of(supervisor *sv, int i, int status) {
  worker *w = &sv->ws[i];
  pid_t pid = w->pid;
  w->pid = 0;
  w->kill_at = 0;
  char why[48];
  describe_status(status, why, sizeof(why));
  if (sv->stopping) {
    /* SIGTERM and SIGINT are how it was asked to stop: not a failure */
    int asked = WIFSIGNALED(status) && (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGINT);
    if (exit_status(status) != 0 && !asked && !sv->status)
      sv->status = exit_status(status);
    return 0;
  }
  int served = atomic_load(&board->slot[i].state) != SLOT_STARTING;
  if (served) { /* exit 0: --limit-max-requests, or a stop signal sent to it alone */
    log_line(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "INFO:" : "WARNING:",
             "Worker [%d] exited (%s); restarting", (int)pid, why);
  } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    /* a bad app, a lifespan failure: every restart would fail the same way */
    log_line("ERROR:", "Worker [%d] failed to start (%s); stopping", (int)pid, why);
    begin_stop(sv, WEXITSTATUS(status), 0);
    return 0;
  } else if (++sv->start_failures >= MAX_START_FAILURES) {
    log_line("ERROR:", "Worker [%d] failed to start (%s), %d start-up failures in a row; stopping",
             (int)pid, why, sv->start_failures);
    begin_stop(sv, 1, 0);
    return 0;
  } else {
    double delay = backoff(sv->start_failures);
    log_line("WARNING:", "Worker [%d] failed to start (%s); restarting in %.1f s", (int)pid, why,
             delay);
    w->restart_at = now() + delay;
    return 0;
  }
  atomic_fetch_add(&board->restarts, 1);
  return spawn(sv, i) == 0;
}

/* Back-off restarts that are due, and serving workers that stopped beating.
 * Returns 1 in a freshly spawned worker. */
static int tend(supervisor *sv) {
  double t = now();
  uint64_t t_ms = now_ms();
  double limit = sv->opts->timeout_worker_healthcheck;
  for (int i = 0; i < sv->n; i++) {
    worker *w = &sv->ws[i];
    worker_slot *slot = &board->slot[i];
    if (w->pid == 0 && w->restart_at > 0 && t >= w->restart_at && !sv->stopping) {
      atomic_fetch_add(&board->restarts, 1);
      if (spawn(sv, i) == 0)
        return 1;
      continue;
    }
    if (w->pid <= 0)
      continue;
    if (atomic_load(&slot->state) == SLOT_SERVING)
      sv->start_failures = 0;
    if (w->kill_at > 0) {
      if (t >= w->kill_at)
        kill(w->pid, SIGKILL), w->kill_at = -1;
      continue;
    }
    if (sv->stopping || limit <= 0 || atomic_load(&slot->state) == SLOT_STARTING)
      continue;
    uint64_t beat = atomic_load(&slot->beat_ms);
    double silent = (double)(t_ms - beat) / 1000.0;
    if (beat && silent > limit) {
      log_line("ERROR:",
               "Worker [%d] failed its healthcheck: its event loop has been blocked for %.1f s "
               "(--timeout-worker-healthcheck %g); dumping its stacks and replacing it",
               (int)w->pid, silent, limit);
      kill(w->pid, SIGUSR2); /* faulthandler in the worker prints every thread's stack */
      w->kill_at = t + DUMP_GRACE_SECONDS;
    }
  }
  return 0;
}

static int pending(const supervisor *sv) {
  int count = 0;
  for (int i = 0; i < sv->n; i++)
    count += sv->ws[i].pid > 0 || (!sv->stopping && sv->ws[i].restart_at > 0);
  return count;
}

int workers_run(cli_options *opts, int *is_worker) {
  *is_worker = 0;
  int n = opts->workers;
  if (serve_check_fd_limit() != 0 || serve_check_tls(opts) != 0)
    return 1;
  int fd = workers_bind(opts);
  if (fd < 0)
    return 1;
  if (ops_metrics_listen() != 0) { /* the payload is verified (main) */
    close(fd);
    if (opts->uds)
      unlink(opts->uds);
    return 1;
  }
  supervisor sv = {.opts = opts, .n = n, .listen_fd = fd};
  sv.ws = calloc((size_t)n, sizeof(*sv.ws));
  board = board_new(n);
  if (!sv.ws || !board) {
    fprintf(stderr, "app.bin: error: out of memory for %d workers\n", n);
    free(sv.ws);
    return 1;
  }
  /* The socket is inherited across fork; workers serve on it. */
  opts->fd = fd;

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, &sv.oldmask);
  log_line("INFO:", "Started parent process [%d]", (int)getpid());
  if (opts->uds)
    log_line("INFO:", "appbin running on unix socket %s (Press CTRL+C to quit)", opts->uds);
  else
    log_line("INFO:", "appbin running on %s://%s%s%s:%d (Press CTRL+C to quit)",
             opts->ssl_certfile ? "https" : "http", strchr(opts->host, ':') ? "[" : "", opts->host,
             strchr(opts->host, ':') ? "]" : "", opts->port);
  /* A stop asked for while the payload was checked (main() blocks both
   * signals from its start): no worker is started. */
  const struct timespec no_wait = {0, 0};
  for (int sig; (sig = sigtimedwait(&mask, NULL, &no_wait)) > 0;)
    if (sig == SIGTERM || sig == SIGINT)
      on_signal(&sv, sig);
  for (int i = 0; i < n && !sv.stopping; i++) {
    pid_t pid = spawn(&sv, i);
    if (pid == 0)
      goto in_worker;
    if (pid < 0) {
      begin_stop(&sv, 1, 0);
      break;
    }
  }

  while (pending(&sv) > 0) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = TICK_MS * 1000 * 1000};
    int sig = sigtimedwait(&mask, NULL, &ts);
    if (sig == SIGTERM || sig == SIGINT)
      on_signal(&sv, sig);
    if (sv.stopping && sv.relay_at > 0 && now() >= sv.relay_at)
      relay_stop(&sv);
    if (sv.stopping && now() > sv.deadline)
      signal_all(&sv, SIGKILL);
    for (;;) {
      int status;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0)
        break;
      for (int i = 0; i < n; i++)
        if (sv.ws[i].pid == pid && on_exit_of(&sv, i, status))
          goto in_worker;
    }
    if (tend(&sv))
      goto in_worker;
  }
  if (sv.listen_fd >= 0)
    close(sv.listen_fd);
  if (opts->uds)
    unlink(opts->uds);
  free(sv.ws);
  log_line("INFO:", "Finished parent process [%d]", (int)getpid());
  return sv.status;

in_worker:
  free(sv.ws);
  *is_worker = 1;
  return 0;
}
