/* engine.h: one engine = one libuv loop, its log, its reaper and its pools. */
#ifndef SL_ENGINE_H
#define SL_ENGINE_H

#include "reaper.h"

#include <stdarg.h>
#include <stdint.h>
#include <uv.h>

enum { SL_LOG_ERROR = 0, SL_LOG_WARN = 1, SL_LOG_INFO = 2, SL_LOG_DEBUG = 3 };

typedef void (*sl_log_cb)(void *ud, int level, const char *msg);

typedef struct sl_pool sl_pool;

typedef struct sl_engine {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop;
  int log_level;
  sl_log_cb log_cb; /* NULL: write to stderr */
  void *log_ud;
  sl_reaper reaper;
  uv_timer_t reaper_watch; /* notices a dead reaper and starts another */
  int reaper_watching;
  sl_pool *pools;     /* every pool not yet freed */
  char *worker_path;  /* directory that holds the slither_worker package */
  char *lua_path;     /* directory that holds the slither Lua modules */
  char *python;       /* default interpreter */
  uint64_t spawned;   /* workers spawned over the engine's life */
  int64_t inflight;   /* calls sent to workers and not yet answered, all pools */
  int busy_workers;   /* workers holding at least one call, all pools */
  int ncpu;
  int spin_us;        /* how long a wait polls before sleeping (SLITHER_SPIN_US) */
  /* Interpreters configured by bare name ("python3") and the executable their
   * first worker reported: later workers start it directly, skipping PATH shims
   * (pyenv's cost hundreds of milliseconds per start). */
  /* bare interpreter name, the PATH it was found on (NULL: none set), its file */
  struct sl_interp { char *name, *search, *path; struct sl_interp *next; } *interps;
} sl_engine;

/* The token every worker of this process carries in its environment
 * (SLITHER_WORKER_TOKEN=<token>.<serial>): see reaper.h. */
const char *sl_worker_token(void);

/* loop: NULL to let the engine own a loop. Reads SLITHER_LOG, SLITHER_PYTHON,
 * SLITHER_WORKER_PATH, SLITHER_LUA_PATH. */
int sl_engine_init(sl_engine *e, uv_loop_t *loop);
/* Stops every pool at once (SIGKILL), runs the loop until their handles close,
 * ends the reaper and frees everything. */
void sl_engine_close(sl_engine *e);
void sl_log(sl_engine *e, int level, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;
int sl_log_level_parse(const char *s);
double sl_now_ms(sl_engine *e); /* monotonic, sub-millisecond */
/* Polling instead of sleeping pays only while it takes no core from a worker:
 * true when spinning is enabled and the busy workers plus the engine fit on the
 * CPUs. */
int sl_spin_allowed(const sl_engine *e);

#endif
