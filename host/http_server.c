/* Listening sockets, accepting, server-wide limits, graceful stop. */
#include "http_internal.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define RBUF_POOL_MAX 256

void http_config_init(http_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->max_head_size = 16384;
  cfg->max_headers = 100;
  cfg->read_buffer_size = 16384;
  cfg->keep_alive_timeout_ms = 5000;
  cfg->header_timeout_ms = 10000;
  cfg->write_high_water = 65536;
  cfg->write_low_water = 16384;
  cfg->server_header = true;
  cfg->server_name = "appbin";
  cfg->date_header = true;
  cfg->backlog = 2048;
}

void http_server__log(http_server *srv, int level, const char *fmt, ...) {
  if (srv->cb.on_log == NULL)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  srv->cb.on_log(srv, level, msg);
}

http_server *http_server_new(uv_loop_t *loop, const http_config *cfg, const http_callbacks *cb,
                             void *user) {
  if (cb == NULL || cb->on_request == NULL || cfg == NULL || cfg->read_buffer_size < 1024 ||
      cfg->max_head_size == 0 || cfg->write_low_water > cfg->write_high_water)
    return NULL;
  const char *name = cfg->server_name ? cfg->server_name : "appbin";
  if (cfg->server_header && !http_value_valid(name, strlen(name)))
    return NULL;
  for (size_t i = 0; i < cfg->n_default_headers; i++) {
    const http_header *h = &cfg->default_headers[i];
    if (!http_token_valid(h->name, h->name_len) || !http_value_valid(h->value, h->value_len))
      return NULL;
  }
  http_server *srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    return NULL;
  srv->loop = loop;
  srv->cfg = *cfg;
  srv->cb = *cb;
  srv->user = user;
  srv->accepting = true;
  struct rlimit rl;
  srv->nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 0;
  srv->fd_warn_at = srv->nofile == 0 || srv->nofile > INT32_MAX
                        ? INT32_MAX
                        : (int)(srv->nofile - (srv->nofile / 16 > 4 ? srv->nofile / 16 : 4));
  srv->server_name = strdup(name);
  srv->cfg.server_name = srv->server_name;
  srv->cfg.default_headers = NULL;
  http_buf *f = &srv->fixed_headers;
  int err = srv->server_name == NULL;
  err |= http_buf_append(f, "server: ", 8);
  err |= http_buf_append(f, name, strlen(name));
  err |= http_buf_append(f, "\r\n", 2);
  srv->server_line_len = f->len;
  for (size_t i = 0; i < cfg->n_default_headers; i++) {
    const http_header *h = &cfg->default_headers[i];
    err |= http_buf_append(f, h->name, h->name_len);
    err |= http_buf_append(f, ": ", 2);
    err |= http_buf_append(f, h->value, h->value_len);
    err |= http_buf_append(f, "\r\n", 2);
  }
  if (err) {
    http_server_free(srv);
    return NULL;
  }
  return srv;
}

void *http_server_user(const http_server *srv) { return srv->user; }
uv_loop_t *http_server_loop(const http_server *srv) { return srv->loop; }
size_t http_server_connections(const http_server *srv) { return srv->n_conns; }
size_t http_server_active_requests(const http_server *srv) { return srv->n_active; }
uint64_t http_server_total_requests(const http_server *srv) { return srv->n_requests; }
size_t http_server_streams(const http_server *srv) { return srv->n_streams; }

/* ---- read buffer pool -------------------------------------------------------- */

char *http_server__rbuf_get(http_server *srv) {
  if (srv->n_rbuf_pool)
    return srv->rbuf_pool[--srv->n_rbuf_pool];
  return malloc(srv->cfg.read_buffer_size);
}

void http_server__rbuf_put(http_server *srv, char *buf) {
  if (srv->n_rbuf_pool < RBUF_POOL_MAX) {
    if (srv->rbuf_pool == NULL) {
      srv->rbuf_pool = malloc(RBUF_POOL_MAX * sizeof(char *));
      if (srv->rbuf_pool == NULL) {
        free(buf);
        return;
      }
    }
    srv->rbuf_pool[srv->n_rbuf_pool++] = buf;
    return;
  }
  free(buf);
}

/* ---- limits and closing ------------------------------------------------------ */

static void close_listeners(http_server *srv);

static void check_closed(http_server *srv) {
  if (srv->shutting_down && srv->n_conns == 0 && srv->n_listeners_open == 0 &&
      !srv->closed_notified) {
    srv->closed_notified = true;
    if (srv->on_closed)
      srv->on_closed(srv);
  }
}

void http_server__conn_gone(http_server *srv) { check_closed(srv); }

void http_server__count_request(http_server *srv) {
  srv->n_requests++;
  if (srv->cfg.limit_max_requests && srv->n_requests >= srv->cfg.limit_max_requests &&
      !srv->max_reached) {
    srv->max_reached = true;
    http_server__log(srv, 1, "Maximum request limit of %llu exceeded. Terminating process.",
                     (unsigned long long)srv->cfg.limit_max_requests);
    close_listeners(srv);
    if (srv->cb.on_max_requests)
      srv->cb.on_max_requests(srv);
  }
}

/* ---- listening ------------------------------------------------------------------- */

static void on_listener_close(uv_handle_t *h) {
  http_listener *l = h->data;
  http_server *srv = l->srv;
  if (l->unlink_path) {
    unlink(l->unlink_path);
    free(l->unlink_path);
  }
  for (size_t i = 0; i < srv->n_listeners; i++)
    if (srv->listeners[i] == l)
      srv->listeners[i] = NULL;
  free(l);
  srv->n_listeners_open--;
  check_closed(srv);
}

static void close_listeners(http_server *srv) {
  srv->accepting = false;
  for (size_t i = 0; i < srv->n_listeners; i++) {
    http_listener *l = srv->listeners[i];
    if (l && !uv_is_closing(&l->h.handle))
      uv_close(&l->h.handle, on_listener_close);
  }
}

/* Running out of file descriptors, at most once every 10 s: libuv closes
 * connections it cannot take (its EMFILE trick) without telling anyone, so
 * the warning comes when an accepted fd gets near RLIMIT_NOFILE. */
static void warn_fd_limit(http_server *srv, const char *what) {
  uint64_t now = uv_now(srv->loop);
  if (srv->fd_warned_at && now - srv->fd_warned_at < 10000)
    return;
  srv->fd_warned_at = now ? now : 1;
  http_server__log(srv, 2,
                   "%s near the open-file limit (RLIMIT_NOFILE %llu): at the limit new "
                   "connections are closed at once (raise it: ulimit -n, systemd LimitNOFILE=)",
                   what, (unsigned long long)srv->nofile);
}

static void on_connection(uv_stream_t *server, int status) {
  http_listener *l = server->data;
  http_server *srv = l->srv;
  if (status < 0) {
    if (status == UV_EMFILE || status == UV_ENFILE)
      warn_fd_limit(srv, "accept failed: too many open files,");
    else
      http_server__log(srv, 3, "accept failed: %s", uv_strerror(status));
    return;
  }
  http_conn *c = http_conn_new(srv, l->is_pipe);
  if (c == NULL) {
    http_server__log(srv, 3, "out of memory accepting a connection");
    return;
  }
  if (uv_accept(server, &c->h.stream) != 0 || !srv->accepting) {
    http_conn_close_now(c);
    return;
  }
  uv_os_fd_t fd;
  if (uv_fileno(&c->h.handle, &fd) == 0 && fd >= srv->fd_warn_at)
    warn_fd_limit(srv, "open files are");
  if (!l->is_pipe)
    uv_tcp_nodelay(&c->h.tcp, 1);
  http_conn_start(c);
}

static int add_listener(http_server *srv, http_listener *l) {
  http_listener **v = realloc(srv->listeners, (srv->n_listeners + 1) * sizeof(*v));
  if (v == NULL)
    return UV_ENOMEM;
  srv->listeners = v;
  srv->listeners[srv->n_listeners++] = l;
  srv->n_listeners_open++;
  l->srv = srv;
  l->h.handle.data = l;
  int r = uv_listen(&l->h.stream, srv->cfg.backlog, on_connection);
  if (r < 0)
    uv_close(&l->h.handle, on_listener_close);
  return r;
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (host == NULL || *host == '\0')
    host = "0.0.0.0";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  char buf[64];
  size_t n = strlen(host);
  if (host[0] == '[' && n > 2 && n < sizeof(buf) && host[n - 1] == ']') {
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    host = buf;
  }
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  /* a name: resolved once at startup (blocking is fine here) */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
  int r = getaddrinfo(host, NULL, &hints, &res);
  if (r != 0)
    return UV_EAI_NONAME;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (ss->ss_family == AF_INET)
    ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
  return 0;
}

int http_server_listen_tcp(http_server *srv, const char *host, int port, bool reuse_port) {
  struct sockaddr_storage ss;
  int r = resolve(host, port, &ss);
  if (r)
    return r;
  /* libuv 1.44 has no SO_REUSEPORT flag: make the socket ourselves. */
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
    goto fail;
  if (ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  socklen_t len =
      ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0)
    goto fail;
  http_listener *l = calloc(1, sizeof(*l));
  if (l == NULL) {
    close(fd);
    return UV_ENOMEM;
  }
  uv_tcp_init(srv->loop, &l->h.tcp);
  if ((r = uv_tcp_open(&l->h.tcp, fd)) < 0) {
    close(fd);
    l->srv = srv;
    l->h.handle.data = l;
    srv->n_listeners_open++;
    uv_close(&l->h.handle, on_listener_close);
    return r;
  }
  return add_listener(srv, l);
fail:
  r = -errno;
  close(fd);
  return r;
}

int http_server_listen_unix(http_server *srv, const char *path) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sun.sun_path))
    return UV_ENAMETOOLONG;
  strcpy(sun.sun_path, path);
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
    unlink(path); /* stale socket from an earlier run */
  /* Bound here, not with uv_pipe_bind(), which reports a missing directory
   * (ENOENT) as "permission denied". */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
    int r = -errno;
    close(fd);
    return r;
  }
  http_listener *l = calloc(1, sizeof(*l));
  if (l == NULL) {
    close(fd);
    unlink(path);
    return UV_ENOMEM;
  }
  l->is_pipe = true;
  uv_pipe_init(srv->loop, &l->h.pipe, 0);
  l->srv = srv;
  l->h.handle.data = l;
  l->unlink_path = strdup(path);
  int r = uv_pipe_open(&l->h.pipe, fd);
  if (r < 0) {
    close(fd);
    srv->n_listeners_open++;
    uv_close(&l->h.handle, on_listener_close);
    return r;
  }
  chmod(path, 0666);
  return add_listener(srv, l);
}

int http_server_listen_fd(http_server *srv, int fd) {
  int domain = 0;
  socklen_t len = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
    return -errno;
  http_listener *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return UV_ENOMEM;
  l->is_pipe = domain == AF_UNIX;
  l->srv = srv;
  int r;
  if (l->is_pipe) {
    uv_pipe_init(srv->loop, &l->h.pipe, 0);
    r = uv_pipe_open(&l->h.pipe, fd);
  } else {
    uv_tcp_init(srv->loop, &l->h.tcp);
    r = uv_tcp_open(&l->h.tcp, fd);
  }
  l->h.handle.data = l;
  if (r < 0) {
    srv->n_listeners_open++;
    uv_close(&l->h.handle, on_listener_close);
    return r;
  }
  return add_listener(srv, l);
}

int http_server_port(const http_server *srv) {
  for (size_t i = 0; i < srv->n_listeners; i++) {
    http_listener *l = srv->listeners[i];
    if (l == NULL || l->is_pipe)
      continue;
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &n) != 0)
      continue;
    if (ss.ss_family == AF_INET)
      return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
      return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  return -1;
}

/* ---- stopping --------------------------------------------------------------------- */

/* Connections the kernel completed but nobody accepted yet: served like any
 * other (their clients may have sent a request already) instead of being
 * reset when the socket closes. */
static void accept_backlog(http_server *srv) {
  for (size_t i = 0; i < srv->n_listeners; i++) {
    http_listener *l = srv->listeners[i];
    uv_os_fd_t lfd;
    if (l == NULL || uv_is_closing(&l->h.handle) || uv_fileno(&l->h.handle, &lfd) != 0)
      continue;
    for (int k = 0; k < 65536; k++) {
      int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0)
        break; /* EAGAIN: none left (or EMFILE: no room for more) */
      http_conn *c = http_conn_new(srv, l->is_pipe);
      if (c == NULL) {
        close(fd);
        break;
      }
      if ((l->is_pipe ? uv_pipe_open(&c->h.pipe, fd) : uv_tcp_open(&c->h.tcp, fd)) != 0) {
        close(fd);
        http_conn_close_now(c);
        continue;
      }
      if (!l->is_pipe)
        uv_tcp_nodelay(&c->h.tcp, 1);
      http_conn_start(c);
    }
  }
}

void http_server_shutdown(http_server *srv, void (*on_closed)(http_server *srv)) {
  srv->shutting_down = true;
  srv->on_closed = on_closed;
  if (srv->accepting)
    accept_backlog(srv);
  close_listeners(srv);
  for (http_conn *c = srv->conns, *next; c; c = next) {
    next = c->next;
    http_conn_shutdown(c);
  }
  check_closed(srv);
}

void http_server_hold_output(http_server *srv, bool hold) {
  srv->hold_output = hold;
  if (hold)
    return;
  /* one at a time: releasing may run callbacks that hold again */
  while (srv->n_held > 0) {
    http_conn *c = srv->held[--srv->n_held];
    http_conn_release_output(c);
  }
}

void http_server_abort(http_server *srv) {
  http_server_hold_output(srv, false);
  for (http_conn *c = srv->conns, *next; c; c = next) {
    next = c->next;
    http_conn_close_now(c);
  }
}

void http_server_free(http_server *srv) {
  if (srv == NULL)
    return;
  for (size_t i = 0; i < srv->n_rbuf_pool; i++)
    free(srv->rbuf_pool[i]);
  free(srv->rbuf_pool);
  free(srv->tls_rbuf);
  assert(srv->n_held == 0);
  free(srv->held);
  free(srv->listeners);
  http_buf_free(&srv->fixed_headers);
  free(srv->server_name);
  free(srv);
}
