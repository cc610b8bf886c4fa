#include "applog.h"

#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"};
/* uvicorn pads "LEVEL:" to 10 columns (its separator is 8 - len spaces). */
static const char *const plain_prefixes[] = {
    "TRACE:    ", "DEBUG:    ", "INFO:     ", "WARNING:  ", "ERROR:    ", "CRITICAL: "};
/* uvicorn's colours: blue, cyan, green, yellow, red, bright red. */
static const char *const colour_prefixes[] = {
    "\033[34mTRACE\033[0m:    ", "\033[36mDEBUG\033[0m:    ", "\033[32mINFO\033[0m:     ",
    "\033[33mWARNING\033[0m:  ", "\033[31mERROR\033[0m:    ", "\033[91mCRITICAL\033[0m: ",
};

static struct { int level, json, colors; } cfg = {LOG_INFO, 0, 0};

static int clamp(int level) { return level < LOG_TRACE ? LOG_TRACE : level > 5 ? 5 : level; }

void applog_setup(int level, int json, int use_colors) {
  cfg.level = level;
  cfg.json = json != 0;
  cfg.colors = use_colors < 0 ? isatty(STDERR_FILENO) : use_colors != 0;
  if (cfg.json)
    cfg.colors = 0;
}

int applog_enabled(int level) { return level >= cfg.level; }
int applog_is_json(void) { return cfg.json; }
int applog_colors(void) { return cfg.colors; }

const char *applog_level_prefix(int level) {
  return (cfg.colors ? colour_prefixes : plain_prefixes)[clamp(level)];
}

const char *applog_level_name(int level) { return level_names[clamp(level)]; }

void applog_time(char out[25]) {
  /* gmtime_r once a second per thread; the milliseconds every time. */
  static __thread time_t cached_sec = -1;
  static __thread char cached[21]; /* "2026-12-05T00:33:23." */
  struct timeval tv;
  gettimeofday(&tv, NULL);
  if (tv.tv_sec != cached_sec) {
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S.", &tm);
    cached_sec = tv.tv_sec;
  }
  memcpy(out, cached, 20);
  int ms = (int)(tv.tv_usec / 1000);
  out[20] = (char)('0' + ms / 100);
  out[21] = (char)('0' + ms / 10 % 10);
  out[22] = (char)('0' + ms % 10);
  out[23] = 'Z';
  out[24] = '\0';
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned min;
  unsigned cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2, cp = c & 0x1f, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef)
    len = 3, cp = c & 0x0f, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4)
    len = 4, cp = c & 0x07, min = 0x10000;
  else
    return 0;
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

size_t applog_json_escape(char *out, size_t cap, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  if (cap == 0)
    return 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') { /* the common case */
      if (o + 1 >= cap)
        break;
      out[o++] = (char)c;
      i++;
      continue;
    }
    char esc[8];
    const char *piece = esc;
    size_t plen, take = 1;
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c, plen = 2;
    } else if (c == '\n') {
      piece = "\\n", plen = 2;
    } else if (c == '\r') {
      piece = "\\r", plen = 2;
    } else if (c == '\t') {
      piece = "\\t", plen = 2;
    } else if (c < 0x20 || c == 0x7f) {
      memcpy(esc, "\\u00", 4);
      esc[4] = hex[c >> 4], esc[5] = hex[c & 15], plen = 6;
    } else if (c < 0x80) {
      piece = s + i, plen = 1;
    } else if ((take = utf8_len((const unsigned char *)s + i, n - i)) != 0) {
      piece = s + i, plen = take;
    } else {
      piece = "\\ufffd", plen = 6, take = 1;
    }
    if (o + plen >= cap)
      break;
    memcpy(out + o, piece, plen);
    o += plen;
    i += take;
  }
  out[o] = '\0';
  return o;
}

void applog_message(int level, const char *logger, const char *msg) {
  if (!applog_enabled(level))
    return;
  char line[4096];
  size_t n;
  if (cfg.json) {
    char now[25];
    applog_time(now);
    int k = snprintf(line, sizeof(line),
                     "{\"time\":\"%s\",\"level\":\"%s\",\"logger\":\"%s\","
                     "\"message\":\"",
                     now, applog_level_name(level), logger);
    n = (size_t)k;
    n += applog_json_escape(line + n, sizeof(line) - n - 3, msg, strlen(msg));
    memcpy(line + n, "\"}\n", 3);
    n += 3;
  } else {
    int k = snprintf(line, sizeof(line) - 1, "%s%s", applog_level_prefix(level), msg);
    n = k < 0 ? 0 : (size_t)k >= sizeof(line) - 1 ? sizeof(line) - 2 : (size_t)k;
    line[n++] = '\n';
  }
  fwrite(line, 1, n, stderr);
  fflush(stderr);
}

void applog(int level, const char *fmt, ...) {
  if (!applog_enabled(level))
    return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  applog_message(level, "uvicorn.error", msg);
}
