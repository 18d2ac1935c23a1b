/* codec.c: Lua <-> JSON with raw byte attachments (see codec.h).
 *
 * Per-byte work happens here in C: lua-cjson would do most of it, but it keeps only
 * 14 significant digits and has no empty-array marker, and both lose data. */
#include "codec.h"
#include "error.h"
#include "frame.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

const char sl_codec_array_key = 'a';
const char sl_codec_bytes_key = 'b';

void sl_codec_open(lua_State *L) {
  const char *keys[2] = {&sl_codec_array_key, &sl_codec_bytes_key};
  const char *names[2] = {"slither.array", "slither.bytes"};
  int i;
  for (i = 0; i < 2; i++) {
    lua_pushlightuserdata(L, (void *)keys[i]);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlightuserdata(L, (void *)keys[i]);
      lua_createtable(L, 0, 2);
      lua_pushstring(L, names[i]);
      lua_setfield(L, -2, "__name");
      lua_rawset(L, LUA_REGISTRYINDEX);
    } else {
      lua_pop(L, 1);
    }
  }
}

/* ---- encoder ---------------------------------------------------------------- */

typedef struct enc_path {
  int is_index;
  double index;
  const char *key;
} enc_path;

typedef struct encoder {
  lua_State *L;
  sl_buf *out;
  sl_buf *att;
  int natt;
  int array_mt; /* stack index of the array marker */
  int bytes_mt;
  enc_path path[SL_CODEC_MAX_DEPTH + 1];
  char *err;
  size_t errlen;
  int failed;
  int pickle; /* SL_CODEC_PICKLE: write pickle opcodes instead of JSON */
  /* pickle: dict keys already written, by their (interned) Lua string, and their
   * memo slot: a key repeated in every record is written once, then referred to,
   * and Python shares one str object for it */
  const char *memo_key[128];
  int memo_idx[128];
  int nmemo;
} encoder;

static int enc_fail(encoder *e, int depth, const char *fmt, const char *what) {
  char path[256];
  size_t n = 0;
  int i;
  path[0] = '\0';
  for (i = 0; i < depth && n < sizeof path - 40; i++) {
    if (e->path[i].is_index)
      n += (size_t)snprintf(path + n, sizeof path - n, "[%.17g]", e->path[i].index);
    else
      n += (size_t)snprintf(path + n, sizeof path - n, "%s%.60s", i ? "." : "",
                            e->path[i].key);
  }
  snprintf(e->err, e->errlen, "%s%s", depth ? path : "value", depth ? ": " : ": ");
  n = strlen(e->err);
  snprintf(e->err + n, e->errlen - n, fmt, what);
  e->failed = 1;
  return SL_ECODEC;
}

static const char hexd[] = "0123456789abcdef";

/* Writes a JSON string for bytes that are valid UTF-8. Returns 0, or 1 if the
 * bytes are not valid UTF-8 (the caller then sends them as an attachment). */
int sl_json_string(sl_buf *b, const unsigned char *s, size_t n) {
  size_t start = b->len, i = 0;
  if (sl_buf_reserve(b, n + 2)) return SL_ENOMEM;
  b->data[b->len++] = '"';
  while (i < n) {
    unsigned char c = s[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      /* Copy a run of plain ASCII at once. */
      size_t j = i + 1;
      while (j < n && s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' && s[j] < 0x80) j++;
      if (sl_buf_append(b, s + i, j - i)) return SL_ENOMEM;
      i = j;
    } else if (c < 0x80) {
      char esc[6] = {'\\', 'u', '0', '0', hexd[c >> 4], hexd[c & 15]};
      if (c == '"' || c == '\\') {
        esc[1] = (char)c;
        if (sl_buf_append(b, esc, 2)) return SL_ENOMEM;
      } else if (c == '\n') {
        if (sl_buf_append(b, "\\n", 2)) return SL_ENOMEM;
      } else if (c == '\t') {
        if (sl_buf_append(b, "\\t", 2)) return SL_ENOMEM;
      } else if (sl_buf_append(b, esc, 6)) {
        return SL_ENOMEM;
      }
      i++;
    } else {
      size_t len;
      uint32_t cp;
      if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
      else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
      else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
      else goto invalid;
      if (i + len > n) goto invalid;
      {
        size_t k;
        for (k = 1; k < len; k++) {
          if ((s[i + k] & 0xc0) != 0x80) goto invalid;
          cp = (cp << 6) | (s[i + k] & 0x3f);
        }
      }
      if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
          (cp >= 0xd800 && cp <= 0xdfff))
        goto invalid;
      if (sl_buf_append(b, s + i, len)) return SL_ENOMEM;
      i += len;
    }
  }
  if (sl_buf_putc(b, '"')) return SL_ENOMEM;
  return 0;
invalid:
  b->len = start;
  return 1;
}

static int pk_bytes(sl_buf *b, const char *s, size_t n);

static int put_bytes(encoder *e, const char *s, size_t n) {
  char tmp[32];
  char lenbuf[4];
  int k;
  if (e->pickle) return pk_bytes(e->out, s, n);
  k = snprintf(tmp, sizeof tmp, "{\"\\u0000b\":%d}", e->natt++);
  sl_put_u32le(lenbuf, (uint32_t)n);
  if (sl_buf_append(e->out, tmp, (size_t)k) || sl_buf_append(e->att, lenbuf, 4) ||
      sl_buf_append(e->att, s, n))
    return SL_ENOMEM;
  return 0;
}

static int put_i64(sl_buf *b, int64_t v) {
  char tmp[24];
  int i = 23;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  tmp[i] = '\0';
  do {
    tmp[--i] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) tmp[--i] = '-';
  return sl_buf_append(b, tmp + i, (size_t)(23 - i));
}

static int put_number(sl_buf *b, double d) {
  char tmp[40];
  int prec, n = 0;
  if (d > -1e15 && d < 1e15 && d == (double)(int64_t)d && !(d == 0 && signbit(d))) {
    /* The common case, written straight into the buffer. */
    char *p;
    int64_t v = (int64_t)d;
    uint64_t u;
    int k = 0;
    if (sl_buf_reserve(b, 24)) return SL_ENOMEM;
    p = b->data + b->len;
    if (v < 0) {
      *p++ = '-';
      b->len++;
    }
    u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
      tmp[k++] = (char)('0' + u % 10);
      u /= 10;
    } while (u);
    b->len += (size_t)k;
    while (k) *p++ = tmp[--k];
    return 0;
  }
  if (d != d) return sl_buf_append(b, "NaN", 3);
  if (isinf(d)) return d > 0 ? sl_buf_append(b, "Infinity", 8) : sl_buf_append(b, "-Infinity", 9);
  if (d >= -9.2e18 && d <= 9.2e18 && d == (double)(int64_t)d) {
    if (d == 0 && signbit(d)) return sl_buf_append(b, "-0.0", 4);
    return put_i64(b, (int64_t)d);
  }
  for (prec = 15; prec <= 17; prec++) {
    n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
    if (strtod(tmp, NULL) == d) break;
  }
  return sl_buf_append(b, tmp, (size_t)n);
}

/* ---- pickle output ------------------------------------------------------------
 *
 * A subset of Python's pickle format, enough for plain values: Python reads it
 * with the C unpickler, several times faster than json for numbers and short
 * strings, and bytes travel inline. No memo, no objects: nothing in it can run
 * code on load. */

static int utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c;
    size_t len, k;
    uint32_t cp;
    /* ASCII runs, the common case, eight bytes at a time */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (w & UINT64_C(0x8080808080808080)) break;
      i += 8;
    }
    if (i >= n) break;
    c = s[i];
    if (c < 0x80) { i++; continue; }
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (i + len > n) return 0;
    for (k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += len;
  }
  return 1;
}

static int pk_sized(sl_buf *b, char op8, char op32, const char *s, size_t n) {
  char hdr[5];
  size_t h;
  if (n < 256) {
    hdr[0] = op8;
    hdr[1] = (char)n;
    h = 2;
  } else {
    hdr[0] = op32;
    sl_put_u32le(hdr + 1, (uint32_t)n);
    h = 5;
  }
  if (sl_buf_reserve(b, h + n)) return SL_ENOMEM;
  memcpy(b->data + b->len, hdr, h);
  if (n) memcpy(b->data + b->len + h, s, n);
  b->len += h + n;
  return 0;
}

static int pk_bytes(sl_buf *b, const char *s, size_t n) {
  return pk_sized(b, 'C', 'B', s, n); /* SHORT_BINBYTES, BINBYTES */
}

/* 1 when the bytes are not UTF-8 (the caller sends them as bytes). */
static int pk_string(sl_buf *b, const char *s, size_t n) {
  if (!utf8_valid((const unsigned char *)s, n)) return 1;
  return pk_sized(b, (char)0x8c, 'X', s, n); /* SHORT_BINUNICODE, BINUNICODE */
}

static int pk_number(sl_buf *b, double d) {
  char t[10];
  if (sl_buf_reserve(b, 10)) return SL_ENOMEM;
  if (d >= -2147483648.0 && d <= 2147483647.0 && d == (double)(int32_t)d &&
      !(d == 0 && signbit(d))) {
    int32_t v = (int32_t)d;
    if (v >= 0 && v < 256) {
      t[0] = 'K'; /* BININT1 */
      t[1] = (char)v;
      return sl_buf_append(b, t, 2);
    }
    if (v >= 0 && v < 65536) {
      t[0] = 'M'; /* BININT2 */
      t[1] = (char)(v & 0xff);
      t[2] = (char)(v >> 8);
      return sl_buf_append(b, t, 3);
    }
    t[0] = 'J'; /* BININT */
    sl_put_u32le(t + 1, (uint32_t)v);
    return sl_buf_append(b, t, 5);
  }
  if (d >= -9.2e18 && d <= 9.2e18 && d == (double)(int64_t)d && !(d == 0 && signbit(d))) {
    uint64_t u = (uint64_t)(int64_t)d;
    int i;
    t[0] = (char)0x8a; /* LONG1, 8 bytes of two's complement */
    t[1] = 8;
    for (i = 0; i < 8; i++) t[2 + i] = (char)((u >> (8 * i)) & 0xff);
    return sl_buf_append(b, t, 10);
  }
  {
    /* BINFLOAT: big-endian IEEE 754, NaN and the infinities included */
    uint64_t u;
    int i;
    memcpy(&u, &d, 8);
    t[0] = 'G';
    for (i = 0; i < 8; i++) t[1 + i] = (char)((u >> (56 - 8 * i)) & 0xff);
    return sl_buf_append(b, t, 9);
  }
}

static int enc_value(encoder *e, int idx, int depth, int as_list);

/* A dict key in pickle: BINGET of its memo slot when written before, else the
 * string and MEMOIZE. Lua interns strings, so the pointer identifies the key. */
static int pk_key(encoder *e, const char *k, size_t klen) {
  unsigned h = (unsigned)(((size_t)k >> 4) * 2654435761u) & 127;
  int probes, rc;
  for (probes = 0; probes < 128; probes++, h = (h + 1) & 127) {
    if (e->memo_key[h] == k) {
      int idx = e->memo_idx[h];
      if (idx < 256) {
        char op[2] = {'h', (char)idx}; /* BINGET */
        return sl_buf_append(e->out, op, 2);
      } else {
        char op[5] = {'j'}; /* LONG_BINGET */
        sl_put_u32le(op + 1, (uint32_t)idx);
        return sl_buf_append(e->out, op, 5);
      }
    }
    if (!e->memo_key[h]) break;
  }
  rc = pk_string(e->out, k, klen);
  if (rc) return rc;
  if (probes < 128 && !e->memo_key[h] && e->nmemo < 96) { /* keep the table sparse */
    e->memo_key[h] = k;
    e->memo_idx[h] = e->nmemo++;
    return sl_buf_putc(e->out, (char)0x94); /* MEMOIZE */
  }
  return 0;
}

/* Classify a table: 1 = list of n elements, 0 = object, <0 = error (set). */
static int table_kind(encoder *e, int idx, int depth, size_t *n_out) {
  lua_State *L = e->L;
  size_t count = 0, strkeys = 0;
  double maxkey = 0;
  int mt_is_array = 0;
  if (lua_getmetatable(L, idx)) {
    mt_is_array = lua_rawequal(L, -1, e->array_mt);
    lua_pop(L, 1);
  }
  if (mt_is_array) {
    *n_out = lua_objlen(L, idx);
    return 1;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    if (lua_type(L, -1) == LUA_TSTRING) {
      strkeys++;
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
      double k = lua_tonumber(L, -1);
      if (k < 1 || k != floor(k)) {
        lua_pop(L, 1);
        return enc_fail(e, depth, "%s", "table has a number key that is not a list index"), -1;
      }
      if (k > maxkey) maxkey = k;
    } else {
      const char *tn = lua_typename(L, lua_type(L, -1));
      lua_pop(L, 1);
      return enc_fail(e, depth, "table key of type %s (keys must be strings or list indices)",
                      tn), -1;
    }
  }
  if (strkeys && strkeys != count)
    return enc_fail(e, depth, "%s", "table mixes list indices and string keys"), -1;
  if (strkeys || count == 0) return 0;
  if (maxkey != (double)count) {
    char what[64];
    snprintf(what, sizeof what, "%.0f", maxkey);
    return enc_fail(e, depth,
                    "list has holes (largest index %s but fewer elements); use slither.null "
                    "for nil", what), -1;
  }
  *n_out = count;
  return 1;
}

static int has_mt_flag(encoder *e, int idx) {
  if (lua_getmetatable(e->L, idx)) {
    lua_pop(e->L, 1);
    return 1;
  }
  return 0;
}

/* A JSON object key. {"\u0000b": i} is the marker of attachment i, so a key that
 * starts with NUL gets one more NUL in front on the wire and the reader takes one
 * off: no dict can pass for bytes, and keys cost nothing extra unless they start
 * with NUL. */
static int json_key(sl_buf *b, const char *k, size_t klen) {
  size_t at = b->len;
  int rc = sl_json_string(b, (const unsigned char *)k, klen);
  if (rc || klen == 0 || k[0] != '\0') return rc;
  if (sl_buf_reserve(b, 6)) return SL_ENOMEM;
  memmove(b->data + at + 7, b->data + at + 1, b->len - at - 1);
  memcpy(b->data + at + 1, "\\u0000", 6);
  b->len += 6;
  return 0;
}

/* Encode a table of string keys as an object (pickle: EMPTY_DICT, MARK, key,
 * value..., SETITEMS); -2 (nothing written) when a key is not a string. */
static int enc_record(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  size_t out_len = e->out->len, att_len = e->att->len, i = 0;
  int natt = e->natt, nmemo = e->nmemo, rc;
  if (!lua_checkstack(L, 4)) return enc_fail(e, depth, "%s", "Lua stack exhausted");
  if (e->pickle ? sl_buf_append(e->out, "}(", 2) : sl_buf_putc(e->out, '{')) return SL_ENOMEM;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t klen;
    const char *k;
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 2);
      e->out->len = out_len;
      e->att->len = att_len;
      e->natt = natt;
      if (e->nmemo != nmemo) { /* forget keys whose MEMOIZE was just discarded */
        int h;
        for (h = 0; h < 128; h++)
          if (e->memo_key[h] && e->memo_idx[h] >= nmemo) e->memo_key[h] = NULL;
        e->nmemo = nmemo;
      }
      return -2;
    }
    k = lua_tolstring(L, -2, &klen);
    if (i++ && !e->pickle && sl_buf_putc(e->out, ',')) return SL_ENOMEM;
    rc = e->pickle ? pk_key(e, k, klen) : json_key(e->out, k, klen);
    if (rc == 1) {
      lua_pop(L, 2);
      return enc_fail(e, depth, "%s", "table key is not valid UTF-8");
    }
    if (rc || (!e->pickle && sl_buf_putc(e->out, ':'))) return SL_ENOMEM;
    e->path[depth].is_index = 0;
    e->path[depth].key = k;
    rc = enc_value(e, lua_gettop(L), depth + 1, 0);
    lua_pop(L, 1);
    if (rc) {
      lua_pop(L, 1);
      return rc;
    }
  }
  return sl_buf_putc(e->out, e->pickle ? 'u' : '}');
}

static int enc_table(encoder *e, int idx, int depth, int as_list) {
  lua_State *L = e->L;
  size_t n = 0, i;
  int kind;
  if (depth >= SL_CODEC_MAX_DEPTH)
    return enc_fail(e, depth, "%s", "tables nested too deeply (or a cycle)");
  if (lua_getmetatable(L, idx)) {
    int isbytes = lua_rawequal(L, -1, e->bytes_mt);
    lua_pop(L, 1);
    if (isbytes) {
      size_t len;
      const char *s;
      lua_rawgeti(L, idx, 1);
      s = lua_tolstring(L, -1, &len);
      if (s == NULL) {
        lua_pop(L, 1);
        return enc_fail(e, depth, "%s", "slither.bytes value holds no string");
      }
      if (put_bytes(e, s, len)) return SL_ENOMEM;
      lua_pop(L, 1);
      return 0;
    }
  }
  kind = -2;
  {
    /* Fast path for a plain sequence: if no key follows t[#t], the table is the
     * list 1..#t (a hole inside it is found while encoding). Saves a full lua_next
     * pass over every list. */
    int has_mt = lua_getmetatable(L, idx);
    if (has_mt) lua_pop(L, 1);
    n = has_mt ? 0 : lua_objlen(L, idx);
    if (n > 0) {
      lua_pushnumber(L, (lua_Number)n);
      if (lua_next(L, idx) == 0) kind = 3; /* list, holes not yet ruled out */
      else lua_pop(L, 2);
    }
  }
  if (kind == -2 && !has_mt_flag(e, idx) && n == 0 && !as_list) {
    /* A record (string keys only) in one pass: encode while iterating, and only
     * if a key that is not a string turns up, undo and classify the slow way. */
    int rc = enc_record(e, idx, depth);
    if (rc != -2) return rc;
  }
  if (kind == -2) kind = table_kind(e, idx, depth, &n);
  if (kind < 0) return SL_ECODEC;
  if (as_list && kind == 0) {
    size_t dummy;
    lua_pushnil(L);
    if (lua_next(L, idx)) {
      lua_pop(L, 2);
      (void)dummy;
      return enc_fail(e, depth, "%s", "expected a list, got a table with string keys");
    }
    kind = 1;
    n = 0;
  }
  if (!lua_checkstack(L, 4)) return enc_fail(e, depth, "%s", "Lua stack exhausted");
  if (kind == 1 || kind == 3) {
    /* pickle: EMPTY_LIST, MARK, items..., APPENDS */
    if (e->pickle ? sl_buf_append(e->out, n ? "](" : "]", n ? 2 : 1) : sl_buf_putc(e->out, '['))
      return SL_ENOMEM;
    for (i = 1; i <= n; i++) {
      int rc;
      if (i > 1 && !e->pickle && sl_buf_putc(e->out, ',')) return SL_ENOMEM;
      lua_rawgeti(L, idx, (int)i);
      if (kind == 3 && lua_isnil(L, -1)) {
        char what[32];
        lua_pop(L, 1);
        snprintf(what, sizeof what, "%lu", (unsigned long)i);
        return enc_fail(e, depth, "list has a hole at index %s; use slither.null for nil", what);
      }
      e->path[depth].is_index = 1;
      e->path[depth].index = (double)i;
      rc = enc_value(e, lua_gettop(L), depth + 1, 0);
      lua_pop(L, 1);
      if (rc) return rc;
    }
    if (e->pickle) return n ? sl_buf_putc(e->out, 'e') : 0;
    return sl_buf_putc(e->out, ']');
  }
  /* every key is a string here: the record writer never gives up */
  return enc_record(e, idx, depth);
}

static int enc_value(encoder *e, int idx, int depth, int as_list) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return e->pickle ? sl_buf_putc(e->out, 'N') : sl_buf_append(e->out, "null", 4);
    case LUA_TBOOLEAN:
      if (e->pickle) return sl_buf_putc(e->out, lua_toboolean(L, idx) ? (char)0x88 : (char)0x89);
      return lua_toboolean(L, idx) ? sl_buf_append(e->out, "true", 4)
                                   : sl_buf_append(e->out, "false", 5);
    case LUA_TNUMBER:
      return e->pickle ? pk_number(e->out, lua_tonumber(L, idx))
                       : put_number(e->out, lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      int rc = e->pickle ? pk_string(e->out, s, len)
                         : sl_json_string(e->out, (const unsigned char *)s, len);
      if (rc == 1) return put_bytes(e, s, len);
      return rc;
    }
    case LUA_TTABLE:
      return enc_table(e, idx, depth, as_list);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL)
        return e->pickle ? sl_buf_putc(e->out, 'N') : sl_buf_append(e->out, "null", 4);
      /* fall through */
    default:
      return enc_fail(e, depth, "cannot encode a value of type %s",
                      lua_typename(L, lua_type(L, idx)));
  }
}

static void enc_init(encoder *e, lua_State *L, sl_buf *json, sl_buf *att, char *err,
                     size_t errlen) {
  e->L = L;
  e->out = json;
  e->att = att;
  e->natt = 0;
  e->err = err;
  e->errlen = errlen;
  e->failed = 0;
  e->pickle = 0;
  e->nmemo = 0;
  memset(e->memo_key, 0, sizeof e->memo_key);
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  e->array_mt = lua_gettop(L);
  lua_pushlightuserdata(L, (void *)&sl_codec_bytes_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  e->bytes_mt = lua_gettop(L);
}

int sl_codec_encode_field(lua_State *L, int idx, int first, int last, const char *field,
                          int fmt, sl_buf *json, sl_buf *att, char *err, size_t errlen) {
  encoder e;
  int rc = 0, k, key, top = lua_gettop(L);
  if (idx < 0) idx = top + idx + 1;
  enc_init(&e, L, json, att, err, errlen);
  e.pickle = fmt == SL_CODEC_PICKLE;
  lua_pushstring(L, field); /* the key, interned once */
  key = lua_gettop(L);
  if (e.pickle) {
    /* PROTO 2, EMPTY_LIST, MARK */
    if (sl_buf_append(json, "\x80\x02](", 4)) rc = SL_ENOMEM;
  } else if (sl_buf_putc(json, '[')) {
    rc = SL_ENOMEM;
  }
  for (k = first; k <= last && !rc; k++) {
    if (k > first && !e.pickle && sl_buf_putc(json, ',')) rc = SL_ENOMEM;
    lua_rawgeti(L, idx, k);
    if (!lua_istable(L, -1)) {
      snprintf(err, errlen, "[%d]: expected an item table, got %s", k,
               lua_typename(L, lua_type(L, -1)));
      e.failed = 1;
      rc = SL_ECODEC;
      break;
    }
    lua_pushvalue(L, key);
    lua_rawget(L, -2);
    e.path[0].is_index = 1;
    e.path[0].index = k;
    e.path[1].is_index = 0;
    e.path[1].key = field;
    rc = enc_value(&e, lua_gettop(L), 2, 0);
    lua_pop(L, 2);
  }
  if (!rc && (e.pickle ? sl_buf_append(json, "e.", 2) : sl_buf_putc(json, ']')))
    rc = SL_ENOMEM; /* pickle: APPENDS, STOP */
  lua_settop(L, top);
  if (rc && !e.failed) snprintf(err, errlen, "%s", sl_strerror(rc));
  return rc ? (e.failed ? SL_ECODEC : rc) : 0;
}

int sl_codec_encode(lua_State *L, int idx, int as_list, sl_buf *json, sl_buf *att,
                    char *err, size_t errlen) {
  return sl_codec_encode_fmt(L, idx, as_list, SL_CODEC_JSON, json, att, err, errlen);
}

int sl_codec_encode_fmt(lua_State *L, int idx, int as_list, int fmt, sl_buf *json,
                        sl_buf *att, char *err, size_t errlen) {
  encoder e;
  int rc, top = lua_gettop(L);
  if (idx < 0) idx = top + idx + 1;
  if (as_list && lua_type(L, idx) != LUA_TTABLE) {
    snprintf(err, errlen, "expected a list, got %s", lua_typename(L, lua_type(L, idx)));
    return SL_ECODEC;
  }
  enc_init(&e, L, json, att, err, errlen);
  e.pickle = fmt == SL_CODEC_PICKLE;
  rc = e.pickle ? sl_buf_append(json, "\x80\x02", 2) : 0; /* PROTO 2 */
  if (!rc) rc = enc_value(&e, idx, 0, as_list);
  if (!rc && e.pickle) rc = sl_buf_putc(json, '.'); /* STOP */
  lua_settop(L, top);
  if (rc && !e.failed) snprintf(err, errlen, "%s", sl_strerror(rc));
  return rc ? (e.failed ? SL_ECODEC : rc) : 0;
}

/* ---- decoder ---------------------------------------------------------------- */

typedef struct decoder {
  lua_State *L;
  const char *p, *start, *end;
  const char **att_p;
  size_t *att_n;
  int natt;
  int array_mt;
  int hint; /* expected length of the top-level list, 0 if unknown */
  sl_buf scratch;
  char *err;
  size_t errlen;
} decoder;

static int dec_fail(decoder *d, const char *what) {
  snprintf(d->err, d->errlen, "invalid JSON at byte %ld: %s", (long)(d->p - d->start), what);
  return SL_ECODEC;
}

static void skip_ws(decoder *d) {
  while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
    d->p++;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(decoder *d, const char *p, uint32_t *out) {
  int i;
  uint32_t v = 0;
  if (d->end - p < 4) return -1;
  for (i = 0; i < 4; i++) {
    int h = hexval((unsigned char)p[i]);
    if (h < 0) return -1;
    v = (v << 4) | (uint32_t)h;
  }
  *out = v;
  return 0;
}

static void put_utf8(sl_buf *b, uint32_t cp) {
  char t[4];
  size_t n;
  if (cp < 0x80) { t[0] = (char)cp; n = 1; }
  else if (cp < 0x800) { t[0] = (char)(0xc0 | (cp >> 6)); t[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
  else if (cp < 0x10000) {
    t[0] = (char)(0xe0 | (cp >> 12)); t[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    t[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
  } else {
    t[0] = (char)(0xf0 | (cp >> 18)); t[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    t[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); t[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
  }
  sl_buf_append(b, t, n);
}

/* Parse a string at d->p (on the opening quote); leaves the result in *s, *n
 * (either pointing into the input or into the scratch buffer). */
/* A JSON string is text: bytes that are not UTF-8 are a broken peer, and could not
 * be told from bytes (which travel as attachments) once decoded. */
static int dec_string(decoder *d, const char **s, size_t *n) {
  const char *p = ++d->p;
  unsigned char hi = 0;
  while (p < d->end && *p != '"' && *p != '\\') hi |= (unsigned char)*p++;
  if (p >= d->end) return dec_fail(d, "unterminated string");
  if (*p == '"') {
    if ((hi & 0x80) && !utf8_valid((const unsigned char *)d->p, (size_t)(p - d->p)))
      return dec_fail(d, "a string is not valid UTF-8");
    *s = d->p;
    *n = (size_t)(p - d->p);
    d->p = p + 1;
    return 0;
  }
  d->scratch.len = 0;
  sl_buf_append(&d->scratch, d->p, (size_t)(p - d->p));
  while (p < d->end) {
    char c = *p;
    if (c == '"') {
      if (!utf8_valid((const unsigned char *)d->scratch.data, d->scratch.len))
        return dec_fail(d, "a string is not valid UTF-8");
      d->p = p + 1;
      *s = d->scratch.data;
      *n = d->scratch.len;
      return 0;
    }
    if (c != '\\') {
      sl_buf_putc(&d->scratch, c);
      p++;
      continue;
    }
    if (++p >= d->end) break;
    switch (*p) {
      case '"': sl_buf_putc(&d->scratch, '"'); break;
      case '\\': sl_buf_putc(&d->scratch, '\\'); break;
      case '/': sl_buf_putc(&d->scratch, '/'); break;
      case 'b': sl_buf_putc(&d->scratch, '\b'); break;
      case 'f': sl_buf_putc(&d->scratch, '\f'); break;
      case 'n': sl_buf_putc(&d->scratch, '\n'); break;
      case 'r': sl_buf_putc(&d->scratch, '\r'); break;
      case 't': sl_buf_putc(&d->scratch, '\t'); break;
      case 'u': {
        uint32_t cp, lo;
        if (read_hex4(d, p + 1, &cp)) {
          d->p = p;
          return dec_fail(d, "bad \\u escape");
        }
        p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff && d->end - p >= 7 && p[1] == '\\' && p[2] == 'u' &&
            !read_hex4(d, p + 3, &lo) && lo >= 0xdc00 && lo <= 0xdfff) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          p += 6;
        } else if (cp >= 0xd800 && cp <= 0xdfff) {
          /* A Python str may hold a lone surrogate; it has no UTF-8 form, and
           * replacing it would change the string without a word. */
          d->p = p - 5;
          return dec_fail(d, "a string holds a lone surrogate (not valid Unicode)");
        }
        put_utf8(&d->scratch, cp);
        break;
      }
      default:
        d->p = p;
        return dec_fail(d, "bad escape in string");
    }
    p++;
  }
  d->p = p;
  return dec_fail(d, "unterminated string");
}

static int dec_number(decoder *d) {
  const char *p = d->p;
  char tmp[64];
  size_t n;
  int neg = 0;
  if (p >= d->end) return dec_fail(d, "unexpected end");
  if (*p == '-') { neg = 1; p++; }
  if (d->end - p >= 8 && memcmp(p, "Infinity", 8) == 0) {
    d->p = p + 8;
    lua_pushnumber(d->L, neg ? -HUGE_VAL : HUGE_VAL);
    return 0;
  }
  {
    /* Fast path: up to 15 digits with no fraction is exact as a double. */
    const char *q = p;
    int64_t v = 0;
    while (q < d->end && *q >= '0' && *q <= '9' && q - p < 15) v = v * 10 + (*q++ - '0');
    if (q > p && (q == d->end || (*q != '.' && *q != 'e' && *q != 'E' &&
                                  !(*q >= '0' && *q <= '9')))) {
      d->p = q;
      lua_pushnumber(d->L, (double)(neg ? -v : v));
      return 0;
    }
  }
  p = d->p;
  while (p < d->end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' ||
                        *p == 'e' || *p == 'E'))
    p++;
  n = (size_t)(p - d->p);
  {
    /* strtod needs a terminated string; long numbers (Python writes 10**70 in
     * full) get a heap copy. */
    char *s = n < sizeof tmp ? tmp : malloc(n + 1);
    char *endp;
    double v;
    if (!s) return dec_fail(d, "out of memory");
    memcpy(s, d->p, n);
    s[n] = '\0';
    v = strtod(s, &endp);
    if (s != tmp) free(s);
    if (n == 0 || endp != s + n) return dec_fail(d, "bad number");
    d->p = p;
    lua_pushnumber(d->L, v);
  }
  return 0;
}

static int dec_value(decoder *d, int depth);

static int dec_array(decoder *d, int depth) {
  lua_State *L = d->L;
  int i = 0, rc;
  d->p++;
  lua_createtable(L, depth == 0 && d->hint > 0 ? d->hint : 4, 0);
  lua_pushvalue(L, d->array_mt);
  lua_setmetatable(L, -2);
  skip_ws(d);
  if (d->p < d->end && *d->p == ']') {
    d->p++;
    return 0;
  }
  for (;;) {
    if ((rc = dec_value(d, depth + 1))) return rc;
    lua_rawseti(L, -2, ++i);
    skip_ws(d);
    if (d->p >= d->end) return dec_fail(d, "unterminated list");
    if (*d->p == ',') { d->p++; continue; }
    if (*d->p == ']') { d->p++; return 0; }
    return dec_fail(d, "expected ',' or ']'");
  }
}

static int dec_object(decoder *d, int depth) {
  lua_State *L = d->L;
  int rc, first = 1;
  d->p++;
  lua_createtable(L, 0, 4);
  skip_ws(d);
  if (d->p < d->end && *d->p == '}') {
    d->p++;
    return 0;
  }
  for (;;) {
    const char *k;
    size_t kn;
    skip_ws(d);
    if (d->p >= d->end || *d->p != '"') return dec_fail(d, "expected a string key");
    if ((rc = dec_string(d, &k, &kn))) return rc;
    if (first && kn == 2 && k[0] == '\0' && k[1] == 'b') {
      /* {"\u0000b": i}: attachment i, a byte string. */
      double v;
      skip_ws(d);
      if (d->p >= d->end || *d->p != ':') return dec_fail(d, "expected ':'");
      d->p++;
      skip_ws(d);
      if (d->p >= d->end) return dec_fail(d, "bad bytes reference");
      if ((rc = dec_number(d))) return rc;
      v = lua_tonumber(L, -1);
      lua_pop(L, 2); /* the number and the table */
      skip_ws(d);
      if (d->p >= d->end || *d->p != '}') return dec_fail(d, "bad bytes reference");
      d->p++;
      if (v < 0 || v >= d->natt || v != floor(v))
        return dec_fail(d, "bytes reference to a missing attachment");
      lua_pushlstring(L, d->att_p[(int)v], d->att_n[(int)v]);
      return 0;
    }
    first = 0;
    if (kn > 0 && k[0] == '\0') { /* an escaped key (see json_key) */
      k++;
      kn--;
    }
    lua_pushlstring(L, k, kn);
    skip_ws(d);
    if (d->p >= d->end || *d->p != ':') return dec_fail(d, "expected ':'");
    d->p++;
    if ((rc = dec_value(d, depth + 1))) return rc;
    lua_rawset(L, -3);
    skip_ws(d);
    if (d->p >= d->end) return dec_fail(d, "unterminated object");
    if (*d->p == ',') { d->p++; continue; }
    if (*d->p == '}') { d->p++; return 0; }
    return dec_fail(d, "expected ',' or '}'");
  }
}

static int dec_value(decoder *d, int depth) {
  size_t left;
  if (depth > SL_CODEC_MAX_DEPTH) return dec_fail(d, "nested too deeply");
  if (!lua_checkstack(d->L, 4)) return dec_fail(d, "Lua stack exhausted");
  skip_ws(d);
  if (d->p >= d->end) return dec_fail(d, "unexpected end");
  left = (size_t)(d->end - d->p);
  switch (*d->p) {
    case '{': return dec_object(d, depth);
    case '[': return dec_array(d, depth);
    case '"': {
      const char *s;
      size_t n;
      int rc = dec_string(d, &s, &n);
      if (rc) return rc;
      lua_pushlstring(d->L, s, n);
      return 0;
    }
    case 't':
      if (left >= 4 && memcmp(d->p, "true", 4) == 0) { d->p += 4; lua_pushboolean(d->L, 1); return 0; }
      break;
    case 'f':
      if (left >= 5 && memcmp(d->p, "false", 5) == 0) { d->p += 5; lua_pushboolean(d->L, 0); return 0; }
      break;
    case 'n':
      if (left >= 4 && memcmp(d->p, "null", 4) == 0) { d->p += 4; lua_pushlightuserdata(d->L, NULL); return 0; }
      break;
    case 'N':
      if (left >= 3 && memcmp(d->p, "NaN", 3) == 0) { d->p += 3; lua_pushnumber(d->L, NAN); return 0; }
      break;
    default:
      if (*d->p == '-' || *d->p == 'I' || (*d->p >= '0' && *d->p <= '9')) {
        if (*d->p == 'I') {
          if (left >= 8 && memcmp(d->p, "Infinity", 8) == 0) {
            d->p += 8;
            lua_pushnumber(d->L, HUGE_VAL);
            return 0;
          }
          break;
        }
        return dec_number(d);
      }
  }
  return dec_fail(d, "unexpected character");
}

int sl_codec_decode(lua_State *L, const char *json, size_t len, const char *att,
                    size_t att_len, char *err, size_t errlen) {
  return sl_codec_decode_hint(L, json, len, att, att_len, 0, err, errlen);
}

int sl_codec_decode_hint(lua_State *L, const char *json, size_t len, const char *att,
                         size_t att_len, int hint, char *err, size_t errlen) {
  decoder d;
  int rc, top = lua_gettop(L);
  size_t off = 0, n;
  const char *ap;
  const char *stack_p[8];
  size_t stack_n[8];
  d.L = L;
  d.hint = hint;
  d.p = d.start = json;
  d.end = json + len;
  d.err = err;
  d.errlen = errlen;
  d.natt = 0;
  while (sl_att_next(att, att_len, &off, &ap, &n)) d.natt++;
  d.att_p = stack_p;
  d.att_n = stack_n;
  if (d.natt > 8) {
    d.att_p = malloc(sizeof(char *) * (size_t)d.natt);
    d.att_n = malloc(sizeof(size_t) * (size_t)d.natt);
    if (!d.att_p || !d.att_n) {
      free((void *)d.att_p);
      free(d.att_n);
      snprintf(err, errlen, "out of memory");
      return SL_ENOMEM;
    }
  }
  off = 0;
  n = 0;
  {
    int i = 0;
    while (sl_att_next(att, att_len, &off, &d.att_p[i], &d.att_n[i])) i++;
  }
  sl_buf_init(&d.scratch);
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  d.array_mt = lua_gettop(L);
  rc = dec_value(&d, 0);
  if (rc == 0) {
    skip_ws(&d);
    if (d.p != d.end) rc = dec_fail(&d, "trailing characters");
  }
  sl_buf_free(&d.scratch);
  if (d.att_p != stack_p) {
    free((void *)d.att_p);
    free(d.att_n);
  }
  if (rc) {
    lua_settop(L, top);
    return rc;
  }
  lua_replace(L, d.array_mt); /* value takes the marker's slot */
  lua_settop(L, top + 1);
  return 0;
}

/* ---- pickle decoder -------------------------------------------------------------
 *
 * Reads what Python's pickler writes for plain values (protocols 2 to 5): None,
 * bools, ints, floats, str, bytes, bytearray, lists, tuples (as lists) and dicts,
 * with the memo. Any other opcode (a class, a reduce, a set) is refused with a
 * message that names it: nothing here can run code. Values live on the Lua stack
 * as the pickle machine's stack; marks are stack heights. */

#define PK_MAX_MARKS 256

typedef struct pdec {
  lua_State *L;
  const unsigned char *p, *start, *end;
  int base; /* stack index below the machine's first value */
  int memo; /* stack index of the memo table */
  int array_mt;
  int hint;
  int marks[PK_MAX_MARKS];
  int nmarks;
  int shared; /* a memo reference fetched a table: heights must be walked */
  /* The height of each table on the machine's stack (dep[i] for stack index
   * base + 1 + i; other slots are not kept). Folding items into a container
   * raises its height, and a value taller than SL_CODEC_MAX_DEPTH is refused, as
   * the JSON reader refuses one nested too deeply. A table fetched from the memo
   * counts as height 1 here (it may still be filling), so once one was fetched
   * the finished value is walked again by pk_check_shared: shared references
   * can hide height, or make a cycle, that no count on the stack sees. */
  int *dep;
  size_t dep_cap;
  char *err;
  size_t errlen;
} pdec;

static int pk_fail(pdec *d, const char *what, int op) {
  snprintf(d->err, d->errlen, "bad pickle at byte %ld: %s (opcode 0x%02x)",
           (long)(d->p - d->start), what, op & 0xff);
  return SL_ECODEC;
}

static int need(pdec *d, size_t n) { return (size_t)(d->end - d->p) >= n; }
/* hdr bytes of header, then n of body: written so that a huge n cannot wrap */
static int need_body(pdec *d, size_t hdr, size_t n) {
  size_t left = (size_t)(d->end - d->p);
  return left >= hdr && n <= left - hdr;
}

static uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  int i;
  for (i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Set the height of the table at stack index idx. */
static int pk_set_dep(pdec *d, int idx, int h) {
  size_t i = (size_t)(idx - d->base - 1);
  if (i >= d->dep_cap) {
    size_t cap = d->dep_cap ? d->dep_cap * 2 : 64;
    int *p;
    while (cap <= i) cap *= 2;
    p = realloc(d->dep, cap * sizeof *p);
    if (!p) return SL_ENOMEM;
    d->dep = p;
    d->dep_cap = cap;
  }
  d->dep[i] = h;
  return 0;
}

/* The height of the value at stack index idx: 0 for anything but a table. */
static int pk_dep(pdec *d, int idx) {
  return lua_istable(d->L, idx) ? d->dep[idx - d->base - 1] : 0;
}

/* The container at mark takes the values above it: its height becomes at least
 * one more than theirs. */
static int pk_fold_dep(pdec *d, int mark, int op) {
  int i, top = lua_gettop(d->L), h = d->dep[mark - d->base - 1];
  for (i = mark + 1; i <= top; i++) {
    int k = pk_dep(d, i) + 1;
    if (k > h) h = k;
  }
  if (h > SL_CODEC_MAX_DEPTH) return pk_fail(d, "nested too deeply", op);
  d->dep[mark - d->base - 1] = h;
  return 0;
}

static void pk_new_list(pdec *d, int narr) {
  lua_createtable(d->L, narr, 0);
  lua_pushvalue(d->L, d->array_mt);
  lua_setmetatable(d->L, -2);
}

/* 1 when the value at idx is a list this reader made (it carries the array
 * marker), 0 for any other value. A dict is a table without it. */
static int pk_is_list(pdec *d, int idx) {
  int r;
  if (!lua_istable(d->L, idx) || !lua_getmetatable(d->L, idx)) return 0;
  r = lua_rawequal(d->L, -1, d->array_mt);
  lua_pop(d->L, 1);
  return r;
}

/* Move the values above stack height `mark` into the list at `mark`. */
static int pk_appends(pdec *d, int mark, int op) {
  lua_State *L = d->L;
  int top = lua_gettop(L), n = top - mark, i, len;
  if (mark <= d->base || !pk_is_list(d, mark)) return pk_fail(d, "APPENDS without a list", op);
  if (pk_fold_dep(d, mark, op)) return SL_ECODEC;
  len = (int)lua_objlen(L, mark);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, mark + i);
    lua_rawseti(L, mark, len + i);
  }
  lua_settop(L, mark);
  return 0;
}

static int pk_setitems(pdec *d, int mark, int op) {
  lua_State *L = d->L;
  int top = lua_gettop(L), i;
  if ((top - mark) % 2) return pk_fail(d, "odd number of dict items", op);
  if (mark <= d->base || !lua_istable(L, mark) || pk_is_list(d, mark))
    return pk_fail(d, "SETITEMS without a dict", op);
  if (pk_fold_dep(d, mark, op)) return SL_ECODEC;
  for (i = mark + 1; i < top; i += 2) {
    if (lua_isnil(L, i) || lua_type(L, i) == LUA_TLIGHTUSERDATA)
      return pk_fail(d, "dict key None cannot be a Lua key", op);
    if (lua_type(L, i) == LUA_TNUMBER && lua_tonumber(L, i) != lua_tonumber(L, i))
      return pk_fail(d, "dict key NaN cannot be a Lua key", op);
    /* a list, dict or bytes key would be a new table, found by no lookup */
    if (lua_istable(L, i)) return pk_fail(d, "a dict key must be a str, int, float or bool", op);
    lua_pushvalue(L, i);
    lua_pushvalue(L, i + 1);
    lua_rawset(L, mark);
  }
  lua_settop(L, mark);
  return 0;
}

/* The top n values become one list in their place. */
static int pk_tuple(pdec *d, int n, int op) {
  lua_State *L = d->L;
  int top = lua_gettop(L), i, h = 1;
  for (i = top - n + 1; i <= top; i++)
    if (pk_dep(d, i) + 1 > h) h = pk_dep(d, i) + 1;
  if (h > SL_CODEC_MAX_DEPTH) return pk_fail(d, "nested too deeply", op);
  pk_new_list(d, n);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, top - n + i);
    lua_rawseti(L, -2, i);
  }
  if (n > 0) {
    lua_replace(L, top - n + 1);
    lua_settop(L, top - n + 1);
  }
  return pk_set_dep(d, lua_gettop(L), h);
}

/* A walk of a value whose shared references must be checked: seen maps each
 * table to its shape (height and expanded size, see pk_shape), or to false while
 * it is being walked, so a cycle is found and a table shared many times is
 * walked once. */
typedef struct pk_walk {
  lua_State *L;
  int seen;
  double limit; /* the most values the expanded value may count */
} pk_walk;

/* The height of the table at idx (its nested tables all decoded) in *h and the
 * number of values it holds once every shared reference is copied out, the
 * table included, in *n (at most limit + 1). -1 when the height passes
 * SL_CODEC_MAX_DEPTH or a table holds itself. A shape is kept in seen as one
 * double, n * 256 + h, exact while n stays below 2^44. */
static int pk_shape(pk_walk *w, int idx, int depth, int *h, double *n) {
  lua_State *L = w->L;
  if (depth >= SL_CODEC_MAX_DEPTH || !lua_checkstack(L, 4)) return -1;
  lua_pushvalue(L, idx);
  lua_rawget(L, w->seen);
  if (lua_isboolean(L, -1)) return lua_pop(L, 1), -1;
  if (lua_isnumber(L, -1)) {
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    *h = (int)fmod(v, 256.0);
    *n = floor(v / 256.0);
    return depth + *h > SL_CODEC_MAX_DEPTH ? -1 : 0;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 0);
  lua_rawset(L, w->seen);
  *h = 1;
  *n = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kh = 0;
    double kn = 1;
    if (lua_istable(L, -1) && pk_shape(w, lua_gettop(L), depth + 1, &kh, &kn) < 0)
      return lua_pop(L, 2), -1;
    if (kh + 1 > *h) *h = kh + 1;
    *n += kn + 1; /* the key, and the value expanded */
    if (*n > w->limit) *n = w->limit + 1;
    lua_pop(L, 1);
  }
  lua_pushvalue(L, idx);
  lua_pushnumber(L, *n * 256.0 + *h);
  lua_rawset(L, w->seen);
  return 0;
}

/* The decoded value on top is refused when shared references made it taller
 * than the writer goes, made it hold itself, or make it expand, once written
 * again, to far more values than the pickle held (a few hundred bytes of
 * references to references can stand for 2^100 values): every value read must
 * write, in about the time it took to read. */
static int pk_check_shared(pdec *d) {
  lua_State *L = d->L;
  pk_walk w;
  int h, rc;
  double n, bytes = (double)(d->end - d->start);
  if (!d->shared || !lua_istable(L, -1)) return 0;
  lua_newtable(L);
  w.L = L;
  w.seen = lua_gettop(L);
  w.limit = bytes * 1024.0 > 1048576.0 ? bytes * 1024.0 : 1048576.0;
  rc = pk_shape(&w, lua_gettop(L) - 1, 0, &h, &n);
  lua_settop(L, w.seen - 1);
  if (rc < 0) return pk_fail(d, "nested too deeply, or a value that holds itself", '.');
  if (n > w.limit)
    return pk_fail(d, "shared references expand the value to over 1024 values per byte", '.');
  return 0;
}

/* Byte i of the magnitude. For a negative value it is ~b[i] plus a carry that
 * reaches byte i only when every byte below it is zero: z is the lowest nonzero
 * byte. */
static unsigned char mag_byte(const unsigned char *b, int neg, size_t z, size_t i) {
  if (!neg) return b[i];
  if (i < z) return 0;
  return (unsigned char)(i == z ? 0x100 - b[i] : ~b[i]);
}

/* n bytes of little-endian two's complement (Python's LONG1/LONG4) as the nearest
 * double, rounded once. Up to 8 bytes the value is an int64 and the conversion is
 * the one rounding. Wider values keep the top 64 bits of the magnitude plus a
 * sticky bit for everything below them: 64 bits leave room for the guard bit, so
 * the one conversion still rounds right. A magnitude past the double range is
 * infinity, as strtod gives on the JSON path. */
static double pk_long_value(const unsigned char *b, size_t n) {
  size_t i, z = 0, top;
  int neg;
  uint64_t u = 0;
  if (n == 0) return 0;
  neg = (b[n - 1] & 0x80) != 0;
  if (n <= 8) {
    u = le(b, (int)n);
    if (neg && n < 8) u |= ~(uint64_t)0 << (8 * n);
    return (double)(int64_t)u;
  }
  if (neg)
    while (z < n && b[z] == 0) z++;
  top = n;
  while (top > 0 && mag_byte(b, neg, z, top - 1) == 0) top--;
  if (top == 0) return 0;
  top--; /* the highest nonzero byte of the magnitude */
  if (top >= 128) return neg ? -HUGE_VAL : HUGE_VAL;
  for (i = 0; i < 8; i++) u = (u << 8) | (top >= i ? mag_byte(b, neg, z, top - i) : 0);
  if (top >= 8) {
    for (i = 0; i + 8 <= top; i++)
      if (mag_byte(b, neg, z, i)) {
        u |= 1;
        break;
      }
  }
  {
    double v = ldexp((double)u, 8 * ((int)top - 7));
    return neg ? -v : v;
  }
}

static void pk_long(pdec *d, const unsigned char *b, size_t n) {
  lua_pushnumber(d->L, pk_long_value(b, n));
}

/* Push a string; a str (is_str) must be Unicode. Python pickles a str as UTF-8
 * with its surrogate code points encoded one by one (surrogatepass). A high one
 * followed by a low one is a character split in two (as JSON's \ud83d\ude00 is),
 * and is joined, so both codecs give the same string; a lone one has no UTF-8
 * form and is refused. Valid UTF-8, the common case, costs one scan. */
static int pk_push_str(pdec *d, const unsigned char *s, size_t n, int is_str, int op) {
  sl_buf b;
  size_t i = 0;
  if (!is_str || utf8_valid(s, n)) {
    lua_pushlstring(d->L, (const char *)s, n);
    return 0;
  }
  sl_buf_init(&b);
  while (i < n) {
    if (i + 6 <= n && s[i] == 0xed && s[i + 1] >= 0xa0 && s[i + 1] <= 0xaf &&
        (s[i + 2] & 0xc0) == 0x80 && s[i + 3] == 0xed && s[i + 4] >= 0xb0 && s[i + 4] <= 0xbf &&
        (s[i + 5] & 0xc0) == 0x80) {
      uint32_t hi = 0xd000 | ((uint32_t)(s[i + 1] & 0x3f) << 6) | (s[i + 2] & 0x3f);
      uint32_t lo = 0xd000 | ((uint32_t)(s[i + 4] & 0x3f) << 6) | (s[i + 5] & 0x3f);
      uint32_t cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
      unsigned char t[4] = { (unsigned char)(0xf0 | (cp >> 18)),
                             (unsigned char)(0x80 | ((cp >> 12) & 0x3f)),
                             (unsigned char)(0x80 | ((cp >> 6) & 0x3f)),
                             (unsigned char)(0x80 | (cp & 0x3f)) };
      if (sl_buf_append(&b, (const char *)t, 4)) goto nomem;
      i += 6;
      continue;
    }
    {
      /* one character, checked on its own */
      size_t len = s[i] < 0x80 ? 1 : s[i] < 0xe0 ? 2 : s[i] < 0xf0 ? 3 : 4;
      if (i + len > n || !utf8_valid(s + i, len)) {
        const char *what = (i + 3 <= n && s[i] == 0xed && s[i + 1] >= 0xa0)
                               ? "a str holds a lone surrogate (not valid Unicode)"
                               : "a str that is not UTF-8";
        sl_buf_free(&b);
        return pk_fail(d, what, op);
      }
      if (sl_buf_append(&b, (const char *)s + i, len)) goto nomem;
      i += len;
    }
  }
  lua_pushlstring(d->L, b.data ? b.data : "", b.len);
  sl_buf_free(&b);
  return 0;
nomem:
  sl_buf_free(&b);
  return SL_ENOMEM;
}

int sl_codec_decode_pickle(lua_State *L, const char *data, size_t len, int hint, char *err,
                           size_t errlen) {
  pdec d;
  int rc = 0, op = 0, top = lua_gettop(L), memo_n = 0;
  size_t n;
  d.L = L;
  d.p = d.start = (const unsigned char *)data;
  d.end = d.p + len;
  d.nmarks = 0;
  d.shared = 0;
  d.dep = NULL;
  d.dep_cap = 0;
  d.err = err;
  d.errlen = errlen;
  d.hint = hint;
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  d.array_mt = lua_gettop(L);
  lua_newtable(L);
  d.memo = lua_gettop(L);
  d.base = d.memo;
  for (;;) {
    if (!lua_checkstack(L, 8)) {
      rc = pk_fail(&d, "too deep", 0);
      goto out;
    }
    if (d.p >= d.end) {
      rc = pk_fail(&d, "ends before STOP", 0);
      goto out;
    }
    op = *d.p++;
    switch (op) {
      case 0x80: /* PROTO */
        if (!need(&d, 1)) goto truncated;
        d.p++;
        break;
      case 0x95: /* FRAME */
        if (!need(&d, 8)) goto truncated;
        d.p += 8;
        break;
      case '.': /* STOP */
        if (lua_gettop(L) != d.base + 1 || d.nmarks) {
          rc = pk_fail(&d, "STOP with a stack that is not one value", op);
          goto out;
        }
        if ((rc = pk_check_shared(&d))) goto out;
        lua_replace(L, d.array_mt); /* the value takes the first slot */
        lua_settop(L, top + 1);
        free(d.dep);
        return 0;
      case '(': /* MARK */
        if (d.nmarks == PK_MAX_MARKS) {
          rc = pk_fail(&d, "nested too deeply", op);
          goto out;
        }
        d.marks[d.nmarks++] = lua_gettop(L);
        break;
      case ']': /* EMPTY_LIST */
        pk_new_list(&d, lua_gettop(L) == d.base && d.hint > 0 ? d.hint : 0);
        if ((rc = pk_set_dep(&d, lua_gettop(L), 1))) goto out;
        break;
      case ')': /* EMPTY_TUPLE */
        pk_new_list(&d, 0);
        if ((rc = pk_set_dep(&d, lua_gettop(L), 1))) goto out;
        break;
      case '}': /* EMPTY_DICT */
        lua_createtable(L, 0, 4);
        if ((rc = pk_set_dep(&d, lua_gettop(L), 1))) goto out;
        break;
      case 'a': /* APPEND */
        if (lua_gettop(L) < d.base + 2) goto underflow;
        if ((rc = pk_appends(&d, lua_gettop(L) - 1, op))) goto out;
        break;
      case 's': /* SETITEM */
        if (lua_gettop(L) < d.base + 3) goto underflow;
        if ((rc = pk_setitems(&d, lua_gettop(L) - 2, op))) goto out;
        break;
      case 'e': case 'u': case 't': { /* APPENDS, SETITEMS, TUPLE: back to the mark */
        int m;
        if (d.nmarks == 0) {
          rc = pk_fail(&d, "no mark on the stack", op);
          goto out;
        }
        m = d.marks[--d.nmarks];
        if (op == 't') {
          if ((rc = pk_tuple(&d, lua_gettop(L) - m, op))) goto out;
        } else if ((rc = op == 'e' ? pk_appends(&d, m, op) : pk_setitems(&d, m, op))) {
          goto out;
        }
        break;
      }
      case 0x85: case 0x86: case 0x87: /* TUPLE1..3 */
        if (lua_gettop(L) < d.base + (op - 0x84)) goto underflow;
        if ((rc = pk_tuple(&d, op - 0x84, op))) goto out;
        break;
      case 'N': lua_pushlightuserdata(L, NULL); break;
      case 0x88: lua_pushboolean(L, 1); break;
      case 0x89: lua_pushboolean(L, 0); break;
      case 'K': /* BININT1 */
        if (!need(&d, 1)) goto truncated;
        lua_pushnumber(L, d.p[0]);
        d.p += 1;
        break;
      case 'M': /* BININT2 */
        if (!need(&d, 2)) goto truncated;
        lua_pushnumber(L, (double)le(d.p, 2));
        d.p += 2;
        break;
      case 'J': /* BININT */
        if (!need(&d, 4)) goto truncated;
        lua_pushnumber(L, (double)(int32_t)(uint32_t)le(d.p, 4));
        d.p += 4;
        break;
      case 0x8a: /* LONG1 */
        if (!need(&d, 1)) goto truncated;
        n = d.p[0];
        if (!need_body(&d, 1, n)) goto truncated;
        pk_long(&d, d.p + 1, n);
        d.p += 1 + n;
        break;
      case 0x8b: /* LONG4 */
        if (!need(&d, 4)) goto truncated;
        n = (size_t)le(d.p, 4);
        if (!need_body(&d, 4, n)) goto truncated;
        pk_long(&d, d.p + 4, n);
        d.p += 4 + n;
        break;
      case 'G': { /* BINFLOAT, big-endian */
        uint64_t u = 0;
        double v;
        int i;
        if (!need(&d, 8)) goto truncated;
        for (i = 0; i < 8; i++) u = (u << 8) | d.p[i];
        memcpy(&v, &u, 8);
        lua_pushnumber(L, v);
        d.p += 8;
        break;
      }
      case 0x8c: case 'C': /* SHORT_BINUNICODE, SHORT_BINBYTES */
        if (!need(&d, 1)) goto truncated;
        n = d.p[0];
        if (!need_body(&d, 1, n)) goto truncated;
        if ((rc = pk_push_str(&d, d.p + 1, n, op == 0x8c, op))) goto out;
        d.p += 1 + n;
        break;
      case 'X': case 'B': /* BINUNICODE, BINBYTES */
        if (!need(&d, 4)) goto truncated;
        n = (size_t)le(d.p, 4);
        if (!need_body(&d, 4, n)) goto truncated;
        if ((rc = pk_push_str(&d, d.p + 4, n, op == 'X', op))) goto out;
        d.p += 4 + n;
        break;
      case 0x8d: case 0x8e: case 0x96: /* BINUNICODE8, BINBYTES8, BYTEARRAY8 */
        if (!need(&d, 8)) goto truncated;
        n = (size_t)le(d.p, 8);
        if (!need_body(&d, 8, n)) goto truncated;
        if ((rc = pk_push_str(&d, d.p + 8, n, op == 0x8d, op))) goto out;
        d.p += 8 + n;
        break;
      case 0x94: /* MEMOIZE */
        if (lua_gettop(L) <= d.base) goto underflow;
        lua_pushvalue(L, -1);
        lua_rawseti(L, d.memo, memo_n++);
        break;
      case 'q': case 'r': { /* BINPUT, LONG_BINPUT */
        int w = op == 'q' ? 1 : 4;
        if (!need(&d, (size_t)w)) goto truncated;
        if (lua_gettop(L) <= d.base) goto underflow;
        lua_pushvalue(L, -1);
        lua_rawseti(L, d.memo, (int)le(d.p, w));
        d.p += w;
        break;
      }
      case 'h': case 'j': { /* BINGET, LONG_BINGET */
        int w = op == 'h' ? 1 : 4;
        if (!need(&d, (size_t)w)) goto truncated;
        lua_rawgeti(L, d.memo, (int)le(d.p, w));
        d.p += w;
        if (lua_isnil(L, -1)) {
          rc = pk_fail(&d, "memo reference to nothing", op);
          goto out;
        }
        if (lua_istable(L, -1)) {
          d.shared = 1;
          if ((rc = pk_set_dep(&d, lua_gettop(L), 1))) goto out;
        }
        break;
      }
      case 0x8f: case 0x90: case 0x91: /* EMPTY_SET, ADDITEMS, FROZENSET */
        rc = pk_fail(&d, "a Python set, which Slither does not carry (return a list)", op);
        goto out;
      default:
        rc = pk_fail(&d, "a Python object that is not a plain value", op);
        goto out;
    }
  }
truncated:
  rc = pk_fail(&d, "truncated", op);
  goto out;
underflow:
  rc = pk_fail(&d, "stack underflow", op);
out:
  free(d.dep);
  lua_settop(L, top);
  return rc ? rc : SL_ECODEC;
}
