/* test_host_fail.c: the library reports failure to its host and never ends it.
 *
 *   1. slither_new when the engine cannot start (no file descriptor left for its
 *      event loop): NULL and a reason from slither_new_error, and the host goes on;
 *      with the descriptors back, slither_new works again in the same process;
 *   2. an engine whose Lua modules are not where lua_path says: running a script
 *      fails with a message, and the engine can still be freed;
 *   3. store calls on a store that does not exist, from the host: a code, no crash. */
#include "slither.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

int main(void) {
  struct rlimit old, none;
  slither_engine *e;
  char *v = (char *)"untouched";

  /* 1. every new descriptor fails: the loop's epoll and the reaper's pipe cannot open */
  CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
  none = old;
  none.rlim_cur = 3; /* stdin, stdout, stderr */
  CHECK(setrlimit(RLIMIT_NOFILE, &none) == 0);
  e = slither_new(NULL);
  CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
  CHECKF(e == NULL, "slither_new succeeded without a descriptor for its loop");
  CHECKF(strstr(slither_new_error(), "cannot start") != NULL, "reason: '%s'",
         slither_new_error());
  if (e) slither_free(e, 0);

  e = slither_new(NULL);
  CHECKF(e != NULL, "slither_new failed with descriptors back: %s", slither_new_error());
  if (e) {
    CHECK(slither_run_string(e, "x = 1 + 1", "=ok") == 0);
    slither_free(e, 0);
  }

  /* 2. modules missing: an error from the run, not the end of the host */
  {
    slither_options o;
    memset(&o, 0, sizeof o);
    o.lua_path = "/nonexistent/slither-lua";
    e = slither_new(&o);
    CHECK(e != NULL);
    if (e) {
      int rc = slither_run_string(e, "return 1", "=missing");
      CHECKF(rc != 0, "a run without the Lua modules succeeded");
      CHECKF(strstr(slither_last_error(e), "slither") != NULL, "message: '%s'",
             slither_last_error(e));
      slither_free(e, 0);
    }
  }

  /* 3. a store nobody created */
  CHECK(slither_store_get(NULL, "no_such_store", "t", "k", &v) != 0);
  CHECK(v == NULL);
  CHECK(slither_store_put(NULL, "no_such_store", "t", "k", "1") != 0);
  TEST_END();
}
