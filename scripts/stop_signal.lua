-- Stop signals: SIGTERM (or Ctrl-C) in the middle of a dispatch stops the run
-- cleanly. This script sends itself SIGTERM a second into a 10 s dispatch; the
-- engine cancels the run, stops the pool, removes the store's files and exits
-- with 143 (130 for SIGINT). A second signal would exit at once.
--
--   slither scripts/stop_signal.lua; echo "exit $?"    --> exit 143
local slither = require("slither")

local here = arg[0]:match("(.*)/[^/]*$") or "."
local pool = assert(slither.pool.start{ size = 2, path = { here .. "/../pyworkers/examples" } })
local Seen = slither.store.define{ name = "seen", tables = { { name = "done", type = "set" } } }
local store = assert(slither.store.start(Seen))
assert(store:put("done", "started", true))

-- $PPID of the shell is this slither process
os.execute("(sleep 1; kill -TERM $PPID) &")
local items = {}
for i = 1, 40 do items[i] = i end
print("dispatching 40 batches of half a second on 2 workers; SIGTERM comes in 1 s")
io.stdout:flush()
slither.dispatch.run(items, { module = "demo_ops", ["function"] = "slow_double", batch_size = 1 })
print("not reached: the run was cancelled")
