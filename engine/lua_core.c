/* lua_core.c: the `slither.core` Lua module: the engine's loop, timers, pools and
 * codec as seen from Lua. The user API (the slither Lua modules) is built on it.
 *
 * Callbacks from the loop run Lua on a dedicated thread anchored in the registry,
 * never on a coroutine that may be dead by then. uv_run is not reentrant, so
 * run_once refuses to run from inside a callback. */
#include "codec.h"
#include "engine.h"
#include "error.h"
#include "pool.h"
#include "slither.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define ENGINE_KEY "slither.engine"

void sl_lua_store_open(lua_State *L);
#define POOL_MT "slither.pool"

typedef struct lcore {
  sl_engine e;
  lua_State *cbL;   /* dedicated callback thread */
  int in_run;       /* inside uv_run */
  int call_events;  /* deliver call.* events to Lua */
  int closed;
  unsigned callbacks; /* Lua callbacks run so far (spin watches it) */
  int cb_depth;       /* > 0 while Lua runs from a loop callback: no uv_run then */
  struct ltimer *timers; /* live timers, closed with the engine */
  uv_async_t sig_async;  /* core.on_stop_signals: the first signal, to Lua */
  int sig_ref;           /* its Lua function; LUA_NOREF: none */
  int sig_on;
  int spin_misses, spin_off;
} lcore;

typedef struct lpool {
  sl_pool *p;
  lcore *core;
  int start_ref, stop_ref, event_ref, view_ref;
} lpool;

static lcore *get_core(lua_State *L) {
  lcore *c;
  lua_getfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
  c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!c || c->closed) luaL_error(L, "slither engine is closed");
  return c;
}

/* Run the function on top of cbL's stack with nargs arguments; errors are logged
 * with a traceback and never escape into libuv. */
static void cb_call(lcore *c, int nargs) {
  lua_State *L = c->cbL;
  c->callbacks++;
  c->cb_depth++;
  int base = lua_gettop(L) - nargs;
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_remove(L, -2);
  lua_insert(L, base);
  if (lua_pcall(L, nargs, 0, base)) {
    sl_log(&c->e, SL_LOG_ERROR, "error in callback: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_remove(L, base);
  c->cb_depth--;
}

/* The REPL runs Lua from its own loop callbacks: it marks them the same way. */
void sl_lua_cb_enter(lua_State *L) { get_core(L)->cb_depth++; }
void sl_lua_cb_leave(lua_State *L) { get_core(L)->cb_depth--; }

static void push_ref(lua_State *L, int ref) { lua_rawgeti(L, LUA_REGISTRYINDEX, ref); }

/* ---- loop --------------------------------------------------------------------- */

static int l_now(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e6);
  return 1;
}

/* Poll the loop for a while before sleeping in it, while calls are out.
 *
 * Waking a process that sleeps on another CPU costs tens of microseconds on
 * virtual machines (an inter-processor interrupt each way), several times the
 * cost of the call itself. Polling for spin_us avoids it when replies come fast;
 * the worker does the same after each reply. The spin adapts: after 8 waits in a
 * row where it found nothing, it stays off for the next 64, so long calls do not
 * pay for it. Returns 1 when a callback ran. */
static int spin(lcore *c) {
  uint64_t deadline;
  unsigned before = c->callbacks;
  if (c->e.inflight <= 0 || !sl_spin_allowed(&c->e)) return 0;
  if (c->spin_off > 0) {
    c->spin_off--;
    return 0;
  }
  deadline = uv_hrtime() + (uint64_t)c->e.spin_us * 1000;
  do {
    uv_run(c->e.loop, UV_RUN_NOWAIT);
    if (c->callbacks != before) {
      c->spin_misses = 0;
      return 1;
    }
  } while (uv_hrtime() < deadline && c->e.inflight > 0);
  if (++c->spin_misses >= 8) {
    c->spin_misses = 0;
    c->spin_off = 64;
  }
  return 0;
}

static int l_run(lua_State *L) {
  lcore *c = get_core(L);
  const char *mode = luaL_optstring(L, 1, "once");
  int alive;
  if (c->in_run || c->cb_depth > 0)
    return luaL_error(L, "cannot wait for the loop from inside a loop callback "
                         "(run the waiting code in slither.spawn)");
  c->in_run = 1;
  if (strcmp(mode, "nowait") == 0) {
    alive = uv_run(c->e.loop, UV_RUN_NOWAIT);
  } else if (spin(c)) {
    alive = 1;
  } else {
    alive = uv_run(c->e.loop, UV_RUN_ONCE);
  }
  c->in_run = 0;
  lua_pushboolean(L, alive);
  return 1;
}

static int l_in_run(lua_State *L) {
  lcore *c = get_core(L);
  lua_pushboolean(L, c->in_run || c->cb_depth > 0);
  return 1;
}

/* A one-shot timer. Its Lua handle (a box) can stop it; the box and the timer
 * forget each other when either side is done, so neither outlives its memory. */
typedef struct ltimer {
  uv_timer_t t;
  lcore *core;
  int ref;     /* the function */
  int box_ref; /* keeps the box alive while the timer runs */
  struct ltimer **box;
  struct ltimer *next, *prev; /* the engine's live timers */
} ltimer;

static void timer_unlink(ltimer *lt) {
  if (lt->prev) lt->prev->next = lt->next;
  else lt->core->timers = lt->next;
  if (lt->next) lt->next->prev = lt->prev;
  lt->next = lt->prev = NULL;
}

static void timer_closed(uv_handle_t *h) { free(h); }

static void timer_done(ltimer *lt, lua_State *L) {
  timer_unlink(lt);
  uv_close((uv_handle_t *)&lt->t, timer_closed);
  *lt->box = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, lt->box_ref);
}

static void timer_cb(uv_timer_t *t) {
  ltimer *lt = (ltimer *)t;
  lcore *core = lt->core;
  lua_State *L = core->cbL;
  int ref = lt->ref;
  if (core->closed) {
    uv_close((uv_handle_t *)t, timer_closed);
    return;
  }
  timer_done(lt, L);
  push_ref(L, ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  cb_call(core, 0);
}

static int l_timer_stop(lua_State *L) {
  ltimer **box = luaL_checkudata(L, 1, "slither.timer");
  ltimer *lt = *box;
  if (lt) {
    uv_timer_stop(&lt->t);
    luaL_unref(L, LUA_REGISTRYINDEX, lt->ref);
    timer_done(lt, L);
  }
  return 0;
}

/* core.timer(ms, fn) -> handle: call fn once after ms milliseconds;
 * handle:stop() cancels it. */
static int l_timer(lua_State *L) {
  lcore *c = get_core(L);
  double ms = luaL_checknumber(L, 1);
  ltimer *lt, **box;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lt = malloc(sizeof *lt);
  if (!lt) return luaL_error(L, "out of memory");
  box = lua_newuserdata(L, sizeof *box);
  *box = lt;
  if (luaL_newmetatable(L, "slither.timer")) {
    lua_newtable(L);
    lua_pushcfunction(L, l_timer_stop);
    lua_setfield(L, -2, "stop");
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lt->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lt->box = box;
  lua_pushvalue(L, 2);
  lt->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lt->core = c;
  lt->prev = NULL;
  lt->next = c->timers;
  if (c->timers) c->timers->prev = lt;
  c->timers = lt;
  uv_timer_init(c->e.loop, &lt->t);
  /* The loop's clock is cached: after a long stretch of Lua it lags, and the
   * timer would fire early. A 0 ms timer started from a timer callback would
   * run in the same pass of the loop, again and again, starving I/O: sleep(0)
   * waits 1 ms, one turn of the loop. */
  uv_update_time(c->e.loop);
  /* NaN waits 1 ms; anything past 2^53 ms (285,000 years) waits that long */
  uv_timer_start(&lt->t, timer_cb, ms >= 1 ? (ms < 9007199254740992.0 ? (uint64_t)ms
                                                                      : (uint64_t)1 << 53)
                                           : 1, 0);
  return 1;
}

struct handle_count {
  const lcore *c;
  int n;
};

static void count_handle(uv_handle_t *h, void *arg) {
  struct handle_count *hc = arg;
  /* the engine's own, which live as long as it: the reaper check and the signal
   * watch */
  if (h == (uv_handle_t *)&hc->c->e.reaper_watch || h == (uv_handle_t *)&hc->c->sig_async)
    return;
  if (!uv_is_closing(h)) hc->n++;
}

/* core.handles(): open libuv handles (not counting closing ones, nor the engine's
 * own). */
static int l_handles(lua_State *L) {
  struct handle_count hc;
  hc.c = get_core(L);
  hc.n = 0;
  uv_walk(hc.c->e.loop, count_handle, &hc);
  lua_pushinteger(L, hc.n);
  return 1;
}

static int l_log(lua_State *L) {
  lcore *c = get_core(L);
  int level = sl_log_level_parse(luaL_checkstring(L, 1));
  sl_log(&c->e, level, "%s", luaL_checkstring(L, 2));
  return 0;
}

static int l_set_log_level(lua_State *L) {
  get_core(L)->e.log_level = sl_log_level_parse(luaL_checkstring(L, 1));
  return 0;
}

static int l_paths(lua_State *L) {
  lcore *c = get_core(L);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, c->e.lua_path);
  lua_setfield(L, -2, "lua");
  lua_pushstring(L, c->e.worker_path);
  lua_setfield(L, -2, "worker");
  lua_pushstring(L, c->e.python);
  lua_setfield(L, -2, "python");
  return 1;
}

static int l_versions(lua_State *L) {
  lua_createtable(L, 0, 3);
  lua_pushstring(L, SLITHER_VERSION);
  lua_setfield(L, -2, "slither");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "libuv");
  lua_getglobal(L, "jit");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "version");
    lua_setfield(L, -3, "luajit");
  }
  lua_pop(L, 1);
  return 1;
}

static int l_set_call_events(lua_State *L) {
  get_core(L)->call_events = lua_toboolean(L, 1);
  return 0;
}

static int l_pid_alive(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  char path[64];
  FILE *f;
  int alive = 0;
  /* A zombie counts as gone: it holds no resources but its slot. */
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  f = fopen(path, "r");
  if (f) {
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    char *rp;
    buf[n] = '\0';
    rp = strrchr(buf, ')');
    alive = !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
    fclose(f);
  }
  lua_pushboolean(L, alive);
  return 1;
}

/* ---- codec -------------------------------------------------------------------- */

static int l_encode(lua_State *L) {
  sl_buf json, att;
  char err[512];
  int rc, as_list = lua_toboolean(L, 2);
  luaL_checkany(L, 1);
  sl_buf_init(&json);
  sl_buf_init(&att);
  rc = sl_codec_encode(L, 1, as_list, &json, &att, err, sizeof err);
  if (rc) {
    sl_buf_free(&json);
    sl_buf_free(&att);
    return luaL_error(L, "cannot encode %s", err);
  }
  lua_pushlstring(L, json.data ? json.data : "", json.len);
  lua_pushlstring(L, att.data ? att.data : "", att.len);
  sl_buf_free(&json);
  sl_buf_free(&att);
  return 2;
}

static int l_decode(lua_State *L) {
  size_t n, an = 0;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *a = luaL_optlstring(L, 2, "", &an);
  char err[256];
  if (sl_codec_decode(L, s, n, a, an, err, sizeof err)) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

/* ---- pools -------------------------------------------------------------------- */

static lpool *check_pool(lua_State *L, int idx) {
  lpool *lp = luaL_checkudata(L, idx, POOL_MT);
  if (!lp->p) luaL_error(L, "pool is closed");
  return lp;
}

static const char **string_list(lua_State *L, int idx, const char *field) {
  const char **out;
  size_t n, i;
  lua_getfield(L, idx, field);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  n = lua_objlen(L, -1);
  out = calloc(n + 1, sizeof *out);
  for (i = 0; out && i < n; i++) {
    lua_rawgeti(L, -1, (int)i + 1);
    out[i] = lua_tostring(L, -1); /* anchored by the table, which outlives the call */
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return out;
}

static void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void start_cb(sl_pool *p, int status, const char *msg, void *ud) {
  lpool *lp = ud;
  lua_State *L = lp->core->cbL;
  int ref = lp->start_ref;
  (void)p;
  if (ref == LUA_NOREF || lp->core->closed) return;
  lp->start_ref = LUA_NOREF;
  push_ref(L, ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  if (status == 0) {
    lua_pushboolean(L, 1);
    cb_call(lp->core, 1);
  } else {
    /* a pool that failed to start is stopped: as in stop_cb, let go of the view
     * function, which holds its handle */
    if (lp->view_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->view_ref);
    lp->view_ref = LUA_NOREF;
    lua_pushnil(L);
    lua_createtable(L, 0, 3);
    set_str(L, "kind", sl_err_name(status));
    set_str(L, "message", msg ? msg : sl_strerror(status));
    set_str(L, "pool", sl_pool_name(lp->p));
    cb_call(lp->core, 2);
  }
}

static int safe_decode(lua_State *L, const char *data, size_t len, int pickle);

/* The message of a failed call: a worker's error carries its own in its meta. */
static void set_call_message(lua_State *L, const sl_call *c, int status) {
  if ((status == SL_EPYTHON || status == SL_EIMPORT || status == SL_EMISMATCH ||
       status == SL_ECODEC) &&
      c->res_meta_len && safe_decode(L, c->res_meta, c->res_meta_len, 0) == 0) {
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "message");
      if (lua_isstring(L, -1)) {
        lua_setfield(L, -3, "message");
        lua_pop(L, 1);
        return;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  set_str(L, "message", c->message[0] ? c->message : sl_strerror(status));
}

/* One table per event; slither.pool splits it into measurements and metadata
 * (README, Telemetry). A field is set only where it means something. */
static void event_cb(sl_pool *p, const sl_pool_event *ev, void *ud) {
  lpool *lp = ud;
  lua_State *L = lp->core->cbL;
  const char *n = ev->name;
  if (lp->event_ref == LUA_NOREF || lp->core->closed) return;
  if (ev->call && !lp->core->call_events) return;
  push_ref(L, lp->event_ref);
  lua_createtable(L, 0, 12);
  set_str(L, "name", n);
  set_str(L, "pool", sl_pool_name(p));
  if (ev->worker && ev->worker[0]) set_str(L, "worker", ev->worker);
  if (ev->pid) set_num(L, "pid", ev->pid);
  if (ev->reason) set_str(L, "reason", ev->reason);
  if (!strcmp(n, "worker.ready") || !strcmp(n, "worker.exit") || !strcmp(n, "worker.recycle") ||
      !strcmp(n, "call.stop") || !strcmp(n, "call.exception"))
    set_num(L, "duration_ms", ev->duration_ms);
  if (!strcmp(n, "worker.exit")) {
    set_num(L, "exit_status", (double)ev->exit_status);
    set_num(L, "signal", ev->term_signal);
  }
  if (ev->call) {
    set_str(L, "module", ev->call->module);
    set_str(L, "function", ev->call->function);
    set_str(L, "session", ev->call->session);
    set_num(L, "call_id", ev->call->id);
    set_num(L, "items", (double)ev->call->nitems);
    set_num(L, "queued_ms", ev->call->queued_ms);
    if (ev->status) {
      set_str(L, "kind", sl_err_name(ev->status));
      set_call_message(L, ev->call, ev->status);
    }
  }
  if (ev->hello && safe_decode(L, ev->hello, ev->hello_len, 0) == 0)
    lua_setfield(L, -2, "hello");
  cb_call(lp->core, 1);
}

static int result_check(sl_call *c, void *ud);

/* The number at idx as an option of the C side, raising a message that names it
 * when it is not a number in [lo, hi] (NaN and infinities never are). mode 0: an
 * integer; 1: milliseconds, a fraction rounded up (0.5 is 1 ms, not "none"); 2:
 * any number. */
static double opt_range(lua_State *L, const char *name, int idx, double lo, double hi,
                        int mode) {
  double v;
  if (lua_type(L, idx) != LUA_TNUMBER)
    return luaL_error(L, "option '%s' must be a number, got %s", name, luaL_typename(L, idx));
  v = lua_tonumber(L, idx);
  if (mode == 1 && v > 0) v = ceil(v);
  if (!(v >= lo && v <= hi) || (mode == 0 && v != floor(v)))
    return luaL_error(L, "option '%s' must be %s from %g to %g, got %s", name,
                      mode == 0 ? "an integer" : mode == 1 ? "a number of milliseconds"
                                                           : "a number",
                      lo, hi, lua_tostring(L, idx));
  return v;
}

/* core.pool_start(opts, on_started[, on_event]) -> pool. on_started(true) or
 * (nil, err); on_event(ev) for every event from the first worker.start on. */
static int l_pool_start(lua_State *L) {
  lcore *c = get_core(L);
  sl_pool_opts o;
  lpool *lp;
  const char **path, **env;
  char msg[256];
  int err;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  sl_pool_opts_default(&o);
  /* Lua checked these already (slither.pool.start); a caller of core.pool_start
   * that did not still gets a message naming the option, never a cast of a value
   * outside an int (undefined) */
#define OPT_INT(name, lo, hi)                                                      \
  lua_getfield(L, 1, #name);                                                       \
  if (!lua_isnil(L, -1)) o.name = (int)opt_range(L, #name, -1, lo, hi, 0);         \
  lua_pop(L, 1);
#define OPT_MS(name, lo)                                                           \
  lua_getfield(L, 1, #name);                                                       \
  if (!lua_isnil(L, -1)) o.name = (int)opt_range(L, #name, -1, lo, INT_MAX, 1);    \
  lua_pop(L, 1);
#define OPT_NUM(name, lo, hi)                                                      \
  lua_getfield(L, 1, #name);                                                       \
  if (!lua_isnil(L, -1)) o.name = opt_range(L, #name, -1, lo, hi, 2);              \
  lua_pop(L, 1);
  OPT_INT(size, 1, SL_POOL_MAX_SIZE)
  OPT_MS(startup_timeout_ms, 1)
  OPT_INT(threads, 1, SL_POOL_MAX_SIZE)
  OPT_MS(call_timeout_ms, 0)
  OPT_INT(max_calls, 0, INT_MAX)
  OPT_NUM(max_calls_jitter, 0, 0.999999)
  OPT_INT(max_rss_mb, 0, 1048576)
  OPT_NUM(ttl_s, 0, 1e9)
  OPT_INT(max_start_failures, 1, INT_MAX)
#undef OPT_INT
#undef OPT_MS
#undef OPT_NUM
  lua_getfield(L, 1, "max_frame_mb");
  if (!lua_isnil(L, -1))
    o.max_frame_bytes = (size_t)(opt_range(L, "max_frame_mb", -1, 1, 4095, 2) * 1024 * 1024);
  lua_pop(L, 1);
  lua_getfield(L, 1, "codec");
  if (lua_isstring(L, -1))
    o.codec = !strcmp(lua_tostring(L, -1), "json") ? SL_CODEC_JSON
              : !strcmp(lua_tostring(L, -1), "pickle") ? SL_CODEC_PICKLE : -1;
  lua_pop(L, 1);
  lua_getfield(L, 1, "affinity");
  if (lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), "strict"))
    o.affinity = SL_AFFINITY_STRICT;
  lua_pop(L, 1);
  lua_getfield(L, 1, "name");
  o.name = lua_tostring(L, -1);
  lua_pop(L, 1); /* the opts table keeps the string alive */
  lua_getfield(L, 1, "python");
  o.python = lua_tostring(L, -1);
  lua_pop(L, 1);
  path = string_list(L, 1, "path");
  env = string_list(L, 1, "env");
  o.path = path;
  o.env = env;

  lp = lua_newuserdata(L, sizeof *lp);
  memset(lp, 0, sizeof *lp);
  lp->core = c;
  lp->start_ref = lp->stop_ref = lp->event_ref = lp->view_ref = LUA_NOREF;
  luaL_getmetatable(L, POOL_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 2);
  lp->start_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (lua_isfunction(L, 3)) {
    lua_pushvalue(L, 3);
    lp->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  o.on_event = event_cb; /* silent until an event function is set */
  o.event_ud = lp;
  lp->p = sl_pool_start(&c->e, &o, start_cb, lp, &err, msg, sizeof msg);
  if (lp->p) sl_pool_on_result(lp->p, result_check);
  free(path);
  free(env);
  if (!lp->p) {
    luaL_unref(L, LUA_REGISTRYINDEX, lp->start_ref);
    if (lp->event_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->event_ref);
    lp->start_ref = lp->event_ref = LUA_NOREF;
    return luaL_error(L, "%s", msg);
  }
  return 1;
}

static int l_pool_on_event(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  if (lp->event_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->event_ref);
  lp->event_ref = LUA_NOREF;
  if (lua_isfunction(L, 2)) {
    lua_pushvalue(L, 2);
    lp->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    sl_pool_on_event(lp->p, event_cb, lp);
  } else {
    sl_pool_on_event(lp->p, NULL, NULL);
  }
  return 0;
}

typedef struct lcall {
  lcore *core;
  int ref;
  int items_ref; /* call_items: the item list whose payloads are replaced */
  int res_ref;   /* the decoded result, between result_check and call_cb */
  int first;
  const char *pool;
} lcall;

static void push_call_error(lua_State *L, sl_call *c, int status, const char *pool) {
  char err[256];
  int top = lua_gettop(L);
  if ((status == SL_EPYTHON || status == SL_EIMPORT || status == SL_EMISMATCH ||
       status == SL_ECODEC) &&
      c->res_meta_len &&
      sl_codec_decode(L, c->res_meta, c->res_meta_len, NULL, 0, err, sizeof err) == 0 &&
      lua_istable(L, -1)) {
    /* {kind, type, message, traceback, worker, pid} from the worker; the kind is
     * the one the pool read from the same meta, so telemetry and caller agree */
    set_str(L, "kind", sl_err_name(status));
  } else {
    lua_settop(L, top); /* drop a decoded meta that is not a table */
    lua_createtable(L, 0, 8);
    set_str(L, "kind", sl_err_name(status));
    set_str(L, "message", c->message[0] ? c->message : sl_strerror(status));
  }
  set_str(L, "pool", pool);
  if (c->worker[0]) set_str(L, "worker", c->worker);
  if (c->worker_pid) set_num(L, "pid", c->worker_pid);
  if (status == SL_ECRASHED) {
    if (c->exit_status >= 0) set_num(L, "exit_status", (double)c->exit_status);
    if (c->term_signal) set_num(L, "signal", c->term_signal);
  }
  set_str(L, "module", c->module);
  set_str(L, "function", c->function);
  if (c->session) set_str(L, "session", c->session);
}

/* Decode a successful result: leaves the results (or true, for call_items, whose
 * items now hold them) and returns 0, or leaves nothing and returns the error
 * code with c->message set. */
static int decode_result(lua_State *L, lcall *lc, sl_call *c) {
  char err[256];
  if ((c->res_flags & SL_FRAME_FLAG_PICKLE)
          ? sl_codec_decode_pickle(L, c->res_data, c->res_data_len, (int)c->nitems, err,
                                   sizeof err)
          : sl_codec_decode_hint(L, c->res_data, c->res_data_len, c->res_att, c->res_att_len,
                                 (int)c->nitems, err, sizeof err)) {
    snprintf(c->message, sizeof c->message, "the result from %s cannot be read: %s",
             c->worker, err);
    c->res_meta_len = 0; /* the error is the engine's, not a worker error meta */
    return SL_ECODEC;
  }
  if (!lua_istable(L, -1) || lua_objlen(L, -1) != c->nitems) {
    lua_pop(L, 1);
    snprintf(c->message, sizeof c->message,
             "%s.%s returned a result that is not a list of %d items", c->module, c->function,
             (int)c->nitems);
    c->res_meta_len = 0; /* the error is the engine's, not a worker error meta */
    return SL_EMISMATCH;
  }
  if (lc->items_ref != LUA_NOREF) {
    /* results[k] becomes items[first + k - 1].payload */
    int k, n = (int)c->nitems;
    int res = lua_gettop(L);
    push_ref(L, lc->items_ref);
    lua_pushliteral(L, "payload"); /* interned once, not once per item */
    for (k = 1; k <= n; k++) {
      lua_rawgeti(L, res + 1, lc->first + k - 1);
      lua_pushvalue(L, res + 2);
      lua_rawgeti(L, res, k);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
    lua_settop(L, res - 1);
    lua_pushboolean(L, 1);
  }
  return 0;
}

typedef struct check_args {
  lcall *lc;
  sl_call *c;
  int status;
} check_args;

static int check_p(lua_State *L) {
  check_args *a = lua_touserdata(L, 1);
  lua_pop(L, 1);
  a->status = decode_result(L, a->lc, a->c);
  if (a->status) lua_pushnil(L);
  return 1;
}

/* The pool's result check (sl_call_check): the result is decoded before the
 * call's end is reported, so a result the caller cannot read is reported as the
 * error it becomes. The decoded value waits in the registry for call_cb. A Lua
 * error while decoding (no memory, a string too long for Lua) is a codec error. */
static int result_check(sl_call *c, void *ud) {
  lcall *lc = ud;
  lua_State *L = lc->core->cbL;
  int top = lua_gettop(L);
  check_args a;
  if (lc->core->closed) return 0;
  a.lc = lc;
  a.c = c;
  a.status = 0;
  lua_pushcfunction(L, check_p);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 1, 0)) {
    snprintf(c->message, sizeof c->message, "the result from %s cannot be read: %s", c->worker,
             lua_tostring(L, -1));
    lua_settop(L, top);
    return SL_ECODEC;
  }
  if (a.status) {
    lua_settop(L, top);
    return a.status;
  }
  lc->res_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Leaves (results|true, nil) or (nil, err) on the stack. */
static void push_outcome(lua_State *L, lcall *lc, sl_call *c, int status) {
  if (status == 0 && lc->res_ref == LUA_NOREF) {
    status = SL_ECODEC;
    snprintf(c->message, sizeof c->message, "the result from %s was not read", c->worker);
  }
  if (status) {
    lua_pushnil(L);
    push_call_error(L, c, status, lc->pool);
    return;
  }
  push_ref(L, lc->res_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lc->res_ref);
  lc->res_ref = LUA_NOREF;
  lua_pushnil(L);
}

typedef struct outcome_args {
  lcall *lc;
  sl_call *c;
  int status;
} outcome_args;

/* Decoding a result builds Lua values, and a bad result (or no memory) can raise:
 * it runs protected, leaving callback, outcome and info on cbL's stack. */
static int outcome_p(lua_State *L) {
  outcome_args *a = lua_touserdata(L, 1);
  lua_pop(L, 1);
  push_ref(L, a->lc->ref);
  push_outcome(L, a->lc, a->c, a->status);
  lua_createtable(L, 0, 6); /* info: where and how the call ran */
  if (a->c->worker[0]) set_str(L, "worker", a->c->worker);
  set_num(L, "bytes_out", (double)a->c->bytes_out);
  set_num(L, "bytes_in", (double)(a->c->res_data_len + a->c->res_att_len));
  set_num(L, "queued_ms", a->c->queued_ms);
  set_num(L, "run_ms", a->c->run_ms);
  return 4;
}

static void call_cb(sl_call *c, int status, void *ud) {
  lcall *lc = ud;
  lcore *core = lc->core;
  lua_State *L = core->cbL;
  outcome_args a;
  int top = lua_gettop(L);
  if (core->closed) { /* the Lua state is going away: nobody waits */
    free(lc);
    return;
  }
  a.lc = lc;
  a.c = c;
  a.status = status;
  lua_pushcfunction(L, outcome_p);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 4, 0)) {
    /* the result could not be turned into Lua values: the caller gets an error */
    char msg[300];
    snprintf(msg, sizeof msg, "the result from %s cannot be read: %s", c->worker,
             lua_tostring(L, -1));
    lua_settop(L, top);
    push_ref(L, lc->ref);
    lua_pushnil(L);
    lua_createtable(L, 0, 3);
    set_str(L, "kind", "codec");
    set_str(L, "message", msg);
    if (c->worker[0]) set_str(L, "worker", c->worker);
    lua_createtable(L, 0, 0);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, lc->ref);
  if (lc->items_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lc->items_ref);
  if (lc->res_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lc->res_ref);
  free(lc);
  cb_call(core, 3);
}

static int submit(lua_State *L, lpool *lp, int items_idx, int first, int last, int arg0) {
  const char *mod = luaL_checkstring(L, 2);
  const char *fn = luaL_checkstring(L, 3);
  const char *session = luaL_optstring(L, arg0, NULL);
  int timeout = lua_isnoneornil(L, arg0 + 1)
                    ? 0
                    : (int)opt_range(L, "timeout_ms", arg0 + 1, 0, INT_MAX, 1);
  const char *avoid = luaL_optstring(L, arg0 + 2, NULL);
  int sticky = lua_toboolean(L, arg0 + 3);
  sl_buf data, att;
  char err[512];
  lcall *lc;
  size_t n;
  int rc, fmt;
  luaL_checktype(L, arg0 + 4, LUA_TFUNCTION);
  sl_buf_init(&data);
  sl_buf_init(&att);
  fmt = sl_pool_codec(lp->p);
  if (first) {
    rc = sl_codec_encode_field(L, items_idx, first, last, "payload", fmt, &data, &att, err,
                               sizeof err);
    n = last >= first ? (size_t)(last - first + 1) : 0;
  } else {
    rc = sl_codec_encode_fmt(L, items_idx, 1, fmt, &data, &att, err, sizeof err);
    n = lua_objlen(L, items_idx);
  }
  if (rc) {
    sl_buf_free(&data);
    sl_buf_free(&att);
    return luaL_error(L, "cannot encode payloads%s%s", err[0] == '[' ? "" : ": ", err);
  }
  lc = malloc(sizeof *lc);
  if (!lc) return luaL_error(L, "out of memory");
  lc->core = lp->core;
  lc->pool = sl_pool_name(lp->p);
  lc->first = first;
  lc->items_ref = LUA_NOREF;
  lc->res_ref = LUA_NOREF;
  if (first) {
    lua_pushvalue(L, items_idx);
    lc->items_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_pushvalue(L, arg0 + 4);
  lc->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  {
    uint32_t id = sl_pool_call(lp->p, mod, fn, session, &data, &att,
                               (fmt == SL_CODEC_PICKLE ? SL_FRAME_FLAG_PICKLE : 0) |
                                   (sticky ? SL_CALL_STICKY : 0),
                               n, timeout, avoid, call_cb, lc);
    sl_buf_free(&data);
    sl_buf_free(&att);
    if (!id) return 0; /* finished already: its callback ran */
    lua_pushnumber(L, id);
    return 1;
  }
}

/* pool:cancel(call_id) -> true when the call was still running or queued. */
static int l_pool_cancel(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  lua_pushboolean(L, sl_pool_cancel(lp->p, (uint32_t)luaL_checknumber(L, 2)) == 0);
  return 1;
}

/* pool:call(module, fn, payloads, session, timeout_ms, avoid, sticky, cb):
 * cb(results, nil, info) or cb(nil, err, info). Encoding errors raise here. */
static int l_pool_call(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  luaL_checktype(L, 4, LUA_TTABLE);
  return submit(L, lp, 4, 0, 0, 5);
}

/* pool:call_items(module, fn, items, first, last, session, timeout_ms, avoid, sticky, cb):
 * sends items[first..last].payload; on success the results replace those payloads
 * and cb(true, nil, info) runs; otherwise cb(nil, err, info) and items are intact. */
static int l_pool_call_items(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  int first = (int)luaL_checkinteger(L, 5), last = (int)luaL_checkinteger(L, 6);
  luaL_checktype(L, 4, LUA_TTABLE);
  if (first < 1 || last < first - 1) return luaL_argerror(L, 5, "bad item range");
  return submit(L, lp, 4, first, last, 7);
}

typedef struct decode_args {
  const char *data;
  size_t len;
  int pickle;
  char err[256];
  int rc;
} decode_args;

static int decode_p(lua_State *L) {
  decode_args *a = lua_touserdata(L, 1);
  lua_pop(L, 1);
  a->rc = a->pickle ? sl_codec_decode_pickle(L, a->data, a->len, 0, a->err, sizeof a->err)
                    : sl_codec_decode(L, a->data, a->len, NULL, 0, a->err, sizeof a->err);
  if (a->rc) lua_pushnil(L);
  return 1;
}

/* Decode bytes a worker sent into one Lua value on L, protected: a Lua error
 * (a string too long for Lua, no memory) becomes a failed decode, never a panic. */
static int safe_decode(lua_State *L, const char *data, size_t len, int pickle) {
  decode_args a;
  a.data = data;
  a.len = len;
  a.pickle = pickle;
  a.rc = 0;
  lua_pushcfunction(L, decode_p);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 1, 0)) {
    lua_pop(L, 1);
    return SL_ECODEC;
  }
  if (a.rc) {
    lua_pop(L, 1);
    return a.rc;
  }
  return 0;
}

/* A view request from a worker: fn(worker_id, req_id, view, session, args, worker)
 * runs on the loop; it answers later with pool:view_reply. */
static void view_cb(sl_pool *p, int worker_id, const char *worker, uint32_t req_id,
                    const char *view, const char *session, const char *data, size_t len,
                    int flags, void *ud) {
  lpool *lp = ud;
  lua_State *L = lp->core->cbL;
  char err[256];
  int rc;
  if (lp->view_ref == LUA_NOREF || lp->core->closed) {
    sl_pool_view_reply(p, worker_id, req_id, "views are not available", NULL, 0);
    return;
  }
  push_ref(L, lp->view_ref);
  lua_pushinteger(L, worker_id);
  lua_pushnumber(L, req_id);
  lua_pushstring(L, view);
  if (session) lua_pushstring(L, session);
  else lua_pushnil(L);
  (void)err;
  rc = safe_decode(L, data, len, (flags & SL_FRAME_FLAG_PICKLE) != 0);
  if (rc) {
    lua_pop(L, 5);
    sl_pool_view_reply(p, worker_id, req_id, "the view's arguments could not be decoded",
                       NULL, 0);
    return;
  }
  lua_pushstring(L, worker);
  cb_call(lp->core, 6);
}

static int l_pool_on_view(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (lp->view_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->view_ref);
  lua_pushvalue(L, 2);
  lp->view_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  sl_pool_on_view(lp->p, view_cb, lp);
  return 0;
}

/* pool:view_reply(worker_id, req_id, ok, value_or_message) */
static int l_pool_view_reply(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  int wid = (int)luaL_checkinteger(L, 2);
  uint32_t rid = (uint32_t)luaL_checknumber(L, 3);
  sl_buf data, att;
  char err[512];
  if (!lua_toboolean(L, 4)) {
    sl_pool_view_reply(lp->p, wid, rid, luaL_optstring(L, 5, "view failed"), NULL, 0);
    return 0;
  }
  sl_buf_init(&data);
  sl_buf_init(&att);
  if (sl_codec_encode_fmt(L, 5, 0, SL_CODEC_PICKLE, &data, &att, err, sizeof err)) {
    char msg[600];
    snprintf(msg, sizeof msg, "the view's result cannot be encoded: %s", err);
    sl_buf_free(&data);
    sl_buf_free(&att);
    sl_pool_view_reply(lp->p, wid, rid, msg, NULL, 0);
    return 0;
  }
  sl_buf_free(&att);
  sl_pool_view_reply(lp->p, wid, rid, NULL, &data, SL_FRAME_FLAG_PICKLE);
  return 0;
}

static int l_pool_stats(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  sl_pool_stats s;
  sl_pool_stats_get(lp->p, &s);
  lua_createtable(L, 0, 12);
  set_num(L, "workers", s.workers);
  set_num(L, "ready", s.ready);
  set_num(L, "busy", s.busy);
  set_num(L, "capacity", s.capacity);
  set_num(L, "queued", s.queued);
  set_num(L, "calls", (double)s.calls);
  set_num(L, "errors", (double)s.errors);
  set_num(L, "restarts", (double)s.restarts);
  set_num(L, "recycles", (double)s.recycles);
  set_num(L, "timeouts", (double)s.timeouts);
  set_str(L, "codec", sl_pool_codec(lp->p) == SL_CODEC_PICKLE ? "pickle" : "json");
  lua_pushboolean(L, s.failed);
  lua_setfield(L, -2, "failed");
  lua_pushboolean(L, s.stopped);
  lua_setfield(L, -2, "stopped");
  {
    sl_worker_info wi[256];
    int i, n = sl_pool_workers(lp->p, wi, 256);
    lua_createtable(L, n, 0);
    for (i = 0; i < n; i++) {
      lua_createtable(L, 0, 5);
      set_str(L, "name", wi[i].name);
      set_num(L, "pid", wi[i].pid);
      set_num(L, "busy", wi[i].busy);
      set_num(L, "calls", wi[i].calls);
      set_str(L, "state", wi[i].state);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "per_worker");
  }
  return 1;
}

static int l_pool_pids(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  int pids[1024], n, i;
  n = sl_pool_pids(lp->p, pids, 1024);
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, pids[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int l_pool_release(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  sl_pool_release_session(lp->p, luaL_checkstring(L, 2));
  return 0;
}

static void stop_cb(sl_pool *p, void *ud) {
  lpool *lp = ud;
  lua_State *L = lp->core->cbL;
  int ref = lp->stop_ref;
  (void)p;
  if (ref == LUA_NOREF || lp->core->closed) return;
  lp->stop_ref = LUA_NOREF;
  /* A stopped pool asks no view again; the view function holds the handle (it
   * answers through it), so keeping it would keep the handle, and the pool,
   * alive for the engine's life. (Events go on: a call refused as stopped.) */
  if (lp->view_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->view_ref);
  lp->view_ref = LUA_NOREF;
  push_ref(L, ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  cb_call(lp->core, 0);
}

/* pool:stop(grace_ms, cb): cb() when every worker is gone. */
static int l_pool_stop(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  int grace = lua_isnoneornil(L, 2) ? 5000 : (int)opt_range(L, "grace_ms", 2, 0, INT_MAX, 1);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (lp->stop_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->stop_ref);
  lua_pushvalue(L, 3);
  lp->stop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  sl_pool_stop(lp->p, grace, stop_cb, lp);
  return 0;
}

static int l_pool_kill(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  sl_pool_kill(lp->p);
  return 0;
}

static int l_pool_stopped(lua_State *L) {
  lpool *lp = check_pool(L, 1);
  lua_pushboolean(L, sl_pool_is_stopped(lp->p));
  return 1;
}

/* Collected pool: its workers must not outlive it, and its memory goes with it
 * (once the engine closes, the engine frees what is left). */
static int l_pool_gc(lua_State *L) {
  lpool *lp = luaL_checkudata(L, 1, POOL_MT);
  if (lp->p && !lp->core->closed) sl_pool_release(lp->p);
  if (lp->start_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->start_ref);
  if (lp->stop_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->stop_ref);
  if (lp->event_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->event_ref);
  if (lp->view_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, lp->view_ref);
  lp->start_ref = lp->stop_ref = lp->event_ref = lp->view_ref = LUA_NOREF;
  lp->p = NULL;
  return 0;
}

static int l_pool_tostring(lua_State *L) {
  lpool *lp = luaL_checkudata(L, 1, POOL_MT);
  lua_pushfstring(L, "slither.pool(%s)", lp->p ? sl_pool_name(lp->p) : "closed");
  return 1;
}

/* ---- engine lifetime ----------------------------------------------------------- */

/* ---- stop signals (the slither program: core.on_stop_signals) --------------------
 * SIGINT and SIGTERM stop a run cleanly: the first reaches Lua through an async
 * handle, on the loop, which cancels the work and stops the pools. The second
 * ends the process at once, from the handler itself, so it works even while Lua
 * never returns to the loop; the reaper then kills the workers and unlinks the
 * store files (reaper.h). */
static volatile sig_atomic_t stop_signals_seen, stop_signal_last;
static uv_async_t *stop_async;

static void stop_signal_handler(int sig) {
  if (stop_signals_seen++ > 0) _exit(128 + sig);
  stop_signal_last = sig;
  if (stop_async) uv_async_send(stop_async);
}

static void stop_async_cb(uv_async_t *a) {
  lcore *c = a->data;
  lua_State *L = c->cbL;
  if (c->sig_ref == LUA_NOREF || c->closed || !stop_signal_last) return;
  push_ref(L, c->sig_ref);
  lua_pushinteger(L, stop_signal_last);
  cb_call(c, 1);
}

/* core.on_stop_signals(fn): fn(signum) on the loop at the first SIGINT or SIGTERM;
 * a second one exits with 128 + its number. */
static int l_on_stop_signals(lua_State *L) {
  lcore *c = get_core(L);
  struct sigaction sa;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (c->sig_on) return luaL_error(L, "stop signals are handled already");
  if (uv_async_init(c->e.loop, &c->sig_async, stop_async_cb))
    return luaL_error(L, "cannot watch for signals");
  c->sig_async.data = c;
  uv_unref((uv_handle_t *)&c->sig_async); /* waiting for a signal keeps no loop alive */
  lua_pushvalue(L, 1);
  c->sig_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->sig_on = 1;
  stop_async = &c->sig_async;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = stop_signal_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  return 0;
}

static void sig_async_closed(uv_handle_t *h) { (void)h; }

static int l_engine_gc(lua_State *L) {
  lcore *c = lua_touserdata(L, 1);
  if (!c->closed) {
    /* Timers still pending close now: on a loop the host keeps, they would fire
     * after this memory is gone. Their close callback only frees the timer. */
    while (c->timers) {
      ltimer *lt = c->timers;
      timer_unlink(lt);
      uv_timer_stop(&lt->t);
      uv_close((uv_handle_t *)&lt->t, timer_closed);
    }
    if (c->sig_on) {
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      stop_async = NULL;
      c->sig_on = 0;
      uv_close((uv_handle_t *)&c->sig_async, sig_async_closed);
    }
    c->closed = 1;
    sl_engine_close(&c->e);
  }
  return 0;
}

static int l_error_kinds(lua_State *L) {
  lua_newtable(L);
#define XX(code, name, msg)  \
  lua_pushstring(L, msg);   \
  lua_setfield(L, -2, name);
  SL_ERRNO_MAP(XX)
#undef XX
  return 1;
}

static const luaL_Reg pool_methods[] = {
    {"call", l_pool_call},       {"call_items", l_pool_call_items},
    {"stats", l_pool_stats},
    {"pids", l_pool_pids},       {"release_session", l_pool_release},
    {"stop", l_pool_stop},       {"kill", l_pool_kill},
    {"stopped", l_pool_stopped}, {"on_event", l_pool_on_event},
    {"on_view", l_pool_on_view}, {"view_reply", l_pool_view_reply},
    {"cancel", l_pool_cancel},
    {NULL, NULL}};

static const luaL_Reg core_funcs[] = {
    {"now", l_now},
    {"run", l_run},
    {"in_run", l_in_run},
    {"timer", l_timer},
    {"on_stop_signals", l_on_stop_signals},
    {"handles", l_handles},
    {"log", l_log},
    {"set_log_level", l_set_log_level},
    {"paths", l_paths},
    {"versions", l_versions},
    {"set_call_events", l_set_call_events},
    {"pid_alive", l_pid_alive},
    {"encode", l_encode},
    {"decode", l_decode},
    {"pool_start", l_pool_start},
    {"error_kinds", l_error_kinds},
    {NULL, NULL}};

int luaopen_slither_core(lua_State *L) {
  lcore *c;
  lua_getfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
  c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!c) {
    /* The engine lives in a userdata created before any pool, so at lua_close it
     * is finalized after them (newest first) and closes whatever they left. */
    uv_loop_t *host_loop;
    lua_getfield(L, LUA_REGISTRYINDEX, "slither.host_loop");
    host_loop = lua_touserdata(L, -1);
    lua_pop(L, 1);
    c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    c->sig_ref = LUA_NOREF;
    if (sl_engine_init(&c->e, host_loop))
      return luaL_error(L, "cannot initialise the engine: its event loop did not start (%s)",
                        strerror(errno));
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_engine_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
    c->cbL = lua_newthread(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "slither.cbthread");
    signal(SIGPIPE, SIG_IGN); /* a dead worker's pipe must not kill the engine */
  }
  sl_codec_open(L);
  if (luaL_newmetatable(L, POOL_MT)) {
    lua_pushcfunction(L, l_pool_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_pool_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    luaL_register(L, NULL, pool_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, core_funcs);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushlightuserdata(L, (void *)&sl_codec_array_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setfield(L, -2, "array_mt");
  lua_pushlightuserdata(L, (void *)&sl_codec_bytes_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setfield(L, -2, "bytes_mt");
  lua_pushstring(L, SLITHER_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushinteger(L, (lua_Integer)getpid());
  lua_setfield(L, -2, "pid");
  sl_lua_store_open(L);
  return 1;
}

/* For the slither binary and host applications: the engine behind a Lua state. */
sl_engine *sl_lua_engine(lua_State *L) { return &get_core(L)->e; }
