-- Dispatch against real workers: strategies, orderings, error policies, retry,
-- timeouts, streams and the in-flight bound, observed from the worker side.
local slither = require("slither")
local H = require("helpers")
local dispatch = slither.dispatch

local function payloads(items)
  local out = {}
  for i, it in ipairs(items) do out[i] = it.payload end
  return out
end

local function range(n, f)
  local t = {}
  for i = 1, n do t[i] = f and f(i) or i end
  return t
end

local M = "sl_dispatch_mod"

describe("slither.dispatch", function()
  after_each(function() H.assert_clean() end)

  for _, codec in ipairs({ "pickle", "json" }) do
    it("runs fixed batches and keeps input order (" .. codec .. ")", function()
      local pool = H.pool{ size = 2, codec = codec }
      assert.are.equal(codec, pool:stats().codec)
      local items = slither.item.wrap_many(range(1000))
      items[5].meta.tag = "kept"
      local ids = {}
      for i, it in ipairs(items) do ids[i] = it.id end
      local res, rep = dispatch.run(items, { pool = pool, module = M, ["function"] = "double",
                                              batch_size = 64 })
      assert.are.same(range(1000, function(i) return 2 * i end), payloads(res))
      assert.are.equal(16, rep.batches)
      assert.are.equal(1000, rep.items_ok)
      assert.are.equal(0, rep.items_failed)
      assert.are.equal("kept", res[5].meta.tag)
      for i, it in ipairs(res) do assert.are.equal(ids[i], it.id) end
    end)
  end

  it("wraps bare payloads and gives items increasing ids", function()
    local pool = H.pool{ size = 1 }
    local res = dispatch.run({ 1, 2, 3 }, { pool = pool, module = M, ["function"] = "double" })
    assert.are.same({ 2, 4, 6 }, payloads(res))
    assert.is_true(res[1].id < res[2].id and res[2].id < res[3].id)
    assert.is_true(slither.item.is_item(res[1]))
  end)

  it("cuts weighted batches by max_weight; a heavy item goes alone", function()
    local pool = H.pool{ size = 2 }
    local weights = { 3, 3, 3, 10, 1, 1, 1, 1, 1, 4, 4 }
    local res = dispatch.run(weights, { pool = pool, module = M, ["function"] = "batch_view",
      strategy = "weighted", max_weight = 6, weight_fn = function(it) return it.payload end })
    local batches = {}
    for i, it in ipairs(res) do
      local first = it.payload[2]
      batches[first] = batches[first] or 0
      batches[first] = batches[first] + weights[i]
      assert.are.equal(first, weights[i - (i - 1) % 1] and it.payload[2])
    end
    -- the batch that starts with 10 holds only that item
    for _, it in ipairs(res) do
      if it.payload[2] == 10 then assert.are.equal(1, it.payload[1]) end
    end
    -- every other batch stays within max_weight
    local sums, sizes = {}, {}
    local i = 1
    while i <= #res do
      local size = res[i].payload[1]
      local w = 0
      for k = i, i + size - 1 do w = w + weights[k] end
      sums[#sums + 1] = w
      sizes[#sizes + 1] = size
      i = i + size
    end
    assert.are.same({ 6, 3, 10, 5, 4, 4 }, sums)
  end)

  it("groups items by key, one worker per key, in input order", function()
    local pool = H.pool{ size = 2 }
    local src = range(60, function(i) return { k = "k" .. (i % 3), n = i } end)
    local res, rep = dispatch.run(src, { pool = pool, module = M, ["function"] = "key_view",
      strategy = "key", key_fn = function(it) return it.payload.k end, batch_size = 5 })
    assert.are.equal(60, #res)
    local pid_of = {}
    for i, it in ipairs(res) do
      local k, pid = it.payload[1], it.payload[2]
      assert.are.equal("k" .. (i % 3), k) -- preserve: input order, for key too
      pid_of[k] = pid_of[k] or pid
      assert.are.equal(pid_of[k], pid)    -- a key stays on one worker
    end
    assert.are.equal(12, rep.batches)
  end)

  it("accepts a strategy function that yields batches", function()
    local pool = H.pool{ size = 1 }
    local strategy = function(next_item)
      return function() -- pairs
        local a = next_item()
        if not a then return nil end
        local b = next_item()
        return b and { a, b } or { a }
      end
    end
    local res, rep = dispatch.run(range(5), { pool = pool, module = M,
      ["function"] = "batch_view", strategy = strategy })
    assert.are.equal(3, rep.batches)
    assert.are.same({ 2, 2, 2, 2, 1 }, range(5, function(i) return res[i].payload[1] end))
  end)

  it("streams as_completed out of order when batch costs are skewed", function()
    local pool = H.pool{ size = 2 }
    local s = dispatch.stream(range(20), { pool = pool, module = M, ["function"] = "skewed",
      batch_size = 2, ordering = "as_completed" })
    local order = {}
    for it in s.next do order[#order + 1] = it.payload end
    assert.are.equal(20, #order)
    assert.are_not.equal(1, order[1]) -- the slow first batch finished later
    table.sort(order)
    assert.are.same(range(20), order)
    -- run honours as_completed too
    local res = dispatch.run(range(20), { pool = pool, module = M, ["function"] = "skewed",
      batch_size = 2, ordering = "as_completed" })
    assert.are_not.equal(1, res[1].payload)
  end)

  it("streams in input order under preserve, whatever the costs", function()
    local pool = H.pool{ size = 2 }
    local s = dispatch.stream(range(20), { pool = pool, module = M, ["function"] = "skewed",
      batch_size = 2 })
    local order = {}
    for it in s.next do order[#order + 1] = it.payload end
    assert.are.same(range(20), order)
  end)

  it("halts on the first failure and returns the partial results", function()
    local pool = H.pool{ size = 1 }
    local src = range(40)
    src[25] = -1
    local res, err, partial = dispatch.run(src, { pool = pool, module = M,
      ["function"] = "poison", batch_size = 10, max_in_flight = 1 })
    assert.is_nil(res)
    assert.are.equal("python", err.kind)
    assert.truthy(err.message:find("poison -1", 1, true))
    assert.are.equal(20, #partial)
    assert.are.equal(10, err.report.items_failed)
  end)

  it("skips a failed batch and reports its items with the error", function()
    local pool = H.pool{ size = 2 }
    local src = range(40)
    src[25] = -1
    local res, rep = dispatch.run(src, { pool = pool, module = M, ["function"] = "poison",
      batch_size = 10, on_error = "skip" })
    assert.are.equal(30, #res)
    assert.are.equal(10, rep.items_failed)
    assert.are.equal(10, #rep.failed)
    assert.are.equal("python", rep.failed[1].error.kind)
    assert.are.equal(21, rep.failed[1].item.payload)
    assert.are.equal(10, res[1].payload)
  end)

  it("isolates failing items by splitting their batch", function()
    local pool = H.pool{ size = 2 }
    local src = range(64)
    src[7], src[40] = -7, -40
    local res, rep = dispatch.run(src, { pool = pool, module = M, ["function"] = "poison",
      batch_size = 16, on_error = "isolate" })
    assert.are.equal(62, #res)
    assert.are.equal(2, rep.items_failed)
    local bad = { rep.failed[1].item.payload, rep.failed[2].item.payload }
    table.sort(bad)
    assert.are.same({ -40, -7 }, bad)
    -- preserve order holds across the splits
    local prev = 0
    for _, it in ipairs(res) do
      assert.is_true(it.payload > prev)
      prev = it.payload
    end
  end)

  it("routes a failed batch through on_error.route", function()
    local pool = H.pool{ size = 1 }
    local src = range(6)
    src[2] = -2
    local res, rep = dispatch.run(src, { pool = pool, module = M, ["function"] = "poison",
      batch_size = 3, on_error = { route = function(items, err)
        local out = {}
        for i, it in ipairs(items) do out[i] = { failed = it.payload, kind = err.kind } end
        return out
      end } })
    assert.are.equal(6, #res)
    assert.are.same({ failed = 1, kind = "python" }, res[1].payload)
    assert.are.equal(40, res[4].payload)
    assert.are.equal(3, rep.routed)
  end)

  it("retries a batch whose worker was killed, losing and duplicating nothing", function()
    local flag = os.tmpname()
    local pool = H.pool{ size = 2, env = { SLITHER_DIE_FLAG = flag } }
    local items = slither.item.wrap_many(range(200))
    local res, rep = dispatch.run(items, { pool = pool, module = M, ["function"] = "die_once",
      batch_size = 20, on_error = { retry = { max_attempts = 3, backoff_ms = 10,
                                               on = { "worker_crashed" } } } })
    assert(res, rep and rep.message)
    assert.are.equal(200, #res)
    local seen = {}
    for i, it in ipairs(res) do
      assert.are.equal(i + 1, it.payload)
      assert.is_nil(seen[it.id])
      seen[it.id] = true
    end
    assert.are.equal(1, rep.retries)
    assert.are.equal(1, pool:stats().restarts)
  end)

  it("times a batch out, then retries it elsewhere", function()
    local flag = os.tmpname()
    local pool = H.pool{ size = 2, env = { SLITHER_SLOW_FLAG = flag } }
    local res, err = dispatch.run(range(4), { pool = pool, module = M,
      ["function"] = "slow_once", batch_size = 2, timeout_ms = 1500 })
    assert.is_nil(res)
    assert.are.equal("timeout", err.kind, err.kind .. ": " .. tostring(err.message))
    io.open(flag, "w"):close()
    local res2, rep = dispatch.run(range(4), { pool = pool, module = M,
      ["function"] = "slow_once", batch_size = 2, timeout_ms = 1500,
      on_error = { retry = { max_attempts = 2, backoff_ms = 0, on = { "timeout" } } } })
    assert(res2, rep and rep.message)
    assert.are.same({ 1, 2, 3, 4 }, payloads(res2))
    assert.are.equal(1, rep.retries)
  end)

  it("treats a wrong-length result as result_mismatch, never truncating", function()
    local pool = H.pool{ size = 1 }
    local res, err = dispatch.run(range(5), { pool = pool, module = M,
      ["function"] = "wrong_length" })
    assert.is_nil(res)
    assert.are.equal("result_mismatch", err.kind)
    local _, err2 = dispatch.run(range(3), { executor = function(p) return { 1 } end })
    assert.are.equal("result_mismatch", err2.kind)
  end)

  it("stops pulling an infinite source when the stream is abandoned", function()
    local pool = H.pool{ size = 2 }
    local pulled = 0
    local src = function() pulled = pulled + 1; return pulled end
    local s = dispatch.stream(src, { pool = pool, module = M, ["function"] = "double",
      batch_size = 10, max_in_flight = 2 })
    local got = 0
    for it in s.next do
      got = got + 1
      if got == 25 then break end
    end
    local st = s:stats()
    assert.is_true(st.in_flight <= 2)
    assert.are.equal(st.items_ok - 25, st.items_waiting) -- delivered, not yet consumed
    assert.is_true(st.items_waiting >= 5)
    assert.are.equal(2, #st.per_worker)
    s:close()
    local at_stop, calls = pulled, nil
    slither.sleep(200)
    calls = pool:stats().calls
    slither.sleep(200)
    assert.are.equal(at_stop, pulled)       -- no more input was taken
    assert.are.equal(calls, pool:stats().calls) -- no more work was sent
    assert.is_true(pulled <= 50, "pulled " .. pulled) -- 3 batches consumed + 2 in flight
  end)

  it("never has more than max_in_flight batches running, seen by the workers", function()
    local pool = H.pool{ size = 2, threads = 4 } -- capacity 8
    local res = dispatch.run(range(60), { pool = pool, module = M, ["function"] = "interval",
      batch_size = 2, max_in_flight = 3 })
    local events = {}
    local seen = {}
    local batches = 0
    for _, it in ipairs(res) do
      local token = it.payload[1]
      if not seen[token] then
        seen[token] = true
        batches = batches + 1
        events[#events + 1] = { it.payload[2], 1 }
        events[#events + 1] = { it.payload[3], -1 }
      end
    end
    assert.are.equal(30, batches)
    table.sort(events, function(a, b)
      if a[1] == b[1] then return a[2] < b[2] end
      return a[1] < b[1]
    end)
    local cur, max = 0, 0
    for _, e in ipairs(events) do
      cur = cur + e[2]
      if cur > max then max = cur end
    end
    assert.is_true(max <= 3, "observed " .. max .. " batches at once")
    assert.is_true(max >= 2, "observed only " .. max .. " batch at a time")
  end)

  -- A counting source of n items: pulls() says how many were taken.
  local function counting(n)
    local i = 0
    return function()
      if i >= n then return nil end
      i = i + 1
      return i
    end, function() return i end
  end

  -- #11 item 2: an executor that completes at once finished each batch inside
  -- launch(), so the in-flight bound never bit and the stream pulled its whole
  -- source before the consumer took its 5th result.
  it("bounds what a stream pulls for every executor, one that completes at once too (#11)",
  function()
    H.pool{ name = "default", size = 1 }
    local executors = {
      lua = function(p) return p end,
      lua_yielding = function(p) slither.sleep(1) return p end,
      -- what slither.executors.NAME (a C executor) is to dispatch: a function
      -- that returns without yielding
      c_like = function(p) local out = {} for i, v in ipairs(p) do out[i] = v end return out end,
      python = "python",
    }
    for name, ex in pairs(executors) do
      for _, shape in ipairs({ { 2, 1 }, { 4, 3 } }) do
        local size, window = shape[1], shape[2]
        local src, pulls = counting(100000)
        local opts = { batch_size = size, max_in_flight = window }
        if ex == "python" then
          opts.module, opts["function"] = M, "double"
        else
          opts.executor = ex
        end
        local s = dispatch.stream(src, opts)
        for k = 1, 5 do
          local it = s.next()
          assert.is_not_nil(it)
          assert.are.equal(ex == "python" and 2 * k or k, it.payload)
          -- consumed, a batch of results handed out, and the window's batches
          local bound = k + size + size * window
          assert.is_true(pulls() <= bound, string.format("%s (batch_size %d, max_in_flight %d) " ..
            "pulled %d items by result %d (bound %d)", name, size, window, pulls(), k, bound))
        end
        s:close()
      end
    end
    -- a stream of an executor that completes at once still hands on every item, in order
    local src = counting(1000)
    local got = 0
    for it in dispatch.stream(src, { executor = function(p) return p end, batch_size = 7,
                                     max_in_flight = 3 }).next do
      got = got + 1
      assert.are.equal(got, it.payload)
    end
    assert.are.equal(1000, got)
  end)

  -- Found with #11 item 2: under "preserve" a key strategy holds finished items
  -- back until the earlier ones are done; a rare key's one item waited in its
  -- buffer while every other key's results piled up: the whole source was read
  -- before the first result came out.
  it("bounds what a key-strategy stream holds for a rare key's item (#11)", function()
    H.pool{ name = "default", size = 1 }
    for _, ex in ipairs({ "lua", "python" }) do
      local n = 20000
      local i = 0
      local src = function()
        if i >= n then return nil end
        i = i + 1
        return { k = i == 1 and "rare" or "common", i = i }
      end
      local opts = { strategy = "key", key_fn = function(it) return it.payload.k end,
                     batch_size = 4, max_in_flight = 2 }
      if ex == "python" then
        opts.module, opts["function"] = M, "key_view"
      else
        opts.executor = function(p)
          local out = {}
          for j, v in ipairs(p) do out[j] = { v.k, 0, #p } end
          return out
        end
      end
      local s = dispatch.stream(src, opts)
      -- the held results, a key's buffer and the batches out: a few times
      -- batch_size * max(4, 2 * max_in_flight) = 16
      for k = 1, 5 do
        local it = s.next()
        assert.are.equal(k == 1 and "rare" or "common", it.payload[1])
        assert.is_true(i <= 64, ex .. ": pulled " .. i .. " items by result " .. k)
      end
      local got = 5
      for _ in s.next do got = got + 1 end
      assert.are.equal(n, got)
    end
  end)

  it("keeps run's batches within max_in_flight with a Lua executor (#11)", function()
    -- run collects every result, so it pulls the whole source in the end; while
    -- it runs, input is taken only as batches may be launched
    for _, yielding in ipairs({ false, true }) do
      local src, pulls = counting(200)
      local running, done, worst = 0, 0, 0
      local res = dispatch.run(src, { batch_size = 3, max_in_flight = 2, executor = function(p)
        running = running + 1
        worst = math.max(worst, running)
        assert(pulls() <= (done + 2) * 3, "pulled " .. pulls() .. " with " .. done .. " done")
        if yielding then slither.sleep(1) end
        running = running - 1
        done = done + 1
        return p
      end })
      assert.are.equal(200, #res)
      assert.is_true(worst <= 2, "ran " .. worst .. " batches at once")
      if yielding then assert.are.equal(2, worst) end
    end
  end)

  -- #11 item 13: the README gave a strategy signature that raised "must return a
  -- batch iterator"; scripts/custom_strategy.lua is the example it now points to
  it("runs scripts/custom_strategy.lua, the README's strategy example, with every check OK (#11)",
  function()
    -- the binary of this build: LUA_CPATH holds <build>/lua/?.so
    local build = package.cpath:match("([^;]+)/lua/%?%.so")
    local bin = build and build .. "/slither"
    assert(bin and io.open(bin), "no slither binary next to the Lua modules in " .. package.cpath)
    local f = assert(io.popen(bin .. " scripts/custom_strategy.lua 2>&1; echo \"status=$?\""))
    local out = f:read("*a")
    f:close()
    assert.truthy(out:find("status=0", 1, true), out)
    assert.is_nil(out:find("MISMATCH", 1, true), out)
    local oks = 0
    for _ in out:gmatch("%[OK%]") do oks = oks + 1 end
    assert.are.equal(5, oks, out)
    assert.truthy(out:find("all checks passed", 1, true), out)
  end)

  it("says what a strategy function must return when it returns something else (#11)",
  function()
    local ex = function(p) return p end
    -- the README's old signature taken literally: a batch instead of an iterator
    local ok, e = pcall(dispatch.run, { 1, 2, 3 }, { executor = ex, strategy = function(next_item)
      return { next_item() }
    end })
    assert.is_false(ok)
    assert.truthy(e:find("must return a batch iterator, got table (strategy(next_item, opts) " ..
      "is called once and returns a function", 1, true), e)
    ok, e = pcall(dispatch.run, { 1 }, { executor = ex, strategy = function()
      return function() return {} end
    end })
    assert.is_false(ok)
    assert.truthy(e:find("the strategy returned an empty batch", 1, true), e)
    -- AGAIN (a pipe's "no item yet") put in a batch is refused, not sent on
    local n = 0
    local src = function()
      n = n + 1
      if n == 2 then return dispatch.AGAIN end
      if n <= 4 then return n end
    end
    local s = dispatch.stream(src, { executor = ex, strategy = function(next_item)
      return function()
        local a = next_item()
        if a == nil then return nil end
        return { a, next_item() }
      end
    end })
    ok, e = pcall(s.next)
    assert.is_false(ok)
    assert.truthy(tostring(e):find("the strategy put dispatch.AGAIN in a batch", 1, true), e)
  end)

  it("never calls an iterator source again once it returned nil", function()
    local ex = function(p) return p end
    for _, size in ipairs({ 1, 2, 3, 4 }) do
      local src = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
      local res = dispatch.run(src, { executor = ex, batch_size = size })
      assert.are.same({ 1, 2, 3 }, payloads(res))
      local calls, i = 0, 0
      local got = {}
      for it in dispatch.stream(function()
        calls = calls + 1
        assert(calls <= 4, "called again after nil")
        i = i + 1
        if i <= 3 then return i end
      end, { executor = ex, batch_size = size }).next do got[#got + 1] = it.payload end
      assert.are.same({ 1, 2, 3 }, got)
    end
  end)

  -- #12 item 9: dispatch.run({ 1, nil, 3 }) returned one result and reported success
  it("refuses an input list with a hole, naming it, or honours its n (#12)", function()
    local ex = function(p) return p end
    local function holed(how)
      if how == "short" then return { 1, nil, 3 } end -- # stops at 1 here
      local t = { 1, 2, 3, 4 }
      t[2] = nil -- # still says 4
      return t
    end
    local function refused(fn, ...)
      local ok, e = pcall(fn, ...)
      assert.is_false(ok, "accepted a list with a hole")
      assert.truthy(tostring(e):find("the input list has a hole: item 2", 1, true), e)
      return e
    end
    for _, how in ipairs({ "short", "long" }) do
      local e = refused(dispatch.run, holed(how), { executor = ex })
      assert.truthy(e:find("slither.dispatch.run", 1, true), e)
      refused(dispatch.stream, holed(how), { executor = ex })
      refused(dispatch.call_batch, holed(how), { executor = ex })
      refused(slither.item.wrap_many, holed(how))
    end
    -- with n, the list says its own length: n items, and a nil among them is refused
    local res = dispatch.run({ n = 2, 1, 2, 3 }, { executor = ex })
    assert.are.same({ 1, 2 }, payloads(res))
    local ok, e = pcall(dispatch.run, { n = 3, 1, 2 }, { executor = ex })
    assert.is_false(ok)
    assert.truthy(e:find("item 3 of 3 is nil", 1, true), e)
    ok, e = pcall(dispatch.run, { n = "3", 1 }, { executor = ex })
    assert.is_false(ok)
    assert.truthy(e:find("n must be an integer >= 0", 1, true), e)
    -- a null payload travels as slither.null
    res = dispatch.run({ 1, slither.null, 3 }, { executor = ex })
    assert.are.equal(3, #res)
    assert.are.equal(slither.null, res[2].payload)
  end)

  -- found with #12 item 9: a Lua executor's (or a route function's) result list
  -- with a hole that # counted past gave an item a nil payload, and success
  it("treats a result list with a hole as result_mismatch, naming the hole (#12)", function()
    local function holed()
      local t = { 10, 20, 30, 40 }
      t[2] = nil -- # still says 4
      return t
    end
    local res, err = dispatch.run({ 1, 2, 3, 4 }, { executor = holed, batch_size = 4 })
    assert.is_nil(res)
    assert.are.equal("result_mismatch", err.kind)
    assert.truthy(err.message:find("executor returned a list with a hole: result 2 of 4 is nil",
      1, true), err.message)
    res, err = dispatch.run({ 1, 2, 3, 4 }, { batch_size = 4,
      executor = function() error("down") end, on_error = { route = holed } })
    assert.is_nil(res)
    assert.are.equal("result_mismatch", err.kind)
    assert.truthy(err.message:find("on_error.route returned a list with a hole", 1, true),
      err.message)
    -- too many and too few are still counted
    res, err = dispatch.run({ 1, 2 }, { executor = function() return { 1, 2, 3 } end })
    assert.truthy(err.message:find("executor returned 3 results for 2 payloads", 1, true))
    res, err = dispatch.run({ 1, 2 }, { executor = function() return { 1 } end })
    assert.truthy(err.message:find("executor returned 1 results for 2 payloads", 1, true))
  end)

  it("runs a Lua executor and one pre-built batch with call_batch", function()
    local res, rep = dispatch.run(range(10), {
      executor = function(p, ctx)
        local out = {}
        for i, v in ipairs(p) do out[i] = v + ctx.batch_index * 1000 end
        return out
      end, batch_size = 4 })
    assert.are.equal(1001, res[1].payload)
    assert.are.equal(3010, res[10].payload)
    assert.are.equal(3, rep.batches)
    local pool = H.pool{ size = 1 }
    local r2, rep2 = dispatch.call_batch(slither.item.wrap_many({ 5, 6, 7 }),
      { pool = pool, module = M, ["function"] = "double" })
    assert.are.same({ 10, 12, 14 }, payloads(r2))
    assert.are.equal(1, rep2.batches)
  end)

  it("emits batch telemetry with measurements", function()
    local pool = H.pool{ size = 1 }
    local seen = {}
    local id = slither.telemetry.attach("slither.dispatch.batch", function(name, m, md)
      seen[#seen + 1] = { name = name, m = m, md = md }
    end)
    local src = range(6)
    src[6] = -1
    dispatch.run(src, { pool = pool, module = M, ["function"] = "poison", batch_size = 3,
      on_error = "skip" })
    slither.telemetry.detach(id)
    local names = {}
    for _, e in ipairs(seen) do names[#names + 1] = e.name:match("[^.]+$") end
    table.sort(names)
    assert.are.same({ "exception", "start", "start", "stop" }, names)
    for _, e in ipairs(seen) do
      if e.name:match("stop$") then
        assert.is_true(e.m.duration_ms >= 0)
        assert.is_true(e.m.bytes_out > 0 and e.m.bytes_in > 0)
        assert.are.equal(3, e.m.items)
        assert.are.equal(1, e.m.attempt)
        assert.are.equal("test/w1", e.md.worker)
        assert.are.equal("fixed", e.md.strategy)
      elseif e.name:match("exception$") then
        assert.are.equal("python", e.md.kind)
      end
    end
  end)

  it("ends a closed stream at once; the last batch out releases its key groups", function()
    local pool = H.pool{ name = "default", size = 2 }
    -- one item read, then close: nothing more comes out, though batches were out
    local s = dispatch.stream(range(40), { module = M, ["function"] = "slow5",
                                           batch_size = 10 })
    assert.are.equal(1, s.next().payload)
    s:close()
    slither.sleep(300)
    assert.is_nil(s.next())
    assert.is_nil(s.next_chunk())
    -- a key group is a run-scoped session: once the closed run's batches are
    -- done, the key's worker state starts again
    local ks = dispatch.stream(range(40), { module = M, ["function"] = "count_in_session",
      strategy = "key", key_fn = function(it) return it.payload % 2 end, batch_size = 4,
      session = "ks" })
    assert.is_not_nil(ks.next())
    ks:close()
    assert.is_true(H.wait_until(function() return ks:stats().in_flight == 0 end))
    local again = assert(pool:call(M, "count_in_session", { 0 }, { session = "ks:key:0" }))
    assert.are.same({ 1 }, again)
  end)

  it("raises a stream's halt again on every later pull", function()
    H.pool{ name = "default", size = 1 }
    local s = dispatch.stream({ 1, 2, -3, 4 }, { module = M, ["function"] = "poison",
                                                batch_size = 1, max_in_flight = 1 })
    assert.are.equal(10, s.next().payload)
    assert.are.equal(20, s.next().payload)
    for _ = 1, 3 do
      local ok, err = pcall(s.next)
      assert.is_false(ok)
      assert.are.equal("python", err.kind)
    end
  end)

  it("lets go of everything a finished run or call held", function()
    -- input, results, and the cancel hook a task keeps for each run and call
    assert.are.equal("alive: none", H.alive_after("dispatch"))
  end)

  it("validates options, naming the one that is wrong", function()
    local pool = H.pool{ size = 1 }
    local function msg(opts)
      local ok, e = pcall(dispatch.run, { 1 }, opts)
      assert.is_false(ok)
      return e
    end
    assert.truthy(msg({ module = M, ["function"] = "double", batch_sise = 3 })
      :find("unknown option 'batch_sise'", 1, true))
    assert.truthy(msg({ module = M, ["function"] = "double", batch_size = "3" })
      :find("option 'batch_size' must be a number, got string", 1, true))
    assert.truthy(msg({ ["function"] = "double", pool = pool })
      :find("needs option 'module'", 1, true))
    assert.truthy(msg({ module = M, ["function"] = "f", pool = "nope" })
      :find("no running pool named 'nope'", 1, true))
    assert.truthy(msg({ module = M, ["function"] = "f", pool = pool, strategy = "weighted" })
      :find("needs option 'weight_fn'", 1, true))
    assert.truthy(msg({ module = M, ["function"] = "f", pool = pool, ordering = "random" })
      :find("option 'ordering' must be", 1, true))
    assert.truthy(msg({ module = M, ["function"] = "f", pool = pool,
      on_error = { retry = { on = { "bogus" } } } }):find("unknown error kind 'bogus'", 1, true))
  end)
end)
