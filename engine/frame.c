/* frame.c: frame stream decoder and prefix encoder (see frame.h for the layout). */
#include "frame.h"
#include "error.h"

#include <stdio.h>

void sl_frame_decoder_init(sl_frame_decoder *d, size_t max_frame) {
  sl_buf_init(&d->buf);
  d->pos = 0;
  d->max_frame = max_frame;
  d->err[0] = '\0';
}

void sl_frame_decoder_free(sl_frame_decoder *d) {
  sl_buf_free(&d->buf);
  d->pos = 0;
}

/* Move unconsumed bytes to the front once at least half the buffer is consumed;
 * compaction then costs O(1) amortised per byte. */
static void compact(sl_frame_decoder *d) {
  if (d->pos == 0) return;
  if (d->pos == d->buf.len) {
    d->buf.len = 0;
    d->pos = 0;
    return;
  }
  if (d->pos * 2 >= d->buf.len || d->buf.cap - d->buf.len < 4096) {
    memmove(d->buf.data, d->buf.data + d->pos, d->buf.len - d->pos);
    d->buf.len -= d->pos;
    d->pos = 0;
  }
}

char *sl_frame_decoder_space(sl_frame_decoder *d, size_t *len) {
  size_t want = 64 * 1024;
  size_t have = d->buf.len - d->pos;
  compact(d);
  /* A partially received large frame: make room for all of it at once. */
  if (have >= 4) {
    size_t flen = (size_t)sl_get_u32le(d->buf.data + d->pos) + 4;
    if (flen <= d->max_frame + 4 && flen > have && flen - have > want) want = flen - have;
  }
  if (sl_buf_reserve(&d->buf, want)) {
    *len = 0;
    return NULL;
  }
  *len = d->buf.cap - d->buf.len;
  return d->buf.data + d->buf.len;
}

void sl_frame_decoder_commit(sl_frame_decoder *d, size_t n) {
  d->buf.len += n;
}

int sl_frame_decoder_feed(sl_frame_decoder *d, const char *p, size_t n) {
  compact(d);
  return sl_buf_append(&d->buf, p, n);
}

static int fail(sl_frame_decoder *d, int code, const char *msg, unsigned long v) {
  snprintf(d->err, sizeof d->err, msg, v);
  return code;
}

int sl_att_next(const char *att, size_t att_len, size_t *off, const char **p, size_t *n) {
  size_t len;
  if (*off + 4 > att_len) return 0;
  len = sl_get_u32le(att + *off);
  if (len > att_len - *off - 4) return 0;
  *p = att + *off + 4;
  *n = len;
  *off += 4 + len;
  return 1;
}

static int known_kind(unsigned kind) {
  switch (kind) {
#define XX(name, value) case value:
    SL_FRAME_KIND_MAP(XX)
#undef XX
      return 1;
    default: return 0;
  }
}

int sl_frame_next(sl_frame_decoder *d, sl_frame *f) {
  const char *p = d->buf.data + d->pos;
  size_t have = d->buf.len - d->pos;
  size_t len, off;
  if (have < 4) return 0;
  len = sl_get_u32le(p);
  if (len > d->max_frame)
    return fail(d, SL_ETOOBIG, "frame of %lu bytes exceeds the limit", (unsigned long)len);
  if (len < SL_FRAME_MIN_LEN)
    return fail(d, SL_EPROTO, "frame length %lu is shorter than a frame header",
                (unsigned long)len);
  /* The header is checked before the body arrives, so garbage fails fast. */
  if (have >= 8) {
    unsigned kind = (unsigned char)p[4];
    if (!known_kind(kind))
      return fail(d, SL_EPROTO, "unknown frame kind %lu", kind);
    if (p[6] != 0 || p[7] != 0)
      return fail(d, SL_EPROTO, "reserved header bytes are not zero (%lu)",
                  (unsigned long)(unsigned char)p[6]);
  }
  if (have < len + 4) return 0;

  f->kind = (uint8_t)p[4];
  f->flags = (uint8_t)p[5];
  f->id = sl_get_u32le(p + 8);
  f->meta_len = sl_get_u32le(p + 12);
  off = 16;
  if (f->meta_len > len + 4 - off - 4)
    return fail(d, SL_EPROTO, "meta length %lu runs past the frame", (unsigned long)f->meta_len);
  f->meta = p + off;
  off += f->meta_len;
  f->data_len = sl_get_u32le(p + off);
  off += 4;
  if (f->data_len > len + 4 - off)
    return fail(d, SL_EPROTO, "data length %lu runs past the frame", (unsigned long)f->data_len);
  f->data = p + off;
  off += f->data_len;
  f->att = p + off;
  f->att_len = len + 4 - off;
  {
    size_t ao = 0, n;
    const char *ap;
    while (sl_att_next(f->att, f->att_len, &ao, &ap, &n)) {
    }
    if (ao != f->att_len)
      return fail(d, SL_EPROTO, "attachment section is malformed at byte %lu",
                  (unsigned long)ao);
  }
  d->pos += len + 4;
  return 1;
}

void sl_frame_prefix(char prefix[SL_FRAME_PREFIX], char dlen[4], int kind, uint32_t id,
                     size_t meta_len, size_t data_len, size_t att_len) {
  size_t len = 16 + meta_len + data_len + att_len;
  sl_put_u32le(prefix, (uint32_t)len);
  prefix[4] = (char)kind;
  prefix[5] = 0;
  prefix[6] = 0;
  prefix[7] = 0;
  sl_put_u32le(prefix + 8, id);
  sl_put_u32le(prefix + 12, (uint32_t)meta_len);
  sl_put_u32le(dlen, (uint32_t)data_len);
}
