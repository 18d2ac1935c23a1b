/* smap.h: string -> int64 hash map (sessions to workers). Open addressing with
 * tombstones; grows at 50% load so probes stay short. */
#ifndef SL_SMAP_H
#define SL_SMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_smap_slot {
  char *key; /* NULL = empty, SL_SMAP_DEAD = tombstone */
  int64_t val;
} sl_smap_slot;

typedef struct sl_smap {
  sl_smap_slot *slots;
  size_t cap, used, live;
} sl_smap;

void sl_smap_init(sl_smap *m);
void sl_smap_free(sl_smap *m);
int sl_smap_get(const sl_smap *m, const char *key, int64_t *val);
int sl_smap_put(sl_smap *m, const char *key, int64_t val);
int sl_smap_del(sl_smap *m, const char *key);

#endif
