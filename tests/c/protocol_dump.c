/* protocol_dump.c: prints, as JSON, the protocol constants that the Python worker
 * re-declares (pyworkers/slither_worker/protocol.py), taken from the C definitions
 * themselves; tests/py/test_protocol.py compares the two.
 *
 * The store's segment header and directory header offsets are private macros of
 * store.c, so this file includes store.c itself (and links nothing else) to read
 * them. The few layout facts that store.c writes as bare numbers (the slot size,
 * the directory's header fields and an entry's name and path) are measured from a
 * real store made here, so the dump reports what the store code does, not what a
 * copy of it says. Output names are the C names without their SL_ prefix; store.c's
 * private HDR and H_* take a SEG_ prefix. */
#include "store.c" /* first: it sets _GNU_SOURCE before any system header */

#include "error.h"
#include "frame.h"
#include "wire.h"

#include <stdio.h>

static int first = 1;

static void num(const char *name, long long v) {
  printf("%s\n    \"%s\": %lld", first ? "" : ",", name, v);
  first = 0;
}

static void die(const char *what) {
  fprintf(stderr, "protocol_dump: %s\n", what);
  exit(1);
}

/* The one 4-aligned offset below n at which the u32 v sits, or die. */
static long find_u32(const char *p, size_t n, uint32_t v, long skip, const char *what) {
  long at = -1;
  size_t o;
  for (o = 0; o + 4 <= n; o += 4) {
    if ((long)o == skip || *U32(p, o) != v) continue;
    if (at >= 0) die(what);
    at = (long)o;
  }
  if (at < 0) die(what);
  return at;
}

/* The offset in an entry of n bytes at which the NUL-terminated field s starts. */
static long find_field(const char *e, size_t n, const char *s, const char *what) {
  size_t len = strlen(s) + 1, o;
  for (o = 0; o + len <= n; o++)
    if ((o == 0 || e[o - 1] == 0) && memcmp(e + o, s, len) == 0) return (long)o;
  die(what);
  return -1;
}

/* The length field of the value word of key k in the bag table (index 1). */
static uint64_t bag_word_len(sl_store *s, const char *k, size_t kl) {
  const char *b = s->tables[1].cur->base;
  int64_t i = seg_find(b, sl_crc32(k, kl), k, kl, 0);
  if (i < 0) die("a key put to the bag table is not there");
  return slot(b, (uint32_t)i)[2] & 0xffffffffu;
}

static void store_layout(void) {
  static const char *const names[] = { "protocol_dump_table_a", "protocol_dump_table_b",
                                       "protocol_dump_table_c" };
  static const int types[] = { SL_TABLE_SET, SL_TABLE_BAG, SL_TABLE_SET };
  char err[256], before[DIR_HDR], sname[64];
  sl_store s;
  sl_store_shadow sh;
  const char *seg, *e;
  uint64_t heap_off, cap;
  long seq = -1;
  size_t o;

  snprintf(sname, sizeof sname, "protocol_dump_%d", (int)getpid());
  if (sl_store_create(&s, sname, 3, names, types, err, sizeof err)) die(err);

  seg = s.tables[0].cur->base;
  heap_off = *U64(seg, H_HEAP_OFF);
  cap = *U32(seg, H_CAP);
  if (!cap || (heap_off - HDR) % cap) die("the slot size does not divide the slot area");
  num("SEG_SLOT", (long long)((heap_off - HDR) / cap));

  num("DIR_H_MAGIC", find_u32(s.dir, DIR_HDR, SL_DIR_MAGIC, -1, "the directory's magic"));
  num("DIR_H_NTABLES", find_u32(s.dir, DIR_HDR, 3, -1, "the directory's table count"));
  /* the directory's sequence word is the u64 that a swap of every table moves on */
  memcpy(before, s.dir, DIR_HDR);
  if (sl_store_shadow_begin(&s, &sh)) die("cannot begin a reload");
  sl_store_shadow_commit(&s, &sh);
  for (o = 0; o + 8 <= DIR_HDR; o += 8) {
    if (*U64(s.dir, o) == *U64(before, o)) continue;
    if (seq >= 0 || *U64(s.dir, o) != *U64(before, o) + 2) die("the directory's sequence");
    seq = (long)o;
  }
  if (seq < 0) die("the directory's sequence did not move on a reload");
  num("DIR_H_SEQ", seq);

  e = s.dir + DIR_HDR + DIR_ENTRY; /* the second entry: also checks the stride */
  num("DIR_E_NAME", find_field(e, DIR_ENTRY, names[1], "a directory entry's table name"));
  num("DIR_E_PATH",
      find_field(e, DIR_ENTRY, s.tables[1].cur->path, "a directory entry's segment path"));

  /* a bag's value word spans the list's header and its entries: lists of one and
   * two values give the entry's size and the header's */
  {
    char k[8];
    size_t kl = sl_store_key_str(k, "k", 1);
    sl_kv v1 = { k, kl, "x", 1 }, v2 = { k, kl, "y", 1 };
    uint64_t l1, l2;
    if (sl_store_write(&s, 1, &v1, 1)) die("cannot put to a bag");
    l1 = bag_word_len(&s, k, kl);
    if (sl_store_write(&s, 1, &v2, 1)) die("cannot put to a bag");
    l2 = bag_word_len(&s, k, kl);
    if (l2 <= l1 || l1 < l2 - l1) die("a bag list's length");
    num("SEG_BAG_HDR", (long long)(l1 - (l2 - l1)));
    num("SEG_BAG_ENTRY", (long long)(l2 - l1));
  }
  sl_store_destroy(&s);
}

int main(void) {
  printf("{\n  \"constants\": {");
#define XX(name, value) num("FRAME_" #name, SL_FRAME_##name);
  SL_FRAME_KIND_MAP(XX)
#undef XX
#define XX(name, value) num("FRAME_FLAG_" #name, SL_FRAME_FLAG_##name);
  SL_FRAME_FLAG_MAP(XX)
#undef XX
  num("FRAME_PREFIX", SL_FRAME_PREFIX);

  num("SEG_MAGIC", SL_SEG_MAGIC);
  num("DIR_MAGIC", SL_DIR_MAGIC);
  num("TABLE_SET", SL_TABLE_SET);
  num("TABLE_ORDERED_SET", SL_TABLE_ORDERED_SET);
  num("TABLE_BAG", SL_TABLE_BAG);
  num("STORE_NAME_MAX", SL_STORE_NAME_MAX);
  num("SEG_PATH_MAX", SL_SEG_PATH_MAX);
  num("SEG_HDR", HDR);
  num("SEG_H_MAGIC", H_MAGIC);
  num("SEG_H_TYPE", H_TYPE);
  num("SEG_H_SEQ", H_SEQ);
  num("SEG_H_RETIRED", H_RETIRED);
  num("SEG_H_CAP", H_CAP);
  num("SEG_H_COUNT", H_COUNT);
  num("SEG_H_HEAP_OFF", H_HEAP_OFF);
  num("SEG_H_HEAP_SIZE", H_HEAP_SIZE);
  num("SEG_H_HEAP_USED", H_HEAP_USED);
  num("SEG_H_NVALS", H_NVALS);
  num("SEG_H_GARBAGE", H_GARBAGE);
  num("SEG_H_USED_SLOTS", H_USED_SLOTS);
  num("DIR_HDR", DIR_HDR);
  num("DIR_ENTRY", DIR_ENTRY);
  store_layout();
  printf("\n  },\n  \"errors\": {");

  first = 1;
#define XX(code, name, msg)                                       \
  printf("%s\n    \"%s\": \"%s\"", first ? "" : ",", #code, name);  \
  first = 0;
  SL_ERRNO_MAP(XX)
#undef XX
  printf("\n  },\n  \"worker_kinds\": [");
  first = 1;
#define XX(code)                                                   \
  printf("%s\"%s\"", first ? "" : ", ", sl_err_name(SL_##code));   \
  first = 0;
  SL_WIRE_WORKER_KINDS(XX)
#undef XX
  printf("]\n}\n");
  return 0;
}
