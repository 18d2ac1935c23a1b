-- Pipes against real workers: every stage kind and return form, routers, error
-- policies, sessions kept apart, streaming and stages running at once.
local slither = require("slither")
local H = require("helpers")

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

local function payloads(list)
  local out = {}
  for i, it in ipairs(list) do out[i] = it.payload end
  return out
end

describe("slither.pipe", function()
  after_each(function() H.assert_clean() end)

  it("runs lua, python and router stages into outputs", function()
    H.pool{ name = "default", size = 2 }
    local P = slither.pipe("score", function(p)
      p:stage("prepare", "lua", { handler = function(item) return { n = item.payload } end })
      p:stage("predict", "python", { module = "sl_pipe_mod", ["function"] = "score",
                                     batch_size = 8 })
      p:stage("route", "router", { routes = {
        { function(it) return it.payload.score >= 8 end, "accept" },
        { function(it) return it.payload.score >= 4 end, "review" } } })
      p:output("accept")
      p:output("review")
    end)
    local out, rep = slither.run_pipe(P, range(100))
    assert.are.equal(21, #out.accept)   -- 80..100: scores >= 8.0
    assert.are.equal(40, #out.review)   -- 40..79
    assert.are.equal(39, #out.default)
    assert.are.equal(100, rep.stages.predict["in"])
    assert.are.equal(100, rep.stages.route["in"])
    assert.are.equal(21, rep.routing.accept)
    assert.are.equal(21, rep.routing["route->accept"])
    assert.are.equal("accept", out.accept[1].route)
    -- input order is kept inside each output
    assert.are.equal(80, out.accept[1].payload.n)
    assert.are.equal(100, out.accept[21].payload.n)
  end)

  it("supports skip, cardinality many and batch handlers", function()
    local P = slither.pipe("forms", function(p)
      p:stage("drop_odd", "lua", { handler = function(item)
        if item.payload % 2 == 1 then return nil, slither.skip("odd") end
        return item.payload
      end })
      p:stage("split", "lua", { cardinality = "many", handler = function(item)
        return { item.payload, item.payload + 0.5 }
      end })
      p:stage("tenfold", "lua", { batch_size = 3, batch_handler = function(items)
        local out = {}
        for i, it in ipairs(items) do out[i] = it.payload * 10 end
        return out
      end })
    end)
    local out, rep = slither.run_pipe(P, range(6))
    assert.are.same({ 20, 25, 40, 45, 60, 65 }, payloads(out.default))
    assert.are.equal(3, rep.stages.drop_odd.skipped)
    assert.are.equal(6, rep.stages.split.out)
    assert.are.equal(6, rep.stages.tenfold["in"])
  end)

  it("lets a router stand in the middle; unmatched items go on", function()
    local P = slither.pipe("middle", function(p)
      p:stage("triage", "router", { routes = { { function(it) return it.payload > 8 end, "big" } } })
      p:stage("double", "lua", { handler = function(it) return it.payload * 2 end })
      p:output("big")
    end)
    local out = slither.run_pipe(P, range(10))
    assert.are.same({ 9, 10 }, payloads(out.big))
    assert.are.same({ 2, 4, 6, 8, 10, 12, 14, 16 }, payloads(out.default))
  end)

  it("refuses bad definitions, naming the stage", function()
    local function msg(fn)
      local ok, e = pcall(slither.pipe, "bad", fn)
      assert.is_false(ok)
      return e
    end
    assert.truthy(msg(function(p)
      p:stage("r", "router", { routes = { { function() return true end, "nowhere" } } })
    end):find("stage 'r' routes to undeclared output 'nowhere'", 1, true))
    assert.truthy(msg(function(p) p:stage("x", "spark", {}) end)
      :find("stage 'x' has unknown kind 'spark'", 1, true))
    assert.truthy(msg(function(p)
      p:stage("x", "lua", { handler = print })
      p:stage("x", "lua", { handler = print })
    end):find("two stages are named 'x'", 1, true))
    assert.truthy(msg(function(p) p:stage("h", "lua", {}) end)
      :find("lua stage 'h' needs a handler", 1, true))
    assert.truthy(msg(function(p) p:stage("py", "python", { ["function"] = "f" }) end)
      :find("python stage 'py' needs a module (or an executor function)", 1, true))
    assert.truthy(msg(function(p) p:stage("py", "python", { executor = "spark" }) end)
      :find("option 'executor' must be \"python\" or a function", 1, true))
    assert.truthy(msg(function(p)
      p:stage("py", "python", { executor = function(x) return x end, module = "m" })
    end):find("go with the python executor", 1, true))
    assert.truthy(msg(function(p)
      p:stage("py", "python", { module = "m", ["function"] = "f", batch_sise = 2 })
    end):find("unknown option 'batch_sise'", 1, true))
    assert.truthy(msg(function(p)
      p:stage("a", "lua", { handler = print })
      p:on_error("zzz", "skip")
    end):find("unknown stage 'zzz'", 1, true))
    assert.truthy(msg(function(p)
      p:stage("a", "lua", { handler = print })
      p:on_error("a", { route = "missing" })
    end):find("undeclared output 'missing'", 1, true))
    assert.truthy(msg(function(p)
      p:stage("a", "lua", { handler = print })
      p:output("default")
    end):find("output 'default' is always there", 1, true))
  end)

  -- #11 item 3: a python stage refused executor = fn ("needs a module"),
  -- though dispatch takes one
  it("runs a python stage through an executor function, as dispatch does (#11)", function()
    local seen = {}
    local P = slither.pipe("exec", function(p)
      p:stage("prep", "lua", { handler = function(it) return it.payload + 1 end })
      p:stage("py", "python", { batch_size = 4, max_in_flight = 2,
        executor = function(payloads, ctx)
          seen[#seen + 1] = { n = #payloads, session = ctx.session, tag = ctx.metadata.tag }
          local out = {}
          for i, v in ipairs(payloads) do out[i] = v * 10 end
          return out
        end })
    end)
    local out, rep = slither.run_pipe(P, range(10), { session = "s-exec",
                                                      metadata = { tag = "t" } })
    assert.are.same({ 20, 30, 40, 50, 60, 70, 80, 90, 100, 110 }, payloads(out.default))
    assert.are.equal(10, rep.stages.py["in"])
    assert.are.equal(10, rep.stages.py.out)
    assert.are.same({ 4, 4, 2 }, { seen[1].n, seen[2].n, seen[3].n })
    assert.are.equal("s-exec", seen[1].session)
    assert.are.equal("t", seen[1].tag)
    -- streamed too, and with no pool running at all
    local got = {}
    for name, it in slither.stream_pipe(P, range(3)).next do got[#got + 1] = name .. it.payload end
    assert.are.same({ "default20", "default30", "default40" }, got)
  end)

  -- #12 item 9: a list input with a hole lost the items past it without a word
  it("refuses a list input with a hole, naming it, before any work (#12)", function()
    local ran = 0
    local P = slither.pipe("holes", function(p)
      p:stage("a", "lua", { handler = function(it) ran = ran + 1 return it.payload end })
    end)
    local long = { 1, 2, 3, 4 }
    long[2] = nil
    for _, input in ipairs({ { 1, nil, 3 }, long }) do
      for _, fn in ipairs({ slither.run_pipe, slither.stream_pipe }) do
        local ok, e = pcall(fn, P, input)
        assert.is_false(ok)
        assert.truthy(tostring(e):find("the input list has a hole: item 2", 1, true), e)
      end
    end
    assert.are.equal(0, ran)
    local out = slither.run_pipe(P, { n = 2, 5, 6, 7 })
    assert.are.same({ 5, 6 }, payloads(out.default))
    -- a batch handler's result list with a hole fails its batch, naming the hole
    local B = slither.pipe("holed_results", function(p)
      p:stage("b", "lua", { batch_size = 4, batch_handler = function()
        local t = { 1, 2, 3, 4 }
        t[2] = nil
        return t
      end })
    end)
    local none, err = slither.run_pipe(B, { 1, 2, 3, 4 })
    assert.is_nil(none)
    assert.are.equal("b", err.stage)
    assert.truthy(err.message:find("batch_handler returned a list with a hole: result 2 of 4",
      1, true), err.message)
    -- and so does a cardinality = "many" handler's
    local Many = slither.pipe("holed_many", function(p)
      p:stage("m", "lua", { cardinality = "many", handler = function() return { 1, nil, 3 } end })
    end)
    none, err = slither.run_pipe(Many, { 1 })
    assert.is_nil(none)
    assert.truthy(err.message:find("returned a list with a hole: element 2 of 3 is nil", 1, true),
      err.message)
  end)

  it("lets go of its input and outputs when a run ends, compiled or not", function()
    assert.are.equal("alive: none", H.alive_after("pipe"))
  end)

  it("halts with partial results, and skips or routes failures per stage", function()
    H.pool{ name = "default", size = 1 }
    local function build(policy)
      return slither.pipe("errs", function(p)
        p:stage("check", "lua", { handler = function(it)
          if it.payload == 3 or it.payload == 1500 then error("three is bad") end
          return it.payload
        end })
        p:stage("py", "python", { module = "sl_pipe_mod", ["function"] = "fail_on_negative",
                                  batch_size = 1 })
        p:output("failed")
        if policy then p:on_error("*", policy) end
      end)
    end
    -- halt: the error names the stage; what reached the outputs before it stays
    local long = range(2000)
    long[3] = 103
    local out, err, partial = slither.run_pipe(build(nil), long)
    assert.is_nil(out)
    assert.are.equal("stage_error", err.kind)
    assert.are.equal("check", err.stage)
    assert.truthy(err.message:find("three is bad", 1, true))
    assert.is_true(#partial.default > 0)
    for i, v in ipairs(payloads(partial.default)) do
      assert.are.equal(2 * long[i], v)
    end
    local input = { 1, 2, 3, 4, -5, 6 }

    local out2, rep2 = slither.run_pipe(build("skip"), input)
    assert.are.same({ 2, 4, 8, 12 }, payloads(out2.default))
    assert.are.equal(1, rep2.stages.check.failed)
    assert.are.equal(1, rep2.stages.py.failed)

    local out3 = slither.run_pipe(build({ route = "failed" }), input)
    assert.are.same({ 2, 4, 8, 12 }, payloads(out3.default))
    assert.are.equal(2, #out3.failed)
    local kinds = {}
    for _, it in ipairs(out3.failed) do kinds[#kinds + 1] = it.meta.error.kind end
    table.sort(kinds)
    assert.are.same({ "python", "stage_error" }, kinds)
  end)

  -- #11 item 2: a stage whose executor completes at once pulled the whole input
  it("bounds what a pipe pulls when a stage's executor completes at once (#11)", function()
    local pulls, i = 0, 0
    local src = function()
      if i >= 100000 then return nil end
      i = i + 1
      pulls = pulls + 1
      return i
    end
    local P = slither.pipe("bounded", function(p)
      p:stage("a", "lua", { handler = function(it) return it.payload end })
      p:stage("py", "python", { executor = function(x) return x end, batch_size = 2,
                                max_in_flight = 1 })
      p:stage("b", "lua", { handler = function(it) return it.payload + 1 end })
    end)
    local s = slither.stream_pipe(P, src)
    for k = 1, 5 do
      local out, it = s.next()
      assert.are.equal("default", out)
      assert.are.equal(k + 1, it.payload)
    end
    s.close()
    -- the source is read a chunk (256 items) at a time
    assert.is_true(pulls <= 256 + 4, "pulled " .. pulls)
  end)

  -- #11 item 4: "isolate" was refused in pipes, as a stage option and in p:on_error
  it("isolates failing items in a pipe as dispatch does, only the bad ones fail (#11)",
  function()
    H.pool{ name = "default", size = 1 }
    local input = { 1, 2, 3, 4, -5, 6, 7, 8, 9, 10 }
    local function build(how)
      return slither.pipe("isolating", function(p)
        local opts = { module = "sl_pipe_mod", ["function"] = "fail_on_negative",
                       batch_size = 4 }
        if how == "option" then opts.on_error = "isolate" end
        p:stage("py", "python", opts)
        if how == "p:on_error" then p:on_error("py", "isolate") end
        if how == "*" then p:on_error("*", "isolate") end
      end)
    end
    for _, how in ipairs({ "option", "p:on_error", "*" }) do
      local out, rep = slither.run_pipe(build(how), input)
      assert(out, how .. ": " .. tostring(rep and rep.message))
      assert.are.same({ 2, 4, 6, 8, 12, 14, 16, 18, 20 }, payloads(out.default))
      assert.are.equal(1, rep.stages.py.failed)
      assert.are.equal(9, rep.stages.py.out)
      assert.are.equal(1, #rep.failed)
      assert.are.equal("py", rep.failed[1].stage)
      assert.are.equal(-5, rep.failed[1].item.payload)
      assert.are.equal("python", rep.failed[1].error.kind)
      assert.truthy(rep.failed[1].error.message:find("negative -5", 1, true))
    end
    -- streamed: the same items come out
    local got = {}
    for _, it in slither.stream_pipe(build("option"), input).next do got[#got + 1] = it.payload end
    assert.are.same({ 2, 4, 6, 8, 12, 14, 16, 18, 20 }, got)
    -- a Lua batch handler: a failed batch goes again item by item
    local calls = 0
    local L = slither.pipe("isolating_lua", function(p)
      p:stage("b", "lua", { batch_size = 4, on_error = "isolate", batch_handler = function(items)
        calls = calls + 1
        local out = {}
        for i, it in ipairs(items) do
          if it.payload < 0 then error("negative " .. it.payload) end
          out[i] = it.payload * 2
        end
        return out
      end })
    end)
    local out, rep = slither.run_pipe(L, input)
    assert.are.same({ 2, 4, 6, 8, 12, 14, 16, 18, 20 }, payloads(out.default))
    assert.are.equal(1, rep.stages.b.failed)
    assert.are.equal(-5, rep.failed[1].item.payload)
    assert.are.equal("b", rep.failed[1].error.stage)
    assert.are.equal(3 + 4, calls) -- three batches, the failed one again item by item
    -- skip lists what it dropped too; under halt the failure is the error's
    local S = slither.pipe("skipping", function(p)
      p:stage("py", "python", { module = "sl_pipe_mod", ["function"] = "fail_on_negative",
                                batch_size = 4, on_error = "skip" })
    end)
    local _, srep = slither.run_pipe(S, input)
    assert.are.equal(4, #srep.failed) -- the whole batch of -5
    local H2 = slither.pipe("halting", function(p)
      p:stage("py", "python", { module = "sl_pipe_mod", ["function"] = "fail_on_negative",
                                batch_size = 4 })
    end)
    local none, herr = slither.run_pipe(H2, input)
    assert.is_nil(none)
    assert.are.equal("python", herr.kind)
    assert.are.equal(0, #herr.report.failed)
    -- one policy per stage
    local ok, e = pcall(slither.pipe, "twice", function(p)
      p:stage("py", "python", { module = "m", ["function"] = "f", on_error = "skip" })
      p:on_error("py", "isolate")
    end)
    assert.is_false(ok)
    assert.truthy(e:find("stage 'py' has an error policy twice", 1, true))
  end)

  it("retries a Python stage by its retry policy, then falls back", function()
    local flag = os.tmpname() -- the first worker to see it dies mid-batch
    H.pool{ name = "default", size = 2, env = { SLITHER_DIE_FLAG = flag } }
    local P = slither.pipe("retrying", function(p)
      p:stage("py", "python", { module = "sl_dispatch_mod", ["function"] = "die_once",
                                batch_size = 10 })
      p:on_error("py", { retry = { max_attempts = 3, backoff_ms = 10, on = { "worker_crashed" } } })
    end)
    local out, rep = slither.run_pipe(P, range(100))
    assert(out, rep and rep.message)
    local want, seen = {}, {}
    for i = 1, 100 do want[i] = i + 1 end
    assert.are.same(want, payloads(out.default)) -- nothing lost, nothing twice
    for _, it in ipairs(out.default) do
      assert.is_nil(seen[it.id])
      seen[it.id] = true
    end
    assert.are.equal(1, rep.stages.py.retries)
    assert.are.equal(0, rep.stages.py.failed)

    -- retries used up: the fallback routes the batch's items to an output
    local Q = slither.pipe("retry_then_route", function(p)
      p:stage("py", "python", { module = "sl_pipe_mod", ["function"] = "fail_on_negative",
                                batch_size = 2 })
      p:output("failed")
      p:on_error("py", { retry = { max_attempts = 2, backoff_ms = 0 },
                         fallback = { route = "failed" } })
    end)
    local out2, rep2 = slither.run_pipe(Q, { 1, 2, -3, 4, 5, 6 })
    assert.are.same({ 2, 4, 10, 12 }, payloads(out2.default))
    assert.are.same({ -3, 4 }, payloads(out2.failed))
    assert.are.equal("python", out2.failed[1].meta.error.kind)
    assert.are.equal(1, rep2.stages.py.retries)
    assert.are.equal(2, rep2.stages.py.failed)
    assert.are.equal(2, rep2.routing.failed)

    -- retries used up, then halt: the report still counts them
    local R = slither.pipe("retry_then_halt", function(p)
      p:stage("py", "python", { module = "sl_pipe_mod", ["function"] = "fail_on_negative",
                                batch_size = 2 })
      p:on_error("py", { retry = { max_attempts = 3, backoff_ms = 0 } })
    end)
    local out3, err3 = slither.run_pipe(R, { -3, 4 })
    assert.is_nil(out3)
    assert.are.equal("py", err3.stage)
    assert.are.equal(2, err3.report.stages.py.retries)
    assert.are.equal(2, err3.report.stages.py.failed)
  end)

  -- found with #11 item 4: a retry policy's fallback was ignored by Lua stages
  -- (they halted) and never checked by the pipe
  it("applies a retry policy's fallback to Lua stages, and checks it", function()
    local P = slither.pipe("lua_fallback", function(p)
      p:stage("a", "lua", { handler = function(it)
        if it.payload == 2 then error("two") end
        return it.payload
      end })
      p:stage("b", "lua", { batch_size = 2, batch_handler = function(items)
        for _, it in ipairs(items) do if it.payload == 3 then error("three") end end
        return { items[1].payload, items[2] and items[2].payload }
      end })
      p:output("bad")
      p:on_error("a", { retry = { max_attempts = 2 }, fallback = { route = "bad" } })
      p:on_error("b", { retry = { max_attempts = 2 }, fallback = "isolate" })
    end)
    local out, rep = slither.run_pipe(P, { 1, 2, 3, 4, 5 })
    assert(out, rep and rep.message)
    assert.are.same({ 1, 4, 5 }, payloads(out.default))
    assert.are.same({ 2 }, payloads(out.bad))
    assert.are.equal(1, #rep.failed)
    assert.are.equal(3, rep.failed[1].item.payload)
    local ok, e = pcall(slither.pipe, "bad_fallback", function(p)
      p:stage("a", "lua", { handler = print })
      p:on_error("a", { retry = {}, fallback = "ignore" })
    end)
    assert.is_false(ok)
    assert.truthy(e:find("on_error for 'a' must be", 1, true), e)
  end)

  local function session_pipe(Store)
    return slither.pipe("sessions", function(p)
      p:store(Store)
      p:stage("remember", "python", { module = "sl_pipe_mod", ["function"] = "remember",
                                      batch_size = 2 })
    end)
  end

  local function whoami_store()
    return slither.store.define{ name = "runs", tables = { { name = "t" } },
      views = { { name = "whoami", scope = "session",
                  handler = function(_, ctx) return ctx.session end } } }
  end

  it("keeps two concurrent runs' sessions, views and state apart", function()
    -- strict affinity: each run's batches stay with the worker that holds its state
    H.pool{ name = "default", size = 2, affinity = "strict" }
    local P = session_pipe(whoami_store())
    local ta = slither.spawn(function() return slither.run_pipe(P, range(10), { session = "A" }) end)
    local tb = slither.spawn(function() return slither.run_pipe(P, range(6), { session = "B" }) end)
    local _, outa = ta:join()
    local _, outb = tb:join()
    for _, it in ipairs(outa.default) do
      assert.are.equal("A", it.payload.view)
      assert.are.equal("A", it.payload.sid)
    end
    for _, it in ipairs(outb.default) do
      assert.are.equal("B", it.payload.view)
      assert.are.equal("B", it.payload.sid)
    end
    assert.are.equal(10, outa.default[10].payload.seen)
    assert.are.equal(6, outb.default[6].payload.seen)
    -- the runs' session views are gone, and their state was released
    local pool = slither.pool.get("default")
    local r = assert(pool:call("sl_pipe_mod", "session_count", { 0 }, { session = "A" }))
    assert.are.equal(0, r[1])
  end)

  it("releases session state after a run that ended in error", function()
    H.pool{ name = "default", size = 1 }
    local Store = whoami_store()
    local P = slither.pipe("fails", function(p)
      p:store(Store)
      p:stage("remember", "python", { module = "sl_pipe_mod", ["function"] = "remember",
                                      batch_size = 2 })
      p:stage("boom", "lua", { handler = function(it)
        if it.payload.seen >= 4 then error("enough") end
        return it.payload
      end })
    end)
    local out, err = slither.run_pipe(P, range(10), { session = "E" })
    assert.is_nil(out)
    assert.are.equal("boom", err.stage)
    local pool = slither.pool.get("default")
    local r = assert(pool:call("sl_pipe_mod", "session_count", { 0 }, { session = "E" }))
    assert.are.equal(0, r[1])
  end)

  it("streams over an infinite input and stops early", function()
    H.pool{ name = "default", size = 2 }
    local P = slither.pipe("inf", function(p)
      p:stage("py", "python", { module = "sl_dispatch_mod", ["function"] = "double",
                                batch_size = 10, max_in_flight = 2 })
      p:stage("split", "router", { routes = { { function(it) return it.payload % 4 == 0 end,
                                                "fours" } } })
      p:output("fours")
    end)
    local n = 0
    local s = slither.stream_pipe(P, function() n = n + 1; return n end)
    local got = {}
    for out, it in s.next do
      got[#got + 1] = out .. ":" .. it.payload
      if #got == 30 then break end
    end
    s:close()
    local pulled = n
    slither.sleep(200)
    assert.are.equal(pulled, n)
    assert.is_true(n <= 3 * 256, "pulled " .. n) -- a few chunks, not the whole input
    assert.are.equal("default:2", got[1])
    assert.are.equal("fours:4", got[2])
  end)

  it("runs its stages at once", function()
    H.pool{ name = "default", size = 2 }
    local P = slither.pipe("overlap", function(p)
      p:stage("a", "python", { module = "sl_pipe_mod", ["function"] = "stamp_a", batch_size = 2,
                               max_in_flight = 1 })
      p:stage("b", "python", { module = "sl_pipe_mod", ["function"] = "stamp_b", batch_size = 2,
                               max_in_flight = 1 })
    end)
    local out = slither.run_pipe(P, range(20))
    assert.are.equal(20, #out.default)
    -- some batch of stage a ran while a batch of stage b ran
    local overlap = false
    for _, x in ipairs(out.default) do
      for _, y in ipairs(out.default) do
        local a, b = x.payload.a, y.payload.b
        if a[1] < b[2] - 0.002 and b[1] < a[2] - 0.002 then overlap = true end
      end
    end
    assert.is_true(overlap)
  end)

  it("keeps a fast Python stage from running ahead of a slow one", function()
    H.pool{ name = "default", size = 4 }
    local P = slither.pipe("runahead", function(p)
      p:stage("fast", "python", { module = "sl_dispatch_mod", ["function"] = "double",
                                  batch_size = 5, max_in_flight = 2 })
      p:stage("slow", "python", { module = "sl_dispatch_mod", ["function"] = "slow5",
                                  batch_size = 1, max_in_flight = 2 })
    end)
    local peaks = {}
    for _, n in ipairs({ 40, 160 }) do
      local fast_done, consumed, peak = 0, 0, 0
      local id = slither.telemetry.attach("slither.dispatch.batch.stop", function(_, m)
        if m.items == 5 then fast_done = fast_done + 5 end -- the fast stage's batches
        if fast_done - consumed > peak then peak = fast_done - consumed end
      end)
      local input = {}
      for i = 1, n do input[i] = i end
      for _ in slither.stream_pipe(P, input).next do consumed = consumed + 1 end
      slither.telemetry.detach(id)
      peaks[#peaks + 1] = peak
    end
    -- what sits between the stages depends on the windows, not on the input size
    assert.is_true(peaks[2] <= 30, "peak " .. peaks[2])
    assert.is_true(peaks[2] <= peaks[1] + 10, peaks[1] .. " then " .. peaks[2])
  end)

  it("emits run and stage telemetry", function()
    local seen = {}
    local id = slither.telemetry.attach("slither.pipe", function(name, m, md)
      seen[#seen + 1] = name
    end)
    local P = slither.pipe("tele", function(p)
      p:stage("x", "lua", { handler = function(it) return it.payload end })
    end)
    slither.run_pipe(P, range(3))
    slither.telemetry.detach(id)
    assert.are.same({ "slither.pipe.run.start", "slither.pipe.stage.start",
                      "slither.pipe.stage.stop", "slither.pipe.run.stop" }, seen)
  end)
end)
