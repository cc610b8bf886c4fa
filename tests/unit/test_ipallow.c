/* ipallow: --forwarded-allow-ips parsing (addresses, CIDR networks of both
 * families, '*', blanks and empty entries; every kind of bad entry refused
 * with its text in the message) and matching (prefix boundaries, /0, /32,
 * /128, families kept apart, non-addresses never trusted). */
#include "check.h"
#include "ipallow.h"

#include <string.h>

static int matches(const char *spec, const char *host) {
  ipallow a;
  char err[200];
  if (ipallow_parse(&a, spec, err, sizeof(err)) != 0) {
    fprintf(stderr, "unexpected parse error for '%s': %s\n", spec, err);
    return -1;
  }
  int m = ipallow_match(&a, host, strlen(host));
  ipallow_free(&a);
  return m;
}

static void refused(const char *spec, const char *needle) {
  ipallow a;
  char err[200] = "";
  CHECK_EQ_INT(ipallow_parse(&a, spec, err, sizeof(err)), -1);
  CHECK(strstr(err, needle) != NULL);
  CHECK(a.nets == NULL && a.n == 0 && !a.any);
}

int main(void) {
  CHECK_EQ_INT(matches("127.0.0.1", "127.0.0.1"), 1);
  CHECK_EQ_INT(matches("127.0.0.1", "127.0.0.2"), 0);
  CHECK_EQ_INT(matches("127.0.0.0/8", "127.255.3.4"), 1);
  CHECK_EQ_INT(matches("127.0.0.0/8", "128.0.0.1"), 0);
  CHECK_EQ_INT(matches("10.0.0.0/9", "10.127.255.255"), 1);
  CHECK_EQ_INT(matches("10.0.0.0/9", "10.128.0.0"), 0);
  CHECK_EQ_INT(matches("10.128.0.0/9", "10.128.0.0"), 1);
  CHECK_EQ_INT(matches("0.0.0.0/0", "203.0.113.9"), 1);
  CHECK_EQ_INT(matches("0.0.0.0/0", "::1"), 0); /* families stay apart */
  CHECK_EQ_INT(matches("::/0", "2001:db8::1"), 1);
  CHECK_EQ_INT(matches("::/0", "127.0.0.1"), 0);
  CHECK_EQ_INT(matches("2001:db8::/32", "2001:db8:ffff::1"), 1);
  CHECK_EQ_INT(matches("2001:db8::/32", "2001:db9::1"), 0);
  CHECK_EQ_INT(matches("2001:db8::/33", "2001:db8:7fff::1"), 1);
  CHECK_EQ_INT(matches("2001:db8::/33", "2001:db8:8000::1"), 0);
  CHECK_EQ_INT(matches("::1", "0:0:0:0:0:0:0:1"), 1); /* compared as addresses */
  CHECK_EQ_INT(matches("::1/128", "::1"), 1);
  CHECK_EQ_INT(matches(" 10.0.0.1 ,, 192.168.0.0/16 ,", "192.168.44.1"), 1);
  CHECK_EQ_INT(matches("*", "anything at all"), 1);
  CHECK_EQ_INT(matches("10.0.0.1, *", "192.0.2.1"), 1);
  CHECK_EQ_INT(matches("127.0.0.1", "localhost"), 0);
  CHECK_EQ_INT(matches("127.0.0.1", ""), 0);
  CHECK_EQ_INT(matches("127.0.0.1", "127.0.0.1:80"), 0);
  CHECK_EQ_INT(matches("", "127.0.0.1"), 0);

  refused("10.0.0.0/33", "'10.0.0.0/33' has a prefix length out of range");
  refused("::/129", "out of range");
  refused("10.0.0.1/8", "host bits");
  refused("2001:db8::1/32", "host bits");
  refused("10.0.0.0/", "invalid prefix");
  refused("10.0.0.0/8x", "invalid prefix");
  refused("10.0.0.0/-1", "invalid prefix");
  refused("10.0.0.0/0008", "invalid prefix");
  refused("127.0.0.1, localhost", "'localhost' is not an IP address");
  refused("300.1.2.3", "not an IP address");
  refused("010.0.0.1", "not an IP address");
  refused("1.2.3", "not an IP address");
  refused("fe80::1%eth0", "not an IP address");
  refused("**", "not an IP address");
  return check_summary();
}
