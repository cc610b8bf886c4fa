/* metrics_http: the --metrics-port endpoint (see metrics_http.c). */
#ifndef APPBIN_METRICS_HTTP_H
#define APPBIN_METRICS_HTTP_H

#include <stddef.h>

/* Binds and listens (before the supervisor forks, so that every worker
 * shares the socket); where gets "http://HOST:PORT". The fd, or -1 after
 * logging why. */
int metrics_http_bind(const char *host, int port, char *where, size_t wlen);

/* Serves fd from a new thread (in each serving process). 0 or -1. */
int metrics_http_start(int fd, const char *path);

#endif
