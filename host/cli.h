/*
 * cli: app.bin's command line.
 *
 *   app.bin [OPTIONS]               serve the packed ASGI app
 *   app.bin python [ARGS]           the bundled interpreter, like python3.11 ARGS
 *   app.bin healthcheck [OPTIONS]   probe the server's health endpoint
 *   app.bin --version | --help
 *
 * Option values come from, lowest precedence first: built-in defaults, the
 * payload manifest (default.<option>=value, set by appbin-pack --default),
 * environment variables (APPBIN_<OPTION>, dashes as underscores), the
 * command line. An --env-file is loaded after this (ops.c), as uvicorn loads
 * its env file after reading its own options: it does not set options.
 */
#ifndef APPBIN_CLI_H
#define APPBIN_CLI_H

#include "manifest.h"

#include <stdio.h>

typedef enum cli_mode {
  CLI_SERVE,
  CLI_PYTHON,
  CLI_HEALTHCHECK,
  CLI_VERSION,
  CLI_HELP,
} cli_mode;

typedef enum cli_log_level {
  LOG_TRACE,
  LOG_DEBUG,
  LOG_INFO,
  LOG_WARNING,
  LOG_ERROR,
  LOG_CRITICAL,
} cli_log_level;

typedef enum cli_lifespan { LIFESPAN_AUTO, LIFESPAN_ON, LIFESPAN_OFF } cli_lifespan;

typedef enum cli_log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON } cli_log_format;

#define CLI_MAX_HEADERS 32

typedef struct cli_options {
  cli_mode mode;
  /* application */
  const char *app; /* MODULE:ATTR */
  int factory;
  /* sockets */
  const char *host;
  int port;
  const char *uds;
  int fd;
  int backlog;
  int workers;
  /* protocol */
  const char *root_path;
  int proxy_headers;
  const char *forwarded_allow_ips;
  int server_header;
  int date_header;
  const char *headers[CLI_MAX_HEADERS]; /* "Name: value" as given */
  int nheaders;
  int h11_max_incomplete_event_size;
  /* limits and timeouts (seconds) */
  double timeout_keep_alive;
  double timeout_request_header;
  double timeout_graceful_shutdown;
  int limit_concurrency;
  long limit_max_requests;
  long limit_max_requests_jitter;    /* each worker adds a random 0..N to the limit */
  double timeout_worker_healthcheck; /* --workers: replace a worker blocked this long (0: off) */
  /* lifecycle and logging */
  cli_lifespan lifespan;
  cli_log_level log_level;
  int access_log;
  /* operations: logging set-up, environment file, metrics endpoint */
  int log_level_set;             /* --log-level came from somewhere (not the built-in) */
  const char *log_config;        /* dictConfig JSON/YAML or fileConfig .ini/.conf */
  int use_colors;                /* 1, 0, or -1: when stderr is a terminal */
  cli_log_format log_format;     /* text (uvicorn's) or json (one object a line) */
  const char *request_id_header; /* as given; "" logs no request id */
  const char *env_file;          /* dotenv file loaded before anything else */
  int metrics_port;              /* -1: no metrics endpoint; 0: any free port */
  const char *metrics_host;      /* NULL: the --host value */
  const char *metrics_path;
  /* TLS (uvicorn's --ssl-* options); TLS is on with ssl_certfile */
  const char *ssl_certfile;
  const char *ssl_keyfile; /* NULL: the key is in ssl_certfile */
  const char *ssl_keyfile_password;
  const char *ssl_ca_certs;
  int ssl_cert_reqs; /* client certificates: 0 none, 1 optional, 2 required */
  const char *ssl_ciphers;
  /* websockets */
  const char *ws; /* "auto" or "none" */
  long ws_max_size;
  int ws_max_queue;
  double ws_ping_interval;
  double ws_ping_timeout;
  int ws_per_message_deflate;
  /* healthcheck */
  const char *health_path;
  double health_timeout;
  /* python mode: arguments after "python" */
  int python_argc;
  char **python_argv;
} cli_options;

/* Whether argv asks for the interpreter (argv[0] named python*, the
 * "python" subcommand, or a leading single-dash option as multiprocessing
 * and subprocess users pass to sys.executable). */
int cli_is_python_mode(int argc, char **argv);

/* Parses everything; `defaults` may be NULL (a host with no payload).
 * Returns 0, or 2 with a message naming the offending flag in err. */
int cli_parse(int argc, char **argv, const manifest *defaults, cli_options *out, char *err,
              size_t errlen);

void cli_print_help(FILE *out, const char *prog);

const char *cli_log_level_name(cli_log_level level);
const char *cli_log_format_name(cli_log_format format);

#endif
