/* asgi_log: log lines in uvicorn's format on stderr, exceptions with their
 * tracebacks through the runtime, and the access log, buffered per pump. */
#include "asgi_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const level_tags[] = {
    "TRACE:    ", "DEBUG:    ", "INFO:     ", "WARNING:  ", "ERROR:    ", "CRITICAL: "};

/* Interned strings, created once. */
static struct { PyObject *log_exception; } S;

static int strings_init(void) {
  static const asgi_intern_entry table[] = {
      {&S.log_exception, "log_exception"},
  };
  return ASGI_INTERN(table);
}

int asgi_log_init(void) { return strings_init(); }

void asgi_log(ServerObject *s, int level, const char *fmt, ...) {
  if (level < s->log_level)
    return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s%s\n", level_tags[level], msg);
}

/* Logs the current Python exception with a traceback, through the runtime. */
void asgi_log_current_exception(ServerObject *s, const char *msg) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb && value)
    PyException_SetTraceback(value, tb);
  asgi_log_exception(s, msg, value ? value : Py_None);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
}

void asgi_log_exception(ServerObject *s, const char *msg, PyObject *exc) {
  PyObject *text = PyUnicode_FromString(msg);
  PyObject *r =
      text ? PyObject_CallMethodObjArgs(s->runtime, S.log_exception, text, exc, NULL) : NULL;
  Py_XDECREF(text);
  if (!r) {
    PyErr_Clear();
    fprintf(stderr, "%s%s\n", level_tags[LOG_ERROR], msg);
  }
  Py_XDECREF(r);
}

/* ---- access log ------------------------------------------------------------ */

void asgi_log_flush(ServerObject *s) {
  if (s->access_len) {
    fwrite(s->access_buf, 1, s->access_len, stderr);
    fflush(stderr);
    s->access_len = 0;
  }
}

void asgi_log_access(ServerObject *s, const char *prefix, int status) {
  if (!s->access_log || s->log_level > LOG_INFO)
    return;
  char line[800];
  int n = snprintf(line, sizeof(line), "%s%s %d %s\n", level_tags[LOG_INFO], prefix, status,
                   http_status_reason(status));
  if (n <= 0)
    return;
  if ((size_t)n >= sizeof(line))
    n = sizeof(line) - 1;
  if (s->access_len + (size_t)n > s->access_cap) {
    asgi_log_flush(s);
    if ((size_t)n > s->access_cap)
      return;
  }
  memcpy(s->access_buf + s->access_len, line, (size_t)n);
  s->access_len += (size_t)n;
}
