/* test_store_nomem.c: a store write that runs out of memory fails with SL_ENOMEM
 * and leaves the store as it was; it never ends the process.
 *
 * This program replaces malloc, calloc and realloc (glibc's own stay reachable as
 * __libc_*): after a countdown, every allocation fails. Each bag batch below is
 * tried with the countdown at 0, 1, 2, ... until it succeeds; after each failure
 * the table must read exactly as before the batch. */
#define _GNU_SOURCE
#include "error.h"
#include "store.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);

static int countdown = -1; /* -1: never fail */

static int fail_now(void) {
  if (countdown < 0) return 0;
  if (countdown == 0) return 1;
  countdown--;
  return 0;
}

void *malloc(size_t n) { return fail_now() ? NULL : __libc_malloc(n); }
void *calloc(size_t a, size_t b) { return fail_now() ? NULL : __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { return fail_now() ? NULL : __libc_realloc(p, n); }

/* The table's contents as text: "key=v1,v2;..." over keys k0..k(nk-1). */
static void dump(sl_store *s, int nk, char *out, size_t outlen) {
  int k;
  size_t used = 0;
  out[0] = '\0';
  for (k = 0; k < nk; k++) {
    char raw[16], key[24];
    size_t kl, n = 0, v;
    sl_val *vals = NULL;
    int rl = snprintf(raw, sizeof raw, "k%d", k);
    kl = sl_store_key_str(key, raw, (size_t)rl);
    used += (size_t)snprintf(out + used, outlen - used, "%s=", raw);
    if (sl_store_get(s, 0, key, kl, &vals, &n) == 1)
      for (v = 0; v < n; v++)
        used += (size_t)snprintf(out + used, outlen - used, "%.*s,", (int)vals[v].len,
                                 vals[v].data);
    sl_store_vals_free(vals, n);
    used += (size_t)snprintf(out + used, outlen - used, ";");
  }
}

int main(void) {
  sl_store s;
  char err[256];
  const char *names[] = { "bag" };
  int types[] = { SL_TABLE_BAG };
  static char before[1 << 16], after[1 << 16];
  int round, failures = 0, enomem = 0;
  CHECK(sl_store_create(&s, "nomem", 1, names, types, err, sizeof err) == 0);
  for (round = 0; round < 60; round++) {
    /* 12 puts over 3 keys, some values repeated (a bag keeps one of each); the
     * table grows, so some batches need a rebuild, which allocates */
    char keys[12][24], vals[12][32];
    sl_kv kv[12];
    int i, c, rc = -1;
    for (i = 0; i < 12; i++) {
      char raw[16];
      int rl = snprintf(raw, sizeof raw, "k%d", (round + i) % 3);
      kv[i].klen = sl_store_key_str(keys[i], raw, (size_t)rl);
      kv[i].key = keys[i];
      kv[i].vlen = (size_t)snprintf(vals[i], sizeof vals[i], "r%d.v%d", round, i % 9);
      kv[i].val = vals[i];
    }
    dump(&s, 3, before, sizeof before);
    for (c = 0; c < 200 && rc != 0; c++) {
      countdown = c;
      rc = sl_store_write(&s, 0, kv, 12);
      countdown = -1;
      if (rc == 0) break;
      if (rc == SL_ENOMEM) enomem++;
      else failures++;
      dump(&s, 3, after, sizeof after);
      if (strcmp(before, after) != 0) failures++;
    }
    CHECKF(rc == 0, "round %d: the write never succeeded (rc %d)", round, rc);
  }
  CHECKF(failures == 0, "%d failed writes changed the table or gave another code", failures);
  CHECKF(enomem > 0, "no allocation failure was reached (%d)", enomem);
  sl_store_destroy(&s);
  TEST_END();
}
