/* metrics_http: the --metrics-port endpoint (see metrics_http.c). */
#ifndef APPBIN_METRICS_HTTP_H
#define APPBIN_METRICS_HTTP_H

#include <stdatomic.h>
#include <stddef.h>

/* Binds, without listening yet (before the supervisor forks, so that every
 * worker shares the socket; a port in use fails at once); where gets
 * "http://HOST:PORT". The fd, or -1 after logging why. */
int metrics_http_bind(const char *host, int port, char *where, size_t wlen);

/* listen() on a bound fd (the supervisor, once the payload is verified).
 * 0, or -1 after logging why. */
int metrics_http_listen(int fd);

/* Serves fd from a new thread (in each serving process): it listens once
 * *ready is non-zero (ready NULL: at once), then logs "Metrics on
 * ANNOUNCE" unless announce is NULL. 0 or -1. */
int metrics_http_start(int fd, const char *path, const atomic_int *ready, const char *announce);

#endif
