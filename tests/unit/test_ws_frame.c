/* host/ws_frame.c: the handshake key, UTF-8 validation, frame serializing,
 * the client frame parser (every RFC 6455 rule that fails a connection) and
 * permessage-deflate (negotiation, round trips, bombs). */
#include "check.h"
#include "ws_frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------ */

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A client frame: header (masked unless unmasked) + masked payload. */
static size_t client_frame(uint8_t *out, int b0, const void *payload, uint64_t len, bool unmasked) {
  size_t n = 0;
  out[n++] = (uint8_t)b0;
  uint8_t m = unmasked ? 0 : 0x80;
  if (len < 126) {
    out[n++] = (uint8_t)(m | len);
  } else if (len <= 0xffff) {
    out[n++] = m | 126;
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  } else {
    out[n++] = m | 127;
    for (int i = 0; i < 8; i++)
      out[n++] = (uint8_t)(len >> (56 - 8 * i));
  }
  if (!unmasked) {
    memcpy(out + n, MASK, 4);
    n += 4;
  }
  if (payload && len) {
    memcpy(out + n, payload, (size_t)len);
    if (!unmasked)
      ws_mask(out + n, (size_t)len, MASK, 0);
    n += (size_t)len;
  }
  return n;
}

#define FIN 0x80
#define RSV1 0x40

/* Feeds all of data; returns the first event other than NONE (or NONE). */
static ws_event feed_all(ws_parser *p, const uint8_t *data, size_t len, size_t *used_total) {
  size_t off = 0;
  while (off < len) {
    size_t used;
    ws_event ev = ws_parser_feed(p, data + off, len - off, &used);
    off += used;
    if (ev != WS_EV_NONE) {
      if (used_total)
        *used_total = off;
      return ev;
    }
    if (used == 0)
      break;
  }
  if (used_total)
    *used_total = off;
  return WS_EV_NONE;
}

/* Feeds one byte at a time; returns the first event. */
static ws_event feed_bytes(ws_parser *p, const uint8_t *data, size_t len, size_t *at) {
  for (size_t i = 0; i < len; i++) {
    size_t used;
    ws_event ev = ws_parser_feed(p, data + i, 1, &used);
    if (ev != WS_EV_NONE) {
      *at = i;
      return ev;
    }
  }
  *at = len;
  return WS_EV_NONE;
}

/* One frame in, the error code out (0 if no error). */
static int error_of(const uint8_t *data, size_t len, uint64_t max_size, bool deflate) {
  ws_parser p;
  ws_parser_init(&p, max_size);
  if (deflate) {
    ws_deflate_params dp = {false, false, 15, 15};
    ws_parser_set_deflate(&p, &dp);
  }
  ws_event ev = WS_EV_NONE;
  size_t off = 0;
  while (off < len) {
    size_t used;
    ev = ws_parser_feed(&p, data + off, len - off, &used);
    off += used;
    if (ev == WS_EV_ERROR || used == 0)
      break;
  }
  int code = ev == WS_EV_ERROR ? p.error_code : 0;
  ws_parser_free(&p);
  return code;
}

/* ---- handshake ------------------------------------------------------------------ */

static void test_handshake(void) {
  char out[29];
  ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
  CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); /* RFC 6455 1.3 */
  CHECK(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
  CHECK(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
  CHECK(!ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
  CHECK(!ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==x", 25));
  CHECK(!ws_key_valid("dGhlIHNhbXBsZSBub25jZ!==", 24));
  CHECK(!ws_key_valid("dGhlIHNhbXBsZSBub25jZQQQ", 24)); /* 18 bytes, not 16 */
  CHECK(!ws_key_valid("", 0));
}

/* ---- UTF-8 ------------------------------------------------------------------------- */

/* A plain reference decoder (RFC 3629). Returns 1 valid, 0 invalid, -1 a
 * truncated but so far valid sequence. */
static int ref_utf8(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    size_t need;
    uint32_t cp, min;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      need = 1, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 2, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    for (size_t k = 1; k <= need; k++) {
      if (i + k >= n) {
        /* truncated: still valid if what we have could continue */
        for (size_t j = 1; i + j < n; j++)
          if ((s[i + j] & 0xc0) != 0x80)
            return 0;
        /* check the prefix constraints that the second byte imposes */
        if (i + 1 < n) {
          uint8_t b = s[i + 1];
          if ((c == 0xe0 && b < 0xa0) || (c == 0xed && b > 0x9f) || (c == 0xf0 && b < 0x90) ||
              (c == 0xf4 && b > 0x8f))
            return 0;
        }
        return -1;
      }
      if ((s[i + k] & 0xc0) != 0x80)
        return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += need + 1;
  }
  return 1;
}

static void test_utf8(void) {
  int mismatches = 0;
  uint8_t b[4];
  /* every 1-, 2- and 3-byte sequence */
  for (uint32_t x = 0; x < (1u << 24); x++) {
    size_t n = x < 256 ? 1 : x < 65536 ? 2 : 3;
    for (size_t i = 0; i < n; i++)
      b[i] = (uint8_t)(x >> (8 * (n - 1 - i)));
    if (n == 2 && b[0] == 0)
      continue;
    if (n == 3 && b[0] == 0)
      continue;
    int want = ref_utf8(b, n);
    uint32_t st = ws_utf8_validate(WS_UTF8_ACCEPT, b, n);
    int got = st == WS_UTF8_ACCEPT ? 1 : st == WS_UTF8_REJECT ? 0 : -1;
    if (want != got && mismatches++ < 5)
      CHECK_EQ_INT(got, want);
  }
  /* 4-byte sequences starting with 0xf0..0xf7 and valid-looking tails */
  for (uint32_t x = 0xf0000000u; x < 0xf8000000u; x += 0x00010101u) {
    for (int i = 0; i < 4; i++)
      b[i] = (uint8_t)(x >> (24 - 8 * i));
    int want = ref_utf8(b, 4);
    uint32_t st = ws_utf8_validate(WS_UTF8_ACCEPT, b, 4);
    int got = st == WS_UTF8_ACCEPT ? 1 : st == WS_UTF8_REJECT ? 0 : -1;
    if (want != got && mismatches++ < 10)
      CHECK_EQ_INT(got, want);
  }
  CHECK_EQ_INT(mismatches, 0);

  static const struct {
    const char *s;
    int valid;
  } cases[] = {
      {"hello", 1},
      {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 1}, /* Autobahn 6.2 */
      {"\xf0\x9f\x98\x80", 1},                             /* U+1F600 */
      {"\xf4\x8f\xbf\xbf", 1},                             /* U+10FFFF */
      {"\xf4\x90\x80\x80", 0},                             /* beyond U+10FFFF */
      {"\xed\xa0\x80", 0},                                 /* a surrogate */
      {"\xc0\x80", 0},                                     /* overlong NUL */
      {"\xe0\x80\x80", 0},                                 /* overlong */
      {"\xf8\x88\x80\x80\x80", 0},                         /* 5 bytes */
      {"\xff", 0},
      {"\x80", 0},
      {"abcdefgh\xce\xba\xe1\xbd\xb9"
       "abcdefghijklmnop",
       1},
      {"abcdefghijklmnop\xedx", 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const uint8_t *s = (const uint8_t *)cases[i].s;
    size_t n = strlen(cases[i].s);
    uint32_t st = ws_utf8_validate(WS_UTF8_ACCEPT, s, n);
    CHECK_EQ_INT(st == WS_UTF8_ACCEPT, cases[i].valid);
    /* split anywhere: the same verdict */
    for (size_t cut = 0; cut <= n; cut++) {
      uint32_t a = ws_utf8_validate(WS_UTF8_ACCEPT, s, cut);
      if (a != WS_UTF8_REJECT)
        a = ws_utf8_validate(a, s + cut, n - cut);
      if (!CHECK_EQ_INT(a == WS_UTF8_ACCEPT, cases[i].valid))
        break;
    }
  }
}

/* ---- serializing ------------------------------------------------------------------- */

static void test_serialize(void) {
  uint8_t h[WS_MAX_HEADER];
  CHECK_EQ_INT(ws_frame_header(h, WS_OP_TEXT, true, false, 0), 2);
  CHECK_EQ_INT(h[0], 0x81);
  CHECK_EQ_INT(h[1], 0);
  CHECK_EQ_INT(ws_frame_header(h, WS_OP_BINARY, true, true, 125), 2);
  CHECK_EQ_INT(h[0], 0xc2);
  CHECK_EQ_INT(h[1], 125);
  CHECK_EQ_INT(ws_frame_header(h, WS_OP_TEXT, false, false, 126), 4);
  CHECK_EQ_INT(h[0], 0x01);
  CHECK_MEM(h + 1, "\x7e\x00\x7e", 3);
  CHECK_EQ_INT(ws_frame_header(h, WS_OP_BINARY, true, false, 65535), 4);
  CHECK_MEM(h + 1, "\x7e\xff\xff", 3);
  CHECK_EQ_INT(ws_frame_header(h, WS_OP_BINARY, true, false, 65536), 10);
  CHECK_MEM(h + 1, "\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 9);

  uint8_t c[125];
  CHECK_EQ_INT(ws_close_payload(c, 1000, "bye", 3), 5);
  CHECK_MEM(c,
            "\x03\xe8"
            "bye",
            5);
  CHECK_EQ_INT(ws_close_payload(c, WS_CLOSE_NO_STATUS, "x", 1), 0);
  CHECK_EQ_INT(ws_close_payload(c, 0, NULL, 0), 0);
  char reason[200];
  memset(reason, 'a', sizeof(reason));
  CHECK_EQ_INT(ws_close_payload(c, 4000, reason, sizeof(reason)), 125);
  /* a 2-byte character straddling byte 123 is dropped whole */
  memcpy(reason + 122, "\xce\xba", 2);
  size_t n = ws_close_payload(c, 4000, reason, sizeof(reason));
  CHECK_EQ_INT(n, 124);
  CHECK(ws_utf8_validate(WS_UTF8_ACCEPT, c + 2, n - 2) == WS_UTF8_ACCEPT);

  CHECK(ws_close_code_valid(1000));
  CHECK(ws_close_code_valid(1011));
  CHECK(ws_close_code_valid(3000));
  CHECK(ws_close_code_valid(4999));
  int bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    CHECK(!ws_close_code_valid(bad[i]));

  uint8_t data[37], copy[37];
  for (size_t i = 0; i < sizeof(data); i++)
    data[i] = copy[i] = (uint8_t)(i * 7);
  ws_mask(data, sizeof(data), MASK, 0);
  for (size_t i = 0; i < sizeof(data); i++)
    if (!CHECK_EQ_INT(data[i], copy[i] ^ MASK[i & 3]))
      break;
  /* masking in two pieces at an odd offset is the same */
  memcpy(data, copy, sizeof(data));
  ws_mask(data, 5, MASK, 0);
  ws_mask(data + 5, sizeof(data) - 5, MASK, 5);
  for (size_t i = 0; i < sizeof(data); i++)
    if (!CHECK_EQ_INT(data[i], copy[i] ^ MASK[i & 3]))
      break;
}

/* ---- parsing ---------------------------------------------------------------------- */

static void test_parse_messages(void) {
  uint8_t buf[70000];
  ws_parser p;
  size_t used, n;

  /* one text frame, then one binary frame, in one buffer */
  n = client_frame(buf, FIN | WS_OP_TEXT, "Hello", 5, false);
  n += client_frame(buf + n, FIN | WS_OP_BINARY, "\x00\x01\x02", 3, false);
  ws_parser_init(&p, 1 << 20);
  CHECK_EQ_INT(ws_parser_feed(&p, buf, n, &used), WS_EV_TEXT);
  CHECK_EQ_INT(used, 11);
  CHECK_EQ_INT(p.msg.len, 5);
  CHECK_MEM(p.msg.base, "Hello", 5);
  size_t used2;
  CHECK_EQ_INT(ws_parser_feed(&p, buf + used, n - used, &used2), WS_EV_BINARY);
  CHECK_EQ_INT(used + used2, n);
  CHECK_EQ_INT(p.msg.len, 3);
  CHECK_MEM(p.msg.base, "\x00\x01\x02", 3);
  ws_parser_free(&p);

  /* the same, one byte at a time */
  ws_parser_init(&p, 1 << 20);
  size_t at;
  CHECK_EQ_INT(feed_bytes(&p, buf, n, &at), WS_EV_TEXT);
  CHECK_EQ_INT(at, 10);
  CHECK_MEM(p.msg.base, "Hello", 5);
  ws_parser_free(&p);

  /* 16-bit and 64-bit lengths, empty message */
  static uint8_t big[66000];
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (uint8_t)('a' + i % 26);
  uint8_t *frame = malloc(sizeof(big) + 16);
  ws_parser_init(&p, 1 << 20);
  n = client_frame(frame, FIN | WS_OP_TEXT, big, 300, false);
  CHECK_EQ_INT(feed_all(&p, frame, n, NULL), WS_EV_TEXT);
  CHECK_EQ_INT(p.msg.len, 300);
  n = client_frame(frame, FIN | WS_OP_BINARY, big, sizeof(big), false);
  CHECK_EQ_INT(feed_all(&p, frame, n, NULL), WS_EV_BINARY);
  CHECK_EQ_INT(p.msg.len, sizeof(big));
  CHECK_MEM(p.msg.base, big, sizeof(big));
  n = client_frame(frame, FIN | WS_OP_TEXT, NULL, 0, false);
  CHECK_EQ_INT(feed_all(&p, frame, n, NULL), WS_EV_TEXT);
  CHECK_EQ_INT(p.msg.len, 0);
  ws_parser_free(&p);
  free(frame);

  /* fragmented text with a ping and a pong between the fragments; the
   * UTF-8 character is split between fragments */
  n = client_frame(buf, WS_OP_TEXT, "ab\xce", 3, false);
  n += client_frame(buf + n, FIN | WS_OP_PING, "p1", 2, false);
  n += client_frame(buf + n, WS_OP_CONT,
                    "\xba"
                    "cd",
                    3, false);
  n += client_frame(buf + n, FIN | WS_OP_PONG, "", 0, false);
  n += client_frame(buf + n, FIN | WS_OP_CONT, "ef", 2, false);
  ws_parser_init(&p, 1 << 20);
  size_t off = 0;
  CHECK_EQ_INT(feed_all(&p, buf, n, &off), WS_EV_PING);
  CHECK_EQ_INT(p.ctrl_len, 2);
  CHECK_MEM(p.ctrl, "p1", 2);
  size_t more;
  CHECK_EQ_INT(feed_all(&p, buf + off, n - off, &more), WS_EV_PONG);
  off += more;
  CHECK_EQ_INT(p.ctrl_len, 0);
  CHECK_EQ_INT(feed_all(&p, buf + off, n - off, &more), WS_EV_TEXT);
  off += more;
  CHECK_EQ_INT(off, n);
  CHECK_EQ_INT(p.msg.len, 8);
  CHECK_MEM(p.msg.base,
            "ab\xce\xba"
            "cdef",
            8);
  /* and byte by byte */
  ws_parser_free(&p);
  ws_parser_init(&p, 1 << 20);
  CHECK_EQ_INT(feed_bytes(&p, buf, n, &at), WS_EV_PING);
  CHECK_EQ_INT(feed_bytes(&p, buf + at + 1, n - at - 1, &more), WS_EV_PONG);
  at += 1 + more;
  CHECK_EQ_INT(feed_bytes(&p, buf + at + 1, n - at - 1, &more), WS_EV_TEXT);
  CHECK_MEM(p.msg.base,
            "ab\xce\xba"
            "cdef",
            8);
  ws_parser_free(&p);

  /* close frames */
  ws_parser_init(&p, 0);
  n = client_frame(buf, FIN | WS_OP_CLOSE, NULL, 0, false);
  CHECK_EQ_INT(feed_all(&p, buf, n, NULL), WS_EV_CLOSE);
  CHECK_EQ_INT(p.close_code, WS_CLOSE_NO_STATUS);
  CHECK_EQ_INT(p.close_reason_len, 0);
  n = client_frame(buf, FIN | WS_OP_CLOSE,
                   "\x0f\xa0"
                   "bye \xce\xba",
                   8, false);
  CHECK_EQ_INT(feed_all(&p, buf, n, NULL), WS_EV_CLOSE);
  CHECK_EQ_INT(p.close_code, 4000);
  CHECK_EQ_INT(p.close_reason_len, 6);
  CHECK_MEM(p.close_reason, "bye \xce\xba", 6);
  ws_parser_free(&p);
}

/* A message's buffer, once taken: a large one is freed at once, a small one
 * kept; the next message parses either way. */
static void test_message_taken(void) {
  static uint8_t buf[2 * 70000], big[70000];
  ws_parser p;
  size_t used, n;
  memset(big, 'x', sizeof(big));
  n = client_frame(buf, FIN | WS_OP_BINARY, big, sizeof(big), false);
  size_t second = client_frame(buf + n, FIN | WS_OP_TEXT, "hi", 2, false);
  ws_parser_init(&p, 1 << 20);
  CHECK_EQ_INT(feed_all(&p, buf, n, &used), WS_EV_BINARY);
  CHECK_EQ_INT(p.msg.len, sizeof(big));
  ws_parser_message_taken(&p);
  CHECK(p.msg.base == NULL && p.msg.cap == 0 && p.msg.len == 0);
  CHECK_EQ_INT(feed_all(&p, buf + n, second, &used), WS_EV_TEXT);
  CHECK_EQ_INT(p.msg.len, 2);
  CHECK_MEM(p.msg.base, "hi", 2);
  size_t cap = p.msg.cap;
  ws_parser_message_taken(&p);
  CHECK(p.msg.base != NULL && p.msg.cap == cap && p.msg.len == 0);
  CHECK_EQ_INT(feed_all(&p, buf + n, second, &used), WS_EV_TEXT);
  CHECK_MEM(p.msg.base, "hi", 2);
  ws_parser_free(&p);
}

static void test_parse_errors(void) {
  uint8_t buf[300];
  uint8_t payload[200];
  memset(payload, 'x', sizeof(payload));
  size_t n;

  n = client_frame(buf, FIN | WS_OP_TEXT, "hi", 2, true);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* unmasked */
  n = client_frame(buf, FIN | 0x20 | WS_OP_TEXT, "hi", 2, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* RSV2 */
  n = client_frame(buf, FIN | 0x10 | WS_OP_TEXT, "hi", 2, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* RSV3 */
  n = client_frame(buf, FIN | RSV1 | WS_OP_TEXT, "hi", 2, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* RSV1 without deflate */
  for (int op = 3; op <= 15; op++) {
    if (op >= 8 && op <= 10)
      continue;
    n = client_frame(buf, FIN | op, "hi", 2, false);
    CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* reserved opcodes */
  }
  n = client_frame(buf, FIN | WS_OP_PING, payload, 126, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* control frame > 125 */
  n = client_frame(buf, FIN | WS_OP_PING, payload, 125, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 0); /* 125 is fine */
  n = client_frame(buf, WS_OP_PING, "x", 1, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* fragmented control frame */
  n = client_frame(buf, FIN | RSV1 | WS_OP_PING, "x", 1, false);
  CHECK_EQ_INT(error_of(buf, n, 0, true), 1002); /* compressed control frame */
  n = client_frame(buf, FIN | WS_OP_CONT, "x", 1, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* continuation out of the blue */
  n = client_frame(buf, WS_OP_TEXT, "x", 1, false);
  n += client_frame(buf + n, FIN | WS_OP_TEXT, "y", 1, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002); /* new message inside a message */
  n = client_frame(buf, RSV1 | WS_OP_TEXT, "x", 1, false);
  n += client_frame(buf + n, FIN | RSV1 | WS_OP_CONT, "y", 1, false);
  CHECK_EQ_INT(error_of(buf, n, 0, true), 1002); /* RSV1 on a continuation */
  /* 64-bit length with the top bit set */
  uint8_t huge[] = {FIN | WS_OP_BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
  CHECK_EQ_INT(error_of(huge, sizeof(huge), 0, false), 1002);

  /* invalid UTF-8, found in the first fragment (fail fast) */
  n = client_frame(buf, FIN | WS_OP_TEXT, "a\xff", 2, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1007);
  n = client_frame(buf, WS_OP_TEXT, "ab\xed\xa0", 4, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1007);
  /* a message that ends inside a character */
  n = client_frame(buf, FIN | WS_OP_TEXT, "ab\xce", 3, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1007);
  /* binary messages are not validated */
  n = client_frame(buf, FIN | WS_OP_BINARY, "a\xff", 2, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 0);

  /* too big: by the header alone, and across fragments */
  n = client_frame(buf, FIN | WS_OP_BINARY, payload, 101, false);
  CHECK_EQ_INT(error_of(buf, n, 100, false), 1009);
  CHECK_EQ_INT(error_of(buf, 6, 100, false), 1009); /* the header is enough */
  n = client_frame(buf, FIN | WS_OP_BINARY, payload, 100, false);
  CHECK_EQ_INT(error_of(buf, n, 100, false), 0);
  n = client_frame(buf, WS_OP_BINARY, payload, 60, false);
  n += client_frame(buf + n, FIN | WS_OP_CONT, payload, 60, false);
  CHECK_EQ_INT(error_of(buf, n, 100, false), 1009);

  /* close frames */
  n = client_frame(buf, FIN | WS_OP_CLOSE, "\x03", 1, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1002);
  int bad_codes[] = {0, 999, 1004, 1005, 1006, 1015, 2000, 5000};
  for (size_t i = 0; i < sizeof(bad_codes) / sizeof(bad_codes[0]); i++) {
    uint8_t c[2] = {(uint8_t)(bad_codes[i] >> 8), (uint8_t)bad_codes[i]};
    n = client_frame(buf, FIN | WS_OP_CLOSE, c, 2, false);
    CHECK_EQ_INT(error_of(buf, n, 0, false), 1002);
  }
  n = client_frame(buf, FIN | WS_OP_CLOSE, "\x03\xe8\xff", 3, false);
  CHECK_EQ_INT(error_of(buf, n, 0, false), 1007);

  /* a dead parser stays dead */
  ws_parser p;
  ws_parser_init(&p, 0);
  size_t used;
  n = client_frame(buf, FIN | WS_OP_TEXT, "hi", 2, true);
  CHECK_EQ_INT(ws_parser_feed(&p, buf, n, &used), WS_EV_ERROR);
  CHECK(p.error != NULL);
  n = client_frame(buf, FIN | WS_OP_TEXT, "hi", 2, false);
  CHECK_EQ_INT(ws_parser_feed(&p, buf, n, &used), WS_EV_ERROR);
  CHECK_EQ_INT(used, 0);
  ws_parser_free(&p);
}

/* ---- permessage-deflate ----------------------------------------------------------- */

static int negotiate(const char *offer, ws_deflate_params *dp, char *resp) {
  return ws_deflate_negotiate(offer, strlen(offer), dp, resp, 200);
}

static void test_negotiate(void) {
  ws_deflate_params dp;
  char resp[200];
  CHECK(negotiate("permessage-deflate", &dp, resp));
  CHECK_STR(resp, "permessage-deflate");
  CHECK(!dp.server_no_context_takeover && !dp.client_no_context_takeover);
  CHECK_EQ_INT(dp.server_bits, WS_DEFLATE_SERVER_BITS);
  CHECK_EQ_INT(dp.client_bits, 15);

  /* what the websockets library offers */
  CHECK(negotiate("permessage-deflate; client_max_window_bits", &dp, resp));
  CHECK_STR(resp, "permessage-deflate; client_max_window_bits=12");
  CHECK_EQ_INT(dp.client_bits, 12);

  CHECK(negotiate("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=10; client_max_window_bits=9",
                  &dp, resp));
  CHECK_STR(resp, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=10; client_max_window_bits=9");
  CHECK(dp.server_no_context_takeover && dp.client_no_context_takeover);
  CHECK_EQ_INT(dp.server_bits, 10);
  CHECK_EQ_INT(dp.client_bits, 9);

  CHECK(negotiate("PerMessage-Deflate;client_max_window_bits=\"8\"", &dp, resp));
  CHECK_STR(resp, "permessage-deflate; client_max_window_bits=8");
  CHECK_EQ_INT(dp.client_bits, 9); /* inflating with a larger window is fine */

  /* declined offers fall through to the next one */
  CHECK(negotiate("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8, "
                  "permessage-deflate; foo=1, permessage-deflate; server_max_window_bits=15",
                  &dp, resp));
  CHECK_STR(resp, "permessage-deflate; server_max_window_bits=12");
  CHECK_EQ_INT(dp.server_bits, 12);

  CHECK(!negotiate("", &dp, resp));
  CHECK(!negotiate("x-foo", &dp, resp));
  CHECK(!negotiate("permessage-deflate; server_max_window_bits", &dp, resp));
  CHECK(!negotiate("permessage-deflate; server_max_window_bits=16", &dp, resp));
  CHECK(!negotiate("permessage-deflate; server_max_window_bits=010", &dp, resp));
  CHECK(!negotiate("permessage-deflate; client_max_window_bits=7", &dp, resp));
  CHECK(!negotiate("permessage-deflate; server_no_context_takeover=1", &dp, resp));
  CHECK(!negotiate("permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                   &dp, resp));
  CHECK(!negotiate("permessage-deflate; unknown", &dp, resp));
  CHECK(!negotiate("permessage-deflate;; x", &dp, resp));
  CHECK(!negotiate("permessage-deflate x", &dp, resp));
}

/* Compresses msg with d, frames it (split into `pieces` fragments), parses it
 * back with p; true if the parser returned the same bytes. */
static bool round_trip(ws_deflater *d, ws_parser *p, const uint8_t *msg, size_t len, int pieces,
                       int opcode) {
  ws_buf z = {0};
  if (!CHECK_EQ_INT(ws_deflate_message(d, msg, len, &z), 0))
    return false;
  uint8_t *wire = malloc(z.len + 64 * (size_t)pieces + 64);
  size_t n = 0, off = 0;
  for (int i = 0; i < pieces; i++) {
    size_t k = i == pieces - 1 ? z.len - off : z.len / (size_t)pieces;
    int b0 = (i == 0 ? opcode | RSV1 : WS_OP_CONT) | (i == pieces - 1 ? FIN : 0);
    n += client_frame(wire + n, b0, z.base + off, k, false);
    off += k;
  }
  ws_event ev = feed_all(p, wire, n, NULL);
  bool ok = CHECK_EQ_INT(ev, opcode == WS_OP_TEXT ? WS_EV_TEXT : WS_EV_BINARY) &&
            CHECK_EQ_INT(p->msg.len, len) && CHECK_MEM(p->msg.base, msg, len);
  free(wire);
  ws_buf_free(&z);
  return ok;
}

static void test_deflate(void) {
  size_t len = 200000;
  uint8_t *msg = malloc(len);
  uint32_t x = 12345;
  for (size_t i = 0; i < len; i++) { /* compressible but not trivial */
    x = x * 1103515245u + 12345u;
    msg[i] = (uint8_t)("abcdefghij klmnop\n"[(x >> 16) % 18]);
  }
  for (int bits = 9; bits <= 15; bits += 3) {
    for (int nct = 0; nct <= 1; nct++) {
      ws_deflater d;
      ws_deflater_init(&d, bits, nct);
      ws_parser p;
      ws_parser_init(&p, 1 << 20);
      ws_deflate_params dp = {nct, nct, bits, 15};
      ws_parser_set_deflate(&p, &dp);
      CHECK(round_trip(&d, &p, msg, len, 1, WS_OP_TEXT));
      CHECK(round_trip(&d, &p, msg, 1000, 3, WS_OP_BINARY)); /* context carried over */
      CHECK(round_trip(&d, &p, msg, 0, 1, WS_OP_BINARY));
      CHECK(round_trip(&d, &p, msg + 5, 50000, 7, WS_OP_TEXT));
      ws_parser_free(&p);
      ws_deflater_free(&d);
    }
  }
  /* compressed messages interleaved with plain ones */
  ws_deflater d;
  ws_deflater_init(&d, 12, false);
  ws_parser p;
  ws_parser_init(&p, 1 << 20);
  ws_deflate_params dp = {false, false, 12, 12};
  ws_parser_set_deflate(&p, &dp);
  CHECK(round_trip(&d, &p, msg, 3000, 1, WS_OP_TEXT));
  uint8_t buf[200];
  size_t n = client_frame(buf, FIN | WS_OP_TEXT, "plain", 5, false);
  CHECK_EQ_INT(feed_all(&p, buf, n, NULL), WS_EV_TEXT);
  CHECK_MEM(p.msg.base, "plain", 5);
  CHECK(round_trip(&d, &p, msg, 3000, 2, WS_OP_TEXT));
  ws_parser_free(&p);
  ws_deflater_free(&d);

  /* a bomb: 64 MB of zeros is ~64 KB compressed; max_size 1 MB stops it
   * and the buffer never grows much beyond the limit */
  size_t bomb_len = 64u << 20;
  uint8_t *zeros = calloc(1, bomb_len);
  ws_buf z = {0};
  ws_deflater_init(&d, 15, false);
  CHECK_EQ_INT(ws_deflate_message(&d, zeros, bomb_len, &z), 0);
  CHECK(z.len < bomb_len / 500);
  uint8_t *wire = malloc(z.len + 16);
  n = client_frame(wire, FIN | RSV1 | WS_OP_BINARY, z.base, z.len, false);
  ws_parser_init(&p, 1 << 20);
  dp = (ws_deflate_params){false, false, 15, 15};
  ws_parser_set_deflate(&p, &dp);
  CHECK_EQ_INT(feed_all(&p, wire, n, NULL), WS_EV_ERROR);
  CHECK_EQ_INT(p.error_code, 1009);
  CHECK(p.msg.cap <= (2u << 20) + 4096);
  ws_parser_free(&p);
  free(wire);
  ws_buf_free(&z);
  ws_deflater_free(&d);
  free(zeros);

  /* invalid UTF-8 inside a compressed text message */
  ws_deflater_init(&d, 15, false);
  CHECK_EQ_INT(ws_deflate_message(&d, (const uint8_t *)"ok \xff no", 7, &z), 0);
  n = client_frame(buf, FIN | RSV1 | WS_OP_TEXT, z.base, z.len, false);
  CHECK_EQ_INT(error_of(buf, n, 0, true), 1007);
  ws_buf_free(&z);
  ws_deflater_free(&d);

  /* garbage that is not deflate data */
  n = client_frame(buf, FIN | RSV1 | WS_OP_BINARY, "\xff\xff\xff\xff\xff", 5, false);
  CHECK_EQ_INT(error_of(buf, n, 0, true), 1007);
  free(msg);
}

int main(void) {
  test_handshake();
  test_utf8();
  test_serialize();
  test_parse_messages();
  test_message_taken();
  test_parse_errors();
  test_negotiate();
  test_deflate();
  return check_summary();
}
