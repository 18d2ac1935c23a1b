-- batch_stats: 2,000 datasets (small: 400), 50 of them poison pills (small: 10),
-- through dispatch with the fixed, weighted and key strategies, then as a stream
-- with as_completed ordering. Every run uses on_error = "isolate": a failed batch
-- is split and its halves retried until the poisoned datasets stand alone, so
-- exactly the poison pills fail and everything else succeeds.
--
-- Checks, per run: exactly the poison pills failed, with the error each kind
-- raises; every other dataset's statistics equal a reference computed here; and
-- the workers' running (Welford) statistics, merged, equal the reference over
-- every accepted value, so no accepted dataset was counted twice or lost, even
-- in batches that failed and were split.
--
--   slither example batch_stats [--scale small|full]
--   slither scripts/examples/batch_stats.lua          (small scale)
local slither = require("slither")
local examples = require("slither.examples")

local M = {
  name = "batch_stats",
  description = "2K Datasets / Fault-Isolated Parallel Compute",
  needs = {},
}

-- ---- data ---------------------------------------------------------------------------

-- kinds: { count, min values, max values } at full scale (small: a fifth)
local KINDS = {
  { "small", 800, 5, 10 },
  { "medium", 800, 50, 100 },
  { "large", 350, 200, 500 },
}
local POISON = { -- kind, count at full scale, the error it must raise
  { "none", 20, "ValueError" },  -- a missing value
  { "nan", 20, "TypeError" },    -- the string "NaN"
  { "empty", 10, "ValueError" }, -- no values
}

local function datasets(scale)
  local div = scale == "small" and 5 or 1
  local rng = examples.rng(42137256)
  local list = {}
  for _, k in ipairs(KINDS) do
    for _ = 1, k[2] / div do
      local vals = {}
      for j = 1, rng:int(k[3], k[4]) do vals[j] = rng:int(100, 100000) / 100 end
      list[#list + 1] = { kind = k[1], values = vals }
    end
  end
  for _, p in ipairs(POISON) do
    for _ = 1, p[2] / div do
      local vals
      if p[1] == "none" then
        vals = { 1.0, 2.0, slither.null, 4.0, slither.null, 6.0 }
      elseif p[1] == "nan" then
        vals = { 10.0, "NaN", 30.0, "NaN", 50.0 }
      else
        vals = slither.array({})
      end
      list[#list + 1] = { kind = "poison", poison = p[1], error = p[3], values = vals }
    end
  end
  return rng:shuffle(list)
end

-- ---- the reference --------------------------------------------------------------------

local function reference(values)
  local n, sum = #values, 0
  local sorted = {}
  for i, v in ipairs(values) do sum = sum + v; sorted[i] = v end
  table.sort(sorted)
  local mean = sum / n
  local ss = 0
  for _, v in ipairs(values) do ss = ss + (v - mean) ^ 2 end
  local var = n > 1 and ss / (n - 1) or 0
  local median = n % 2 == 1 and sorted[(n + 1) / 2] or (sorted[n / 2] + sorted[n / 2 + 1]) / 2
  return { mean = mean, median = median, variance = var, stdev = math.sqrt(var),
           min = sorted[1], max = sorted[n], range = sorted[n] - sorted[1], count = n }
end

local FIELDS = { "mean", "median", "variance", "stdev", "min", "max", "range", "count" }

-- Python rounds to 6 decimals; the reference is exact to ~1e-12 relative.
local function close(a, b)
  return type(a) == "number" and math.abs(a - b) <= 1.01e-6 + 1e-12 * math.abs(b)
end

local function rel_close(tol)
  return function(e, o) return math.abs(e - o) <= tol * math.max(1, math.abs(e)) end
end

-- Chan et al.: merge two running states.
local function merge(a, b)
  if a.n == 0 then return { n = b.n, mean = b.mean, m2 = b.m2, min = b.min, max = b.max } end
  local n = a.n + b.n
  local d = b.mean - a.mean
  return { n = n, mean = a.mean + d * b.n / n, m2 = a.m2 + b.m2 + d * d * a.n * b.n / n,
           min = math.min(a.min, b.min), max = math.max(a.max, b.max) }
end

-- ---- one run --------------------------------------------------------------------------

local function wrap(data)
  local items = {}
  for i, d in ipairs(data) do
    items[i] = slither.item.wrap({ values = d.values }, { index = i, kind = d.kind })
  end
  return items
end

-- Check what one strategy produced: results (items, in delivery order), report.
local function verify(opts, label, data, results, report, expect, ordered)
  local check = opts.check
  local poison_n, good_n = expect.poison, #data - expect.poison
  local failed_poison, errtypes = 0, {}
  for _, f in ipairs(report.failed) do
    local d = data[f.item.meta.index]
    if d.poison then failed_poison = failed_poison + 1 end
    local t = f.error and (f.error.type or f.error.kind) or "?"
    errtypes[t] = (errtypes[t] or 0) + 1
  end
  local equal, in_order, last_index = 0, true, 0
  local finals = {}
  for _, it in ipairs(results) do
    local idx = it.meta.index
    if idx < last_index then in_order = false end
    last_index = idx
    local ref, r = expect.refs[idx], it.payload
    local same = ref ~= nil and type(r) == "table"
    if same then
      for _, f in ipairs(FIELDS) do
        if not close(r[f], ref[f]) then same = false break end
      end
    end
    if same then equal = equal + 1 end
    local ws = type(r) == "table" and r.worker_state
    if ws then
      local key = tostring(ws.pid) .. "|" .. tostring(ws.session)
      if not finals[key] or ws.batches > finals[key].batches then finals[key] = ws end
    end
  end
  -- the workers' running statistics: each (worker, session) state after its last batch
  local acc, datasets_counted, states = { n = 0, mean = 0, m2 = 0 }, 0, 0
  for _, ws in pairs(finals) do
    states = states + 1
    acc = merge(acc, ws)
    datasets_counted = datasets_counted + ws.datasets
  end
  local R = expect.running
  check(label .. ": datasets ok", good_n, report.items_ok)
  check(label .. ": datasets failed (the poison pills)", poison_n, report.items_failed)
  check(label .. ": failed datasets that are poison pills", poison_n, failed_poison)
  check(label .. ": failures by error type", expect.errtypes, errtypes)
  check(label .. ": results whose statistics equal the reference", good_n, equal)
  if ordered then check(label .. ": results in input order", true, in_order) end
  check(label .. ": datasets counted by the workers' running stats", good_n, datasets_counted)
  check(label .. ": values in the workers' running stats (merged)", R.n, acc.n)
  check(label .. ": running mean (merged, rel. tol 1e-9)", R.mean, acc.mean, rel_close(1e-9))
  check(label .. ": running sample variance (merged, rel. tol 1e-9)", R.variance,
    acc.n > 1 and acc.m2 / (acc.n - 1) or 0, rel_close(1e-9))
  check(label .. ": running min / max", { R.min, R.max }, { acc.min or 0, acc.max or 0 })
  return states
end

function M.run(opts)
  local out = opts.out
  -- checks are collected per run and printed together at the end
  local pending = {}
  local copts = setmetatable({ check = function(...)
    pending[#pending + 1] = { n = select("#", ...), ... }
  end }, { __index = opts })
  local pool = examples.start_pool(opts)
  local data = datasets(opts.scale)
  local counts = {}
  for _, d in ipairs(data) do counts[d.kind] = (counts[d.kind] or 0) + 1 end
  out(string.format("Generated %d datasets (%d small, %d medium, %d large, %d poison)", #data,
    counts.small or 0, counts.medium or 0, counts.large or 0, counts.poison or 0))

  -- the reference: per dataset, and over every value of every good dataset
  local expect = { refs = {}, poison = 0, errtypes = {} }
  local all = {}
  for i, d in ipairs(data) do
    if d.poison then
      expect.poison = expect.poison + 1
      expect.errtypes[d.error] = (expect.errtypes[d.error] or 0) + 1
    else
      expect.refs[i] = reference(d.values)
      for _, v in ipairs(d.values) do all[#all + 1] = v end
    end
  end
  expect.running = reference(all)
  expect.running.n = #all

  local failed_calls = 0
  local tid = slither.telemetry.attach("slither.dispatch.batch.exception", function()
    failed_calls = failed_calls + 1
  end)

  local runs = {
    { label = "fixed", title = "FixedBatch (batch_size 10, max_in_flight 16)",
      opts = { strategy = "fixed", batch_size = 10, max_in_flight = 16 }, ordered = true },
    { label = "weighted", title = "WeightedBatch (max_weight 500 values, max_in_flight 16)",
      opts = { strategy = "weighted", max_weight = 500, max_in_flight = 16,
               weight_fn = function(it) return #it.payload.values end }, ordered = true },
    { label = "key", title = "KeyPartition (key = data type, batch_size 50, max_in_flight 16)",
      opts = { strategy = "key", batch_size = 50, max_in_flight = 16,
               key_fn = function(it) return it.meta.kind end }, ordered = true },
    { label = "stream", title = "stream, as_completed (batch_size 10, max_in_flight 8)",
      opts = { strategy = "fixed", batch_size = 10, max_in_flight = 8,
               ordering = "as_completed" }, stream = true },
  }
  local timings = {}
  for _, r in ipairs(runs) do
    out("")
    out("--- " .. r.title .. " ---")
    local o = { pool = pool, module = "batch_stats", ["function"] = "compute_stats",
                on_error = "isolate", session = "batch_stats:" .. r.label }
    for k, v in pairs(r.opts) do o[k] = v end
    local items = wrap(data)
    failed_calls = 0
    local progress = opts.progress(r.label, "datasets")
    local t0 = slither.now()
    local results, report
    if r.stream then
      local s = slither.dispatch.stream(items, o)
      results = {}
      for it in s.next do results[#results + 1] = it end
      report = s:report()
    else
      results, report = slither.dispatch.run(items, o)
      if not results then
        progress.done()
        examples.fail("dispatch halted: " .. tostring(report and report.message))
      end
    end
    local ms = slither.now() - t0
    progress.done()
    pool:release_session(o.session)
    timings[#timings + 1] = { r.label, ms }
    out(string.format("  %d succeeded, %d failed; %d batches, %d failed batch calls split and retried",
      report.items_ok, report.items_failed, report.batches, failed_calls))
    local shown = 0
    for _, it in ipairs(results) do
      local p = it.payload
      if shown < 3 then
        shown = shown + 1
        out(string.format("    dataset %d (%s): mean=%.2f stdev=%.2f range=%.2f count=%d",
          it.meta.index, it.meta.kind, p.mean, p.stdev, p.range, p.count))
      end
    end
    if r.stream then
      local moved = 0
      for i, it in ipairs(results) do
        if i > 1 and it.meta.index < results[i - 1].meta.index then moved = moved + 1 end
      end
      out(string.format("  %d results arrived before an earlier dataset's (completion order)", moved))
    end
    if r.label == "key" then
      -- a key's batches carry the key's session and stay on one worker
      local pids_of = {}
      for _, it in ipairs(results) do
        local k = it.meta.kind
        pids_of[k] = pids_of[k] or {}
        pids_of[k][it.payload.worker_pid] = true
      end
      local one = 0
      for _, k in ipairs({ "small", "medium", "large" }) do
        local n = 0
        for _ in pairs(pids_of[k] or {}) do n = n + 1 end
        if n == 1 then one = one + 1 end
      end
      copts.check("key: keys whose batches all ran on one worker", 3, one)
    end
    opts.throughput("throughput", #data, ms, "datasets")
    local states = verify(copts, r.label, data, results, report, expect, r.ordered)
    out(string.format("  (running stats merged from %d worker/session states)", states))
  end
  slither.telemetry.detach(tid)
  pool:stop()

  out("")
  out("--- Timing ---")
  for _, t in ipairs(timings) do opts.timing(t[1], t[2]) end
  out("")
  out("--- Correctness ---")
  for _, c in ipairs(pending) do opts.check(unpack(c, 1, c.n)) end
  out("")
  out(string.format("%d poison pills were injected; under every strategy exactly they failed,", expect.poison))
  out("and each worker's running statistics count every accepted dataset exactly once.")
end

if (...) ~= examples.MODULE_ARG then
  return examples.run_script(M, arg)
end
return M
