/* slither.h: the public API of the Slither engine, for host applications.
 *
 * A host creates an engine, runs Lua pipeline scripts in it, calls its Lua
 * functions, gives it C functions and C executors, reads and writes its stores,
 * and destroys it. Functions return 0 or a negative code (slither_err_name and
 * slither_strerror give its name and message); none exits the process, and the
 * engine prints nothing unless the host's log callback does.
 *
 * Threads: an engine belongs to the thread that created it (the loop thread);
 * every function here must be called on it, except slither_store_get,
 * slither_store_put and the error-name functions, which any thread may call at
 * any time (store reads never wait for a writer).
 *
 * Values cross this API as JSON text: arguments and results of slither_call, of
 * registered C functions and executors, and store values. */
#ifndef SLITHER_H
#define SLITHER_H

#ifdef __cplusplus
extern "C" {
#endif

#define SLITHER_VERSION "0.1.0"

/* Codes (the same table as engine/error.h; names from slither_err_name). */
#define SLITHER_OK 0

typedef struct slither_engine slither_engine;

/* Log callback: level 0 error, 1 warn, 2 info, 3 debug. */
typedef void (*slither_log_fn)(void *ud, int level, const char *msg);

typedef struct slither_options {
  const char *python;   /* worker interpreter; NULL: $SLITHER_PYTHON or python3 */
  const char *lua_path; /* directory holding the slither Lua modules; NULL: found automatically */
  slither_log_fn log;   /* NULL: the engine logs nothing */
  void *log_ud;
  struct uv_loop_s *loop; /* a host's libuv loop to share; NULL: the engine owns one */
} slither_options;

/* Text the engine hands back: free it with slither_free_text. */
void slither_free_text(char *text);

/* Create an engine. opts may be NULL. Returns NULL when it cannot (out of memory, no
 * file descriptors for its loop, the Lua modules not found): slither_new_error then
 * says why, for the calling thread, until its next slither_new. */
slither_engine *slither_new(const slither_options *opts);
const char *slither_new_error(void);
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

/* The engine's libuv loop (a uv_loop_t *), for hosts that drive it themselves:
 * either slither_run_* (which run it until the script ends), or uv_run on it, or
 * slither_step, which runs what is ready without blocking. */
struct uv_loop_s *slither_loop(slither_engine *e);
/* Run pending loop work without blocking; returns 1 while the loop has work. */
int slither_step(slither_engine *e);

/* Call the Lua function at a global path ("my.module.fn") with the JSON list
 * args_json as its arguments, as a task, and wait for it. *result_json gets a JSON
 * list of its return values (free with slither_free_text). */
int slither_call(slither_engine *e, const char *path, const char *args_json,
                 char **result_json);

/* A C function callable from Lua as slither.host.NAME(...): args_json is a JSON
 * list of the Lua arguments; set *result_json to a malloc'd JSON value (the Lua
 * result; NULL for nil) and return 0, or return non-zero with *result_json an
 * optional malloc'd message to raise. */
typedef int (*slither_c_fn)(void *ud, const char *args_json, char **result_json);
int slither_register(slither_engine *e, const char *name, slither_c_fn fn, void *ud);

/* A C executor for dispatch: executor = slither.executors.NAME. payloads_json is
 * a JSON list; set *results_json to a JSON list of the same length. */
int slither_register_executor(slither_engine *e, const char *name, slither_c_fn fn, void *ud);

/* Store access from any thread. Keys are strings; values are JSON text. get sets
 * *value_json to NULL when the key is absent (a bag gives a JSON list). A put that
 * finds no room in /dev/shm returns the code named "no_space" and leaves the
 * table as it was. */
int slither_store_get(slither_engine *e, const char *store, const char *table,
                      const char *key, char **value_json);
int slither_store_put(slither_engine *e, const char *store, const char *table,
                      const char *key, const char *value_json);

/* Run a script but keep its pools and stores running afterwards (slither -i, and
 * hosts that set up pools once and call into them later). */
int slither_run_file_keep(slither_engine *e, const char *path, int argc, char **argv);
int slither_run_string_keep(slither_engine *e, const char *chunk, const char *name);

#ifdef __cplusplus
}
#endif

#endif
