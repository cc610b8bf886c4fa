/* pid1: app.bin as the first process of a PID namespace (a container's
 * entrypoint), where it inherits every orphaned process of the container. */
#ifndef APPBIN_PID1_H
#define APPBIN_PID1_H

#include "cli.h"

#include <sys/types.h>

/* For a run of one process (a single server, or python mode). Unless this
 * process has PID 1 it returns 0 at once. As PID 1 it forks: the child, in
 * a session of its own, returns 0 and goes on as the server or program,
 * keeping the caller's signal mask (SIGTERM and SIGINT blocked until the
 * runtime has its handlers); the parent, the namespace's init from now on,
 * keeps stdout and stderr only, gets the child's pid and calls
 * pid1_run_init. If the fork fails it says so and returns 0: the run goes
 * on as PID 1 without an init. */
pid_t pid1_fork_init(void);

/* The init's loop: reaps every exited process, passes signals on to
 * `child`, and returns once the child has exited with the status to exit
 * with (the child's, or 128+N if signal N killed it). Of opts it reads the
 * log settings only. */
int pid1_run_init(pid_t child, const cli_options *opts);

#endif
