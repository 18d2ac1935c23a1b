/* frame.h: length-prefixed frames between the engine and its Python workers.
 *
 * Layout (all integers little-endian):
 *
 *   u32 len          bytes that follow this field
 *   u8  kind         SL_FRAME_*
 *   u8  flags        SL_FRAME_FLAG_*
 *   u16 reserved     0
 *   u32 id           request id; a worker may hold several requests at once
 *   u32 meta_len     then meta_len bytes of JSON (small: names, error details)
 *   u32 data_len     then data_len bytes of JSON (the payload list or results)
 *   attachments      the rest: (u32 n, n bytes)*, raw byte strings that the JSON
 *                    refers to by index, so bytes cross without base64
 *
 * The decoder is a stream decoder: feed it whatever the pipe gave, take complete
 * frames out. It never trusts a length before checking it against the limit, and
 * reports garbage as an error instead of reading past the end. */
#ifndef SL_FRAME_H
#define SL_FRAME_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>

/* Frame kinds and flags, as X-macro lists: the decoder's check of the kind byte and
 * the protocol test (which holds pyworkers/slither_worker/protocol.py equal to this
 * file) are generated from them, so a kind added here is known everywhere. */
#define SL_FRAME_KIND_MAP(XX)                                                           \
  XX(HELLO, 1)      /* worker -> engine: meta = worker facts */                         \
  XX(CALL, 2)       /* engine -> worker: meta = {m, f, s}, data = payloads */           \
  XX(RESULT, 3)     /* worker -> engine: data = results */                              \
  XX(ERROR, 4)      /* worker -> engine: meta = {kind, type, message, ...} */           \
  XX(RELEASE, 5)    /* engine -> worker: meta = {s}: drop session state */              \
  XX(VIEW, 6)       /* worker -> engine: meta = "<call id>:<view name>", data = args */ \
  XX(VIEW_REPLY, 7) /* engine -> worker: data = result, or meta = {"error": ...} */

/* SPIN (CALL): poll the pipe for a while after replying (see sl_spin_allowed).
 * PICKLE (CALL and RESULT): the data is a pickle (codec.h), not JSON. */
#define SL_FRAME_FLAG_MAP(XX) \
  XX(SPIN, 1)                 \
  XX(PICKLE, 2)

enum {
#define XX(name, value) SL_FRAME_##name = value,
  SL_FRAME_KIND_MAP(XX)
#undef XX
};

enum {
#define XX(name, value) SL_FRAME_FLAG_##name = value,
  SL_FRAME_FLAG_MAP(XX)
#undef XX
};

#define SL_FRAME_PREFIX 16 /* len, kind, flags, reserved, id, meta_len */
#define SL_FRAME_MIN_LEN 16 /* smallest legal value of the len field */

typedef struct sl_frame {
  uint8_t kind;
  uint8_t flags;
  uint32_t id;
  const char *meta;
  size_t meta_len;
  const char *data;
  size_t data_len;
  const char *att; /* attachment section, already validated */
  size_t att_len;
} sl_frame;

typedef struct sl_frame_decoder {
  sl_buf buf;
  size_t pos;       /* start of the first unconsumed byte */
  size_t max_frame; /* largest accepted value of the len field */
  char err[128];    /* message of the last error */
} sl_frame_decoder;

void sl_frame_decoder_init(sl_frame_decoder *d, size_t max_frame);
void sl_frame_decoder_free(sl_frame_decoder *d);
/* Space to read into directly (avoids a copy); then call _commit with the count. */
char *sl_frame_decoder_space(sl_frame_decoder *d, size_t *len);
void sl_frame_decoder_commit(sl_frame_decoder *d, size_t n);
int sl_frame_decoder_feed(sl_frame_decoder *d, const char *p, size_t n);
/* Take the next complete frame. Returns 1 with *f filled (valid until the next
 * call), 0 when more bytes are needed, or a negative SL_E* code with d->err set.
 * After an error the stream is unusable. */
int sl_frame_next(sl_frame_decoder *d, sl_frame *f);

/* Build the 16-byte prefix and the 4-byte data length for a frame. The frame is
 * then prefix, meta, dlen, data, att: five buffers for one uv_write. */
void sl_frame_prefix(char prefix[SL_FRAME_PREFIX], char dlen[4], int kind, uint32_t id,
                     size_t meta_len, size_t data_len, size_t att_len);

/* Iterate the attachments section: returns 1 and the next attachment, 0 at the end. */
int sl_att_next(const char *att, size_t att_len, size_t *off, const char **p, size_t *n);

#endif
