/* libFuzzer harness for host/ws_frame.c: arbitrary client bytes through the
 * frame parser (with and without permessage-deflate, small and large size
 * limits, any segmentation), every message compressed back and parsed again,
 * and the extension negotiation on the same bytes.
 *
 * Input: byte 0 = flags (deflate, context takeover, size limit, window
 * bits), byte 1 = segmentation seed, the rest = what the client sends. */
#include "ws_frame.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t MASK[4] = {1, 2, 3, 4};

/* Compresses a message, frames it as a client would and parses it back. */
static void round_trip(ws_deflater *d, ws_parser *back, const uint8_t *msg, size_t len, int op) {
  ws_buf z = {0};
  if (ws_deflate_message(d, msg, len, &z) != 0) {
    ws_buf_free(&z);
    return;
  }
  uint8_t *frame = malloc(z.len + 16);
  if (frame) {
    size_t h = ws_frame_header(frame, op, true, true, z.len);
    frame[1] |= 0x80;
    memcpy(frame + h, MASK, 4);
    memcpy(frame + h + 4, z.base, z.len);
    ws_mask(frame + h + 4, z.len, MASK, 0);
    size_t off = 0, n = h + 4 + z.len;
    ws_event ev = WS_EV_NONE;
    while (off < n && ev == WS_EV_NONE) {
      size_t used;
      ev = ws_parser_feed(back, frame + off, n - off, &used);
      off += used;
    }
    if ((ev != WS_EV_TEXT && ev != WS_EV_BINARY) || back->msg.len != len ||
        (len && memcmp(back->msg.base, msg, len) != 0))
      abort(); /* what we compress must come back unchanged */
    free(frame);
  }
  ws_buf_free(&z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  uint8_t flags = data[0];
  uint32_t seed = data[1] | 1u;
  data += 2;
  size -= 2;

  ws_deflate_params dp;
  char resp[160];
  ws_deflate_negotiate((const char *)data, size < 300 ? size : 300, &dp, resp, sizeof(resp));
  volatile uint32_t u = ws_utf8_validate(WS_UTF8_ACCEPT, data, size);
  (void)u;

  ws_parser p;
  ws_parser_init(&p, (flags & 4) ? 100000 : 300);
  dp = (ws_deflate_params){flags & 8, flags & 16, 9 + (flags >> 5), 9 + (flags >> 5)};
  if (flags & 1)
    ws_parser_set_deflate(&p, &dp);
  ws_deflater d;
  ws_deflater_init(&d, dp.server_bits, dp.server_no_context_takeover);
  ws_parser back;
  ws_parser_init(&back, 0);
  ws_parser_set_deflate(&back, &(ws_deflate_params){false, dp.server_no_context_takeover, 15, 15});

  size_t i = 0;
  while (i < size) {
    seed = seed * 1103515245u + 12345u;
    size_t step = (flags & 2) ? size - i : 1 + (seed >> 16) % 40;
    if (step > size - i)
      step = size - i;
    size_t used;
    ws_event ev = ws_parser_feed(&p, data + i, step, &used);
    i += used;
    if (ev == WS_EV_ERROR) {
      if (p.error == NULL || (p.error_code != 1002 && p.error_code != 1007 &&
                              p.error_code != 1009 && p.error_code != 1011))
        abort();
      break;
    }
    if (ev == WS_EV_TEXT) {
      if (ws_utf8_validate(WS_UTF8_ACCEPT, p.msg.base, p.msg.len) != WS_UTF8_ACCEPT)
        abort(); /* a text message must be valid UTF-8 */
      round_trip(&d, &back, p.msg.base, p.msg.len, WS_OP_TEXT);
    } else if (ev == WS_EV_BINARY) {
      round_trip(&d, &back, p.msg.base, p.msg.len, WS_OP_BINARY);
    } else if (ev == WS_EV_CLOSE) {
      uint8_t out[125];
      ws_close_payload(out, p.close_code, p.close_reason, p.close_reason_len);
    } else if (ev == WS_EV_PING || ev == WS_EV_PONG) {
      if (p.ctrl_len > 125)
        abort();
    }
    if (used == 0 && ev == WS_EV_NONE)
      break;
  }
  ws_parser_free(&p);
  ws_parser_free(&back);
  ws_deflater_free(&d);
  return 0;
}
