#include "ops.h"

#include "applog.h"
#include "envfile.h"
#include "metrics.h"
#include "metrics_http.h"

#include <stdio.h>
#include <string.h>

static int metrics_fd = -1;
static char metrics_where[600]; /* http://HOST:PORT/PATH */

/* uvicorn reads its own UVICORN_* options before it loads the env file, so
 * the file only reaches the application; app.bin does the same, and says so
 * for the APPBIN_* variables a file sets. */
static void warn_options_in_file(const envfile *ef, const char *path) {
  for (size_t i = 0; i < ef->count; i++)
    if (strncmp(ef->entries[i].key, "APPBIN_", 7) == 0)
      applog(LOG_WARNING,
             "%s sets %s, which does not configure app.bin: options are read before the env "
             "file (as uvicorn does); pass it as an option or in the environment",
             path, ef->entries[i].key);
}

int ops_prepare(const cli_options *o) {
  applog_setup(o->log_level, o->log_format == LOG_FORMAT_JSON, o->use_colors);
  if (o->env_file) {
    char err[1024];
    size_t nset;
    envfile ef;
    applog(LOG_INFO, "Loading environment from '%s'", o->env_file);
    if (envfile_load(o->env_file, &nset, &ef, err, sizeof(err)) != 0) {
      fprintf(stderr, "app.bin: error: --env-file: %s\n", err);
      return 2;
    }
    warn_options_in_file(&ef, o->env_file);
    envfile_free(&ef);
  }
  if (o->metrics_port >= 0) {
    const char *host = o->metrics_host ? o->metrics_host : o->host;
    char where[300];
    if (metrics_setup(o->workers) != 0) {
      applog(LOG_ERROR, "cannot map the metrics counters");
      return 1;
    }
    /* bound now (a port in use fails before anything starts), listening
     * only once the payload is verified */
    metrics_fd = metrics_http_bind(host, o->metrics_port, where, sizeof(where));
    if (metrics_fd < 0)
      return 1;
    snprintf(metrics_where, sizeof(metrics_where), "%s%s", where, o->metrics_path);
  }
  return 0;
}

int ops_metrics_listen(void) {
  if (metrics_fd < 0)
    return 0;
  if (metrics_http_listen(metrics_fd) != 0)
    return 1;
  applog(LOG_INFO, "Metrics on %s", metrics_where);
  return 0;
}

int ops_start_serving(const cli_options *o, zipindex *zi) {
  if (metrics_fd < 0)
    return 0;
  if (metrics_claim_slot() != 0) {
    applog(LOG_ERROR, "no free metrics slot for worker process");
    return 1;
  }
  /* a worker: its supervisor verified the payload, listened and said so */
  if (o->workers > 1)
    return metrics_http_start(metrics_fd, o->metrics_path, NULL, NULL) == 0 ? 0 : 1;
  return metrics_http_start(metrics_fd, o->metrics_path, &zi->all_checked, metrics_where) == 0 ? 0
                                                                                               : 1;
}
