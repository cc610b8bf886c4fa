/*
 * http_tls: TLS for the HTTP server's connections (--ssl-certfile and the
 * other --ssl-* options), OpenSSL over memory BIOs.
 *
 * The connection keeps doing its own socket I/O: it feeds the ciphertext it
 * read (http_tls_feed) and takes plaintext out (http_tls_read) into its read
 * buffer; it hands its plaintext output over (http_tls_write) and writes
 * the ciphertext that comes out (http_tls_output) as it writes plain
 * output. Handshake records and alerts come out the same way. No socket, no
 * event loop and no threads here.
 */
#ifndef APPBIN_HTTP_TLS_H
#define APPBIN_HTTP_TLS_H

#include <stdbool.h>
#include <stddef.h>

/* ALPN's wire form of the one protocol served (and the healthcheck asks). */
#define HTTP_TLS_ALPN_HTTP11 "\x08http/1.1"

typedef struct http_tls_config {
  const char *certfile; /* PEM: the certificate, then its chain */
  const char *keyfile;  /* PEM private key; NULL: in certfile */
  const char *password; /* of an encrypted keyfile, or NULL */
  const char *ca_certs; /* PEM CA bundle to verify client certificates */
  const char *ciphers;  /* OpenSSL cipher list (TLS 1.2), or NULL for OpenSSL's */
  int cert_reqs;        /* client certificates: 0 none, 1 optional, 2 required */
} http_tls_config;

/* A server's TLS settings, shared by its connections. */
typedef struct http_tls_ctx http_tls_ctx;

/* NULL on failure, with one line naming the option and the problem in err
 * (e.g. "--ssl-keyfile key.pem: the key does not match the certificate"). */
http_tls_ctx *http_tls_ctx_new(const http_tls_config *cfg, char *err, size_t errlen);
void http_tls_ctx_free(http_tls_ctx *ctx);

/* One connection's TLS state. */
typedef struct http_tls http_tls;

http_tls *http_tls_new(http_tls_ctx *ctx); /* NULL: out of memory */
void http_tls_free(http_tls *t);

/* Ciphertext read from the peer. 0, or -1 when out of memory. */
int http_tls_feed(http_tls *t, const char *data, size_t len);

#define HTTP_TLS_CLOSED (-1) /* http_tls_read: the peer's close_notify */
#define HTTP_TLS_ERROR (-2)  /* http_tls_read, http_tls_write: a fatal error */

/* Plaintext into buf: bytes (> 0), 0 when the ciphertext fed so far holds no
 * more, HTTP_TLS_CLOSED or HTTP_TLS_ERROR (see http_tls_error). The
 * handshake happens here too. */
long http_tls_read(http_tls *t, char *buf, size_t cap);

/* Plaintext to send: 0 or HTTP_TLS_ERROR. */
int http_tls_write(http_tls *t, const char *data, size_t len);

/* Queue the close_notify alert (once). */
void http_tls_close(http_tls *t);

/* An idle connection's turn to give back OpenSSL's buffers that grew large
 * (memory BIOs keep their largest size; renewing them while data flows
 * would cost reallocations at every flush). */
void http_tls_trim(http_tls *t);

/* Ciphertext waiting to be written, and taking up to cap bytes of it. */
size_t http_tls_output_pending(const http_tls *t);
size_t http_tls_output(http_tls *t, char *buf, size_t cap);

/* The reason of the last HTTP_TLS_ERROR, one line (static or in t). */
const char *http_tls_error(const http_tls *t);

#endif
