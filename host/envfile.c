#include "envfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ENVFILE_MAX_BYTES (4 * 1024 * 1024)

/* Python's str.isspace() for ASCII ("\s" of the dotenv regexes). */
static int is_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}
/* [^\S\r\n]: whitespace but not a line end (after CRs became LFs). */
static int is_blank(char c) { return c != '\n' && is_space(c); }

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t n) {
  if (n > 4 * ENVFILE_MAX_BYTES || b->len > 4 * ENVFILE_MAX_BYTES)
    return -1;
  if (!b->p || b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
      return -1;
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

static char *sb_take(sbuf *b) {
  if (!b->p && sb_put(b, "", 0) != 0)
    return NULL;
  char *p = b->p;
  b->p = NULL, b->len = b->cap = 0;
  return p;
}

typedef struct reader {
  const char *s;
  size_t n, pos;
  int line;
} reader;

static void advance(reader *r, size_t k) {
  for (size_t i = 0; i < k; i++)
    r->line += r->s[r->pos + i] == '\n';
  r->pos += k;
}

/* Decodes the escapes of a quoted value: for double quotes \\ \' \" \a \b
 * \f \n \r \t \v, for single quotes \\ and \'; other backslashes stay. */
static int decode_quoted(const char *s, size_t n, int dbl, sbuf *out) {
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '\\' && i + 1 < n) {
      char e = s[i + 1], d = 0;
      if (e == '\\' || e == '\'')
        d = e;
      else if (dbl) {
        const char *from = "\"abfnrtv", *to = "\"\a\b\f\n\r\t\v";
        const char *hit = strchr(from, e);
        if (hit && e)
          d = to[hit - from];
      }
      if (d) {
        if (sb_put(out, &d, 1) != 0)
          return -1;
        i++;
        continue;
      }
    }
    if (sb_put(out, &c, 1) != 0)
      return -1;
  }
  return 0;
}

/* One statement. Returns 1 with *key set (and *raw, possibly NULL), 0 for
 * nothing (blank, comment, end), -1 on a syntax error, -2 out of memory. */
static int parse_binding(reader *r, char **key, char **raw, const char **why) {
  *key = *raw = NULL;
  while (r->pos < r->n && is_space(r->s[r->pos]))
    advance(r, 1);
  if (r->pos >= r->n)
    return 0;
  if (r->n - r->pos > 6 && memcmp(r->s + r->pos, "export", 6) == 0 && is_blank(r->s[r->pos + 6])) {
    size_t k = 6;
    while (r->pos + k < r->n && is_blank(r->s[r->pos + k]))
      k++;
    advance(r, k);
  }
  sbuf kb = {0}, vb = {0};
  int has_key = 0, rc = -1;
  char c = r->pos < r->n ? r->s[r->pos] : '\0';
  if (c == '#') {
    /* a comment: no key */
  } else if (c == '\'') {
    size_t end = r->pos + 1;
    while (end < r->n && r->s[end] != '\'')
      end++;
    if (end >= r->n || end == r->pos + 1) {
      *why = "unterminated or empty quoted key";
      goto out;
    }
    if (sb_put(&kb, r->s + r->pos + 1, end - r->pos - 1) != 0)
      goto oom;
    advance(r, end + 1 - r->pos);
    has_key = 1;
  } else {
    size_t end = r->pos;
    while (end < r->n && r->s[end] != '=' && r->s[end] != '#' && !is_space(r->s[end]))
      end++;
    if (end == r->pos) {
      *why = "expected a variable name";
      goto out;
    }
    if (sb_put(&kb, r->s + r->pos, end - r->pos) != 0)
      goto oom;
    advance(r, end - r->pos);
    has_key = 1;
  }
  while (r->pos < r->n && is_blank(r->s[r->pos]))
    advance(r, 1);
  int has_value = 0;
  if (r->pos < r->n && r->s[r->pos] == '=') {
    size_t eq = 1;
    while (r->pos + eq < r->n && is_blank(r->s[r->pos + eq]))
      eq++;
    advance(r, eq);
    has_value = 1;
    c = r->pos < r->n ? r->s[r->pos] : '\0';
    if (eq > 1 && c == '#') {
      if (sb_put(&vb, "", 0) != 0) /* "KEY= # comment": empty */
        goto oom;
    } else if (c == '\'' || c == '"') {
      size_t end = r->pos + 1;
      while (end < r->n && r->s[end] != c)
        end += r->s[end] == '\\' && end + 1 < r->n ? 2 : 1;
      if (end >= r->n) {
        *why = c == '"' ? "unterminated double-quoted value" : "unterminated single-quoted value";
        goto out;
      }
      if (decode_quoted(r->s + r->pos + 1, end - r->pos - 1, c == '"', &vb) != 0)
        goto oom;
      advance(r, end + 1 - r->pos);
    } else {
      size_t end = r->pos;
      while (end < r->n && r->s[end] != '\n')
        end++;
      /* re.sub(r"\s+#.*", "", part).rstrip() */
      size_t cut = end;
      for (size_t i = r->pos + 1; i < end; i++)
        if (r->s[i] == '#' && is_space(r->s[i - 1])) {
          cut = i;
          break;
        }
      while (cut > r->pos && is_space(r->s[cut - 1]))
        cut--;
      if (sb_put(&vb, r->s + r->pos, cut - r->pos) != 0)
        goto oom;
      advance(r, end - r->pos);
    }
  }
  /* an optional comment, then the end of the line */
  while (r->pos < r->n && is_blank(r->s[r->pos]))
    advance(r, 1);
  if (r->pos < r->n && r->s[r->pos] == '#')
    while (r->pos < r->n && r->s[r->pos] != '\n')
      advance(r, 1);
  if (r->pos < r->n && r->s[r->pos] != '\n') {
    *why = has_value ? "unexpected text after the value" : "expected '=' after the name";
    goto out;
  }
  if (r->pos < r->n)
    advance(r, 1);
  if (!has_key) {
    rc = 0;
    goto out;
  }
  *key = sb_take(&kb);
  *raw = has_value ? sb_take(&vb) : NULL;
  if (!*key || (has_value && !*raw)) {
    free(*key);
    free(*raw);
    *key = *raw = NULL;
    goto oom;
  }
  rc = 1;
  goto out;
oom:
  rc = -2;
out:
  free(kb.p);
  free(vb.p);
  return rc;
}

static const envfile_entry *find_entry(const envfile *ef, const char *key) {
  for (size_t i = ef->count; i-- > 0;)
    if (strcmp(ef->entries[i].key, key) == 0)
      return &ef->entries[i];
  return NULL;
}

/* ${NAME} and ${NAME:-default}: the environment first, then the file's
 * earlier keys (load_dotenv with override=False), else the default. */
static char *expand(const char *raw, const envfile *done, envfile_lookup lookup, void *ud) {
  sbuf out = {0};
  const char *p = raw;
  for (;;) {
    const char *start = strstr(p, "${");
    const char *close = start ? strchr(start + 2, '}') : NULL;
    if (!close) {
      if (sb_put(&out, p, strlen(p)) != 0)
        goto oom;
      break;
    }
    /* the name is [^}:]*, then optionally ":-" and a default */
    const char *name = start + 2, *name_end = name;
    while (name_end < close && *name_end != ':')
      name_end++;
    const char *dflt = NULL;
    if (name_end < close) {
      if (name_end + 1 < close && name_end[1] == '-') {
        dflt = name_end + 2;
      } else {
        /* "${A:x}" is no variable: keep "${" and look further */
        if (sb_put(&out, p, (size_t)(start + 2 - p)) != 0)
          goto oom;
        p = start + 2;
        continue;
      }
    }
    if (sb_put(&out, p, (size_t)(start - p)) != 0)
      goto oom;
    char *key = strndup(name, (size_t)(name_end - name));
    if (!key)
      goto oom;
    const char *value = lookup(key, ud);
    const envfile_entry *e = value ? NULL : find_entry(done, key);
    free(key);
    if (!value && e)
      value = e->value ? e->value : ""; /* a bare KEY counts as set, to "" */
    if (value) {
      if (sb_put(&out, value, strlen(value)) != 0)
        goto oom;
    } else if (dflt && sb_put(&out, dflt, (size_t)(close - dflt)) != 0) {
      goto oom;
    }
    p = close + 1;
  }
  return sb_take(&out);
oom:
  free(out.p);
  return NULL;
}

/* Valid UTF-8, and no NUL (a variable cannot hold one). */
static const char *check_text(const unsigned char *s, size_t n, size_t *bad) {
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xc2 && c <= 0xdf ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    if (c == 0) {
      *bad = i;
      return "a NUL byte";
    }
    if (!len || i + len > n) {
      *bad = i;
      return "not UTF-8";
    }
    for (size_t k = 1; k < len; k++)
      if ((s[i + k] & 0xc0) != 0x80) {
        *bad = i;
        return "not UTF-8";
      }
    if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0) ||
        (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] >= 0x90)) {
      *bad = i;
      return "not UTF-8";
    }
    i += len;
  }
  return NULL;
}

static int line_of(const char *s, size_t pos) {
  int line = 1;
  for (size_t i = 0; i < pos; i++)
    line += s[i] == '\n';
  return line;
}

void envfile_free(envfile *ef) {
  for (size_t i = 0; i < ef->count; i++) {
    free(ef->entries[i].key);
    free(ef->entries[i].value);
  }
  free(ef->entries);
  ef->entries = NULL;
  ef->count = 0;
}

int envfile_parse(const char *name, const char *text, size_t len, envfile_lookup lookup, void *ud,
                  envfile *out, char *err, size_t errlen) {
  out->entries = NULL;
  out->count = 0;
  if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
    text += 3, len -= 3;
  size_t bad;
  const char *why = check_text((const unsigned char *)text, len, &bad);
  if (why) {
    snprintf(err, errlen, "%s: line %d: %s", name, line_of(text, bad), why);
    return -1;
  }
  /* universal newlines, as Python's text files read */
  char *s = malloc(len + 1);
  if (!s)
    goto oom;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (text[i] == '\r') {
      s[n++] = '\n';
      if (i + 1 < len && text[i + 1] == '\n')
        i++;
    } else {
      s[n++] = text[i];
    }
  }
  s[n] = '\0';
  reader r = {s, n, 0, 1};
  while (r.pos < r.n) {
    char *key, *raw;
    int line = r.line;
    size_t start = r.pos;
    while (start < r.n && is_space(s[start]))
      line += s[start++] == '\n';
    why = NULL;
    int rc = parse_binding(&r, &key, &raw, &why);
    if (rc == -2)
      goto oom;
    if (rc == -1) {
      snprintf(err, errlen, "%s: line %d: %s", name, line, why);
      goto fail;
    }
    if (rc == 0)
      continue;
    if (strchr(key, '=')) {
      snprintf(err, errlen, "%s: line %d: '=' in the variable name '%s'", name, line, key);
      free(key);
      free(raw);
      goto fail;
    }
    char *value = raw ? expand(raw, out, lookup, ud) : NULL;
    free(raw);
    if (raw && !value) {
      free(key);
      goto oom;
    }
    envfile_entry *grown = realloc(out->entries, (out->count + 1) * sizeof(*grown));
    if (!grown) {
      free(key);
      free(value);
      goto oom;
    }
    out->entries = grown;
    out->entries[out->count++] = (envfile_entry){key, value, line};
  }
  free(s);
  return 0;
oom:
  snprintf(err, errlen, "%s: out of memory", name);
fail:
  free(s);
  envfile_free(out);
  return -1;
}

static const char *lookup_environ(const char *name, void *ud) {
  (void)ud;
  return getenv(name);
}

int envfile_load(const char *path, size_t *nset, envfile *loaded, char *err, size_t errlen) {
  *nset = 0;
  loaded->entries = NULL;
  loaded->count = 0;
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    if (f)
      fclose(f);
    return -1;
  }
  if (S_ISDIR(st.st_mode) || st.st_size > ENVFILE_MAX_BYTES) {
    snprintf(err, errlen, "cannot read %s: %s", path,
             S_ISDIR(st.st_mode) ? "it is a directory" : "larger than 4 MiB");
    fclose(f);
    return -1;
  }
  /* read to the end (a FIFO or /dev/fd has no size) */
  sbuf text = {0};
  char chunk[8192];
  size_t got;
  while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    if (text.len + got > ENVFILE_MAX_BYTES || sb_put(&text, chunk, got) != 0) {
      snprintf(err, errlen, "cannot read %s: larger than 4 MiB", path);
      free(text.p);
      fclose(f);
      return -1;
    }
  }
  int read_err = ferror(f);
  fclose(f);
  if (read_err) {
    snprintf(err, errlen, "cannot read %s: read error", path);
    free(text.p);
    return -1;
  }
  int rc = envfile_parse(path, text.p ? text.p : "", text.len, lookup_environ, NULL, loaded, err,
                         errlen);
  free(text.p);
  if (rc != 0)
    return -1;
  /* Later duplicates win: set each key once, from its last entry. */
  for (size_t i = 0; i < loaded->count; i++) {
    const envfile_entry *e = &loaded->entries[i];
    if (!e->value || find_entry(loaded, e->key) != e || getenv(e->key))
      continue;
    if (setenv(e->key, e->value, 0) != 0) {
      snprintf(err, errlen, "%s: line %d: cannot set %s: %s", path, e->line, e->key,
               strerror(errno));
      envfile_free(loaded);
      return -1;
    }
    (*nset)++;
  }
  return 0;
}
