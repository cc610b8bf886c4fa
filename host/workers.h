/*
 * workers: --workers N. A supervisor process that never starts Python binds
 * the listening socket, forks N workers that serve on it (each runs its own
 * interpreter and lifespan), replaces a worker that dies or whose event loop
 * stays blocked (--timeout-worker-healthcheck), backs off and gives up when
 * workers keep failing to start, and on SIGTERM or SIGINT asks every worker
 * to drain and waits for them. See workers.c for the rules.
 */
#ifndef APPBIN_WORKERS_H
#define APPBIN_WORKERS_H

#include "cli.h"
#include "worker_board.h"

/* Runs the supervisor. Returns in the parent with the process exit status
 * (*is_worker = 0), or in a freshly forked worker (*is_worker = 1) whose
 * opts->fd now names the shared listening socket. */
int workers_run(cli_options *opts, int *is_worker);

/* Binds and listens as opts says (--fd, --uds or --host/--port). Returns the
 * socket, or -1 after printing why. */
int workers_bind(const cli_options *opts);

#endif
