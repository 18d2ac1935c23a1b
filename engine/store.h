/* store.h: engine-owned tables in shared memory, read without locks.
 *
 * Each table lives in one segment: a file in /dev/shm (sl_store_shm_dir) mapped by the engine
 * read-write and by Python workers read-only. The segment is laid out with
 * offsets, never pointers:
 *
 *   header (128 bytes)   magic, type, seq, retired, cap, count, heap offset/size...
 *   slots  cap x 24      { hash, key word, value word }, each an atomic u64
 *   heap                 key and value bytes, append-only
 *
 * A key or value word packs (offset << 32 | length) into the heap. The heap is
 * append-only: bytes are written before the word that publishes them (a release
 * store), so a reader that loads a word (acquire) always finds whole bytes, and
 * single reads need no lock and no retry. A key word of 0 is an empty slot; a value
 * word of 0 is a deleted key. A bag's value word points at a list blob
 * ([u32 capacity][u32 off, u32 len] x capacity, then the writer's hash of the
 * values) and its length says how many entries are the list (4 + 8 n). A put
 * writes the next entry in place, past the length any word has published, then
 * publishes it with a new length: bytes a published word covers still never
 * change. A full blob is copied to one of twice the capacity, so a put is O(1)
 * amortised; the writer finds duplicates through the hash, which readers skip.
 *
 * Writes are serialized by a mutex per store. A write that spans keys (put_many)
 * runs inside the header's sequence counter (odd while writing): a reader of
 * several keys (get_many) retries when it changed, so it sees all of a put_many or
 * none of it. Space is reclaimed by writing a new segment with only the live
 * entries and swapping it in (the same move as reload); the old segment is marked
 * retired and unlinked, and unmapped once no reader of this process can hold it
 * (see sl_seg_pin), so a reader holding it still reads a whole, older snapshot.
 *
 * Keys are strings ('s' + bytes) or numbers ('n' + 8-byte double); values are
 * encoded bytes (a pickle of a plain value, see codec.h), decoded by the reader.
 *
 * Files: <shm dir>/slither.<pid>.<token>.<store> (the directory) and
 * .<store>.<table index>.<generation> (segments). The token is 16 random hex digits
 * drawn once per process, so no other user can create a file where a store will be;
 * every file is created with O_EXCL | O_NOFOLLOW, mode 0600, and checked with
 * fstat before it is mapped. Workers learn the token from SLITHER_STORE_TOKEN. */
#ifndef SL_STORE_H
#define SL_STORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum { SL_TABLE_SET = 0, SL_TABLE_ORDERED_SET = 1, SL_TABLE_BAG = 2 };

#define SL_SEG_MAGIC 0x32544c53u /* "SLT2": bag lists with a capacity (SLT1: without) */
#define SL_DIR_MAGIC 0x31444c53u /* "SLD1" */
#define SL_STORE_NAME_MAX 64
#define SL_SEG_PATH_MAX 160

#define SL_SEG_STRIPES 16

/* Readers announce themselves in a counter per stripe of threads (so readers on
 * different threads do not share a cache line) before they load a segment. A
 * retired segment is unmapped once every stripe has been seen at zero after it
 * was retired: whoever could still hold it has finished, and later readers load
 * its successor. No clock, no lock. */
typedef struct sl_seg_pin {
  long n;
  char pad[64 - sizeof(long)];
} sl_seg_pin;

typedef struct sl_seg {
  char *base;
  size_t size;
  uint64_t gen;
  char path[SL_SEG_PATH_MAX];
  double retired_at; /* ms; 0 while current */
  unsigned seen;     /* stripes seen idle since it was retired */
  struct sl_seg *next;
} sl_seg;

typedef struct sl_table {
  char name[SL_STORE_NAME_MAX];
  int type;
  sl_seg *cur; /* atomic: readers load it with acquire */
  uint64_t version; /* bumped by every write (ordered iteration caches on it) */
  double last_rebuild; /* ms: rebuilds in quick succession grow the heap faster */
  int boost;
} sl_table;

typedef struct sl_store {
  char name[SL_STORE_NAME_MAX];
  int ntables;
  sl_table *tables;
  pthread_mutex_t wlock;
  sl_seg *retired;      /* waiting for their grace period, writer-owned */
  char dir_path[SL_SEG_PATH_MAX];
  char *dir;            /* directory mapping, for Python readers */
  size_t dir_size;
  uint64_t gen;         /* last generation handed out */
  int pid;
  int users; /* host threads holding it through sl_store_find */
  /* A reload in progress, and the live writes made meanwhile (from Lua while load
   * waits, or from host threads), applied again to its fresh tables before the swap. */
  struct sl_store_shadow *shadow;
  struct sl_wlog *log, **log_tail;
  sl_seg_pin pins[SL_SEG_STRIPES];
} sl_store;

/* The process's store token (16 hex digits), drawn from the kernel's random source
 * on first use; NULL when no random bytes could be had (then no store starts). */
const char *sl_store_token(void);

/* The directory of the process's store files: $SLITHER_SHM_DIR when it is set (an
 * absolute path; a test mounts a small tmpfs there), else /dev/shm. Read once;
 * workers get it in SLITHER_SHM_DIR. */
const char *sl_store_shm_dir(void);

/* A value read: bytes copied out (the caller frees vals[i].data via sl_store_vals_free). */
typedef struct sl_val {
  char *data;
  size_t len;
} sl_val;

/* Create a store with tables (names and types). Returns 0 or an SL_E* code. */
int sl_store_create(sl_store *s, const char *name, int ntables, const char *const *names,
                    const int *types, char *err, size_t errlen);
/* Unlink and unmap everything. No reader may use the store afterwards. */
void sl_store_destroy(sl_store *s);
int sl_store_table(const sl_store *s, const char *name); /* index or -1 */

/* Encode a key: 's' + bytes or 'n' + double. out must hold len + 1 (or 9) bytes. */
size_t sl_store_key_str(char *out, const char *s, size_t len);
size_t sl_store_key_num(char *out, double d);
uint32_t sl_crc32(const void *p, size_t n);

/* ---- reads: any thread, never block, never see a torn value ---- */

/* get: 1 and the value(s) (a bag may give several; *n set), 0 when absent. */
int sl_store_get(sl_store *s, int t, const char *key, size_t klen, sl_val **vals, size_t *n);
void sl_store_vals_free(sl_val *vals, size_t n);
/* Several keys seen at one instant: retries while a multi-key write runs. */
int sl_store_get_many(sl_store *s, int t, const char *const *keys, const size_t *klens,
                      size_t nkeys, sl_val **vals, size_t **counts);
size_t sl_store_size(sl_store *s, int t);

/* Visit every live entry (keys and values copied out). Stops when fn returns
 * non-zero. A consistent snapshot: retries while a multi-key write runs. */
typedef int (*sl_store_visit_fn)(void *ud, const char *key, size_t klen, const sl_val *vals,
                                 size_t n);
int sl_store_scan(sl_store *s, int t, sl_store_visit_fn fn, void *ud);

/* ---- writes: serialized by the store's mutex ---- */

typedef struct sl_kv {
  const char *key;
  size_t klen;
  const char *val; /* NULL: delete */
  size_t vlen;
} sl_kv;

/* Apply writes to one table as one step: readers of several keys see all or none.
 * For a bag, a put adds the value (unless the same bytes are there already). */
int sl_store_write(sl_store *s, int t, const sl_kv *kv, size_t n);
int sl_store_clear(sl_store *s, int t);

/* Reload: fill fresh segments, then swap every table at once. One reload at a time
 * (begin returns SL_EINVAL while one runs). Live writes go on meanwhile and are
 * kept in a log; commit applies them to the fresh tables, so they win over what
 * the reload wrote and none is lost, then swaps. A commit that cannot apply them
 * (no space, no memory) aborts: the live tables stay, with every write. */
typedef struct sl_store_shadow {
  sl_seg **segs; /* one new segment per table, not yet visible */
} sl_store_shadow;
int sl_store_shadow_begin(sl_store *s, sl_store_shadow *sh);
int sl_store_shadow_write(sl_store *s, sl_store_shadow *sh, int t, const sl_kv *kv, size_t n);
/* Reads and clears inside a reload see and change the fresh tables. */
int sl_store_shadow_get(sl_store *s, sl_store_shadow *sh, int t, const char *key, size_t klen,
                        sl_val **vals, size_t *n);
int sl_store_shadow_clear(sl_store *s, sl_store_shadow *sh, int t);
int sl_store_shadow_commit(sl_store *s, sl_store_shadow *sh);
void sl_store_shadow_abort(sl_store *s, sl_store_shadow *sh);

/* The running store of that name (any thread), or NULL; a found store stays
 * valid until sl_store_release, even if it is being stopped meanwhile. */
sl_store *sl_store_find(const char *name);
void sl_store_release(sl_store *s);

/* Bytes the store's segments hold in /dev/shm (current and retired). */
size_t sl_store_bytes(sl_store *s);

#endif
