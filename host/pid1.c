/*
 * pid1: an init in front of a single server when app.bin is PID 1.
 *
 * PID 1 of a namespace adopts every process orphaned in it (the grandchild
 * left behind by an app's subprocess that daemonised, a helper whose parent
 * crashed), and those stay zombies until it waits for them. A --workers
 * supervisor waits for any child; a single server cannot: it runs Python,
 * whose subprocess, multiprocessing and os.wait* calls must see only the
 * exits of their own children. So as PID 1 such a run forks first, before
 * any thread or Python exists, and the parent does what `docker run --init`
 * (tini) would:
 *
 *   reaping   SIGCHLD: waitpid(-1) until nothing more has exited.
 *   signals   every asynchronous signal stays blocked in the init and is
 *             passed on to the child as it arrives (SIGTERM from `docker
 *             stop` or the kubelet, SIGHUP, SIGUSR1...), except those the
 *             kernel sent (si_code SI_KERNEL): a terminal's Ctrl-C, Ctrl-\
 *             or hang-up goes to the whole foreground process group, the
 *             child included, and must not reach it twice (a second SIGINT
 *             stops the server at once).
 *   exit      when the child exits the init exits with its status, 128+N
 *             for a child killed by signal N (as a shell reports it), and
 *             the kernel ends whatever else is left in the namespace.
 *
 * The child is not PID 1, so a signal without a handler acts on it as on
 * any process; SIGTERM and SIGINT stay blocked in it until the runtime has
 * its handlers, as without the init.
 */
#include "pid1.h"

#include "applog.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static sigset_t waited;     /* what the init waits for with sigwaitinfo */
static sigset_t child_mask; /* the caller's mask, the child's */

/* The signals the init waits for: all but those raised by a fault, which
 * cannot be blocked meaningfully (SIGKILL and SIGSTOP cannot be at all). */
static void waited_signals(sigset_t *set) {
  static const int faults[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT, SIGSYS};
  sigfillset(set);
  for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++)
    sigdelset(set, faults[i]);
}

static int exit_status_of(int wstatus, pid_t child) {
  if (WIFEXITED(wstatus))
    return WEXITSTATUS(wstatus);
  assert(WIFSIGNALED(wstatus)); /* waitpid without WUNTRACED/WCONTINUED */
  int sig = WTERMSIG(wstatus);
  const char *name = sigabbrev_np(sig);
  applog(LOG_ERROR, "Process [%d] killed by SIG%s: exiting with status %d", (int)child,
         name ? name : "?", 128 + sig);
  return 128 + sig;
}

/* Reaps every exited child; returns 1 with *status set once `child` is
 * among them. */
static int reap(pid_t child, int *status) {
  int done = 0;
  for (;;) {
    int wstatus;
    pid_t pid = waitpid(-1, &wstatus, WNOHANG);
    if (pid == 0 || (pid < 0 && errno == ECHILD))
      return done;
    if (pid < 0) {
      assert(errno == EINTR);
      continue;
    }
    if (pid == child) {
      *status = exit_status_of(wstatus, child);
      done = 1;
    }
  }
}

pid_t pid1_fork_init(void) {
  if (getpid() != 1)
    return 0;
  waited_signals(&waited);
  sigprocmask(SIG_BLOCK, &waited, &child_mask);
  /* An inherited SIG_IGN would have the kernel reap the child unseen. */
  signal(SIGCHLD, SIG_DFL);
  pid_t child = fork();
  if (child < 0)
    fprintf(stderr,
            "app.bin: warning: cannot fork an init as PID 1 (%s): orphaned processes "
            "in the container will not be reaped\n",
            strerror(errno));
  if (child <= 0) {
    sigprocmask(SIG_SETMASK, &child_mask, NULL);
    return 0;
  }
  return child;
}

int pid1_run_init(pid_t child, const cli_options *opts) {
  assert(getpid() == 1 && child > 1);
  applog_setup(opts->log_level, opts->log_format == LOG_FORMAT_JSON, opts->use_colors);
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&waited, &si);
    if (sig < 0) {
      assert(errno == EINTR);
      continue;
    }
    int status;
    if (sig == SIGCHLD) {
      if (reap(child, &status))
        return status;
    } else if (si.si_code != SI_KERNEL) {
      kill(child, sig);
    }
  }
}
