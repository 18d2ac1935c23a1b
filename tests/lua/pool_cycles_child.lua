-- Run by pool_spec in a fresh process: pools started and stopped `n` times, the
-- process's RSS and Lua heap measured after the first `warm` cycles and after the
-- last, printed as one line:
--   cycles: <n> rss_kb: <before> <after> heap_kb: <before> <after>
-- A stopped pool must leave nothing behind: not its C memory, not the closures
-- that held its handle.
--
--   luajit tests/lua/pool_cycles_child.lua N WARM INTERPRETER
local slither = require("slither")

local n, warm, python = tonumber(arg[1]), tonumber(arg[2]), arg[3]

local function rss_kb()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("*n", "*n")
  f:close()
  return resident * 4
end

local function heap_kb()
  collectgarbage("collect")
  collectgarbage("collect") -- what the first cycle's finalizers let go
  return collectgarbage("count")
end

local rss0, heap0
for i = 1, n do
  local p = assert(slither.pool.start{ name = "cycle", size = 1, python = python })
  p:stop()
  if i == warm then rss0, heap0 = rss_kb(), heap_kb() end
end
print(("cycles: %d rss_kb: %d %d heap_kb: %.1f %.1f"):format(n, rss0, rss_kb(), heap0, heap_kb()))
