/* host_example.c: a host program that embeds Slither through slither.h.
 *
 * It starts real Python workers, runs a small pipeline, reads the results back in
 * C, gives Lua a C function and dispatch a C executor, writes and reads a store
 * from another thread, and shuts down. The suite runs it under valgrind. */
#include "slither.h"
#include "test.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* slither.host.c_add(a, b) */
static int c_add(void *ud, const char *args, char **result) {
  int a = 0, b = 0;
  (void)ud;
  if (sscanf(args, "[%d,%d]", &a, &b) != 2) {
    *result = strdup("c_add wants two integers");
    return 1;
  }
  *result = malloc(32);
  snprintf(*result, 32, "%d", a + b);
  return 0;
}

/* A C executor: each payload (an integer) times 100. */
static int c_times100(void *ud, const char *payloads, char **results) {
  char *out = malloc(strlen(payloads) * 4 + 8), *w = out;
  char *p = (char *)payloads + 1;
  int first = 1;
  (void)ud;
  *w++ = '[';
  while (*p && *p != ']') {
    char *q;
    long v = strtol(p, &q, 10);
    if (q == p) break; /* not a number: stop rather than spin */
    p = q;
    w += sprintf(w, "%s%ld", first ? "" : ",", v * 100);
    first = 0;
    if (*p == ',') p++;
  }
  *w++ = ']';
  *w = '\0';
  *results = out;
  return 0;
}

static int logged;
static void on_log(void *ud, int level, const char *msg) {
  (void)ud;
  (void)level;
  (void)msg;
  logged++;
}

typedef struct {
  slither_engine *e;
  int ok;
} thread_arg;

static void *store_thread(void *p) {
  thread_arg *a = p;
  char *v = NULL;
  a->ok = slither_store_put(a->e, "host_demo", "kv", "from_thread", "{\"n\":7}") == 0 &&
          slither_store_get(a->e, "host_demo", "kv", "from_thread", &v) == 0 && v &&
          strcmp(v, "{\"n\":7}") == 0;
  slither_free_text(v);
  return NULL;
}

static const char *setup =
    "local slither = require('slither')\n"
    "assert(slither.pool.start{ name = 'default', size = 2, path = { os.getenv('PYDIR') } })\n"
    "assert(slither.store.start(slither.store.define{ name = 'host_demo',\n"
    "  tables = { { name = 'kv' } } }))\n"
    "local pipe = slither.pipe('host', function(p)\n"
    "  p:stage('prep', 'lua', { handler = function(it)\n"
    "    return it.payload + slither.host.c_add(1, 2) end })\n"
    "  p:stage('py', 'python', { module = 'sl_testmod', ['function'] = 'double', batch_size = 4 })\n"
    "end)\n"
    "function run(n)\n"
    "  local input = {}\n"
    "  for i = 1, n do input[i] = i end\n"
    "  local out = assert(slither.run_pipe(pipe, input))\n"
    "  local r = {}\n"
    "  for i, it in ipairs(out.default) do r[i] = it.payload end\n"
    "  return r\n"
    "end\n"
    "function via_executor(list)\n"
    "  local res = assert(slither.dispatch.run(list, { executor = slither.executors.times100 }))\n"
    "  local r = {}\n"
    "  for i, it in ipairs(res) do r[i] = it.payload end\n"
    "  return r\n"
    "end\n"
    "function read_kv(k) return slither.store.get('host_demo'):get('kv', k) end\n";

/* The host's own timer on the loop it shares with the engine. */
static int host_ticks;
static void host_tick(uv_timer_t *t) {
  (void)t;
  host_ticks++;
}

int main(void) {
  slither_options o;
  slither_engine *e;
  char *res = NULL;
  pthread_t th;
  thread_arg ta;
  uv_loop_t loop;
  uv_timer_t tick;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, host_tick, 1, 5);
  memset(&o, 0, sizeof o);
  o.log = on_log;
  o.loop = &loop; /* one loop for the host and the engine */
  e = slither_new(&o);
  CHECK(e != NULL);
  CHECK(slither_loop(e) == &loop);
  CHECK(slither_register(e, "c_add", c_add, NULL) == 0);
  CHECK(slither_register_executor(e, "times100", c_times100, NULL) == 0);
  CHECK(slither_run_string_keep(e, setup, "=setup") == 0);
  if (slither_last_error(e)[0]) fprintf(stderr, "%s\n", slither_last_error(e));

  /* the pipeline, with real workers: (i + 3) * 2; the host's timer keeps firing
   * on the shared loop while the engine waits for its workers */
  CHECK(slither_call(e, "run", "[10]", &res) == 0);
  CHECK(host_ticks > 0);
  CHECK(res && strcmp(res, "[[8,10,12,14,16,18,20,22,24,26]]") == 0);
  if (res) printf("run(10) -> %s\n", res);
  slither_free_text(res);

  CHECK(slither_call(e, "via_executor", "[[1,2,3]]", &res) == 0);
  CHECK(res && strcmp(res, "[[100,200,300]]") == 0);
  slither_free_text(res);

  /* the store from another thread, then from Lua */
  ta.e = e;
  ta.ok = 0;
  pthread_create(&th, NULL, store_thread, &ta);
  pthread_join(th, NULL);
  CHECK(ta.ok);
  CHECK(slither_call(e, "read_kv", "[\"from_thread\"]", &res) == 0);
  CHECK(res && strcmp(res, "[{\"n\":7}]") == 0);
  slither_free_text(res);
  CHECK(slither_store_get(e, "host_demo", "kv", "absent", &res) == 0 && res == NULL);
  CHECK(slither_store_get(e, "no_such_store", "kv", "k", &res) < 0);
  CHECK(strcmp(slither_err_name(slither_store_get(e, "no_such_store", "kv", "k", &res)),
               "not_found") == 0);

  /* errors are codes with a message, never an exit */
  CHECK(slither_call(e, "no.such.function", "[]", &res) < 0);
  CHECK(strstr(slither_last_error(e), "no Lua function at no.such.function") != NULL);
  CHECK(slither_call(e, "run", "not json", &res) < 0);
  CHECK(slither_step(e) >= 0);

  slither_free(e, 2000);
  uv_timer_stop(&tick);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0); /* the engine left nothing on the host's loop */
  TEST_END();
}
