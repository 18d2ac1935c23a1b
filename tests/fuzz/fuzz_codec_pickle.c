/* fuzz_codec_pickle.c: the pickle reader (results from a worker) on hostile bytes,
 * and the round trip of whatever it accepts: a value read must write as a pickle
 * and read back equal (for values whose dicts have string keys: see fuzz_plain). */
#include "fuzz_codec.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fuzz_state();
  char err[256];
  sl_buf out, att;
  if (sl_codec_decode_pickle(L, (const char *)data, size, 0, err, sizeof err) != 0) return 0;
  if (!fuzz_plain(L, 1)) return 0;
  sl_buf_init(&out);
  sl_buf_init(&att);
  if (sl_codec_encode_fmt(L, 1, 0, SL_CODEC_PICKLE, &out, &att, err, sizeof err)) {
    /* a bytes key arrives as a Lua string, which need not be UTF-8; the writer
     * refuses such a key by name, as documented */
    if (strstr(err, "table key is not valid UTF-8")) {
      sl_buf_free(&out);
      sl_buf_free(&att);
      return 0;
    }
    fprintf(stderr, "a decoded value does not encode as a pickle: %s\n", err);
    abort();
  }
  if (sl_codec_decode_pickle(L, out.data, out.len, 0, err, sizeof err)) {
    fprintf(stderr, "a re-encoded pickle does not decode: %s\n", err);
    abort();
  }
  fuzz_check_equal(L, 1, 2, "pickle");
  sl_buf_free(&out);
  sl_buf_free(&att);
  return 0;
}
