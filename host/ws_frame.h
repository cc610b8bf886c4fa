/* WebSocket protocol pieces (RFC 6455 frames, RFC 7692 permessage-deflate),
 * without sockets or Python: the handshake key, the client frame parser that
 * assembles messages, the server frame serializer, the UTF-8 validator and the
 * permessage-deflate negotiation and compression. Unit-tested on its own
 * (tests/unit/test_ws_frame.c).
 *
 * Memory: a ws_parser and a ws_deflater own heap buffers and zlib streams
 * (created lazily, on the first compressed message); free them with
 * ws_parser_free() / ws_deflater_free(). Nothing here is thread-aware.
 */
#ifndef APPBIN_WS_FRAME_H
#define APPBIN_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum ws_opcode {
  WS_OP_CONT = 0x0,
  WS_OP_TEXT = 0x1,
  WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8,
  WS_OP_PING = 0x9,
  WS_OP_PONG = 0xA,
};

/* Close codes (RFC 6455 7.4.1 and the IANA registry). */
enum {
  WS_CLOSE_NORMAL = 1000,
  WS_CLOSE_GOING_AWAY = 1001,
  WS_CLOSE_PROTOCOL_ERROR = 1002,
  WS_CLOSE_UNSUPPORTED = 1003,
  WS_CLOSE_NO_STATUS = 1005, /* never sent: "the close frame had no code" */
  WS_CLOSE_ABNORMAL = 1006,  /* never sent: "no close frame at all" */
  WS_CLOSE_INVALID_DATA = 1007,
  WS_CLOSE_POLICY = 1008,
  WS_CLOSE_TOO_BIG = 1009,
  WS_CLOSE_INTERNAL_ERROR = 1011,
  WS_CLOSE_SERVICE_RESTART = 1012,
};

/* ---- handshake ------------------------------------------------------------ */

/* A Sec-WebSocket-Key is the base64 of 16 bytes (24 characters). */
bool ws_key_valid(const char *key, size_t len);
/* Sec-WebSocket-Accept: base64(SHA-1(key + the RFC 6455 GUID)); 28
 * characters and a NUL. */
void ws_accept_key(const char *key, size_t len, char out[29]);

/* ---- permessage-deflate negotiation (RFC 7692) ------------------------------ */

typedef struct ws_deflate_params {
  bool server_no_context_takeover; /* reset our compressor after each message */
  bool client_no_context_takeover; /* the client resets its compressor: so may we */
  int server_bits;                 /* window of our compressor (9..15) */
  int client_bits;                 /* window for our decompressor (9..15) */
} ws_deflate_params;

/* The window our compressor uses unless the client asks for less, and the
 * one we ask the client for when it offers client_max_window_bits (bounded
 * memory per connection, as uvicorn's websockets-sansio does). */
#define WS_DEFLATE_SERVER_BITS 12
#define WS_DEFLATE_CLIENT_BITS 12

/* Looks through one Sec-WebSocket-Extensions header value for the first
 * permessage-deflate offer we can accept. Returns true and fills *params and
 * response (the Sec-WebSocket-Extensions value to answer with, NUL-terminated)
 * when one is accepted; false when there is none (unknown extensions,
 * unsupported parameters and malformed values are declined, not errors). */
bool ws_deflate_negotiate(const char *value, size_t len, ws_deflate_params *params, char *response,
                          size_t response_cap);

/* ---- UTF-8 ------------------------------------------------------------------ */

enum { WS_UTF8_ACCEPT = 0, WS_UTF8_REJECT = 12 };
/* Validates incrementally: feed pieces with the returned state. REJECT is
 * final; a complete text must end in ACCEPT. */
uint32_t ws_utf8_validate(uint32_t state, const uint8_t *s, size_t n);

/* ---- serializing (server frames: never masked) -------------------------------- */

#define WS_MAX_HEADER 10
/* Writes a frame header for a payload of len bytes; returns its size (2, 4
 * or 10). */
size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], int opcode, bool fin, bool rsv1, uint64_t len);
/* A close frame's payload: the code and as much of reason as fits in 123
 * bytes (cut at a UTF-8 character boundary). code 0 or WS_CLOSE_NO_STATUS:
 * empty payload. Returns its size. */
size_t ws_close_payload(uint8_t out[125], int code, const char *reason, size_t reason_len);
/* A code a peer may send in a close frame. */
bool ws_close_code_valid(int code);
/* XORs data with the 4-byte mask, the mask's offset being `offset` (mod 4). */
void ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset);

/* ---- byte buffer ------------------------------------------------------------------ */

typedef struct ws_buf {
  uint8_t *base;
  size_t len, cap;
} ws_buf;
int ws_buf_reserve(ws_buf *b, size_t extra); /* 0 or -1 (out of memory) */
void ws_buf_free(ws_buf *b);

/* ---- compressing (permessage-deflate) --------------------------------------------- */

typedef struct ws_deflater {
  void *zs; /* z_stream, created on the first message */
  int window_bits;
  bool no_context_takeover;
} ws_deflater;

void ws_deflater_init(ws_deflater *d, int window_bits, bool no_context_takeover);
/* Appends the compressed payload of one message (the final 00 00 ff ff
 * removed) to out. 0, or -1 on out of memory / zlib failure. */
int ws_deflate_message(ws_deflater *d, const uint8_t *data, size_t len, ws_buf *out);
void ws_deflater_free(ws_deflater *d);

/* ---- parsing client frames ------------------------------------------------------- */

typedef enum ws_event {
  WS_EV_NONE,   /* all input used, no event yet */
  WS_EV_TEXT,   /* a complete text message (valid UTF-8) in msg */
  WS_EV_BINARY, /* a complete binary message in msg */
  WS_EV_PING,   /* ctrl/ctrl_len: the ping's payload */
  WS_EV_PONG,   /* ctrl/ctrl_len: the pong's payload */
  WS_EV_CLOSE,  /* close_code (WS_CLOSE_NO_STATUS if none), close_reason */
  WS_EV_ERROR,  /* error_code (1002, 1007, 1009) and error: fail the connection */
} ws_event;

typedef struct ws_parser {
  /* --- configuration (set by ws_parser_init / ws_parser_set_deflate) --- */
  uint64_t max_size; /* largest message, after decompression (0: no limit) */
  bool deflate;      /* permessage-deflate negotiated: RSV1 allowed */
  bool inflate_reset;
  int inflate_bits;
  /* --- results, valid until the next ws_parser_feed() --- */
  ws_buf msg; /* the message of a WS_EV_TEXT / WS_EV_BINARY event */
  uint8_t ctrl[125];
  size_t ctrl_len;
  int close_code;
  const char *close_reason; /* points into ctrl; not NUL-terminated */
  size_t close_reason_len;
  int error_code;
  const char *error; /* static string */
  /* --- internal --- */
  uint8_t hdr[14];
  uint8_t hdr_len, hdr_need;
  uint8_t opcode, mask[4];
  bool fin, in_payload, msg_ready, dead;
  uint8_t msg_opcode; /* WS_OP_TEXT / WS_OP_BINARY while a message is open */
  bool msg_compressed;
  uint32_t utf8;
  uint64_t remaining, mask_off, msg_wire; /* msg_wire: compressed bytes so far */
  void *zs;                               /* z_stream for inflate, created lazily */
} ws_parser;

void ws_parser_init(ws_parser *p, uint64_t max_size);
/* Accept compressed messages (after negotiating permessage-deflate). */
void ws_parser_set_deflate(ws_parser *p, const ws_deflate_params *params);
/* Parses up to len bytes and stops after the first event; *used tells how
 * many bytes were consumed (the rest must be fed again). After WS_EV_ERROR
 * the parser is dead: feeding it again returns WS_EV_ERROR. */
ws_event ws_parser_feed(ws_parser *p, const uint8_t *data, size_t len, size_t *used);
/* The message of the last WS_EV_TEXT / WS_EV_BINARY has been copied out:
 * a large buffer goes now, not at the next feed (an idle connection keeps
 * none). Optional: the next feed does the same. */
void ws_parser_message_taken(ws_parser *p);
/* Frees buffers and zlib state. The parser may be initialised again. */
void ws_parser_free(ws_parser *p);

#ifdef __cplusplus
}
#endif
#endif
