/* test.h: a minimal assertion harness for the C unit tests. Each CHECK counts;
 * the run ends with "N passed, N failed" and a non-zero exit on failure. */
#ifndef SL_TEST_H
#define SL_TEST_H

#include <stdio.h>
#include <string.h>

static int t_pass, t_fail;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (cond) {                                                         \
      t_pass++;                                                         \
    } else {                                                            \
      t_fail++;                                                         \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                   \
  } while (0)

/* CHECK with a printf-style explanation on failure. */
#define CHECKF(cond, ...)                                                        \
  do {                                                                           \
    if (cond) {                                                                  \
      t_pass++;                                                                  \
    } else {                                                                     \
      t_fail++;                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n    ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                              \
      fputc('\n', stderr);                                                       \
    }                                                                            \
  } while (0)

#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)

#define TEST_END()                                          \
  do {                                                      \
    printf("%d passed, %d failed\n", t_pass, t_fail);       \
    return t_fail ? 1 : 0;                                  \
  } while (0)

#endif
