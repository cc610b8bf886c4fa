#include "healthcheck.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

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

int healthcheck_run(const cli_options *o) {
  double deadline = now() + o->health_timeout;
  const char *host;
  int fd = open_connection(o, deadline, &host);
  if (fd < 0) {
    fprintf(stderr, "healthcheck: cannot connect to %s:%d: %s\n", o->uds ? o->uds : o->host,
            o->port, strerror(errno));
    return 1;
  }
  char req[1024];
  int n = snprintf(req, sizeof(req),
                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: appbin-healthcheck\r\n"
                   "Connection: close\r\n\r\n",
                   o->health_path, host);
  if (n < 0 || n >= (int)sizeof(req)) {
    fprintf(stderr, "healthcheck: --health-path is too long\n");
    close(fd);
    return 1;
  }
  for (int sent = 0; sent < n;) {
    ssize_t w = send(fd, req + sent, (size_t)(n - sent), MSG_NOSIGNAL);
    if (w < 0 && errno == EAGAIN && wait_fd(fd, POLLOUT, deadline) == 0)
      continue;
    if (w <= 0) {
      fprintf(stderr, "healthcheck: send failed: %s\n", strerror(errno));
      close(fd);
      return 1;
    }
    sent += (int)w;
  }
  char buf[64];
  size_t got = 0;
  while (got < 12) {
    ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
    if (r < 0 && errno == EAGAIN && wait_fd(fd, POLLIN, deadline) == 0)
      continue;
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  close(fd);
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
