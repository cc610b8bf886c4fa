#include "ipallow.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address literal into 4 or 16 bytes; its family (4, 6) or 0. */
static int parse_addr(const char *s, size_t len, uint8_t out[16]) {
  char buf[INET6_ADDRSTRLEN];
  if (len == 0 || len >= sizeof(buf))
    return 0;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (inet_pton(AF_INET, buf, out) == 1)
    return 4;
  if (inet_pton(AF_INET6, buf, out) == 1)
    return 6;
  return 0;
}

static int net_contains(const ipallow_net *net, int family, const uint8_t addr[16]) {
  if (net->family != family)
    return 0;
  size_t full = net->bits / 8, rest = net->bits % 8;
  if (memcmp(net->addr, addr, full) != 0)
    return 0;
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return rest == 0 || (net->addr[full] & mask) == (addr[full] & mask);
}

static int parse_entry(ipallow_net *net, const char *s, size_t len, const char **why) {
  const char *slash = memchr(s, '/', len);
  size_t alen = slash ? (size_t)(slash - s) : len;
  memset(net, 0, sizeof(*net));
  int family = parse_addr(s, alen, net->addr);
  if (!family) {
    *why = "is not an IP address or network";
    return -1;
  }
  net->family = (uint8_t)family;
  unsigned max = family == 4 ? 32 : 128, bits = max;
  if (slash) {
    const char *p = slash + 1, *end = s + len;
    if (p == end || end - p > 3) {
      *why = "has an invalid prefix length";
      return -1;
    }
    bits = 0;
    for (; p < end; p++) {
      if (*p < '0' || *p > '9') {
        *why = "has an invalid prefix length";
        return -1;
      }
      bits = bits * 10 + (unsigned)(*p - '0');
    }
    if (bits > max) {
      *why = "has a prefix length out of range";
      return -1;
    }
  }
  net->bits = (uint8_t)bits;
  ipallow_net masked = *net;
  size_t full = bits / 8;
  if (full < 16) {
    masked.addr[full] &= (uint8_t)(bits % 8 ? 0xff << (8 - bits % 8) : 0);
    memset(masked.addr + full + 1, 0, 16 - full - 1);
  }
  if (memcmp(masked.addr, net->addr, 16) != 0) {
    *why = "has host bits set (write the network address)";
    return -1;
  }
  return 0;
}

int ipallow_parse(ipallow *a, const char *spec, char *err, size_t errlen) {
  memset(a, 0, sizeof(*a));
  for (const char *p = spec; *p;) {
    size_t n = strcspn(p, ",");
    const char *e = p;
    size_t en = n;
    while (en && (*e == ' ' || *e == '\t'))
      e++, en--;
    while (en && (e[en - 1] == ' ' || e[en - 1] == '\t'))
      en--;
    p += n + (p[n] == ',');
    if (en == 0)
      continue;
    if (en == 1 && *e == '*') {
      a->any = 1;
      continue;
    }
    ipallow_net net;
    const char *why = NULL;
    if (parse_entry(&net, e, en, &why) != 0) {
      snprintf(err, errlen, "'%.*s' %s", (int)(en > 80 ? 80 : en), e, why);
      ipallow_free(a);
      return -1;
    }
    ipallow_net *v = realloc(a->nets, (a->n + 1) * sizeof(*v));
    if (!v) {
      snprintf(err, errlen, "out of memory");
      ipallow_free(a);
      return -1;
    }
    a->nets = v;
    a->nets[a->n++] = net;
  }
  return 0;
}

int ipallow_match(const ipallow *a, const char *host, size_t len) {
  if (a->any)
    return 1;
  if (a->n == 0)
    return 0;
  uint8_t addr[16];
  int family = parse_addr(host, len, addr);
  for (size_t i = 0; family && i < a->n; i++)
    if (net_contains(&a->nets[i], family, addr))
      return 1;
  return 0;
}

void ipallow_free(ipallow *a) {
  free(a->nets);
  memset(a, 0, sizeof(*a));
}
