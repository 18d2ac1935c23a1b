-- slither.pipe: a named flow of stages whose items land in named outputs.
--
--   local Score = slither.pipe("score", function(p)
--     p:store(Features)
--     p:stage("prepare", "lua", { handler = function(item, ctx) return { text = item.payload } end })
--     p:stage("predict", "python", { module = "my_model", ["function"] = "predict_batch" })
--     p:stage("route", "router", { routes = {
--       { function(item) return item.payload.score >= 0.8 end, "accept" } } })
--     p:output("accept")
--     p:on_error("predict", "skip")
--   end)
--   local outputs, report = slither.run_pipe(Score, input, { session = "run-1" })
--
-- The stages form a pull chain: the consumer pulls from the last stage, each stage
-- pulls from the one before it, and a Python stage is a dispatch stream that keeps
-- its batches in flight while the stages around it work. Input is pulled only as
-- fast as results leave, so memory is bounded by the stages' in-flight limits.
-- Under stream_pipe a router hands routed items to the consumer through a side
-- queue; when that queue is full the chain answers AGAIN, so the consumer drains
-- it before any more input is pulled. Under run_pipe routed items go to the
-- outputs as they come (see `sink` in new_run).
local core = require("slither.core")
local task = require("slither.task")
local item_mod = require("slither.item")
local dispatch = require("slither.dispatch")
local store_mod = require("slither.store")
local telemetry = require("slither.telemetry")

local M = {}
local AGAIN = dispatch.AGAIN
local coerce = item_mod.coerce
local table_new = require("table.new")

local SIDE_MAX = 64 -- routed items held for the consumer before the chain pauses

-- slither.skip(reason): returned by a Lua handler (as the second value after nil,
-- or alone) to drop an item on purpose.
local Skip = {}
Skip.__index = Skip
function M.skip(reason)
  return setmetatable({ reason = reason }, Skip)
end

local Pipe = {}
Pipe.__index = Pipe
local Builder = {}
Builder.__index = Builder

local KINDS = { lua = true, python = true, router = true }
local LUA_OPTS = { handler = true, batch_handler = true, cardinality = true, batch_size = true,
                   on_error = true }
local ROUTER_OPTS = { routes = true, on_error = true }

local function bad(pipe, fmt, ...)
  error("slither.pipe '" .. pipe .. "': " .. string.format(fmt, ...), 4)
end

local function check_policy(pipe, stage, p)
  if p == "halt" or p == "skip" or p == "isolate" then return end
  if type(p) == "table" then
    if p.route ~= nil then
      if type(p.route) ~= "string" then
        bad(pipe, "on_error for '%s': route names an output, got %s", stage, type(p.route))
      end
      return
    end
    if p.retry then
      local fb = p.fallback
      if fb == nil then return end
      if type(fb) == "table" and fb.retry then
        bad(pipe, "on_error for '%s': a fallback cannot retry again", stage)
      end
      return check_policy(pipe, stage, fb)
    end
  end
  bad(pipe, "on_error for '%s' must be \"halt\", \"skip\", \"isolate\", { route = \"output\" } " ..
    "or { retry = {...}, fallback = ... }", stage)
end

function Builder:store(def)
  if type(def) ~= "table" or type(def.name) ~= "string" or type(def.tables) ~= "table" then
    bad(self.name, "p:store expects a definition from slither.store.define")
  end
  self.stores[#self.stores + 1] = def
end

function Builder:stage(name, kind, opts)
  if type(name) ~= "string" or name == "" then bad(self.name, "a stage needs a name") end
  if self.by_name[name] then bad(self.name, "two stages are named '%s'", name) end
  if not KINDS[kind] then
    bad(self.name, "stage '%s' has unknown kind '%s' (expected lua, python or router)", name,
      tostring(kind))
  end
  opts = opts or {}
  if type(opts) ~= "table" then bad(self.name, "stage '%s': options must be a table", name) end
  local st = { name = name, kind = kind, opts = opts, index = #self.stages + 1 }
  if kind == "lua" then
    for k in pairs(opts) do
      if not LUA_OPTS[k] then bad(self.name, "stage '%s': unknown option '%s'", name, tostring(k)) end
    end
    if not opts.handler and not opts.batch_handler then
      bad(self.name, "lua stage '%s' needs a handler or a batch_handler", name)
    end
    if opts.handler and type(opts.handler) ~= "function" or
        opts.batch_handler and type(opts.batch_handler) ~= "function" then
      bad(self.name, "lua stage '%s': handler must be a function", name)
    end
    if opts.cardinality ~= nil and opts.cardinality ~= "one" and opts.cardinality ~= "many" then
      bad(self.name, "lua stage '%s': cardinality must be \"one\" or \"many\"", name)
    end
  elseif kind == "python" then
    -- a dispatch stage: its batches go to a pool, or, as in dispatch, to an
    -- executor function fn(payloads, ctx) -> results
    local lua_executor = type(opts.executor) == "function"
    if not lua_executor then
      if opts.executor ~= nil and opts.executor ~= "python" then
        bad(self.name, "python stage '%s': option 'executor' must be \"python\" or a function",
          name)
      end
      if type(opts.module) ~= "string" then
        bad(self.name, "python stage '%s' needs a module (or an executor function)", name)
      end
      if type(opts["function"]) ~= "string" then
        bad(self.name, "python stage '%s' needs a function", name)
      end
    end
    -- every other option is a dispatch option: check them now, by name and type
    -- (a pool need not run yet: the python executor's own checks wait for the run)
    local probe = {}
    for k, v in pairs(opts) do probe[k] = v end
    probe.on_error = nil -- a pipe policy, checked below
    if not lua_executor then
      probe.pool, probe.executor = nil, function() end
      probe.module, probe["function"] = nil, nil
    end
    local ok, e = pcall(dispatch._check_options, "stage '" .. name .. "'", probe)
    if not ok then bad(self.name, "%s", tostring(e):gsub("^.-stage '", "stage '")) end
  else
    for k in pairs(opts) do
      if not ROUTER_OPTS[k] then bad(self.name, "stage '%s': unknown option '%s'", name, tostring(k)) end
    end
    if type(opts.routes) ~= "table" or #opts.routes == 0 then
      bad(self.name, "router '%s' needs a list of routes { predicate, output }", name)
    end
    for i, r in ipairs(opts.routes) do
      if type(r) ~= "table" or type(r[1]) ~= "function" or type(r[2]) ~= "string" then
        bad(self.name, "router '%s': route %d must be { function(item) ... end, \"output\" }",
          name, i)
      end
    end
  end
  -- on_error as a stage option is the stage's p:on_error
  if opts.on_error ~= nil then
    check_policy(self.name, name, opts.on_error)
    if self.policies[name] ~= nil then
      bad(self.name, "stage '%s' has an error policy twice (its on_error option and p:on_error)",
        name)
    end
    self.policies[name] = opts.on_error
  end
  self.stages[#self.stages + 1] = st
  self.by_name[name] = st
end

function Builder:output(name)
  if type(name) ~= "string" or name == "" then bad(self.name, "an output needs a name") end
  if name == "default" then
    bad(self.name, "output 'default' is always there: items no router claims land in it")
  end
  if self.outputs[name] then bad(self.name, "output '%s' is declared twice", name) end
  self.outputs[name] = true
  self.output_list[#self.output_list + 1] = name
end

function Builder:on_error(stage, policy)
  if stage ~= "*" and self.by_name[stage] and self.by_name[stage].opts.on_error ~= nil then
    bad(self.name, "stage '%s' has an error policy twice (its on_error option and p:on_error)",
      stage)
  end
  if stage ~= "*" and not self.by_name[stage] then
    -- stages may be declared later: checked when the pipe is complete
    self.pending_errors[#self.pending_errors + 1] = stage
  end
  check_policy(self.name, stage, policy)
  self.policies[stage] = policy
end

-- slither.pipe(name, fn(p)) -> Pipe, checked when built.
function M.pipe(name, build)
  if type(name) ~= "string" or name == "" then error("slither.pipe: expected a name", 2) end
  if type(build) ~= "function" then error("slither.pipe: expected a builder function", 2) end
  local b = setmetatable({ name = name, stages = {}, by_name = {}, outputs = {}, output_list = {},
                           policies = {}, stores = {}, pending_errors = {} }, Builder)
  build(b)
  if #b.stages == 0 then error("slither.pipe '" .. name .. "': no stages", 2) end
  for _, s in ipairs(b.pending_errors) do
    if not b.by_name[s] then
      error("slither.pipe '" .. name .. "': on_error names unknown stage '" .. s .. "'", 2)
    end
  end
  local function check_output(stage, out)
    if out ~= "default" and not b.outputs[out] then
      error(string.format("slither.pipe '%s': stage '%s' routes to undeclared output '%s'",
        name, stage, out), 3)
    end
  end
  for _, st in ipairs(b.stages) do
    if st.kind == "router" then
      for _, r in ipairs(st.opts.routes) do check_output(st.name, r[2]) end
    end
  end
  for stage, p in pairs(b.policies) do
    if type(p) == "table" and type(p.route) == "string" then check_output(stage, p.route) end
    if type(p) == "table" and type(p.fallback) == "table" and type(p.fallback.route) == "string" then
      check_output(stage, p.fallback.route)
    end
  end
  -- does any item leave by another output than "default"?
  local routes = false
  for _, st in ipairs(b.stages) do routes = routes or st.kind == "router" end
  for _, p in pairs(b.policies) do
    routes = routes or type(p) == "table" and (p.route ~= nil or
      type(p.fallback) == "table" and p.fallback.route ~= nil)
  end
  return setmetatable({ name = name, stages = b.stages, outputs = b.outputs,
                        output_list = b.output_list, policies = b.policies,
                        stores = b.stores, routes = routes }, Pipe)
end

-- ---- running ------------------------------------------------------------------

local run_seq = 0

local function event(name, m, md)
  if telemetry.listening(name) then telemetry.execute(name, m, md) end
end

local function policy_of(pipe, stage)
  return pipe.policies[stage] or pipe.policies["*"] or "halt"
end

-- Raised (as an error value) to halt a run.
local Halt = {}
Halt.__index = Halt
Halt.__tostring = function(e) return "pipe halted: " .. tostring(e.message) end

local function halt(err)
  error(setmetatable(err, Halt), 0)
end

local function stage_error(stage, kind, message, item)
  return { kind = kind, stage = stage, message = message, item_id = item and item.id }
end

-- A running pipe: the chain of stage pulls, where items go as they leave, counts.
-- With `outputs` (run_pipe) they go to those buckets, else to stream_pipe's queue.
local function new_run(pipe, input, opts, outputs)
  opts = opts or {}
  if type(opts) ~= "table" then error("slither.run_pipe: options must be a table", 3) end
  for k in pairs(opts) do
    if k ~= "session" and k ~= "metadata" then
      error("slither.run_pipe: unknown option '" .. tostring(k) .. "' (expected session, metadata)", 3)
    end
  end
  local mt = type(input) == "table" and getmetatable(input)
  local list = type(input) == "table" and not mt
  if not list and type(input) ~= "function" and not (type(mt) == "table" and mt.__call) then
    error("slither.run_pipe: input must be a list or an iterator, got " .. type(input), 3)
  end
  local input_n = list and item_mod.length(input, "slither.run_pipe", 3) -- before any work
  run_seq = run_seq + 1
  local r = {
    pipe = pipe,
    id = string.format("%s-%d-%x", pipe.name, run_seq, math.random(0, 2 ^ 30)),
    metadata = opts.metadata or {},
    side_out = {}, side_item = {}, side_head = 1, side_tail = 0,
    counts = {}, routing = {}, stores = {}, pools = {}, streams = {},
  }
  r.session = opts.session or ("pipe:" .. r.id)
  for _, def in ipairs(pipe.stores) do
    local s = store_mod.get(def.name)
    if not s then
      local err
      s, err = store_mod.start(def)
      if not s then error("slither.run_pipe: store '" .. def.name .. "' failed to start: " ..
        tostring(err and err.message), 3) end
    end
    r.stores[def.name] = s
    s:open_session(r.session)
  end
  -- What the run's closures hold is let go when it ends: a compiled trace may
  -- keep a closure, and so all it refers to, alive after the run (see r.finish).
  -- A trace can also take a variable a closure never assigns (a parameter, a
  -- local set once) as a constant: big tables are reached through variables
  -- that a drop assigns, or through tables a drop empties.
  local drops = {}
  r.drops = drops
  -- Outputs by number: 1 is "default", then the declared ones in order.
  local out_names, out_index = { "default" }, { default = 1 }
  for i, name in ipairs(pipe.output_list) do
    out_names[i + 1], out_index[name] = name, i + 1
  end
  -- Routing counts are kept per route in arrays (routers) and summed into the
  -- report's per-output and per-route counts when it is built.
  r.route_counts = {} -- stage name -> { [k] = items routed by route k }
  r.failed_routed = {} -- output -> items routed there by an error policy
  r.default_n = 0
  -- Where items go as they leave the pipe. stream_pipe queues them, output
  -- number and item in two arrays, for its consumer to take in arrival order.
  -- run_pipe (outputs given) puts them in the output buckets: straight away when
  -- everything goes to "default", else by way of a log of items and output
  -- numbers in arrival order, split into the buckets when the run ends. Items
  -- appended to several buckets as they come interleave in memory, and every
  -- collector cycle during the run then marks them bucket by bucket, touching
  -- each stretch of memory once per bucket: with the log it marks them in the
  -- order they were made. (A pipe routing into two outputs ran about 15% faster.)
  local side_out, side_item = r.side_out, r.side_item
  local sink, side_full
  if outputs then
    local buckets, blen = {}, {}
    for d, name in ipairs(out_names) do
      buckets[d], blen[d] = outputs[name], #outputs[name]
    end
    local log, dest, nlog = {}, {}, 0
    if pipe.routes then
      sink = function(d, it)
        nlog = nlog + 1
        log[nlog], dest[nlog] = it, d
      end
    else
      sink = function(_, it)
        local l = blen[1] + 1
        blen[1] = l
        buckets[1][l] = it
      end
    end
    r.sink = sink
    r.split_log = function()
      for k = 1, nlog do
        local d = dest[k]
        local l = blen[d] + 1
        blen[d] = l
        buckets[d][l] = log[k]
      end
      log, dest, nlog = {}, {}, 0
    end
    drops[#drops + 1] = function()
      for d in pairs(buckets) do buckets[d] = nil end
    end
    side_full = function() return false end
  else
    sink = function(d, it)
      local t = r.side_tail + 1
      r.side_tail = t
      side_out[t], side_item[t] = d, it
    end
    side_full = function() return r.side_tail - r.side_head + 1 >= SIDE_MAX end
  end
  local function route_failed(out, it)
    r.failed_routed[out] = (r.failed_routed[out] or 0) + 1
    sink(out_index[out], it)
  end
  -- items a stage dropped for an error ("skip", "isolate"), for the report
  r.failed = {}
  local function dropped(stage, it, err)
    r.failed[#r.failed + 1] = { stage = stage, item = it, error = err }
  end

  -- The chain passes lists of items ("chunks"), so each stage pays per chunk and
  -- its per-item work is a tight loop. Every stage function returns a non-empty
  -- chunk, nil at the end, or AGAIN. A chunk is good until its consumer pulls
  -- the next one: the source refills one table, and the Lua stages and routers
  -- move the items they pass on down in the chunk they were given. No chunk
  -- reaches user code.
  local CHUNK = 256
  local sbuf = table_new(CHUNK, 0)
  local function src_end(k) -- clear what a longer chunk left past k
    k = k + 1
    while sbuf[k] ~= nil do
      sbuf[k] = nil
      k = k + 1
    end
  end
  local src
  local held = input -- the caller's list or iterator, dropped at the end
  drops[#drops + 1] = function()
    held = nil
    src_end(0)
  end
  if list then
    local i, n = 0, input_n
    src = function()
      if i >= n then return nil end
      local xs, k = held, 0
      local stop = math.min(n, i + CHUNK)
      for j = i + 1, stop do
        k = k + 1
        sbuf[k] = coerce(xs[j])
      end
      i = stop
      src_end(k)
      return sbuf
    end
  else
    local done = false
    src = function()
      if done then return nil end
      local iter, k = held, 0
      while k < CHUNK do
        local v = iter()
        if v == nil then done = true break end
        if v == AGAIN then break end
        k = k + 1
        sbuf[k] = coerce(v)
      end
      src_end(k)
      if k == 0 then return not done and AGAIN or nil end
      return sbuf
    end
  end


  local up = src
  for idx, st in ipairs(pipe.stages) do
    local c = { ["in"] = 0, out = 0, skipped = 0, failed = 0 }
    r.counts[st.name] = c
    local ctx = { pipe = pipe.name, stage = st.name, session = r.session, metadata = r.metadata,
                  stores = r.stores, run_id = r.id }
    local policy = policy_of(pipe, st.name)
    local last = idx == #pipe.stages
    local prev = up
    -- An item failed in this stage: routed, dropped (skip, isolate: a stage that
    -- works item by item has nothing more to isolate) and listed in the report,
    -- or the run halts.
    -- A retry policy retries Python stages only: elsewhere its fallback applies.
    local item_policy = policy
    if type(policy) == "table" and policy.retry then item_policy = policy.fallback or "halt" end
    local function failed(it, err)
      c.failed = c.failed + 1
      if type(item_policy) == "table" and item_policy.route then
        it.meta.error = err
        route_failed(item_policy.route, it)
      elseif item_policy == "skip" or item_policy == "isolate" then
        dropped(st.name, it, err)
      else
        halt(err)
      end
    end
    if st.kind == "lua" and st.opts.handler then
      local handler, many = st.opts.handler, st.opts.cardinality == "many"
      -- A handler that raises fails its item alone. (A pcall per item, with the
      -- loop's state in locals, is cheaper under LuaJIT than one per chunk with
      -- the state in upvalues, which resuming after an error would need.)
      up = function()
        while true do
          local chunk = prev()
          if chunk == nil or chunk == AGAIN then return chunk end
          local nchunk, n = #chunk, 0
          -- with one result per item, the items passed on move down in the same
          -- table (an item is read before its slot is reused)
          local out = many and {} or chunk
          c["in"] = c["in"] + nchunk
          for i = 1, nchunk do
            local it = chunk[i]
            local ok, res, why = pcall(handler, it, ctx)
            if ok and res ~= nil and not many and getmetatable(res) ~= Skip then
              it.payload = res
              n = n + 1
              out[n] = it
            elseif not ok then
              if getmetatable(res) == Halt then error(res, 0) end
              failed(it, stage_error(st.name, "stage_error", tostring(res), it))
            elseif getmetatable(res) == Skip or (res == nil and getmetatable(why) == Skip) then
              c.skipped = c.skipped + 1
            elseif res == nil then
              failed(it, stage_error(st.name, "stage_error", "handler returned nil (return " ..
                "slither.skip(reason) to drop an item)", it))
            elseif type(res) ~= "table" then
              failed(it, stage_error(st.name, "stage_error",
                "a cardinality = \"many\" handler must return a list", it))
            else
              -- every element becomes an item: a nil among them would cut the
              -- list short without a word
              local m, hole = table.maxn(res), nil
              for k = 1, m do
                if res[k] == nil then hole = k break end
              end
              if hole then
                failed(it, stage_error(st.name, "stage_error", string.format("a cardinality " ..
                  "= \"many\" handler returned a list with a hole: element %d of %d is nil",
                  hole, m), it))
              else
                for k = 1, m do
                  n = n + 1
                  out[n] = item_mod.wrap(res[k], setmetatable({}, { __index = it.meta }))
                end
              end
            end
          end
          if not many then
            for j = n + 1, nchunk do chunk[j] = nil end
          end
          c.out = c.out + n
          if n > 0 then return out end
          if side_full() then return AGAIN end
        end
      end
    elseif st.kind == "lua" then
      local bh, size = st.opts.batch_handler, st.opts.batch_size or 64
      local buf, bn, ended = {}, 0, false
      up = function()
        while true do
          local again = false
          while bn < size and not ended do
            local chunk = prev()
            if chunk == nil then ended = true break end
            if chunk == AGAIN then again = true break end
            for i = 1, #chunk do
              bn = bn + 1
              buf[bn] = chunk[i]
            end
          end
          if bn == 0 then
            if ended then return nil end
            return AGAIN
          end
          if bn < size and again then return AGAIN end
          -- one batch of exactly `size` (or the rest at the end)
          local batch, rest = {}, {}
          for i = 1, bn do
            if i <= size then batch[i] = buf[i] else rest[i - size] = buf[i] end
          end
          buf, bn = rest, math.max(0, bn - size)
          c["in"] = c["in"] + #batch
          local out, n = {}, 0
          -- nil when the batch is done, else the message its failure gets
          local function call(items)
            local ok, res = pcall(bh, items, ctx)
            if not ok then return tostring(res) end
            local problem = item_mod.results_problem(res, #items, "batch_handler", "items")
            if problem then return problem end
            for i, it in ipairs(items) do
              local v = res[i]
              if getmetatable(v) == Skip then
                c.skipped = c.skipped + 1
              else
                it.payload = v
                n = n + 1
                out[n] = it
              end
            end
          end
          local msg = call(batch)
          if msg and item_policy == "isolate" and #batch > 1 then
            -- as dispatch does: the items go again one by one, and only those
            -- that fail alone fail
            for _, it in ipairs(batch) do
              local m = call({ it })
              if m then failed(it, stage_error(st.name, "stage_error", m, it)) end
            end
          elseif msg then
            for _, it in ipairs(batch) do failed(it, stage_error(st.name, "stage_error", msg, it)) end
          end
          c.out = c.out + n
          if n > 0 then return out end
          if side_full() then return AGAIN end
        end
      end
    elseif st.kind == "python" then
      local o = {}
      for k, v in pairs(st.opts) do o[k] = v end
      o.session = o.session or r.session
      o.metadata = o.metadata or r.metadata -- what an executor function sees in ctx
      if type(policy) == "table" and policy.route then
        o.on_error = "skip"
      elseif type(policy) == "table" and policy.retry then
        local fb = policy.fallback
        o.on_error = { retry = policy.retry,
                       fallback = (type(fb) == "table" and fb.route) and "skip" or fb }
      else
        o.on_error = policy
      end
      -- dispatch pulls single items: hand them out of the upstream chunks
      local buf, bi, bn = nil, 0, 0
      drops[#drops + 1] = function() buf = nil end
      local function item_source()
        if bi >= bn then
          local chunk = prev()
          if chunk == nil or chunk == AGAIN then return chunk end
          buf, bi, bn = chunk, 0, #chunk
          c["in"] = c["in"] + bn
        end
        bi = bi + 1
        return buf[bi]
      end
      local ok, s = pcall(dispatch.stream, item_source, o)
      if not ok then error(s, 0) end
      s.run.labels = { pipe = pipe.name, stage = st.name, run_id = r.id } -- for batch events
      local upstream = r.streams[#r.streams]
      if upstream then
        local busy = false
        s.run.on_wait = function()
          if busy then return end -- a prefetch that waits must not recurse
          busy = true
          local pok, perr = pcall(upstream.prefetch, upstream)
          busy = false
          if not pok then error(perr, 0) end
        end
      end
      r.streams[#r.streams + 1] = s
      if type(o.executor) ~= "function" then
        local pool = o.pool or "default"
        r.pools[type(pool) == "table" and pool.name or pool] = true
      end
      local rep = s:report()
      c.retries = 0 -- batches sent again by a retry policy
      local seen_failed = 0
      local route = type(policy) == "table" and (policy.route or
        (type(policy.fallback) == "table" and policy.fallback.route))
      -- items failed under a halt are the error's, not dropped ones
      local final = type(policy) == "table" and policy.retry and policy.fallback or policy
      local drops_failed = final == "skip" or final == "isolate"
      up = function()
        local ok2, chunk = pcall(s.next_chunk)
        -- failures and retries so far: counted before a halt is passed on too
        local fl = rep.failed
        while seen_failed < #fl do
          seen_failed = seen_failed + 1
          local f = fl[seen_failed]
          c.failed = c.failed + 1
          if route then
            f.item.meta.error = f.error
            route_failed(route, f.item)
          elseif drops_failed then
            dropped(st.name, f.item, f.error)
          end
        end
        c.retries = rep.retries
        if not ok2 then
          if getmetatable(chunk) == Halt then error(chunk, 0) end -- from a stage upstream
          local e = type(chunk) == "table" and chunk or
            { kind = "stage_error", message = tostring(chunk) }
          setmetatable(e, nil)
          e.stage = st.name
          halt(e)
        end
        if chunk ~= nil and chunk ~= AGAIN then c.out = c.out + #chunk end
        return chunk
      end
    else -- router
      local routes, nroutes = st.opts.routes, #st.opts.routes
      local preds, names, counts = {}, {}, {}
      for k = 1, nroutes do
        preds[k], names[k], counts[k] = routes[k][1], routes[k][2], 0
      end
      r.route_counts[st.name] = counts
      local dests = {}
      for k = 1, nroutes do dests[k] = out_index[names[k]] end
      -- the first route whose predicate holds, nroutes + 1 for none
      local function choose(it)
        local k = 1
        while k <= nroutes and not preds[k](it) do k = k + 1 end
        return k
      end
      -- items that go on to the next stage move down in the chunk
      up = function()
        while true do
          local chunk = prev()
          if chunk == nil or chunk == AGAIN then return chunk end
          local nchunk, n, defaults, bad = #chunk, 0, 0, 0
          c["in"] = c["in"] + nchunk
          for i = 1, nchunk do
            local it = chunk[i]
            local ok, k = pcall(choose, it)
            if not ok then
              if getmetatable(k) == Halt then error(k, 0) end
              bad = bad + 1
              failed(it, stage_error(st.name, "route_error", tostring(k), it))
            elseif k <= nroutes then
              it.route = names[k]
              counts[k] = counts[k] + 1
              sink(dests[k], it)
            elseif last then
              it.route = "default"
              defaults = defaults + 1
              sink(1, it)
            else
              n = n + 1
              chunk[n] = it
            end
          end
          for j = n + 1, nchunk do chunk[j] = nil end
          c.out = c.out + nchunk - bad
          r.default_n = r.default_n + defaults
          if n > 0 then return chunk end
          if side_full() then return AGAIN end
        end
      end
    end
  end
  r.last = up

  -- next(): output name and item, or nil at the end (stream_pipe)
  local chunk, ci = nil, 0
  drops[#drops + 1] = function() chunk = nil end
  function r.next()
    while true do
      if r.side_head <= r.side_tail then
        local h = r.side_head
        local d, it = side_out[h], side_item[h]
        side_out[h], side_item[h] = nil, nil
        if h == r.side_tail then
          r.side_head, r.side_tail = 1, 0 -- empty: start again at 1
        else
          r.side_head = h + 1
        end
        return out_names[d], it
      end
      if chunk and ci < #chunk then
        ci = ci + 1
        local it = chunk[ci]
        it.route = "default"
        return "default", it
      end
      if r.ended then return nil end
      local ch = r.last()
      if ch == nil then
        r.ended = true -- the side queue may still hold routed items
      elseif ch ~= AGAIN then
        chunk, ci = ch, 0
        r.default_n = r.default_n + #ch
      end
    end
  end

  -- run_pipe's consumer: routed items are already on their way to their
  -- buckets; what comes out of the last stage goes to "default"
  function r.drain()
    local sink = r.sink
    while true do
      local ch = r.last()
      if ch == nil then
        r.ended = true
        return
      end
      if ch ~= AGAIN then
        local nch = #ch
        for k = 1, nch do
          local it = ch[k]
          it.route = "default"
          sink(1, it)
        end
        r.default_n = r.default_n + nch
      end
    end
  end

  function r.finish()
    if r.finished then return end
    r.finished = true
    if r.split_log then r.split_log() end
    for _, s in ipairs(r.streams) do s:close() end
    for _, s in pairs(r.stores) do s:close_session(r.session) end
    local pool_mod = require("slither.pool")
    for name in pairs(r.pools) do
      local p = pool_mod.get(name)
      if p then p:release_session(r.session) end
    end
    for _, drop in ipairs(r.drops) do drop() end
    for k = r.side_head, r.side_tail do side_out[k], side_item[k] = nil, nil end
    r.side_head, r.side_tail = 1, 0
  end

  function r.report()
    local stages = {}
    for _, st in ipairs(pipe.stages) do stages[st.name] = r.counts[st.name] end
    local routing = {}
    for _, st in ipairs(pipe.stages) do
      local counts = r.route_counts[st.name]
      if counts then
        for k, rt in ipairs(st.opts.routes) do
          if counts[k] > 0 then
            routing[st.name .. "->" .. rt[2]] = counts[k]
            routing[rt[2]] = (routing[rt[2]] or 0) + counts[k]
          end
        end
      end
    end
    for out, n in pairs(r.failed_routed) do routing[out] = (routing[out] or 0) + n end
    if r.default_n > 0 then routing.default = (routing.default or 0) + r.default_n end
    return { run_id = r.id, session = r.session, stages = stages, routing = routing,
             failed = r.failed }
  end
  return r
end

local function outputs_table(pipe)
  local out = { default = {} }
  for _, name in ipairs(pipe.output_list) do out[name] = {} end
  return out
end

-- slither.run_pipe(pipe, input, opts) -> outputs, report | nil, err, partial
function M.run_pipe(pipe, input, opts)
  if getmetatable(pipe) ~= Pipe then error("slither.run_pipe: expected a pipe from slither.pipe", 2) end
  local outputs = outputs_table(pipe)
  local r = new_run(pipe, input, opts, outputs)
  local t0 = core.now()
  event("slither.pipe.run.start", {}, { pipe = pipe.name, run_id = r.id, session = r.session })
  for _, st in ipairs(pipe.stages) do
    event("slither.pipe.stage.start", {}, { pipe = pipe.name, run_id = r.id, stage = st.name,
                                            session = r.session })
  end
  local ok, err = pcall(r.drain)
  r.finish()
  local report = r.report()
  report.duration_ms = core.now() - t0
  for _, st in ipairs(pipe.stages) do
    local failed_here = not ok and type(err) == "table" and err.stage == st.name
    event(failed_here and "slither.pipe.stage.exception" or "slither.pipe.stage.stop",
      r.counts[st.name], { pipe = pipe.name, run_id = r.id, stage = st.name, session = r.session })
  end
  if not ok then
    if getmetatable(err) ~= Halt then
      err = { kind = "pipe_error", message = tostring(err) }
    end
    setmetatable(err, nil)
    err.report = report
    event("slither.pipe.run.exception", { duration_ms = report.duration_ms },
      { pipe = pipe.name, run_id = r.id, session = r.session, error = err })
    return nil, err, outputs
  end
  event("slither.pipe.run.stop", { duration_ms = report.duration_ms },
    { pipe = pipe.name, run_id = r.id, session = r.session, routing = report.routing })
  return outputs, report
end

-- slither.stream_pipe(pipe, input, opts) -> iterator of output_name, item; input is
-- pulled lazily. The stream has :close() and :report(); the run's session ends
-- when the stream ends or is closed.
function M.stream_pipe(pipe, input, opts)
  if getmetatable(pipe) ~= Pipe then error("slither.stream_pipe: expected a pipe", 2) end
  local r = new_run(pipe, input, opts)
  local s = {}
  local function nxt()
    if r.finished then return nil end
    local ok, out, it = pcall(r.next)
    if not ok then
      r.finish()
      if getmetatable(out) == Halt then setmetatable(out, nil) end
      error(out, 0)
    end
    if out == nil then r.finish() end
    return out, it
  end
  s.next = nxt
  s.close = function() r.finish() end
  s.report = function() return r.report() end
  return setmetatable(s, { __call = function() return nxt() end })
end

return M
