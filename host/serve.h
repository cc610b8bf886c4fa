/* serve: server mode: load the ASGI application and serve it. */
#ifndef APPBIN_SERVE_H
#define APPBIN_SERVE_H

#include "cli.h"

/* 0, or -1 after one line on stderr when RLIMIT_NOFILE is too low to serve
 * (the failures it would cause otherwise surface as tracebacks anywhere). */
int serve_check_fd_limit(void);

/* Runs until shutdown; returns the process exit status. Needs a started
 * interpreter (interp_start). */
int serve_run(const cli_options *opts);

#endif
