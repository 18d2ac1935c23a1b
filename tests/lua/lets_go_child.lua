-- Run by the specs in a fresh process: finished dispatch runs, pool calls and
-- pipe runs, then a full collection, then one line naming what is still alive
-- ("alive: none" when nothing is). A finished run must hold nothing: not its
-- input, not its results, not a task's cancel hook. In a fresh process the
-- first closures of each kind are the ones compiled traces take as constants,
-- which is how a run's closures can outlive it. (Which of them are kept varies
-- with timing: the run objects themselves, small and few, are not counted here.)
--
--   luajit tests/lua/lets_go_child.lua dispatch|pipe
local slither = require("slither")

local what = arg[1]
local pool = assert(slither.pool.start{ name = "default", size = 2,
                                         path = { assert(os.getenv("SLITHER_TEST_PYPATH")) } })
local held = setmetatable({}, { __mode = "k" })
local seen_in_task = {}

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- What `held` still has after a full collection, sorted.
local function alive()
  collectgarbage("collect")
  collectgarbage("collect") -- what the first cycle's finalizers let go
  local left = {}
  for _, tag in pairs(held) do left[#left + 1] = tag end
  table.sort(left)
  return left
end

local DOUBLE = { module = "sl_dispatch_mod", ["function"] = "double", batch_size = 256 }

local function dispatch_runs(tag, n)
  local input = range(n)
  local res = assert(slither.dispatch.run(input, DOUBLE))
  assert(res[n].payload == 2 * n)
  held[input], held[res] = tag .. " input", tag .. " results"
  local s = slither.dispatch.stream(range(n), DOUBLE)
  local got = 0
  for _ in s.next do got = got + 1 end
  assert(got == n)
  held[s] = tag .. " stream"
  local r = assert(pool:call("sl_dispatch_mod", "double", { 1, 2, 3 }))
  held[r] = tag .. " call results"
end

if what == "dispatch" then
  -- long enough for the loops to be compiled
  for r = 1, 3 do dispatch_runs("run " .. r, 20000) end
  -- a task registers each run and call, to stop it if the task is cancelled;
  -- one that has ended must not stay registered while the task goes on (the
  -- last round is left out of this check: its values may still sit in stack
  -- slots of the running task, which the collector marks)
  local t = slither.spawn(function()
    for r = 1, 3 do dispatch_runs("task round " .. r, 300) end
    local hooks = #(require("slither.task").current().cancel_hooks or {})
    local left = alive()
    if hooks > 0 then left[#left + 1] = hooks .. " cancel hooks of finished work" end
    return left
  end)
  local ok, in_task = t:join()
  assert(ok, in_task)
  for _, tag in ipairs(in_task) do
    if not tag:find("round 3", 1, true) then
      seen_in_task[#seen_in_task + 1] = tag .. " (inside its task)"
    end
  end
elseif what == "pipe" then
  local routed = slither.pipe("routed", function(p)
    p:stage("prepare", "lua", { handler = function(item) return item.payload * 3 end })
    p:stage("py", "python", DOUBLE)
    p:stage("route", "router", { routes = { { function(it) return it.payload % 4 == 0 end,
                                              "fours" } } })
    p:output("fours")
  end)
  local plain = slither.pipe("plain", function(p) -- everything into default
    p:stage("prepare", "lua", { handler = function(item) return item.payload * 3 end })
  end)
  for r = 1, 3 do
    local input = range(20000)
    local out = assert(slither.run_pipe(routed, input))
    assert(#out.fours == 10000 and #out.default == 10000)
    held[input], held[out.fours], held[out.default[1]] =
      "routed input " .. r, "routed output " .. r, "routed item " .. r
    local out2 = assert(slither.run_pipe(plain, range(20000)))
    assert(out2.default[20000].payload == 60000)
    held[out2.default] = "plain output " .. r
    local s = slither.stream_pipe(routed, range(600))
    assert(s.next())
    s:close()
    held[s] = "closed stream " .. r
  end
else
  error("expected dispatch or pipe, got " .. tostring(what))
end

local left = alive()
for _, tag in ipairs(seen_in_task) do left[#left + 1] = tag end
pool:stop()
slither.shutdown(2000)
print("alive: " .. (#left == 0 and "none" or table.concat(left, ", ")))
