/* Cached IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") for the Date header,
 * regenerated at most once per second. */
#ifndef APPBIN_HTTP_DATE_H
#define APPBIN_HTTP_DATE_H

#include <time.h>

#define HTTP_DATE_LEN 29 /* strlen("Sun, 06 Nov 1994 08:49:37 GMT") */

typedef struct http_date_cache {
  time_t when;
  char text[HTTP_DATE_LEN + 1];
} http_date_cache;

/* Format t into out (HTTP_DATE_LEN + 1 bytes, NUL-terminated). */
void http_date_format(time_t t, char *out);
/* The date for now, from the cache (refreshed when the second changed). */
const char *http_date_now(http_date_cache *cache);

#endif
