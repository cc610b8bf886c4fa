/*
 * applog: app.bin's own log lines on stderr, written in C: uvicorn's
 * "LEVEL:    message" text (level names coloured when asked) or one JSON
 * object a line ({"time", "level", "logger", "message"}). The supervisor,
 * the env file loader, the metrics endpoint and the ASGI server's C side
 * (asgi_log.c) write through it, so that every line of a process has the
 * same shape; the runtime's Python formatters produce the same shapes.
 *
 * Levels are cli_log_level values (0 trace .. 5 critical). Thread-safe:
 * each line is one fwrite() on stderr.
 */
#ifndef APPBIN_APPLOG_H
#define APPBIN_APPLOG_H

#include <stddef.h>

/* Sets the level (a cli_log_level), JSON or text, and colours (use_colors
 * -1: when stderr is a terminal, as uvicorn decides). Before any call, lines
 * are INFO+, text, without colours. */
void applog_setup(int level, int json, int use_colors);
int applog_enabled(int level);
int applog_is_json(void);
int applog_colors(void);

/* One line on the "uvicorn.error" logger, as uvicorn's own messages. */
void applog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with the message given whole (not a format). */
void applog_message(int level, const char *logger, const char *msg);

/* "INFO:     " (coloured when colours are on): uvicorn's %(levelprefix)s
 * followed by its space. */
const char *applog_level_prefix(int level);
/* "INFO", "WARNING"... */
const char *applog_level_name(int level);

/* The current time as ISO 8601 UTC with milliseconds, "2026-12-05T00:33:23.123Z"
 * (24 bytes and a NUL; out must hold 25). */
void applog_time(char out[25]);

/* Appends s[0..n) to out as the inside of a JSON string (quotes, backslashes
 * and control characters escaped; bytes that are not UTF-8 become U+FFFD),
 * writing at most cap - 1 bytes and a NUL, never cutting an escape in half.
 * Returns the bytes written. */
size_t applog_json_escape(char *out, size_t cap, const char *s, size_t n);

#endif
