/* healthcheck: `app.bin healthcheck`, a tiny HTTP/1.1 client for Docker's
 * HEALTHCHECK in images that have no shell or curl. */
#ifndef APPBIN_HEALTHCHECK_H
#define APPBIN_HEALTHCHECK_H

#include "cli.h"

/* GETs opts->health_path from the configured --uds or --host/--port.
 * Returns 0 for a 2xx answer, 1 otherwise (saying why on stderr). */
int healthcheck_run(const cli_options *opts);

#endif
