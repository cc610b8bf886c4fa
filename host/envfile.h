/*
 * envfile: --env-file, a dotenv file read as uvicorn reads it (python-dotenv's
 * load_dotenv: its grammar, its ${VAR} and ${VAR:-default} expansion, and
 * variables already in the environment left alone), without Python.
 *
 * The grammar (python-dotenv 1.x): blank lines and "# comment" lines; an
 * optional "export " prefix; KEY or 'KEY', optional blanks around "=";
 * values unquoted (up to the end of the line, a " #..." comment and trailing
 * blanks removed), 'single-quoted' (\\ and \' decoded) or "double-quoted"
 * (\\ \' \" \a \b \f \n \r \t \v decoded), quoted values spanning lines; a
 * KEY without "=" sets nothing. ${NAME} and ${NAME:-default} expand in every
 * value (quoted or not) from the environment first, then from the file's
 * earlier keys. The file must be UTF-8 (a BOM is skipped); CRLF and CR line
 * ends read as LF.
 *
 * Unlike python-dotenv, which warns and skips a line it cannot parse, a bad
 * line is an error naming the file and line: a half-read secrets file is
 * better refused than served.
 */
#ifndef APPBIN_ENVFILE_H
#define APPBIN_ENVFILE_H

#include <stddef.h>

typedef struct envfile_entry {
  char *key;
  char *value; /* NULL: a KEY without "=" (sets nothing) */
  int line;
} envfile_entry;

typedef struct envfile {
  envfile_entry *entries; /* in file order; a repeated key keeps its last value */
  size_t count;
} envfile;

/* Looks a variable up for ${NAME} (getenv for envfile_load). */
typedef const char *(*envfile_lookup)(const char *name, void *ud);

/* Parses and expands text (len bytes). Returns 0, or -1 with a message in
 * err ("line N: ..."); *out is empty then. `name` prefixes messages. */
int envfile_parse(const char *name, const char *text, size_t len, envfile_lookup lookup, void *ud,
                  envfile *out, char *err, size_t errlen);
void envfile_free(envfile *ef);

/* Reads path and sets each variable that the environment does not already
 * have (setenv). *nset: how many were set. Returns 0 or -1 with err. */
int envfile_load(const char *path, size_t *nset, envfile *loaded, char *err, size_t errlen);

#endif
