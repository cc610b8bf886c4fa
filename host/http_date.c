#include "http_date.h"

#include <string.h>

static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static void put2(char *p, int v) {
  p[0] = (char)('0' + v / 10 % 10);
  p[1] = (char)('0' + v % 10);
}

void http_date_format(time_t t, char *out) {
  struct tm tm;
  gmtime_r(&t, &tm);
  /* "Sun, 06 Nov 1994 08:49:37 GMT" without the locale-dependent strftime */
  memcpy(out, days[tm.tm_wday % 7], 3);
  memcpy(out + 3, ", ", 2);
  put2(out + 5, tm.tm_mday);
  out[7] = ' ';
  memcpy(out + 8, months[tm.tm_mon % 12], 3);
  out[11] = ' ';
  int year = tm.tm_year + 1900;
  put2(out + 12, year / 100);
  put2(out + 14, year % 100);
  out[16] = ' ';
  put2(out + 17, tm.tm_hour);
  out[19] = ':';
  put2(out + 20, tm.tm_min);
  out[22] = ':';
  put2(out + 23, tm.tm_sec);
  memcpy(out + 25, " GMT", 4);
  out[HTTP_DATE_LEN] = '\0';
}

const char *http_date_now(http_date_cache *cache) {
  time_t now = time(NULL);
  if (now != cache->when || cache->text[0] == '\0') {
    http_date_format(now, cache->text);
    cache->when = now;
  }
  return cache->text;
}
