/* buf.h: a growable byte buffer, the unit every encoder writes into. */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct sl_buf {
  char *data;
  size_t len;
  size_t cap;
} sl_buf;

void sl_buf_init(sl_buf *b);
void sl_buf_free(sl_buf *b);
/* Grow so that `extra` more bytes fit. Returns 0, or SL_ENOMEM. */
int sl_buf_reserve(sl_buf *b, size_t extra);
int sl_buf_append(sl_buf *b, const void *p, size_t n);
/* Drop the first n bytes (used by stream decoders after consuming frames). */
void sl_buf_consume(sl_buf *b, size_t n);
/* Detach the memory from the buffer; the caller frees it. */
char *sl_buf_steal(sl_buf *b, size_t *len);

static inline int sl_buf_putc(sl_buf *b, char c) {
  if (b->len == b->cap && sl_buf_reserve(b, 1)) return -1;
  b->data[b->len++] = c;
  return 0;
}

static inline void sl_put_u32le(char *p, uint32_t v) {
  p[0] = (char)(v & 0xff); p[1] = (char)((v >> 8) & 0xff);
  p[2] = (char)((v >> 16) & 0xff); p[3] = (char)((v >> 24) & 0xff);
}

static inline uint32_t sl_get_u32le(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] | ((uint32_t)u[1] << 8) | ((uint32_t)u[2] << 16) |
         ((uint32_t)u[3] << 24);
}

#endif
