/* test_store_race.c: two stores written at once from two threads.
 *
 * Each store has its own write lock, so nothing a write does may be shared between
 * stores. A bag batch is sorted by key before it is applied; each thread writes
 * batches whose keys come in shuffled order and checks afterwards that every key
 * holds exactly its values, in the order they were written. Run it under
 * ThreadSanitizer too: a comparison that read a process global would race here. */
#define _GNU_SOURCE
#include "error.h"
#include "store.h"
#include "test.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROUNDS = 3000, KEYS = 8, PER_KEY = 6, N = KEYS * PER_KEY };

typedef struct job {
  int id;
  int failures;
  char err[256];
} job;

static uint32_t next_rand(uint32_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

static void *writer(void *arg) {
  job *j = arg;
  sl_store s;
  const char *names[] = { "bag" };
  int types[] = { SL_TABLE_BAG };
  char name[32], keys[N][40], vals[N][40];
  sl_kv kv[N];
  int seen[KEYS];
  uint32_t rnd = 0x9e3779b9u * (uint32_t)(j->id + 1);
  int r, i;
  snprintf(name, sizeof name, "race%d", j->id);
  if (sl_store_create(&s, name, 1, names, types, j->err, sizeof j->err)) {
    j->failures = -1;
    return NULL;
  }
  for (r = 0; r < ROUNDS; r++) {
    /* N puts: key k gets values 0..PER_KEY-1 in that order, interleaved at random */
    memset(seen, 0, sizeof seen);
    for (i = 0; i < N; i++) {
      int k;
      do k = (int)(next_rand(&rnd) % KEYS); while (seen[k] == PER_KEY);
      {
        char raw[32];
        int rl = snprintf(raw, sizeof raw, "r%d.k%d", r, k);
        kv[i].klen = sl_store_key_str(keys[i], raw, (size_t)rl);
      }
      kv[i].key = keys[i];
      kv[i].vlen = (size_t)snprintf(vals[i], sizeof vals[i], "s%d.r%d.k%d.v%d", j->id, r, k,
                                    seen[k]);
      kv[i].val = vals[i];
      seen[k]++;
    }
    if (sl_store_write(&s, 0, kv, N)) {
      j->failures++;
      continue;
    }
    for (i = 0; i < KEYS; i++) {
      char raw[32], key[40], want[40];
      int rl = snprintf(raw, sizeof raw, "r%d.k%d", r, i);
      size_t kl = sl_store_key_str(key, raw, (size_t)rl), n = 0, v;
      sl_val *got = NULL;
      if (sl_store_get(&s, 0, key, kl, &got, &n) != 1 || n != PER_KEY) {
        j->failures++;
        sl_store_vals_free(got, n);
        continue;
      }
      for (v = 0; v < n; v++) {
        int wl = snprintf(want, sizeof want, "s%d.r%d.k%d.v%d", j->id, r, i, (int)v);
        if (got[v].len != (size_t)wl || memcmp(got[v].data, want, (size_t)wl) != 0)
          j->failures++;
      }
      sl_store_vals_free(got, n);
    }
  }
  sl_store_destroy(&s);
  return NULL;
}

int main(void) {
  pthread_t th[2];
  job jobs[2];
  int i;
  for (i = 0; i < 2; i++) {
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].id = i;
    CHECK(pthread_create(&th[i], NULL, writer, &jobs[i]) == 0);
  }
  for (i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    CHECKF(jobs[i].failures == 0, "store %d: %d wrong bag reads %s", i, jobs[i].failures,
           jobs[i].err);
  }
  TEST_END();
}
