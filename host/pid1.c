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
 *   signals   every signal stays blocked in the init and is passed on to
 *             the child as it arrives: SIGTERM from `docker stop` or the
 *             kubelet, SIGHUP, SIGUSR1... The child runs in a session of its
 *             own (setsid), so that it gets each signal once: a signal to
 *             the init's process group reaches it only through the init (a
 *             second SIGINT would stop the server at once), and one the app
 *             sends within its own group (`kill 0`) does not reach the init.
 *             Its group is orphaned (its parent is in another session): a
 *             SIGTSTP stops nothing, as none stopped PID 1.
 *   terminal  under `docker run -it` (runc makes PID 1 the session leader
 *             of the terminal) the child takes the terminal over: Ctrl-C
 *             and the hang-up go to its process group, its subprocesses
 *             included (`sleep` under os.system() stops at Ctrl-C), and
 *             /dev/tty and job control work in it. The init lets the
 *             terminal go first (TIOCNOTTY), as dumb-init does.
 *   exit      when the child exits the init exits with its status, 128+N
 *             for a child killed by signal N (as a shell reports it), and
 *             the kernel ends whatever else is left in the namespace.
 *   files     the init keeps stdout and stderr only: a listening socket
 *             passed with --fd, or a stdin pipe, closes when the child
 *             closes it.
 *
 * The child is not PID 1, so a signal without a handler acts on it as on
 * any process; SIGTERM and SIGINT stay blocked in it until the runtime has
 * its handlers, as without the init.
 */
#include "pid1.h"

#include "applog.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static sigset_t all_signals; /* what the init waits for with sigwaitinfo */
static sigset_t child_mask;  /* the caller's mask, the child's */

static int exit_status_of(int wstatus, pid_t child, int say_signal) {
  if (WIFEXITED(wstatus))
    return WEXITSTATUS(wstatus);
  assert(WIFSIGNALED(wstatus)); /* waitpid without WUNTRACED/WCONTINUED */
  int sig = WTERMSIG(wstatus);
  const char *name = sigabbrev_np(sig); /* none for real-time signals */
  if (say_signal && name)
    applog(LOG_ERROR, "Server process [%d] killed by SIG%s: exiting with status %d", (int)child,
           name, 128 + sig);
  else if (say_signal)
    applog(LOG_ERROR, "Server process [%d] killed by signal %d: exiting with status %d", (int)child,
           sig, 128 + sig);
  return 128 + sig;
}

/* Reaps every exited child; returns 1 with *status set once `child` is
 * among them. */
static int reap(pid_t child, int say_signal, int *status) {
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
      *status = exit_status_of(wstatus, child, say_signal);
      done = 1;
    }
  }
}

/* Gives up the terminal this process leads the session of, if any: 1 when
 * it did. TIOCNOTTY sends SIGHUP and SIGCONT to the terminal's foreground
 * group, ours, where all signals are blocked: those two are dropped. */
static int let_terminal_go(void) {
  if (!isatty(STDIN_FILENO) || tcgetsid(STDIN_FILENO) != getpid() ||
      ioctl(STDIN_FILENO, TIOCNOTTY) != 0)
    return 0;
  sigset_t sent;
  sigemptyset(&sent);
  sigaddset(&sent, SIGHUP);
  sigaddset(&sent, SIGCONT);
  const struct timespec now = {0, 0};
  while (sigtimedwait(&sent, NULL, &now) > 0)
    ;
  return 1;
}

pid_t pid1_fork_init(void) {
  if (getpid() != 1)
    return 0;
  /* A fault in the init is still fatal: the kernel forces those. */
  sigfillset(&all_signals);
  sigprocmask(SIG_BLOCK, &all_signals, &child_mask);
  /* An inherited SIG_IGN would have the kernel reap the child unseen. */
  signal(SIGCHLD, SIG_DFL);
  int terminal = let_terminal_go();
  pid_t child = fork();
  if (child < 0)
    fprintf(stderr,
            "app.bin: warning: cannot fork an init as PID 1 (%s): orphaned processes "
            "in the container will not be reaped\n",
            strerror(errno));
  if (child <= 0) {
    if (child == 0)
      setsid();   /* cannot fail: the child leads no process group */
    if (terminal) /* the child's now, or ours again */
      ioctl(STDIN_FILENO, TIOCSCTTY, 0);
    sigprocmask(SIG_SETMASK, &child_mask, NULL);
    return 0;
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0 && devnull != STDIN_FILENO) {
    dup2(devnull, STDIN_FILENO);
    close(devnull);
  }
  closefrom(STDERR_FILENO + 1); /* glibc's falls back to /proc/self/fd */
  return child;
}

int pid1_run_init(pid_t child, const cli_options *opts) {
  assert(getpid() == 1 && child > 1);
  applog_setup(opts->log_level, opts->log_format == LOG_FORMAT_JSON, opts->use_colors);
  /* A program's exit by a signal is its own business (a shell prints
   * nothing for Ctrl-C either); a server killed by one is news. */
  int say_signal = opts->mode == CLI_SERVE;
  for (;;) {
    int sig = sigwaitinfo(&all_signals, NULL);
    if (sig < 0) {
      assert(errno == EINTR);
      continue;
    }
    int status;
    if (sig == SIGCHLD) {
      if (reap(child, say_signal, &status))
        return status;
    } else {
      kill(child, sig);
    }
  }
}
