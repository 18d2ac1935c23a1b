/* test_wire.c: the worker meta reader against what Python's json writes (spaces,
 * any key order, escapes), against text that only looks right, and against
 * truncated, mutated and random bytes, which must give an error and nothing else. */
#include "error.h"
#include "test.h"
#include "wire.h"

#include <stdint.h>
#include <stdlib.h>

static int kind_of(const char *s) { return sl_wire_error_kind(s, strlen(s)); }

static void test_error_kinds(void) {
  /* what the worker writes today */
  CHECK(kind_of("{\"kind\": \"import\", \"type\": \"LookupError\", \"message\": \"m\", "
                "\"traceback\": \"\", \"worker\": \"w/w1\", \"pid\": 12}") == SL_EIMPORT);
  CHECK(kind_of("{\"kind\": \"result_mismatch\", \"type\": \"ValueError\"}") == SL_EMISMATCH);
  CHECK(kind_of("{\"kind\": \"python\"}") == SL_EPYTHON);
  /* the same meaning, written differently */
  CHECK(kind_of("{\"kind\":\"import\"}") == SL_EIMPORT);
  CHECK(kind_of(" \n{ \"type\" : \"X\" ,\r\n\t\"kind\" :\"result_mismatch\" } \n") ==
        SL_EMISMATCH);
  CHECK(kind_of("{\"kind\": \"imp\\u006frt\"}") == SL_EIMPORT);
  CHECK(kind_of("{\"\\u006bind\": \"import\"}") == SL_EIMPORT);
  CHECK(kind_of("{\"kind\": \"python\", \"kind\": \"import\"}") == SL_EIMPORT); /* last wins */
  CHECK(kind_of("{\"a\": NaN, \"b\": -Infinity, \"c\": Infinity, \"d\": -1.5e-3, \"e\": 0, "
                "\"f\": [1, {\"g\": [true, false, null]}], \"kind\": \"python\"}") ==
        SL_EPYTHON);
  CHECK(kind_of("{\"message\": \"\\ud83d\\ude00 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\", "
                "\"kind\": \"python\"}") == SL_EPYTHON);
  /* lone surrogates are legal JSON (Python writes them) where they are not read */
  CHECK(kind_of("{\"message\": \"\\udc80\", \"kind\": \"python\"}") == SL_EPYTHON);
}

static void test_error_kinds_refused(void) {
  static const char *bad[] = {
      "",
      "garbage",
      "{\"kind\": \"import\"",
      "{\"kind\": \"import\",}",
      "{\"kind\": 5}",
      "{\"kind\": null}",
      "{\"kind\": \"timeout\"}",     /* engine kinds are not the worker's to give */
      "{\"kind\": \"worker_crashed\"}",
      "{\"kind\": \"Import\"}",
      "{\"kind\": \"import \"}",
      "{}",
      "{\"message\": \"x\"}",
      "{\"a\": {\"kind\": \"import\"}}", /* only the top level counts */
      "[\"kind\", \"import\"]",
      "\"kind\"",
      "{\"kind\": \"import\"} trailing",
      "{\"kind\": \"import\"}{}",
      "{'kind': 'import'}",
      "{kind: \"import\"}",
      "{\"kind\" \"import\"}",
      "{\"kind\": \"imp\\u0000ort\"}",
      "{\"kind\": \"imp\\xort\"}",
      "{\"kind\": \"imp\\u00zzrt\"}",
      "{\"kind\": \"im\nport\"}",
      "{\"kind\": \"import\", \"n\": 01}",
      "{\"kind\": \"import\", \"n\": 1.}",
      "{\"kind\": \"import\", \"n\": -}",
      "{\"kind\": \"import\", \"n\": 1e}",
      "{\"kind\": \"import\", \"n\": tru}",
      "{\"kind\": \"import\", \"n\": [1 2]}",
      "{\"kind\": \"\\ud83d\"}",
  };
  size_t i;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECKF(kind_of(bad[i]) == SL_EPROTO, "meta %zu: %s", i, bad[i]);
  /* a NUL byte inside the text */
  CHECK(sl_wire_error_kind("{\"kind\": \"import\"}\0", 19) == SL_EPROTO);
  CHECK(sl_wire_error_kind("{\"kind\": \"imp\0rt\"}", 18) == SL_EPROTO);
}

static void test_depth(void) {
  /* deep nesting ends at the limit without recursing further */
  size_t n = 200000, i;
  char *s = malloc(n + 32);
  strcpy(s, "{\"kind\": \"python\", \"x\": ");
  for (i = strlen(s); i < n; i++) s[i] = '[';
  s[n] = '\0';
  CHECK(kind_of(s) == SL_EPROTO);
  free(s);
  {
    /* at the limit it is read */
    char ok[256];
    size_t k = 0;
    int d;
    k += (size_t)sprintf(ok + k, "{\"x\": ");
    for (d = 1; d < SL_WIRE_MAX_DEPTH; d++) ok[k++] = '[';
    for (d = 1; d < SL_WIRE_MAX_DEPTH; d++) ok[k++] = ']';
    sprintf(ok + k, ", \"kind\": \"import\"}");
    CHECK(kind_of(ok) == SL_EIMPORT);
  }
}

static void test_strings(void) {
  char out[16];
  const char *v;
  size_t vlen;
  const char *hello = "{\"name\": \"pickle\", \"executable\": \"/usr/bin/py\\u00e9\", "
                      "\"codecs\": [\"pickle\", \"json\"], \"pid\": 4}";
  CHECK(sl_wire_member(hello, strlen(hello), "executable", &v, &vlen) == 1);
  CHECK(sl_wire_string(v, vlen, out, sizeof out) == 13);
  CHECK_STR(out, "/usr/bin/py\xc3\xa9");
  CHECK(sl_wire_string(v, vlen, out, 13) == SL_EPROTO); /* does not fit with its NUL */
  CHECK(sl_wire_member(hello, strlen(hello), "missing", &v, &vlen) == 0);
  CHECK(sl_wire_member(hello, strlen(hello), "pid", &v, &vlen) == 1);
  CHECK(vlen == 1 && v[0] == '4');
  CHECK(sl_wire_string(v, vlen, out, sizeof out) == SL_EPROTO); /* not a string */
  CHECK(sl_wire_string("\"\\ud83d\\ude00\"", 14, out, sizeof out) == 4);
  CHECK_STR(out, "\xf0\x9f\x98\x80");
  CHECK(sl_wire_string("\"\\ud83d\"", 8, out, sizeof out) == SL_EPROTO);
  CHECK(sl_wire_string("\"a\\u0000b\"", 10, out, sizeof out) == SL_EPROTO);
  CHECK(sl_wire_string("\"ab", 3, out, sizeof out) == SL_EPROTO);
}

static int offers(const char *hello) {
  const char *v;
  size_t vlen;
  return sl_wire_member(hello, strlen(hello), "codecs", &v, &vlen) == 1 &&
         sl_wire_array_has(v, vlen, "pickle");
}

static void test_codecs(void) {
  CHECK(offers("{\"codecs\": [\"pickle\", \"json\"]}"));
  CHECK(offers("{\"codecs\":[\"json\",\"pick\\u006ce\"]}"));
  CHECK(!offers("{\"codecs\": [\"json\"]}"));
  CHECK(!offers("{\"codecs\": \"pickle\"}"));
  CHECK(!offers("{\"codecs\": [\"xpickle\", \"pickle2\", [\"pickle\"]]}"));
  /* the word elsewhere in the hello is not an offer */
  CHECK(!offers("{\"name\": \"pickle\", \"executable\": \"/opt/\\\"pickle\\\"/python\"}"));
  CHECK(!offers("{\"codecs\": [\"pickle\", \"json\"]"));
}

/* Every prefix, and many random one-byte changes, of a real hello and a real
 * error meta: nothing crashes, and the answers stay in their sets. */
static void test_mutations(void) {
  static const char *seeds[] = {
      "{\"name\": \"test/w1\", \"pid\": 4242, \"python\": \"3.11.2\", \"implementation\": "
      "\"CPython\", \"executable\": \"/usr/bin/python3\", \"free_threaded\": false, "
      "\"gil_enabled\": true, \"threads\": 1, \"codecs\": [\"pickle\", \"json\"]}",
      "{\"kind\": \"import\", \"type\": \"ModuleNotFoundError\", \"message\": \"module 'x' "
      "not found\", \"traceback\": \"Traceback (most recent call last):\\n  File \\\"a.py\\\""
      "\\n\", \"worker\": \"test/w1\", \"pid\": 17}",
  };
  static const char alphabet[] = "{}[]\":,\\u0123456789abcdefntrl-+.eE \n\t\x01\xff";
  uint32_t seed = 12345;
  size_t si;
  for (si = 0; si < 2; si++) {
    const char *s = seeds[si];
    size_t n = strlen(s), i;
    char *buf = malloc(n + 1);
    CHECK(sl_wire_member(s, n, "pid", &(const char *){0}, &(size_t){0}) == 1);
    for (i = 0; i < n; i++) {
      const char *v;
      size_t vlen;
      /* a whole object never ends early: every strict prefix is refused */
      CHECKF(sl_wire_member(s, i, "pid", &v, &vlen) == SL_EPROTO, "prefix %zu", i);
      CHECKF(sl_wire_error_kind(s, i) == SL_EPROTO, "prefix %zu", i);
    }
    for (i = 0; i < 200000; i++) {
      const char *v;
      size_t vlen;
      int rc, k;
      char out[64];
      memcpy(buf, s, n + 1);
      for (k = 0; k < 3; k++) {
        seed = seed * 1103515245u + 12345u;
        buf[(seed >> 8) % n] = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
      }
      rc = sl_wire_error_kind(buf, n);
      CHECK(rc == SL_EPROTO || rc == SL_EPYTHON || rc == SL_EIMPORT || rc == SL_EMISMATCH);
      rc = sl_wire_member(buf, n, "executable", &v, &vlen);
      CHECK(rc == SL_EPROTO || rc == 0 || rc == 1);
      if (rc == 1) {
        CHECK(v >= buf && v + vlen <= buf + n);
        rc = sl_wire_string(v, vlen, out, sizeof out);
        CHECK(rc == SL_EPROTO || (rc >= 0 && rc < (int)sizeof out && out[rc] == '\0'));
      }
      if (sl_wire_member(buf, n, "codecs", &v, &vlen) == 1) {
        rc = sl_wire_array_has(v, vlen, "pickle");
        CHECK(rc == 0 || rc == 1);
      }
    }
    free(buf);
  }
  /* random bytes */
  {
    char buf[64];
    size_t i, k;
    for (i = 0; i < 200000; i++) {
      int rc;
      size_t n = i % sizeof buf;
      for (k = 0; k < n; k++) {
        seed = seed * 1103515245u + 12345u;
        buf[k] = (i & 1) ? (char)(seed >> 16) : alphabet[(seed >> 20) % (sizeof alphabet - 1)];
      }
      rc = sl_wire_error_kind(buf, n);
      CHECK(rc == SL_EPROTO || rc == SL_EPYTHON || rc == SL_EIMPORT || rc == SL_EMISMATCH);
    }
  }
}

int main(void) {
  test_error_kinds();
  test_error_kinds_refused();
  test_depth();
  test_strings();
  test_codecs();
  test_mutations();
  TEST_END();
}
