/* slither.h: the public API of the Slither engine, for host applications.
 *
 * A host creates an engine, runs Lua pipeline scripts in it and destroys it. All
 * functions return 0 or a negative SLITHER_E* code (names and messages from
 * slither_err_name / slither_strerror); none exits the process. An engine and
 * everything it owns is used from one thread: the thread that created it. */
#ifndef SLITHER_H
#define SLITHER_H

#ifdef __cplusplus
extern "C" {
#endif

#define SLITHER_VERSION "0.1.0"

typedef struct slither_engine slither_engine;

/* Log callback: level 0 error, 1 warn, 2 info, 3 debug. */
typedef void (*slither_log_fn)(void *ud, int level, const char *msg);

typedef struct slither_options {
  const char *python;   /* worker interpreter; NULL: $SLITHER_PYTHON or python3 */
  const char *lua_path; /* directory holding the slither Lua modules; NULL: found automatically */
  slither_log_fn log;   /* NULL: log lines go to stderr */
  void *log_ud;
} slither_options;

/* Create an engine. opts may be NULL. Returns NULL only when out of memory. */
slither_engine *slither_new(const slither_options *opts);
/* Run a Lua script as the main task, with argv as its `arg` table; waits until it
 * finishes. On failure the message (with a traceback) is in slither_last_error. */
int slither_run_file(slither_engine *e, const char *path, int argc, char **argv);
int slither_run_string(slither_engine *e, const char *chunk, const char *name);
const char *slither_last_error(const slither_engine *e);
/* Stops every pool (in-flight calls get grace_ms to finish) and frees the engine. */
void slither_free(slither_engine *e, int grace_ms);

const char *slither_err_name(int code);
const char *slither_strerror(int code);

/* The Lua state behind an engine, for hosts that extend it. Loop thread only. */
struct lua_State *slither_lua_state(slither_engine *e);

/* The engine's libuv loop (a uv_loop_t *), for hosts that drive it themselves. */
struct uv_loop_s *slither_loop(slither_engine *e);

/* Run a script but keep its pools and stores running afterwards (slither -i). */
int slither_run_file_keep(slither_engine *e, const char *path, int argc, char **argv);

#ifdef __cplusplus
}
#endif

#endif
