/* manifest: the key=value text the packager stores as appbin/manifest. */
#ifndef APPBIN_MANIFEST_H
#define APPBIN_MANIFEST_H

#include <stddef.h>

typedef struct manifest_entry {
  const char *key;
  const char *value;
} manifest_entry;

typedef struct manifest {
  manifest_entry *entries;
  size_t count;
  char *text; /* owned copy of the manifest, keys and values point into it */
} manifest;

/* Parses `len` bytes of manifest text. Blank lines and lines starting with
 * '#' are skipped; any other line must hold '=' after a non-empty key.
 * Returns 0, or -1 with a message in err. */
int manifest_parse(manifest *m, const char *text, size_t len, char *err, size_t errlen);

/* The value of `key`, or NULL. When a key repeats, the last one wins. */
const char *manifest_get(const manifest *m, const char *key);

void manifest_free(manifest *m);

#endif
