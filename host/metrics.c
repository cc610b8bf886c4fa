#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uv.h>

const uint64_t metrics_bucket_us[METRICS_BUCKETS] = {
    1000,   2500,   5000,    10000,   25000,   50000,    100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
static const char *const bucket_labels[METRICS_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",
};

metrics_slot *metrics_self;
static metrics_slot *slots;
static int nslots;

int metrics_setup(int n) {
  size_t size = (size_t)n * sizeof(metrics_slot);
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return -1;
  slots = p; /* zero-filled */
  nslots = n;
  return 0;
}

int metrics_enabled(void) { return slots != NULL; }

static int pid_alive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

int metrics_claim_slot(void) {
  if (!slots)
    return 0;
  int32_t self = (int32_t)getpid();
  /* A never used slot first, then one whose process is gone (the
   * supervisor reaps a worker before it starts the replacement). */
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < nslots; i++) {
      metrics_slot *m = &slots[i];
      int32_t pid = atomic_load(&m->pid);
      if (pass == 0 ? pid != 0 : pid == 0 || pid == self || pid_alive(pid))
        continue;
      if (!atomic_compare_exchange_strong(&m->pid, &pid, self))
        continue;
      atomic_store(&m->connections, 0);
      atomic_store(&m->in_flight, 0);
      atomic_store(&m->websockets, 0);
      atomic_fetch_add(&m->starts, 1);
      metrics_self = m;
      return 0;
    }
  }
  return -1;
}

void metrics_observe_slow(metrics_slot *m, int status, uint64_t body_bytes, uint64_t start_ns) {
  int cls = status / 100;
  metrics_add_(&m->responses[cls >= 1 && cls <= 5 ? cls : 0], 1);
  metrics_add_(&m->body_bytes, body_bytes);
  if (!start_ns)
    return;
  uint64_t ns = uv_hrtime() - start_ns, us = ns / 1000;
  int b = 0;
  while (b < METRICS_BUCKETS && us > metrics_bucket_us[b])
    b++;
  metrics_add_(&m->duration_bucket[b], 1);
  metrics_add_(&m->duration_sum_ns, ns);
}

/* ---- exposition ---------------------------------------------------------------- */

typedef struct out {
  char *buf;
  size_t cap, len;
  int overflow;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...) {
  if (o->overflow)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= o->cap - o->len)
    o->overflow = 1;
  else
    o->len += (size_t)n;
}

static void help(out *o, const char *name, const char *type, const char *text) {
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* Resident set size of a process in bytes, 0 if unknown. */
static uint64_t rss_bytes(pid_t pid) {
  char path[40], text[128];
  snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, text, sizeof(text) - 1);
  close(fd);
  if (n <= 0)
    return 0;
  text[n] = '\0';
  unsigned long long size, resident;
  if (sscanf(text, "%llu %llu", &size, &resident) != 2)
    return 0;
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* about 4 KiB of fixed text, and a line under 100 bytes per worker */
size_t metrics_render_bound(void) { return 8192 + 128 * (size_t)nslots; }

size_t metrics_render(char *buf, size_t cap) {
  out o = {buf, cap, 0, 0};
  if (cap == 0)
    return 0;
  buf[0] = '\0';
  uint64_t responses[6] = {0}, buckets[METRICS_BUCKETS + 1] = {0}, sum_ns = 0, bytes = 0;
  int64_t connections = 0, in_flight = 0, websockets = 0;
  uint64_t restarts = 0;
  int alive[1024]; /* --workers is at most 1024 */
  int nalive = 0;
  for (int i = 0; i < nslots; i++) {
    metrics_slot *m = &slots[i];
    for (int k = 0; k < 6; k++)
      responses[k] += LOAD(m->responses[k]);
    for (int k = 0; k <= METRICS_BUCKETS; k++)
      buckets[k] += LOAD(m->duration_bucket[k]);
    sum_ns += LOAD(m->duration_sum_ns);
    bytes += LOAD(m->body_bytes);
    uint32_t starts = LOAD(m->starts);
    restarts += starts > 1 ? starts - 1 : 0;
    int32_t pid = LOAD(m->pid);
    if (pid_alive(pid)) {
      connections += LOAD(m->connections);
      in_flight += LOAD(m->in_flight);
      websockets += LOAD(m->websockets);
      if (nalive < (int)(sizeof(alive) / sizeof(alive[0])))
        alive[nalive++] = i;
    }
  }
  help(&o, "appbin_http_requests_total", "counter",
       "Requests answered, by status class (the server's own 400, 431 and 503 too).");
  static const char *const classes[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (int k = 1; k <= 6; k++)
    put(&o, "appbin_http_requests_total{status=\"%s\"} %llu\n", classes[k % 6],
        (unsigned long long)responses[k % 6]);
  help(&o, "appbin_http_request_duration_seconds", "histogram",
       "Time from a request's head to the end of its response, for requests the app answered.");
  uint64_t cumulative = 0;
  for (int k = 0; k < METRICS_BUCKETS; k++) {
    cumulative += buckets[k];
    put(&o, "appbin_http_request_duration_seconds_bucket{le=\"%s\"} %llu\n", bucket_labels[k],
        (unsigned long long)cumulative);
  }
  cumulative += buckets[METRICS_BUCKETS];
  put(&o, "appbin_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
      (unsigned long long)cumulative);
  put(&o, "appbin_http_request_duration_seconds_sum %llu.%09llu\n",
      (unsigned long long)(sum_ns / 1000000000u), (unsigned long long)(sum_ns % 1000000000u));
  put(&o, "appbin_http_request_duration_seconds_count %llu\n", (unsigned long long)cumulative);
  help(&o, "appbin_http_response_body_bytes_total", "counter", "Response body bytes sent.");
  put(&o, "appbin_http_response_body_bytes_total %llu\n", (unsigned long long)bytes);
  help(&o, "appbin_http_requests_in_flight", "gauge", "Requests being answered.");
  put(&o, "appbin_http_requests_in_flight %lld\n", (long long)in_flight);
  help(&o, "appbin_http_connections", "gauge", "Open client connections (WebSocket ones too).");
  put(&o, "appbin_http_connections %lld\n", (long long)connections);
  help(&o, "appbin_websocket_sessions", "gauge", "Open WebSocket sessions.");
  put(&o, "appbin_websocket_sessions %lld\n", (long long)websockets);
  help(&o, "appbin_workers", "gauge", "Worker processes running.");
  put(&o, "appbin_workers %d\n", nalive);
  help(&o, "appbin_worker_restarts_total", "counter",
       "Worker processes started to replace one that exited.");
  put(&o, "appbin_worker_restarts_total %llu\n", (unsigned long long)restarts);
  help(&o, "appbin_worker_resident_memory_bytes", "gauge", "Resident set size of each worker.");
  for (int k = 0; k < nalive; k++) {
    int32_t pid = LOAD(slots[alive[k]].pid);
    put(&o, "appbin_worker_resident_memory_bytes{worker=\"%d\"} %llu\n", alive[k],
        (unsigned long long)rss_bytes(pid));
  }
  return o.overflow ? 0 : o.len;
}
