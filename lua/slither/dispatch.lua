-- slither.dispatch: batched fan-out of items to an executor (Python workers or a
-- Lua function) with a bounded number of batches in flight.
--
--   local results, report = slither.dispatch.run(items, {
--     module = "my_model", ["function"] = "predict_batch", batch_size = 64 })
--   for item in slither.dispatch.stream(source, opts) do ... end
--
-- Input is pulled only when a batch may be launched, so a stream over any number
-- of items holds at most max_in_flight batches (plus what a strategy buffers).
-- Results replace the items' payloads in place; ordering is by input position
-- ("preserve") or by completion ("as_completed"). Error policies: "halt", "skip",
-- "isolate" (split a failed batch until the failing items stand alone),
-- { route = fn(items, err) } and { retry = {...}, fallback = policy }.
local core = require("slither.core")
local task = require("slither.task")
local item_mod = require("slither.item")
local telemetry = require("slither.telemetry")
local pool_mod = require("slither.pool")
local options = require("slither.options")

local M = {}

local coerce = item_mod.coerce

-- A source may return AGAIN: "no item right now, ask me later". A stream whose
-- input says so, and that has nothing in flight, returns AGAIN to its consumer in
-- turn. Pipes use it so a router upstream can hand routed items on before more
-- input is pulled; plain sources never return it.
local AGAIN = setmetatable({}, { __tostring = function() return "slither.dispatch.AGAIN" end })
M.AGAIN = AGAIN

-- Live counters over every dispatch of this engine.
local counters = { batches_in_flight = 0, items_waiting = 0, runs = 0 }

-- Kinds a retry policy may name: the engine's, plus "executor" (a Lua executor
-- raised) and "codec" (payloads that cannot be encoded).
local ERROR_KINDS = core.error_kinds()
ERROR_KINDS.executor = "a Lua executor raised an error"

local function is_int(v) return v % 1 == 0 end

local OPTIONS = {
  executor = { { "string", "function" } },
  pool = { { "string", "table" } },
  module = { { "string" } },
  ["function"] = { { "string" } },
  batch_size = options.int(1),
  max_in_flight = options.int(1),
  timeout_ms = options.ms(0),
  session = { { "string" } },
  strategy = { { "string", "function" } },
  max_weight = { { "number" }, function(v) return v > 0 end, "a number > 0" },
  weight_fn = { { "function" } },
  key_fn = { { "function" } },
  ordering = { { "string" }, function(v) return v == "preserve" or v == "as_completed" end,
               '"preserve" or "as_completed"' },
  on_error = { { "string", "table" } },
  metadata = { { "table" } },
}

local function fail(fname, fmt, ...)
  error(fname .. ": " .. string.format(fmt, ...), 4)
end

local function check_policy(fname, p, depth)
  if type(p) == "string" then
    if p ~= "halt" and p ~= "skip" and p ~= "isolate" then
      fail(fname, "option 'on_error' must be \"halt\", \"skip\", \"isolate\", { route = fn } " ..
        "or { retry = {...} }, got %q", p)
    end
    return
  end
  if type(p) ~= "table" then
    fail(fname, "option 'on_error' must be a string or a table, got %s", type(p))
  end
  for k in pairs(p) do
    if k ~= "route" and k ~= "retry" and k ~= "fallback" then
      fail(fname, "on_error: unknown field '%s' (expected route, retry, fallback)", tostring(k))
    end
  end
  if p.route ~= nil and type(p.route) ~= "function" then
    fail(fname, "on_error.route must be a function, got %s", type(p.route))
  end
  if p.route and p.retry then fail(fname, "on_error takes route or retry, not both") end
  if not p.route and not p.retry then fail(fname, "on_error table needs route or retry") end
  if p.retry then
    local r = p.retry
    if type(r) ~= "table" then fail(fname, "on_error.retry must be a table, got %s", type(r)) end
    for k, v in pairs(r) do
      if k == "max_attempts" then
        if type(v) ~= "number" or v < 1 or not is_int(v) then
          fail(fname, "on_error.retry.max_attempts must be an integer >= 1")
        end
      elseif k == "backoff_ms" then
        if type(v) ~= "number" or v < 0 then fail(fname, "on_error.retry.backoff_ms must be >= 0") end
      elseif k == "jitter" then
        if type(v) ~= "number" and type(v) ~= "boolean" then
          fail(fname, "on_error.retry.jitter must be a fraction or a boolean")
        end
      elseif k == "on" then
        if type(v) ~= "table" then fail(fname, "on_error.retry.on must be a list of kinds") end
        for _, kind in ipairs(v) do
          if not ERROR_KINDS[kind] then
            fail(fname, "on_error.retry.on: unknown error kind '%s'", tostring(kind))
          end
        end
      else
        fail(fname, "on_error.retry: unknown field '%s'", tostring(k))
      end
    end
    if p.fallback ~= nil then
      if depth > 2 then fail(fname, "on_error.fallback nests too deeply") end
      if type(p.fallback) == "table" and p.fallback.retry then
        fail(fname, "on_error.fallback cannot retry again")
      end
      check_policy(fname, p.fallback, depth + 1)
    end
  elseif p.fallback ~= nil then
    fail(fname, "on_error.fallback goes with retry")
  end
end

local function check_options(fname, opts)
  opts = options.check(fname, opts, OPTIONS, 4)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.executor = o.executor or "python"
  if type(o.executor) == "string" and o.executor ~= "python" then
    fail(fname, "option 'executor' must be \"python\" or a function, got %q", o.executor)
  end
  if o.executor == "python" then
    if not o.module then fail(fname, "the python executor needs option 'module'") end
    if not o["function"] then fail(fname, "the python executor needs option 'function'") end
    local p = o.pool
    if type(p) == "string" or p == nil then
      local name = p or "default"
      p = pool_mod.get(name)
      if not p then
        fail(fname, "no running pool named '%s' (start it with slither.pool.start)", name)
      end
    elseif type(p) ~= "table" or not p.handle then
      fail(fname, "option 'pool' must be a pool or a pool name")
    end
    o.pool = p
  else
    if o.module or o["function"] or o.pool then
      fail(fname, "options 'pool', 'module' and 'function' go with the python executor")
    end
  end
  o.strategy = o.strategy or "fixed"
  if type(o.strategy) == "string" then
    if o.strategy == "weighted" then
      if not o.weight_fn then fail(fname, "strategy \"weighted\" needs option 'weight_fn'") end
      if not o.max_weight then fail(fname, "strategy \"weighted\" needs option 'max_weight'") end
    elseif o.strategy == "key" then
      if not o.key_fn then fail(fname, "strategy \"key\" needs option 'key_fn'") end
    elseif o.strategy ~= "fixed" then
      fail(fname, "option 'strategy' must be \"fixed\", \"weighted\", \"key\" or a function, " ..
        "got %q", o.strategy)
    end
  end
  if o.weight_fn and o.strategy ~= "weighted" then
    fail(fname, "option 'weight_fn' goes with strategy \"weighted\"")
  end
  if o.key_fn and o.strategy ~= "key" then
    fail(fname, "option 'key_fn' goes with strategy \"key\"")
  end
  o.ordering = o.ordering or "preserve"
  o.on_error = o.on_error or "halt"
  check_policy(fname, o.on_error, 1)
  o.explicit_batch_size = o.batch_size ~= nil
  o.batch_size = o.batch_size or 64
  if not o.max_in_flight then
    if o.executor == "python" then
      o.max_in_flight = math.max(2, 2 * o.pool:stats().capacity)
    else
      o.max_in_flight = 4
    end
  end
  return o
end
M._check_options = check_options

-- ---- sources and strategies ---------------------------------------------------

-- A source is a list, an iterator function or a stream; it becomes a function
-- that returns the next item or nil, and a function that lets go of the source
-- (a compiled trace may keep the first function alive after the run).
local function make_source(fname, src)
  local held = src
  local function drop() held = nil end
  local mt = type(src) == "table" and getmetatable(src)
  if type(src) == "function" or (mt and mt.__call) then
    return function()
      if held == nil then return nil end
      local v = held()
      -- an iterator is not called again once it said nil (a coroutine.wrap
      -- source would raise "cannot resume dead coroutine"), whoever asks again:
      -- a strategy's next batch, a stream's next fill
      if v == nil then held = nil return nil end
      if v == AGAIN then return v end
      return coerce(v)
    end, drop
  end
  if type(src) == "table" then
    local i, n = 0, item_mod.length(src, fname, 4)
    return function()
      if i >= n or held == nil then return nil end
      i = i + 1
      return coerce(held[i])
    end, drop
  end
  error(fname .. ": source must be a list, an iterator function or a stream, got " ..
    type(src), 3)
end

local function fixed_batches(next_item, o)
  local size = o.batch_size
  return function()
    local b, n = {}, 0
    while n < size do
      local it = next_item()
      if it == nil then break end
      if it == AGAIN then
        if n == 0 then return AGAIN end
        break
      end
      n = n + 1
      b[n] = it
    end
    if n == 0 then return nil end
    return b
  end
end

-- Fill batches up to max_weight; an item heavier than max_weight goes alone.
local function weighted_batches(next_item, o)
  local held
  local maxw, wfn = o.max_weight, o.weight_fn
  local size = o.explicit_batch_size and o.batch_size or math.huge
  return function()
    local b, n, w = {}, 0, 0
    while n < size do
      local it = held or next_item()
      held = nil
      if it == nil then break end
      if it == AGAIN then
        if n == 0 then return AGAIN end
        break
      end
      local iw = wfn(it)
      if type(iw) ~= "number" or iw < 0 then
        error("dispatch: weight_fn must return a number >= 0, got " .. tostring(iw), 0)
      end
      if n > 0 and w + iw > maxw then
        held = it
        break
      end
      n = n + 1
      b[n] = it
      w = w + iw
      if w >= maxw then break end
    end
    if n == 0 then return nil end
    return b
  end
end

-- One group per key: a key's batch fills to batch_size, and every batch of a key
-- carries the key's session, so its items stay with one worker. Buffered items
-- are bounded: past the bound, the oldest key's batch goes out early. held()
-- gives the finished items that wait for an earlier one (a stream under
-- "preserve"): they count against the bound too, or a rare key would hold its
-- one item back while the results of every other key pile up behind it.
local function key_batches(next_item, o, run_session, held)
  local buffers, order, buffered, done = {}, {}, 0, false
  local size, kfn = o.batch_size, o.key_fn
  local bound = size * math.max(4, o.max_in_flight * 2)
  local function take(key)
    local b = buffers[key]
    buffers[key] = nil
    for i, k in ipairs(order) do
      if k == key then table.remove(order, i) break end
    end
    buffered = buffered - #b
    b.session = run_session .. ":key:" .. tostring(key)
    b.key = key
    return b
  end
  return function()
    -- the oldest key holds the oldest buffered item, which may be what the
    -- held results wait for
    if order[1] ~= nil and buffered + held() > bound then return take(order[1]) end
    while not done do
      local it = next_item()
      if it == nil then done = true break end
      if it == AGAIN then return AGAIN end
      local key = kfn(it)
      if key == nil then error("dispatch: key_fn returned nil for item " .. it.id, 0) end
      local b = buffers[key]
      if not b then
        b = {}
        buffers[key] = b
        order[#order + 1] = key
      end
      b[#b + 1] = it
      buffered = buffered + 1
      if #b >= size then return take(key) end
      if buffered + held() > bound then
        -- the key that has waited longest holds the oldest item: sending it
        -- first lets "preserve" hand results on instead of holding them
        return take(order[1])
      end
    end
    if order[1] ~= nil then return take(order[1]) end
    return nil
  end
end

-- ---- the run ------------------------------------------------------------------

local Run = {}
Run.__index = Run

local run_seq = 0

local function new_run(fname, source, opts)
  local o = check_options(fname, opts)
  run_seq = run_seq + 1
  local self = setmetatable({
    o = o,
    session = o.session or string.format("dispatch-%d-%x", run_seq, math.random(0, 2 ^ 30)),
    inflight = 0, launched = 0, exhausted = false, halted = false, closed = false,
    progress = 0, waker = nil,
    pending = {}, next_emit = 1, -- preserve ordering: finished batches by index
    report = { batches = 0, items_ok = 0, items_failed = 0, retries = 0, failed = {},
               routed = 0 },
    waiting_items = 0,
    key_sessions = {},
    -- failed items, kept aside rather than marked on the item: reading a field an
    -- item lacks goes through its metatable, a cost on every item delivered
    failed_items = {},
  }, Run)
  local next_item, drop_source = make_source(fname, source)
  self.drop_source = drop_source
  -- Fixed and weighted batches keep input order by construction, so finished
  -- batches are put back in order by index. Key and custom strategies may send
  -- items in another order: their items are put back in order one by one.
  self.by_seq = o.ordering == "preserve" and (o.strategy == "key" or type(o.strategy) == "function")
  if self.by_seq then
    local raw, seq = next_item, 0
    self.seq_of, self.done_seq, self.next_seq = {}, {}, 1
    -- finished items waiting for an earlier one; a stream stops launching when
    -- there are hold_limit of them and a batch is still out
    self.held_n = 0
    self.hold_limit = o.batch_size * math.max(4, o.max_in_flight * 2)
    local seq_of = self.seq_of
    next_item = function()
      local it = raw()
      if it ~= nil and it ~= AGAIN then
        seq = seq + 1
        seq_of[it] = seq
      end
      return it
    end
  end
  if type(o.strategy) == "function" then
    -- strategy(next_item, opts) -> next_batch, called once per run; next_batch()
    -- -> a non-empty list of items, nil at the end, or AGAIN (README: Dispatch)
    local it = o.strategy(next_item, o)
    if type(it) ~= "function" then
      error(fname .. ": a strategy function must return a batch iterator, got " .. type(it) ..
        " (strategy(next_item, opts) is called once and returns a function that gives " ..
        "the next batch, a list of items, or nil at the end)", 3)
    end
    self.next_batch = function()
      local b = it()
      if b == AGAIN then return b end
      if b ~= nil and type(b) ~= "table" then
        error("dispatch: the strategy returned a " .. type(b) .. " instead of a batch", 0)
      end
      if b then
        if b[1] == nil then
          error("dispatch: the strategy returned an empty batch (return nil at the end)", 0)
        end
        for i = 1, #b do
          local x = b[i]
          if x == AGAIN then
            -- AGAIN is not an item: sent on, it would reach the executor
            error("dispatch: the strategy put dispatch.AGAIN in a batch (inside a pipe " ..
              "next_item() answers AGAIN when no item is ready: end the batch there, or " ..
              "return AGAIN when it is empty)", 0)
          end
          b[i] = coerce(x)
        end
      end
      return b
    end
  elseif o.strategy == "weighted" then
    self.next_batch = weighted_batches(next_item, o)
  elseif o.strategy == "key" then
    self.next_batch = key_batches(next_item, o, self.session, function()
      return self.queued and self.held_n or 0 -- run() keeps every result anyway
    end)
  else
    self.next_batch = fixed_batches(next_item, o)
  end
  self.strategy_name = type(o.strategy) == "string" and o.strategy or "custom"
  counters.runs = counters.runs + 1
  -- an interrupted task (Ctrl-C in the REPL) stops this run from launching more,
  -- and its batches in Python are cancelled (their workers are replaced)
  self.calls = {}
  self.cancel_off = task.on_cancel(function()
    self.closed = true
    if o.executor == "python" then
      for _, id in pairs(self.calls) do o.pool.handle:cancel(id) end
    end
  end)
  return self
end

function Run:wake()
  self.progress = self.progress + 1
  local w = self.waker
  if w then
    self.waker = nil
    w()
  end
end

-- Block (yielding the task, or running the loop) until something finished.
function Run:wait()
  -- A pipe stage waiting for its batches first lets the stage before it launch
  -- batches of its own, so both stages have work in Python at once.
  if self.on_wait then self.on_wait() end
  local seen = self.progress
  task.await(function(cb)
    if self.progress ~= seen then cb() else self.waker = cb end
  end)
end

local listening = telemetry.listening

-- A run that belongs to a pipe stage carries run.labels = { pipe, stage, run_id },
-- set by the pipe, and its batch events say so.
local function batch_md(b, info, err)
  local run, lb = b.run, b.run.labels
  return {
    batch_index = b.index, worker = info and info.worker, session = b.session,
    strategy = run.strategy_name, kind = err and err.kind, error = err,
    pipe = lb and lb.pipe, stage = lb and lb.stage, run_id = lb and lb.run_id,
  }
end

local function emit_event(name, b, info, err, dur)
  if not listening(name) then return end
  telemetry.execute(name, {
    duration_ms = dur, queue_wait_ms = info and info.queued_ms, items = #b.items,
    bytes_out = info and info.bytes_out, bytes_in = info and info.bytes_in,
    attempt = b.attempt,
  }, batch_md(b, info, err))
end

local finish_batch, launch

-- Retry policy state for a failed batch: returns the delay before the next
-- attempt, or nil when no retry applies.
local function retry_delay(policy, b, err)
  if type(policy) ~= "table" or not policy.retry then return nil end
  local r = policy.retry
  if b.attempt >= (r.max_attempts or 3) then return nil end
  if r.on then
    local ok = false
    for _, k in ipairs(r.on) do if k == err.kind then ok = true end end
    if not ok then return nil end
  end
  local base = (r.backoff_ms or 100) * (2 ^ (b.attempt - 1))
  local j = r.jitter
  if j == true then j = 0.25 elseif j == false or j == nil then j = 0 end
  return base * (1 + j * (2 * math.random() - 1))
end

local function mark_failed(run, items, err)
  for _, it in ipairs(items) do
    run.failed_items[it] = true
    run.report.items_failed = run.report.items_failed + 1
    run.report.failed[#run.report.failed + 1] = { item = it, error = err }
  end
end

-- The policy that applies after retries: the fallback of a retry policy, or the
-- policy itself.
local function final_policy(p)
  if type(p) == "table" and p.retry then return p.fallback or "halt" end
  return p
end

local function on_result(b, ok, err, info)
  local run = b.run
  local now = core.now()
  if ok then
    emit_event("slither.dispatch.batch.stop", b, info, nil, now - b.t0)
    finish_batch(b)
    return
  end
  emit_event("slither.dispatch.batch.exception", b, info, err, now - b.t0)
  local policy = run.o.on_error
  local delay = not run.closed and not run.halted and retry_delay(policy, b, err)
  if delay then
    run.report.retries = run.report.retries + 1
    b.attempt = b.attempt + 1
    b.avoid = info and info.worker -- another worker where one exists
    core.timer(delay, function() launch(b) end)
    return
  end
  local final = final_policy(policy)
  if final == "skip" then
    mark_failed(run, b.items, err)
    finish_batch(b)
  elseif final == "isolate" and #b.items > 1 and not run.halted then
    -- Split the batch and run both halves: only the items that fail alone fail.
    local half = math.floor(#b.items / 2)
    local left, right = {}, {}
    for i = 1, #b.items do
      if i <= half then left[#left + 1] = b.items[i] else right[#right + 1] = b.items[i] end
    end
    b.children = 2
    for _, part in ipairs({ left, right }) do
      launch({ run = run, items = part, index = b.index, parent = b, attempt = 1,
               session = b.session })
    end
  elseif final == "isolate" then
    mark_failed(run, b.items, err)
    finish_batch(b)
  elseif type(final) == "table" and final.route then
    b.own = false
    local rok, res = pcall(final.route, b.items, err)
    local problem = rok and item_mod.results_problem(res, #b.items, "on_error.route",
      "items of the batch")
    if rok and not problem then
      for i, it in ipairs(b.items) do it.payload = res[i] end
      run.report.routed = run.report.routed + #b.items
      finish_batch(b)
    else
      local e = rok and { kind = "result_mismatch", message = problem }
        or { kind = "route_error", message = tostring(res) }
      run.halted = true
      run.err = run.err or e
      mark_failed(run, b.items, e)
      finish_batch(b)
    end
  else -- halt
    run.halted = true
    run.err = run.err or err
    mark_failed(run, b.items, err)
    finish_batch(b)
  end
end

function launch(b)
  local run, o = b.run, b.run.o
  b.t0 = core.now()
  if listening("slither.dispatch.batch.start") then
    telemetry.execute("slither.dispatch.batch.start", { items = #b.items, attempt = b.attempt },
      batch_md(b, nil, nil))
  end
  if o.executor == "python" then
    local handle = o.pool.handle
    local ok, e = pcall(handle.call_items, handle, o.module, o["function"], b.items, 1, #b.items,
      b.session, o.timeout_ms, b.avoid, b.sticky,
      function(ok, err, info)
        run.calls[b] = nil
        on_result(b, ok, err, info)
      end)
    if ok and e then run.calls[b] = e end
    if not ok then
      -- the payloads cannot be encoded: misuse, but the run must not lose items
      on_result(b, nil, { kind = "codec", message = tostring(e) }, nil)
    end
  else
    task.spawn(function()
      local payloads = {}
      for i, it in ipairs(b.items) do payloads[i] = it.payload end
      local ctx = { batch_index = b.index, attempt = b.attempt, session = b.session,
                    metadata = o.metadata }
      local ok, res = pcall(o.executor, payloads, ctx)
      local problem = ok and item_mod.results_problem(res, #b.items, "executor", "payloads")
      if not ok then
        on_result(b, nil, { kind = "executor", message = tostring(res) }, nil)
      elseif problem then
        on_result(b, nil, { kind = "result_mismatch", message = problem }, nil)
      else
        for i, it in ipairs(b.items) do it.payload = res[i] end
        on_result(b, true, nil, nil)
      end
    end)
  end
end

-- A batch (or a split part) is done: hand its items on in the run's order.
function finish_batch(b)
  local parent = b.parent
  if parent then
    parent.children = parent.children - 1
    if parent.children > 0 then return end
    return finish_batch(parent)
  end
  local run = b.run
  run.inflight = run.inflight - 1
  counters.batches_in_flight = counters.batches_in_flight - 1
  -- a run closed or halted with batches out ends with its last one, whoever
  -- is (or is not) still pulling from it
  if run.inflight == 0 and (run.closed or run.halted) then run:release() end
  if run.o.ordering == "as_completed" then
    run:deliver(b)
  elseif run.by_seq then
    run:deliver_by_seq(b.items)
  else
    run.pending[b.index] = b
    while run.pending[run.next_emit] do
      local nb = run.pending[run.next_emit]
      run.pending[run.next_emit] = nil
      run.next_emit = run.next_emit + 1
      run:deliver(nb)
    end
  end
  run:wake()
end

-- Put finished items back in input order (key and custom strategies).
function Run:deliver_by_seq(items)
  local done, seq_of = self.done_seq, self.seq_of
  for _, it in ipairs(items) do
    done[seq_of[it]] = it
    seq_of[it] = nil
  end
  local n, first = self.next_seq, self.next_seq
  while done[n] do
    self:deliver({ items = { done[n] } })
    done[n] = nil
    n = n + 1
  end
  self.next_seq = n
  self.held_n = self.held_n + #items - (n - first)
end

function Run:deliver(b)
  local out, failed = self.out, self.failed_items
  local items = b.items
  local ok = 0
  if next(failed) == nil then
    if b.own and self.out_list then
      self.out_list(items) -- a list no one else holds goes on whole
    else
      for i = 1, #items do out(items[i]) end
    end
    ok = #items
  else
    for i = 1, #items do
      local it = items[i]
      if failed[it] then
        failed[it] = nil
      else
        ok = ok + 1
        out(it)
      end
    end
  end
  self.report.items_ok = self.report.items_ok + ok
end

-- Launch batches while the bound allows and input remains. Under "preserve", a
-- batch that finished before an earlier one is held until that one is done, and
-- held batches count against max_in_flight: one slow batch cannot let the others
-- run ahead and pile up results without bound.
-- A stream also stops launching once results wait for its consumer. With the
-- python executor a batch cannot finish inside launch(), so the in-flight bound
-- alone holds; an executor that completes at once (a Lua function that does not
-- yield, a C executor) finishes each batch before launch() returns, inflight is
-- back to 0 and, without this check, the loop would pull the whole source.
function Run:fill()
  local max = self.o.max_in_flight
  local index_order = self.o.ordering == "preserve" and not self.by_seq
  local queued = self.queued
  -- key and custom strategies under "preserve" hold finished items back one by
  -- one: past hold_limit of them a stream waits for the batches still out (one
  -- of them may hold what the others wait for); with none out it launches, and
  -- the key strategy sends first the key that holds the oldest buffered item
  local by_seq_bound = queued and self.by_seq
  while not self.halted and not self.closed and not self.exhausted and
      self.inflight < max and (not index_order or self.launched - self.next_emit + 1 < max) and
      (not queued or queued() == 0) and
      (not by_seq_bound or self.held_n < self.hold_limit or self.inflight == 0) do
    local b = self.next_batch()
    if b == nil then
      self.exhausted = true
      break
    end
    if b == AGAIN then
      self.starved = true
      break
    end
    self.launched = self.launched + 1
    self.report.batches = self.report.batches + 1
    self.inflight = self.inflight + 1
    counters.batches_in_flight = counters.batches_in_flight + 1
    -- fixed and weighted batches are lists made here, which no user code sees
    -- unless an error policy hands them to a route function
    launch({ run = self, items = b, index = self.launched, attempt = 1,
             session = b.session or self.o.session, sticky = b.key ~= nil,
             own = self.strategy_name == "fixed" or self.strategy_name == "weighted" })
    if b.key ~= nil then self.key_sessions[b.session] = true end
  end
end

-- The run is over: its task no longer needs to stop it, its source is let go,
-- and key groups, which are run-scoped sessions, drop their bindings and worker
-- state.
function Run:release()
  self.cancel_off()
  self.drop_source()
  if self.o.executor ~= "python" then return end
  for s in pairs(self.key_sessions) do self.o.pool.handle:release_session(s) end
  self.key_sessions = {}
end

function Run:finished()
  return self.inflight == 0 and (self.exhausted or self.halted or self.closed)
end

-- Live counters of one run: batches in flight, results held for order, items
-- waiting for the consumer, and the load of each worker of its pool.
function Run:stats()
  local held = 0
  for _ in pairs(self.pending) do held = held + 1 end
  local s = { in_flight = self.inflight, launched = self.launched, held_batches = held,
              items_waiting = self.queued and self.queued() or 0,
              items_ok = self.report.items_ok, items_failed = self.report.items_failed,
              retries = self.report.retries }
  if self.o.executor == "python" then s.per_worker = self.o.pool:stats().per_worker end
  return s
end

-- ---- the API ------------------------------------------------------------------

-- dispatch.run(items, opts) -> results, report | nil, err, partial
function M.run(items, opts)
  local run = new_run("slither.dispatch.run", items, opts)
  local results, n = {}, 0
  run.out = function(it) n = n + 1; results[n] = it end
  -- a compiled trace may keep run.out alive after the run: it must not keep
  -- the results too (results is assigned, so no trace takes it as a constant)
  local function hand_over()
    local r = results
    results = nil
    return r
  end
  local t0 = core.now()
  run:fill()
  while not run:finished() do
    run:wait()
    run:fill()
  end
  run.report.duration_ms = core.now() - t0
  run:release()
  if run.halted then
    -- finished batches still waiting for an earlier one are part of the partial result
    local idx = {}
    for i in pairs(run.pending) do idx[#idx + 1] = i end
    table.sort(idx)
    for _, i in ipairs(idx) do run:deliver(run.pending[i]) end
    run.pending = {}
    if run.by_seq then
      local seqs = {}
      for s in pairs(run.done_seq) do seqs[#seqs + 1] = s end
      table.sort(seqs)
      for _, s in ipairs(seqs) do run:deliver({ items = { run.done_seq[s] } }) end
      run.done_seq = {}
    end
    local err = run.err
    err.report = run.report
    return nil, err, hand_over()
  end
  return hand_over(), run.report
end

-- dispatch.call_batch(batch, opts): one pre-built batch through the same executor,
-- telemetry and error policy.
function M.call_batch(batch, opts)
  if type(batch) ~= "table" then
    error("slither.dispatch.call_batch: batch must be a list, got " .. type(batch), 2)
  end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.batch_size = math.max(1, item_mod.length(batch, "slither.dispatch.call_batch", 2))
  o.strategy = "fixed"
  return M.run(batch, o)
end

local Stream = {}
Stream.__index = Stream

-- dispatch.stream(source, opts) -> stream; call it (or use it in a for loop) for
-- the next result item; nil at the end. A halt raises an error table with kind,
-- message and report.
function M.stream(source, opts)
  local run = new_run("slither.dispatch.stream", source, opts)
  -- Results wait in lists, oldest first: a finished batch's own list when it
  -- goes on whole, else `open`, the list single items are added to.
  local cq, cqh, cqt, open, queued = {}, 1, 0, nil, 0
  local ended, halt_err = false, nil -- closed by the consumer; the halt, raised again
  local function enqueue(list)
    cqt = cqt + 1
    cq[cqt] = list
  end
  run.out = function(it)
    if ended then return end
    if not open then
      open = {}
      enqueue(open)
    end
    open[#open + 1] = it
    queued = queued + 1
  end
  run.out_list = function(list)
    if ended then return end
    open = nil
    enqueue(list)
    queued = queued + #list
  end
  local function take()
    local list = cq[cqh]
    cq[cqh] = nil
    if cqh == cqt then
      cqh, cqt = 1, 0 -- empty: indices that only grow would make cq rehash
    else
      cqh = cqh + 1
    end
    if list == open then open = nil end
    return list
  end
  run.queued = function() return queued end
  local s = setmetatable({ run = run, queued = run.queued }, Stream)
  -- The functions below reach the run through `live`, let go when the stream
  -- ends or is closed: a compiled trace may keep them alive after that.
  local live = run
  local cur, ci = nil, 0 -- the list being handed out one item at a time
  -- close(): nothing more is handed out, and results still to come are dropped
  run.end_stream = function()
    ended, live, cur = true, nil, nil
    while cqt >= cqh do take() end
    queued = 0
  end
  -- Run until something is queued; nil at the end, AGAIN when the input says so.
  local function advance()
    while queued == 0 do
      if halt_err then error(halt_err, 0) end -- every pull after a halt raises it
      local run = live
      if not run then return nil end
      if run.halted and run.inflight == 0 then
        run:release()
        live = nil
        local err = run.err
        err.report = run.report
        halt_err = setmetatable(err, { __tostring = function(e)
          return "dispatch halted: " .. tostring(e.kind) .. ": " .. tostring(e.message)
        end })
        error(halt_err, 0)
      end
      if run:finished() then
        run:release()
        live = nil
        return nil
      end
      run.starved = false
      run:fill()
      if queued == 0 and run.inflight == 0 and run.starved then return AGAIN end
      if queued == 0 and not run:finished() then run:wait() end
    end
    return true
  end
  s.next = function()
    if ended then return nil end
    if queued == 0 then
      local r = advance()
      if r ~= true then return r end
    end
    if not cur or ci >= #cur then cur, ci = take(), 0 end
    ci = ci + 1
    queued = queued - 1
    local it = cur[ci]
    if ci >= #cur then cur = nil end
    return it
  end
  -- The next list of results (at least one item), or nil / AGAIN: a consumer
  -- that works on lists pays per batch, not per item. The list is the
  -- consumer's to keep or change.
  s.next_chunk = function()
    if ended then return nil end
    if queued == 0 then
      local r = advance()
      if r ~= true then return r end
    end
    local list
    if cur and ci < #cur then -- the rest of a list next() began
      list = {}
      for i = ci + 1, #cur do list[#list + 1] = cur[i] end
      cur = nil
    else
      list = take()
    end
    queued = queued - #list
    return list
  end
  return s
end

function Stream:__call()
  return self.next()
end

-- Stop pulling input and end the stream; batches in flight finish, and their
-- results are dropped.
function Stream:close()
  local run = self.run
  run.closed = true
  run.drop_source()
  run.end_stream()
  -- with batches in flight, the last of them to finish releases the run
  if run.inflight == 0 then run:release() end
end

function Stream:report()
  return self.run.report
end

-- Launch what the window allows without waiting for anything (pipes call it on
-- the stage upstream of one that is about to wait). Results not yet pulled count
-- against the window: while any wait, nothing new is launched, so a fast stage
-- cannot run ahead of a slow one by more than its own in-flight limit.
function Stream:prefetch()
  local run = self.run
  if self.queued() == 0 and not run.halted and not run.closed and not run.exhausted then
    run.starved = false
    run:fill()
  end
end

function Stream:stats()
  return self.run:stats()
end

-- Engine-wide: batches in flight over every run, and runs started.
function M.counters()
  return { batches_in_flight = counters.batches_in_flight, runs = counters.runs }
end

return M
