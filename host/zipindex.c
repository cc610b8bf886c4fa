#include "zipindex.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zip.h>
#include <zlib.h>
#include <zstd.h>

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

/* libzip turns every entry's DOS timestamp into a time_t with mktime(), which
 * with TZ unset re-reads /etc/localtime each time: two stat() calls per
 * member, some 3,800 for a FastAPI app (5 ms). With TZ set for the duration
 * (the timestamps are never used) glibc keeps its zone; the caller's TZ is
 * put back afterwards. Start-up is single-threaded here. */
typedef struct saved_tz {
  char *value; /* strdup'd TZ, or NULL when it was unset */
  int ok;      /* TZ was replaced and must be restored */
} saved_tz;

static saved_tz tz_pin_utc(void) {
  saved_tz saved = {NULL, 0};
  const char *tz = getenv("TZ");
  if (tz && !(saved.value = strdup(tz)))
    return saved; /* out of memory: leave TZ alone, only slower */
  saved.ok = setenv("TZ", "UTC0", 1) == 0;
  return saved;
}

static void tz_restore(saved_tz *saved) {
  if (saved->ok) {
    if (saved->value)
      setenv("TZ", saved->value, 1);
    else
      unsetenv("TZ");
    tzset();
  }
  free(saved->value);
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
  saved_tz tz = tz_pin_utc();
  zip_t *zip = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
  tz_restore(&tz);
  if (!zip) {
    snprintf(err, errlen, "archive is not a valid zip: %s", zip_error_strerror(&zerr));
    zip_error_fini(&zerr);
    zip_source_free(src);
    return -1;
  }
  zip_error_fini(&zerr);
  zi->zip = zip;
  zi->source = src;
  if (pthread_mutex_init(&zi->read_lock, NULL) != 0) {
    snprintf(err, errlen, "cannot create a mutex");
    goto fail;
  }
  zi->read_lock_ready = 1;

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
    const zip_uint64_t need =
        ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD | ZIP_STAT_CRC;
    if (zip_stat_index(zip, (zip_uint64_t)i, 0, &st) != 0 || (st.valid & need) != need) {
      snprintf(err, errlen, "archive member %lld is unreadable", (long long)i);
      goto fail;
    }
    size_t nlen = strlen(st.name);
    if (!name_is_safe(st.name, nlen)) {
      snprintf(err, errlen, "archive member name is unsafe: %.200s", st.name);
      goto fail;
    }
    if (st.comp_method != ZIPINDEX_STORED && st.comp_method != ZIPINDEX_DEFLATED &&
        st.comp_method != ZIPINDEX_ZSTD) {
      snprintf(err, errlen, "archive member %.200s uses unsupported compression method %u", st.name,
               (unsigned)st.comp_method);
      goto fail;
    }
    zipindex_entry *e = &zi->entries[zi->count++];
    e->name = st.name;
    e->name_len = nlen;
    e->size = st.size;
    e->comp_size = st.comp_size;
    e->zip_index = (uint64_t)i;
    e->crc = st.crc;
    e->method = st.comp_method;
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

void zipindex_trust(zipindex *zi) { zi->trusted = 1; }

void zipindex_close(zipindex *zi) {
  if (zi->read_lock_ready)
    pthread_mutex_destroy(&zi->read_lock);
  ZSTD_freeDCtx(zi->dctx); /* NULL is fine */
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

/* Reads `len` bytes from f into buf, then checks that f holds no more (a read
 * past the end also makes libzip verify the CRC of an inflated member). */
static int read_exactly(zip_file_t *f, const zipindex_entry *e, void *buf, uint64_t len, char *err,
                        size_t errlen) {
  uint64_t got = 0;
  while (got < len) {
    zip_int64_t r = zip_fread(f, (char *)buf + got, len - got);
    if (r <= 0) {
      snprintf(err, errlen, "cannot read member %s: %s", e->name,
               r < 0 ? zip_file_strerror(f) : "unexpected end of data");
      return -1;
    }
    got += (uint64_t)r;
  }
  char extra;
  zip_int64_t more = zip_fread(f, &extra, 1);
  if (more != 0) {
    snprintf(err, errlen, "member %s is damaged: %s", e->name,
             more > 0 ? "it holds more data than its recorded size" : zip_file_strerror(f));
    return -1;
  }
  return 0;
}

/* A zstd member: its raw frame from libzip, decompressed into buf. */
static int read_zstd(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen) {
  if (e->comp_size > SIZE_MAX || e->size > SIZE_MAX) {
    snprintf(err, errlen, "member %s is too large", e->name);
    return -1;
  }
  void *frame = malloc(e->comp_size ? (size_t)e->comp_size : 1);
  if (!frame) {
    snprintf(err, errlen, "out of memory reading member %s", e->name);
    return -1;
  }
  int rc = -1;
  zip_file_t *f = zip_fopen_index(zi->zip, e->zip_index, ZIP_FL_COMPRESSED);
  if (!f) {
    snprintf(err, errlen, "cannot open member %s: %s", e->name, zip_strerror(zi->zip));
    goto done;
  }
  if (read_exactly(f, e, frame, e->comp_size, err, errlen) != 0)
    goto done;
  if (!zi->dctx && !(zi->dctx = ZSTD_createDCtx())) {
    snprintf(err, errlen, "out of memory reading member %s", e->name);
    goto done;
  }
  size_t n = ZSTD_decompressDCtx(zi->dctx, buf, (size_t)e->size, frame, (size_t)e->comp_size);
  if (ZSTD_isError(n) || n != e->size) {
    snprintf(err, errlen, "member %s is damaged: %s", e->name,
             ZSTD_isError(n) ? ZSTD_getErrorName(n) : "its size differs from the recorded one");
    goto done;
  }
  if (zi->trusted) {
    rc = 0;
    goto done;
  }
  if ((uint32_t)crc32_z(0L, buf, (size_t)e->size) != e->crc) {
    snprintf(err, errlen, "member %s is damaged: CRC error", e->name);
    goto done;
  }
  rc = 0;
done:
  if (f)
    zip_fclose(f);
  free(frame);
  return rc;
}

static int read_locked(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen) {
  if (e->method == ZIPINDEX_ZSTD)
    return read_zstd(zi, e, buf, err, errlen);
  zip_file_t *f = zip_fopen_index(zi->zip, e->zip_index, 0);
  if (!f) {
    snprintf(err, errlen, "cannot open member %s: %s", e->name, zip_strerror(zi->zip));
    return -1;
  }
  int rc = read_exactly(f, e, buf, e->size, err, errlen);
  zip_fclose(f);
  return rc;
}

int zipindex_read(zipindex *zi, const zipindex_entry *e, void *buf, char *err, size_t errlen) {
  pthread_mutex_lock(&zi->read_lock);
  errno = 0;
  int rc = read_locked(zi, e, buf, err, errlen);
  int cause = errno;
  pthread_mutex_unlock(&zi->read_lock);
  if (rc != 0)
    errno = cause == ENOMEM ? ENOMEM : EIO; /* malloc() failing says ENOMEM */
  return rc;
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
