#include "manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int manifest_parse(manifest *m, const char *text, size_t len, char *err, size_t errlen) {
  memset(m, 0, sizeof(*m));
  if (memchr(text, '\0', len)) {
    snprintf(err, errlen, "manifest contains a NUL byte");
    return -1;
  }
  m->text = malloc(len + 1);
  if (!m->text) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  memcpy(m->text, text, len);
  m->text[len] = '\0';

  size_t lines = 1;
  for (size_t i = 0; i < len; i++)
    lines += text[i] == '\n';
  m->entries = calloc(lines, sizeof(*m->entries));
  if (!m->entries) {
    manifest_free(m);
    snprintf(err, errlen, "out of memory");
    return -1;
  }

  size_t lineno = 0;
  for (char *line = m->text, *next; line; line = next) {
    lineno++;
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    size_t n = strlen(line);
    if (n && line[n - 1] == '\r')
      line[--n] = '\0';
    if (n == 0 || line[0] == '#')
      continue;
    char *eq = strchr(line, '=');
    if (!eq || eq == line) {
      snprintf(err, errlen, "manifest line %zu is not key=value", lineno);
      manifest_free(m);
      return -1;
    }
    *eq = '\0';
    m->entries[m->count].key = line;
    m->entries[m->count].value = eq + 1;
    m->count++;
  }
  return 0;
}

const char *manifest_get(const manifest *m, const char *key) {
  for (size_t i = m->count; i-- > 0;)
    if (strcmp(m->entries[i].key, key) == 0)
      return m->entries[i].value;
  return NULL;
}

void manifest_free(manifest *m) {
  free(m->entries);
  free(m->text);
  memset(m, 0, sizeof(*m));
}
