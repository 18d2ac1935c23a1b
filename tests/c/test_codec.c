/* test_codec.c: Lua values <-> JSON with raw byte attachments, against a real
 * lua_State: exact numbers, strings and escapes, invalid UTF-8 and slither.bytes
 * as attachments, list/object/marker rules, encode errors that name the place,
 * malformed JSON, stack balance, a large list, and reads past the end of the
 * input (checked in a child process with the input placed before a guard page). */
#include "codec.h"
#include "error.h"
#include "frame.h"
#include "test.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

static lua_State *L;
static char err[512]; /* the engine passes 512 bytes to sl_codec_encode */
static sl_buf js, at; /* JSON and attachments of the last encode */

/* ---- helpers ---------------------------------------------------------------- */

static void run_lua(const char *code) {
  if (luaL_loadstring(L, code) || lua_pcall(L, 0, LUA_MULTRET, 0)) {
    fprintf(stderr, "lua error: %s\n", lua_tostring(L, -1));
    exit(2);
  }
}

/* Push the value of a Lua expression. */
static void push_expr(const char *expr) {
  size_t n = strlen(expr) + 16;
  char *code = malloc(n);
  int top = lua_gettop(L);
  snprintf(code, n, "return (%s)", expr);
  run_lua(code);
  free(code);
  if (lua_gettop(L) != top + 1) {
    fprintf(stderr, "expression gave no value: %s\n", expr);
    exit(2);
  }
}

/* Evaluate a Lua boolean expression. */
static int lua_true(const char *expr) {
  int r;
  push_expr(expr);
  r = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return r;
}

static void nul_terminate(sl_buf *b) {
  sl_buf_putc(b, '\0');
  b->len--;
}

/* Encode the value on top of the stack (left there); check the stack is balanced. */
static int encode_top(int as_list) {
  int top = lua_gettop(L), rc;
  js.len = at.len = 0;
  err[0] = '\0';
  rc = sl_codec_encode(L, -1, as_list, &js, &at, err, sizeof err);
  CHECKF(lua_gettop(L) == top, "encode changed the stack top from %d to %d", top,
         lua_gettop(L));
  nul_terminate(&js);
  return rc;
}

/* Encode the value of a Lua expression. */
static int encode_expr(const char *expr, int as_list) {
  int rc;
  push_expr(expr);
  rc = encode_top(as_list);
  lua_pop(L, 1);
  return rc;
}

/* Decode; on success the value is on top of the stack. Checks that exactly one
 * value was pushed on success and nothing on error, and that the value below is
 * untouched. */
static int decode(const char *json, size_t len, const char *att, size_t att_len) {
  int top, rc;
  lua_pushliteral(L, "sentinel");
  top = lua_gettop(L);
  err[0] = '\0';
  rc = sl_codec_decode(L, json, len, att, att_len, err, sizeof err);
  CHECKF(lua_gettop(L) == top + (rc == 0 ? 1 : 0), "decode(%.*s): rc %d, top %d -> %d",
         (int)len, json, rc, top, lua_gettop(L));
  if (rc == 0) {
    CHECK(lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "sentinel") == 0);
    lua_remove(L, -2);
  } else {
    CHECK(lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "sentinel") == 0);
    lua_pop(L, 1);
  }
  return rc;
}

static int decode_str(const char *json) { return decode(json, strlen(json), NULL, 0); }

/* Encode the expression and check the JSON text (and that there are no attachments). */
static void expect_json(const char *expr, int as_list, const char *want) {
  int rc = encode_expr(expr, as_list);
  CHECKF(rc == 0, "encode(%s) failed: %d %s", expr, rc, err);
  CHECKF(rc == 0 && strcmp(js.data, want) == 0, "encode(%s): got '%s', want '%s'", expr,
         js.data, want);
  CHECKF(at.len == 0, "encode(%s): unexpected attachments (%lu bytes)", expr,
         (unsigned long)at.len);
}

/* Encode the expression, expect SL_ECODEC and every given fragment in err. */
static void expect_enc_error(const char *expr, int as_list, const char *frag1,
                             const char *frag2) {
  int rc = encode_expr(expr, as_list);
  CHECKF(rc == SL_ECODEC, "encode(%s): rc %d (json '%s'), want SL_ECODEC", expr, rc, js.data);
  CHECKF(frag1 == NULL || strstr(err, frag1) != NULL, "encode(%s): err '%s' lacks '%s'", expr,
         err, frag1);
  CHECKF(frag2 == NULL || strstr(err, frag2) != NULL, "encode(%s): err '%s' lacks '%s'", expr,
         err, frag2);
}

/* Decode, expect SL_ECODEC and the fragment in err. */
static void expect_dec_error(const char *json, size_t len, const char *att, size_t att_len,
                             const char *frag) {
  int rc = decode(json, len, att, att_len);
  CHECKF(rc == SL_ECODEC, "decode(%.*s): rc %d, want SL_ECODEC", (int)len, json, rc);
  if (rc == 0) lua_pop(L, 1);
  CHECKF(err[0] != '\0', "decode(%.*s): empty error message", (int)len, json);
  CHECKF(frag == NULL || strstr(err, frag) != NULL, "decode(%.*s): err '%s' lacks '%s'",
         (int)len, json, err, frag);
}

/* The Lua string on top equals n bytes s. */
static int top_is_bytes(const char *s, size_t n) {
  size_t len;
  const char *p;
  if (lua_type(L, -1) != LUA_TSTRING) return 0;
  p = lua_tolstring(L, -1, &len);
  return len == n && memcmp(p, s, n) == 0;
}

/* Decode json in a child process with the input ending exactly at a PROT_NONE
 * page, so any read past the end faults (and ASan, if on, reports it). Returns 1
 * if the child finished normally. */
static char guard_how[64]; /* how the last guarded child ended */

static int decode_guarded(const char *json, size_t len, const char *att, size_t att_len) {
  pid_t pid;
  int status;
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    long ps = sysconf(_SC_PAGESIZE);
    char *pg;
    char e[256];
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2); /* the parent reports */
    pg = mmap(NULL, (size_t)ps * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pg == MAP_FAILED || mprotect(pg + ps, (size_t)ps, PROT_NONE)) _exit(3);
    memcpy(pg + ps - len, json, len);
    sl_codec_decode(L, pg + ps - len, len, att, att_len, e, sizeof e);
    _exit(0);
  }
  if (waitpid(pid, &status, 0) != pid) return 0;
  if (WIFSIGNALED(status))
    snprintf(guard_how, sizeof guard_how, "killed by signal %d", WTERMSIG(status));
  else
    snprintf(guard_how, sizeof guard_how, "exit status %d", WEXITSTATUS(status));
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_open(void) {
  const void *a1, *a2;
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  a1 = lua_topointer(L, -1);
  CHECK(lua_istable(L, -1));
  lua_pop(L, 1);
  sl_codec_open(L); /* idempotent: the same tables stay */
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  a2 = lua_topointer(L, -1);
  lua_pop(L, 1);
  CHECK(a1 == a2);
  CHECK(lua_true("ARRAY ~= nil and BYTES ~= nil and ARRAY ~= BYTES"));
  CHECK(lua_gettop(L) == 0);
}

/* Encode a number, check the text (if given) and that it decodes bit-exactly. */
static void num_roundtrip(double d, const char *want) {
  double back;
  int rc;
  lua_pushnumber(L, d);
  rc = encode_top(0);
  lua_pop(L, 1);
  CHECKF(rc == 0, "encode(%.17g) failed: %s", d, err);
  if (want) CHECKF(strcmp(js.data, want) == 0, "encode(%.17g): got '%s', want '%s'", d, js.data, want);
  rc = decode(js.data, js.len, NULL, 0);
  CHECKF(rc == 0, "decode('%s') failed: %s", js.data, err);
  if (rc) return;
  CHECK(lua_type(L, -1) == LUA_TNUMBER);
  back = lua_tonumber(L, -1);
  lua_pop(L, 1);
  CHECKF(memcmp(&back, &d, sizeof d) == 0, "%.17g -> '%s' -> %.17g: not bit-exact", d, js.data,
         back);
}

static void test_integers(void) {
  num_roundtrip(0, "0");
  num_roundtrip(-1, "-1");
  num_roundtrip(1, "1");
  num_roundtrip(9007199254740992.0, "9007199254740992");   /* 2^53 */
  num_roundtrip(-9007199254740992.0, "-9007199254740992"); /* -(2^53) */
  num_roundtrip(123456789012345.0, "123456789012345");     /* cjson keeps 14 digits */
  num_roundtrip(9007199254740994.0, "9007199254740994");   /* 2^53+2 */
  num_roundtrip(1152921504606846976.0, "1152921504606846976"); /* 2^60 */
  num_roundtrip(-4503599627370497.0, "-4503599627370497");
  num_roundtrip(999999999999999.0, "999999999999999");     /* 15 digits: fast path */
  num_roundtrip(1000000000000000.0, "1000000000000000");   /* 16 digits: strtod */
  /* Beyond int64 range: at least the value must survive. */
  num_roundtrip(1e19, NULL);
  num_roundtrip(18446744073709551616.0, NULL); /* 2^64 */
  /* Lua arithmetic gives the same text. */
  expect_json("2^53", 0, "9007199254740992");
  expect_json("{2^53 + 2, -(2^53), 123456789012345}", 0,
              "[9007199254740994,-9007199254740992,123456789012345]");
}

static void test_floats(void) {
  double nz = -0.0;
  num_roundtrip(0.1, "0.1");
  num_roundtrip(1.0 / 3.0, "0.3333333333333333");
  num_roundtrip(1e-300, "1e-300");
  num_roundtrip(5e-324, NULL); /* smallest subnormal */
  num_roundtrip(2.2250738585072014e-308, NULL); /* smallest normal */
  num_roundtrip(1.7976931348623157e308, NULL);  /* DBL_MAX */
  num_roundtrip(-1.7976931348623157e308, NULL);
  num_roundtrip(0.30000000000000004, "0.30000000000000004");
  num_roundtrip(-2.5, "-2.5");
  num_roundtrip(123.456, "123.456");
  num_roundtrip(nz, "-0.0");
  /* sign of -0.0 after decoding */
  CHECK(decode_str("-0.0") == 0);
  CHECK(lua_tonumber(L, -1) == 0 && signbit(lua_tonumber(L, -1)));
  lua_pop(L, 1);
  /* A few texts decode to what strtod says. */
  {
    static const struct { const char *text; double want; } cases[] = {
        {"1e2", 100.0}, {"-1.5E-3", -1.5e-3}, {" 42 ", 42.0}, {"0.5", 0.5},
        {"1.7976931348623157e308", 1.7976931348623157e308}, {"4.9e-324", 5e-324},
        {"-123456789012345", -123456789012345.0}};
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      int rc = decode_str(cases[i].text);
      CHECKF(rc == 0, "decode('%s'): %s", cases[i].text, err);
      if (rc) continue;
      CHECKF(lua_tonumber(L, -1) == cases[i].want, "decode('%s') = %.17g", cases[i].text,
             lua_tonumber(L, -1));
      lua_pop(L, 1);
    }
  }
}

static void test_nonfinite(void) {
  lua_pushnumber(L, NAN);
  CHECK(encode_top(0) == 0);
  lua_pop(L, 1);
  CHECK_STR(js.data, "NaN");
  lua_pushnumber(L, HUGE_VAL);
  CHECK(encode_top(0) == 0);
  lua_pop(L, 1);
  CHECK_STR(js.data, "Infinity");
  lua_pushnumber(L, -HUGE_VAL);
  CHECK(encode_top(0) == 0);
  lua_pop(L, 1);
  CHECK_STR(js.data, "-Infinity");
  expect_json("{0/0, 1/0, -1/0}", 0, "[NaN,Infinity,-Infinity]");

  CHECK(decode_str("NaN") == 0);
  CHECK(lua_isnumber(L, -1) && isnan(lua_tonumber(L, -1)));
  lua_pop(L, 1);
  CHECK(decode_str("Infinity") == 0);
  CHECK(lua_tonumber(L, -1) == HUGE_VAL);
  lua_pop(L, 1);
  CHECK(decode_str("-Infinity") == 0);
  CHECK(lua_tonumber(L, -1) == -HUGE_VAL);
  lua_pop(L, 1);
  CHECK(decode_str("[NaN, Infinity ,-Infinity]") == 0);
  lua_setglobal(L, "V");
  CHECK(lua_true("#V == 3 and V[1] ~= V[1] and V[2] == 1/0 and V[3] == -1/0"));
  expect_dec_error("Infinit", 7, NULL, 0, NULL);
  expect_dec_error("-Inf", 4, NULL, 0, NULL);
  expect_dec_error("Nan", 3, NULL, 0, NULL);
}

static void test_strings_encode(void) {
  expect_json("'hello world'", 0, "\"hello world\"");
  expect_json("''", 0, "\"\"");
  expect_json("'a\"b\\\\c'", 0, "\"a\\\"b\\\\c\"");
  expect_json("'line\\nnext\\ttab'", 0, "\"line\\nnext\\ttab\"");
  expect_json("'\\r\\1\\31\\8\\12'", 0, "\"\\u000d\\u0001\\u001f\\u0008\\u000c\"");
  expect_json("'a\\0b'", 0, "\"a\\u0000b\"");
  expect_json("'\\0'", 0, "\"\\u0000\"");
  expect_json("'del\\127'", 0, "\"del\x7f\"");
  expect_json("'/'", 0, "\"/\"");
  expect_json("'caf\\195\\169'", 0, "\"caf\xc3\xa9\"");                      /* é */
  expect_json("'\\240\\159\\152\\128'", 0, "\"\xf0\x9f\x98\x80\"");          /* 😀 */
  expect_json("'\\226\\130\\172'", 0, "\"\xe2\x82\xac\"");                   /* € */
  expect_json("'\\244\\143\\191\\191'", 0, "\"\xf4\x8f\xbf\xbf\"");          /* U+10FFFF */
  expect_json("'\\239\\191\\189'", 0, "\"\xef\xbf\xbd\"");                   /* U+FFFD */
  /* sl_json_string directly */
  {
    sl_buf b;
    sl_buf_init(&b);
    sl_buf_append(&b, "x", 1);
    CHECK(sl_json_string(&b, (const unsigned char *)"\xff", 1) == 1);
    CHECK(b.len == 1); /* nothing appended on invalid input */
    CHECK(sl_json_string(&b, (const unsigned char *)"ok\"", 3) == 0);
    CHECK(b.len == 7 && memcmp(b.data, "x\"ok\\\"\"", 7) == 0);
    sl_buf_free(&b);
  }
}

static void test_strings_decode(void) {
  const char *want;
  CHECK(decode_str("\"hello\"") == 0);
  CHECK(top_is_bytes("hello", 5));
  lua_pop(L, 1);
  CHECK(decode_str("\"\"") == 0);
  CHECK(top_is_bytes("", 0));
  lua_pop(L, 1);
  CHECK(decode_str("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"") == 0);
  CHECK(top_is_bytes("\"\\/\b\f\n\r\t", 8));
  lua_pop(L, 1);
  /* \u escapes: ASCII, 2-byte, 3-byte, upper-case hex, NUL, and a surrogate pair. */
  CHECK(decode_str("\"\\u0041\\u00e9\\u20AC\\u00C9\\u0000z\"") == 0);
  want = "A\xc3\xa9\xe2\x82\xac\xc3\x89\0z";
  CHECK(top_is_bytes(want, 10));
  lua_pop(L, 1);
  CHECK(decode_str("\"\\ud83d\\ude00\"") == 0);
  CHECK(top_is_bytes("\xf0\x9f\x98\x80", 4));
  lua_pop(L, 1);
  CHECK(decode_str("\"x\\uD83D\\uDE00y\"") == 0);
  CHECK(top_is_bytes("x\xf0\x9f\x98\x80y", 6));
  lua_pop(L, 1);
  CHECK(decode_str("\"\\udbff\\udfff\"") == 0); /* U+10FFFF */
  CHECK(top_is_bytes("\xf4\x8f\xbf\xbf", 4));
  lua_pop(L, 1);
  /* A lone surrogate has no UTF-8 form: refused by name, never replaced (#11). */
  {
    static const char *lone[] = { "\"\\ud800\"", "\"\\ude00x\"", "\"\\ud83dA\"",
                                  "\"\\ud83d\\u0041\"", "\"\\ud83d\\ud83d\\ude00\"",
                                  "[\"ok\", \"\\udfff\"]" };
    size_t k;
    for (k = 0; k < sizeof lone / sizeof lone[0]; k++) {
      CHECKF(decode_str(lone[k]) == SL_ECODEC && strstr(err, "lone surrogate"),
             "decode(%s): err '%s'", lone[k], err);
    }
  }
  /* Raw UTF-8 passes through. */
  CHECK(decode_str("\"caf\xc3\xa9 \xf0\x9f\x98\x80\"") == 0);
  CHECK(top_is_bytes("caf\xc3\xa9 \xf0\x9f\x98\x80", 10));
  lua_pop(L, 1);
  /* Encoded strings decode to the same bytes. */
  {
    static const char s[] = "q\"b\\s/n\nt\tr\rc\x01\x1f" "\x7f" "\xc3\xa9\xf0\x9f\x98\x80\0end";
    lua_pushlstring(L, s, sizeof s - 1);
    CHECK(encode_top(0) == 0);
    lua_pop(L, 1);
    CHECK(at.len == 0);
    CHECK(decode(js.data, js.len, NULL, 0) == 0);
    CHECK(top_is_bytes(s, sizeof s - 1));
    lua_pop(L, 1);
  }
}

/* Invalid UTF-8 (and slither.bytes) goes as an attachment and comes back exact. */
static void bytes_roundtrip(const char *s, size_t n) {
  int rc;
  char len[4];
  lua_pushlstring(L, s, n);
  rc = encode_top(0);
  lua_pop(L, 1);
  CHECKF(rc == 0, "encode bytes: %s", err);
  CHECKF(strcmp(js.data, "{\"\\u0000b\":0}") == 0, "invalid UTF-8 (%lu bytes) -> '%s'",
         (unsigned long)n, js.data);
  sl_put_u32le(len, (uint32_t)n);
  CHECK(at.len == n + 4 && memcmp(at.data, len, 4) == 0 && memcmp(at.data + 4, s, n) == 0);
  rc = decode(js.data, js.len, at.data, at.len);
  CHECK(rc == 0);
  if (rc) return;
  CHECK(top_is_bytes(s, n));
  lua_pop(L, 1);
}

static void test_bytes(void) {
  bytes_roundtrip("\xff\xfe", 2);
  bytes_roundtrip("\xc0\xaf", 2);         /* overlong '/' */
  bytes_roundtrip("\xe0\x80\xaf", 3);     /* overlong 3-byte */
  bytes_roundtrip("\xf0\x80\x80\xaf", 4); /* overlong 4-byte */
  bytes_roundtrip("\xed\xa0\x80", 3);     /* U+D800 encoded in UTF-8 */
  bytes_roundtrip("\xed\xbf\xbf", 3);     /* U+DFFF */
  bytes_roundtrip("\xf4\x90\x80\x80", 4); /* above U+10FFFF */
  bytes_roundtrip("\xf8\x88\x80\x80\x80", 5);
  bytes_roundtrip("abc\x80", 4);          /* stray continuation byte */
  bytes_roundtrip("\xe2\x82", 2);         /* truncated sequence */
  bytes_roundtrip("\xc3(", 2);            /* bad continuation */
  bytes_roundtrip("\0\xff\0", 3);
  {
    static char all[256];
    int i;
    for (i = 0; i < 256; i++) all[i] = (char)i;
    bytes_roundtrip(all, 256);
  }

  /* slither.bytes of valid UTF-8 also travels as an attachment. */
  CHECK(encode_expr("bytes('abc')", 0) == 0);
  CHECK_STR(js.data, "{\"\\u0000b\":0}");
  CHECK(at.len == 7 && memcmp(at.data, "\3\0\0\0abc", 7) == 0);
  CHECK(decode(js.data, js.len, at.data, at.len) == 0);
  CHECK(top_is_bytes("abc", 3));
  lua_pop(L, 1);
  CHECK(encode_expr("bytes('')", 0) == 0);
  CHECK_STR(js.data, "{\"\\u0000b\":0}");
  CHECK(at.len == 4 && memcmp(at.data, "\0\0\0\0", 4) == 0);
  expect_enc_error("setmetatable({}, BYTES)", 0, "no string", NULL);

  /* Several in one value: indices in order, mixed with plain strings. */
  CHECK(encode_expr("{'ok', '\\255\\254', {k = bytes('abc')}, '\\192\\175', 'caf\\195\\169'}", 0) ==
        0);
  CHECK_STR(js.data,
            "[\"ok\",{\"\\u0000b\":0},{\"k\":{\"\\u0000b\":1}},{\"\\u0000b\":2},\"caf\xc3\xa9\"]");
  CHECK(at.len == 6 + 7 + 6 && memcmp(at.data, "\2\0\0\0\xff\xfe\3\0\0\0abc\2\0\0\0\xc0\xaf", 19) == 0);
  CHECK(decode(js.data, js.len, at.data, at.len) == 0);
  lua_setglobal(L, "V");
  CHECK(lua_true("#V == 5 and V[1] == 'ok' and V[2] == '\\255\\254' and V[3].k == 'abc' and "
                 "V[4] == '\\192\\175' and V[5] == 'caf\\195\\169'"));

  /* More than 8 attachments (the decoder's heap path), then re-encode. */
  CHECK(encode_expr("(function() local t = {} for i = 1, 20 do t[i] = string.rep('\\255', i) "
                    "end return t end)()",
                    0) == 0);
  {
    size_t off = 0, n;
    const char *p;
    int count = 0;
    while (sl_att_next(at.data, at.len, &off, &p, &n)) count++;
    CHECK(count == 20 && off == at.len);
  }
  CHECK(strstr(js.data, "{\"\\u0000b\":19}") != NULL);
  CHECK(decode(js.data, js.len, at.data, at.len) == 0);
  lua_setglobal(L, "V");
  CHECK(lua_true("(function() if #V ~= 20 then return false end for i = 1, 20 do "
                 "if V[i] ~= string.rep('\\255', i) then return false end end return true end)()"));
  /* An error after the heap path is taken frees it (ASan checks). */
  expect_dec_error("[1,", 3, at.data, at.len, NULL);

  /* An invalid UTF-8 key is an error, not an attachment. */
  expect_enc_error("{['\\255'] = 1}", 0, "UTF-8", NULL);
}

static void test_tables(void) {
  expect_json("{1, 2, 3}", 0, "[1,2,3]");
  expect_json("{'a', true, false}", 0, "[\"a\",true,false]");
  expect_json("{a = 1}", 0, "{\"a\":1}");
  expect_json("{}", 0, "{}");
  expect_json("setmetatable({}, ARRAY)", 0, "[]");
  expect_json("setmetatable({1, 2}, ARRAY)", 0, "[1,2]");
  expect_json("{1, {a = {true, false}}, 'x', {}}", 0, "[1,{\"a\":[true,false]},\"x\",{}]");
  expect_json("{{{{}}}}", 0, "[[[{}]]]");
  expect_json("{1, null, 3}", 0, "[1,null,3]");
  expect_json("{null}", 0, "[null]");
  expect_json("null", 0, "null");
  expect_json("nil", 0, "null");
  expect_json("true", 0, "true");
  expect_json("{a = null}", 0, "{\"a\":null}");
  expect_json("{['a\"b'] = 1}", 0, "{\"a\\\"b\":1}");
  /* a key that starts with NUL gets one more, so no dict passes for the bytes
   * marker {"\u0000b": i}, and the reader takes it off (#11) */
  expect_json("{['\\0x'] = 1}", 0, "{\"\\u0000\\u0000x\":1}");
  expect_json("{['\\0b'] = 0}", 0, "{\"\\u0000\\u0000b\":0}");
  CHECK(encode_expr("{['\\0b'] = 0, x = {['\\0'] = bytes('hi')}}", 0) == 0);
  CHECK(decode(js.data, js.len, at.data, at.len) == 0);
  lua_setglobal(L, "V");
  CHECK(lua_true("V['\\0b'] == 0 and V.x['\\0'] == 'hi'"));

  /* A multi-key object: order is unspecified, so check by decoding. */
  CHECK(encode_expr("{a = 1, b = 'two', c = {3}, d = {e = setmetatable({}, ARRAY)}}", 0) == 0);
  CHECK(js.data[0] == '{' && strstr(js.data, "\"a\":1") && strstr(js.data, "\"b\":\"two\"") &&
        strstr(js.data, "\"c\":[3]") && strstr(js.data, "\"d\":{\"e\":[]}"));
  CHECK(decode(js.data, js.len, NULL, 0) == 0);
  lua_setglobal(L, "V");
  CHECK(lua_true("V.a == 1 and V.b == 'two' and V.c[1] == 3 and #V.c == 1 and "
                 "getmetatable(V) == nil and getmetatable(V.c) == ARRAY and "
                 "getmetatable(V.d.e) == ARRAY and next(V.d.e) == nil"));

  /* Decoded lists carry the marker: an empty decoded list re-encodes as []. */
  CHECK(decode_str("[]") == 0);
  CHECK(lua_getmetatable(L, -1));
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  CHECK(lua_rawequal(L, -1, -2));
  lua_pop(L, 2);
  CHECK(encode_top(0) == 0);
  CHECK_STR(js.data, "[]");
  lua_pop(L, 1);
  CHECK(decode_str(" { } ") == 0);
  CHECK(!lua_getmetatable(L, -1));
  CHECK(encode_top(0) == 0);
  CHECK_STR(js.data, "{}");
  lua_pop(L, 1);
  CHECK(decode_str("{\"a\":[],\"b\":[[],{}],\"c\":{\"d\":null},\"e\":[1,null,3]}") == 0);
  CHECK(lua_type(L, -1) == LUA_TTABLE);
  lua_setglobal(L, "V");
  CHECK(lua_true("getmetatable(V.a) == ARRAY and getmetatable(V.b[1]) == ARRAY and "
                 "getmetatable(V.b[2]) == nil and V.c.d == null and #V.e == 3 and "
                 "V.e[2] == null and V.e[3] == 3"));
  /* Re-encode: decoded nulls are not holes; empty lists stay lists. */
  push_expr("V.b");
  CHECK(encode_top(0) == 0);
  CHECK_STR(js.data, "[[],{}]");
  lua_pop(L, 1);
  push_expr("V.e");
  CHECK(encode_top(0) == 0);
  CHECK_STR(js.data, "[1,null,3]");
  lua_pop(L, 1);

  /* null decodes to a NULL light userdata, at top level and in a list. */
  CHECK(decode_str("null") == 0);
  CHECK(lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
  lua_pop(L, 1);
  CHECK(decode_str("[null]") == 0);
  lua_rawgeti(L, -1, 1);
  CHECK(lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
  lua_pop(L, 2);
  CHECK(decode_str("[true,false]") == 0);
  lua_setglobal(L, "V");
  CHECK(lua_true("V[1] == true and V[2] == false"));

  /* Nesting right at the limit encodes and decodes back. */
  CHECK(encode_expr("(function() local t = {} for i = 2, 200 do t = {t} end return t end)()", 0) ==
        0);
  CHECK(js.len == 400);
  CHECK(decode(js.data, js.len, NULL, 0) == 0);
  lua_pop(L, 1);
  expect_enc_error("(function() local t = {} for i = 2, 201 do t = {t} end return t end)()", 0,
                   "deep", NULL);
}

static void test_as_list(void) {
  expect_json("{}", 1, "[]");
  expect_json("{1, 2}", 1, "[1,2]");
  expect_json("setmetatable({}, ARRAY)", 1, "[]");
  expect_json("{{}}", 1, "[{}]"); /* only the outer value is forced */
  expect_enc_error("{a = 1}", 1, "list", NULL);
  expect_enc_error("5", 1, "expected a list", "number");
  expect_enc_error("'s'", 1, "expected a list", "string");
  expect_enc_error("nil", 1, "expected a list", "nil");
}

static void test_encode_errors(void) {
  expect_enc_error("{1, {a = print}}", 0, "[2].a", "function");
  expect_enc_error("{print}", 0, "[1]", "function");
  expect_enc_error("print", 0, "value", "function");
  expect_enc_error("{a = {b = {1, 2, coroutine.create(print)}}}", 0, "a.b[3]", "thread");
  expect_enc_error("{x = io.stdout}", 0, "x", "userdata");
  /* holes */
  expect_enc_error("(function() local t = {} t[1] = 1 t[3] = 3 return t end)()", 0, "holes",
                   NULL);
  expect_enc_error("{1, nil, 3}", 0, "holes", NULL);
  expect_enc_error("{n = {[2] = 'x'}}", 0, "n: list has holes", NULL);
  /* mixed keys */
  expect_enc_error("{1, a = 2}", 0, "mix", NULL);
  expect_enc_error("{{1, 2, k = 'v'}}", 0, "[1]: table mixes", NULL);
  /* bad keys */
  expect_enc_error("{[true] = 1}", 0, "boolean", NULL);
  expect_enc_error("{[1.5] = 1}", 0, "number key", NULL);
  expect_enc_error("{[0] = 1}", 0, "number key", NULL);
  expect_enc_error("{[-1] = 1}", 0, "number key", NULL);
  expect_enc_error("{[{}] = 1}", 0, "table key of type table", NULL);
  expect_enc_error("{[print] = 1}", 0, "function", NULL);
  /* a cycle hits the depth limit instead of recursing forever */
  expect_enc_error("(function() local t = {} t[1] = t return t end)()", 0, "deep", NULL);
  expect_enc_error("(function() local t = {} t.self = t return t end)()", 0, "cycle", NULL);
  expect_enc_error("(function() local a, b = {}, {} a.b = b b[1] = a return {a} end)()", 0,
                   "deep", NULL);
  /* non-NULL light userdata is not null */
  lua_pushlightuserdata(L, (void *)&t_pass);
  CHECK(encode_top(0) == SL_ECODEC);
  lua_pop(L, 1);
  CHECK(strstr(err, "userdata") != NULL);
  /* long keys in the path are truncated, not overflowed */
  expect_enc_error("{[string.rep('k', 300)] = {[string.rep('q', 300)] = {print}}}", 0, "function",
                   NULL);
  CHECK(strlen(err) < sizeof err);
  CHECK(strstr(err, "kkkk") == err);
  CHECK(lua_gettop(L) == 0);
}

static void test_decode_errors(void) {
  char *deep;
  expect_dec_error("[1,2", 4, NULL, 0, "unterminated");
  expect_dec_error("[1] x", 5, NULL, 0, "trailing");
  expect_dec_error("{} {}", 5, NULL, 0, "trailing");
  expect_dec_error("\"a\\qb\"", 6, NULL, 0, "bad escape");
  expect_dec_error("\"\\u12\"", 6, NULL, 0, "\\u escape");
  expect_dec_error("\"\\u12zz\"", 8, NULL, 0, "\\u escape");
  expect_dec_error("[1.2.3]", 7, NULL, 0, "bad number");
  expect_dec_error("[-]", 3, NULL, 0, "bad number");
  expect_dec_error("[1e]", 4, NULL, 0, "bad number");
  expect_dec_error("--1", 3, NULL, 0, "bad number");
  expect_dec_error("{\"\\u0000b\":3}", 13, NULL, 0, "missing attachment");
  expect_dec_error("{\"\\u0000b\":0}", 13, NULL, 0, "missing attachment");
  expect_dec_error("{\"\\u0000b\":1}", 13, "\1\0\0\0x", 5, "missing attachment");
  expect_dec_error("{\"\\u0000b\":-1}", 14, "\1\0\0\0x", 5, "missing attachment");
  expect_dec_error("{\"\\u0000b\":0.5}", 15, "\1\0\0\0x", 5, "missing attachment");
  expect_dec_error("{\"\\u0000b\":0,\"x\":1}", 19, "\1\0\0\0x", 5, "bytes reference");
  expect_dec_error("{\"\\u0000b\":\"x\"}", 15, "\1\0\0\0x", 5, NULL);
  expect_dec_error("", 0, NULL, 0, "unexpected end");
  expect_dec_error("   ", 3, NULL, 0, "unexpected end");
  expect_dec_error("[1,]", 4, NULL, 0, NULL);
  expect_dec_error("[1 2]", 5, NULL, 0, "expected ','");
  expect_dec_error("{\"a\" 1}", 7, NULL, 0, "expected ':'");
  expect_dec_error("{\"a\":1,}", 8, NULL, 0, "string key");
  expect_dec_error("{1:2}", 5, NULL, 0, "string key");
  expect_dec_error("{\"a\":1", 6, NULL, 0, "unterminated");
  expect_dec_error("\"abc", 4, NULL, 0, "unterminated string");
  expect_dec_error("\"abc\\", 5, NULL, 0, "unterminated string");
  expect_dec_error("\"\\u00e9", 7, NULL, 0, "unterminated string");
  expect_dec_error("tru", 3, NULL, 0, NULL);
  expect_dec_error("nul", 3, NULL, 0, NULL);
  expect_dec_error("fals", 4, NULL, 0, NULL);
  expect_dec_error("undefined", 9, NULL, 0, "unexpected character");
  expect_dec_error("'single'", 8, NULL, 0, "unexpected character");
  expect_dec_error("]", 1, NULL, 0, NULL);
  expect_dec_error("[1]]", 4, NULL, 0, "trailing");
  CHECK(strstr(err, "invalid JSON at byte 3") != NULL);
  /* the error message names the byte offset */
  expect_dec_error("[1, 2, @]", 9, NULL, 0, "at byte 7");
  /* deep nesting */
  deep = malloc(1000);
  memset(deep, '[', 500);
  memset(deep + 500, ']', 500);
  expect_dec_error(deep, 1000, NULL, 0, "deep");
  memset(deep, '{', 1);
  expect_dec_error(deep, 500, NULL, 0, NULL);
  {
    /* objects nested past the limit too */
    sl_buf b;
    int i;
    sl_buf_init(&b);
    for (i = 0; i < 500; i++) sl_buf_append(&b, "{\"a\":", 5);
    sl_buf_append(&b, "1", 1);
    for (i = 0; i < 500; i++) sl_buf_putc(&b, '}');
    expect_dec_error(b.data, b.len, NULL, 0, "deep");
    sl_buf_free(&b);
  }
  free(deep);
  CHECK(lua_gettop(L) == 0);
}

/* Valid JSON numbers longer than the decoder's 63-byte scratch (Python writes big
 * ints this way, e.g. json.dumps(10**70)) must still decode. */
static void test_long_numbers(void) {
  char text[200];
  int rc;
  text[0] = '1';
  memset(text + 1, '0', 70);
  text[71] = '\0'; /* 10^70: 71 digits */
  rc = decode_str(text);
  CHECKF(rc == 0, "decode of a 71-digit integer failed: %s", err);
  if (rc == 0) {
    CHECK(lua_tonumber(L, -1) == 1e70);
    lua_pop(L, 1);
  }
  snprintf(text, sizeof text, "[%s,1]", "1000000000000000000000000000000000000000000000000000000000000000000000");
  rc = decode_str(text);
  CHECKF(rc == 0, "decode of [<70 digits>,1] failed: %s", err);
  if (rc == 0) {
    lua_setglobal(L, "V");
    CHECK(lua_true("#V == 2 and V[1] == 1e69 and V[2] == 1"));
  }
  /* 2^256, as Python writes it */
  rc = decode_str("115792089237316195423570985008687907853269984665640564039457584007913129639936");
  CHECKF(rc == 0, "decode of 2**256 failed: %s", err);
  if (rc == 0) {
    CHECK(lua_tonumber(L, -1) == ldexp(1.0, 256));
    lua_pop(L, 1);
  }
}

static void test_large_list(void) {
  int rc;
  push_expr("(function() local t = {} for i = 1, 100000 do t[i] = (i % 2 == 0) and i * 1e7 "
            "or i / 7 end return t end)()");
  lua_setglobal(L, "A");
  push_expr("A");
  rc = encode_top(1);
  lua_pop(L, 1);
  CHECK(rc == 0);
  CHECK(js.len > 100000 && js.data[0] == '[' && js.data[js.len - 1] == ']');
  CHECK(decode(js.data, js.len, NULL, 0) == 0);
  lua_setglobal(L, "B");
  CHECK(lua_true("(function() if #B ~= 100000 or getmetatable(B) ~= ARRAY then return false end "
                 "for i = 1, 100000 do if A[i] ~= B[i] then return false end end "
                 "return true end)()"));
  run_lua("A = nil B = nil collectgarbage()");
  CHECK(lua_gettop(L) == 0);
}

/* Reads past the end of the JSON: the decoder must stay within [json, json+len). */
static void test_no_overread(void) {
  static const char *docs[] = {
      "{\"a\":[1,-2.5e3,true,false,null,NaN,-Infinity,Infinity,\"x\\u00e9\\ud83d\\ude00\\n\"],"
      "\"b\":{\"\\u0000b\":0}}",
      "[{\"\\u0000b\" : 0 }, \"\\ud83d\", 123456789012345678]",
      "{\"\\u0000b\":0}",
  };
  size_t d, k;
  int bad = 0;
  /* The bytes-reference path: input ends right after the ':'. */
  CHECKF(decode_guarded("{\"\\u0000b\":", 11, "\1\0\0\0x", 5),
         "decode of '{\"\\u0000b\":' read past the end of its input (child %s)", guard_how);
  CHECK(decode_str("{\"\\u0000b\":") == SL_ECODEC); /* in bounds here: a NUL follows */
  /* Every prefix of a few documents. */
  for (d = 0; d < sizeof docs / sizeof docs[0]; d++) {
    size_t n = strlen(docs[d]);
    for (k = 0; k <= n; k++) {
      if (!decode_guarded(docs[d], k, "\1\0\0\0x", 5)) {
        bad++;
        fprintf(stderr, "    decode read past the end (child %s) of: %.*s\n", guard_how, (int)k,
                docs[d]);
      }
    }
  }
  CHECKF(bad == 0, "%d truncated inputs made the decoder read past the end", bad);
}

/* Pickle sends a Lua string as str when it is UTF-8 and as bytes otherwise. The
 * check reads ASCII eight bytes at a time: put the byte that decides at every
 * offset around those words, and check the opcode the encoder chose. */
static void test_pickle_utf8(void) {
  static const struct { const char *tail; size_t n; int utf8; } tails[] = {
    { "", 0, 1 },           { "\xc3\xa9", 2, 1 },     { "\xf0\x9f\x90\x8d", 4, 1 },
    { "\xff", 1, 0 },        { "\xc3", 1, 0 },         { "\xed\xa0\x80", 3, 0 },
    { "\xc0\xaf", 2, 0 },     { "\xf4\x90\x80\x80", 4, 0 }, { "\xe0\x80\x80", 3, 0 },
  };
  char s[64];
  size_t pre, post, k;
  int wrong = 0;
  for (k = 0; k < sizeof tails / sizeof tails[0]; k++) {
    for (pre = 0; pre <= 17; pre++) {
      for (post = 0; post <= 9; post += 9) {
        size_t n = pre + tails[k].n + post;
        int want = tails[k].utf8 ? 0x8c : 'C'; /* SHORT_BINUNICODE, SHORT_BINBYTES */
        memset(s, 'a', pre);
        memcpy(s + pre, tails[k].tail, tails[k].n);
        memset(s + pre + tails[k].n, 'z', post);
        lua_pushlstring(L, s, n);
        js.len = at.len = 0;
        if (sl_codec_encode_fmt(L, -1, 0, SL_CODEC_PICKLE, &js, &at, err, sizeof err) ||
            js.len != n + 5 || (unsigned char)js.data[2] != want ||
            memcmp(js.data + 4, s, n) != 0) {
          fprintf(stderr, "  pickle of tail %lu after %lu ASCII bytes (+%lu): opcode %02x\n",
                  (unsigned long)k, (unsigned long)pre, (unsigned long)post,
                  js.len > 2 ? (unsigned char)js.data[2] : 0);
          wrong++;
        }
        lua_pop(L, 1);
      }
    }
  }
  CHECKF(wrong == 0, "%d strings pickled with the wrong type", wrong);
}

/* Python pickles an int as LONG1/LONG4: n bytes of little-endian two's complement.
 * The decoder must give the nearest double, rounded once (#11: a double
 * accumulator rounded the magnitude before the sign was applied, so
 * -281474976710657 arrived as -281474976710656). */
typedef __int128 i128;

static double pickled_long(i128 v, int extra_bytes) {
  unsigned char p[64];
  size_t n = 0, k = 0;
  i128 t = v;
  double got;
  char e[256];
  /* the shortest two's complement, as Python writes it, plus sign padding */
  do {
    n++;
    t >>= 8;
  } while (!((t == 0 && !((v >> (8 * n - 1)) & 1)) || (t == -1 && ((v >> (8 * n - 1)) & 1))));
  n += (size_t)extra_bytes;
  p[k++] = 0x80; p[k++] = 4;        /* PROTO 4 */
  p[k++] = 0x8a; p[k++] = (unsigned char)n; /* LONG1 */
  for (size_t i = 0; i < n; i++) p[k++] = (unsigned char)(i < 16 ? (v >> (8 * i)) & 0xff : (v < 0 ? 0xff : 0));
  p[k++] = '.';
  if (sl_codec_decode_pickle(L, (const char *)p, k, 0, e, sizeof e)) {
    fprintf(stderr, "decode_pickle failed: %s\n", e);
    return -12345.0;
  }
  got = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return got;
}

/* The double nearest to v, rounded once (half to even). */
static double nearest(i128 v) {
  if (v > -((i128)1 << 63) && v < ((i128)1 << 63)) return (double)(int64_t)v;
  /* beyond int64: the top 64 bits, with a sticky bit for the rest */
  {
    int neg = v < 0;
    unsigned __int128 m = neg ? (unsigned __int128)(-v) : (unsigned __int128)v;
    int shift = 0;
    while ((m >> shift) >> 64) shift++;
    uint64_t top = (uint64_t)(m >> shift);
    if (shift && (m & (((unsigned __int128)1 << shift) - 1))) top |= 1;
    double d = ldexp((double)top, shift);
    return neg ? -d : d;
  }
}

static void test_pickle_long(void) {
  int wrong = 0, cases = 0;
  for (int b = 0; b <= 120; b++) {
    for (int sign = -1; sign <= 1; sign += 2) {
      for (int off = -3; off <= 3; off++) {
        for (int extra = 0; extra <= 1; extra++) {
          i128 v = (i128)sign * (((i128)1 << b) + off);
          double want = nearest(v), got = pickled_long(v, extra);
          cases++;
          if (memcmp(&want, &got, sizeof want) != 0) {
            if (wrong++ < 8)
              fprintf(stderr, "  LONG1 of %s(2^%d%+d) (+%d pad bytes): got %.17g, want %.17g\n",
                      sign < 0 ? "-" : "", b, off, extra, got, want);
          }
        }
      }
    }
  }
  /* rounding that needs the bits below the top 64 (sticky) */
  {
    i128 v = ((i128)1 << 100) + ((i128)1 << 47) + 1; /* just above half an ulp */
    double want = ldexp(1.0, 100) + ldexp(1.0, 48), got = pickled_long(v, 0);
    cases++;
    if (got != want) {
      wrong++;
      fprintf(stderr, "  2^100+2^47+1: got %.17g, want %.17g\n", got, want);
    }
    got = pickled_long(-v, 0);
    cases++;
    if (got != -want) {
      wrong++;
      fprintf(stderr, "  -(2^100+2^47+1): got %.17g, want %.17g\n", got, -want);
    }
  }
  CHECKF(wrong == 0, "%d of %d pickled ints decoded to the wrong double", wrong, cases);
  CHECK(pickled_long(-281474976710657LL, 0) == -281474976710657.0);
  CHECK(pickled_long(-9007199254740991LL, 0) == -9007199254740991.0);
}

/* Found by tests/fuzz: the pickle reader took SETITEM on a list, APPEND on a dict
 * and tables as dict keys (a value no lookup could find), and the JSON reader
 * took strings that are not UTF-8 (indistinguishable from bytes once decoded). */
static void expect_pickle_error(const char *p, size_t n, const char *frag) {
  int rc = sl_codec_decode_pickle(L, p, n, 0, err, sizeof err);
  CHECKF(rc == SL_ECODEC, "pickle %.*s: rc %d, want SL_ECODEC", (int)n, p, rc);
  if (rc == 0) lua_pop(L, 1);
  CHECKF(strstr(err, frag) != NULL, "pickle: err '%s' lacks '%s'", err, frag);
}

/* Also found by tests/fuzz: a table fetched from the memo counted as height 1, so
 * shared references built a value the writer refuses as nested too deeply, or a
 * list that holds itself. n tuples, each holding the one before through the memo,
 * sit side by side in an outer list: the outer list is n + 2 tall. */
/* What decoding the pickle p[0..n) returns; the value, if any, is dropped. */
static int pickle_rc(const char *p, size_t n) {
  int rc = sl_codec_decode_pickle(L, p, n, 0, err, sizeof err);
  if (rc == 0) lua_pop(L, 1);
  return rc;
}

static int pickled_chain(int n) {
  char p[1200];
  size_t k = 0;
  int i;
  memcpy(p, "\x80\x04](]\x94", 6);
  k = 6;
  for (i = 1; i <= n; i++) {
    p[k++] = '(';
    p[k++] = 'h';
    p[k++] = (char)(i - 1);
    p[k++] = 't';
    p[k++] = (char)0x94;
  }
  p[k++] = 'e';
  p[k++] = '.';
  return pickle_rc(p, k);
}

/* X0 = [], Xk = (Xk-1, Xk-1): n levels stand for 2^n values in 4n bytes */
static int pickled_diamond(int n) {
  char p[1200];
  size_t k = 0;
  int i;
  memcpy(p, "\x80\x04]\x94", 4);
  k = 4;
  for (i = 1; i <= n; i++) {
    p[k++] = 'h'; /* Xk-1 is on top already: one more of it */
    p[k++] = (char)(i - 1);
    p[k++] = (char)0x86; /* TUPLE2 */
    p[k++] = (char)0x94;
  }
  p[k++] = '.';
  return pickle_rc(p, k);
}

static void test_fuzz_shared(void) {
  static char big[8000];
  size_t k = 0;
  int i;
  /* PROTO 4, ] MEMOIZE BINGET 0 APPEND STOP: a list appended to itself */
  expect_pickle_error("\x80\x04]\x94h\x00" "a.", 8, "holds itself");
  /* a dict that holds itself under a key */
  expect_pickle_error("\x80\x04}\x94\x8c\x01kh\x00s.", 11, "holds itself");
  CHECKF(pickled_chain(198) == 0, "a 200-tall shared chain: %s", err);
  CHECK(pickled_chain(199) == SL_ECODEC && strstr(err, "nested too deeply"));
  /* a table shared twice at once is not a cycle: [[x, x]] with x = [] */
  CHECKF(sl_codec_decode_pickle(L, "\x80\x04](]\x94h\x00" "e.", 10, 0, err, sizeof err) == 0,
         "a shared list: %s", err);
  lua_settop(L, 0);
  /* a pickle bomb: 40 levels of pairs stand for 2^40 values */
  CHECKF(pickled_diamond(10) == 0, "2^10 values from a diamond: %s", err);
  CHECK(pickled_diamond(40) == SL_ECODEC && strstr(err, "expand"));
  /* what Python writes for [x] * 1000 with x a list of 2,000 ints still reads */
  memcpy(big, "\x80\x04](]\x94(", 7);
  k = 7;
  for (i = 0; i < 2000; i++) big[k++] = 'K', big[k++] = 1;
  big[k++] = 'e';
  for (i = 1; i < 1000; i++) big[k++] = 'h', big[k++] = 0;
  big[k++] = 'e';
  big[k++] = '.';
  CHECKF(sl_codec_decode_pickle(L, big, k, 0, err, sizeof err) == 0 && lua_objlen(L, -1) == 1000,
         "[x] * 1000: %s", err);
  lua_settop(L, 0);
}

static void test_fuzz_findings(void) {
  /* PROTO 4, ]  ]  N  s  . : SETITEM into a list */
  expect_pickle_error("\x80\x04]]Ns.", 7, "SETITEMS without a dict");
  /* PROTO 4, }  N  a  . : APPEND onto a dict */
  expect_pickle_error("\x80\x04}Na.", 6, "APPENDS without a list");
  /* PROTO 4, }  ]  N  s  . : a list as a dict key */
  expect_pickle_error("\x80\x04}]Ns.", 7, "dict key must be");
  /* the same with a dict key: { {}: None } */
  expect_pickle_error("\x80\x04}}Ns.", 7, "dict key must be");
  /* and the good forms still decode */
  CHECK(sl_codec_decode_pickle(L, "\x80\x04}\x8c\x01kNs.", 9, 0, err, sizeof err) == 0 &&
        lua_istable(L, -1));
  lua_settop(L, 0);
  CHECK(sl_codec_decode_pickle(L, "\x80\x04]Na.", 6, 0, err, sizeof err) == 0);
  lua_settop(L, 0);
  /* raw bytes that are not UTF-8, in a string, a key, and after an escape */
  expect_dec_error("\"\xff\"", 3, NULL, 0, "not valid UTF-8");
  expect_dec_error("{\"\xbf\xbb\":1}", 8, NULL, 0, "not valid UTF-8");
  expect_dec_error("[\"a\\n\xc3\"]", 8, NULL, 0, "not valid UTF-8");
  CHECK(decode_str("\"\xc3\xa9\\n\"") == 0);
  lua_settop(L, 0);
  test_fuzz_shared();
}

int main(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  sl_codec_open(L);
  sl_buf_init(&js);
  sl_buf_init(&at);
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setglobal(L, "ARRAY");
  lua_pushlightuserdata(L, (void *)&sl_codec_bytes_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setglobal(L, "BYTES");
  lua_pushlightuserdata(L, NULL);
  lua_setglobal(L, "null");
  run_lua("function bytes(s) return setmetatable({s}, BYTES) end");

  test_open();
  test_integers();
  test_floats();
  test_nonfinite();
  test_strings_encode();
  test_strings_decode();
  test_bytes();
  test_pickle_utf8();
  test_pickle_long();
  test_tables();
  test_as_list();
  test_encode_errors();
  test_decode_errors();
  test_long_numbers();
  test_large_list();
  test_no_overread();
  test_fuzz_findings();
  CHECK(lua_gettop(L) == 0);

  lua_close(L);
  sl_buf_free(&js);
  sl_buf_free(&at);
  TEST_END();
}
