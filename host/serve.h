/* serve: server mode: load the ASGI application and serve it. */
#ifndef APPBIN_SERVE_H
#define APPBIN_SERVE_H

#include "cli.h"

/* 0, or -1 after one line on stderr when RLIMIT_NOFILE is too low to serve
 * (the failures it would cause otherwise surface as tracebacks anywhere). */
int serve_check_fd_limit(void);

/* 0, or -1 after one line on stderr when the --ssl-* options do not make a
 * usable TLS configuration (files missing or unreadable, a wrong password, a
 * key that does not match): checked before the app is imported or a worker
 * is started. */
int serve_check_tls(const cli_options *opts);

/* Runs until shutdown; returns the process exit status. Needs a started
 * interpreter (interp_start). */
int serve_run(const cli_options *opts);

#endif
