#include "cli.h"

#include "ipallow.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum opt_kind {
  OPT_STR,
  OPT_INT,
  OPT_LONG,
  OPT_SECONDS,
  OPT_BOOL, /* --name / --no-name */
  OPT_FLAG, /* --name only */
  OPT_LEVEL,
  OPT_LIFESPAN,
  OPT_WS,
  OPT_HEADER, /* repeatable */
  OPT_IPLIST, /* --forwarded-allow-ips: checked by ipallow_parse */
  OPT_LOG_FORMAT,
  OPT_HEADER_NAME, /* a field name, or "" for none */
  OPT_URL_PATH,    /* starts with '/' */
} opt_kind;

typedef struct opt_spec {
  const char *name;
  opt_kind kind;
  size_t offset;
  long min, max; /* for numbers */
  const char *metavar;
  const char *help;
} opt_spec;

#define OFF(field) offsetof(cli_options, field)

static const opt_spec options[] = {
    {"app", OPT_STR, OFF(app), 0, 0, "MODULE:ATTR", "ASGI application (default: the packed one)"},
    {"factory", OPT_FLAG, OFF(factory), 0, 0, NULL,
     "call the app attribute to get the application"},
    {"host", OPT_STR, OFF(host), 0, 0, "HOST", "bind address (default 127.0.0.1)"},
    {"port", OPT_INT, OFF(port), 0, 65535, "PORT", "bind port (default 8000)"},
    {"uds", OPT_STR, OFF(uds), 0, 0, "PATH", "bind to a Unix domain socket"},
    {"fd", OPT_INT, OFF(fd), 0, INT_MAX, "FD", "serve on an inherited listening socket"},
    {"backlog", OPT_INT, OFF(backlog), 1, INT_MAX, "N", "listen backlog (default 2048)"},
    {"workers", OPT_INT, OFF(workers), 1, 1024, "N", "worker processes (default 1)"},
    {"root-path", OPT_STR, OFF(root_path), 0, 0, "PATH", "ASGI root_path for a sub-mounted app"},
    {"proxy-headers", OPT_BOOL, OFF(proxy_headers), 0, 0, NULL,
     "trust X-Forwarded-Proto/For from --forwarded-allow-ips (default on)"},
    {"forwarded-allow-ips", OPT_IPLIST, OFF(forwarded_allow_ips), 0, 0, "IPS",
     "proxy addresses and CIDR networks to trust, comma-separated, or * (default 127.0.0.1)"},
    {"server-header", OPT_BOOL, OFF(server_header), 0, 0, NULL, "send Server: appbin (default on)"},
    {"date-header", OPT_BOOL, OFF(date_header), 0, 0, NULL, "send a Date header (default on)"},
    {"header", OPT_HEADER, OFF(headers), 0, 0, "NAME:VALUE",
     "add a response header to every response (repeatable)"},
    {"h11-max-incomplete-event-size", OPT_INT, OFF(h11_max_incomplete_event_size), 1024,
     16 * 1024 * 1024, "BYTES", "limit on a request's head (default 16384)"},
    {"timeout-keep-alive", OPT_SECONDS, OFF(timeout_keep_alive), 0, 0, "SECONDS",
     "close idle keep-alive connections after this (default 5)"},
    {"timeout-request-header", OPT_SECONDS, OFF(timeout_request_header), 0, 0, "SECONDS",
     "close a connection whose request head takes longer (default 10)"},
    {"timeout-graceful-shutdown", OPT_SECONDS, OFF(timeout_graceful_shutdown), 0, 0, "SECONDS",
     "wait this long for in-flight requests on shutdown (default 30)"},
    {"limit-concurrency", OPT_INT, OFF(limit_concurrency), 0, INT_MAX, "N",
     "answer 503 beyond N concurrent requests (default: no limit)"},
    {"limit-max-requests", OPT_LONG, OFF(limit_max_requests), 0, LONG_MAX, "N",
     "a worker exits after N requests (default: no limit)"},
    {"limit-max-requests-jitter", OPT_LONG, OFF(limit_max_requests_jitter), 0, LONG_MAX, "N",
     "each worker adds a random 0..N to --limit-max-requests (default 0)"},
    {"timeout-worker-healthcheck", OPT_SECONDS, OFF(timeout_worker_healthcheck), 0, 0, "SECONDS",
     "--workers: replace a worker whose event loop is blocked this long (default 30; 0: off)"},
    {"lifespan", OPT_LIFESPAN, OFF(lifespan), 0, 0, "auto|on|off", "ASGI lifespan (default auto)"},
    {"log-level", OPT_LEVEL, OFF(log_level), 0, 0, "LEVEL",
     "trace|debug|info|warning|error|critical (default info)"},
    {"access-log", OPT_BOOL, OFF(access_log), 0, 0, NULL,
     "log each request to stderr (default on)"},
    {"log-config", OPT_STR, OFF(log_config), 0, 0, "FILE",
     "logging config: dictConfig .json/.yaml/.yml, else fileConfig (.ini)"},
    {"use-colors", OPT_BOOL, OFF(use_colors), 0, 0, NULL,
     "coloured log levels (default: when stderr is a terminal)"},
    {"log-format", OPT_LOG_FORMAT, OFF(log_format), 0, 0, "text|json",
     "log lines as uvicorn's text or one JSON object each (default text)"},
    {"request-id-header", OPT_HEADER_NAME, OFF(request_id_header), 0, 0, "NAME",
     "request header logged as request_id (default X-Request-ID; '' for none)"},
    {"env-file", OPT_STR, OFF(env_file), 0, 0, "FILE",
     "load environment variables from a dotenv file"},
    {"metrics-port", OPT_INT, OFF(metrics_port), 0, 65535, "PORT",
     "serve Prometheus metrics on this port (default: off)"},
    {"metrics-host", OPT_STR, OFF(metrics_host), 0, 0, "HOST",
     "bind address of the metrics endpoint (default: --host)"},
    {"metrics-path", OPT_URL_PATH, OFF(metrics_path), 0, 0, "PATH",
     "path of the metrics endpoint (default /metrics)"},
    {"ssl-certfile", OPT_STR, OFF(ssl_certfile), 0, 0, "FILE",
     "serve HTTPS: PEM certificate, then its chain (default: plain HTTP)"},
    {"ssl-keyfile", OPT_STR, OFF(ssl_keyfile), 0, 0, "FILE",
     "PEM private key of --ssl-certfile (default: in that file)"},
    {"ssl-keyfile-password", OPT_STR, OFF(ssl_keyfile_password), 0, 0, "PASSWORD",
     "password of an encrypted --ssl-keyfile"},
    {"ssl-ca-certs", OPT_STR, OFF(ssl_ca_certs), 0, 0, "FILE",
     "PEM CA certificates that client certificates are verified against"},
    {"ssl-cert-reqs", OPT_INT, OFF(ssl_cert_reqs), 0, 2, "0|1|2",
     "client certificates: 0 none, 1 optional, 2 required (default 0)"},
    {"ssl-ciphers", OPT_STR, OFF(ssl_ciphers), 0, 0, "CIPHERS",
     "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's)"},
    {"ws", OPT_WS, OFF(ws), 0, 0, "auto|none", "WebSocket support (default auto)"},
    {"ws-max-size", OPT_LONG, OFF(ws_max_size), 1, LONG_MAX, "BYTES",
     "largest WebSocket message (default 16777216)"},
    {"ws-max-queue", OPT_INT, OFF(ws_max_queue), 1, INT_MAX, "N",
     "WebSocket messages buffered per connection (default 32)"},
    {"ws-ping-interval", OPT_SECONDS, OFF(ws_ping_interval), 0, 0, "SECONDS",
     "WebSocket ping interval (default 20)"},
    {"ws-ping-timeout", OPT_SECONDS, OFF(ws_ping_timeout), 0, 0, "SECONDS",
     "WebSocket ping timeout (default 20)"},
    {"ws-per-message-deflate", OPT_BOOL, OFF(ws_per_message_deflate), 0, 0, NULL,
     "WebSocket permessage-deflate (default on)"},
    {"health-path", OPT_STR, OFF(health_path), 0, 0, "PATH",
     "healthcheck: the path to probe (default /health)"},
    {"health-timeout", OPT_SECONDS, OFF(health_timeout), 0, 0, "SECONDS",
     "healthcheck: give up after this (default 5)"},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static void set_defaults(cli_options *o) {
  memset(o, 0, sizeof(*o));
  o->host = "127.0.0.1";
  o->port = 8000;
  o->fd = -1;
  o->backlog = 2048;
  o->workers = 1;
  o->root_path = "";
  o->proxy_headers = 1;
  o->forwarded_allow_ips = "127.0.0.1";
  o->server_header = 1;
  o->date_header = 1;
  o->h11_max_incomplete_event_size = 16 * 1024;
  o->timeout_keep_alive = 5;
  o->timeout_request_header = 10;
  o->timeout_graceful_shutdown = 30;
  o->timeout_worker_healthcheck = 30;
  o->lifespan = LIFESPAN_AUTO;
  o->log_level = LOG_INFO;
  o->access_log = 1;
  o->use_colors = -1;
  o->log_format = LOG_FORMAT_TEXT;
  o->request_id_header = "x-request-id";
  o->metrics_port = -1;
  o->metrics_path = "/metrics";
  o->ws = "auto";
  o->ws_max_size = 16 * 1024 * 1024;
  o->ws_max_queue = 32;
  o->ws_ping_interval = 20;
  o->ws_ping_timeout = 20;
  o->ws_per_message_deflate = 1;
  o->health_path = "/health";
  o->health_timeout = 5;
}

static const char *const level_names[] = {"trace", "debug", "info", "warning", "error", "critical"};

const char *cli_log_level_name(cli_log_level level) { return level_names[level]; }

static const char *const log_format_names[] = {"text", "json"};

const char *cli_log_format_name(cli_log_format format) { return log_format_names[format]; }

static int is_tchar(char ch) {
  return isalnum((unsigned char)ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int parse_bool(const char *v, int *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0)
      return *out = 1, 0;
    if (strcasecmp(v, no[i]) == 0)
      return *out = 0, 0;
  }
  return -1;
}

/* Applies one value; `source` says where it came from, for messages. */
static int apply(cli_options *o, const opt_spec *s, const char *value, const char *source,
                 char *err, size_t errlen) {
  char *field = (char *)o + s->offset;
  char *end;
  switch (s->kind) {
  case OPT_STR:
    if (!*value && strcmp(s->name, "root-path") != 0)
      goto bad;
    *(const char **)field = value;
    return 0;
  case OPT_INT:
  case OPT_LONG: {
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < s->min || v > s->max) {
      snprintf(err, errlen, "%s --%s: '%s' is not an integer in [%ld, %ld]", source, s->name, value,
               s->min, s->max);
      return 2;
    }
    if (s->kind == OPT_INT)
      *(int *)field = (int)v;
    else
      *(long *)field = v;
    return 0;
  }
  case OPT_SECONDS: {
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end || !isfinite(v) || v < 0 || v > 1e7)
      goto bad;
    *(double *)field = v;
    return 0;
  }
  case OPT_BOOL:
  case OPT_FLAG:
    if (parse_bool(value, (int *)field) != 0)
      goto bad;
    return 0;
  case OPT_LEVEL:
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
      if (strcasecmp(value, level_names[i]) == 0)
        return *(cli_log_level *)field = (cli_log_level)i, o->log_level_set = 1, 0;
    goto bad;
  case OPT_LOG_FORMAT:
    for (size_t i = 0; i < sizeof(log_format_names) / sizeof(log_format_names[0]); i++)
      if (strcasecmp(value, log_format_names[i]) == 0)
        return *(cli_log_format *)field = (cli_log_format)i, 0;
    goto bad;
  case OPT_HEADER_NAME:
    for (const char *p = value; *p; p++)
      if (!is_tchar(*p))
        goto bad;
    *(const char **)field = value;
    return 0;
  case OPT_URL_PATH:
    if (value[0] != '/')
      goto bad;
    for (const char *p = value; *p; p++)
      if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#')
        goto bad;
    *(const char **)field = value;
    return 0;
  case OPT_LIFESPAN:
    if (strcmp(value, "auto") == 0)
      return *(cli_lifespan *)field = LIFESPAN_AUTO, 0;
    if (strcmp(value, "on") == 0)
      return *(cli_lifespan *)field = LIFESPAN_ON, 0;
    if (strcmp(value, "off") == 0)
      return *(cli_lifespan *)field = LIFESPAN_OFF, 0;
    goto bad;
  case OPT_WS:
    if (strcmp(value, "auto") != 0 && strcmp(value, "none") != 0 &&
        strcmp(value, "websockets") != 0)
      goto bad;
    *(const char **)field = value;
    return 0;
  case OPT_IPLIST: {
    ipallow allow;
    char why[160];
    if (ipallow_parse(&allow, value, why, sizeof(why)) != 0) {
      snprintf(err, errlen, "%s --%s: %s (expected IP addresses, CIDR networks or *)", source,
               s->name, why);
      return 2;
    }
    ipallow_free(&allow);
    *(const char **)field = value;
    return 0;
  }
  case OPT_HEADER: {
    const char *colon = strchr(value, ':');
    if (!colon || colon == value)
      goto bad;
    for (const char *p = value; p < colon; p++)
      if (!is_tchar(*p))
        goto bad;
    for (const char *p = colon + 1; *p; p++)
      if ((unsigned char)*p < 0x20 && *p != '\t')
        goto bad;
    if (o->nheaders == CLI_MAX_HEADERS) {
      snprintf(err, errlen, "%s --%s: at most %d headers", source, s->name, CLI_MAX_HEADERS);
      return 2;
    }
    o->headers[o->nheaders++] = value;
    return 0;
  }
  }
bad:
  snprintf(err, errlen, "%s --%s: invalid value '%s'%s%s", source, s->name, value,
           s->metavar ? " (expected " : "", s->metavar ? s->metavar : "");
  if (s->metavar)
    strncat(err, ")", errlen - strlen(err) - 1);
  return 2;
}

static const opt_spec *find_option(const char *name, size_t len, int *negated) {
  *negated = 0;
  if (len > 3 && strncmp(name, "no-", 3) == 0) {
    for (size_t i = 0; i < NOPTIONS; i++)
      if (options[i].kind == OPT_BOOL && strlen(options[i].name) == len - 3 &&
          strncmp(options[i].name, name + 3, len - 3) == 0)
        return *negated = 1, &options[i];
  }
  for (size_t i = 0; i < NOPTIONS; i++)
    if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
      return &options[i];
  return NULL;
}

/* Pack-time defaults (default.<name>=value) and APPBIN_<NAME> variables. */
static int apply_defaults(cli_options *o, const manifest *mf, char *err, size_t errlen) {
  for (size_t i = 0; mf && i < mf->count; i++) {
    const char *key = mf->entries[i].key;
    if (strncmp(key, "default.", 8) != 0)
      continue;
    int negated;
    const opt_spec *s = find_option(key + 8, strlen(key + 8), &negated);
    if (!s || negated) {
      snprintf(err, errlen, "payload manifest: unknown option default '%s'", key + 8);
      return 2;
    }
    if (apply(o, s, mf->entries[i].value, "payload default", err, errlen) != 0)
      return 2;
  }
  for (size_t i = 0; i < NOPTIONS; i++) {
    char env[64] = "APPBIN_";
    size_t n = strlen(env);
    for (const char *p = options[i].name; *p && n + 1 < sizeof(env); p++)
      env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    env[n] = '\0';
    const char *v = getenv(env);
    if (v && apply(o, &options[i], v, env, err, errlen) != 0)
      return 2;
  }
  return 0;
}

int cli_is_python_mode(int argc, char **argv) {
  const char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
  base = base ? base + 1 : (argc > 0 ? argv[0] : "");
  if (strncmp(base, "python", 6) == 0)
    return 1;
  if (argc < 2)
    return 0;
  if (strcmp(argv[1], "python") == 0)
    return 1;
  return argv[1][0] == '-' && argv[1][1] != '-' && argv[1][1] != '\0' && strcmp(argv[1], "-h") != 0;
}

int cli_parse(int argc, char **argv, const manifest *defaults, cli_options *o, char *err,
              size_t errlen) {
  set_defaults(o);
  o->app = defaults ? manifest_get(defaults, "app") : NULL;
  const char *factory = defaults ? manifest_get(defaults, "factory") : NULL;
  if (factory)
    o->factory = strcmp(factory, "1") == 0;

  if (cli_is_python_mode(argc, argv)) {
    o->mode = CLI_PYTHON;
    /* "app.bin python ARGS" drops the subcommand; "python3 ARGS" (argv[0]
     * named python*) passes everything after argv[0]. */
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    int skip =
        strncmp(base, "python", 6) != 0 && argc > 1 && strcmp(argv[1], "python") == 0 ? 2 : 1;
    o->python_argc = argc - skip;
    o->python_argv = argv + skip;
    /* Only the log level applies to the interpreter (debug shows how native
     * code is loaded); a bad value must not close the debugging door. */
    const char *level = getenv("APPBIN_LOG_LEVEL");
    for (size_t i = 0; level && i < sizeof(level_names) / sizeof(level_names[0]); i++)
      if (strcasecmp(level, level_names[i]) == 0)
        o->log_level = (cli_log_level)i;
    return 0;
  }
  int i = 1;
  o->mode = CLI_SERVE;
  if (argc > 1 && strcmp(argv[1], "healthcheck") == 0)
    o->mode = CLI_HEALTHCHECK, i = 2;
  if (apply_defaults(o, defaults, err, errlen) != 0)
    return 2;

  for (; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      o->mode = CLI_HELP;
      return 0;
    }
    if (strcmp(arg, "--version") == 0) {
      o->mode = CLI_VERSION;
      return 0;
    }
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
      snprintf(err, errlen, "unexpected argument '%s' (options start with --; see --help)", arg);
      return 2;
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    int negated;
    const opt_spec *s = find_option(name, len, &negated);
    if (!s) {
      snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)len, name);
      return 2;
    }
    const char *value;
    if (s->kind == OPT_BOOL || s->kind == OPT_FLAG) {
      if (eq) {
        snprintf(err, errlen, "option '--%.*s' takes no value", (int)len, name);
        return 2;
      }
      value = negated ? "0" : "1";
    } else if (eq) {
      value = eq + 1;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      snprintf(err, errlen, "option '--%s' needs a value (%s)", s->name, s->metavar);
      return 2;
    }
    if (apply(o, s, value, "option", err, errlen) != 0)
      return 2;
  }
  if (!o->ssl_certfile && o->mode != CLI_PYTHON) {
    const char *tls_only = o->ssl_keyfile            ? "ssl-keyfile"
                           : o->ssl_keyfile_password ? "ssl-keyfile-password"
                           : o->ssl_ca_certs         ? "ssl-ca-certs"
                           : o->ssl_cert_reqs        ? "ssl-cert-reqs"
                           : o->ssl_ciphers          ? "ssl-ciphers"
                                                     : NULL;
    if (tls_only) {
      snprintf(err, errlen, "option --%s needs --ssl-certfile", tls_only);
      return 2;
    }
  }
  if (o->mode == CLI_SERVE && o->app) {
    const char *colon = strchr(o->app, ':');
    if (!colon || colon == o->app || !colon[1]) {
      snprintf(err, errlen, "option --app: '%s' is not MODULE:ATTR", o->app);
      return 2;
    }
  }
  return 0;
}

void cli_print_help(FILE *out, const char *prog) {
  fprintf(out,
          "usage: %s [OPTIONS]              serve the packed ASGI application\n"
          "       %s python [ARGS]          run the bundled Python, like python3 ARGS\n"
          "       %s healthcheck [OPTIONS]  GET --health-path on --host/--port; exit 0 if 2xx\n"
          "       %s --version | --help\n\n"
          "options (environment: APPBIN_<OPTION>, e.g. APPBIN_PORT=9000; pack-time\n"
          "defaults: appbin-pack --default OPTION=VALUE):\n",
          prog, prog, prog, prog);
  for (size_t i = 0; i < NOPTIONS; i++) {
    char left[64];
    const opt_spec *s = &options[i];
    if (s->kind == OPT_BOOL)
      snprintf(left, sizeof(left), "--%s/--no-%s", s->name, s->name);
    else if (s->kind == OPT_FLAG)
      snprintf(left, sizeof(left), "--%s", s->name);
    else
      snprintf(left, sizeof(left), "--%s %s", s->name, s->metavar);
    if (strlen(left) > 30)
      fprintf(out, "  %s\n  %-30s  %s\n", left, "", s->help);
    else
      fprintf(out, "  %-30s  %s\n", left, s->help);
  }
  fprintf(out, "\nexit status: 0 success, 1 runtime error, 2 bad usage\n");
}
