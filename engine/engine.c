/* engine.c: engine set-up and tear-down, logging, paths. */
#define _GNU_SOURCE
#include "engine.h"
#include "error.h"
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#ifndef SLITHER_SOURCE_DIR
#define SLITHER_SOURCE_DIR "."
#endif
#ifndef SLITHER_INSTALL_DATADIR
#define SLITHER_INSTALL_DATADIR "/usr/local/share/slither"
#endif

int sl_log_level_parse(const char *s) {
  if (!s || !*s) return SL_LOG_INFO;
  if (!strcasecmp(s, "quiet") || !strcasecmp(s, "error")) return SL_LOG_ERROR;
  if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning")) return SL_LOG_WARN;
  if (!strcasecmp(s, "debug")) return SL_LOG_DEBUG;
  return SL_LOG_INFO;
}

static int is_dir_with(const char *dir, const char *rel) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, rel);
  return access(p, R_OK) == 0;
}

/* Where the Lua modules and the worker package live: the environment first, then
 * next to an installed binary (<prefix>/bin/.. -> <prefix>/share/slither), then
 * the source tree this build came from (a binary run from its build tree), then
 * the install data directory (a host program linked against the library). */
static char *find_dir(const char *env, const char *sub, const char *probe) {
  const char *v = getenv(env);
  char exe[4096], cand[4096];
  ssize_t n;
  if (v && *v) return strdup(v);
  n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    char *slash;
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      snprintf(cand, sizeof cand, "%s/../share/slither/%s", exe, sub);
      if (is_dir_with(cand, probe)) return strdup(cand);
    }
  }
  snprintf(cand, sizeof cand, "%s/%s", SLITHER_SOURCE_DIR, sub);
  if (is_dir_with(cand, probe)) return strdup(cand);
  snprintf(cand, sizeof cand, "%s/%s", SLITHER_INSTALL_DATADIR, sub);
  return strdup(cand);
}

int sl_engine_init(sl_engine *e, uv_loop_t *loop) {
  const char *py;
  int rc;
  memset(e, 0, sizeof *e);
  if (loop) {
    e->loop = loop;
  } else {
    if ((rc = uv_loop_init(&e->own_loop))) return SL_EINVAL;
    e->loop = &e->own_loop;
    e->owns_loop = 1;
  }
  e->log_level = sl_log_level_parse(getenv("SLITHER_LOG"));
  e->spin_us = getenv("SLITHER_SPIN_US") ? atoi(getenv("SLITHER_SPIN_US")) : 100;
  if (e->spin_us < 0) e->spin_us = 0;
  e->ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (e->ncpu < 1) e->ncpu = 1;
  py = getenv("SLITHER_PYTHON");
  e->python = strdup(py && *py ? py : "python3");
  e->worker_path = find_dir("SLITHER_WORKER_PATH", "pyworkers", "slither_worker/__init__.py");
  e->lua_path = find_dir("SLITHER_LUA_PATH", "lua", "slither/init.lua");
  if (sl_reaper_start(&e->reaper))
    sl_log(e, SL_LOG_WARN, "could not start the reaper process; workers may outlive a crash");
  return 0;
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void sl_engine_close(sl_engine *e) {
  sl_pool *p;
  for (p = e->pools; p; p = sl_pool_next(p)) sl_pool_kill(p);
  /* Let the pools' handles close and their exit callbacks run. */
  for (;;) {
    int all = 1;
    for (p = e->pools; p; p = sl_pool_next(p))
      if (!sl_pool_is_stopped(p)) all = 0;
    if (all) break;
    uv_run(e->loop, UV_RUN_ONCE);
  }
  while (e->pools) sl_pool_free(e->pools);
  if (e->owns_loop) {
    uv_walk(e->loop, close_walk, NULL);
    uv_run(e->loop, UV_RUN_DEFAULT);
    uv_loop_close(e->loop);
  }
  sl_reaper_stop(&e->reaper);
  while (e->interps) {
    struct sl_interp *i = e->interps;
    e->interps = i->next;
    free(i->name);
    free(i->path);
    free(i);
  }
  free(e->python);
  free(e->worker_path);
  free(e->lua_path);
  e->python = e->worker_path = e->lua_path = NULL;
}

void sl_log(sl_engine *e, int level, const char *fmt, ...) {
  char msg[4096];
  va_list ap;
  if (level > e->log_level) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (e->log_cb) {
    e->log_cb(e->log_ud, level, msg);
  } else {
    static const char *tags[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "slither %s: %s\n", tags[level], msg);
  }
}

double sl_now_ms(sl_engine *e) {
  (void)e;
  return (double)uv_hrtime() / 1e6;
}

int sl_spin_allowed(const sl_engine *e) {
  return e->spin_us > 0 && e->busy_workers + 1 <= e->ncpu;
}
