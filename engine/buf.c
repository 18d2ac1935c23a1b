/* buf.c: growable byte buffer. Doubling growth: amortised O(1) appends. */
#include "buf.h"
#include "error.h"

#include <stdlib.h>

void sl_buf_init(sl_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void sl_buf_free(sl_buf *b) {
  free(b->data);
  sl_buf_init(b);
}

int sl_buf_reserve(sl_buf *b, size_t extra) {
  size_t need = b->len + extra;
  size_t cap;
  char *p;
  if (need <= b->cap) return 0;
  cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  p = realloc(b->data, cap);
  if (p == NULL) return SL_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int sl_buf_append(sl_buf *b, const void *p, size_t n) {
  if (sl_buf_reserve(b, n)) return SL_ENOMEM;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void sl_buf_consume(sl_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

char *sl_buf_steal(sl_buf *b, size_t *len) {
  char *p = b->data;
  if (len) *len = b->len;
  sl_buf_init(b);
  return p;
}
