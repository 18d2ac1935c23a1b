/* wire.c: a small validating JSON reader for worker meta objects (see wire.h).
 *
 * Meta objects are small (an error's traceback is the largest part), so each
 * question walks the whole object again: a hello is read twice and an error once
 * per call, which costs less than building a tree would. */
#include "wire.h"
#include "error.h"

#include <string.h>

typedef struct scan {
  const unsigned char *p, *end;
} scan;

/* What decoding a string met that a C string cannot hold. */
enum { S_OVERFLOW = 1, S_NUL = 2, S_SURROGATE = 4 };

static void ws(scan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
    s->p++;
}

static int literal(scan *s, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0) return -1;
  s->p += n;
  return 0;
}

static int hex4(scan *s, unsigned *out) {
  unsigned v = 0;
  int i;
  if (s->end - s->p < 4) return -1;
  for (i = 0; i < 4; i++) {
    unsigned c = s->p[i];
    if (c >= '0' && c <= '9') v = v * 16 + (c - '0');
    else if (c >= 'a' && c <= 'f') v = v * 16 + (c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v = v * 16 + (c - 'A' + 10);
    else return -1;
  }
  s->p += 4;
  *out = v;
  return 0;
}

static void put(char *out, size_t cap, size_t *len, int *flags, const char *b, size_t n) {
  if (!out) return;
  if (*len + n >= cap) {
    *flags |= S_OVERFLOW;
    return;
  }
  memcpy(out + *len, b, n);
  *len += n;
}

static void put_cp(char *out, size_t cap, size_t *len, int *flags, unsigned cp) {
  char b[4];
  size_t n;
  if (cp == 0) *flags |= S_NUL;
  if (cp < 0x80) {
    b[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    b[0] = (char)(0xc0 | (cp >> 6));
    b[1] = (char)(0x80 | (cp & 0x3f));
    n = 2;
  } else if (cp < 0x10000) {
    b[0] = (char)(0xe0 | (cp >> 12));
    b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    b[2] = (char)(0x80 | (cp & 0x3f));
    n = 3;
  } else {
    b[0] = (char)(0xf0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    b[3] = (char)(0x80 | (cp & 0x3f));
    n = 4;
  }
  put(out, cap, len, flags, b, n);
}

/* A string at s->p. With out, its decoded bytes go there (NUL-terminated when
 * nothing overflowed). Returns 0, or -1 when it is not a JSON string. Lone
 * surrogates are legal JSON (Python writes them) but are flagged. */
static int string(scan *s, char *out, size_t cap, size_t *len, int *flags) {
  *len = 0;
  *flags = 0;
  if (s->p >= s->end || *s->p != '"') return -1;
  s->p++;
  for (;;) {
    const unsigned char *run = s->p;
    while (s->p < s->end && *s->p != '"' && *s->p != '\\' && *s->p >= 0x20) s->p++;
    put(out, cap, len, flags, (const char *)run, (size_t)(s->p - run));
    if (s->p >= s->end || *s->p < 0x20) return -1;
    if (*s->p == '"') {
      s->p++;
      if (out && !(*flags & S_OVERFLOW)) out[*len] = '\0';
      return 0;
    }
    s->p++; /* the backslash */
    if (s->p >= s->end) return -1;
    switch (*s->p++) {
      case '"': put(out, cap, len, flags, "\"", 1); break;
      case '\\': put(out, cap, len, flags, "\\", 1); break;
      case '/': put(out, cap, len, flags, "/", 1); break;
      case 'b': put(out, cap, len, flags, "\b", 1); break;
      case 'f': put(out, cap, len, flags, "\f", 1); break;
      case 'n': put(out, cap, len, flags, "\n", 1); break;
      case 'r': put(out, cap, len, flags, "\r", 1); break;
      case 't': put(out, cap, len, flags, "\t", 1); break;
      case 'u': {
        unsigned cp, lo;
        if (hex4(s, &cp)) return -1;
        if (cp >= 0xd800 && cp <= 0xdbff && s->end - s->p >= 6 && s->p[0] == '\\' &&
            s->p[1] == 'u') {
          scan t = *s;
          t.p += 2;
          if (hex4(&t, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
            *s = t;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
        }
        if (cp >= 0xd800 && cp <= 0xdfff) *flags |= S_SURROGATE;
        else put_cp(out, cap, len, flags, cp);
        break;
      }
      default:
        return -1;
    }
  }
}

static int digits(scan *s) {
  const unsigned char *start = s->p;
  while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
  return s->p > start ? 0 : -1;
}

/* A number; Python's json also writes NaN, Infinity and -Infinity. */
static int number(scan *s) {
  if (*s->p == 'N') return literal(s, "NaN");
  if (*s->p == '-') s->p++;
  if (s->p < s->end && *s->p == 'I') return literal(s, "Infinity");
  if (s->p < s->end && *s->p == '0') s->p++;
  else if (digits(s)) return -1;
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    if (digits(s)) return -1;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (digits(s)) return -1;
  }
  return 0;
}

static int value(scan *s, int depth);

/* The members of an object or the elements of an array, after its opening bracket. */
static int members(scan *s, int depth, int object) {
  char close = object ? '}' : ']';
  size_t len;
  int flags;
  ws(s);
  if (s->p < s->end && *s->p == close) {
    s->p++;
    return 0;
  }
  for (;;) {
    if (object) {
      if (string(s, NULL, 0, &len, &flags)) return -1;
      ws(s);
      if (s->p >= s->end || *s->p != ':') return -1;
      s->p++;
      ws(s);
    }
    if (value(s, depth + 1)) return -1;
    ws(s);
    if (s->p >= s->end) return -1;
    if (*s->p == close) {
      s->p++;
      return 0;
    }
    if (*s->p != ',') return -1;
    s->p++;
    ws(s);
  }
}

static int value(scan *s, int depth) {
  size_t len;
  int flags;
  if (s->p >= s->end) return -1;
  switch (*s->p) {
    case '{':
    case '[': {
      int object = *s->p == '{';
      if (depth >= SL_WIRE_MAX_DEPTH) return -1;
      s->p++;
      return members(s, depth, object);
    }
    case '"': return string(s, NULL, 0, &len, &flags);
    case 't': return literal(s, "true");
    case 'f': return literal(s, "false");
    case 'n': return literal(s, "null");
    default:
      if (*s->p == '-' || *s->p == 'N' || *s->p == 'I' || (*s->p >= '0' && *s->p <= '9'))
        return number(s);
      return -1;
  }
}

int sl_wire_member(const char *str, size_t n, const char *key, const char **val,
                   size_t *vlen) {
  scan s;
  char kbuf[64];
  size_t klen, want = strlen(key);
  int flags, found = 0;
  s.p = (const unsigned char *)str;
  s.end = s.p + n;
  ws(&s);
  if (s.p >= s.end || *s.p != '{') return SL_EPROTO;
  s.p++;
  ws(&s);
  if (s.p < s.end && *s.p == '}') {
    s.p++;
  } else {
    for (;;) {
      const unsigned char *v;
      if (string(&s, kbuf, sizeof kbuf, &klen, &flags)) return SL_EPROTO;
      ws(&s);
      if (s.p >= s.end || *s.p != ':') return SL_EPROTO;
      s.p++;
      ws(&s);
      v = s.p;
      if (value(&s, 1)) return SL_EPROTO;
      if (!flags && klen == want && memcmp(kbuf, key, want) == 0) {
        *val = (const char *)v;
        *vlen = (size_t)(s.p - v);
        found = 1;
      }
      ws(&s);
      if (s.p >= s.end) return SL_EPROTO;
      if (*s.p == '}') {
        s.p++;
        break;
      }
      if (*s.p != ',') return SL_EPROTO;
      s.p++;
      ws(&s);
    }
  }
  ws(&s);
  return s.p == s.end ? found : SL_EPROTO;
}

int sl_wire_string(const char *v, size_t n, char *out, size_t cap) {
  scan s;
  size_t len;
  int flags;
  if (cap == 0) return SL_EPROTO;
  s.p = (const unsigned char *)v;
  s.end = s.p + n;
  if (string(&s, out, cap, &len, &flags) || s.p != s.end || flags) return SL_EPROTO;
  return (int)len;
}

int sl_wire_array_has(const char *v, size_t n, const char *str) {
  scan s;
  char buf[64];
  size_t len, want = strlen(str);
  int flags, found = 0;
  s.p = (const unsigned char *)v;
  s.end = s.p + n;
  if (s.p >= s.end || *s.p != '[') return 0;
  s.p++;
  ws(&s);
  if (s.p < s.end && *s.p == ']') return 0;
  for (;;) {
    if (s.p < s.end && *s.p == '"') {
      if (string(&s, buf, sizeof buf, &len, &flags)) return 0;
      if (!flags && len == want && memcmp(buf, str, want) == 0) found = 1;
    } else if (value(&s, 1)) {
      return 0;
    }
    ws(&s);
    if (s.p >= s.end) return 0;
    if (*s.p == ']') return found;
    if (*s.p != ',') return 0;
    s.p++;
    ws(&s);
  }
}

int sl_wire_error_kind(const char *meta, size_t n) {
#define XX(code) SL_##code,
  static const int kinds[] = {SL_WIRE_WORKER_KINDS(XX)};
#undef XX
  const char *v;
  size_t vlen, i;
  char kind[32];
  if (sl_wire_member(meta, n, "kind", &v, &vlen) != 1) return SL_EPROTO;
  if (sl_wire_string(v, vlen, kind, sizeof kind) < 0) return SL_EPROTO;
  for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (strcmp(kind, sl_err_name(kinds[i])) == 0) return kinds[i];
  return SL_EPROTO;
}
