/* repl.h: the interactive prompt of the slither binary (line editing, history,
 * completion, the loop running between lines, Ctrl-C to interrupt). */
#ifndef SL_REPL_H
#define SL_REPL_H

#include <lua.h>
#include <uv.h>

/* Run the prompt until Ctrl-D (or the end of piped input); stops pools after. */
int sl_repl_run(lua_State *L, uv_loop_t *loop);

#endif
