/* fuzz_codec.h: shared by the codec harnesses. A Lua state with the codec's
 * markers and a structural equality (NaN equals NaN, markers must match), used to
 * check that what decodes re-encodes and decodes to the same value. */
#ifndef FUZZ_CODEC_H
#define FUZZ_CODEC_H

#include "codec.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

static const char deq_src[] =
    "local function deq(a, b)\n"
    "  if a ~= a and b ~= b then return true end\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  if getmetatable(a) ~= getmetatable(b) then return false end\n"
    "  for k, v in pairs(a) do if not deq(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "local array_mt, bytes_mt = ...\n"
    "local function plain(v, path)\n"
    "  if type(v) ~= 'table' then return true end\n"
    "  local mt = getmetatable(v)\n"
    "  if mt == bytes_mt then return true end\n"
    /* a pickle's memo can make a value that contains itself: no tree to compare */
    "  path = path or {}\n"
    "  if path[v] then return false end\n"
    "  path[v] = true\n"
    "  for k, x in pairs(v) do\n"
    "    if mt ~= array_mt and type(k) ~= 'string' then return false end\n"
    "    if not plain(x, path) then return false end\n"
    "  end\n"
    "  path[v] = nil\n"
    "  return true\n"
    "end\n"
    "return deq, plain\n";

static lua_State *fuzz_state(void) {
  static lua_State *L;
  if (!L) {
    L = luaL_newstate();
    luaL_openlibs(L);
    sl_codec_open(L);
    if (luaL_loadstring(L, deq_src)) abort();
    lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&sl_codec_bytes_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_pcall(L, 2, 2, 0)) abort();
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.plain");
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.deq");
  }
  lua_settop(L, 0);
  return L;
}

/* 1 when every dict in the value at idx has string keys only: the values whose
 * round trip is exact (README: a pickle's other dict keys arrive as they are, and
 * an integer-keyed dict may then encode as a list). */
static inline int fuzz_plain(lua_State *L, int idx) {
  int r;
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.plain");
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0)) {
    fprintf(stderr, "fuzz_plain: %s\n", lua_tostring(L, -1));
    abort();
  }
  r = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return r;
}

/* The values at a and b are equal; abort (a finding) when not. */
static void fuzz_check_equal(lua_State *L, int a, int b, const char *what) {
  int eq;
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.deq");
  lua_pushvalue(L, a);
  lua_pushvalue(L, b);
  if (lua_pcall(L, 2, 1, 0)) abort();
  eq = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!eq) {
    fprintf(stderr, "round trip changed the value (%s)\n", what);
    abort();
  }
}

#endif
