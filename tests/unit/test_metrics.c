/* metrics: slots claimed by processes (a fresh slot first, then one whose
 * process is gone: a restart), counters that survive a restart while gauges
 * start again, the status classes and latency buckets, and the exposition
 * text (HELP/TYPE lines, cumulative buckets, +Inf equal to _count, the sum in
 * seconds, per-worker RSS only for live workers). */
#include "check.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

static char text[65536];

static const char *render(void) {
  size_t n = metrics_render(text, sizeof(text));
  CHECK(n > 0 && n == strlen(text));
  CHECK(n < metrics_render_bound());
  return text;
}

static int has_line(const char *line) {
  char want[256];
  snprintf(want, sizeof(want), "\n%s\n", line);
  return strstr(text, want) != NULL;
}
#define CHECK_LINE(line) check_report_(has_line(line), __FILE__, __LINE__, "line \"%s\"", line)

/* A child claims a slot, observes a request, and exits; returns its status. */
static int child_serves(int status_code) {
  pid_t pid = fork();
  if (pid == 0) {
    if (metrics_claim_slot() != 0)
      _exit(3);
    metrics_set_gauges(5, 2, 1);
    metrics_observe(status_code, 10, 0);
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_off(void) {
  CHECK_EQ_INT(metrics_enabled(), 0);
  CHECK_EQ_INT(metrics_claim_slot(), 0); /* nothing to claim: a no-op */
  CHECK(metrics_self == NULL);
  metrics_observe(200, 1, uv_hrtime()); /* no-ops */
  metrics_set_gauges(1, 1, 1);
}

static void test_slots_and_exposition(void) {
  if (!CHECK_EQ_INT(metrics_setup(2), 0))
    return;
  CHECK_EQ_INT(metrics_enabled(), 1);
  /* this process serves from slot 0 */
  CHECK_EQ_INT(metrics_claim_slot(), 0);
  CHECK(metrics_self != NULL);
  uint64_t start = uv_hrtime() - 3000000; /* 3 ms ago: the 0.005 bucket */
  metrics_observe(200, 100, start);
  metrics_observe(204, 0, uv_hrtime());
  metrics_observe(404, 9, 0); /* not timed: counted, no histogram sample */
  metrics_observe(503, 19, 0);
  metrics_observe(101, 0, 0);
  metrics_observe(0, 0, 0);
  metrics_observe(1000, 0, 0);
  metrics_observe(500, 21, uv_hrtime() - 20000000000ull); /* 20 s: above every bucket */
  metrics_set_gauges(3, 1, 2);
  render();
  CHECK(strncmp(text, "# HELP appbin_http_requests_total ", 34) == 0);
  CHECK_LINE("# TYPE appbin_http_requests_total counter");
  CHECK_LINE("appbin_http_requests_total{status=\"1xx\"} 1");
  CHECK_LINE("appbin_http_requests_total{status=\"2xx\"} 2");
  CHECK_LINE("appbin_http_requests_total{status=\"4xx\"} 1");
  CHECK_LINE("appbin_http_requests_total{status=\"5xx\"} 2");
  CHECK_LINE("appbin_http_requests_total{status=\"other\"} 2");
  CHECK_LINE("# TYPE appbin_http_request_duration_seconds histogram");
  CHECK_LINE("appbin_http_request_duration_seconds_bucket{le=\"0.001\"} 1");
  CHECK_LINE("appbin_http_request_duration_seconds_bucket{le=\"0.0025\"} 1");
  CHECK_LINE("appbin_http_request_duration_seconds_bucket{le=\"0.005\"} 2");
  CHECK_LINE("appbin_http_request_duration_seconds_bucket{le=\"10\"} 2");
  CHECK_LINE("appbin_http_request_duration_seconds_bucket{le=\"+Inf\"} 3");
  CHECK_LINE("appbin_http_request_duration_seconds_count 3");
  CHECK(strstr(text, "\nappbin_http_request_duration_seconds_sum 20.0") != NULL);
  CHECK_LINE("appbin_http_response_body_bytes_total 149");
  CHECK_LINE("appbin_http_requests_in_flight 1");
  CHECK_LINE("appbin_http_connections 3");
  CHECK_LINE("appbin_websocket_sessions 2");
  CHECK_LINE("appbin_workers 1");
  CHECK_LINE("appbin_worker_restarts_total 0");
  CHECK(strstr(text, "\nappbin_worker_resident_memory_bytes{worker=\"0\"} ") != NULL);
  CHECK(strstr(text, "{worker=\"1\"}") == NULL);
  /* every family has HELP and TYPE */
  int helps = 0, types = 0;
  for (const char *p = text; (p = strstr(p, "# HELP ")) != NULL; p++)
    helps++;
  for (const char *p = text; (p = strstr(p, "# TYPE ")) != NULL; p++)
    types++;
  CHECK_EQ_INT(helps, 9);
  CHECK_EQ_INT(types, 9);

  /* a worker in slot 1 exits; its replacement takes slot 1 again: one
   * restart, its counters kept, its gauges (of a dead process) not shown */
  CHECK_EQ_INT(child_serves(200), 0);
  render();
  CHECK_LINE("appbin_http_requests_total{status=\"2xx\"} 3");
  CHECK_LINE("appbin_worker_restarts_total 0");
  CHECK_LINE("appbin_workers 1");
  CHECK_LINE("appbin_http_connections 3");
  CHECK_EQ_INT(child_serves(201), 0);
  render();
  CHECK_LINE("appbin_http_requests_total{status=\"2xx\"} 4");
  CHECK_LINE("appbin_worker_restarts_total 1");
  /* no slot while every slot's process lives: a worker holds slot 1 */
  int hold[2];
  if (!CHECK(pipe(hold) == 0))
    return;
  pid_t holder = fork();
  if (holder == 0) {
    char c;
    close(hold[1]);
    _exit(metrics_claim_slot() == 0 && read(hold[0], &c, 1) == 0 ? 0 : 4);
  }
  close(hold[0]);
  usleep(100000);
  CHECK_EQ_INT(child_serves(302), 3); /* no free slot */
  render();
  CHECK_LINE("appbin_workers 2");
  CHECK(strstr(text, "\nappbin_worker_resident_memory_bytes{worker=\"1\"} ") != NULL);
  close(hold[1]);
  int st;
  waitpid(holder, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  render();
  CHECK_LINE("appbin_worker_restarts_total 2");
  CHECK_LINE("appbin_workers 1");
  /* a buffer too small gives 0, not a cut exposition */
  char small[64];
  CHECK_EQ_INT((long long)metrics_render(small, sizeof(small)), 0);
}

int main(void) {
  test_off();
  test_slots_and_exposition();
  return check_summary();
}
