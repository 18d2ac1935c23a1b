/* main.c: the slither command line. */
#include "repl.h"
#include "slither.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: slither                         the interactive prompt (REPL)\n"
    "       slither SCRIPT.lua [ARGS...]   run a pipeline script\n"
    "       slither -i SCRIPT.lua [ARGS]   run a script, then the prompt\n"
    "       slither -e CODE                 run a string of Lua\n"
    "       slither doctor                  check the Python interpreter and the engine\n"
    "       slither example [NAME | --all]  run the examples (slither example --help)\n"
    "       slither bench SUB [OPTIONS]     measure beside Python's own tools: SUB is\n"
    "                                       pool, dispatch, store or pipe\n"
    "                                       (slither bench --help for the options)\n"
    "       slither --version | --help\n"
    "\n"
    "A script runs as the main task on the engine's event loop: calls to Python\n"
    "workers (pool:call), slither.sleep and task joins wait without blocking other\n"
    "tasks. When the script ends, every pool it started is stopped.\n"
    "\n"
    "SIGINT or SIGTERM stops a run cleanly: running work is cancelled, pools get\n"
    "5 s to finish their calls, store files are removed, and slither exits with\n"
    "130 or 143. A second signal exits at once; the reaper process then kills the\n"
    "workers and removes the files.\n"
    "\n"
    "environment:\n"
    "  SLITHER_PYTHON       interpreter for workers (default: python3)\n"
    "  SLITHER_LOG          error | warn | info | debug (default: info)\n"
    "  SLITHER_LUA_PATH     directory of the slither Lua modules\n"
    "  SLITHER_WORKER_PATH  directory of the slither_worker Python package\n"
    "  SLITHER_HISTORY      the prompt's history file (default: ~/.slither_history)\n"
    "  SLITHER_SPIN_US      how long an idle wait polls before sleeping (default 100)\n"
    "  SLITHER_SHM_DIR      directory of the store files (default: /dev/shm)\n";

static int run_module(slither_engine *e, const char *module, int argc, char **argv) {
  /* return require(module).main(arg) from the main task */
  char code[256];
  int i;
  lua_State *L = slither_lua_state(e);
  lua_createtable(L, argc, 0);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
  snprintf(code, sizeof code, "__slither_exit = require('%s').main(arg)", module);
  if (slither_run_string(e, code, "=slither")) return -1;
  lua_getglobal(L, "__slither_exit");
  i = lua_isnumber(L, -1) ? (int)lua_tonumber(L, -1) : 0;
  lua_pop(L, 1);
  return i;
}

/* SIGINT and SIGTERM stop a run cleanly (lua/slither/signals.lua); not at the
 * prompt, where they keep their usual meaning. */
static void handle_stop_signals(slither_engine *e) {
  lua_State *L = slither_lua_state(e);
  if (luaL_dostring(L, "require('slither.signals').install()")) {
    fprintf(stderr, "slither: cannot handle stop signals: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* 128 + the signal that stopped the run, or 0. */
static int stop_signal_code(slither_engine *e) {
  lua_State *L = slither_lua_state(e);
  int code = 0;
  if (luaL_dostring(L, "return require('slither.signals').exit_code()") == 0) {
    if (lua_isnumber(L, -1)) code = (int)lua_tonumber(L, -1);
  }
  lua_settop(L, 0);
  return code;
}

static void log_stderr(void *ud, int level, const char *msg) {
  static const char *tags[] = {"error", "warn", "info", "debug"};
  (void)ud;
  fprintf(stderr, "slither %s: %s\n", tags[level & 3], msg);
}

int main(int argc, char **argv) {
  slither_engine *e;
  slither_options opts;
  int rc;
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    fputs(usage, stdout);
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "--version")) {
    printf("slither %s\n", SLITHER_VERSION);
    return 0;
  }
  memset(&opts, 0, sizeof opts);
  opts.log = log_stderr; /* filtered by SLITHER_LOG */
  e = slither_new(&opts);
  if (!e) {
    fprintf(stderr, "slither: cannot create the engine\n");
    return 1;
  }
  if (argc >= 2 && strcmp(argv[1], "-i") != 0) handle_stop_signals(e);
  if (argc < 2) {
    rc = sl_repl_run(slither_lua_state(e), slither_loop(e));
  } else if (!strcmp(argv[1], "-i")) {
    if (argc < 3) {
      fputs(usage, stderr);
      slither_free(e, 0);
      return 2;
    }
    rc = slither_run_file_keep(e, argv[2], argc - 3, argv + 3);
    if (rc == 0) rc = sl_repl_run(slither_lua_state(e), slither_loop(e));
  } else if (!strcmp(argv[1], "doctor")) {
    rc = run_module(e, "slither.doctor", argc - 2, argv + 2);
  } else if (!strcmp(argv[1], "example")) {
    rc = run_module(e, "slither.examples", argc - 2, argv + 2);
  } else if (!strcmp(argv[1], "bench")) {
    rc = run_module(e, "slither.bench", argc - 2, argv + 2);
  } else if (!strcmp(argv[1], "-e")) {
    if (argc < 3) {
      fputs(usage, stderr);
      slither_free(e, 0);
      return 2;
    }
    rc = slither_run_string(e, argv[2], "=(command line)");
  } else if (argv[1][0] == '-' && argv[1][1] != '\0') {
    fprintf(stderr, "slither: unknown option '%s'\n\n%s", argv[1], usage);
    slither_free(e, 0);
    return 2;
  } else {
    rc = slither_run_file(e, strcmp(argv[1], "-") ? argv[1] : NULL, argc - 2, argv + 2);
  }
  if (rc < 0) fprintf(stderr, "slither: %s\n", slither_last_error(e));
  {
    int code = stop_signal_code(e);
    slither_free(e, 0);
    if (code) return code;
  }
  return rc < 0 ? 1 : rc;
}
