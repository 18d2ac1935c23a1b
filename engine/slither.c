/* slither.c: the public API of slither.h, on top of a Lua state and its engine. */
#include "slither.h"
#include "codec.h"
#include "engine.h"
#include "error.h"
#include "store.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int luaopen_slither_core(lua_State *L);
sl_engine *sl_lua_engine(lua_State *L);

struct slither_engine {
  lua_State *L;
  char *err;
};

static void set_err(slither_engine *e, const char *msg) {
  free(e->err);
  e->err = strdup(msg ? msg : "unknown error");
}

/* Why the calling thread's last slither_new returned NULL. */
static __thread char new_err[512];

const char *slither_new_error(void) { return new_err; }

/* Everything of slither_new that touches Lua runs here, under lua_cpcall: a Lua
 * error (the engine cannot start, memory runs out) comes back as a code and a
 * message instead of a panic that would end the host. */
static int new_protected(lua_State *L) {
  const slither_options *opts = lua_touserdata(L, 1);
  sl_engine *core;
  const char *lua_dir;
  lua_settop(L, 0);
  luaL_openlibs(L);
  if (opts && opts->loop) {
    lua_pushlightuserdata(L, opts->loop);
    lua_setfield(L, LUA_REGISTRYINDEX, "slither.host_loop");
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_slither_core);
  lua_setfield(L, -2, "slither.core");
  lua_pop(L, 1);
  /* Creating the core creates the engine, which knows where the Lua modules are. */
  lua_getglobal(L, "require");
  lua_pushstring(L, "slither.core");
  lua_call(L, 1, 0);
  core = sl_lua_engine(L);
  if (opts && opts->python) {
    char *py = strdup(opts->python);
    if (!py) return luaL_error(L, "out of memory");
    free(core->python);
    core->python = py;
  }
  if (opts && opts->log) {
    core->log_cb = opts->log;
    core->log_ud = opts->log_ud;
  } else {
    core->log_level = -1; /* an embedded engine prints nothing of its own */
  }
  lua_dir = opts && opts->lua_path ? opts->lua_path : core->lua_path;
  if (!lua_dir) return luaL_error(L, "no directory holds the slither Lua modules");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", lua_dir, lua_dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
  return 0;
}

slither_engine *slither_new(const slither_options *opts) {
  slither_engine *e = calloc(1, sizeof *e);
  new_err[0] = '\0';
  if (!e) {
    snprintf(new_err, sizeof new_err, "out of memory");
    return NULL;
  }
  e->L = luaL_newstate();
  if (!e->L) {
    snprintf(new_err, sizeof new_err, "out of memory (no Lua state)");
    free(e);
    return NULL;
  }
  if (lua_cpcall(e->L, new_protected, (void *)opts)) {
    const char *msg = lua_tostring(e->L, -1);
    snprintf(new_err, sizeof new_err, "the engine cannot start: %s",
             msg ? msg : "unknown error");
    lua_close(e->L);
    free(e);
    return NULL;
  }
  return e;
}

lua_State *slither_lua_state(slither_engine *e) { return e->L; }
const char *slither_last_error(const slither_engine *e) { return e->err ? e->err : ""; }
const char *slither_err_name(int code) { return sl_err_name(code); }
const char *slither_strerror(int code) { return sl_strerror(code); }

/* Run the function on top of the stack (below it: nothing of ours) as the main
 * task with n arguments, then stop the pools it left running. */
static const char runner[] =
    "local keep, fn = ...\n"
    "local task = require('slither.task')\n"
    "local slither = require('slither')\n"
    "local r = { task.run_main(fn, select(3, ...)) }\n"
    "if not keep then slither.shutdown(5000) end\n"
    "if not r[1] then error(r[2], 0) end\n";

static int run_main_keep(slither_engine *e, int nargs, int keep) {
  lua_State *L = e->L;
  int fn = lua_gettop(L) - nargs; /* the chunk, then its nargs arguments */
  lua_pushboolean(L, keep);
  lua_insert(L, fn); /* keep, chunk, args */
  if (luaL_loadbuffer(L, runner, sizeof runner - 1, "=slither")) {
    set_err(e, lua_tostring(L, -1));
    lua_settop(L, fn - 1);
    return SL_EINVAL;
  }
  lua_insert(L, fn); /* runner, keep, chunk, args */
  if (lua_pcall(L, nargs + 2, 0, 0)) {
    set_err(e, lua_tostring(L, -1));
    lua_settop(L, fn - 1);
    return SL_EINVAL;
  }
  return 0;
}

static int run_file(slither_engine *e, const char *path, int argc, char **argv, int keep);

int slither_run_file(slither_engine *e, const char *path, int argc, char **argv) {
  return run_file(e, path, argc, argv, 0);
}

int slither_run_file_keep(slither_engine *e, const char *path, int argc, char **argv) {
  return run_file(e, path, argc, argv, 1);
}

struct uv_loop_s *slither_loop(slither_engine *e) { return sl_lua_engine(e->L)->loop; }

static int run_file(slither_engine *e, const char *path, int argc, char **argv, int keep) {
  lua_State *L = e->L;
  int i;
  lua_createtable(L, argc, 1);
  lua_pushstring(L, path ? path : "stdin");
  lua_rawseti(L, -2, 0);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
  if (luaL_loadfile(L, path)) {
    set_err(e, lua_tostring(L, -1));
    lua_pop(L, 1);
    return SL_EINVAL;
  }
  for (i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  return run_main_keep(e, argc, keep);
}

static int run_string(slither_engine *e, const char *chunk, const char *name, int keep) {
  if (luaL_loadbuffer(e->L, chunk, strlen(chunk), name ? name : "=chunk")) {
    set_err(e, lua_tostring(e->L, -1));
    lua_pop(e->L, 1);
    return SL_EINVAL;
  }
  return run_main_keep(e, 0, keep);
}

int slither_run_string(slither_engine *e, const char *chunk, const char *name) {
  return run_string(e, chunk, name, 0);
}

int slither_run_string_keep(slither_engine *e, const char *chunk, const char *name) {
  return run_string(e, chunk, name, 1);
}

void slither_free(slither_engine *e, int grace_ms) {
  if (!e) return;
  if (grace_ms > 0) {
    lua_getglobal(e->L, "require");
    lua_pushstring(e->L, "slither");
    if (lua_pcall(e->L, 1, 1, 0) == 0) {
      lua_getfield(e->L, -1, "shutdown");
      lua_pushinteger(e->L, grace_ms);
      lua_pcall(e->L, 1, 0, 0);
    }
    lua_settop(e->L, 0);
  }
  lua_close(e->L); /* the engine's finalizer kills what is left and ends the reaper */
  free(e->err);
  free(e);
}

void slither_free_text(char *text) { free(text); }

int slither_step(slither_engine *e) {
  return uv_run(sl_lua_engine(e->L)->loop, UV_RUN_NOWAIT);
}

/* Encode the value at idx as JSON text (malloc'd). */
static char *to_json(lua_State *L, int idx, int as_list, int *rc) {
  sl_buf json, att;
  char err[256];
  sl_buf_init(&json);
  sl_buf_init(&att);
  *rc = sl_codec_encode(L, idx, as_list, &json, &att, err, sizeof err);
  if (*rc == 0 && att.len) *rc = SL_ECODEC; /* bytes have no JSON form */
  sl_buf_free(&att);
  if (*rc) {
    sl_buf_free(&json);
    return NULL;
  }
  sl_buf_putc(&json, '\0');
  return sl_buf_steal(&json, NULL);
}

static const char caller[] =
    "local path, args = ...\n"
    "local fn = _G\n"
    "for part in path:gmatch('[^.]+') do\n"
    "  if type(fn) ~= 'table' then fn = nil break end\n"
    "  fn = fn[part]\n"
    "end\n"
    "if type(fn) ~= 'function' then error('no Lua function at ' .. path, 0) end\n"
    "local slither = require('slither')\n"
    "local r = { n = 0 }\n"
    "local function keep(...) r = { n = select('#', ...), ... } end\n"
    "local res = { require('slither.task').run_main(function() keep(fn(unpack(args))) end) }\n"
    "if not res[1] then error(res[2], 0) end\n"
    "local out = slither.array()\n"
    "for i = 1, r.n do out[i] = r[i] == nil and slither.null or r[i] end\n"
    "return out\n";

int slither_call(slither_engine *e, const char *path, const char *args_json,
                 char **result_json) {
  lua_State *L = e->L;
  int top = lua_gettop(L), rc;
  char err[256];
  *result_json = NULL;
  if (luaL_loadbuffer(L, caller, sizeof caller - 1, "=slither_call")) {
    set_err(e, lua_tostring(L, -1));
    lua_settop(L, top);
    return SL_EINVAL;
  }
  lua_pushstring(L, path);
  if (sl_codec_decode(L, args_json ? args_json : "[]", strlen(args_json ? args_json : "[]"),
                      NULL, 0, err, sizeof err) ||
      !lua_istable(L, -1)) {
    set_err(e, "slither_call: args_json must be a JSON list");
    lua_settop(L, top);
    return SL_EINVAL;
  }
  if (lua_pcall(L, 2, 1, 0)) {
    set_err(e, lua_tostring(L, -1));
    lua_settop(L, top);
    return SL_EINVAL;
  }
  *result_json = to_json(L, -1, 1, &rc);
  if (rc) set_err(e, "slither_call: the results have no JSON form");
  lua_settop(L, top);
  return rc;
}

/* slither.host.NAME(...) -> the C function's JSON result, decoded. */
static int host_trampoline(lua_State *L) {
  slither_c_fn fn = (slither_c_fn)(size_t)lua_touserdata(L, lua_upvalueindex(1));
  void *ud = lua_touserdata(L, lua_upvalueindex(2));
  int n = lua_gettop(L), i, rc;
  int executor = lua_toboolean(L, lua_upvalueindex(3));
  char *args, *res = NULL, err[256];
  if (executor) {
    /* an executor gets the payload list itself */
    luaL_checktype(L, 1, LUA_TTABLE);
    args = to_json(L, 1, 1, &rc);
  } else {
    lua_getglobal(L, "require");
    lua_pushstring(L, "slither");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "array");
    lua_call(L, 0, 1);
    for (i = 1; i <= n; i++) {
      lua_pushvalue(L, i);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlightuserdata(L, NULL);
      }
      lua_rawseti(L, -2, i);
    }
    args = to_json(L, -1, 1, &rc);
  }
  if (!args) return luaL_error(L, "arguments have no JSON form");
  rc = fn(ud, args, &res);
  free(args);
  if (rc) {
    lua_pushstring(L, res ? res : "host function failed");
    free(res);
    return lua_error(L);
  }
  if (!res) {
    lua_pushnil(L);
    return 1;
  }
  rc = sl_codec_decode(L, res, strlen(res), NULL, 0, err, sizeof err);
  free(res);
  if (rc) return luaL_error(L, "host function returned bad JSON: %s", err);
  return 1;
}

static int register_in(slither_engine *e, const char *table, const char *name, slither_c_fn fn,
                       void *ud) {
  lua_State *L = e->L;
  if (!name || !*name || !fn) return SL_EINVAL;
  lua_getglobal(L, "require");
  lua_pushstring(L, "slither");
  if (lua_pcall(L, 1, 1, 0)) {
    set_err(e, lua_tostring(L, -1));
    lua_pop(L, 1);
    return SL_EINVAL;
  }
  lua_getfield(L, -1, table);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, table);
  }
  lua_pushlightuserdata(L, (void *)(size_t)fn);
  lua_pushlightuserdata(L, ud);
  lua_pushboolean(L, strcmp(table, "executors_c") == 0);
  lua_pushcclosure(L, host_trampoline, 3);
  lua_setfield(L, -2, name);
  lua_pop(L, 2);
  return 0;
}

int slither_register(slither_engine *e, const char *name, slither_c_fn fn, void *ud) {
  return register_in(e, "host", name, fn, ud);
}

/* An executor is called with the batch's payloads and gets them as a JSON list;
 * its result must be a list of the same length. Registered as
 * slither.executors.NAME, a function dispatch takes as its executor. */
int slither_register_executor(slither_engine *e, const char *name, slither_c_fn fn, void *ud) {
  int rc = register_in(e, "executors_c", name, fn, ud);
  lua_State *L = e->L;
  if (rc) return rc;
  if (luaL_dostring(L,
                    "local slither = require('slither')\n"
                    "slither.executors = slither.executors or {}\n"
                    "for name, f in pairs(slither.executors_c) do\n"
                    "  slither.executors[name] = slither.executors[name] or function(p)\n"
                    "    return f(p)\n"
                    "  end\n"
                    "end")) {
    set_err(e, lua_tostring(L, -1));
    lua_pop(L, 1);
    return SL_EINVAL;
  }
  return 0;
}

/* ---- store access from any thread ----------------------------------------------
 * Values are JSON for the host and pickles in the store: each thread transcodes
 * with a Lua state of its own, used for nothing else. */

static pthread_key_t codec_key;
static pthread_once_t codec_once = PTHREAD_ONCE_INIT;

static void codec_state_free(void *p) { lua_close(p); }
static void codec_key_init(void) { pthread_key_create(&codec_key, codec_state_free); }

static lua_State *codec_state(void) {
  lua_State *T;
  pthread_once(&codec_once, codec_key_init);
  T = pthread_getspecific(codec_key);
  if (!T) {
    T = luaL_newstate();
    if (!T) return NULL;
    sl_codec_open(T);
    pthread_setspecific(codec_key, T);
  }
  return T;
}

int slither_store_get(slither_engine *e, const char *store, const char *table,
                      const char *key, char **value_json) {
  sl_store *s = sl_store_find(store);
  lua_State *T = codec_state();
  int t = -1, rc, found, type;
  size_t klen, n, i;
  sl_val *vals;
  char *kb, err[256];
  (void)e;
  *value_json = NULL;
  if (!s) return SL_ENOTFOUND;
  if (!T || (t = sl_store_table(s, table)) < 0 || !(kb = malloc(strlen(key) + 1))) {
    sl_store_release(s);
    return !T || t >= 0 ? SL_ENOMEM : SL_ENOTFOUND;
  }
  klen = sl_store_key_str(kb, key, strlen(key));
  found = sl_store_get(s, t, kb, klen, &vals, &n);
  free(kb);
  type = s->tables[t].type;
  sl_store_release(s); /* the values are copies: the store may go now */
  if (found < 0) return SL_ENOMEM;
  if (found == 0) return 0;
  lua_settop(T, 0);
  if (type == SL_TABLE_BAG) lua_newtable(T);
  for (i = 0; i < n; i++) {
    if (sl_codec_decode_pickle(T, vals[i].data, vals[i].len, 0, err, sizeof err)) {
      sl_store_vals_free(vals, n);
      lua_settop(T, 0);
      return SL_ECODEC;
    }
    if (type == SL_TABLE_BAG) lua_rawseti(T, 1, (int)i + 1);
  }
  sl_store_vals_free(vals, n);
  *value_json = to_json(T, 1, type == SL_TABLE_BAG, &rc);
  lua_settop(T, 0);
  return rc;
}

static int put_in(lua_State *T, sl_store *s, int t, const char *key, const char *value_json);

int slither_store_put(slither_engine *e, const char *store, const char *table,
                      const char *key, const char *value_json) {
  sl_store *s = sl_store_find(store);
  lua_State *T = codec_state();
  int t = -1, rc;
  (void)e;
  if (!s) return SL_ENOTFOUND;
  rc = !T ? SL_ENOMEM : (t = sl_store_table(s, table)) < 0 ? SL_ENOTFOUND : 0;
  if (!rc) rc = put_in(T, s, t, key, value_json);
  sl_store_release(s);
  return rc;
}

static int put_in(lua_State *T, sl_store *s, int t, const char *key, const char *value_json) {
  int rc;
  sl_buf val, att;
  sl_kv kv;
  char *kb, err[256];
  lua_settop(T, 0);
  if (sl_codec_decode(T, value_json, strlen(value_json), NULL, 0, err, sizeof err))
    return SL_ECODEC;
  sl_buf_init(&val);
  sl_buf_init(&att);
  rc = sl_codec_encode_fmt(T, 1, 0, SL_CODEC_PICKLE, &val, &att, err, sizeof err);
  lua_settop(T, 0);
  sl_buf_free(&att);
  if (rc) {
    sl_buf_free(&val);
    return rc;
  }
  kb = malloc(strlen(key) + 1);
  if (!kb) {
    sl_buf_free(&val);
    return SL_ENOMEM;
  }
  kv.klen = sl_store_key_str(kb, key, strlen(key));
  kv.key = kb;
  kv.val = val.data;
  kv.vlen = val.len;
  rc = sl_store_write(s, t, &kv, 1);
  free(kb);
  sl_buf_free(&val);
  return rc;
}
