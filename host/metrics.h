/*
 * metrics: the counters behind --metrics-port, in memory shared by every
 * process of a server, and their Prometheus text exposition (format 0.0.4).
 *
 * Layout: one slot per worker (--workers N: N slots; one without a
 * supervisor). metrics_setup() maps the memory before the supervisor forks,
 * so every worker and every replacement sees the same pages. A worker takes
 * a slot whose process is gone (metrics_claim_slot) and is its only writer:
 * counters are single-writer relaxed atomics (a plain load and store, no
 * locked instruction on the request path), read by whichever process's
 * metrics thread answers a scrape. A slot's counters outlive its processes,
 * so the totals never go back when a worker is replaced; its gauges start
 * again at zero.
 *
 * The request path: metrics_observe() once per response (status class, and
 * for requests that reached the app, the latency histogram), and
 * metrics_set_gauges() once per pump of the server loop (connections,
 * in-flight requests, WebSocket sessions), both no-ops while metrics are off.
 */
#ifndef APPBIN_METRICS_H
#define APPBIN_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Latency buckets (upper bounds, microseconds); +Inf follows. Prometheus's
 * defaults with two finer ones below 5 ms, where a fast app answers. */
#define METRICS_BUCKETS 13
extern const uint64_t metrics_bucket_us[METRICS_BUCKETS];

typedef struct metrics_slot {
  _Atomic int32_t pid;     /* the process serving from it; 0: never used */
  _Atomic uint32_t starts; /* processes that took it */
  /* counters */
  _Atomic uint64_t responses[6]; /* [0]: status outside 1xx..5xx; [k]: kxx */
  _Atomic uint64_t duration_bucket[METRICS_BUCKETS + 1]; /* not cumulative; last: above all */
  _Atomic uint64_t duration_sum_ns;
  _Atomic uint64_t body_bytes;
  /* gauges, zeroed when a process takes the slot */
  _Atomic int64_t connections, in_flight, websockets;
} __attribute__((aligned(64))) metrics_slot;

/* This process's slot, or NULL (metrics off, or a supervisor). */
extern metrics_slot *metrics_self;

/* Maps the shared counters for nslots workers. 0 or -1 (errno). */
int metrics_setup(int nslots);
int metrics_enabled(void);
/* Takes a free slot for this process (after fork). 0, or -1 if none. */
int metrics_claim_slot(void);

static inline void metrics_add_(_Atomic uint64_t *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

/* One response: status (0 for none), body bytes, and the time its request
 * took (start_ns from uv_hrtime(); 0: not timed, no histogram sample). */
void metrics_observe_slow(metrics_slot *m, int status, uint64_t body_bytes, uint64_t start_ns);
static inline void metrics_observe(int status, uint64_t body_bytes, uint64_t start_ns) {
  if (metrics_self)
    metrics_observe_slow(metrics_self, status, body_bytes, start_ns);
}

static inline void metrics_set_gauges(size_t connections, size_t in_flight, size_t websockets) {
  metrics_slot *m = metrics_self;
  if (!m)
    return;
  atomic_store_explicit(&m->connections, (int64_t)connections, memory_order_relaxed);
  atomic_store_explicit(&m->in_flight, (int64_t)in_flight, memory_order_relaxed);
  atomic_store_explicit(&m->websockets, (int64_t)websockets, memory_order_relaxed);
}

/* The exposition of every slot into buf (NUL-terminated); the length, or
 * 0 if cap is too small. metrics_render_bound() bytes are always enough. */
size_t metrics_render(char *buf, size_t cap);
size_t metrics_render_bound(void);

#endif
