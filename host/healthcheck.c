#include "healthcheck.h"

#include "http_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int wait_fd(int fd, short events, double deadline) {
  double left = deadline - now();
  if (left <= 0)
    return -1;
  struct pollfd p = {.fd = fd, .events = events};
  int rc = poll(&p, 1, (int)(left * 1000) + 1);
  return rc > 0 ? 0 : -1;
}

static int connect_to(const struct sockaddr *addr, socklen_t len, double deadline) {
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, addr, len) != 0 && errno != EINPROGRESS)
    goto fail;
  if (wait_fd(fd, POLLOUT, deadline) != 0)
    goto fail;
  int soerr = 0;
  socklen_t sl = sizeof(soerr);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
    errno = soerr ? soerr : errno;
    goto fail;
  }
  return fd;
fail:
  close(fd);
  return -1;
}

static int open_connection(const cli_options *o, double deadline, const char **host_out) {
  if (o->uds) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(o->uds) >= sizeof(sun.sun_path))
      return errno = ENAMETOOLONG, -1;
    strcpy(sun.sun_path, o->uds);
    *host_out = "localhost";
    return connect_to((struct sockaddr *)&sun, sizeof(sun), deadline);
  }
  /* A wildcard bind address is probed over loopback. */
  const char *host = o->host;
  if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "") == 0)
    host = "127.0.0.1";
  else if (strcmp(host, "::") == 0)
    host = "::1";
  *host_out = host;
  char port[16];
  snprintf(port, sizeof(port), "%d", o->port);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
  if (getaddrinfo(host, port, &hints, &res) != 0)
    return errno = EHOSTUNREACH, -1;
  int fd = -1;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
    fd = connect_to(ai->ai_addr, ai->ai_addrlen, deadline);
  freeaddrinfo(res);
  return fd;
}

/* The probe's connection: plain, or TLS when the server is (--ssl-certfile:
 * the same options as the server's, from the same environment). The server
 * probes itself: its certificate is not verified. */
typedef struct probe {
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;
  double deadline;
} probe;

/* Waits for what a non-blocking socket or TLS call wanted: 0, or -1. */
static int probe_wait(probe *p, int ssl_rc, bool sending) {
  short events = sending ? POLLOUT : POLLIN;
  if (p->ssl) {
    int e = SSL_get_error(p->ssl, ssl_rc);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
      return -1;
    events = e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
  } else if (errno != EAGAIN) {
    return -1;
  }
  return wait_fd(p->fd, events, p->deadline);
}

static int probe_tls(probe *p, const char *host) {
  if (!(p->ctx = SSL_CTX_new(TLS_client_method())) || !(p->ssl = SSL_new(p->ctx)) ||
      SSL_set_fd(p->ssl, p->fd) != 1)
    return -1;
  SSL_set_verify(p->ssl, SSL_VERIFY_NONE, NULL);
  SSL_set_tlsext_host_name(p->ssl, host);
  static const unsigned char http11[] = HTTP_TLS_ALPN_HTTP11;
  SSL_set_alpn_protos(p->ssl, http11, sizeof(http11) - 1);
  for (int rc; (rc = SSL_connect(p->ssl)) != 1;)
    if (probe_wait(p, rc, false) != 0)
      return -1;
  return 0;
}

static ssize_t probe_io(probe *p, char *buf, size_t n, bool sending) {
  for (;;) {
    ssize_t r = p->ssl ? (sending ? SSL_write(p->ssl, buf, (int)n) : SSL_read(p->ssl, buf, (int)n))
                : sending ? send(p->fd, buf, n, MSG_NOSIGNAL)
                          : recv(p->fd, buf, n, 0);
    if (r > 0 || (!p->ssl && r == 0))
      return r;
    if (probe_wait(p, (int)r, sending) != 0)
      return p->ssl ? 0 : -1;
  }
}

static void probe_close(probe *p) {
  SSL_free(p->ssl);
  SSL_CTX_free(p->ctx);
  ERR_clear_error();
  close(p->fd);
}

int healthcheck_run(const cli_options *o) {
  signal(SIGPIPE, SIG_IGN); /* OpenSSL writes without MSG_NOSIGNAL */
  probe p = {.deadline = now() + o->health_timeout};
  const char *host;
  p.fd = open_connection(o, p.deadline, &host);
  if (p.fd < 0) {
    fprintf(stderr, "healthcheck: cannot connect to %s:%d: %s\n", o->uds ? o->uds : o->host,
            o->port, strerror(errno));
    return 1;
  }
  if (o->ssl_certfile && probe_tls(&p, host) != 0) {
    fprintf(stderr, "healthcheck: TLS handshake with %s failed\n", host);
    probe_close(&p);
    return 1;
  }
  char req[1024];
  int n = snprintf(req, sizeof(req),
                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: appbin-healthcheck\r\n"
                   "Connection: close\r\n\r\n",
                   o->health_path, host);
  if (n < 0 || n >= (int)sizeof(req)) {
    fprintf(stderr, "healthcheck: --health-path is too long\n");
    probe_close(&p);
    return 1;
  }
  for (int sent = 0; sent < n;) {
    ssize_t w = probe_io(&p, req + sent, (size_t)(n - sent), true);
    if (w <= 0) {
      fprintf(stderr, "healthcheck: send failed: %s\n", p.ssl ? "TLS error" : strerror(errno));
      probe_close(&p);
      return 1;
    }
    sent += (int)w;
  }
  char buf[64];
  size_t got = 0;
  while (got < 12) {
    ssize_t r = probe_io(&p, buf + got, sizeof(buf) - 1 - got, false);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  probe_close(&p);
  buf[got] = '\0';
  int status = 0;
  if (got < 12 || sscanf(buf, "HTTP/1.%*d %3d", &status) != 1) {
    fprintf(stderr, "healthcheck: no HTTP response from %s\n", host);
    return 1;
  }
  if (status < 200 || status > 299) {
    fprintf(stderr, "healthcheck: %s answered %d\n", o->health_path, status);
    return 1;
  }
  return 0;
}
