/* fuzz_frame.c: the frame decoder on bytes a worker could send.
 *
 * The first byte chooses how the rest is cut into reads (a frame may arrive in
 * any number of pieces); every frame taken has its attachments walked. The
 * decoder must return frames, "more bytes", or an error, and never read outside
 * what it was given. */
#include "error.h"
#include "frame.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

volatile unsigned fuzz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sl_frame_decoder d;
  size_t step, off = 1;
  int rc = 0;
  if (size < 1) return 0;
  step = (size_t)data[0] % 17 + 1;
  /* a small limit keeps each run cheap; lengths past it take the same path */
  sl_frame_decoder_init(&d, 1 << 16);
  while (off < size && rc >= 0) {
    size_t n = size - off < step ? size - off : step, space;
    char *p = sl_frame_decoder_space(&d, &space);
    sl_frame f;
    if (p && space >= n) {
      memcpy(p, data + off, n);
      sl_frame_decoder_commit(&d, n);
    } else if (sl_frame_decoder_feed(&d, (const char *)data + off, n)) {
      break;
    }
    off += n;
    while ((rc = sl_frame_next(&d, &f)) == 1) {
      size_t ao = 0, an;
      const char *ap;
      /* the last byte of each part is read, so ASan sees a part that overruns */
      if (f.meta_len) fuzz_sink += (unsigned char)f.meta[f.meta_len - 1];
      if (f.data_len) fuzz_sink += (unsigned char)f.data[f.data_len - 1];
      while (sl_att_next(f.att, f.att_len, &ao, &ap, &an))
        if (an) fuzz_sink += (unsigned char)ap[an - 1];
    }
  }
  sl_frame_decoder_free(&d);
  return 0;
}
