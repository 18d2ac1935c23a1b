/* codec.h: Lua values to the wire format and back.
 *
 * The wire format is JSON with three additions the worker understands:
 *   - byte strings travel raw in the frame's attachment section and appear in the
 *     JSON as {"\u0000b": index};
 *   - NaN, Infinity and -Infinity are written as those bare tokens (Python's json
 *     module reads and writes them);
 *   - numbers are written exactly: an integral double below 2^63 in magnitude as
 *     an integer (exact up to 2^53 and beyond, as far as the double itself is
 *     exact), any other double with the fewest of 15, 16 or 17 significant digits
 *     that reads back to the same bits.
 *
 * Lua side conventions: slither.null (a NULL light userdata, the same value as
 * cjson.null) is JSON null; a table whose metatable is the array marker encodes as
 * a list even when empty; decoded lists carry that marker; a Lua string that is
 * not valid UTF-8, or one wrapped with slither.bytes(), travels as bytes. */
#ifndef SL_CODEC_H
#define SL_CODEC_H

#include "buf.h"

#include <lua.h>

#define SL_CODEC_MAX_DEPTH 200

/* Formats: JSON (always available) or a plain-value subset of Python's pickle,
 * which the worker offers in its hello and which is several times cheaper for
 * Python to read and write. Pickle needs no attachments: bytes go inline. */
enum { SL_CODEC_JSON = 0, SL_CODEC_PICKLE = 1 };

/* Registry keys of the marker metatables (created by sl_codec_open). */
extern const char sl_codec_array_key;
extern const char sl_codec_bytes_key;

/* Create the marker metatables in the registry. Idempotent. */
void sl_codec_open(lua_State *L);

/* Encode the value at idx. With as_list, the value must be a list (a sequence or
 * a marked array) and is encoded as one even when empty. Appends JSON to json and
 * attachments to att. Returns 0, or SL_ECODEC with a message in err that names
 * where the bad value was ("payloads[3].fn: cannot encode a function"). */
int sl_codec_encode(lua_State *L, int idx, int as_list, sl_buf *json, sl_buf *att,
                    char *err, size_t errlen);

/* Encode a list made of items[k][field] for k in first..last (the table at idx),
 * without building that list in Lua. Errors name the item ("[7].payload..."). */
int sl_codec_encode_field(lua_State *L, int idx, int first, int last, const char *field,
                          int fmt, sl_buf *json, sl_buf *att, char *err, size_t errlen);

/* Decode JSON (with its attachment section) and push the value. Returns 0, or
 * SL_ECODEC with a message in err and nothing pushed. */
int sl_codec_decode(lua_State *L, const char *json, size_t len, const char *att,
                    size_t att_len, char *err, size_t errlen);

/* Append a JSON string for n bytes of UTF-8. Returns 0; 1 when the bytes are not
 * valid UTF-8 (nothing is appended); SL_ENOMEM. Usable without a Lua state. */
int sl_json_string(sl_buf *b, const unsigned char *s, size_t n);

/* Encode in a chosen format (SL_CODEC_JSON or SL_CODEC_PICKLE). */
int sl_codec_encode_fmt(lua_State *L, int idx, int as_list, int fmt, sl_buf *json,
                        sl_buf *att, char *err, size_t errlen);

/* Decode a pickle of plain values and push it; hint pre-sizes a top-level list.
 * Classes, reduces and sets are refused by name. */
int sl_codec_decode_pickle(lua_State *L, const char *data, size_t len, int hint, char *err,
                           size_t errlen);

/* The same, with the expected length of a top-level list (pre-sizes it). */
int sl_codec_decode_hint(lua_State *L, const char *json, size_t len, const char *att,
                         size_t att_len, int hint, char *err, size_t errlen);

#endif
