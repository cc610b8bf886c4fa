/* metrics_http: the metrics endpoint, a thread of its own with its own libuv
 * loop in each serving process, so that a scrape is answered while the
 * Python loop is busy (or blocked). It answers GET and HEAD of the metrics
 * path with the exposition of every worker's slot (metrics.c), anything
 * else with 404 or 405, and closes each connection after one response. */
#include "metrics_http.h"

#include "applog.h"
#include "cli.h"
#include "metrics.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define HEAD_MAX 8192
#define READ_TIMEOUT_MS 10000

static struct {
  uv_loop_t loop;
  uv_tcp_t listener;
  int fd;
  char path[256];
  size_t path_len;
  const atomic_int *ready; /* listen once *ready != 0 (NULL: at once) */
  char announce[300];      /* logged once listening ("" : not here) */
} M;

typedef struct mconn {
  uv_tcp_t h;
  uv_timer_t timer;
  uv_write_t wr;
  char head[HEAD_MAX];
  size_t len;
  char *response;
  int handles; /* open handles: freed at 0 */
  int answered;
} mconn;

static void on_close(uv_handle_t *h) {
  mconn *c = h->data;
  if (--c->handles == 0) {
    free(c->response);
    free(c);
  }
}

static void conn_close(mconn *c) {
  if (!uv_is_closing((uv_handle_t *)&c->h)) {
    uv_close((uv_handle_t *)&c->h, on_close);
    uv_close((uv_handle_t *)&c->timer, on_close);
  }
}

static void on_written(uv_write_t *wr, int status) {
  (void)status;
  conn_close(wr->data);
}

static void respond(mconn *c, int status, const char *reason, const char *extra, int head_only) {
  const size_t head_room = 512;
  size_t cap = head_room + (status == 200 ? metrics_render_bound() : 256);
  char *resp = malloc(cap);
  if (!resp) {
    conn_close(c);
    return;
  }
  size_t body_len;
  if (status == 200 && (body_len = metrics_render(resp + head_room, cap - head_room)) == 0) {
    status = 500; /* cannot happen with metrics_render_bound(); never a cut exposition */
    reason = "Internal Server Error";
    head_only = 0;
  }
  if (status != 200) {
    body_len = (size_t)snprintf(resp + head_room, cap - head_room, "%s\n", reason);
  }
  char head[512];
  int hn = snprintf(head, sizeof(head),
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                    "Connection: close\r\n\r\n",
                    status, reason,
                    status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                  : "text/plain; charset=utf-8",
                    body_len, extra);
  /* head right before the body, in the same buffer */
  char *start = resp + head_room - (size_t)hn;
  memcpy(start, head, (size_t)hn);
  c->response = resp;
  c->answered = 1;
  uv_buf_t buf = uv_buf_init(start, (unsigned)((size_t)hn + (head_only ? 0 : body_len)));
  c->wr.data = c;
  uv_read_stop((uv_stream_t *)&c->h);
  if (uv_write(&c->wr, (uv_stream_t *)&c->h, &buf, 1, on_written) != 0)
    conn_close(c);
}

/* The request line: METHOD SP target SP HTTP/1.x */
static void handle(mconn *c) {
  char *line_end = memchr(c->head, '\n', c->len);
  size_t n = (size_t)(line_end - c->head);
  if (n && c->head[n - 1] == '\r')
    n--;
  const char *sp1 = memchr(c->head, ' ', n);
  const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - c->head)) : NULL;
  if (!sp1 || !sp2 || (size_t)(c->head + n - sp2) != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
    respond(c, 400, "Bad Request", "", 0);
    return;
  }
  size_t mlen = (size_t)(sp1 - c->head);
  int is_get = mlen == 3 && memcmp(c->head, "GET", 3) == 0;
  int is_head = mlen == 4 && memcmp(c->head, "HEAD", 4) == 0;
  const char *target = sp1 + 1;
  size_t tlen = (size_t)(sp2 - target);
  const char *q = memchr(target, '?', tlen);
  size_t plen = q ? (size_t)(q - target) : tlen;
  if (plen != M.path_len || memcmp(target, M.path, plen) != 0)
    respond(c, 404, "Not Found", "", is_head);
  else if (!is_get && !is_head)
    respond(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", 0);
  else
    respond(c, 200, "OK", "", is_head);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  mconn *c = h->data;
  *buf = uv_buf_init(c->head + c->len, (unsigned)(HEAD_MAX - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  mconn *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (c->answered)
    return;
  c->len += (size_t)nread;
  if (memchr(c->head, '\n', c->len) &&
      (memmem(c->head, c->len, "\r\n\r\n", 4) || memmem(c->head, c->len, "\n\n", 2))) {
    handle(c);
  } else if (c->len == HEAD_MAX) {
    respond(c, 431, "Request Header Fields Too Large", "", 0);
  }
}

static void on_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  mconn *c = calloc(1, sizeof(*c));
  if (!c)
    return;
  uv_tcp_init(&M.loop, &c->h);
  uv_timer_init(&M.loop, &c->timer);
  c->h.data = c->timer.data = c;
  c->handles = 2;
  if (uv_accept(server, (uv_stream_t *)&c->h) != 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, READ_TIMEOUT_MS, 0);
  uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read);
}

static void *thread_main(void *arg) {
  (void)arg;
  /* A single process checks its payload beside the interpreter's start-up:
   * nothing listens before every byte is verified (damage ends the process). */
  while (M.ready && !atomic_load(M.ready)) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  int rc = uv_listen((uv_stream_t *)&M.listener, 128, on_connection);
  if (rc != 0) {
    applog(LOG_ERROR, "cannot serve metrics: %s", uv_strerror(rc));
    return NULL;
  }
  if (M.announce[0])
    applog(LOG_INFO, "Metrics on %s", M.announce);
  uv_run(&M.loop, UV_RUN_DEFAULT);
  return NULL;
}

int metrics_http_bind(const char *host, int port, char *where, size_t wlen) {
  char portstr[16];
  snprintf(portstr, sizeof(portstr), "%d", port);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
  int gai = getaddrinfo(*host ? host : NULL, portstr, &hints, &res);
  if (gai != 0) {
    applog(LOG_ERROR, "cannot listen for metrics on %s:%d: %s", host, port, gai_strerror(gai));
    return -1;
  }
  int fd = -1, err = 0;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
                    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)) {
      err = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) {
    applog(LOG_ERROR, "cannot listen for metrics on %s:%d: %s", host, port,
           strerror(err ? err : EADDRNOTAVAIL));
    return -1;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  char h[NI_MAXHOST] = "?", p[NI_MAXSERV] = "?";
  if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
    getnameinfo((struct sockaddr *)&ss, len, h, sizeof(h), p, sizeof(p),
                NI_NUMERICHOST | NI_NUMERICSERV);
  snprintf(where, wlen, strchr(h, ':') ? "http://[%s]:%s" : "http://%s:%s", h, p);
  return fd;
}

int metrics_http_listen(int fd) {
  if (listen(fd, 128) != 0) {
    applog(LOG_ERROR, "cannot listen for metrics: %s", strerror(errno));
    return -1;
  }
  return 0;
}

int metrics_http_start(int fd, const char *path, const atomic_int *ready, const char *announce) {
  snprintf(M.path, sizeof(M.path), "%s", path);
  M.path_len = strlen(M.path);
  M.fd = fd;
  M.ready = ready;
  snprintf(M.announce, sizeof(M.announce), "%s", announce ? announce : "");
  int rc = uv_loop_init(&M.loop);
  if (rc == 0)
    rc = uv_tcp_init(&M.loop, &M.listener);
  if (rc == 0)
    rc = uv_tcp_open(&M.listener, fd);
  if (rc != 0) {
    applog(LOG_ERROR, "cannot serve metrics: %s", uv_strerror(rc));
    return -1;
  }
  /* The thread takes no signals: they belong to the server's loop. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t tid;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  rc = pthread_create(&tid, &attr, thread_main, NULL);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    applog(LOG_ERROR, "cannot start the metrics thread: %s", strerror(rc));
    return -1;
  }
  return 0;
}
