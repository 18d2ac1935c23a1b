/* wire.h: reading the JSON that workers write in frame meta (hello, errors).
 *
 * Worker JSON is parsed, never matched as text: Python's json module puts spaces
 * after colons, may reorder keys and escapes what it likes, and a misbehaving
 * worker may send anything at all. The reader validates the whole object before
 * it answers, takes no allocation, nests at most SL_WIRE_MAX_DEPTH deep and never
 * reads outside the bytes it was given. Only the top level of an object is
 * searched; values are returned as spans of the input. */
#ifndef SL_WIRE_H
#define SL_WIRE_H

#include <stddef.h>

#define SL_WIRE_MAX_DEPTH 32

/* Find member `key` of the JSON object s[0..n). Returns 1 with the value's text in
 * *val, *vlen; 0 when the object has no such member; SL_EPROTO when s is not one
 * well-formed JSON object (surrounding whitespace aside). With duplicate keys the
 * last one counts, as in Python. */
int sl_wire_member(const char *s, size_t n, const char *key, const char **val, size_t *vlen);

/* Decode the JSON string v[0..n) (quotes included) into out as UTF-8 with a
 * terminating NUL. Returns its length, or SL_EPROTO when v is not a string, holds
 * an unpaired surrogate or a NUL, or does not fit in cap bytes. */
int sl_wire_string(const char *v, size_t n, char *out, size_t cap);

/* 1 when the JSON value v[0..n) is an array holding the string s, else 0. */
int sl_wire_array_has(const char *v, size_t n, const char *s);

/* The error kinds a worker may report in an ERROR frame (error.h codes without
 * SL_); tests/py/test_protocol.py holds the worker to this list. */
#define SL_WIRE_WORKER_KINDS(XX) XX(EPYTHON) XX(EIMPORT) XX(EMISMATCH) XX(ECODEC)

/* The code of an ERROR frame's meta: one of SL_WIRE_WORKER_KINDS; SL_EPROTO when
 * the meta is not a JSON object whose "kind" is one of them. */
int sl_wire_error_kind(const char *meta, size_t n);

#endif
