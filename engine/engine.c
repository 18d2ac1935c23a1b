/* engine.c: engine set-up and tear-down, logging, paths. */
#define _GNU_SOURCE
#include "engine.h"
#include "error.h"
#include "pool.h"
#include "store.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Paths of the install, relative so that a moved prefix still works: from the
 * library directory and from the binary directory to <datadir>/slither. */
#ifndef SLITHER_LIB_TO_DATA
#define SLITHER_LIB_TO_DATA "../share/slither"
#endif
#ifndef SLITHER_BIN_TO_DATA
#define SLITHER_BIN_TO_DATA "../share/slither"
#endif
#ifndef SLITHER_INSTALL_DATADIR
#define SLITHER_INSTALL_DATADIR "/usr/local/share/slither"
#endif
/* A build tree holds this file, naming the source tree its build came from. */
#define BUILD_MARK "slither-source-dir"

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

/* dir without its last component (in place); 0 when there is none. */
static int up(char *dir) {
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir) return 0;
  *slash = '\0';
  return 1;
}

/* The source tree of the build tree dir lies in (dir or up to three levels above
 * it holds BUILD_MARK), or 0. */
static int build_source(const char *dir, char *out, size_t outlen) {
  char d[4096], mark[4200];
  int i;
  snprintf(d, sizeof d, "%s", dir);
  for (i = 0; i < 4; i++) {
    FILE *f;
    snprintf(mark, sizeof mark, "%s/" BUILD_MARK, d);
    if ((f = fopen(mark, "r"))) {
      int ok = fgets(out, (int)outlen, f) != NULL;
      fclose(f);
      out[strcspn(out, "\n")] = '\0';
      return ok && *out;
    }
    if (!up(d)) break;
  }
  return 0;
}

/* Where the Lua modules and the worker package live, first that holds probe:
 *   1. the environment variable;
 *   2. next to the code running the engine, found from its own address: the shared
 *      library (<libdir>/../share/slither), the Lua module (<libdir>/lua/5.1/slither/
 *      core.so) or a binary linking the static library (<bindir>/../share/slither);
 *   3. next to the running executable (<bindir>/../share/slither);
 *   4. the source tree of a build tree, when 2 or 3 lie in one (BUILD_MARK);
 *   5. the data directory the build was configured for.
 * Nothing but 5 depends on where the build was made, so a moved prefix works. */
static char *find_dir(const char *env, const char *sub, const char *probe) {
  const char *v = getenv(env);
  char dirs[2][4096], cand[8400], src[4096];
  int nd = 0, i;
  Dl_info info;
  ssize_t n;
  if (v && *v) return strdup(v);
  if (dladdr((void *)&sl_engine_init, &info) && info.dli_fname && info.dli_fname[0] == '/') {
    snprintf(dirs[nd], sizeof dirs[nd], "%s", info.dli_fname);
    if (up(dirs[nd])) nd++;
  }
  n = readlink("/proc/self/exe", dirs[nd], sizeof dirs[nd] - 1);
  if (n > 0) {
    dirs[nd][n] = '\0';
    if (up(dirs[nd])) nd++;
  }
  for (i = 0; i < nd; i++) {
    snprintf(cand, sizeof cand, "%s/" SLITHER_LIB_TO_DATA "/%s", dirs[i], sub);
    if (is_dir_with(cand, probe)) return strdup(cand);
    snprintf(cand, sizeof cand, "%s/../../../" SLITHER_LIB_TO_DATA "/%s", dirs[i], sub);
    if (is_dir_with(cand, probe)) return strdup(cand);
    snprintf(cand, sizeof cand, "%s/" SLITHER_BIN_TO_DATA "/%s", dirs[i], sub);
    if (is_dir_with(cand, probe)) return strdup(cand);
  }
  for (i = 0; i < nd; i++) {
    if (!build_source(dirs[i], src, sizeof src)) continue;
    snprintf(cand, sizeof cand, "%s/%s", src, sub);
    if (is_dir_with(cand, probe)) return strdup(cand);
  }
  snprintf(cand, sizeof cand, "%s/%s", SLITHER_INSTALL_DATADIR, sub);
  return strdup(cand);
}

const char *sl_worker_token(void) {
  static char fallback[32];
  if (sl_store_token()) return sl_store_token();
  /* no random bytes: the pid still tells this process's workers from others' */
  if (!fallback[0]) snprintf(fallback, sizeof fallback, "pid%d", (int)getpid());
  return fallback;
}

/* The reaper, told what this process leaves behind if it dies: processes that
 * carry its workers' token, and its store files. */
static int start_reaper(sl_engine *e) {
  char env[SL_REAPER_STR], files[SL_REAPER_STR];
  const char *tok = sl_worker_token();
  snprintf(env, sizeof env, "SLITHER_WORKER_TOKEN=%s.", tok);
  if (sl_store_token())
    snprintf(files, sizeof files, "slither.%d.%s.", (int)getpid(), sl_store_token());
  else
    files[0] = '\0';
  return sl_reaper_start(&e->reaper, env, sl_store_shm_dir(), files);
}

static void reaper_watch_cb(uv_timer_t *t) {
  sl_engine *e = t->data;
  sl_pool *p;
  int was = e->reaper.pid;
  if (sl_reaper_alive(&e->reaper)) return;
  if (start_reaper(e)) return; /* try again at the next tick */
  sl_log(e, SL_LOG_WARN, "the reaper process (pid %d) died; started another (pid %d)", was,
         (int)e->reaper.pid);
  for (p = e->pools; p; p = sl_pool_next(p)) sl_pool_reaper_readd(p);
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
  if (start_reaper(e))
    sl_log(e, SL_LOG_WARN, "could not start the reaper process; workers may outlive a crash");
  /* A reaper killed by someone else would leave every worker to outlive a crash
   * of the engine: check once a second (unreferenced: the check alone keeps no
   * loop running) and start another, telling it every live group. */
  uv_timer_init(e->loop, &e->reaper_watch);
  e->reaper_watch.data = e;
  uv_timer_start(&e->reaper_watch, reaper_watch_cb, 1000, 1000);
  uv_unref((uv_handle_t *)&e->reaper_watch);
  e->reaper_watching = 1;
  return 0;
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void watch_closed(uv_handle_t *h) {
  sl_engine *e = h->data;
  e->reaper_watching = -1;
}

void sl_engine_close(sl_engine *e) {
  sl_pool *p;
  if (e->reaper_watching) {
    e->reaper_watching = 0;
    uv_timer_stop(&e->reaper_watch);
    uv_close((uv_handle_t *)&e->reaper_watch, watch_closed);
    /* a host's loop would run the close after this memory is gone */
    while (e->reaper_watching != -1) uv_run(e->loop, UV_RUN_ONCE);
  }
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
    free(i->search);
    free(i->path);
    free(i);
  }
  free(e->python);
  free(e->worker_path);
  free(e->lua_path);
  e->python = e->worker_path = e->lua_path = NULL;
}

/* A message of any length: most fit the stack buffer; a longer one (a worker's
 * stderr line, a start-up failure with its stderr) is formatted again into the
 * heap rather than cut, and cut only when that allocation fails. */
void sl_log(sl_engine *e, int level, const char *fmt, ...) {
  char small[4096], *msg = small;
  va_list ap;
  int n;
  if (level > e->log_level) return;
  va_start(ap, fmt);
  n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n >= (int)sizeof small) {
    char *big = malloc((size_t)n + 1);
    if (big) {
      va_start(ap, fmt);
      vsnprintf(big, (size_t)n + 1, fmt, ap);
      va_end(ap);
      msg = big;
    }
  }
  if (e->log_cb) {
    e->log_cb(e->log_ud, level, msg);
  } else {
    static const char *tags[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "slither %s: %s\n", tags[level], msg);
  }
  if (msg != small) free(msg);
}

double sl_now_ms(sl_engine *e) {
  (void)e;
  return (double)uv_hrtime() / 1e6;
}

int sl_spin_allowed(const sl_engine *e) {
  return e->spin_us > 0 && e->busy_workers + 1 <= e->ncpu;
}
