-- The telemetry contract: every event the README documents, provoked with real
-- workers, with exactly the measurements and metadata keys the README gives it,
-- and the error kind of every kind a call can fail with.
local slither = require("slither")
local H = require("helpers")

-- The README's table (section Telemetry). m: measurements, md: metadata; keys in
-- opt (of either) may be missing. Every other key must be there, and nothing else
-- may be.
local CONTRACT = {
  ["slither.pool.worker.start"] = { m = {}, md = { "pool", "worker", "pid" } },
  ["slither.pool.worker.ready"] = { m = { "duration_ms" }, md = { "pool", "worker", "pid", "hello" } },
  ["slither.pool.worker.exit"] = { m = { "duration_ms" },
    md = { "pool", "worker", "pid", "exit_status", "signal" }, opt = { "reason" } },
  ["slither.pool.worker.restart"] = { m = {}, md = { "pool", "worker", "pid", "reason" } },
  ["slither.pool.worker.recycle"] = { m = { "duration_ms" },
    md = { "pool", "worker", "pid", "reason" } },
  ["slither.pool.call.start"] = { m = { "items", "queued_ms" },
    md = { "pool", "worker", "pid", "module", "function", "call_id" }, opt = { "session" } },
  ["slither.pool.call.stop"] = { m = { "duration_ms", "items", "queued_ms" },
    md = { "pool", "worker", "pid", "module", "function", "call_id" }, opt = { "session" } },
  ["slither.pool.call.exception"] = { m = { "duration_ms", "items", "queued_ms" },
    md = { "pool", "module", "function", "call_id", "kind", "message" },
    opt = { "worker", "pid", "session" } },
  -- dispatch events inside a pipe also carry pipe, stage and run_id
  ["slither.dispatch.batch.start"] = { m = { "items", "attempt" },
    md = { "batch_index", "strategy" }, opt = { "session", "pipe", "stage", "run_id" } },
  ["slither.dispatch.batch.stop"] = { m = { "duration_ms", "items", "attempt" },
    md = { "batch_index", "strategy" },
    opt = { "session", "worker", "queue_wait_ms", "bytes_out", "bytes_in", "pipe", "stage",
            "run_id" } },
  ["slither.dispatch.batch.exception"] = { m = { "duration_ms", "items", "attempt" },
    md = { "batch_index", "strategy", "kind", "error" },
    opt = { "session", "worker", "queue_wait_ms", "bytes_out", "bytes_in", "pipe", "stage",
            "run_id" } },
  ["slither.store.write"] = { m = { "count" }, md = { "store", "table", "operation" } },
  ["slither.store.reload.start"] = { m = {}, md = { "store" } },
  ["slither.store.reload.stop"] = { m = { "duration_ms" }, md = { "store", "ok" },
    opt = { "error" } },
  ["slither.bridge.view.start"] = { m = {}, md = { "view", "worker" }, opt = { "session" } },
  ["slither.bridge.view.stop"] = { m = { "duration_ms" }, md = { "view", "worker" },
    opt = { "session" } },
  ["slither.bridge.view.exception"] = { m = { "duration_ms" }, md = { "view", "worker", "error" },
    opt = { "session" } },
  ["slither.pipe.run.start"] = { m = {}, md = { "pipe", "run_id", "session" } },
  ["slither.pipe.run.stop"] = { m = { "duration_ms" },
    md = { "pipe", "run_id", "session", "routing" } },
  ["slither.pipe.run.exception"] = { m = { "duration_ms" },
    md = { "pipe", "run_id", "session", "error" } },
  ["slither.pipe.stage.start"] = { m = {}, md = { "pipe", "run_id", "stage", "session" } },
  ["slither.pipe.stage.stop"] = { m = { "in", "out", "skipped", "failed" },
    md = { "pipe", "run_id", "stage", "session" }, opt = { "retries" } },
  ["slither.pipe.stage.exception"] = { m = { "in", "out", "skipped", "failed" },
    md = { "pipe", "run_id", "stage", "session" }, opt = { "retries" } },
}

-- metadata that is a number (measurements always are)
local NUMBER_MD = { pid = true, exit_status = true, signal = true, call_id = true,
                    batch_index = true }

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  return table.concat(ks, ",")
end

-- Check one event against the contract; returns it.
local function conforms(ev)
  local c = CONTRACT[ev.name]
  assert(c, "undocumented event " .. ev.name)
  local opt = H.set(c.opt or {})
  local want_m, want_md = H.set(c.m), H.set(c.md)
  for _, k in ipairs(c.m) do
    assert(type(ev.m[k]) == "number", ev.name .. ": measurement " .. k .. " is " ..
      type(ev.m[k]))
    assert(ev.m[k] >= 0, ev.name .. ": measurement " .. k .. " is negative")
  end
  for k in pairs(ev.m) do
    assert(want_m[k] or opt[k], ev.name .. ": undocumented measurement " .. tostring(k) ..
      " (has " .. sorted_keys(ev.m) .. ")")
  end
  for _, k in ipairs(c.md) do
    assert(ev.md[k] ~= nil, ev.name .. ": metadata " .. k .. " is missing (has " ..
      sorted_keys(ev.md) .. ")")
    if NUMBER_MD[k] then assert(type(ev.md[k]) == "number", ev.name .. ": " .. k) end
  end
  for k in pairs(ev.md) do
    assert(want_md[k] or opt[k], ev.name .. ": undocumented metadata " .. tostring(k) ..
      " (has " .. sorted_keys(ev.md) .. ")")
  end
  return ev
end

-- Record every event under prefix while fn runs; returns the events.
local function recording(prefix, fn)
  local seen = {}
  local id = slither.telemetry.attach(prefix, function(name, m, md)
    seen[#seen + 1] = { name = name, m = m, md = md }
  end)
  local ok, err = pcall(fn)
  slither.telemetry.detach(id)
  assert(ok, err)
  for _, ev in ipairs(seen) do conforms(ev) end
  return seen
end

local function named(events, name)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.name == name then out[#out + 1] = ev end
  end
  return out
end

-- The one call.exception of a failing call, checked against what the caller got.
local function one_exception(events, err)
  local exc = named(events, "slither.pool.call.exception")
  assert.are.equal(1, #exc)
  if err then
    assert.are.equal(err.kind, exc[1].md.kind)
    assert.are.equal(err.message, exc[1].md.message)
  end
  return exc[1].md
end

describe("telemetry contract (#11)", function()
  after_each(function() H.assert_clean() end)

  it("pool worker events: start, ready, exit, restart, recycle (#11)", function()
    local pool, first
    local ev = recording("slither.pool.worker", function()
      pool = H.pool{ name = "tw", size = 1, max_calls = 2, max_calls_jitter = 0 }
      first = pool:pids()[1]
      assert(pool:call("sl_testmod", "pid", { 1 }))
      assert(pool:call("sl_testmod", "pid", { 2 })) -- its last call: recycled
      assert.is_true(H.wait_until(function() return not H.set(pool:pids())[first] end))
      local second = pool:pids()[1]
      H.kill(second, 9)
      assert.is_true(H.wait_until(function() return pool:stats().restarts == 1 end))
      assert.is_true(H.wait_until(function() return pool:stats().ready == 1 end))
      pool:stop()
    end)
    local starts = named(ev, "slither.pool.worker.start")
    assert.are.equal(3, #starts) -- the first, the recycle's and the restart's replacement
    assert.are.equal(first, starts[1].md.pid)
    assert.are.equal("tw", starts[1].md.pool)
    assert.are.equal("tw/w1", starts[1].md.worker)
    local ready = named(ev, "slither.pool.worker.ready")
    assert.are.equal(3, #ready)
    assert.truthy(ready[1].md.hello.python:match("^3%."))
    local rec = named(ev, "slither.pool.worker.recycle")
    assert.are.equal(1, #rec)
    assert.are.equal("max_calls", rec[1].md.reason)
    assert.are.equal(first, rec[1].md.pid)
    local restart = named(ev, "slither.pool.worker.restart")
    assert.are.equal(1, #restart)
    assert.are.equal(starts[2].md.pid, restart[1].md.pid)
    local exits = named(ev, "slither.pool.worker.exit")
    assert.are.equal(3, #exits)
    local by_pid = {}
    for _, e in ipairs(exits) do by_pid[e.md.pid] = e.md end
    assert.are.equal("recycled: max_calls", by_pid[first].reason)
    assert.are.equal(9, by_pid[starts[2].md.pid].signal)
    assert.are.equal(0, by_pid[starts[3].md.pid].exit_status) -- stopped: left on end of file
  end)

  it("pool call events: start, stop and exception share the call's metadata (#11)", function()
    local pool = H.pool{ name = "tc", size = 1 }
    local ev = recording("slither.pool.call", function()
      assert(pool:call("sl_testmod", "double", { 1, 2, 3 }, { session = "S" }))
      pool:call("sl_testmod", "boom", { 7 })
    end)
    assert.are.same({ "slither.pool.call.start", "slither.pool.call.stop",
      "slither.pool.call.start", "slither.pool.call.exception" },
      { ev[1].name, ev[2].name, ev[3].name, ev[4].name })
    assert.are.equal(3, ev[1].m.items)
    assert.are.equal(ev[1].md.call_id, ev[2].md.call_id)
    assert.are_not.equal(ev[1].md.call_id, ev[3].md.call_id)
    assert.are.equal("S", ev[2].md.session)
    assert.are.equal("double", ev[2].md["function"])
    assert.are.equal("sl_testmod", ev[2].md.module)
    assert.are.equal("tc/w1", ev[2].md.worker)
    assert.are.equal(pool:pids()[1], ev[2].md.pid)
    assert.is_nil(ev[3].md.session)
    assert.are.equal("python", ev[4].md.kind)
    assert.are.equal("bad value: 7", ev[4].md.message)
  end)

  it("call.exception carries the kind of every way a call can fail (#11)", function()
    local kinds = {}
    local function expect(kind, events, err)
      local md = one_exception(events, err)
      assert.are.equal(kind, md.kind)
      kinds[kind] = true
    end
    local pool = H.pool{ name = "tk", size = 1, codec = "pickle", max_frame_mb = 1 }
    local err
    local function call(m, f, p, o)
      return recording("slither.pool.call", function() _, err = pool:call(m, f, p, o) end)
    end
    expect("python", call("sl_testmod", "boom", { 1 }), err)
    expect("import", call("no_such_module_xyz", "f", { 1 }), err)
    expect("import", call("sl_testmod", "no_such_function", { 1 }), err)
    expect("result_mismatch", call("sl_testmod", "wrong_length", { 1 }), err)
    expect("result_mismatch", call("sl_testmod", "not_a_list", { 1 }), err)
    expect("timeout", call("sl_testmod", "slow", { 5 }, { timeout_ms = 200 }), err)
    expect("worker_crashed", call("sl_testmod", "exit_now", { 3 }), err)
    expect("protocol", call("sl_testmod", "garbage", { 1 }), err)
    expect("protocol", call("sl_testmod", "raw_error_meta", { "{nope" }), err)
    expect("codec", call("sl_testmod", "unreadable_result", { 1 }), err)
    expect("too_big", call("sl_testmod", "echo", { string.rep("x", 2 * 1024 * 1024) }), err)
    expect("invalid", call("sl_testmod", "echo", { 1 }, { session = "\255" }), err)
    -- a call whose task is cancelled while it runs (the caller gets no error)
    local ev = recording("slither.pool.call", function()
      local t = slither.spawn(function() return pool:call("sl_testmod", "slow", { 5 }) end)
      assert.is_true(H.wait_until(function() return pool:stats().busy == 1 end))
      t:cancel()
    end)
    expect("canceled", ev)
    assert.is_true(H.wait_until(function() return pool:stats().ready == 1 end))
    pool:stop()
    expect("pool_stopped", call("sl_testmod", "echo", { 1 }), err)

    -- session_lost: a strict session whose worker died
    local strict = H.pool{ name = "ts", size = 1, affinity = "strict" }
    assert(strict:call("sl_testmod", "count_calls", { 0 }, { session = "A" }))
    H.kill(strict:pids()[1], 9)
    assert.is_true(H.wait_until(function() return strict:stats().restarts == 1 end))
    ev = recording("slither.pool.call", function()
      _, err = strict:call("sl_testmod", "count_calls", { 0 }, { session = "A" })
    end)
    expect("session_lost", ev, err)
    assert.are.equal("A", one_exception(ev).session)
    strict:stop()

    -- pool_failed: replacements that keep crashing at start-up
    local flag = os.tmpname()
    os.remove(flag)
    local flaky = H.pool{ name = "tf", size = 1, python = H.pypath .. "/flaky_python.sh",
      env = { SLITHER_FLAKY_FLAG = flag } }
    io.open(flag, "w"):close()
    H.kill(flaky:pids()[1], 9)
    assert.is_true(H.wait_until(function() return flaky:stats().failed end, 5000))
    ev = recording("slither.pool.call", function()
      _, err = flaky:call("sl_testmod", "double", { 1 })
    end)
    os.remove(flag)
    expect("pool_failed", ev, err)

    -- every kind a call can end with is covered (out_of_memory aside)
    local want = { "python", "import", "result_mismatch", "timeout", "worker_crashed",
      "protocol", "codec", "too_big", "invalid", "canceled", "pool_stopped", "session_lost",
      "pool_failed" }
    for _, k in ipairs(want) do assert.truthy(kinds[k], "kind " .. k) end
  end)

  it("dispatch batch events: start, stop, exception (#11)", function()
    local pool = H.pool{ name = "td", size = 1 }
    local ev = recording("slither.dispatch.batch", function()
      slither.dispatch.run({ 1, 2, 3, -1 }, { pool = pool, module = "sl_dispatch_mod",
        ["function"] = "poison", batch_size = 2, on_error = "skip" })
    end)
    local starts = named(ev, "slither.dispatch.batch.start")
    local stops = named(ev, "slither.dispatch.batch.stop")
    local excs = named(ev, "slither.dispatch.batch.exception")
    assert.are.same({ 2, 1, 1 }, { #starts, #stops, #excs })
    assert.are.equal(2, stops[1].m.items)
    assert.are.equal(1, stops[1].m.attempt)
    assert.are.equal("td/w1", stops[1].md.worker)
    assert.are.equal("fixed", stops[1].md.strategy)
    assert.is_true(stops[1].m.bytes_out > 0 and stops[1].m.bytes_in > 0)
    assert.are.equal("python", excs[1].md.kind)
    assert.are.equal("python", excs[1].md.error.kind)
    assert.truthy(excs[1].md.error.message:find("poison", 1, true))
  end)

  -- #11 item 8: a pipe stage's batch events did not say which pipe and stage
  it("dispatch batch events of a pipe stage carry pipe, stage and run_id (#11)", function()
    H.pool{ name = "default", size = 1 }
    local P = slither.pipe("tbatch", function(p)
      p:stage("prep", "lua", { handler = function(it) return it.payload end })
      p:stage("py", "python", { module = "sl_pipe_mod", ["function"] = "fail_on_negative",
                                batch_size = 2 })
      p:stage("lua_exec", "python", { batch_size = 3, executor = function(x) return x end })
      p:on_error("py", "isolate")
    end)
    local rep
    local ev = recording("slither.dispatch.batch", function()
      local out
      out, rep = slither.run_pipe(P, { 1, 2, -3, 4 })
      assert(out, rep and rep.message)
    end)
    local stages = {}
    for _, e in ipairs(ev) do
      assert.are.equal("tbatch", e.md.pipe, e.name)
      assert.are.equal(rep.run_id, e.md.run_id, e.name)
      stages[e.md.stage] = (stages[e.md.stage] or 0) + 1
    end
    -- py: 2 batches, the failed one split in two: 4 starts, 2 stops, 2 exceptions
    assert.are.equal(8, stages.py)
    assert.are.equal(2, stages.lua_exec) -- 3 items left, one batch: start and stop
    local excs = named(ev, "slither.dispatch.batch.exception")
    assert.are.equal(2, #excs)
    assert.are.equal("py", excs[1].md.stage)
    -- a dispatch of its own carries none of them
    local plain = recording("slither.dispatch.batch", function()
      assert(slither.dispatch.run({ 1 }, { executor = function(x) return x end }))
    end)
    assert.are.equal(2, #plain)
    for _, e in ipairs(plain) do
      assert.is_nil(e.md.pipe)
      assert.is_nil(e.md.stage)
      assert.is_nil(e.md.run_id)
    end
  end)

  it("store events: write, reload.start, reload.stop (#11)", function()
    local fail = false
    local ev = recording("slither.store", function()
      local st = assert(slither.store.start(slither.store.define{ name = "tstore",
        tables = { { name = "t" } },
        load = function(t)
          if fail then error("source down") end
          t.t:put("seed", 1)
        end }))
      st:put("t", "a", 1)
      st:put_many("t", { b = 2, c = 3 })
      st:delete("t", "a")
      st:update("t", "b", function(v) return v + 1 end)
      st:clear("t")
      fail = true
      assert.is_nil(st:reload())
      st:stop()
    end)
    local ops = {}
    for _, e in ipairs(named(ev, "slither.store.write")) do
      if e.md.store == "tstore" then ops[#ops + 1] = e.md.operation .. ":" .. e.m.count end
    end
    for _, want in ipairs({ "put:1", "put_many:2", "delete:1", "update:1", "clear:0" }) do
      assert.truthy(H.set(ops)[want], want .. " in " .. table.concat(ops, " "))
    end
    local stops = named(ev, "slither.store.reload.stop")
    assert.are.equal(2, #named(ev, "slither.store.reload.start"))
    assert.are.equal(2, #stops)
    assert.is_true(stops[1].md.ok)
    assert.is_false(stops[2].md.ok)
    assert.truthy(stops[2].md.error:find("source down", 1, true))
  end)

  it("bridge view events: start, stop, exception (#11)", function()
    local pool = H.pool{ name = "tv", size = 1 }
    local st = assert(slither.store.start(slither.store.define{ name = "tviews",
      tables = { { name = "s" } },
      views = {
        { name = "fine", handler = function(a) return a end },
        { name = "bad", scope = "global", handler = function() error("view boom") end },
      } }))
    st:open_session("V")
    local ev = recording("slither.bridge.view", function()
      assert(pool:call("sl_store_mod", "call_view", { { "fine", 1 }, { "bad", 2 } },
        { session = "V" }))
    end)
    st:stop()
    assert.are.same({ "slither.bridge.view.start", "slither.bridge.view.stop",
      "slither.bridge.view.start", "slither.bridge.view.exception" },
      { ev[1].name, ev[2].name, ev[3].name, ev[4].name })
    assert.are.equal("fine", ev[2].md.view)
    assert.are.equal("V", ev[2].md.session)
    assert.are.equal("tv/w1", ev[2].md.worker)
    assert.truthy(ev[4].md.error:find("view boom", 1, true))
    -- the start event's metadata is not changed by what happened after it
    assert.is_nil(ev[3].md.error)
  end)

  it("pipe run and stage events: start, stop, exception (#11)", function()
    H.pool{ name = "default", size = 1 }
    local P = slither.pipe("tpipe", function(p)
      p:stage("prep", "lua", { handler = function(it) return it.payload end })
      p:stage("py", "python", { module = "sl_pipe_mod", ["function"] = "fail_on_negative",
                                batch_size = 2 })
    end)
    local ok_ev = recording("slither.pipe", function()
      assert(slither.run_pipe(P, { 1, 2, 3 }))
    end)
    assert.are.same({ "slither.pipe.run.start", "slither.pipe.stage.start",
      "slither.pipe.stage.start", "slither.pipe.stage.stop", "slither.pipe.stage.stop",
      "slither.pipe.run.stop" }, (function()
        local n = {}
        for i, e in ipairs(ok_ev) do n[i] = e.name end
        return n
      end)())
    assert.are.equal("tpipe", ok_ev[1].md.pipe)
    assert.are.equal(ok_ev[1].md.run_id, ok_ev[6].md.run_id)
    assert.are.equal("py", ok_ev[5].md.stage)
    assert.are.equal(3, ok_ev[5].m["in"])
    assert.are.equal(3, ok_ev[5].m.out)
    assert.are.equal(0, ok_ev[5].m.retries) -- python stages count retries
    local bad_ev = recording("slither.pipe", function()
      assert.is_nil(slither.run_pipe(P, { 1, -2, 3 }))
    end)
    local stage_exc = named(bad_ev, "slither.pipe.stage.exception")
    assert.are.equal(1, #stage_exc)
    assert.are.equal("py", stage_exc[1].md.stage)
    local run_exc = named(bad_ev, "slither.pipe.run.exception")
    assert.are.equal(1, #run_exc)
    assert.are.equal("python", run_exc[1].md.error.kind) -- the failed batch's own kind
    assert.are.equal("py", run_exc[1].md.error.stage)
    assert.are.equal(0, #named(bad_ev, "slither.pipe.run.stop"))
  end)
end)
