-- ml_scoring: two sessions each train a scikit-learn model that lives in their
-- worker's session state (a pool with strict affinity), then 2,000 records
-- (small: 400, as the pure-Python baseline) are scored by both sessions at once:
-- two concurrent runs of enrich (Lua) -> predict (Python) -> route_by_confidence.
--
-- The features go through a write-through cache in the engine's store: the Lua
-- stage looks each record up, and on a miss computes its features and writes
-- them (store:put); the Python stage gets only the record id and reads the
-- features back from shared memory (slither_worker.store(...).get_many). Records
-- 1-10 are in the cache before the run, with features of their own.
--
-- Checks: every prediction of session A is what model A gives for that record,
-- and B likewise, against both models retrained in one separate process (a fresh
-- pool) with the same code and data; each session ran on one worker, with its
-- own model; the number of records A and B predict differently is the same both
-- ways; the features Python read are the ones Lua wrote; and the cache holds one
-- entry per record scored: the pre-filled ones plus those the pipeline wrote.
--
--   slither example ml_scoring [--scale small|full]
--   slither scripts/examples/ml_scoring.lua          (small scale)
local slither = require("slither")
local examples = require("slither.examples")

local M = {
  name = "ml_scoring",
  description = "2K Records / Session-Scoped State Isolation",
  needs = { "sklearn" },
}

local PREFILLED = 10 -- records 1..10 start in the feature cache

-- What the cache holds before the run (set by run() before the store starts).
local prefill = {}

local FeatureStore = slither.store.define{
  name = "ml_features",
  tables = { { name = "feature_cache", type = "set" } },
  load = function(t)
    for id, f in pairs(prefill) do t.feature_cache:put(id, f) end
  end,
}

-- A record's features: the numeric values of its data, in key order.
local function features_of(data)
  local keys = {}
  for k, v in pairs(data) do
    if type(v) == "number" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  local f = {}
  for i, k in ipairs(keys) do f[i] = data[k] end
  return f
end

-- Writes the enrich stage made to the cache, per session.
local written = {}

local ScoringPipe = slither.pipe("ml_scoring", function(p)
  p:store(FeatureStore)
  p:stage("enrich", "lua", { handler = function(item, ctx)
    -- Look up and write in one go: a handler does not yield between the two, so
    -- when both runs meet the same record, exactly one of them writes it.
    local cache = ctx.stores.ml_features
    local id = item.payload.id
    local hit = cache:get("feature_cache", id) ~= nil
    if not hit then
      cache:put("feature_cache", id, features_of(item.payload.data))
      written[ctx.session] = (written[ctx.session] or 0) + 1
    end
    return { id = id, cache_hit = hit }
  end })
  p:stage("predict", "python", { pool = "ml_scoring", module = "ml_scorer",
                                 ["function"] = "predict_batch", batch_size = 100,
                                 max_in_flight = 4 })
  p:stage("route_by_confidence", "router", { routes = {
    { function(item) return item.payload.confidence >= 0.9 end, "high_confidence" },
    { function(item) return item.payload.confidence < 0.6 end, "low_confidence" } } })
  p:output("high_confidence")
  p:output("low_confidence")
  p:on_error("predict", "skip")
  p:on_error("*", "halt")
end)

-- ---- data (pyworkers/examples/pure_python_baselines.py, ml_data) ----------------------

local function data(scale)
  local rng = examples.rng(42137256)
  local n = scale == "small" and 400 or 2000
  local function training(c0, c1)
    local X, y = {}, {}
    for i = 0, n - 1 do
      local label = i % 2
      local centre = label == 1 and c1 or c0
      local row = {}
      for k = 1, 4 do row[k] = rng:gauss(centre[k], 1.0) end
      X[i + 1], y[i + 1] = row, label
    end
    return { X = X, y = y }
  end
  local train_a = training({ 1, 2, 1, 2 }, { 3, 4, 3, 4 })
  local train_b = training({ 0, 0, 0, 0 }, { 5, 5, 5, 5 })
  local cache = {}
  for i = 1, PREFILLED do
    cache[i] = { rng:float(), rng:float(), rng:float(), rng:float() }
  end
  local records = {}
  for i = 1, n do
    local base
    if i % 3 == 0 then base = { 2, 3, 2, 3 }
    elseif i % 2 == 0 then base = { 3.5, 4.5, 3.5, 4.5 }
    else base = { 0.5, 1.5, 0.5, 1.5 } end
    local d = {}
    for k = 1, 4 do d["f" .. k] = rng:gauss(base[k], 0.3) end
    records[i] = { id = i, data = d }
  end
  return train_a, train_b, cache, records
end

-- ---- the run ----------------------------------------------------------------------

local function same_list(a, b)
  if type(a) ~= "table" or type(b) ~= "table" or #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

function M.run(opts)
  local out, check = opts.out, opts.check
  local train_a, train_b, cache, records = data(opts.scale)
  local n = #records
  local pool = examples.start_pool(opts, "ml_scoring", { affinity = "strict" })
  local sessions = {
    { key = "A", session = "ml_scoring:A:" .. opts.scale, model_id = "model-A",
      train = train_a, ref = "train_a",
      centres = "class 0 around (1,2,1,2), class 1 around (3,4,3,4)" },
    { key = "B", session = "ml_scoring:B:" .. opts.scale, model_id = "model-B",
      train = train_b, ref = "train_b",
      centres = "class 0 around 0, class 1 around 5" },
  }

  -- Phase 1: both sessions train at once, each in its own session state.
  out(string.format("Phase 1: training two models (%d samples each, LogisticRegression) in " ..
    "two sessions, strict affinity", #train_a.X))
  local t0 = slither.now()
  local tasks = {}
  for i, s in ipairs(sessions) do
    tasks[i] = slither.spawn(function()
      return pool:call("ml_scorer", "train_model",
        { { model_id = s.model_id, X = s.train.X, y = s.train.y } },
        { session = s.session, timeout_ms = 120000 })
    end)
  end
  for i, s in ipairs(sessions) do
    local ok, res, err = tasks[i]:join()
    if not ok then error(res, 0) end
    if not res then examples.fail("training failed: " .. tostring(err and err.message)) end
    s.trained = res[1]
    out(string.format("  session %s (%s): accuracy %.4f on its training set, worker %d",
      s.key, s.centres, s.trained.accuracy, s.trained.worker_pid))
  end
  local train_ms = slither.now() - t0

  -- Phase 2: the cache starts with records 1-10; both sessions score every record.
  for k in pairs(prefill) do prefill[k] = nil end
  for id, f in pairs(cache) do prefill[id] = f end
  for k in pairs(written) do written[k] = nil end
  local store = slither.store.get("ml_features") or assert(slither.store.start(FeatureStore))
  local prefilled = store:size("feature_cache")
  local writes = 0
  local wid = slither.telemetry.attach("slither.store.write", function(_, m, md)
    if md.store == "ml_features" and md.table == "feature_cache" then
      writes = writes + (m.count or 0)
    end
  end)
  out("")
  out(string.format("Phase 2: scoring %d records in both sessions at once " ..
    "(enrich -> predict -> route_by_confidence); feature cache pre-filled with %d records",
    n, prefilled))
  local progress = opts.progress("predict", "records")
  t0 = slither.now()
  for i, s in ipairs(sessions) do
    local input = {}
    for j, r in ipairs(records) do input[j] = slither.item.wrap(r, { id = r.id }) end
    tasks[i] = slither.spawn(function()
      local t = slither.now()
      local outputs, report = slither.run_pipe(ScoringPipe, input,
        { session = s.session, metadata = { model_id = s.model_id } })
      return outputs, report, slither.now() - t
    end)
  end
  for i, s in ipairs(sessions) do
    local ok, outputs, report, ms = tasks[i]:join()
    if not ok then error(outputs, 0) end
    if not outputs then
      progress.done()
      examples.fail("session " .. s.key .. ": the pipe halted: " .. tostring(report and report.message))
    end
    s.outputs, s.report, s.ms = outputs, report, ms
  end
  local score_ms = slither.now() - t0
  progress.done()
  slither.telemetry.detach(wid)
  local cache_size = store:size("feature_cache")
  local all_pids = pool:pids()
  pool:stop()
  store:stop()

  -- The features of every record, as the Lua side knows them: the pre-filled
  -- ones for records 1-10, the computed ones for the rest.
  local feats = {}
  for i, r in ipairs(records) do feats[i] = cache[r.id] or features_of(r.data) end

  -- Phase 3: the reference, in a fresh pool: both models retrained in one
  -- process with the same code and data, every record predicted by each.
  local rpool = examples.start_pool(opts, "ml_scoring_reference", { size = 1 })
  t0 = slither.now()
  local ref, rerr = rpool:call("ml_scorer", "reference",
    { { train_a = train_a, train_b = train_b, features = feats } }, { timeout_ms = 120000 })
  local ref_ms = slither.now() - t0
  rpool:stop()
  if not ref then examples.fail("the reference failed: " .. tostring(rerr and rerr.message)) end
  ref = ref[1]

  -- Per session: each record's result, the workers that answered, the final state.
  for _, s in ipairs(sessions) do
    s.by_id, s.pids, s.final, s.buckets = {}, {}, nil, {}
    s.scored, s.hits, s.model_ok, s.features_ok = 0, 0, 0, 0
    for _, bucket in ipairs({ "high_confidence", "default", "low_confidence" }) do
      s.buckets[bucket] = #s.outputs[bucket]
      for _, it in ipairs(s.outputs[bucket]) do
        local r = it.payload
        s.scored = s.scored + 1
        s.by_id[r.id] = r
        s.pids[r.worker_pid] = true
        if r.cache_hit then s.hits = s.hits + 1 end
        if r.model_id == s.model_id then s.model_ok = s.model_ok + 1 end
        if same_list(r.features, feats[r.id]) then s.features_ok = s.features_ok + 1 end
        local ws = r.worker_state
        if ws and (not s.final or ws.batches > s.final.batches) then s.final = ws end
      end
    end
    local r = ref[s.ref]
    s.equal_pred, s.equal_conf, s.distinct = 0, 0, 0
    for i, rec in ipairs(records) do
      local got = s.by_id[rec.id]
      if got then
        s.distinct = s.distinct + 1
        if got.prediction == r.prediction[i] then s.equal_pred = s.equal_pred + 1 end
        if math.abs(got.confidence - r.confidence[i]) <= 1e-9 then
          s.equal_conf = s.equal_conf + 1
        end
      end
    end
    s.npids = 0
    for _ in pairs(s.pids) do s.npids = s.npids + 1 end
  end
  local A, B = sessions[1], sessions[2]
  local div_pipe, div_ref = 0, 0
  for i, rec in ipairs(records) do
    local a, b = A.by_id[rec.id], B.by_id[rec.id]
    if not a or not b or a.prediction ~= b.prediction then div_pipe = div_pipe + 1 end
    if ref.train_a.prediction[i] ~= ref.train_b.prediction[i] then div_ref = div_ref + 1 end
  end
  local lua_writes = 0
  for _, c in pairs(written) do lua_writes = lua_writes + c end

  out("--- Results ---")
  for _, s in ipairs(sessions) do
    local pids = {}
    for pid in pairs(s.pids) do pids[#pids + 1] = pid end
    table.sort(pids)
    out(string.format("  session %s: high_confidence %d, default %d, low_confidence %d; " ..
      "%d cache hits; scored on worker %s in %s", s.key, s.buckets.high_confidence,
      s.buckets.default, s.buckets.low_confidence, s.hits, table.concat(pids, ","),
      examples.fmt_ms(s.ms)))
  end
  out(string.format("  Prediction divergence: %d/%d records predicted differently by the two " ..
    "sessions' models", div_pipe, n))
  out(string.format("  Feature cache: %d entries (%d pre-filled, %d written through by the " ..
    "enrich stage)", cache_size, prefilled, lua_writes))
  if A.trained.worker_pid == B.trained.worker_pid then
    out(string.format("  Both sessions were placed on worker %d: one process, two session " ..
      "dicts, two models", A.trained.worker_pid))
  else
    out(string.format("  Session A lives in worker %d, session B in worker %d (%d workers in " ..
      "the pool)", A.trained.worker_pid, B.trained.worker_pid, #all_pids))
  end
  out("--- Timing ---")
  opts.timing("training (both sessions at once)", train_ms)
  opts.timing("scoring (both sessions at once)", score_ms)
  opts.throughput("throughput", 2 * n, score_ms, "predictions")
  opts.timing("reference (both models retrained, one process)", ref_ms)

  out("--- Correctness ---")
  check("models trained (one per session)", 2,
    (A.trained.model_id == "model-A" and 1 or 0) + (B.trained.model_id == "model-B" and 1 or 0))
  for _, s in ipairs(sessions) do
    local L = "session " .. s.key
    check(L .. ": records scored", n, s.scored)
    check(L .. ": distinct records scored", n, s.distinct)
    check(L .. ": records in failed batches", 0, s.report.stages.predict.failed)
    check(L .. ": workers that scored its batches (strict affinity)", 1, s.npids)
    check(L .. ": scored on the worker that trained its model", true,
      s.npids == 1 and s.pids[s.trained.worker_pid] == true)
    check(L .. ": predictions made by model " .. s.key .. " (its session state)", n, s.model_ok)
    check(L .. ": predictions equal to model " .. s.key .. " retrained in one process", n,
      s.equal_pred)
    check(L .. ": confidences equal to the retrained model's (abs. tol. 1e-9)", n, s.equal_conf)
    check(L .. ": the worker's own prediction counter for the session", n,
      s.final and s.final.predictions or 0)
    check(L .. ": features read from the store equal the record's features", n, s.features_ok)
  end
  check("records predicted differently by A and B (pipelines; reference: one process)", div_ref,
    div_pipe)
  check("feature cache entries (pre-filled + written by the pipeline) = records scored", n,
    cache_size)
  check("feature cache entries pre-filled before the run", PREFILLED, prefilled)
  check("cache writes by the enrich stage (records not pre-filled)", n - PREFILLED, lua_writes)
  check("cache writes seen by the store (telemetry)", lua_writes, writes)
  check("cache hits over both sessions (2 x records - writes)", 2 * n - lua_writes, A.hits + B.hits)
  out("Each session's model lives in its worker's session dict; strict affinity sends every")
  out("batch of the session to that worker, so no record was scored by the other model or by none.")
end

if (...) ~= examples.MODULE_ARG then
  return examples.run_script(M, arg)
end
return M
