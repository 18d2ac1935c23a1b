/* slither.c: the public API of slither.h, on top of a Lua state and its engine. */
#include "slither.h"
#include "engine.h"
#include "error.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
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

slither_engine *slither_new(const slither_options *opts) {
  slither_engine *e = calloc(1, sizeof *e);
  sl_engine *core;
  const char *lua_dir;
  if (!e) return NULL;
  e->L = luaL_newstate();
  if (!e->L) {
    free(e);
    return NULL;
  }
  luaL_openlibs(e->L);
  lua_getglobal(e->L, "package");
  lua_getfield(e->L, -1, "preload");
  lua_pushcfunction(e->L, luaopen_slither_core);
  lua_setfield(e->L, -2, "slither.core");
  lua_pop(e->L, 1);
  /* Creating the core creates the engine, which knows where the Lua modules are. */
  lua_getglobal(e->L, "require");
  lua_pushstring(e->L, "slither.core");
  lua_call(e->L, 1, 0);
  core = sl_lua_engine(e->L);
  if (opts && opts->python) {
    free(core->python);
    core->python = strdup(opts->python);
  }
  if (opts && opts->log) {
    core->log_cb = opts->log;
    core->log_ud = opts->log_ud;
  }
  lua_dir = opts && opts->lua_path ? opts->lua_path : core->lua_path;
  lua_getfield(e->L, -1, "path");
  lua_pushfstring(e->L, "%s/?.lua;%s/?/init.lua;%s", lua_dir, lua_dir, lua_tostring(e->L, -1));
  lua_setfield(e->L, -3, "path");
  lua_pop(e->L, 2);
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

static int run_main(slither_engine *e, int nargs) { return run_main_keep(e, nargs, 0); }

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

int slither_run_string(slither_engine *e, const char *chunk, const char *name) {
  if (luaL_loadbuffer(e->L, chunk, strlen(chunk), name ? name : "=chunk")) {
    set_err(e, lua_tostring(e->L, -1));
    lua_pop(e->L, 1);
    return SL_EINVAL;
  }
  return run_main(e, 0);
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
