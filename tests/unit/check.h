/*
 * check: the assertion macros of the C unit tests.
 *
 * Every CHECK* counts one check; a failed one prints "file:line: FAILED: ..."
 * to stderr and the test goes on. Each macro evaluates to 1 when the check
 * passed, so a test can stop early: `if (!CHECK(p != NULL)) return;`.
 * check_summary() prints exactly one line, "N passed, N failed", and
 * returns the exit status for main (0 when nothing failed).
 */
#ifndef APPBIN_TEST_CHECK_H
#define APPBIN_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int check_passed_count, check_failed_count;

static inline int check_report_(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline int check_report_(int ok, const char *file, int line, const char *fmt, ...) {
  if (ok) {
    check_passed_count++;
    return 1;
  }
  check_failed_count++;
  fprintf(stderr, "%s:%d: FAILED: ", file, line);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return 0;
}

static inline int check_eq_int_(long long a, long long b, const char *as, const char *bs,
                                const char *file, int line) {
  return check_report_(a == b, file, line, "%s == %s (%lld != %lld)", as, bs, a, b);
}

static inline int check_str_(const char *a, const char *b, const char *as, const char *bs,
                             const char *file, int line) {
  int ok = a && b ? strcmp(a, b) == 0 : a == b;
  return check_report_(ok, file, line, "%s == %s (\"%s\" != \"%s\")", as, bs, a ? a : "(null)",
                       b ? b : "(null)");
}

static inline int check_contains_(const char *hay, const char *needle, const char *hs,
                                  const char *file, int line) {
  int ok = hay && needle && strstr(hay, needle) != NULL;
  return check_report_(ok, file, line, "%s contains \"%s\" (it is \"%s\")", hs,
                       needle ? needle : "(null)", hay ? hay : "(null)");
}

static inline int check_mem_(const void *a, const void *b, size_t n, const char *as, const char *bs,
                             const char *file, int line) {
  size_t i = 0;
  if (a && b)
    while (i < n && ((const unsigned char *)a)[i] == ((const unsigned char *)b)[i])
      i++;
  return check_report_(a && b && i == n, file, line, "%s == %s over %zu bytes (differ at %zu)", as,
                       bs, n, i);
}

/* The condition holds. */
#define CHECK(cond) check_report_(!!(cond), __FILE__, __LINE__, "%s", #cond)
/* Two integers (compared as long long) are equal. */
#define CHECK_EQ_INT(a, b) check_eq_int_((long long)(a), (long long)(b), #a, #b, __FILE__, __LINE__)
/* Two C strings are equal (two NULLs are equal; NULL and a string are not). */
#define CHECK_STR(a, b) check_str_((a), (b), #a, #b, __FILE__, __LINE__)
/* `hay` is a string holding `needle`. */
#define CHECK_CONTAINS(hay, needle) check_contains_((hay), (needle), #hay, __FILE__, __LINE__)
/* Two byte ranges of n bytes are equal. */
#define CHECK_MEM(a, b, n) check_mem_((a), (b), (n), #a, #b, __FILE__, __LINE__)

static inline int check_summary(void) {
  printf("%d passed, %d failed\n", check_passed_count, check_failed_count);
  fflush(stdout);
  return check_failed_count ? 1 : 0;
}

#endif
