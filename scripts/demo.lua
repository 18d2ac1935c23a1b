-- The demo: start two Python workers, send them batches, and show what the
-- engine does around the calls (sessions, errors, concurrency, telemetry).
--
--   slither scripts/demo.lua
local slither = require("slither")

local here = arg[0]:match("(.*)/[^/]*$") or "."
local examples = here .. "/../pyworkers/examples"

local started = {}
slither.telemetry.attach("slither.pool.worker.ready", function(_, m, md)
  started[#started + 1] = string.format("%s (pid %d, Python %s, ready in %.0f ms)",
    md.worker, md.pid, md.hello.python, m.duration_ms)
end)

local t0 = slither.now()
local pool = assert(slither.pool.start{ name = "default", size = 2, path = { examples } })
print(string.format("pool started in %.0f ms:", slither.now() - t0))
for _, s in ipairs(started) do print("  " .. s) end

-- One batch: a list in, a list of the same length out.
local doubled = assert(pool:call("demo_ops", "double", { 1, 2, 3, 4 }))
print("double{1,2,3,4}      -> " .. table.concat(doubled, ", "))

-- Several batches at once: each task waits for its own result while the others run.
local tasks = {}
for i = 1, 4 do
  tasks[i] = slither.spawn(function()
    local batch = {}
    for k = 1, 3 do batch[k] = i * 10 + k end
    return pool:call("demo_ops", "describe", batch)
  end)
end
local pids = {}
for i, t in ipairs(tasks) do
  local _, rows = t:join()
  pids[rows[1].pid] = true
  print(string.format("describe batch %d     -> %d^2 = %d ... (worker pid %d)", i,
    rows[1].n, rows[1].square, rows[1].pid))
end
local n = 0
for _ in pairs(pids) do n = n + 1 end
print(string.format("batches ran on %d worker(s)", n))

-- Per-session state lives in the worker that holds the session.
for _ = 1, 3 do pool:call("demo_ops", "count_calls", { 0 }, { session = "alice" }) end
local alice = pool:call("demo_ops", "count_calls", { 0 }, { session = "alice" })[1]
local bob = pool:call("demo_ops", "count_calls", { 0 }, { session = "bob" })[1]
print(string.format("session state          -> alice made %d calls, bob %d", alice, bob))

-- Failures are values: nothing crashes, the pool keeps serving.
local _, err = pool:call("demo_ops", "no_such_function", { 1 })
print(string.format("a missing function     -> nil, {kind = %q, message = %q}", err.kind,
  err.message))

local s = pool:stats()
print(string.format("stats: %d workers, %d calls, %d errors, %d restarts", s.workers, s.calls,
  s.errors, s.restarts))
pool:stop()
print("pool stopped: no worker left behind")
