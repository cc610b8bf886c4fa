#include "http_tls.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

struct http_tls_ctx {
  SSL_CTX *ssl;
  char *password;
  bool password_needed; /* the key is encrypted and no password was given */
};

/* A memory BIO keeps the largest buffer it ever held: http_tls_trim()
 * gives an idle connection new ones for those that grew large. */
#define BIO_KEEP_MAX 16384

struct http_tls {
  SSL *ssl;
  BIO *in;  /* ciphertext from the peer, read by OpenSSL */
  BIO *out; /* ciphertext OpenSSL wrote, for the socket */
  bool close_sent;
  char error[160];
};

/* OpenSSL's reason for the last error of this thread, queue cleared. */
static void take_ssl_error(char *buf, size_t n, const char *fallback) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  snprintf(buf, n, "%s", reason ? reason : fallback);
  ERR_clear_error();
}

/* Installed whether or not a password was given: OpenSSL's own would ask
 * for one on the terminal. */
static int password_cb(char *buf, int size, int rwflag, void *userdata) {
  (void)rwflag;
  http_tls_ctx *ctx = userdata;
  const char *password = ctx->password;
  if (password == NULL) {
    ctx->password_needed = true;
    return -1;
  }
  if (size <= 0)
    return -1;
  size_t n = strlen(password);
  if (n > (size_t)size)
    return -1;
  memcpy(buf, password, n);
  return (int)n;
}

/* Offers only HTTP/1.1 when the client offers ALPN: a client that wants h2
 * alone fails the handshake instead of speaking h2 to an HTTP/1.1 server. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  static const unsigned char http11[] = HTTP_TLS_ALPN_HTTP11;
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static http_tls_ctx *ctx_fail(http_tls_ctx *ctx, char *err, size_t errlen, const char *option,
                              const char *path, const char *what) {
  char reason[160];
  take_ssl_error(reason, sizeof(reason), "unknown error");
  snprintf(err, errlen, "--%s %s: %s (%s)", option, path ? path : "", what, reason);
  http_tls_ctx_free(ctx);
  return NULL;
}

http_tls_ctx *http_tls_ctx_new(const http_tls_config *cfg, char *err, size_t errlen) {
  assert(cfg->certfile != NULL);
  ERR_clear_error();
  http_tls_ctx *ctx = calloc(1, sizeof(*ctx));
  if (ctx == NULL || (ctx->ssl = SSL_CTX_new(TLS_server_method())) == NULL) {
    snprintf(err, errlen, "out of memory for the TLS context");
    http_tls_ctx_free(ctx);
    return NULL;
  }
  SSL_CTX *s = ctx->ssl;
  SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
  SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_alpn_select_cb(s, alpn_select, NULL);
  if (cfg->password && (ctx->password = strdup(cfg->password)) == NULL) {
    snprintf(err, errlen, "out of memory for the TLS context");
    http_tls_ctx_free(ctx);
    return NULL;
  }
  SSL_CTX_set_default_passwd_cb(s, password_cb);
  SSL_CTX_set_default_passwd_cb_userdata(s, ctx);
  if (SSL_CTX_use_certificate_chain_file(s, cfg->certfile) != 1)
    return ctx_fail(ctx, err, errlen, "ssl-certfile", cfg->certfile,
                    "cannot load the certificate chain");
  const char *keyfile = cfg->keyfile ? cfg->keyfile : cfg->certfile;
  const char *keyopt = cfg->keyfile ? "ssl-keyfile" : "ssl-certfile";
  if (SSL_CTX_use_PrivateKey_file(s, keyfile, SSL_FILETYPE_PEM) != 1) {
    unsigned long e = ERR_peek_last_error();
    bool mismatch =
        ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
    return ctx_fail(ctx, err, errlen, keyopt, keyfile,
                    mismatch ? "the private key does not match the certificate"
                    : ctx->password_needed
                        ? "the private key is encrypted: give --ssl-keyfile-password"
                    : cfg->password ? "cannot load the private key (wrong --ssl-keyfile-password?)"
                                    : "cannot load the private key");
  }
  if (SSL_CTX_check_private_key(s) != 1)
    return ctx_fail(ctx, err, errlen, keyopt, keyfile,
                    "the private key does not match the certificate");
  if (cfg->ciphers && SSL_CTX_set_cipher_list(s, cfg->ciphers) != 1)
    return ctx_fail(ctx, err, errlen, "ssl-ciphers", cfg->ciphers, "no usable cipher");
  if (cfg->ca_certs) {
    if (SSL_CTX_load_verify_locations(s, cfg->ca_certs, NULL) != 1)
      return ctx_fail(ctx, err, errlen, "ssl-ca-certs", cfg->ca_certs,
                      "cannot load the CA certificates");
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_certs);
    if (names)
      SSL_CTX_set_client_CA_list(s, names);
  }
  if (cfg->cert_reqs > 0) {
    if (!cfg->ca_certs) {
      snprintf(err, errlen, "--ssl-cert-reqs %d: needs --ssl-ca-certs to verify clients with",
               cfg->cert_reqs);
      http_tls_ctx_free(ctx);
      return NULL;
    }
    int mode = SSL_VERIFY_PEER | (cfg->cert_reqs >= 2 ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
    SSL_CTX_set_verify(s, mode, NULL);
  }
  static const unsigned char sid_ctx[] = "appbin";
  SSL_CTX_set_session_id_context(s, sid_ctx, sizeof(sid_ctx) - 1);
  ERR_clear_error();
  return ctx;
}

void http_tls_ctx_free(http_tls_ctx *ctx) {
  if (ctx == NULL)
    return;
  SSL_CTX_free(ctx->ssl);
  if (ctx->password) {
    memset(ctx->password, 0, strlen(ctx->password));
    free(ctx->password);
  }
  free(ctx);
}

http_tls *http_tls_new(http_tls_ctx *ctx) {
  http_tls *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return NULL;
  t->ssl = SSL_new(ctx->ssl);
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->in == NULL || t->out == NULL) {
    BIO_free(t->in);
    BIO_free(t->out);
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return NULL;
  }
  /* An empty memory BIO reads as "try again", not as the end of the input. */
  BIO_set_mem_eof_return(t->in, -1);
  SSL_set_bio(t->ssl, t->in, t->out); /* the SSL owns both now */
  SSL_set_accept_state(t->ssl);
  return t;
}

void http_tls_free(http_tls *t) {
  if (t == NULL)
    return;
  SSL_free(t->ssl);
  free(t);
}

/* A new empty memory BIO in place of `bio` when it is empty but large. */
static BIO *bio_shrunk(http_tls *t, BIO *bio, bool input) {
  BUF_MEM *mem = NULL;
  if (BIO_ctrl_pending(bio) != 0 || BIO_get_mem_ptr(bio, &mem) != 1 || mem == NULL ||
      mem->max <= BIO_KEEP_MAX)
    return bio;
  BIO *fresh = BIO_new(BIO_s_mem());
  if (fresh == NULL) {
    ERR_clear_error();
    return bio; /* keep the large one */
  }
  if (input) {
    BIO_set_mem_eof_return(fresh, -1);
    SSL_set0_rbio(t->ssl, fresh); /* frees the old one */
  } else {
    SSL_set0_wbio(t->ssl, fresh);
  }
  return fresh;
}

int http_tls_feed(http_tls *t, const char *data, size_t len) {
  while (len > 0) {
    int n = BIO_write(t->in, data, len > INT_MAX ? INT_MAX : (int)len);
    if (n <= 0) {
      ERR_clear_error();
      return -1;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* HTTP_TLS_ERROR with the reason kept in t. */
static int tls_fail(http_tls *t, int ssl_error) {
  if (ssl_error == SSL_ERROR_SSL) {
    take_ssl_error(t->error, sizeof(t->error), "protocol error");
  } else {
    snprintf(t->error, sizeof(t->error), "TLS error %d", ssl_error);
    ERR_clear_error();
  }
  return HTTP_TLS_ERROR;
}

long http_tls_read(http_tls *t, char *buf, size_t cap) {
  if (cap == 0)
    return 0;
  ERR_clear_error();
  int n = SSL_read(t->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
  if (n > 0)
    return n;
  int e = SSL_get_error(t->ssl, n);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  if (e == SSL_ERROR_ZERO_RETURN)
    return HTTP_TLS_CLOSED;
  return tls_fail(t, e);
}

int http_tls_write(http_tls *t, const char *data, size_t len) {
  while (len > 0) {
    ERR_clear_error();
    int n = SSL_write(t->ssl, data, len > INT_MAX ? INT_MAX : (int)len);
    if (n <= 0)
      return tls_fail(t, SSL_get_error(t->ssl, n));
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

void http_tls_close(http_tls *t) {
  if (t->close_sent || !SSL_is_init_finished(t->ssl))
    return;
  t->close_sent = true;
  SSL_shutdown(t->ssl);
  ERR_clear_error();
}

size_t http_tls_output_pending(const http_tls *t) { return BIO_ctrl_pending(t->out); }

size_t http_tls_output(http_tls *t, char *buf, size_t cap) {
  int n = BIO_read(t->out, buf, cap > INT_MAX ? INT_MAX : (int)cap);
  return n > 0 ? (size_t)n : 0;
}

void http_tls_trim(http_tls *t) {
  t->in = bio_shrunk(t, t->in, true);
  t->out = bio_shrunk(t, t->out, false);
}

const char *http_tls_error(const http_tls *t) { return t->error[0] ? t->error : "TLS error"; }
