/* smap.c: see smap.h. */
#include "smap.h"
#include "error.h"

#include <stdlib.h>
#include <string.h>

static char dead_marker;
#define DEAD (&dead_marker)

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
  return h;
}

void sl_smap_init(sl_smap *m) { memset(m, 0, sizeof *m); }

void sl_smap_free(sl_smap *m) {
  size_t i;
  for (i = 0; i < m->cap; i++)
    if (m->slots[i].key && m->slots[i].key != DEAD) free(m->slots[i].key);
  free(m->slots);
  sl_smap_init(m);
}

static sl_smap_slot *find(const sl_smap *m, const char *key) {
  size_t i;
  if (!m->cap) return NULL;
  for (i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    sl_smap_slot *s = &m->slots[i];
    if (!s->key) return NULL;
    if (s->key != DEAD && strcmp(s->key, key) == 0) return s;
  }
}

int sl_smap_get(const sl_smap *m, const char *key, int64_t *val) {
  sl_smap_slot *s = find(m, key);
  if (!s) return 0;
  *val = s->val;
  return 1;
}

static int grow(sl_smap *m) {
  sl_smap old = *m;
  size_t i;
  m->cap = old.cap ? old.cap * 2 : 16;
  while (old.live * 4 >= m->cap) m->cap *= 2;
  m->slots = calloc(m->cap, sizeof *m->slots);
  if (!m->slots) {
    *m = old;
    return SL_ENOMEM;
  }
  m->used = m->live = 0;
  for (i = 0; i < old.cap; i++) {
    sl_smap_slot *s = &old.slots[i];
    if (s->key && s->key != DEAD) {
      size_t j = hash(s->key) & (m->cap - 1);
      while (m->slots[j].key) j = (j + 1) & (m->cap - 1);
      m->slots[j] = *s;
      m->used++;
      m->live++;
    }
  }
  free(old.slots);
  return 0;
}

int sl_smap_put(sl_smap *m, const char *key, int64_t val) {
  sl_smap_slot *s = find(m, key);
  size_t i;
  if (s) {
    s->val = val;
    return 0;
  }
  if ((m->used + 1) * 2 > m->cap && grow(m)) return SL_ENOMEM;
  for (i = hash(key) & (m->cap - 1); m->slots[i].key && m->slots[i].key != DEAD;
       i = (i + 1) & (m->cap - 1)) {
  }
  if (!m->slots[i].key) m->used++;
  m->slots[i].key = strdup(key);
  if (!m->slots[i].key) return SL_ENOMEM;
  m->slots[i].val = val;
  m->live++;
  return 0;
}

int sl_smap_del(sl_smap *m, const char *key) {
  sl_smap_slot *s = find(m, key);
  if (!s) return 0;
  free(s->key);
  s->key = DEAD;
  m->live--;
  return 1;
}
