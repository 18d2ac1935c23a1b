/* fuzz_codec_json.c: the JSON decoder (with its attachment section) on hostile
 * bytes, and the round trip of whatever it accepts.
 *
 * Input: byte 0 chooses where the JSON ends; the bytes after it are cut into a
 * well-formed attachment section (as the frame decoder hands it over: 4-byte
 * length, bytes). A value that decodes must encode, and the encoding must decode
 * to an equal value. */
#include "fuzz_codec.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fuzz_state();
  char err[256];
  size_t jl, i;
  sl_buf att, json2, att2;
  if (size < 1) return 0;
  jl = (size - 1) * data[0] / 255;
  sl_buf_init(&att);
  for (i = 1 + jl; i < size;) {
    uint32_t n = data[i++] % 16;
    if (n > size - i) n = (uint32_t)(size - i);
    sl_buf_append(&att, (const char *)&n, 4);
    sl_buf_append(&att, (const char *)data + i, n);
    i += n;
  }
  if (sl_codec_decode(L, (const char *)data + 1, jl, att.data, att.len, err, sizeof err) == 0) {
    int rc;
    sl_buf_init(&json2);
    sl_buf_init(&att2);
    rc = sl_codec_encode(L, 1, 0, &json2, &att2, err, sizeof err);
    /* a decoded value always has an encoding: the decoder makes only what crosses */
    if (rc) {
      fprintf(stderr, "a decoded value does not encode: %s\n", err);
      abort();
    }
    if (sl_codec_decode(L, json2.data, json2.len, att2.data, att2.len, err, sizeof err)) {
      fprintf(stderr, "a re-encoded value does not decode: %s\n", err);
      abort();
    }
    fuzz_check_equal(L, 1, 2, "json");
    sl_buf_free(&json2);
    sl_buf_free(&att2);
  }
  sl_buf_free(&att);
  return 0;
}
