-- A worker's daemonized child goes away with its pool: the child leaves the
-- worker's session and process group, and is still found by the token its
-- environment inherited (SLITHER_WORKER_TOKEN).
--
--   slither scripts/escaping_child.lua
local slither = require("slither")

local here = arg[0]:match("(.*)/[^/]*$") or "."
local pool = assert(slither.pool.start{ size = 1, path = { here .. "/../pyworkers/examples" } })
local pid = assert(pool:call("demo_ops", "start_daemon", { 0 }))[1]
local function alive()
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = f:read("*l"):match("%) (%a)")
  f:close()
  return state ~= "Z" and state ~= "X"
end
print(("a worker started sleep (pid %d) in a session of its own: alive = %s"):format(pid,
  tostring(alive())))
pool:stop()
for _ = 1, 50 do
  if not alive() then break end
  slither.sleep(20)
end
print(("after pool:stop(): alive = %s"):format(tostring(alive())))
assert(not alive(), "FAILED: the daemon outlived its pool")
print("OK: nothing outlived the pool")
