/* http-test-server: the HTTP layer with a C handler, for end-to-end tests
 * and benchmarks before the Python side exists.
 *
 * Routes:
 *   /               "Hello, world!" (after reading the body)
 *   /echo           streams the request body back (chunked), honouring
 *                   backpressure both ways
 *   /count          reads the body, answers its length
 *   /chunked        a chunked response in three pieces
 *   /slow-body      reads the body one piece per 20 ms (pause/resume)
 *   /stream?n=N     N MiB of 'x' (chunked), waiting for on_drain
 *   /sendfile?path=P  the file P via sendfile
 *   /info           request fields, one per line
 *   /hold           never answers; released when the client goes away
 *   /abort          starts a response, sends some bytes, aborts
 *   /error          aborts before starting (the layer answers 500)
 *   /close          answers with "connection: close"
 *   /big-headers    a response with a 20 KiB header
 *   /bad-header     tries an invalid response header, then answers 500
 *
 * Options: --host H --port P --uds PATH --fd N --reuse-port
 *   --limit-concurrency N --limit-max-requests N --keep-alive-timeout S
 *   --header-timeout S --header NAME:VALUE --no-server-header
 *   --no-date-header --max-head N --max-headers N --read-buffer N
 * Prints "listening on PORT" when ready; SIGTERM/SIGINT stop gracefully.
 */
#include "http.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum {
  R_HELLO,
  R_ECHO,
  R_COUNT,
  R_CHUNKED,
  R_SLOW,
  R_STREAM,
  R_SENDFILE,
  R_INFO,
  R_HOLD,
  R_ABORT,
  R_ERROR,
  R_CLOSE,
  R_BIGHDR,
  R_BADHDR,
  R_404
} route;

typedef struct handler {
  http_request *req;
  route route;
  uint64_t count;
  uint64_t stream_left;
  uv_timer_t timer;
  bool timer_on;
  bool done; /* terminal call made */
  bool paused_for_drain;
  char path[512];
} handler;

static uv_loop_t *loop;
static http_server *server;
static const http_header text_plain = {"content-type", 12, "text/plain", 10};

static bool query_get(const http_request *r, const char *key, char *out, size_t n) {
  size_t kl = strlen(key);
  const char *q = r->query, *end = r->query + r->query_len;
  while (q < end) {
    const char *amp = memchr(q, '&', (size_t)(end - q));
    if (amp == NULL)
      amp = end;
    if ((size_t)(amp - q) > kl && memcmp(q, key, kl) == 0 && q[kl] == '=') {
      size_t vl = (size_t)(amp - q) - kl - 1;
      if (vl >= n)
        vl = n - 1;
      memcpy(out, q + kl + 1, vl);
      out[vl] = '\0';
      return true;
    }
    q = amp + 1;
  }
  return false;
}

static bool path_is(const http_request *r, const char *p) {
  return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static void on_timer_closed(uv_handle_t *h) { free(h->data); }

static void handler_free(handler *h) {
  if (h->timer_on) {
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
  } else {
    free(h);
  }
}

static void respond_text(handler *h, int status, const char *text) {
  if (h->done)
    return;
  h->done = true;
  if (http_response_start(h->req, status, &text_plain, 1) == 0)
    http_response_write(h->req, text, strlen(text), false);
  else
    http_response_abort(h->req);
}

static void stream_more(handler *h) {
  static char block[65536];
  if (block[0] != 'x')
    memset(block, 'x', sizeof(block));
  while (!h->done) {
    size_t n = h->stream_left < sizeof(block) ? h->stream_left : sizeof(block);
    h->stream_left -= n;
    bool more = h->stream_left > 0;
    if (!more) {
      h->done = true;
      http_response_write(h->req, block, n, false); /* frees h */
      return;
    }
    if (http_response_write(h->req, block, n, true) != 0)
      return; /* 1: wait for on_drain; < 0: disconnected */
  }
}

static void on_slow_timer(uv_timer_t *t) {
  handler *h = t->data;
  http_request_body_resume(h->req);
}

static void on_request(http_request *req) {
  handler *h = calloc(1, sizeof(*h));
  h->req = req;
  req->user = h;
  static const struct {
    const char *path;
    route r;
  } routes[] = {{"/", R_HELLO},
                {"/echo", R_ECHO},
                {"/count", R_COUNT},
                {"/chunked", R_CHUNKED},
                {"/slow-body", R_SLOW},
                {"/stream", R_STREAM},
                {"/sendfile", R_SENDFILE},
                {"/info", R_INFO},
                {"/hold", R_HOLD},
                {"/abort", R_ABORT},
                {"/error", R_ERROR},
                {"/close", R_CLOSE},
                {"/big-headers", R_BIGHDR},
                {"/bad-header", R_BADHDR}};
  h->route = R_404;
  for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
    if (path_is(req, routes[i].path))
      h->route = routes[i].r;
  char arg[512];
  switch (h->route) {
  case R_ECHO:
    http_response_start(req, 200, &text_plain, 1);
    http_request_body_resume(req);
    break;
  case R_SLOW:
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->timer_on = true;
    http_request_body_resume(req);
    break;
  case R_STREAM:
    h->stream_left = (query_get(req, "n", arg, sizeof(arg)) ? strtoull(arg, NULL, 10) : 1) << 20;
    http_response_start(req, 200, &text_plain, 1);
    stream_more(h);
    break;
  case R_SENDFILE: {
    if (!query_get(req, "path", arg, sizeof(arg))) {
      respond_text(h, 400, "path?");
      break;
    }
    int fd = open(arg, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      respond_text(h, 404, "no such file");
      break;
    }
    http_response_start(req, 200, NULL, 0);
    h->done = true;
    http_response_sendfile(req, fd, 0, -1, false);
    break;
  }
  case R_ABORT:
    http_response_start(req, 200, &text_plain, 1);
    http_response_write(req, "partial", 7, true);
    http_response_flush(req);
    h->done = true;
    http_response_abort(req);
    break;
  case R_ERROR:
    h->done = true;
    http_response_abort(req);
    break;
  case R_HOLD:
    break;
  default:
    http_request_body_resume(req); /* sends 100 Continue when expected */
    break;
  }
}

static void on_body(http_request *req, const char *data, size_t len) {
  handler *h = req->user;
  h->count += len;
  if (h->route == R_ECHO && !h->done) {
    if (http_response_write(req, data, len, true) == 1) {
      h->paused_for_drain = true;
      http_request_body_pause(req);
    }
  } else if (h->route == R_SLOW) {
    http_request_body_pause(req);
    uv_timer_start(&h->timer, on_slow_timer, 20, 0);
  }
}

static void on_body_end(http_request *req) {
  handler *h = req->user;
  char buf[4096];
  switch (h->route) {
  case R_HELLO:
    respond_text(h, 200, "Hello, world!");
    break;
  case R_ECHO:
    if (!h->done) {
      h->done = true;
      http_response_write(req, NULL, 0, false);
    }
    break;
  case R_COUNT:
  case R_SLOW:
    snprintf(buf, sizeof(buf), "received %llu", (unsigned long long)h->count);
    respond_text(h, 200, buf);
    break;
  case R_CHUNKED:
    h->done = true;
    http_response_start(req, 200, &text_plain, 1);
    http_response_write(req, "one,", 4, true);
    http_response_write(req, "two,", 4, true);
    http_response_write(req, "three", 5, false);
    break;
  case R_INFO: {
    int n = snprintf(buf, sizeof(buf),
                     "method=%s\ntarget=%.*s\npath=%.*s\nquery=%.*s\nversion=%d.%d\n"
                     "content_length=%lld\nchunked=%d\nkeep_alive=%d\nexpect=%d\nupgrade=%d\n"
                     "client=%s:%d\nserver=%s:%d\nbody=%llu\n",
                     req->method, (int)req->target_len, req->target, (int)req->path_len, req->path,
                     (int)req->query_len, req->query, req->version_major, req->version_minor,
                     (long long)req->content_length, req->chunked, req->keep_alive,
                     req->expect_continue, req->upgrade, req->client_host, req->client_port,
                     req->server_host, req->server_port, (unsigned long long)h->count);
    for (size_t i = 0; i < req->n_headers && n < (int)sizeof(buf) - 1; i++)
      n +=
          snprintf(buf + n, sizeof(buf) - (size_t)n, "h:%.*s=%.*s\n", (int)req->headers[i].name_len,
                   req->headers[i].name, (int)req->headers[i].value_len, req->headers[i].value);
    respond_text(h, 200, buf);
    break;
  }
  case R_CLOSE: {
    http_header hs[2] = {text_plain, {"connection", 10, "close", 5}};
    h->done = true;
    http_response_start(req, 200, hs, 2);
    http_response_write(req, "bye", 3, false);
    break;
  }
  case R_BIGHDR: {
    static char big[20480];
    memset(big, 'v', sizeof(big));
    http_header hs[2] = {text_plain, {"x-big", 5, big, sizeof(big)}};
    h->done = true;
    http_response_start(req, 200, hs, 2);
    http_response_write(req, "big", 3, false);
    break;
  }
  case R_BADHDR: {
    http_header bad = {"x-bad", 5, "a\r\nx-injected: 1", 17};
    int r = http_response_start(req, 200, &bad, 1);
    snprintf(buf, sizeof(buf), "rejected: %s", http_strerror(r));
    respond_text(h, r ? 500 : 200, buf);
    break;
  }
  case R_404:
    respond_text(h, 404, "Not Found");
    break;
  default:
    break;
  }
}

static void on_disconnect(http_request *req) {
  handler *h = req->user;
  if (!h->done) {
    h->done = true;
    http_response_abort(req);
  }
}

static void on_drain(http_request *req) {
  handler *h = req->user;
  if (h->route == R_STREAM)
    stream_more(h);
  else if (h->route == R_ECHO && h->paused_for_drain) {
    h->paused_for_drain = false;
    http_request_body_resume(req);
  }
}

static void on_request_done(http_request *req) { handler_free(req->user); }

static uv_signal_t sig_term, sig_int;

static void on_closed(http_server *srv) {
  (void)srv;
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  static int count;
  (void)s;
  (void)signum;
  if (count++ == 0)
    http_server_shutdown(server, on_closed); /* graceful */
  else
    http_server_abort(server); /* second signal: cut in-flight requests */
}

static void on_max_requests(http_server *srv) { http_server_shutdown(srv, on_closed); }

static void on_log(http_server *srv, int level, const char *msg) {
  (void)srv;
  if (level >= 1)
    fprintf(stderr, "[%d] %s\n", level, msg);
}

int main(int argc, char **argv) {
  http_config cfg;
  http_config_init(&cfg);
  const char *host = "127.0.0.1", *uds = NULL;
  int port = 8000, fd = -1;
  bool reuse_port = false;
  http_header extra[16];
  size_t n_extra = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : "";
#define OPT(name) (strcmp(a, name) == 0 && ++i)
    if (OPT("--host"))
      host = v;
    else if (OPT("--port"))
      port = atoi(v);
    else if (OPT("--uds"))
      uds = v;
    else if (OPT("--fd"))
      fd = atoi(v);
    else if (strcmp(a, "--reuse-port") == 0)
      reuse_port = true;
    else if (OPT("--limit-concurrency"))
      cfg.limit_concurrency = strtoul(v, NULL, 10);
    else if (OPT("--limit-max-requests"))
      cfg.limit_max_requests = strtoull(v, NULL, 10);
    else if (OPT("--keep-alive-timeout"))
      cfg.keep_alive_timeout_ms = (uint64_t)(atof(v) * 1000);
    else if (OPT("--header-timeout"))
      cfg.header_timeout_ms = (uint64_t)(atof(v) * 1000);
    else if (OPT("--max-head"))
      cfg.max_head_size = strtoul(v, NULL, 10);
    else if (OPT("--max-headers"))
      cfg.max_headers = strtoul(v, NULL, 10);
    else if (OPT("--read-buffer"))
      cfg.read_buffer_size = strtoul(v, NULL, 10);
    else if (strcmp(a, "--no-server-header") == 0)
      cfg.server_header = false;
    else if (strcmp(a, "--no-date-header") == 0)
      cfg.date_header = false;
    else if (OPT("--header") && n_extra < 16) {
      const char *colon = strchr(v, ':');
      if (colon == NULL) {
        fprintf(stderr, "--header NAME:VALUE\n");
        return 2;
      }
      extra[n_extra++] = (http_header){v, (size_t)(colon - v), colon + 1, strlen(colon + 1)};
    } else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
  }
  cfg.default_headers = extra;
  cfg.n_default_headers = n_extra;
  loop = uv_default_loop();
  http_callbacks cb = {.on_request = on_request,
                       .on_body = on_body,
                       .on_body_end = on_body_end,
                       .on_disconnect = on_disconnect,
                       .on_drain = on_drain,
                       .on_request_done = on_request_done,
                       .on_max_requests = on_max_requests,
                       .on_log = on_log};
  server = http_server_new(loop, &cfg, &cb, NULL);
  if (server == NULL) {
    fprintf(stderr, "invalid configuration\n");
    return 2;
  }
  int r;
  if (uds)
    r = http_server_listen_unix(server, uds);
  else if (fd >= 0)
    r = http_server_listen_fd(server, fd);
  else
    r = http_server_listen_tcp(server, host, port, reuse_port);
  if (r < 0) {
    fprintf(stderr, "listen: %s\n", http_strerror(r));
    return 1;
  }
  uv_signal_init(loop, &sig_term);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  printf("listening on %d\n", uds ? 0 : http_server_port(server));
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  http_server_free(server);
  uv_loop_close(loop);
  return 0;
}
