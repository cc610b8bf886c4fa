/* WebSocket frames, UTF-8 and permessage-deflate: see ws_frame.h. */
#include "ws_frame.h"

#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define MSG_KEEP_CAP (64 * 1024) /* a message buffer larger than this is freed after use */
#define GROW_STEP (1 << 20)      /* reserve at most this much ahead of the data */
#define INFLATE_CHUNK 4096       /* unmasked compressed bytes per inflate() call */
#define DEFLATE_MEM_LEVEL 5      /* 2^(5+9) bytes of hash tables, as uvicorn uses */

/* ---- byte buffer ----------------------------------------------------------- */

int ws_buf_reserve(ws_buf *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  if (extra > SIZE_MAX / 2 - b->len)
    return -1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra)
    cap *= 2;
  uint8_t *p = realloc(b->base, cap);
  if (p == NULL)
    return -1;
  b->base = p;
  b->cap = cap;
  return 0;
}

void ws_buf_free(ws_buf *b) {
  free(b->base);
  b->base = NULL;
  b->len = b->cap = 0;
}

/* ---- handshake --------------------------------------------------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static bool b64char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

bool ws_key_valid(const char *key, size_t len) {
  if (len != 24 || key[22] != '=' || key[23] != '=')
    return false;
  for (size_t i = 0; i < 22; i++)
    if (!b64char(key[i]))
      return false;
  return true;
}

static size_t b64encode(const uint8_t *in, size_t n, char *out) {
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64chars[v >> 18];
    out[o++] = b64chars[(v >> 12) & 63];
    out[o++] = b64chars[(v >> 6) & 63];
    out[o++] = b64chars[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
    out[o++] = b64chars[v >> 18];
    out[o++] = b64chars[(v >> 12) & 63];
    out[o++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  out[o] = '\0';
  return o;
}

void ws_accept_key(const char *key, size_t len, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  uint8_t digest[SHA_DIGEST_LENGTH];
  char stack[128];
  size_t n = len + sizeof(guid) - 1;
  char *buf = n <= sizeof(stack) ? stack : malloc(n);
  if (buf == NULL) {
    out[0] = '\0';
    return;
  }
  memcpy(buf, key, len);
  memcpy(buf + len, guid, sizeof(guid) - 1);
  SHA_CTX ctx; /* SHA1_* rather than SHA1(): see sha256.c */
  SHA1_Init(&ctx);
  SHA1_Update(&ctx, buf, n);
  SHA1_Final(digest, &ctx);
  if (buf != stack)
    free(buf);
  b64encode(digest, sizeof(digest), out);
}

/* ---- UTF-8: Bjoern Hoehrmann's DFA (http://bjoern.hoehrmann.de/utf-8/decoder/dfa/) */

static const uint8_t utf8d[] = {
    /* byte -> character class */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    8, 8, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 3, 3, 11, 6, 6, 6, 5, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8,
    /* (state, class) -> state */
    0, 12, 24, 36, 60, 96, 84, 12, 12, 12, 48, 72, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 0, 12, 12, 12, 12, 12, 0, 12, 0, 12, 12, 12, 24, 12, 12, 12, 12, 12, 24, 12, 24, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12, 12, 12, 12, 24, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, 12, 36, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, 12,
    36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12};

uint32_t ws_utf8_validate(uint32_t state, const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (state == WS_UTF8_ACCEPT) { /* ASCII runs, 8 bytes at a time */
      while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ULL)
          break;
        i += 8;
      }
      while (i < n && s[i] < 0x80)
        i++;
      if (i == n)
        break;
    }
    state = utf8d[256 + state + utf8d[s[i++]]];
    if (state == WS_UTF8_REJECT)
      break;
  }
  return state;
}

/* ---- serializing ------------------------------------------------------------------ */

size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], int opcode, bool fin, bool rsv1, uint64_t len) {
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f));
  if (len < 126) {
    out[1] = (uint8_t)len;
    return 2;
  }
  if (len <= 0xffff) {
    out[1] = 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++)
    out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
  return 10;
}

size_t ws_close_payload(uint8_t out[125], int code, const char *reason, size_t reason_len) {
  if (code == 0 || code == WS_CLOSE_NO_STATUS)
    return 0;
  out[0] = (uint8_t)(code >> 8);
  out[1] = (uint8_t)code;
  if (reason_len > 123) {
    reason_len = 123;
    /* do not cut a multi-byte character: back up over continuation bytes */
    while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xc0) == 0x80)
      reason_len--;
  }
  if (reason_len)
    memcpy(out + 2, reason, reason_len);
  return 2 + reason_len;
}

bool ws_close_code_valid(int code) {
  if (code >= 3000 && code <= 4999)
    return true;
  switch (code) {
  case 1000:
  case 1001:
  case 1002:
  case 1003:
  case 1007:
  case 1008:
  case 1009:
  case 1010:
  case 1011:
  case 1012:
  case 1013:
  case 1014:
    return true;
  default:
    return false;
  }
}

void ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset) {
  uint8_t m[4];
  for (int i = 0; i < 4; i++)
    m[i] = mask[(offset + (size_t)i) & 3];
  size_t i = 0;
  if (len >= 16) {
    uint32_t m32;
    memcpy(&m32, m, 4);
    uint64_t m64 = (uint64_t)m32 << 32 | m32;
    for (; i + 8 <= len; i += 8) {
      uint64_t w;
      memcpy(&w, data + i, 8);
      w ^= m64;
      memcpy(data + i, &w, 8);
    }
  }
  for (; i < len; i++)
    data[i] ^= m[i & 3];
}

/* ---- permessage-deflate negotiation ---------------------------------------------------- */

static bool is_tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

typedef struct lexer {
  const char *s;
  size_t n, i;
} lexer;

static void lx_ows(lexer *lx) {
  while (lx->i < lx->n && (lx->s[lx->i] == ' ' || lx->s[lx->i] == '\t'))
    lx->i++;
}

static bool lx_peek(lexer *lx, char c) {
  lx_ows(lx);
  return lx->i < lx->n && lx->s[lx->i] == c;
}

/* A token; false (and *len 0) if none. */
static bool lx_token(lexer *lx, const char **tok, size_t *len) {
  lx_ows(lx);
  size_t start = lx->i;
  while (lx->i < lx->n && is_tchar(lx->s[lx->i]))
    lx->i++;
  *tok = lx->s + start;
  *len = lx->i - start;
  return *len > 0;
}

/* A token or a quoted-string (RFC 7692 says a quoted value must still be a
 * token once unquoted); copied, unquoted, into buf. */
static bool lx_value(lexer *lx, char *buf, size_t cap, size_t *len) {
  lx_ows(lx);
  *len = 0;
  if (lx->i < lx->n && lx->s[lx->i] == '"') {
    lx->i++;
    while (lx->i < lx->n && lx->s[lx->i] != '"') {
      char c = lx->s[lx->i++];
      if (c == '\\' && lx->i < lx->n)
        c = lx->s[lx->i++];
      if (!is_tchar(c) || *len + 1 >= cap)
        return false;
      buf[(*len)++] = c;
    }
    if (lx->i >= lx->n)
      return false;
    lx->i++; /* closing quote */
  } else {
    const char *tok;
    size_t n;
    if (!lx_token(lx, &tok, &n) || n >= cap)
      return false;
    memcpy(buf, tok, n);
    *len = n;
  }
  buf[*len] = '\0';
  return *len > 0;
}

static bool tok_is(const char *tok, size_t n, const char *lit) {
  return strlen(lit) == n && strncasecmp(tok, lit, n) == 0;
}

/* "8".."15" without leading zeros; -1 otherwise. */
static int window_bits(const char *v, size_t n) {
  if (n == 1 && v[0] >= '8' && v[0] <= '9')
    return v[0] - '0';
  if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
    return 10 + (v[1] - '0');
  return -1;
}

bool ws_deflate_negotiate(const char *value, size_t len, ws_deflate_params *params, char *response,
                          size_t response_cap) {
  lexer lx = {value, len, 0};
  for (;;) {
    while (lx_peek(&lx, ','))
      lx.i++;
    lx_ows(&lx);
    if (lx.i >= lx.n)
      return false;
    const char *name;
    size_t name_len;
    if (!lx_token(&lx, &name, &name_len))
      return false; /* malformed: decline everything */
    bool ok = tok_is(name, name_len, "permessage-deflate");
    bool snct = false, cnct = false, has_sbits = false, has_cbits = false;
    int sbits = 15, cbits = 15;
    while (lx_peek(&lx, ';')) {
      lx.i++;
      const char *pname;
      size_t pn;
      if (!lx_token(&lx, &pname, &pn))
        return false;
      char val[16];
      size_t vn = 0;
      bool has_value = false;
      if (lx_peek(&lx, '=')) {
        lx.i++;
        if (!lx_value(&lx, val, sizeof(val), &vn))
          return false;
        has_value = true;
      }
      if (!ok)
        continue; /* parameters of another extension, or of a declined offer */
      if (tok_is(pname, pn, "server_no_context_takeover") && !snct && !has_value) {
        snct = true;
      } else if (tok_is(pname, pn, "client_no_context_takeover") && !cnct && !has_value) {
        cnct = true;
      } else if (tok_is(pname, pn, "server_max_window_bits") && !has_sbits && has_value) {
        has_sbits = true;
        sbits = window_bits(val, vn);
        /* zlib cannot compress raw deflate with a 256-byte window */
        ok = sbits >= 9;
      } else if (tok_is(pname, pn, "client_max_window_bits") && !has_cbits) {
        has_cbits = true;
        if (has_value) {
          cbits = window_bits(val, vn);
          ok = cbits >= 8;
        }
      } else {
        ok = false; /* unknown or repeated parameter: decline this offer */
      }
    }
    lx_ows(&lx);
    if (lx.i < lx.n && lx.s[lx.i] != ',')
      return false;
    if (!ok)
      continue;
    int server_bits = sbits < WS_DEFLATE_SERVER_BITS ? sbits : WS_DEFLATE_SERVER_BITS;
    int client_bits = 15;
    if (has_cbits)
      client_bits = cbits < WS_DEFLATE_CLIENT_BITS ? cbits : WS_DEFLATE_CLIENT_BITS;
    char out[160];
    int k = snprintf(out, sizeof(out), "permessage-deflate%s%s",
                     snct ? "; server_no_context_takeover" : "",
                     cnct ? "; client_no_context_takeover" : "");
    if (has_sbits)
      k += snprintf(out + k, sizeof(out) - (size_t)k, "; server_max_window_bits=%d", server_bits);
    if (has_cbits)
      k += snprintf(out + k, sizeof(out) - (size_t)k, "; client_max_window_bits=%d", client_bits);
    if ((size_t)k >= response_cap)
      return false;
    memcpy(response, out, (size_t)k + 1);
    params->server_no_context_takeover = snct;
    params->client_no_context_takeover = cnct;
    params->server_bits = server_bits;
    /* a larger window than the peer's always decodes; zlib's raw inflate
     * wants at least 9 */
    params->client_bits = client_bits < 9 ? 9 : client_bits;
    return true;
  }
}

/* ---- compressing ------------------------------------------------------------------------ */

void ws_deflater_init(ws_deflater *d, int window_bits, bool no_context_takeover) {
  d->zs = NULL;
  d->window_bits = window_bits;
  d->no_context_takeover = no_context_takeover;
}

int ws_deflate_message(ws_deflater *d, const uint8_t *data, size_t len, ws_buf *out) {
  if (len == 0) {
    /* an empty stored block (RFC 7692 7.2.3.6); zlib would emit nothing */
    if (ws_buf_reserve(out, 1))
      return -1;
    out->base[out->len++] = 0x00;
    return 0;
  }
  z_stream *z = d->zs;
  if (z == NULL) {
    z = calloc(1, sizeof(*z));
    if (z == NULL)
      return -1;
    if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -d->window_bits, DEFLATE_MEM_LEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      free(z);
      return -1;
    }
    d->zs = z;
  }
  size_t start = out->len;
  z->next_in = (Bytef *)data;
  z->avail_in = 0;
  size_t left = len;
  for (;;) {
    if (z->avail_in == 0 && left) {
      uInt n = left > (1u << 30) ? (1u << 30) : (uInt)left;
      z->avail_in = n;
      left -= n;
    }
    size_t want = deflateBound(z, z->avail_in) + 16;
    if (want > (1u << 20))
      want = 1u << 20;
    if (ws_buf_reserve(out, want))
      return -1;
    size_t room = out->cap - out->len;
    if (room > (1u << 30))
      room = 1u << 30;
    z->next_out = out->base + out->len;
    z->avail_out = (uInt)room;
    int r = deflate(z, Z_SYNC_FLUSH);
    out->len += room - z->avail_out;
    if (r != Z_OK && r != Z_BUF_ERROR)
      return -1;
    if (z->avail_in == 0 && left == 0 && z->avail_out != 0)
      break;
  }
  /* a sync flush ends with an empty stored block, 00 00 ff ff: not sent */
  if (out->len - start < 4 || memcmp(out->base + out->len - 4, "\x00\x00\xff\xff", 4) != 0)
    return -1;
  out->len -= 4;
  if (d->no_context_takeover && deflateReset(z) != Z_OK)
    return -1;
  return 0;
}

void ws_deflater_free(ws_deflater *d) {
  if (d->zs) {
    deflateEnd(d->zs);
    free(d->zs);
    d->zs = NULL;
  }
}

/* ---- parsing ------------------------------------------------------------------------------- */

void ws_parser_init(ws_parser *p, uint64_t max_size) {
  memset(p, 0, sizeof(*p));
  p->max_size = max_size;
  p->inflate_bits = 15;
}

void ws_parser_set_deflate(ws_parser *p, const ws_deflate_params *params) {
  p->deflate = true;
  p->inflate_reset = params->client_no_context_takeover;
  p->inflate_bits = params->client_bits;
}

void ws_parser_free(ws_parser *p) {
  ws_buf_free(&p->msg);
  if (p->zs) {
    inflateEnd(p->zs);
    free(p->zs);
    p->zs = NULL;
  }
}

static ws_event fail(ws_parser *p, int code, const char *why) {
  p->dead = true;
  p->error_code = code;
  p->error = why;
  return WS_EV_ERROR;
}

static bool too_big(const ws_parser *p, uint64_t total) {
  return p->max_size && total > p->max_size;
}

/* Inflates n compressed bytes into msg (bounded by max_size), validating
 * text as it comes. Returns WS_EV_NONE or WS_EV_ERROR. */
static ws_event inflate_some(ws_parser *p, const uint8_t *in, size_t n) {
  z_stream *z = p->zs;
  if (z == NULL) {
    z = calloc(1, sizeof(*z));
    if (z == NULL)
      return fail(p, WS_CLOSE_INTERNAL_ERROR, "out of memory");
    if (inflateInit2(z, -p->inflate_bits) != Z_OK) {
      free(z);
      return fail(p, WS_CLOSE_INTERNAL_ERROR, "cannot initialise zlib");
    }
    p->zs = z;
  }
  z->next_in = (Bytef *)in;
  z->avail_in = (uInt)n;
  for (;;) {
    if (p->msg.cap - p->msg.len < 1024) {
      size_t grow = p->msg.cap < GROW_STEP ? (p->msg.cap ? p->msg.cap : 4096) : GROW_STEP;
      if (ws_buf_reserve(&p->msg, grow))
        return fail(p, WS_CLOSE_TOO_BIG, "message too big (out of memory)");
    }
    size_t room = p->msg.cap - p->msg.len;
    /* never produce more than max_size + 1 bytes: a bomb stops here */
    if (p->max_size && room > p->max_size - p->msg.len + 1)
      room = (size_t)(p->max_size - p->msg.len + 1);
    if (room > (1u << 30))
      room = 1u << 30;
    z->next_out = p->msg.base + p->msg.len;
    z->avail_out = (uInt)room;
    int r = inflate(z, Z_SYNC_FLUSH);
    size_t produced = room - z->avail_out;
    if (produced && p->msg_opcode == WS_OP_TEXT) {
      p->utf8 = ws_utf8_validate(p->utf8, p->msg.base + p->msg.len, produced);
      if (p->utf8 == WS_UTF8_REJECT)
        return fail(p, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
    }
    p->msg.len += produced;
    if (too_big(p, p->msg.len))
      return fail(p, WS_CLOSE_TOO_BIG, "message too big");
    if (r == Z_STREAM_END) {
      /* the peer ended its deflate stream (BFINAL): start a new one */
      if (inflateReset(z) != Z_OK)
        return fail(p, WS_CLOSE_INTERNAL_ERROR, "zlib failure");
      if (z->avail_in == 0)
        return WS_EV_NONE;
      continue;
    }
    if (r != Z_OK && r != Z_BUF_ERROR)
      return fail(p, WS_CLOSE_INVALID_DATA, "invalid compressed data");
    if (z->avail_in == 0 && z->avail_out != 0)
      return WS_EV_NONE;
    if (r == Z_BUF_ERROR && produced == 0 && z->avail_in != 0)
      return fail(p, WS_CLOSE_INVALID_DATA, "invalid compressed data");
  }
}

static ws_event header_done(ws_parser *p) {
  const uint8_t *h = p->hdr;
  bool rsv1 = h[0] & 0x40;
  p->fin = h[0] & 0x80;
  p->opcode = h[0] & 0x0f;
  if (h[0] & 0x30)
    return fail(p, WS_CLOSE_PROTOCOL_ERROR, "reserved bits must be 0");
  if (!(h[1] & 0x80))
    return fail(p, WS_CLOSE_PROTOCOL_ERROR, "client frames must be masked");
  uint64_t len = h[1] & 0x7f;
  size_t off = 2;
  if (len == 126) {
    len = (uint64_t)h[2] << 8 | h[3];
    off = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; i++)
      len = len << 8 | h[2 + i];
    off = 10;
    if (len >> 63)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "invalid frame length");
  }
  memcpy(p->mask, h + off, 4);
  p->mask_off = 0;
  p->remaining = len;
  switch (p->opcode) {
  case WS_OP_CLOSE:
  case WS_OP_PING:
  case WS_OP_PONG:
    if (!p->fin)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "fragmented control frame");
    if (len > 125)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "control frame too long");
    if (rsv1)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "reserved bits must be 0");
    p->ctrl_len = 0;
    return WS_EV_NONE;
  case WS_OP_CONT:
    if (!p->msg_opcode)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "unexpected continuation frame");
    if (rsv1)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "reserved bits must be 0");
    break;
  case WS_OP_TEXT:
  case WS_OP_BINARY:
    if (p->msg_opcode)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "expected a continuation frame");
    if (rsv1 && !p->deflate)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "reserved bits must be 0");
    p->msg_opcode = p->opcode;
    p->msg_compressed = rsv1;
    p->msg_wire = 0;
    p->utf8 = WS_UTF8_ACCEPT;
    p->msg.len = 0;
    break;
  default:
    return fail(p, WS_CLOSE_PROTOCOL_ERROR, "invalid opcode");
  }
  /* data frame: refuse an oversized message before reading it */
  p->msg_wire += len;
  if (too_big(p, p->msg_compressed ? p->msg_wire : p->msg.len + len))
    return fail(p, WS_CLOSE_TOO_BIG, "message too big");
  return WS_EV_NONE;
}

/* The frame's payload is complete. */
static ws_event frame_done(ws_parser *p) {
  switch (p->opcode) {
  case WS_OP_PING:
    return WS_EV_PING;
  case WS_OP_PONG:
    return WS_EV_PONG;
  case WS_OP_CLOSE:
    p->close_reason = (const char *)p->ctrl + 2;
    p->close_reason_len = 0;
    if (p->ctrl_len == 0) {
      p->close_code = WS_CLOSE_NO_STATUS;
      return WS_EV_CLOSE;
    }
    if (p->ctrl_len == 1)
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "invalid close frame");
    p->close_code = p->ctrl[0] << 8 | p->ctrl[1];
    if (!ws_close_code_valid(p->close_code))
      return fail(p, WS_CLOSE_PROTOCOL_ERROR, "invalid close code");
    p->close_reason_len = p->ctrl_len - 2;
    if (ws_utf8_validate(WS_UTF8_ACCEPT, p->ctrl + 2, p->close_reason_len) != WS_UTF8_ACCEPT)
      return fail(p, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in the close reason");
    return WS_EV_CLOSE;
  default:
    break;
  }
  if (!p->fin)
    return WS_EV_NONE;
  if (p->msg_compressed) {
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (inflate_some(p, tail, 4) == WS_EV_ERROR)
      return WS_EV_ERROR;
    if (p->inflate_reset && inflateReset(p->zs) != Z_OK)
      return fail(p, WS_CLOSE_INTERNAL_ERROR, "zlib failure");
  }
  if (p->msg_opcode == WS_OP_TEXT && p->utf8 != WS_UTF8_ACCEPT)
    return fail(p, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
  ws_event ev = p->msg_opcode == WS_OP_TEXT ? WS_EV_TEXT : WS_EV_BINARY;
  p->msg_opcode = 0;
  p->msg_ready = true;
  return ev;
}

/* Consumes payload bytes of the current frame. */
static ws_event payload(ws_parser *p, const uint8_t *data, size_t n) {
  if (p->opcode & 0x08) {
    memcpy(p->ctrl + p->ctrl_len, data, n);
    ws_mask(p->ctrl + p->ctrl_len, n, p->mask, p->mask_off);
    p->ctrl_len += n;
  } else if (p->msg_compressed) {
    uint8_t chunk[INFLATE_CHUNK];
    size_t off = 0;
    while (off < n) {
      size_t k = n - off < sizeof(chunk) ? n - off : sizeof(chunk);
      memcpy(chunk, data + off, k);
      ws_mask(chunk, k, p->mask, p->mask_off + off);
      if (inflate_some(p, chunk, k) == WS_EV_ERROR)
        return WS_EV_ERROR;
      off += k;
    }
  } else {
    if (ws_buf_reserve(&p->msg, n))
      return fail(p, WS_CLOSE_TOO_BIG, "message too big (out of memory)");
    uint8_t *dst = p->msg.base + p->msg.len;
    memcpy(dst, data, n);
    ws_mask(dst, n, p->mask, p->mask_off);
    if (p->msg_opcode == WS_OP_TEXT) {
      p->utf8 = ws_utf8_validate(p->utf8, dst, n);
      if (p->utf8 == WS_UTF8_REJECT)
        return fail(p, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
    }
    p->msg.len += n;
  }
  p->mask_off += n;
  p->remaining -= n;
  return WS_EV_NONE;
}

void ws_parser_message_taken(ws_parser *p) {
  p->msg_ready = false;
  p->msg.len = 0;
  if (p->msg.cap > MSG_KEEP_CAP)
    ws_buf_free(&p->msg);
}

ws_event ws_parser_feed(ws_parser *p, const uint8_t *data, size_t len, size_t *used) {
  size_t i = 0;
  ws_event ev = WS_EV_NONE;
  if (p->dead) {
    *used = 0;
    return WS_EV_ERROR;
  }
  if (p->msg_ready) /* the last event's message has been taken */
    ws_parser_message_taken(p);
  while (i < len && ev == WS_EV_NONE) {
    if (!p->in_payload) {
      if (p->hdr_len < 2) {
        p->hdr[p->hdr_len++] = data[i++];
        if (p->hdr_len < 2)
          continue;
        if (p->hdr[0] & 0x30) {
          ev = fail(p, WS_CLOSE_PROTOCOL_ERROR, "reserved bits must be 0");
          break;
        }
        if (!(p->hdr[1] & 0x80)) {
          ev = fail(p, WS_CLOSE_PROTOCOL_ERROR, "client frames must be masked");
          break;
        }
        uint8_t l7 = p->hdr[1] & 0x7f;
        p->hdr_need = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + 4);
      }
      size_t take = p->hdr_need - p->hdr_len;
      if (take > len - i)
        take = len - i;
      memcpy(p->hdr + p->hdr_len, data + i, take);
      p->hdr_len = (uint8_t)(p->hdr_len + take);
      i += take;
      if (p->hdr_len < p->hdr_need)
        continue;
      p->hdr_len = 0;
      if ((ev = header_done(p)) == WS_EV_ERROR)
        break;
      p->in_payload = true;
      if (p->opcode <= WS_OP_BINARY && p->remaining > 0 && !p->msg_compressed) {
        /* room for the whole frame at once (bounded: max_size was checked) */
        size_t ahead = p->remaining < GROW_STEP ? (size_t)p->remaining : GROW_STEP;
        if (ws_buf_reserve(&p->msg, ahead)) {
          ev = fail(p, WS_CLOSE_TOO_BIG, "message too big (out of memory)");
          break;
        }
      }
    } else {
      size_t n = p->remaining < len - i ? (size_t)p->remaining : len - i;
      if (n && (ev = payload(p, data + i, n)) == WS_EV_ERROR)
        break;
      i += n;
    }
    if (p->in_payload && p->remaining == 0) {
      p->in_payload = false;
      ev = frame_done(p);
    }
  }
  *used = i;
  return ev;
}
