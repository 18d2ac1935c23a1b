/* repl.c: the interactive prompt of the slither binary.
 *
 * On a terminal, libedit reads the line in callback mode, fed by a libuv poll
 * handle on stdin: the engine's loop keeps running while the user types, so pools
 * stay healthy, telemetry fires and spawned tasks progress. A statement runs as a
 * task (lua/slither/repl.lua); the prompt comes back when it finishes, and Ctrl-C
 * (a libuv signal handle) cancels it. Piped input is read line by line without
 * line editing, with the same evaluation and printing. */
#include "repl.h"

void sl_lua_cb_enter(lua_State *L);
void sl_lua_cb_leave(lua_State *L);
#include "engine.h"
#include "slither.h"

#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

typedef struct repl {
  lua_State *L;
  uv_loop_t *loop;
  uv_poll_t poll;
  uv_signal_t sigint;
  int tty;
  int running; /* a statement is running */
  int quit;
  char *pending; /* lines of an incomplete statement */
  char history[1024];
  int repl_ref; /* the slither.repl module */
} repl;

static repl R;

static const char *prompt(void) { return R.pending ? ">> " : "> "; }
static void line_cb(char *line);

static void install(void) {
  if (R.tty && !R.quit) rl_callback_handler_install(prompt(), line_cb);
}

/* Called from Lua with the text a statement produced: print it, then prompt. */
static int l_done(lua_State *L) {
  size_t n;
  const char *s = luaL_optlstring(L, 1, "", &n);
  fwrite(s, 1, n, stdout);
  fflush(stdout);
  R.running = 0;
  install();
  return 0;
}

static void submit(const char *line) {
  lua_State *L = R.L;
  size_t n = strlen(line);
  char *src;
  const char *status;
  int rc;
  if (R.pending) {
    size_t m = strlen(R.pending);
    src = malloc(m + n + 2);
    memcpy(src, R.pending, m);
    src[m] = '\n';
    memcpy(src + m + 1, line, n + 1);
    free(R.pending);
    R.pending = NULL;
  } else {
    src = strdup(line);
  }
  if (R.tty && *line) add_history(line);
  lua_rawgeti(L, LUA_REGISTRYINDEX, R.repl_ref);
  lua_getfield(L, -1, "run");
  lua_pushstring(L, src);
  lua_pushcfunction(L, l_done);
  R.running = 1;
  if (R.tty) rl_callback_handler_remove();
  sl_lua_cb_enter(L);
  rc = lua_pcall(L, 2, 1, 0);
  sl_lua_cb_leave(L);
  if (rc) {
    fprintf(stdout, "%s\n", lua_tostring(L, -1));
    lua_pop(L, 2);
    R.running = 0;
    free(src);
    install();
    return;
  }
  status = lua_tostring(L, -1);
  if (status && strcmp(status, "incomplete") == 0) {
    R.pending = src;
    R.running = 0;
    install();
  } else {
    free(src);
  }
  lua_pop(L, 2);
}

static void line_cb(char *line) {
  if (!line) { /* Ctrl-D */
    R.quit = 1;
    rl_callback_handler_remove();
    fputc('\n', stdout);
    uv_stop(R.loop);
    return;
  }
  submit(line);
  free(line);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  (void)h;
  (void)events;
  if (status < 0) {
    R.quit = 1;
    uv_stop(R.loop);
    return;
  }
  if (!R.running) rl_callback_read_char();
}

static void sigint_cb(uv_signal_t *h, int sig) {
  lua_State *L = R.L;
  int was_running;
  (void)h;
  (void)sig;
  lua_rawgeti(L, LUA_REGISTRYINDEX, R.repl_ref);
  lua_getfield(L, -1, "interrupt");
  sl_lua_cb_enter(L);
  was_running = lua_pcall(L, 0, 1, 0) == 0 && lua_toboolean(L, -1);
  sl_lua_cb_leave(L);
  lua_pop(L, 2);
  free(R.pending);
  R.pending = NULL;
  if (was_running) {
    fputs("\ninterrupted\n", stdout);
    R.running = 0;
    install();
  } else if (R.tty) {
    /* Ctrl-C at the prompt drops the line being typed */
    rl_replace_line("", 0);
    fputc('\n', stdout);
    rl_callback_handler_remove();
    install();
  }
  fflush(stdout);
}

/* ---- tab completion through slither.repl.complete ---- */

static char **matches;
static int nmatches, imatch;

static char *next_match(const char *text, int state) {
  (void)text;
  if (state == 0) imatch = 0;
  if (imatch < nmatches) return strdup(matches[imatch++]);
  return NULL;
}

static char **complete(const char *text, int start, int end) {
  lua_State *L = R.L;
  int i;
  (void)start;
  (void)end;
  for (i = 0; i < nmatches; i++) free(matches[i]);
  free(matches);
  matches = NULL;
  nmatches = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, R.repl_ref);
  lua_getfield(L, -1, "complete");
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1)) {
    int n = (int)lua_objlen(L, -1);
    matches = calloc((size_t)n + 1, sizeof *matches);
    for (i = 0; matches && i < n; i++) {
      lua_rawgeti(L, -1, i + 1);
      matches[nmatches++] = strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
  rl_completion_append_character = '\0';
  return rl_completion_matches(text, next_match);
}

/* Piped input: whole lines, no editing; each statement runs to its end. */
static void run_piped(void) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) >= 0) {
    if (n > 0 && line[n - 1] == '\n') line[n - 1] = '\0';
    submit(line);
    while (R.running && uv_run(R.loop, UV_RUN_ONCE)) {
    }
  }
  free(line);
}

int sl_repl_run(lua_State *L, uv_loop_t *loop) {
  const char *hist = getenv("SLITHER_HISTORY");
  const char *home = getenv("HOME");
  memset(&R, 0, sizeof R);
  R.L = L;
  R.loop = loop;
  R.tty = isatty(0) && isatty(1);
  lua_getglobal(L, "require");
  lua_pushstring(L, "slither.repl");
  if (lua_pcall(L, 1, 1, 0)) {
    fprintf(stderr, "slither: %s\n", lua_tostring(L, -1));
    return 1;
  }
  R.repl_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_signal_init(loop, &R.sigint);
  uv_signal_start(&R.sigint, sigint_cb, SIGINT);
  if (!R.tty) {
    run_piped();
  } else {
    if (hist && *hist) snprintf(R.history, sizeof R.history, "%s", hist);
    else snprintf(R.history, sizeof R.history, "%s/.slither_history", home ? home : ".");
    using_history();
    read_history(R.history);
    rl_catch_signals = 0;
    rl_attempted_completion_function = complete;
    printf("slither %s (%s, libuv %s). Ctrl-D exits, Ctrl-C interrupts.\n", SLITHER_VERSION,
           LUAJIT_VERSION, uv_version_string());
    uv_poll_init(loop, &R.poll, 0);
    uv_poll_start(&R.poll, UV_READABLE, poll_cb);
    install();
    while (!R.quit) uv_run(loop, UV_RUN_DEFAULT);
    uv_poll_stop(&R.poll);
    uv_close((uv_handle_t *)&R.poll, NULL);
    write_history(R.history);
  }
  uv_close((uv_handle_t *)&R.sigint, NULL);
  free(R.pending);
  /* stop pools and stores outside any loop callback */
  lua_rawgeti(L, LUA_REGISTRYINDEX, R.repl_ref);
  lua_getfield(L, -1, "shutdown");
  lua_pcall(L, 0, 0, 0);
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, R.repl_ref);
  return 0;
}
