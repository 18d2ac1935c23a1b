/* store.c: shared-memory tables with lock-free reads (see store.h for the layout
 * and the rules that make reads safe). */
#define _GNU_SOURCE
#include "store.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HDR 128
#define H_MAGIC 0
#define H_TYPE 4
#define H_SEQ 8
#define H_RETIRED 16
#define H_CAP 20
#define H_COUNT 24
#define H_HEAP_OFF 32
#define H_HEAP_SIZE 40
#define H_HEAP_USED 48
#define H_NVALS 56
#define H_GARBAGE 64
#define H_USED_SLOTS 72

#define DIR_HDR 64
#define DIR_ENTRY 256
#define MIN_CAP 64
#define MIN_HEAP (64 * 1024)

/* A bag's list blob: [u32 capacity][capacity x {u32 value offset, u32 length}]
 * [u32 x bag_hcap(capacity): the writer's hash of the values]. The list is the
 * first n entries, n taken from the value word's length (BAG_HDR + BAG_ENTRY * n),
 * so an append writes past what readers may read and publishes with the word. */
#define BAG_HDR 4
#define BAG_ENTRY 8
#define BAG_HASH_MIN 32

#define U64(base, off) ((uint64_t *)((base) + (off)))
#define U32(base, off) ((uint32_t *)((base) + (off)))
#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- keys and hashing ------------------------------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  uint32_t i, k, c;
  for (i = 0; i < 256; i++) {
    c = i;
    for (k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

/* zlib's crc32: Python readers compute the same with zlib.crc32, in C. */
uint32_t sl_crc32(const void *p, size_t n) {
  const unsigned char *s = p;
  uint32_t c = 0xffffffffu;
  pthread_once(&crc_once, crc_init);
  while (n--) c = crc_table[(c ^ *s++) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

size_t sl_store_key_str(char *out, const char *s, size_t len) {
  out[0] = 's';
  memcpy(out + 1, s, len);
  return len + 1;
}

size_t sl_store_key_num(char *out, double d) {
  if (d == 0) d = 0; /* -0 and 0 are one key */
  out[0] = 'n';
  memcpy(out + 1, &d, 8); /* little-endian on the platforms this runs on */
  return 9;
}

/* ---- files --------------------------------------------------------------------- */

static pthread_once_t token_once = PTHREAD_ONCE_INIT;
static char token[17];

static void token_init(void) {
  unsigned char r[8];
  size_t got = 0;
  int i;
  while (got < sizeof r) {
    ssize_t n = getrandom(r + got, sizeof r - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; /* token stays empty: stores refuse to start */
    got += (size_t)n;
  }
  for (i = 0; i < 8; i++) snprintf(token + 2 * i, 3, "%02x", r[i]);
}

const char *sl_store_token(void) {
  pthread_once(&token_once, token_init);
  return token[0] ? token : NULL;
}

static pthread_once_t shm_once = PTHREAD_ONCE_INIT;
static const char *shm_dir;

static void shm_init(void) {
  const char *d = getenv("SLITHER_SHM_DIR");
  shm_dir = d && *d ? d : "/dev/shm";
}

const char *sl_store_shm_dir(void) {
  pthread_once(&shm_once, shm_init);
  return shm_dir;
}

/* The errno of a failed segment allocation as an engine code: a full or capped
 * file system is no_space, which the writer can act on; anything else is memory. */
static int seg_errno(int err) {
  return err == ENOSPC || err == EDQUOT || err == EFBIG ? SL_ENOSPACE : SL_ENOMEM;
}

/* Create path as a new private file of this user: never an existing file, never
 * through a symlink, and checked once open, so that nothing another user planted
 * is written or mapped. Returns the fd, or -1 with errno set. */
static int create_private(const char *path) {
  struct stat st;
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
      (st.st_mode & 077)) {
    close(fd);
    unlink(path);
    errno = EPERM;
    return -1;
  }
  return fd;
}

static void wlog_free(sl_store *s);

/* ---- segments ----------------------------------------------------------------- */

static sl_seg *seg_new(sl_store *s, int table, int type, uint32_t cap, size_t heap) {
  sl_seg *g = calloc(1, sizeof *g);
  int fd, tries = 0;
  if (!g) return NULL;
  g->size = HDR + (size_t)cap * 24 + heap;
  /* A name taken by a file someone else planted (the names of later generations
   * can be guessed once the directory is seen) is passed over, not used. */
  do {
    g->gen = ++s->gen;
    /* the table's index, not its name: the path always fits SL_SEG_PATH_MAX */
    snprintf(g->path, sizeof g->path, "%s.%d.%llu", s->dir_path, table,
             (unsigned long long)g->gen);
    fd = create_private(g->path);
  } while (fd < 0 && errno == EEXIST && ++tries < 64);
  if (fd < 0) {
    free(g);
    return NULL;
  }
  /* Reserved, not sparse: a page of a sparse file that the file system cannot back
   * raises SIGBUS on the first write, which would kill the engine (and a host). */
  if ((tries = posix_fallocate(fd, 0, (off_t)g->size)) != 0) {
    close(fd);
    unlink(g->path);
    free(g);
    errno = tries;
    return NULL;
  }
  g->base = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (g->base == MAP_FAILED) {
    unlink(g->path);
    free(g);
    return NULL;
  }
  *U32(g->base, H_MAGIC) = SL_SEG_MAGIC;
  *U32(g->base, H_TYPE) = (uint32_t)type;
  *U32(g->base, H_CAP) = cap;
  *U64(g->base, H_HEAP_OFF) = HDR + (uint64_t)cap * 24;
  *U64(g->base, H_HEAP_SIZE) = heap;
  *U64(g->base, H_HEAP_USED) = 8; /* offset 0 is never used: a zero word means empty */
  return g;
}

static void seg_free(sl_seg *g, int unlink_file) {
  if (!g) return;
  if (unlink_file) unlink(g->path);
  munmap(g->base, g->size);
  free(g);
}

static uint64_t *slot(const char *base, uint32_t i) { return U64(base, HDR + (size_t)i * 24); }

/* Find the slot holding key, or (with insert) the empty slot where it would go.
 * Returns the slot index, or -1. Readers call it without insert. */
static int64_t seg_find(const char *base, uint32_t h, const char *key, size_t klen,
                        int insert) {
  uint32_t cap = LOAD_RLX(U32((char *)base, H_CAP));
  const char *heap = base + LOAD_RLX(U64((char *)base, H_HEAP_OFF));
  uint32_t i = h & (cap - 1), probes;
  for (probes = 0; probes < cap; probes++, i = (i + 1) & (cap - 1)) {
    uint64_t *sl = slot(base, i);
    uint64_t kw = LOAD_ACQ(&sl[1]);
    if (kw == 0) return insert ? (int64_t)i : -1;
    if ((uint32_t)LOAD_RLX(&sl[0]) != h) continue;
    if ((kw & 0xffffffffu) == klen && memcmp(heap + (kw >> 32), key, klen) == 0) return i;
  }
  return -1;
}

static int copy_out(sl_val *v, const char *p, size_t n) {
  v->data = malloc(n ? n : 1);
  if (!v->data) return SL_ENOMEM;
  memcpy(v->data, p, n);
  v->len = n;
  return 0;
}

/* Entries in the bag list a value word publishes. */
static uint32_t bag_len(uint64_t vw) {
  return (uint32_t)(((vw & 0xffffffffu) - BAG_HDR) / BAG_ENTRY);
}

/* The values behind a value word: one, or a bag's list. */
static int read_vals(const char *base, int type, uint64_t vw, sl_val **vals, size_t *n) {
  const char *heap = base + LOAD_RLX(U64((char *)base, H_HEAP_OFF));
  if (type != SL_TABLE_BAG) {
    *vals = malloc(sizeof **vals);
    if (!*vals) return SL_ENOMEM;
    *n = 1;
    return copy_out(*vals, heap + (vw >> 32), vw & 0xffffffffu);
  } else {
    const char *blob = heap + (vw >> 32) + BAG_HDR;
    uint32_t cnt = bag_len(vw), i;
    *vals = calloc(cnt ? cnt : 1, sizeof **vals);
    if (!*vals) return SL_ENOMEM;
    *n = cnt;
    for (i = 0; i < cnt; i++) {
      uint32_t off, len;
      memcpy(&off, blob + (size_t)BAG_ENTRY * i, 4);
      memcpy(&len, blob + (size_t)BAG_ENTRY * i + 4, 4);
      if (copy_out(&(*vals)[i], heap + off, len)) return SL_ENOMEM;
    }
    return 0;
  }
}

void sl_store_vals_free(sl_val *vals, size_t n) {
  size_t i;
  if (!vals) return;
  for (i = 0; i < n; i++) free(vals[i].data);
  free(vals);
}

/* ---- directory: how Python readers find the current segments ------------------ */

static void dir_write(sl_store *s) {
  uint64_t *seq = U64(s->dir, 8);
  int i;
  STORE_REL(seq, LOAD_RLX(seq) + 1);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  for (i = 0; i < s->ntables; i++) {
    char *e = s->dir + DIR_HDR + (size_t)i * DIR_ENTRY;
    sl_seg *g = s->tables[i].cur;
    memset(e, 0, DIR_ENTRY);
    snprintf(e, 64, "%s", s->tables[i].name);
    snprintf(e + 64, SL_SEG_PATH_MAX, "%s", g->path);
    memcpy(e + 224, &g->gen, 8);
    memcpy(e + 232, &s->tables[i].type, 4);
  }
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  STORE_REL(seq, LOAD_RLX(seq) + 1);
}

int sl_store_create(sl_store *s, const char *name, int ntables, const char *const *names,
                    const int *types, char *err, size_t errlen) {
  int i, fd;
  memset(s, 0, sizeof *s);
  /* names are kept whole or refused: a truncated table name matches no lookup */
  if (strlen(name) >= SL_STORE_NAME_MAX) {
    snprintf(err, errlen, "the store name '%s' is longer than %d bytes", name,
             SL_STORE_NAME_MAX - 1);
    return SL_EINVAL;
  }
  for (i = 0; i < ntables; i++)
    if (strlen(names[i]) >= SL_STORE_NAME_MAX) {
      snprintf(err, errlen, "the table name '%s' is longer than %d bytes", names[i],
               SL_STORE_NAME_MAX - 1);
      return SL_EINVAL;
    }
  if (!sl_store_token()) {
    snprintf(err, errlen, "cannot start store '%s': no random bytes for its file names", name);
    return SL_EINVAL;
  }
  s->pid = (int)getpid();
  snprintf(s->name, sizeof s->name, "%s", name);
  pthread_mutex_init(&s->wlock, NULL);
  s->shadow = NULL;
  s->log = NULL;
  s->log_tail = &s->log;
  s->tables = calloc((size_t)ntables, sizeof *s->tables);
  if (!s->tables) return SL_ENOMEM;
  s->ntables = ntables;
  if (sl_store_shm_dir()[0] != '/' ||
      (size_t)snprintf(s->dir_path, sizeof s->dir_path, "%s/slither.%d.%s.%s", sl_store_shm_dir(),
                       s->pid, sl_store_token(), name) + 32 > sizeof s->dir_path) {
    /* 32: room for ".<table index>.<generation>" of every segment path */
    snprintf(err, errlen, "cannot start store '%s': SLITHER_SHM_DIR (%.64s) must be an "
             "absolute path short enough that the store's file names fit in %d bytes",
             name, sl_store_shm_dir(), SL_SEG_PATH_MAX - 1);
    free(s->tables);
    return SL_EINVAL;
  }
  s->dir_size = DIR_HDR + (size_t)ntables * DIR_ENTRY;
  fd = create_private(s->dir_path);
  if (fd >= 0 && (errno = posix_fallocate(fd, 0, (off_t)s->dir_size)) != 0) {
    int e = errno;
    close(fd);
    unlink(s->dir_path);
    fd = -1;
    errno = e;
  }
  if (fd < 0) {
    if (errno == EEXIST)
      snprintf(err, errlen, "cannot create %s: a file of that name exists, and a store "
               "never uses a file it did not create", s->dir_path);
    else
      snprintf(err, errlen, "cannot create %s: %s", s->dir_path, strerror(errno));
    free(s->tables);
    return seg_errno(errno) == SL_ENOSPACE ? SL_ENOSPACE : SL_EINVAL;
  }
  s->dir = mmap(NULL, s->dir_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (s->dir == MAP_FAILED) {
    snprintf(err, errlen, "cannot map %s: %s", s->dir_path, strerror(errno));
    unlink(s->dir_path);
    free(s->tables);
    return SL_EINVAL;
  }
  *U32(s->dir, 0) = SL_DIR_MAGIC;
  *U32(s->dir, 4) = (uint32_t)ntables;
  for (i = 0; i < ntables; i++) {
    sl_table *t = &s->tables[i];
    snprintf(t->name, sizeof t->name, "%s", names[i]);
    t->type = types[i];
    t->cur = seg_new(s, i, t->type, MIN_CAP, MIN_HEAP);
    if (!t->cur) {
      int e = errno;
      snprintf(err, errlen, "cannot create the segment of table '%s': %s", t->name,
               strerror(e));
      sl_store_destroy(s);
      return seg_errno(e);
    }
  }
  dir_write(s);
  return 0;
}

void sl_store_destroy(sl_store *s) {
  int i;
  sl_seg *g;
  /* readers in other processes that still map these see them retired, look in
   * the directory again, and find the store gone (or a new one of that name) */
  for (i = 0; i < s->ntables; i++)
    if (s->tables[i].cur) STORE_REL(U32(s->tables[i].cur->base, H_RETIRED), 1);
  for (i = 0; i < s->ntables; i++) seg_free(s->tables[i].cur, 1);
  while ((g = s->retired)) {
    s->retired = g->next;
    seg_free(g, 0);
  }
  if (s->dir && s->dir != MAP_FAILED) {
    munmap(s->dir, s->dir_size);
    unlink(s->dir_path);
  }
  free(s->tables);
  s->tables = NULL;
  s->ntables = 0;
  wlog_free(s);
  s->shadow = NULL;
  pthread_mutex_destroy(&s->wlock);
}

int sl_store_table(const sl_store *s, const char *name) {
  int i;
  for (i = 0; i < s->ntables; i++)
    if (strcmp(s->tables[i].name, name) == 0) return i;
  return -1;
}

/* ---- reads ---------------------------------------------------------------------- */

/* Pin the current segment of table t for reading (see sl_seg_pin). */
static __thread int my_stripe = -1;
static int next_stripe;

/* Announce a reader, then load the current segment (the order matters: see
 * sl_seg_pin). The caller reads it, then calls unpin. */
static sl_seg *pin(sl_store *s, int t, int *stripe) {
  if (my_stripe < 0)
    my_stripe = __atomic_fetch_add(&next_stripe, 1, __ATOMIC_RELAXED) % SL_SEG_STRIPES;
  *stripe = my_stripe;
  __atomic_fetch_add(&s->pins[*stripe].n, 1, __ATOMIC_SEQ_CST);
  return __atomic_load_n(&s->tables[t].cur, __ATOMIC_SEQ_CST);
}

static void unpin(sl_store *s, int stripe) {
  __atomic_fetch_sub(&s->pins[stripe].n, 1, __ATOMIC_RELEASE);
}

static int get_in(const char *base, int type, const char *key, size_t klen, sl_val **vals,
                  size_t *n) {
  uint32_t h = sl_crc32(key, klen);
  int64_t i = seg_find(base, h, key, klen, 0);
  uint64_t vw;
  *vals = NULL;
  *n = 0;
  if (i < 0) return 0;
  vw = LOAD_ACQ(&slot(base, (uint32_t)i)[2]);
  if (vw == 0) return 0;
  if (read_vals(base, type, vw, vals, n)) return SL_ENOMEM;
  return 1;
}

int sl_store_get(sl_store *s, int t, const char *key, size_t klen, sl_val **vals, size_t *n) {
  int k, rc;
  sl_seg *g = pin(s, t, &k);
  rc = get_in(g->base, s->tables[t].type, key, klen, vals, n);
  unpin(s, k);
  return rc;
}

int sl_store_get_many(sl_store *s, int t, const char *const *keys, const size_t *klens,
                      size_t nkeys, sl_val **vals, size_t **counts) {
  /* vals[i] is the list for key i; counts[i] its length (0: absent) */
  sl_val **out = (sl_val **)vals;
  size_t *cnt = calloc(nkeys ? nkeys : 1, sizeof *cnt);
  size_t i;
  if (!cnt) return SL_ENOMEM;
  for (;;) {
    int k;
    sl_seg *g = pin(s, t, &k);
    uint64_t s1 = LOAD_ACQ(U64(g->base, H_SEQ)), s2;
    if (s1 & 1) { /* a multi-key write is running: it is short */
      unpin(s, k);
      continue;
    }
    for (i = 0; i < nkeys; i++) {
      if (get_in(g->base, s->tables[t].type, keys[i], klens[i], &out[i], &cnt[i]) < 0) {
        unpin(s, k);
        free(cnt);
        return SL_ENOMEM;
      }
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    s2 = LOAD_RLX(U64(g->base, H_SEQ));
    unpin(s, k);
    if (s1 == s2) break;
    for (i = 0; i < nkeys; i++) sl_store_vals_free(out[i], cnt[i]), out[i] = NULL, cnt[i] = 0;
  }
  *counts = cnt;
  return 0;
}

size_t sl_store_size(sl_store *s, int t) {
  int k;
  sl_seg *g = pin(s, t, &k);
  size_t n = (size_t)LOAD_ACQ(U64(g->base, s->tables[t].type == SL_TABLE_BAG ? H_NVALS : H_COUNT));
  unpin(s, k);
  return n;
}

typedef struct entry {
  char *key;
  size_t klen;
  sl_val *vals;
  size_t n;
} entry;

int sl_store_scan(sl_store *s, int t, sl_store_visit_fn fn, void *ud) {
  for (;;) {
    int pk;
    sl_seg *g = pin(s, t, &pk);
    const char *base = g->base;
    uint64_t s1 = LOAD_ACQ(U64(g->base, H_SEQ)), s2;
    uint32_t cap = LOAD_RLX(U32(g->base, H_CAP)), i;
    const char *heap = base + LOAD_RLX(U64(g->base, H_HEAP_OFF));
    entry *es = NULL;
    size_t ne = 0, ce = 0, k;
    int stop = 0, rc = 0;
    if (s1 & 1) {
      unpin(s, pk);
      continue;
    }
    for (i = 0; i < cap; i++) {
      uint64_t *sl = slot(base, i);
      uint64_t kw = LOAD_ACQ(&sl[1]), vw;
      if (kw == 0) continue;
      vw = LOAD_ACQ(&sl[2]);
      if (vw == 0) continue;
      if (ne == ce) {
        entry *ne2 = realloc(es, (ce = ce ? 2 * ce : 64) * sizeof *es);
        if (!ne2) { rc = SL_ENOMEM; break; }
        es = ne2;
      }
      es[ne].klen = kw & 0xffffffffu;
      es[ne].key = malloc(es[ne].klen + 1);
      if (!es[ne].key) { rc = SL_ENOMEM; break; }
      memcpy(es[ne].key, heap + (kw >> 32), es[ne].klen);
      if (read_vals(base, s->tables[t].type, vw, &es[ne].vals, &es[ne].n)) {
        free(es[ne].key);
        rc = SL_ENOMEM;
        break;
      }
      ne++;
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    s2 = LOAD_RLX(U64(g->base, H_SEQ));
    unpin(s, pk);
    if (rc == 0 && s1 == s2)
      for (k = 0; k < ne && !stop; k++) stop = fn(ud, es[k].key, es[k].klen, es[k].vals, es[k].n);
    for (k = 0; k < ne; k++) {
      free(es[k].key);
      sl_store_vals_free(es[k].vals, es[k].n);
    }
    free(es);
    if (rc || s1 == s2) return rc;
  }
}

/* ---- writes (under wlock) ---------------------------------------------------------- */

static uint64_t heap_append(char *base, const void *p, size_t n) {
  uint64_t used = *U64(base, H_HEAP_USED);
  char *heap = base + *U64(base, H_HEAP_OFF);
  /* callers reserve room first (ensure_room); running out here is a bug in that
   * sizing, and writing on would corrupt the segment */
  if (used + n > *U64(base, H_HEAP_SIZE)) abort();
  memcpy(heap + used, p, n);
  *U64(base, H_HEAP_USED) = (used + n + 7) & ~(uint64_t)7;
  return used;
}

static size_t heap_free(const char *base) {
  return (size_t)(*U64((char *)base, H_HEAP_SIZE) - *U64((char *)base, H_HEAP_USED));
}

/* ---- bag lists ----------------------------------------------------------------------
 * A put appends to its key's list in place while the blob has room, and a full blob
 * is copied once into one of twice the capacity: n puts copy fewer than 2n entries
 * in all, where rewriting the list on each put copied n^2 / 2. The entry is written
 * past the published length, then the value word (release) publishes it, so bytes a
 * reader can reach never change. A duplicate is found through the blob's hash of its
 * values, in O(1) instead of a scan of the list; only the writer reads the hash.
 * The cost: a blob holds up to twice its entries, and a hashed one 4-8 bytes per
 * entry more. Compaction (rebuild) copies each list at its capacity: the room a
 * write reserved against the old segment (batch_need) is then the room it takes in
 * the new one, where lists made exact could each need a bigger blob. */

/* Capacity for want entries in a list of capacity cap (0: a new list). A new list
 * is exactly as long as its first write needs, as most bag keys hold a few values;
 * a full one at least doubles. */
static size_t bag_cap_for(size_t cap, size_t want) {
  if (want <= cap) return cap;
  if (!cap) return want;
  return 2 * cap > want ? 2 * cap : want;
}

/* Slots of a blob's hash (0: no hash). Below BAG_HASH_MIN entries a scan that
 * compares lengths first is cheaper than hashing the value; above, a lookup probes
 * about 1.5 slots, the hash being at most half full. */
static size_t bag_hcap(size_t cap) {
  size_t h = 1;
  if (cap < BAG_HASH_MIN) return 0;
  while (h < 2 * cap) h <<= 1;
  return h;
}

/* Heap bytes of a blob of capacity cap, rounded as heap_append rounds. */
static size_t bag_bytes(size_t cap) {
  return (BAG_HDR + BAG_ENTRY * cap + 4 * bag_hcap(cap) + 7) & ~(size_t)7;
}

static uint32_t bag_cap(const char *base, uint64_t vw) {
  uint32_t cap;
  memcpy(&cap, base + *U64((char *)base, H_HEAP_OFF) + (vw >> 32), 4);
  return cap;
}

/* The length and capacity of key's list in base (0, 0: none). */
static void bag_state(const char *base, const char *key, size_t klen, size_t *cnt,
                      size_t *cap) {
  int64_t i = seg_find(base, sl_crc32(key, klen), key, klen, 0);
  uint64_t vw = i >= 0 ? slot(base, (uint32_t)i)[2] : 0;
  *cnt = vw ? bag_len(vw) : 0;
  *cap = vw ? bag_cap(base, vw) : 0;
}

/* Bytes of the new blob that m more values may need (0: they fit in place). */
static size_t bag_grow_need(size_t cnt, size_t cap, size_t m) {
  size_t ncap = bag_cap_for(cap, cnt + m);
  return ncap == cap ? 0 : bag_bytes(ncap);
}

static void bag_entry(const char *blob, size_t k, uint32_t *off, uint32_t *len) {
  memcpy(off, blob + BAG_HDR + BAG_ENTRY * k, 4);
  memcpy(len, blob + BAG_HDR + BAG_ENTRY * k + 4, 4);
}

/* Whether the first n entries of the blob (capacity cap) hold the bytes v; h is
 * their hash (used when the blob has one). */
static int bag_has(const char *heap, const char *blob, size_t cap, size_t n, uint32_t h,
                   const char *v, size_t vlen) {
  size_t hcap = bag_hcap(cap), i, k;
  const char *hash = blob + BAG_HDR + BAG_ENTRY * cap;
  uint32_t o, l, e;
  if (!hcap) {
    for (k = 0; k < n; k++) {
      bag_entry(blob, k, &o, &l);
      if (l == vlen && memcmp(heap + o, v, l) == 0) return 1;
    }
    return 0;
  }
  for (i = h & (hcap - 1);; i = (i + 1) & (hcap - 1)) { /* never full: ends at a 0 */
    memcpy(&e, hash + 4 * i, 4);
    if (!e) return 0;
    bag_entry(blob, e - 1, &o, &l);
    if (l == vlen && memcmp(heap + o, v, l) == 0) return 1;
  }
}

/* Enter entry k (hash h) in the blob's hash, if it has one. */
static void bag_hash_add(char *blob, size_t cap, uint32_t k, uint32_t h) {
  size_t hcap = bag_hcap(cap), i;
  char *hash = blob + BAG_HDR + BAG_ENTRY * cap;
  uint32_t e, one = k + 1;
  if (!hcap) return;
  for (i = h & (hcap - 1);; i = (i + 1) & (hcap - 1)) {
    memcpy(&e, hash + 4 * i, 4);
    if (!e) break;
  }
  memcpy(hash + 4 * i, &one, 4);
}

/* Bytes one write may append: key, value, and a new blob for a bag's list. */
static size_t write_need(const char *base, int type, const sl_kv *kv) {
  size_t need = kv->klen + kv->vlen + 16, cnt, cap;
  if (type == SL_TABLE_BAG) {
    bag_state(base, kv->key, kv->klen, &cnt, &cap);
    need += bag_grow_need(cnt, cap, 1);
  }
  return need;
}

/* A bag's list after the m puts kv[ord[0..m)] (ord NULL: kv[0..m)) of values not
 * already in the list at vw_old (0: none); a bag stores the same bytes once. The
 * values go at the end of the list's blob, or of a bigger copy of it when it is
 * full; nothing is allocated and callers reserved the bytes (batch_need), so a
 * write cannot fail half-way. copy_cap is 0, but for compaction's copy of a list
 * into a new segment: then vw_old is 0, the values are known distinct, and the
 * blob gets that capacity. Returns the value word to publish, vw_old when nothing
 * was added. NVALS and GARBAGE (a blob outgrown) are updated. */
static uint64_t bag_list(char *base, uint64_t vw_old, const sl_kv *kv, const size_t *ord,
                         size_t m, size_t copy_cap) {
  char *heap = base + *U64(base, H_HEAP_OFF);
  size_t cnt = vw_old ? bag_len(vw_old) : 0, cap = vw_old ? bag_cap(base, vw_old) : 0;
  size_t ncap = copy_cap ? copy_cap : bag_cap_for(cap, cnt + m), i, k, total = cnt, added = 0;
  uint64_t boff = vw_old >> 32, used0 = *U64(base, H_HEAP_USED);
  char *blob = heap + boff;
  int hashed = bag_hcap(ncap) != 0;
  if (ncap != cap) {
    size_t bytes = bag_bytes(ncap);
    uint32_t c32 = (uint32_t)ncap;
    /* callers reserve room first (ensure_room), as for heap_append */
    if (used0 + bytes > *U64(base, H_HEAP_SIZE)) abort();
    boff = used0;
    blob = heap + boff;
    *U64(base, H_HEAP_USED) = used0 + bytes;
    memcpy(blob, &c32, 4);
    if (cnt) memcpy(blob + BAG_HDR, heap + (vw_old >> 32) + BAG_HDR, BAG_ENTRY * cnt);
    memset(blob + BAG_HDR + BAG_ENTRY * ncap, 0, 4 * bag_hcap(ncap));
    for (k = 0; hashed && k < cnt; k++) {
      uint32_t o, l;
      bag_entry(blob, k, &o, &l);
      bag_hash_add(blob, ncap, (uint32_t)k, sl_crc32(heap + o, l));
    }
  }
  for (i = 0; i < m; i++) {
    const sl_kv *e = &kv[ord ? ord[i] : i];
    uint32_t h = hashed ? sl_crc32(e->val, e->vlen) : 0, off, len = (uint32_t)e->vlen;
    if (!copy_cap && bag_has(heap, blob, ncap, total, h, e->val, e->vlen)) continue;
    off = (uint32_t)heap_append(base, e->val, e->vlen);
    memcpy(blob + BAG_HDR + BAG_ENTRY * total, &off, 4);
    memcpy(blob + BAG_HDR + BAG_ENTRY * total + 4, &len, 4);
    bag_hash_add(blob, ncap, (uint32_t)total, h);
    total++;
    added++;
  }
  if (!added) {
    /* nothing follows a new blob that no word published: give it back */
    if (ncap != cap) *U64(base, H_HEAP_USED) = used0;
    return vw_old;
  }
  if (ncap != cap && vw_old) *U64(base, H_GARBAGE) += bag_bytes(cap);
  STORE_REL(U64(base, H_NVALS), *U64(base, H_NVALS) + added);
  return boff << 32 | (BAG_HDR + BAG_ENTRY * (uint64_t)total);
}

/* Publish a key that is not in the segment yet with value word vw. */
static void insert_new(char *base, const char *key, size_t klen, uint64_t vw) {
  uint32_t h = sl_crc32(key, klen);
  int64_t i = seg_find(base, h, key, klen, 1);
  uint64_t *sl = slot(base, (uint32_t)i);
  uint64_t koff = heap_append(base, key, klen);
  STORE_REL(&sl[0], (uint64_t)h);
  STORE_REL(&sl[2], vw);
  STORE_REL(&sl[1], koff << 32 | klen);
  *U64(base, H_USED_SLOTS) += 1;
  STORE_REL(U64(base, H_COUNT), *U64(base, H_COUNT) + 1);
}

/* Apply one put or delete to a segment that has room for it. */
static void seg_apply(char *base, int type, const sl_kv *kv) {
  uint32_t h = sl_crc32(kv->key, kv->klen);
  int64_t i = seg_find(base, h, kv->key, kv->klen, 1);
  uint64_t *sl, vw_old, vw;
  sl = slot(base, (uint32_t)i);
  vw_old = sl[1] ? sl[2] : 0;
  if (!kv->val) { /* delete */
    if (!sl[1] || !vw_old) return;
    STORE_REL(&sl[2], 0);
    STORE_REL(U64(base, H_COUNT), *U64(base, H_COUNT) - 1);
    if (type == SL_TABLE_BAG) {
      *U64(base, H_GARBAGE) += bag_bytes(bag_cap(base, vw_old));
      STORE_REL(U64(base, H_NVALS), *U64(base, H_NVALS) - bag_len(vw_old));
    } else {
      *U64(base, H_GARBAGE) += vw_old & 0xffffffffu;
      STORE_REL(U64(base, H_NVALS), *U64(base, H_NVALS) - 1);
    }
    return;
  }
  if (type == SL_TABLE_BAG) {
    vw = bag_list(base, vw_old, kv, NULL, 1, 0);
    if (vw == vw_old) return; /* already there */
  } else {
    uint64_t off = heap_append(base, kv->val, kv->vlen);
    vw = off << 32 | kv->vlen;
    if (vw_old) *U64(base, H_GARBAGE) += vw_old & 0xffffffffu;
    else STORE_REL(U64(base, H_NVALS), *U64(base, H_NVALS) + 1);
  }
  if (sl[1]) {
    STORE_REL(&sl[2], vw);
    if (!vw_old) STORE_REL(U64(base, H_COUNT), *U64(base, H_COUNT) + 1);
    return;
  }
  {
    /* a new key: its bytes and value first, the key word last publishes it */
    uint64_t koff = heap_append(base, kv->key, kv->klen);
    STORE_REL(&sl[0], (uint64_t)h);
    STORE_REL(&sl[2], vw);
    STORE_REL(&sl[1], koff << 32 | kv->klen);
    *U64(base, H_USED_SLOTS) += 1;
    STORE_REL(U64(base, H_COUNT), *U64(base, H_COUNT) + 1);
  }
}

/* ---- batches --------------------------------------------------------------------
 * A bag key written several times in one batch gets one new list, not one per
 * value: the batch is taken in key order (stable, so each key's writes keep their
 * order) and each key's puts are appended together. */

/* Sorts pointers into the batch, not indices: the comparison needs nothing but its
 * two arguments, so two stores sorting at once share no state. */
static int kv_order(const void *a, const void *b) {
  const sl_kv *x = *(const sl_kv *const *)a, *y = *(const sl_kv *const *)b;
  if (x->klen != y->klen) return x->klen < y->klen ? -1 : 1;
  {
    int c = memcmp(x->key, y->key, x->klen);
    if (c) return c;
  }
  return x < y ? -1 : (x > y); /* stable: same array, so address order is index order */
}

/* The batch's order for a bag (NULL for other tables, or on failure). */
static size_t *bag_order(int type, const sl_kv *kv, size_t n) {
  const sl_kv **p;
  size_t *ord, i;
  if (type != SL_TABLE_BAG || n < 2) return NULL;
  ord = malloc(n * sizeof *ord);
  p = malloc(n * sizeof *p);
  if (!ord || !p) {
    free(ord);
    free(p);
    return NULL;
  }
  for (i = 0; i < n; i++) p[i] = &kv[i];
  qsort(p, n, sizeof *p, kv_order);
  for (i = 0; i < n; i++) ord[i] = (size_t)(p[i] - kv);
  free(p);
  return ord;
}

/* A bag batch whose order could not be made (no memory): applied unsorted, its
 * puts to one key would go one at a time, which batch_need does not size for, so
 * the write is refused before anything is written. */
static int order_missing(int type, const size_t *ord, size_t n) {
  return type == SL_TABLE_BAG && n > 1 && !ord;
}

static int same_key(const sl_kv *a, const sl_kv *b) {
  return a->klen == b->klen && memcmp(a->key, b->key, a->klen) == 0;
}

/* Bytes a batch may append to base. */
static size_t batch_need(const char *base, int type, const sl_kv *kv, size_t n,
                         const size_t *ord) {
  size_t need = 0, i = 0;
  if (!ord) {
    for (i = 0; i < n; i++)
      if (kv[i].val) need += write_need(base, type, &kv[i]);
    return need;
  }
  while (i < n) {
    const sl_kv *k0 = &kv[ord[i]];
    size_t j = i, m = 0, cnt, cap, scnt, scap, one_by_one = 0;
    int deletes = 0;
    bag_state(base, k0->key, k0->klen, &cnt, &cap);
    scnt = cnt, scap = cap;
    while (j < n && same_key(&kv[ord[j]], k0)) {
      const sl_kv *e = &kv[ord[j]];
      if (!e->val) {
        deletes = 1;
        scnt = scap = 0;
      } else {
        size_t g = bag_grow_need(scnt, scap, 1);
        m++;
        need += e->vlen + 8;
        /* a key with deletes is written one write at a time (apply_batch), each
         * put perhaps growing a list that a delete emptied: followed here */
        one_by_one += g;
        if (g) scap = bag_cap_for(scap, scnt + 1);
        scnt++;
      }
      j++;
    }
    need += k0->klen + 8 + (deletes ? one_by_one : bag_grow_need(cnt, cap, m));
    i = j;
  }
  return need;
}

static void apply_batch(char *base, int type, const sl_kv *kv, size_t n, const size_t *ord) {
  size_t i = 0;
  if (!ord) {
    for (i = 0; i < n; i++) seg_apply(base, type, &kv[i]);
    return;
  }
  while (i < n) {
    const sl_kv *k0 = &kv[ord[i]];
    size_t j = i, m = 0;
    int deletes = 0;
    while (j < n && same_key(&kv[ord[j]], k0)) {
      if (!kv[ord[j]].val) deletes = 1;
      j++;
    }
    if (deletes) {
      for (; i < j; i++) seg_apply(base, type, &kv[ord[i]]);
      continue;
    }
    {
      uint32_t h = sl_crc32(k0->key, k0->klen);
      int64_t si;
      uint64_t *sl, vw_old, vw;
      m = j - i;
      si = seg_find(base, h, k0->key, k0->klen, 1);
      sl = slot(base, (uint32_t)si);
      vw_old = sl[1] ? sl[2] : 0;
      vw = bag_list(base, vw_old, kv, ord + i, m, 0);
      if (vw != vw_old) {
        if (sl[1]) {
          STORE_REL(&sl[2], vw);
          if (!vw_old) STORE_REL(U64(base, H_COUNT), *U64(base, H_COUNT) + 1);
        } else {
          insert_new(base, k0->key, k0->klen, vw);
        }
      }
      i = j;
    }
  }
}

/* apply_batch of a batch for which need bytes were reserved (batch_need). A batch
 * that took more would, on a fuller heap, have written past the heap's end (the
 * abort in heap_append): it is stopped here too, on any heap, so that a sizing
 * short of what a write takes fails every test that makes such a write. O(1). */
static void apply_reserved(char *base, int type, const sl_kv *kv, size_t n, const size_t *ord,
                           size_t need) {
  uint64_t used0 = *U64(base, H_HEAP_USED);
  apply_batch(base, type, kv, n, ord);
  if (*U64(base, H_HEAP_USED) - used0 > need) abort();
}

/* A new segment for table t with the live entries of g and room for more. */
static sl_seg *rebuild(sl_store *s, int t, sl_seg *g, size_t extra_slots, size_t extra_bytes) {
  const char *base = g->base;
  uint32_t cap = *U32((char *)base, H_CAP), i, ncap = MIN_CAP;
  uint64_t live_keys = *U64((char *)base, H_COUNT);
  size_t heap_live = (size_t)(*U64((char *)base, H_HEAP_USED) - *U64((char *)base, H_GARBAGE));
  size_t nheap;
  const char *heap = base + *U64((char *)base, H_HEAP_OFF);
  int type = s->tables[t].type;
  sl_seg *n;
  while ((size_t)ncap < (live_keys + extra_slots + 1) * 2) ncap *= 2;
  nheap = (heap_live + extra_bytes) * 2;
  if (nheap < MIN_HEAP) nheap = MIN_HEAP;
  /* words hold 32-bit heap offsets: a table's heap stays under 4 GiB */
  if (nheap > 0xffffffffu) nheap = 0xffffffffu;
  /* a multiple of 8, as heap_append rounds what it uses: a heap of another size
   * could be used past its end by the rounding, and heap_free wrap around */
  nheap &= ~(size_t)7;
  if (heap_live + extra_bytes > nheap) {
    errno = ENOMEM;
    return NULL;
  }
  n = seg_new(s, t, type, ncap, nheap);
  if (!n) return NULL;
  for (i = 0; i < cap; i++) {
    uint64_t *sl = slot(base, i);
    uint64_t kw = sl[1], vw = sl[2], nvw;
    if (!kw || !vw) continue;
    if (type == SL_TABLE_BAG) {
      /* the whole list at once: copying value by value would rewrite it each time */
      uint32_t cnt = bag_len(vw), k;
      sl_kv *vals = calloc(cnt ? cnt : 1, sizeof *vals);
      if (!vals) {
        seg_free(n, 1);
        errno = ENOMEM;
        return NULL;
      }
      for (k = 0; k < cnt; k++) {
        uint32_t o, l;
        bag_entry(heap + (vw >> 32), k, &o, &l);
        vals[k].val = heap + o;
        vals[k].vlen = l;
      }
      nvw = bag_list(n->base, 0, vals, NULL, cnt, bag_cap(base, vw));
      free(vals);
    } else {
      nvw = heap_append(n->base, heap + (vw >> 32), vw & 0xffffffffu) << 32 |
            (vw & 0xffffffffu);
      STORE_REL(U64(n->base, H_NVALS), *U64(n->base, H_NVALS) + 1);
    }
    insert_new(n->base, heap + (kw >> 32), kw & 0xffffffffu, nvw);
  }
  return n;
}

static void reap_retired(sl_store *s) {
  sl_seg **pp = &s->retired;
  unsigned idle = 0, all = (1u << SL_SEG_STRIPES) - 1;
  int i;
  if (!s->retired) return;
  for (i = 0; i < SL_SEG_STRIPES; i++)
    if (__atomic_load_n(&s->pins[i].n, __ATOMIC_SEQ_CST) == 0) idle |= 1u << i;
  while (*pp) {
    sl_seg *g = *pp;
    g->seen |= idle;
    if (g->seen == all) {
      *pp = g->next;
      seg_free(g, 0);
    } else {
      pp = &g->next;
    }
  }
}

static void retire(sl_store *s, sl_seg *old) {
  old->seen = 0;
  STORE_REL(U32(old->base, H_RETIRED), 1);
  unlink(old->path); /* mappings stay valid; new readers go through the directory */
  old->retired_at = now_ms();
  old->next = s->retired;
  s->retired = old;
}

/* Make room in t's segment for writes; swap in a bigger or compacted one. */
static int ensure_room(sl_store *s, int t, const sl_kv *kv, size_t n, const size_t *ord,
                       size_t *needp) {
  sl_seg *g = s->tables[t].cur, *ng;
  char *base = g->base;
  size_t need;
  uint64_t cap = *U32(base, H_CAP), used = *U64(base, H_USED_SLOTS);
  uint64_t garbage = *U64(base, H_GARBAGE), heap_used = *U64(base, H_HEAP_USED);
  double now = now_ms();
  need = *needp = batch_need(base, s->tables[t].type, kv, n, ord);
  /* Reclaim when half of the heap's capacity is dead: a table rewritten forever
   * stays within a few times its live size, and compaction comes at most once per
   * half a heap of writes. */
  (void)heap_used;
  if ((used + n + 1) * 2 <= cap && need <= heap_free(base) &&
      garbage <= *U64(base, H_HEAP_SIZE) / 2)
    return 0;
  /* Rebuilds in quick succession (a write storm) get a roomier heap each time,
   * so they become rare and few retired segments wait for their grace period. */
  if (now - s->tables[t].last_rebuild < 100) {
    if (s->tables[t].boost < 6) s->tables[t].boost++;
  } else if (s->tables[t].boost > 0) {
    s->tables[t].boost--;
  }
  s->tables[t].last_rebuild = now;
  {
    /* the extra room is capped, so a large table is never sized many times over */
    size_t live = (size_t)(heap_used - garbage);
    size_t extra = live * ((1u << s->tables[t].boost) - 1);
    if (extra > ((size_t)1 << 20)) extra = (size_t)1 << 20;
    ng = rebuild(s, t, g, n, need + extra);
  }
  if (!ng) return seg_errno(errno);
  __atomic_store_n(&s->tables[t].cur, ng, __ATOMIC_SEQ_CST);
  dir_write(s);
  retire(s, g);
  return 0;
}

/* ---- the reload's log of live writes --------------------------------------------- */

typedef struct sl_wlog {
  struct sl_wlog *next;
  int table, clear;
  size_t n;
  sl_kv kv[]; /* keys and values copied after the array */
} sl_wlog;

/* A copy of one live write, made before the write so that a write the log cannot
 * hold is refused rather than lost at the swap. */
static sl_wlog *wlog_new(int t, const sl_kv *kv, size_t n, int clear) {
  size_t i, bytes = 0;
  sl_wlog *l;
  char *p;
  for (i = 0; i < n; i++) bytes += kv[i].klen + (kv[i].val ? kv[i].vlen : 0);
  l = malloc(sizeof *l + n * sizeof *kv + bytes);
  if (!l) return NULL;
  l->next = NULL;
  l->table = t;
  l->clear = clear;
  l->n = n;
  p = (char *)(l->kv + n);
  for (i = 0; i < n; i++) {
    memcpy(p, kv[i].key, kv[i].klen);
    l->kv[i].key = p;
    l->kv[i].klen = kv[i].klen;
    p += kv[i].klen;
    l->kv[i].val = NULL;
    l->kv[i].vlen = 0;
    if (kv[i].val) {
      memcpy(p, kv[i].val, kv[i].vlen);
      l->kv[i].val = p;
      l->kv[i].vlen = kv[i].vlen;
      p += kv[i].vlen;
    }
  }
  return l;
}

static void wlog_append(sl_store *s, sl_wlog *l) {
  if (!s->log) s->log_tail = &s->log;
  *s->log_tail = l;
  s->log_tail = &l->next;
}

static void wlog_free(sl_store *s) {
  sl_wlog *l;
  while ((l = s->log)) {
    s->log = l->next;
    free(l);
  }
  s->log_tail = &s->log;
}

int sl_store_write(sl_store *s, int t, const sl_kv *kv, size_t n) {
  int rc;
  char *base;
  uint64_t *seq;
  size_t *ord, need = 0;
  sl_wlog *l = NULL;
  pthread_mutex_lock(&s->wlock);
  if (s->shadow && !(l = wlog_new(t, kv, n, 0))) {
    pthread_mutex_unlock(&s->wlock);
    return SL_ENOMEM;
  }
  reap_retired(s);
  ord = bag_order(s->tables[t].type, kv, n);
  rc = order_missing(s->tables[t].type, ord, n) ? SL_ENOMEM
                                                : ensure_room(s, t, kv, n, ord, &need);
  if (rc) {
    free(ord);
    free(l);
    pthread_mutex_unlock(&s->wlock);
    return rc;
  }
  base = s->tables[t].cur->base;
  seq = U64(base, H_SEQ);
  if (n > 1) {
    STORE_REL(seq, *seq + 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
  }
  apply_reserved(base, s->tables[t].type, kv, n, ord, need);
  if (n > 1) STORE_REL(seq, *seq + 1);
  s->tables[t].version++;
  if (l) wlog_append(s, l);
  pthread_mutex_unlock(&s->wlock);
  free(ord);
  return 0;
}

int sl_store_clear(sl_store *s, int t) {
  sl_seg *g, *ng;
  sl_wlog *l = NULL;
  pthread_mutex_lock(&s->wlock);
  if (s->shadow && !(l = wlog_new(t, NULL, 0, 1))) {
    pthread_mutex_unlock(&s->wlock);
    return SL_ENOMEM;
  }
  g = s->tables[t].cur;
  ng = seg_new(s, t, s->tables[t].type, MIN_CAP, MIN_HEAP);
  if (!ng) {
    int e = errno;
    free(l);
    pthread_mutex_unlock(&s->wlock);
    return seg_errno(e);
  }
  __atomic_store_n(&s->tables[t].cur, ng, __ATOMIC_SEQ_CST);
  dir_write(s);
  retire(s, g);
  s->tables[t].version++;
  if (l) wlog_append(s, l);
  pthread_mutex_unlock(&s->wlock);
  return 0;
}

/* ---- reload ---------------------------------------------------------------------- */

int sl_store_shadow_begin(sl_store *s, sl_store_shadow *sh) {
  int i;
  pthread_mutex_lock(&s->wlock);
  if (s->shadow) {
    pthread_mutex_unlock(&s->wlock);
    return SL_EINVAL;
  }
  sh->segs = calloc((size_t)s->ntables, sizeof *sh->segs);
  if (!sh->segs) {
    pthread_mutex_unlock(&s->wlock);
    return SL_ENOMEM;
  }
  for (i = 0; i < s->ntables; i++) {
    sh->segs[i] = seg_new(s, i, s->tables[i].type, MIN_CAP, MIN_HEAP);
    if (!sh->segs[i]) {
      int e = errno;
      pthread_mutex_unlock(&s->wlock);
      sl_store_shadow_abort(s, sh);
      return seg_errno(e);
    }
  }
  s->shadow = sh;
  wlog_free(s);
  pthread_mutex_unlock(&s->wlock);
  return 0;
}

/* The two writes into a shadow, with wlock held. */
static int shadow_write_locked(sl_store *s, sl_store_shadow *sh, int t, const sl_kv *kv,
                               size_t n) {
  size_t need, *ord;
  sl_seg *g = sh->segs[t];
  ord = bag_order(s->tables[t].type, kv, n);
  if (order_missing(s->tables[t].type, ord, n)) return SL_ENOMEM;
  need = batch_need(g->base, s->tables[t].type, kv, n, ord);
  if ((*U64(g->base, H_USED_SLOTS) + n + 1) * 2 > *U32(g->base, H_CAP) ||
      need > heap_free(g->base)) {
    sl_seg *ng = rebuild(s, t, g, n, need); /* nobody reads a shadow: no grace needed */
    if (!ng) {
      int e = errno;
      free(ord);
      return seg_errno(e);
    }
    seg_free(g, 1);
    sh->segs[t] = g = ng;
  }
  apply_reserved(g->base, s->tables[t].type, kv, n, ord, need);
  free(ord);
  return 0;
}

static int shadow_clear_locked(sl_store *s, sl_store_shadow *sh, int t) {
  sl_seg *ng = seg_new(s, t, s->tables[t].type, MIN_CAP, MIN_HEAP);
  if (!ng) return seg_errno(errno);
  seg_free(sh->segs[t], 1);
  sh->segs[t] = ng;
  return 0;
}

int sl_store_shadow_write(sl_store *s, sl_store_shadow *sh, int t, const sl_kv *kv, size_t n) {
  int rc;
  pthread_mutex_lock(&s->wlock);
  rc = shadow_write_locked(s, sh, t, kv, n);
  pthread_mutex_unlock(&s->wlock);
  return rc;
}

int sl_store_shadow_get(sl_store *s, sl_store_shadow *sh, int t, const char *key, size_t klen,
                        sl_val **vals, size_t *n) {
  return get_in(sh->segs[t]->base, s->tables[t].type, key, klen, vals, n);
}

int sl_store_shadow_clear(sl_store *s, sl_store_shadow *sh, int t) {
  int rc;
  pthread_mutex_lock(&s->wlock);
  rc = shadow_clear_locked(s, sh, t);
  pthread_mutex_unlock(&s->wlock);
  return rc;
}

int sl_store_shadow_commit(sl_store *s, sl_store_shadow *sh) {
  int i, rc = 0;
  sl_wlog *l;
  sl_seg **old = calloc((size_t)s->ntables, sizeof *old);
  pthread_mutex_lock(&s->wlock);
  /* the live writes made while the reload ran, in their order, then the swap */
  for (l = s->log; l && !rc; l = l->next)
    rc = l->clear ? shadow_clear_locked(s, sh, l->table)
                  : shadow_write_locked(s, sh, l->table, l->kv, l->n);
  if (!rc && !old) rc = SL_ENOMEM;
  if (rc) {
    pthread_mutex_unlock(&s->wlock);
    free(old);
    sl_store_shadow_abort(s, sh);
    return rc;
  }
  for (i = 0; i < s->ntables; i++) {
    old[i] = s->tables[i].cur;
    __atomic_store_n(&s->tables[i].cur, sh->segs[i], __ATOMIC_SEQ_CST);
    s->tables[i].version++;
  }
  dir_write(s); /* Python readers switch every table at once */
  for (i = 0; i < s->ntables; i++) retire(s, old[i]);
  s->shadow = NULL;
  wlog_free(s);
  pthread_mutex_unlock(&s->wlock);
  free(old);
  free(sh->segs);
  sh->segs = NULL;
  return 0;
}

void sl_store_shadow_abort(sl_store *s, sl_store_shadow *sh) {
  int i;
  pthread_mutex_lock(&s->wlock);
  if (s->shadow == sh) {
    s->shadow = NULL;
    wlog_free(s);
  }
  pthread_mutex_unlock(&s->wlock);
  if (!sh->segs) return;
  for (i = 0; i < s->ntables; i++) seg_free(sh->segs[i], 1);
  free(sh->segs);
  sh->segs = NULL;
}

size_t sl_store_bytes(sl_store *s) {
  size_t n = 0;
  int i;
  sl_seg *g;
  pthread_mutex_lock(&s->wlock);
  reap_retired(s);
  for (i = 0; i < s->ntables; i++) n += s->tables[i].cur->size;
  for (g = s->retired; g; g = g->next) n += g->size;
  pthread_mutex_unlock(&s->wlock);
  return n;
}
