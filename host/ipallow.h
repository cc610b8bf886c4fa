/*
 * ipallow: the proxies --forwarded-allow-ips trusts: '*', IPv4 and IPv6
 * addresses and CIDR networks ("10.0.0.0/8", "2001:db8::/32"). Parsed once
 * at start-up; a value that is none of these is an error (uvicorn silently
 * keeps it as a string that never matches an address).
 */
#ifndef APPBIN_IPALLOW_H
#define APPBIN_IPALLOW_H

#include <stddef.h>
#include <stdint.h>

typedef struct ipallow_net {
  uint8_t family; /* 4 or 6 */
  uint8_t bits;   /* prefix length */
  uint8_t addr[16];
} ipallow_net;

typedef struct ipallow {
  int any; /* '*': every peer is a trusted proxy */
  ipallow_net *nets;
  size_t n;
} ipallow;

/* Parses a comma-separated list (blanks around entries and empty entries
 * are ignored). 0, or -1 with a message naming the bad entry in err (and
 * *a left empty). */
int ipallow_parse(ipallow *a, const char *spec, char *err, size_t errlen);

/* Whether the address literal [host, host + len) is trusted. A host that is
 * not an address literal (a name, garbage) never is, unless '*'. */
int ipallow_match(const ipallow *a, const char *host, size_t len);

void ipallow_free(ipallow *a);

#endif
