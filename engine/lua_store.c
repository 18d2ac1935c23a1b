/* lua_store.c: the store as seen from Lua (slither.core.store_new and the
 * slither.store_handle methods). Values are encoded as plain-value pickles, the
 * form Python readers load directly from the shared mapping. */
#include "codec.h"
#include "error.h"
#include "store.h"

#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STORE_MT "slither.store_handle"

/* Stores by name, for host threads (slither_store_get/put). A store's name is
 * unique in the process: its directory in /dev/shm is named after the process and
 * its token. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct reg { sl_store *s; struct reg *next; } *registry;

static void reg_add(sl_store *s) {
  struct reg *r = malloc(sizeof *r);
  if (!r) return;
  r->s = s;
  pthread_mutex_lock(&reg_lock);
  r->next = registry;
  registry = r;
  pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(sl_store *s) {
  struct reg **pp, *r;
  pthread_mutex_lock(&reg_lock);
  for (pp = &registry; *pp; pp = &(*pp)->next)
    if ((*pp)->s == s) {
      r = *pp;
      *pp = r->next;
      free(r);
      break;
    }
  pthread_mutex_unlock(&reg_lock);
}

sl_store *sl_store_find(const char *name) {
  struct reg *r;
  sl_store *s = NULL;
  pthread_mutex_lock(&reg_lock);
  for (r = registry; r; r = r->next)
    if (strcmp(r->s->name, name) == 0) s = r->s;
  if (s) __atomic_fetch_add(&s->users, 1, __ATOMIC_ACQ_REL);
  pthread_mutex_unlock(&reg_lock);
  return s;
}

void sl_store_release(sl_store *s) {
  if (s) __atomic_fetch_sub(&s->users, 1, __ATOMIC_RELEASE);
}

/* Once out of the registry, a store waits for host threads that still hold it
 * and for readers mid-read before its memory goes. */
static void wait_quiet(sl_store *s) {
  int i, busy;
  do {
    busy = __atomic_load_n(&s->users, __ATOMIC_ACQUIRE) != 0;
    for (i = 0; i < SL_SEG_STRIPES && !busy; i++)
      busy = __atomic_load_n(&s->pins[i].n, __ATOMIC_ACQUIRE) != 0;
    if (busy) sched_yield();
  } while (busy);
}

typedef struct lstore {
  sl_store s;
  int live;
  sl_store_shadow shadow;
  int in_shadow;
} lstore;

static lstore *check_store(lua_State *L) {
  lstore *ls = luaL_checkudata(L, 1, STORE_MT);
  if (!ls->live) luaL_error(L, "store is stopped");
  return ls;
}

static int check_table(lua_State *L, lstore *ls, int idx) {
  const char *name = luaL_checkstring(L, idx);
  int t = sl_store_table(&ls->s, name);
  if (t < 0) luaL_error(L, "store '%s' has no table '%s'", ls->s.name, name);
  return t;
}

/* Key bytes into buf (or a heap copy for long strings; *heap set). */
static const char *key_bytes(lua_State *L, int idx, char *buf, size_t buflen, size_t *klen,
                             char **heap) {
  *heap = NULL;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    double d = lua_tonumber(L, idx);
    /* NaN equals nothing, itself included: as a key it could never be found again,
     * and it has no place in an ordered_set's order */
    if (d != d) luaL_error(L, "a store key cannot be NaN");
    *klen = sl_store_key_num(buf, d);
    return buf;
  }
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    char *out = buf;
    if (n + 1 > buflen) {
      out = *heap = malloc(n + 1);
      if (!out) luaL_error(L, "out of memory");
    }
    *klen = sl_store_key_str(out, s, n);
    return out;
  }
  luaL_error(L, "store keys are strings or numbers, got %s", lua_typename(L, lua_type(L, idx)));
  return NULL;
}

static void push_key(lua_State *L, const char *k, size_t n) {
  if (n == 9 && k[0] == 'n') {
    double d;
    memcpy(&d, k + 1, 8);
    lua_pushnumber(L, d);
  } else {
    lua_pushlstring(L, k + 1, n - 1);
  }
}

static void push_val(lua_State *L, const sl_val *v) {
  char err[256];
  if (sl_codec_decode_pickle(L, v->data, v->len, 0, err, sizeof err))
    luaL_error(L, "corrupt store value: %s", err);
}

/* set: the value or nil; bag: a list of values (empty when absent). */
static void push_vals(lua_State *L, int type, const sl_val *vals, size_t n) {
  size_t i;
  if (type != SL_TABLE_BAG) {
    if (n) push_val(L, &vals[0]);
    else lua_pushnil(L);
    return;
  }
  lua_createtable(L, (int)n, 0);
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setmetatable(L, -2);
  for (i = 0; i < n; i++) {
    push_val(L, &vals[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
}

static int l_store_new(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  {
    sl_store *other = sl_store_find(name);
    if (other) {
      sl_store_release(other);
      return luaL_error(L, "a store named '%s' already exists", name);
    }
  }
  if (strlen(name) >= SL_STORE_NAME_MAX)
    return luaL_error(L, "store name '%s' is longer than %d bytes", name, SL_STORE_NAME_MAX - 1);
  int n, i, rc;
  const char **names;
  int *types;
  char err[256];
  lstore *ls;
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  n = (int)lua_objlen(L, 2);
  names = calloc((size_t)n + 1, sizeof *names);
  types = calloc((size_t)n + 1, sizeof *types);
  if (!names || !types) return luaL_error(L, "out of memory");
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 2, i + 1);
    names[i] = lua_tostring(L, -1); /* anchored in the argument table */
    lua_pop(L, 1);
    lua_rawgeti(L, 3, i + 1);
    types[i] = (int)lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  ls = lua_newuserdata(L, sizeof *ls);
  memset(ls, 0, sizeof *ls);
  rc = sl_store_create(&ls->s, name, n, names, types, err, sizeof err);
  free(names);
  free(types);
  if (rc == SL_ENOSPACE) { /* the machine's state, not the caller's mistake */
    lua_pushnil(L);
    lua_pushstring(L, sl_err_name(rc));
    lua_pushfstring(L, "cannot create store '%s': %s", name, err);
    return 3;
  }
  if (rc) return luaL_error(L, "cannot create store '%s': %s", name, err);
  ls->live = 1;
  reg_add(&ls->s);
  luaL_getmetatable(L, STORE_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_get(lua_State *L) {
  lstore *ls = check_store(L);
  int t = check_table(L, ls, 2);
  char buf[256], *heap;
  size_t klen, n;
  sl_val *vals;
  const char *k = key_bytes(L, 3, buf, sizeof buf, &klen, &heap);
  int rc = lua_toboolean(L, 4) && ls->in_shadow
               ? sl_store_shadow_get(&ls->s, &ls->shadow, t, k, klen, &vals, &n)
               : sl_store_get(&ls->s, t, k, klen, &vals, &n);
  free(heap);
  if (rc < 0) return luaL_error(L, "out of memory");
  push_vals(L, ls->s.tables[t].type, vals, n);
  sl_store_vals_free(vals, n);
  return 1;
}

static int l_get_many(lua_State *L) {
  lstore *ls = check_store(L);
  int t = check_table(L, ls, 2);
  size_t nk, i;
  const char **keys;
  size_t *klens, *counts = NULL;
  char **heaps;
  sl_val **vals;
  char (*bufs)[64];
  luaL_checktype(L, 3, LUA_TTABLE);
  nk = lua_objlen(L, 3);
  for (i = 0; i < nk; i++) { /* check every key before allocating anything */
    int kt;
    lua_rawgeti(L, 3, (int)i + 1);
    kt = lua_type(L, -1);
    lua_pop(L, 1);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER)
      return luaL_error(L, "store keys are strings or numbers, got %s (key %d)",
                        lua_typename(L, kt), (int)i + 1);
  }
  keys = calloc(nk + 1, sizeof *keys);
  klens = calloc(nk + 1, sizeof *klens);
  heaps = calloc(nk + 1, sizeof *heaps);
  vals = calloc(nk + 1, sizeof *vals);
  bufs = calloc(nk + 1, sizeof *bufs);
  if (!keys || !klens || !heaps || !vals || !bufs) return luaL_error(L, "out of memory");
  for (i = 0; i < nk; i++) {
    lua_rawgeti(L, 3, (int)i + 1);
    keys[i] = key_bytes(L, -1, bufs[i], sizeof bufs[i], &klens[i], &heaps[i]);
    lua_pop(L, 1);
  }
  if (sl_store_get_many(&ls->s, t, keys, klens, nk, vals, &counts))
    return luaL_error(L, "out of memory");
  lua_createtable(L, (int)nk, 0);
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setmetatable(L, -2);
  for (i = 0; i < nk; i++) {
    push_vals(L, ls->s.tables[t].type, vals[i], counts[i]);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlightuserdata(L, NULL); /* slither.null keeps the list whole */
    }
    lua_rawseti(L, -2, (int)i + 1);
    sl_store_vals_free(vals[i], counts[i]);
    free(heaps[i]);
  }
  free(keys);
  free(klens);
  free(heaps);
  free(vals);
  free(bufs);
  free(counts);
  return 1;
}

static int l_size(lua_State *L) {
  lstore *ls = check_store(L);
  lua_pushnumber(L, (double)sl_store_size(&ls->s, check_table(L, ls, 2)));
  return 1;
}

typedef struct scan_ctx {
  lua_State *L;
  int type, keys, vals, n;
} scan_ctx;

static int scan_visit(void *ud, const char *key, size_t klen, const sl_val *vals, size_t n) {
  scan_ctx *c = ud;
  c->n++;
  push_key(c->L, key, klen);
  lua_rawseti(c->L, c->keys, c->n);
  push_vals(c->L, c->type, vals, n);
  lua_rawseti(c->L, c->vals, c->n);
  return 0;
}

/* h:scan(tbl) -> keys, values: one consistent snapshot of the table. */
static int l_scan(lua_State *L) {
  lstore *ls = check_store(L);
  int t = check_table(L, ls, 2);
  scan_ctx c;
  c.L = L;
  c.type = ls->s.tables[t].type;
  c.n = 0;
  lua_newtable(L);
  c.keys = lua_gettop(L);
  lua_newtable(L);
  c.vals = lua_gettop(L);
  if (sl_store_scan(&ls->s, t, scan_visit, &c)) return luaL_error(L, "out of memory");
  return 2;
}

/* Encode the writes described by a table of key -> value (value nil/false for a
 * delete when deletes is set) into kv; all encoding happens before any write. */
typedef struct wbatch {
  sl_kv *kv;
  sl_buf *bufs;
  char **keys;
  size_t n;
} wbatch;

static void wbatch_free(wbatch *b) {
  size_t i;
  for (i = 0; i < b->n; i++) {
    sl_buf_free(&b->bufs[i]);
    free(b->keys[i]);
  }
  free(b->kv);
  free(b->bufs);
  free(b->keys);
}

static int encode_one(lua_State *L, wbatch *b, int kidx, int vidx, char *err, size_t errlen) {
  size_t i = b->n++, klen;
  char buf[256], *heap;
  sl_buf att;
  const char *k = key_bytes(L, kidx, buf, sizeof buf, &klen, &heap);
  b->keys[i] = malloc(klen);
  if (b->keys[i]) memcpy(b->keys[i], k, klen);
  free(heap);
  if (!b->keys[i]) {
    b->n--;
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  b->kv[i].key = b->keys[i];
  b->kv[i].klen = klen;
  sl_buf_init(&b->bufs[i]);
  if (vidx == 0) {
    b->kv[i].val = NULL;
    b->kv[i].vlen = 0;
    return 0;
  }
  sl_buf_init(&att);
  if (sl_codec_encode_fmt(L, vidx, 0, SL_CODEC_PICKLE, &b->bufs[i], &att, err, errlen)) {
    sl_buf_free(&att);
    return SL_ECODEC;
  }
  sl_buf_free(&att);
  b->kv[i].val = b->bufs[i].data;
  b->kv[i].vlen = b->bufs[i].len;
  return 0;
}

static int wbatch_init(wbatch *b, size_t cap) {
  b->n = 0;
  b->kv = calloc(cap + 1, sizeof *b->kv);
  b->bufs = calloc(cap + 1, sizeof *b->bufs);
  b->keys = calloc(cap + 1, sizeof *b->keys);
  return b->kv && b->bufs && b->keys ? 0 : SL_ENOMEM;
}

/* Raise on a key of the wrong type before a write batch is allocated: key_bytes
 * raises too, and the batch would leak. */
static void check_key(lua_State *L, int idx) {
  int kt = lua_type(L, idx);
  if (kt != LUA_TSTRING && kt != LUA_TNUMBER)
    luaL_error(L, "store keys are strings or numbers, got %s", lua_typename(L, kt));
}

/* A write the store could not make (no space in /dev/shm, no memory) leaves the
 * table as it was and returns nil, kind, message: the caller decides. */
static int write_result(lua_State *L, lstore *ls, int t, int rc) {
  if (!rc) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, sl_err_name(rc));
  lua_pushfstring(L, "store '%s': a write to table '%s' failed, and the table is as it was: %s",
                  ls->s.name, ls->s.tables[t].name, sl_strerror(rc));
  return 3;
}

static int apply(lua_State *L, lstore *ls, int t, wbatch *b, int shadow) {
  int rc = shadow ? sl_store_shadow_write(&ls->s, &ls->shadow, t, b->kv, b->n)
                  : sl_store_write(&ls->s, t, b->kv, b->n);
  wbatch_free(b);
  return write_result(L, ls, t, rc);
}

/* h:put(tbl, key, value [, shadow]) */
static int l_put(lua_State *L) {
  lstore *ls = check_store(L);
  int t = check_table(L, ls, 2);
  wbatch b;
  char err[512];
  luaL_checkany(L, 4);
  check_key(L, 3);
  if (wbatch_init(&b, 1)) return luaL_error(L, "out of memory");
  if (encode_one(L, &b, 3, 4, err, sizeof err)) {
    wbatch_free(&b);
    return luaL_error(L, "cannot store this value: %s", err);
  }
  return apply(L, ls, t, &b, lua_toboolean(L, 5) && ls->in_shadow);
}

/* h:put_many(tbl, { [key] = value, ... } [, shadow]): all or nothing. */
static int l_put_many(lua_State *L) {
  lstore *ls = check_store(L);
  int t = check_table(L, ls, 2);
  wbatch b;
  size_t cap = 0;
  char err[512];
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 3)) { /* count, and check the keys before allocating */
    cap++;
    lua_pop(L, 1);
    check_key(L, -1);
  }
  if (wbatch_init(&b, cap)) return luaL_error(L, "out of memory");
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    if (encode_one(L, &b, -2, lua_gettop(L), err, sizeof err)) {
      wbatch_free(&b);
      return luaL_error(L, "cannot store the value of key %s: %s",
                        lua_tostring(L, -2) ? lua_tostring(L, -2) : "?", err);
    }
    lua_pop(L, 1);
  }
  return apply(L, ls, t, &b, lua_toboolean(L, 4) && ls->in_shadow);
}

static int l_delete(lua_State *L) {
  lstore *ls = check_store(L);
  int t = check_table(L, ls, 2);
  wbatch b;
  char err[64];
  check_key(L, 3);
  if (wbatch_init(&b, 1)) return luaL_error(L, "out of memory");
  if (encode_one(L, &b, 3, 0, err, sizeof err)) {
    wbatch_free(&b);
    return luaL_error(L, "%s", err);
  }
  return apply(L, ls, t, &b, lua_toboolean(L, 4) && ls->in_shadow);
}

static int l_clear(lua_State *L) {
  lstore *ls = check_store(L);
  int t = check_table(L, ls, 2);
  int rc = lua_toboolean(L, 3) && ls->in_shadow ? sl_store_shadow_clear(&ls->s, &ls->shadow, t)
                                                : sl_store_clear(&ls->s, t);
  return write_result(L, ls, t, rc);
}

static int l_shadow_begin(lua_State *L) {
  lstore *ls = check_store(L);
  int rc;
  if (ls->in_shadow) {
    lua_pushnil(L);
    lua_pushliteral(L, "reloading");
    lua_pushfstring(L, "store '%s': a reload is already running; this one was not started",
                    ls->s.name);
    return 3;
  }
  rc = sl_store_shadow_begin(&ls->s, &ls->shadow);
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, sl_err_name(rc));
    lua_pushfstring(L, "store '%s': cannot make fresh tables for a reload: %s", ls->s.name,
                    sl_strerror(rc));
    return 3;
  }
  ls->in_shadow = 1;
  lua_pushboolean(L, 1);
  return 1;
}

static int l_shadow_end(lua_State *L) {
  lstore *ls = check_store(L);
  int rc = 0;
  if (!ls->in_shadow) return luaL_error(L, "no reload is running");
  if (lua_toboolean(L, 2)) rc = sl_store_shadow_commit(&ls->s, &ls->shadow);
  else sl_store_shadow_abort(&ls->s, &ls->shadow);
  ls->in_shadow = 0;
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, sl_err_name(rc));
    lua_pushfstring(L, "store '%s': the writes made while the reload ran could not be applied "
                    "to its fresh tables, so the live tables stay (with those writes): %s",
                    ls->s.name, sl_strerror(rc));
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_bytes(lua_State *L) {
  lua_pushnumber(L, (double)sl_store_bytes(&check_store(L)->s));
  return 1;
}

static int l_version(lua_State *L) {
  lstore *ls = check_store(L);
  lua_pushnumber(L, (double)ls->s.tables[check_table(L, ls, 2)].version);
  return 1;
}

static int l_destroy(lua_State *L) {
  lstore *ls = luaL_checkudata(L, 1, STORE_MT);
  if (ls->live) {
    if (ls->in_shadow) sl_store_shadow_abort(&ls->s, &ls->shadow);
    reg_remove(&ls->s);
    wait_quiet(&ls->s);
    sl_store_destroy(&ls->s);
    ls->live = 0;
  }
  return 0;
}

/* ---- reads from several threads (benchmark and stress test) ------------------- */

/* One cache line each (and counts kept in registers while running): threads
 * sharing a line would measure the line, not the store. */
typedef struct rthread {
  sl_store *s;
  int t;
  const char *const *keys;
  const size_t *klens;
  size_t nkeys;
  long ops, found;
  pthread_t th;
} __attribute__((aligned(64))) rthread;

static void *reader_main(void *arg) {
  rthread *r = arg;
  long i, found = 0, ops = r->ops;
  unsigned seed = (unsigned)(size_t)r;
  sl_store *s = r->s;
  int t = r->t;
  for (i = 0; i < ops; i++) {
    size_t k = (size_t)rand_r(&seed) % r->nkeys, n;
    sl_val *vals;
    if (sl_store_get(s, t, r->keys[k], r->klens[k], &vals, &n) > 0) found++;
    sl_store_vals_free(vals, n);
  }
  r->found = found;
  return NULL;
}

/* h:read_threads(tbl, keys, nthreads, ops_per_thread) -> seconds, found: ops
 * from host threads, for the benchmark's scaling figure. */
static int l_read_threads(lua_State *L) {
  lstore *ls = check_store(L);
  int t = check_table(L, ls, 2);
  int nth = (int)luaL_checkinteger(L, 4), i;
  long ops = (long)luaL_checknumber(L, 5), found = 0;
  size_t nk, k;
  const char **keys;
  size_t *klens;
  char **bufs;
  rthread *th;
  struct timespec a, b;
  luaL_checktype(L, 3, LUA_TTABLE);
  nk = lua_objlen(L, 3);
  if (nk == 0 || nth < 1) return luaL_error(L, "need keys and threads");
  keys = calloc(nk, sizeof *keys);
  klens = calloc(nk, sizeof *klens);
  bufs = calloc(nk, sizeof *bufs);
  if (posix_memalign((void **)&th, 64, (size_t)nth * sizeof *th)) th = NULL;
  if (!th) return luaL_error(L, "out of memory");
  memset(th, 0, (size_t)nth * sizeof *th);
  for (k = 0; k < nk; k++) {
    char buf[256], *heap;
    const char *kb;
    lua_rawgeti(L, 3, (int)k + 1);
    kb = key_bytes(L, -1, buf, sizeof buf, &klens[k], &heap);
    bufs[k] = malloc(klens[k]);
    memcpy(bufs[k], kb, klens[k]);
    free(heap);
    keys[k] = bufs[k];
    lua_pop(L, 1);
  }
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (i = 0; i < nth; i++) {
    th[i].s = &ls->s;
    th[i].t = t;
    th[i].keys = keys;
    th[i].klens = klens;
    th[i].nkeys = nk;
    th[i].ops = ops;
    pthread_create(&th[i].th, NULL, reader_main, &th[i]);
  }
  for (i = 0; i < nth; i++) {
    pthread_join(th[i].th, NULL);
    found += th[i].found;
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  for (k = 0; k < nk; k++) free(bufs[k]);
  free(bufs);
  free(keys);
  free(klens);
  free(th);
  lua_pushnumber(L, (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
  lua_pushnumber(L, (double)found);
  return 2;
}

static const luaL_Reg store_methods[] = {
    {"get", l_get},           {"get_many", l_get_many},
    {"size", l_size},         {"scan", l_scan},
    {"put", l_put},           {"put_many", l_put_many},
    {"delete", l_delete},     {"clear", l_clear},
    {"shadow_begin", l_shadow_begin}, {"shadow_end", l_shadow_end},
    {"bytes", l_bytes},       {"version", l_version},
    {"destroy", l_destroy},   {"read_threads", l_read_threads},
    {NULL, NULL}};

/* store_files_prefix() -> "<shm dir>/slither.<pid>.<token>.": every file of this
 * process's stores starts with it. */
static int l_store_files_prefix(lua_State *L) {
  const char *tok = sl_store_token();
  if (!tok) return luaL_error(L, "no random bytes for store file names");
  lua_pushfstring(L, "%s/slither.%d.%s.", sl_store_shm_dir(), (int)getpid(), tok);
  return 1;
}

void sl_lua_store_open(lua_State *L) {
  /* expects the core table on top of the stack */
  if (luaL_newmetatable(L, STORE_MT)) {
    lua_pushcfunction(L, l_destroy);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, store_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_store_new);
  lua_setfield(L, -2, "store_new");
  lua_pushcfunction(L, l_store_files_prefix);
  lua_setfield(L, -2, "store_files_prefix");
}
