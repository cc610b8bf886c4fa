#include "zipindex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

static uint64_t name_hash(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ULL;
  }
  return h;
}

static int entry_cmp(const void *a, const void *b) {
  const zipindex_entry *x = a, *y = b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, n);
  if (c)
    return c;
  return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int name_is_safe(const char *name, size_t len) {
  if (len == 0 || name[0] == '/' || memchr(name, '\\', len) || memchr(name, '\0', len))
    return 0;
  for (size_t i = 0; i < len;) {
    size_t j = i;
    while (j < len && name[j] != '/')
      j++;
    if ((j - i == 2 && name[i] == '.' && name[i + 1] == '.') || (j - i == 1 && name[i] == '.'))
      return 0;
    i = j + 1;
  }
  return 1;
}

static int build_hash(zipindex *zi) {
  size_t nslots = 16;
  while (nslots < zi->count * 2)
    nslots <<= 1;
  zi->slots = calloc(nslots, sizeof(*zi->slots));
  if (!zi->slots)
    return -1;
  zi->slot_mask = nslots - 1;
  for (size_t i = 0; i < zi->count; i++) {
    size_t s = name_hash(zi->entries[i].name, zi->entries[i].name_len) & zi->slot_mask;
    while (zi->slots[s])
      s = (s + 1) & zi->slot_mask;
    zi->slots[s] = (uint32_t)(i + 1);
  }
  return 0;
}

int zipindex_open(zipindex *zi, const void *data, size_t len, char *err, size_t errlen) {
  memset(zi, 0, sizeof(*zi));
  zip_error_t zerr;
  zip_error_init(&zerr);
  zip_source_t *src = zip_source_buffer_create(data, len, 0, &zerr);
  if (!src) {
    snprintf(err, errlen, "cannot read archive: %s", zip_error_strerror(&zerr));
    zip_error_fini(&zerr);
    return -1;
  }
  zip_t *zip = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
  if (!zip) {
    snprintf(err, errlen, "archive is not a valid zip: %s", zip_error_strerror(&zerr));
    zip_error_fini(&zerr);
    zip_source_free(src);
    return -1;
  }
  zip_error_fini(&zerr);
  zi->zip = zip;
  zi->source = src;

  zip_int64_t n = zip_get_num_entries(zip, 0);
  if (n < 0 || (uint64_t)n >= UINT32_MAX) {
    snprintf(err, errlen, "archive has an invalid number of members");
    goto fail;
  }
  zi->entries = calloc((size_t)n ? (size_t)n : 1, sizeof(*zi->entries));
  if (!zi->entries) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  for (zip_int64_t i = 0; i < n; i++) {
    zip_stat_t st;
    if (zip_stat_index(zip, (zip_uint64_t)i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) ||
        !(st.valid & ZIP_STAT_SIZE)) {
      snprintf(err, errlen, "archive member %lld is unreadable", (long long)i);
      goto fail;
    }
    size_t nlen = strlen(st.name);
    if (!name_is_safe(st.name, nlen)) {
      snprintf(err, errlen, "archive member name is unsafe: %.200s", st.name);
      goto fail;
    }
    zipindex_entry *e = &zi->entries[zi->count++];
    e->name = st.name;
    e->name_len = nlen;
    e->size = st.size;
    e->zip_index = (uint64_t)i;
  }
  qsort(zi->entries, zi->count, sizeof(*zi->entries), entry_cmp);
  for (size_t i = 1; i < zi->count; i++) {
    if (entry_cmp(&zi->entries[i - 1], &zi->entries[i]) == 0) {
      snprintf(err, errlen, "archive has a duplicate member: %.200s", zi->entries[i].name);
      goto fail;
    }
  }
  if (build_hash(zi) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  return 0;

fail:
  zipindex_close(zi);
  return -1;
}

void zipindex_close(zipindex *zi) {
  if (zi->zip)
    zip_discard(zi->zip); /* also frees the source */
  else if (zi->source)
    zip_source_free(zi->source);
  free(zi->entries);
  free(zi->slots);
  memset(zi, 0, sizeof(*zi));
}

const zipindex_entry *zipindex_find(const zipindex *zi, const char *name, size_t len) {
  if (!zi->slots)
    return NULL;
  size_t s = name_hash(name, len) & zi->slot_mask;
  for (uint32_t slot; (slot = zi->slots[s]) != 0; s = (s + 1) & zi->slot_mask) {
    const zipindex_entry *e = &zi->entries[slot - 1];
    if (e->name_len == len && memcmp(e->name, name, len) == 0)
      return e;
  }
  return NULL;
}

int zipindex_read(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen) {
  zip_file_t *f = zip_fopen_index(zi->zip, e->zip_index, 0);
  if (!f) {
    snprintf(err, errlen, "cannot open member %s: %s", e->name, zip_strerror(zi->zip));
    return -1;
  }
  zip_int64_t got = 0;
  while ((uint64_t)got < e->size) {
    zip_int64_t r = zip_fread(f, (char *)buf + got, e->size - (uint64_t)got);
    if (r <= 0) {
      snprintf(err, errlen, "cannot read member %s: %s", e->name,
               r < 0 ? zip_file_strerror(f) : "unexpected end of data");
      zip_fclose(f);
      return -1;
    }
    got += r;
  }
  /* A read past the end makes libzip verify the CRC of what was read. */
  char extra;
  zip_int64_t more = zip_fread(f, &extra, 1);
  if (more != 0) {
    snprintf(err, errlen, "member %s is damaged: %s", e->name,
             more > 0 ? "it holds more data than its recorded size" : zip_file_strerror(f));
    zip_fclose(f);
    return -1;
  }
  zip_fclose(f);
  return 0;
}

size_t zipindex_lower_bound(const zipindex *zi, const char *prefix, size_t len) {
  zipindex_entry key = {.name = prefix, .name_len = len};
  size_t lo = 0, hi = zi->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (entry_cmp(&zi->entries[mid], &key) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int zipindex_is_dir(const zipindex *zi, const char *dir, size_t len) {
  if (len == 0)
    return zi->count > 0;
  char *prefix = malloc(len + 1);
  if (!prefix)
    return 0;
  memcpy(prefix, dir, len);
  prefix[len] = '/';
  size_t i = zipindex_lower_bound(zi, prefix, len + 1);
  int found = i < zi->count && zi->entries[i].name_len > len &&
              memcmp(zi->entries[i].name, prefix, len + 1) == 0;
  free(prefix);
  return found;
}
