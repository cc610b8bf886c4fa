/*
 * ops: what server mode sets up around the server, in C before Python: the
 * shape of log lines (applog), --env-file, and the metrics endpoint (its
 * shared counters and listening socket made before the supervisor forks;
 * each serving process then takes a counter slot and starts the endpoint's
 * thread).
 */
#ifndef APPBIN_OPS_H
#define APPBIN_OPS_H

#include "cli.h"
#include "zipindex.h"

/* Before workers_run(). Returns 0, or the exit status after a one-line
 * message (2: a bad --env-file; 1: the metrics port cannot be bound). The
 * metrics socket is bound, not listening: a damaged app.bin never listens. */
int ops_prepare(const cli_options *o);

/* The supervisor, once the payload is verified and before it forks: the
 * metrics socket listens (and is announced). 0 or 1. */
int ops_metrics_listen(void);

/* In each process that serves (a worker, or the only process), before the
 * interpreter starts. The only process listens for metrics once every byte
 * of zi is verified (zipindex_verify_start() checks it beside the start-up;
 * damage ends the process). 0 or 1. */
int ops_start_serving(const cli_options *o, zipindex *zi);

#endif
