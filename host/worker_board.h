/*
 * worker_board: the worker's side of the --workers supervisor's board, the
 * shared memory through which a worker says it serves and that its event
 * loop is alive (host/workers.c). Everything is a no-op (or 0) in a process
 * that is not a supervised worker. No cli.h here: the ASGI files use it.
 */
#ifndef APPBIN_WORKER_BOARD_H
#define APPBIN_WORKER_BOARD_H

#include <stdint.h>

/* Whether this process is a supervised worker. */
int workers_is_worker(void);
/* The worker serves (its server is listening): from now on a failure is no
 * longer a start-up failure, and its loop's beats are checked. */
void workers_serving(void);
/* The worker started its graceful stop (the supervisor need not relay one). */
void workers_stopping(void);
/* Seconds between the beats the supervisor expects from the event loop (0:
 * none: not a worker, or the healthcheck is off). */
double workers_beat_interval(void);
/* The event loop is alive (call it from a timer of that loop). */
void workers_beat(void);
/* Workers the supervisor replaced so far (crashed, blocked, restarted after a
 * start-up failure or --limit-max-requests); readable from any worker. */
uint64_t workers_restarts(void);

#endif
