/* serve: server mode: load the ASGI application and serve it. */
#ifndef APPBIN_SERVE_H
#define APPBIN_SERVE_H

#include "cli.h"

/* Runs until shutdown; returns the process exit status. Needs a started
 * interpreter (interp_start). */
int serve_run(const cli_options *opts);

#endif
