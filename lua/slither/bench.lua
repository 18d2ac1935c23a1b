-- slither.bench: `slither bench pool` and `slither bench dispatch`.
--
-- Each measures slither and, in the same run and with the same interpreter, what a
-- Python user would pick instead: Python's own process pools for round trips
-- (scripts/bench/pool_peers.py), multiprocessing and ProcessPoolExecutor for
-- batched fan-out (shared/bench/mp_dispatch.py). Figures taken on one machine under
-- one load are the only ones whose ratios mean something. It reports; a missed
-- target is a figure, not a failure: the exit code is non-zero only when
-- something broke.
local slither = require("slither")
local core = slither.core

local M = {}

local USAGE = [[
usage: slither bench pool [--json] [--calls N] [--workers W]
       slither bench dispatch [--workload trivial|records|cpu] [--n N] [--batch B]
                              [--workers W] [--sweep] [--memory] [--json]

subcommands:
  pool      worker pool round trips, calls/s and start-up beside Python's pools
  dispatch  slither.dispatch.run items/s beside multiprocessing.Pool.imap and
            ProcessPoolExecutor.map (shared/bench/mp_dispatch.py); all three
            workloads without --workload. Defaults: trivial n 1,000,000 batch 256,
            records n 200,000 batch 256, cpu n 2,000 batch 16; 2 workers.
            --sweep   trivial only, slither only: items/s for batch sizes 16..4096
            --memory  peak RSS of the engine streaming N and 10 N items (N from
                      --n, default 1,000,000), each in a fresh slither process
            --sweep and --memory replace the comparison; they may go together.
  store     (not built yet)
  pipe      (not built yet)
]]

local LATER = { store = true, pipe = true }

local DEFAULTS = { calls = 5000, workers = 2 }
local WARMUP = 200        -- calls before timing: imports, caches, JIT traces settle
local INFLIGHT = 8        -- concurrent tasks for the calls/s figure
local STARTUP_SIZE = 8    -- workers in the start-up measurement
local STARTUP_RUNS = 3    -- start-up is noisy; report the median
local PEERS = { "ProcessPoolExecutor", "multiprocessing.Pool" }
local TARGET_P50_RATIO = 10     -- p50 at most a tenth of ProcessPoolExecutor's
local TARGET_STARTUP_MS = 1000  -- 8 workers ready in under 1 s

local function parse_args(args)
  local opts = { calls = DEFAULTS.calls, workers = DEFAULTS.workers }
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-(%a+)=(.*)$")
    name = name or a:match("^%-%-(%a+)$")
    if a == "--json" then
      opts.json = true
      i = i + 1
    elseif name == "calls" or name == "workers" then
      local v = inline or args[i + 1]
      local n = tonumber(v)
      if not n or n < 1 or n % 1 ~= 0 then
        return nil, "--" .. name .. " needs an integer >= 1, got " .. tostring(v)
      end
      opts[name] = n
      i = i + (inline and 1 or 2)
    else
      return nil, "unknown argument '" .. a .. "'"
    end
  end
  return opts
end

-- Nearest rank on sorted samples: a sample that was seen, never an interpolation.
local function percentile(sorted, q)
  local k = math.ceil(q / 100 * #sorted)
  return sorted[math.max(1, k)]
end

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local mid = math.floor(#s / 2)
  if #s % 2 == 1 then return s[mid + 1] end
  return (s[mid] + s[mid + 1]) / 2
end

-- Errors in here mean the benchmark broke: raise, and main reports it.
local function call_echo(pool, i)
  local res, err = pool:call("bench_ops", "echo", { i })
  if not res then
    error(string.format("call to bench_ops.echo failed: %s: %s", tostring(err.kind),
      tostring(err.message)), 0)
  end
  if res[1] ~= i then
    error(string.format("bench_ops.echo returned %s for %d", tostring(res[1]), i), 0)
  end
end

local function examples_dir()
  return core.paths().worker .. "/examples"
end

-- a. one call at a time from one task: the latency of a round trip
local function measure_round_trip(pool, calls)
  for i = 1, WARMUP do call_echo(pool, i) end
  local now, samples = slither.now, {}
  for i = 1, calls do
    local t0 = now()
    call_echo(pool, i)
    samples[i] = (now() - t0) * 1000
  end
  table.sort(samples)
  local sum = 0
  for _, s in ipairs(samples) do sum = sum + s end
  return { p50_us = percentile(samples, 50), p99_us = percentile(samples, 99),
           mean_us = sum / calls, n = calls }
end

-- b. INFLIGHT tasks each making its share of the calls in sequence
local function measure_throughput(pool, calls)
  local tasks = {}
  local t0 = slither.now()
  for k = 1, INFLIGHT do
    -- the first calls % INFLIGHT tasks take one call more, so the total is `calls`
    local share = math.floor(calls / INFLIGHT) + (k <= calls % INFLIGHT and 1 or 0)
    tasks[k] = slither.spawn(function()
      for i = 1, share do call_echo(pool, k * 1000000 + i) end
    end)
  end
  for _, t in ipairs(tasks) do
    local ok, err = t:join()
    if not ok then error(err, 0) end
  end
  local seconds = (slither.now() - t0) / 1000
  return { calls_per_s = calls / seconds, calls = calls, inflight = INFLIGHT,
           seconds = seconds }
end

-- c. slither.pool.start of STARTUP_SIZE workers until it returns (all said hello)
local function measure_startup(state)
  local runs = {}
  for r = 1, STARTUP_RUNS do
    local t0 = slither.now()
    local pool, err = slither.pool.start{ name = "bench-startup", size = STARTUP_SIZE,
                                          path = { examples_dir() } }
    local ms = slither.now() - t0
    if not pool then
      error("starting " .. STARTUP_SIZE .. " workers failed: " .. tostring(err.message), 0)
    end
    state.pools[pool] = true
    pool:stop()
    state.pools[pool] = nil
    runs[r] = ms
  end
  return { ms = median(runs), runs = runs, workers = STARTUP_SIZE }
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- d. the peers, by the script beside the sources. io.popen blocks the loop; that
-- is fine here because every pool of ours is stopped by then.
local function measure_peers(opts)
  local script = core.paths().lua .. "/../scripts/bench/pool_peers.py"
  local f = io.open(script, "r")
  if not f then return nil, "peer script not found: " .. script end
  f:close()
  local python = core.paths().python
  local cmd = string.format("%s %s --calls %d --workers %d --inflight %d --warmup %d "
    .. "--startup-workers %d --startup-runs %d 2>&1", shell_quote(python), shell_quote(script),
    opts.calls, opts.workers, INFLIGHT, WARMUP, STARTUP_SIZE, STARTUP_RUNS)
  local p = io.popen(cmd, "r")
  if not p then return nil, "cannot run " .. cmd end
  local peers, env, other, done = {}, nil, {}, false
  for line in p:lines() do
    local rec = line:sub(1, 1) == "{" and core.decode(line) or nil
    if type(rec) ~= "table" then
      other[#other + 1] = line
    elseif rec.measure == "done" then
      done = true
    elseif rec.measure == "env" then
      env = rec
    elseif rec.peer then
      peers[rec.peer] = peers[rec.peer] or {}
      peers[rec.peer][rec.measure] = rec
    end
  end
  p:close()
  if not done then
    -- stderr came along (2>&1): its last lines say what went wrong
    local tail = {}
    for i = math.max(1, #other - 5), #other do tail[#tail + 1] = other[i] end
    return nil, "the peer script did not finish: " .. table.concat(tail, "\n")
  end
  return peers, env
end

-- ---- report ---------------------------------------------------------------------

local function fmt_us(v)
  return string.format(v < 100 and "%.1f µs" or "%.0f µs", v)
end

local function fmt_ms(v)
  return string.format(v < 100 and "%.1f ms" or "%.0f ms", v)
end

local function fmt_rate(v)
  local s = string.format("%.0f", v)
  local int = s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return int .. " calls/s"
end

-- How slither compares with a peer; lower_better for times, not for rates.
local function ratio(ours, theirs, lower_better)
  if not ours or not theirs or ours <= 0 or theirs <= 0 then return nil end
  return lower_better and theirs / ours or ours / theirs
end

local function fmt_ratio(r, better, worse)
  if not r then return "" end
  if r >= 1 then return string.format(" (%.1fx %s)", r, better) end
  return string.format(" (%.1fx %s)", 1 / r, worse)
end

-- Each row: the figure (key) in a measurement, its label, its name among the JSON
-- ratios, its format, and whether lower is better.
local ROWS = {
  { key = "p50_us", measure = "round_trip", label = "p50 round trip",
    name = "p50_round_trip", fmt = fmt_us, lower = true },
  { key = "p99_us", measure = "round_trip", label = "p99 round trip",
    name = "p99_round_trip", fmt = fmt_us, lower = true },
  { key = "calls_per_s", measure = "throughput", label = "calls/s, " .. INFLIGHT .. " in flight",
    name = "calls_per_s", fmt = fmt_rate, lower = false },
  { key = "ms", measure = "startup", label = STARTUP_SIZE .. " workers ready",
    name = "startup", fmt = fmt_ms, lower = true },
}

local function figure(set, row)
  local m = set and set[row.measure]
  return m and m[row.key]
end

local function evaluate_targets(ours, peers)
  local ppe = peers and peers.ProcessPoolExecutor
  local p50, ppe_p50 = ours.round_trip.p50_us, figure(ppe, ROWS[1])
  local t = {
    p50_tenth_of_executor = {
      slither_us = p50, executor_us = ppe_p50,
      limit_us = ppe_p50 and ppe_p50 / TARGET_P50_RATIO,
    },
    startup_under_1s = {
      slither_ms = ours.startup.ms, limit_ms = TARGET_STARTUP_MS,
      met = ours.startup.ms < TARGET_STARTUP_MS,
    },
  }
  -- nil (unknown) without a peer figure; `a and b or nil` would turn false into nil
  if ppe_p50 then t.p50_tenth_of_executor.met = p50 <= ppe_p50 / TARGET_P50_RATIO end
  return t
end

local function met_text(met)
  if met == nil then return "unknown (no peer figure)" end
  return met and "met" or "not met"
end

local function print_table(opts, ours, peers, env, peer_err, targets)
  local hello = ours.hello or {}
  print(string.format("slither bench pool: %d workers, %d calls, %d in flight, python %s (%s)",
    opts.workers, opts.calls, INFLIGHT, tostring(hello.python), tostring(hello.executable)))
  if env then
    print(string.format("peers: Python %s pools, start method %s", tostring(env.python),
      tostring(env.start_method)))
  end
  print("")
  for _, row in ipairs(ROWS) do
    local parts = { "slither " .. row.fmt(figure(ours, row)) }
    for _, name in ipairs(PEERS) do
      local v = figure(peers and peers[name], row)
      if v then
        local r = ratio(figure(ours, row), v, row.lower)
        local better, worse = "faster", "slower"
        if not row.lower then better, worse = "more", "fewer" end
        parts[#parts + 1] = name .. " " .. row.fmt(v) .. fmt_ratio(r, better, worse)
      end
    end
    print(string.format("%-22s %s", row.label .. ":", table.concat(parts, " | ")))
  end
  if env and env.start_method == "fork" then
    -- Without this the start-up row misleads: a forked child skips the interpreter
    -- start and the imports that every slither worker pays for.
    print("(start-up: slither execs a new interpreter per worker; the peers fork theirs)")
  end
  if peer_err then
    print("")
    print("peer baselines unavailable: " .. peer_err)
  end
  print("")
  print("targets")
  local t1 = targets.p50_tenth_of_executor
  local detail = t1.executor_us
    and string.format(" (%s vs limit %s, a tenth of ProcessPoolExecutor's %s)",
      fmt_us(t1.slither_us), fmt_us(t1.limit_us), fmt_us(t1.executor_us)) or ""
  print("  p50 at most a tenth of ProcessPoolExecutor's: " .. met_text(t1.met) .. detail)
  local t2 = targets.startup_under_1s
  print(string.format("  %d workers ready in under 1 s: %s (%s)", STARTUP_SIZE,
    met_text(t2.met), fmt_ms(t2.slither_ms)))
end

-- Figures to a microsecond's thousandth are noise; 17 digits only hide the figure.
local function rounded(v)
  if type(v) == "number" and v % 1 ~= 0 then return math.floor(v * 1000 + 0.5) / 1000 end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = rounded(x) end
  return setmetatable(out, getmetatable(v))
end

local function json_report(opts, ours, peers, env, peer_err, targets)
  local hello = ours.hello or {}
  local ratios = {}
  for _, name in ipairs(PEERS) do
    local r = {}
    for _, row in ipairs(ROWS) do
      local v = ratio(figure(ours, row), figure(peers and peers[name], row), row.lower)
      if v then r[row.name] = v end
    end
    if next(r) then ratios[name] = r end
  end
  local peer_figures = {}
  for _, name in ipairs(PEERS) do
    local set = peers and peers[name]
    if set then
      peer_figures[name] = { round_trip = set.round_trip, throughput = set.throughput,
                             startup = set.startup }
      for _, m in pairs(peer_figures[name]) do
        m.peer, m.measure = nil, nil -- already said by where they sit
      end
    end
  end
  local out = {
    benchmark = "pool",
    workers = opts.workers, calls = opts.calls, inflight = INFLIGHT, warmup = WARMUP,
    python = { version = hello.python, implementation = hello.implementation,
               executable = hello.executable, free_threaded = hello.free_threaded,
               gil_enabled = hello.gil_enabled,
               peer_start_method = env and env.start_method },
    slither = { round_trip = ours.round_trip, throughput = ours.throughput,
                startup = ours.startup },
    peers = peer_figures,
    ratios = ratios,
    ratios_mean = "how many times better slither is than each peer: > 1 better, < 1 worse",
    targets = targets,
    peers_error = peer_err,
    versions = core.versions(),
  }
  print((core.encode(rounded(out)))) -- encode also returns the attachments
end

local function bench_pool(opts)
  -- Every pool started here is in state.pools until stopped, so that an error
  -- anywhere still stops them before main returns.
  local state = { pools = {} }
  local ok, res = pcall(function()
    local ours = {}
    local id = slither.telemetry.attach("slither.pool.worker.ready", function(_, _, md)
      if md.pool == "bench" then ours.hello = md.hello end
    end)
    local pool, err = slither.pool.start{ name = "bench", size = opts.workers,
                                          path = { examples_dir() } }
    slither.telemetry.detach(id)
    if not pool then error("starting the pool failed: " .. tostring(err.message), 0) end
    state.pools[pool] = true
    ours.round_trip = measure_round_trip(pool, opts.calls)
    ours.throughput = measure_throughput(pool, opts.calls)
    pool:stop()
    state.pools[pool] = nil
    ours.startup = measure_startup(state)
    return ours
  end)
  for p in pairs(state.pools) do p:stop() end
  if not ok then return nil, res end
  local ours = res
  local peers, env = measure_peers(opts)
  local peer_err
  if not peers then peers, peer_err, env = nil, env, nil end
  local targets = evaluate_targets(ours, peers)
  if opts.json then
    json_report(opts, ours, peers, env, peer_err, targets)
  else
    print_table(opts, ours, peers, env, peer_err, targets)
  end
  -- Without the peers there is no comparison: a broken peer run is a failure.
  if peer_err then return nil, "peer baselines failed" end
  return true
end

-- ---- slither bench dispatch -----------------------------------------------------
--
-- The workloads of shared/bench/mp_dispatch.py, with its defaults, computed by the
-- same Python functions (pyworkers/examples/bench_dispatch.py): the figures differ
-- only in how items travel to the workers and back.

local WORKLOADS = {
  trivial = { n = 1000000, batch = 256, what = "x*2 on ints" },
  records = { n = 200000, batch = 256, what = "word count on {id, text} dicts" },
  cpu = { n = 2000, batch = 16, what = "~1 ms of Python per item" },
}
local WORKLOAD_ORDER = { "trivial", "records", "cpu" }
local DISPATCH_PEERS = { "sequential", "multiprocessing.Pool.imap", "ProcessPoolExecutor.map" }
local DISPATCH_DEFAULTS = { workers = 2 }
local DISPATCH_MODULE = "bench_dispatch"
local DISPATCH_POOL = "bench_dispatch"
local WARMUP_BATCHES = 2  -- per worker: imports done and JIT traces built before timing
-- Targets, against the peers measured in the same run.
local TARGET_VS_EXECUTOR = { trivial = 2, records = 1.5 } -- x ProcessPoolExecutor.map
local TARGET_CPU_SPEEDUP = 0.97 -- of the ideal W-worker speed-up over sequential
local SWEEP_BATCHES = { 16, 32, 64, 128, 256, 512, 1024, 2048, 4096 }
local SWEEP_LEVEL = 0.9    -- "levels off" at the first batch size reaching 90% of the best
local MEMORY_N = 1000000   -- the memory test streams N and MEMORY_SCALE * N items
local MEMORY_SCALE = 10
local MEMORY_BATCH = 256
local TARGET_MEMORY_RATIO = 1.2 -- peak RSS at 10 N over peak RSS at N

local RECORD_TEXT = "the quick brown fox jumps over the lazy dog again and again "
local RECORD_WORDS = 13 -- RECORD_TEXT's 12 words and the id

local function parse_dispatch_args(args)
  local opts = { workers = DISPATCH_DEFAULTS.workers }
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-(%a+)=(.*)$")
    name = name or a:match("^%-%-(%a+)$")
    if a == "--json" or a == "--sweep" or a == "--memory" then
      opts[name] = true
      i = i + 1
    elseif name == "workload" then
      local v = inline or args[i + 1]
      if not WORKLOADS[v or ""] then
        return nil, "--workload needs trivial, records or cpu, got " .. tostring(v)
      end
      opts.workload = v
      i = i + (inline and 1 or 2)
    elseif name == "n" or name == "batch" or name == "workers" then
      local v = inline or args[i + 1]
      local n = tonumber(v)
      if not n or n < 1 or n % 1 ~= 0 then
        return nil, "--" .. name .. " needs an integer >= 1, got " .. tostring(v)
      end
      opts[name] = n
      i = i + (inline and 1 or 2)
    else
      return nil, "unknown argument '" .. a .. "'"
    end
  end
  if (opts.sweep or opts.memory) and opts.workload and opts.workload ~= "trivial" then
    return nil, "--sweep and --memory run the trivial workload only"
  end
  if opts.sweep and opts.batch then
    return nil, "--sweep runs its own batch sizes; --batch does not go with it"
  end
  return opts
end

local function make_payloads(workload, n)
  local xs = {}
  if workload == "records" then
    for i = 0, n - 1 do xs[i + 1] = { id = i, text = RECORD_TEXT .. i } end
  else
    for i = 0, n - 1 do xs[i + 1] = i end -- range(n), as the peer's inputs
  end
  return xs
end

-- The cpu workload's function in Lua: an independent check of what Python returns.
-- Every term stays below 2^53, and % agrees with Python's on non-negative numbers.
local function cpu_one(x)
  local s = 0
  for i = 0, 19999 do s = s + (x + i) * (x + i) % 7 end
  return s
end

-- The expected results, computed before timing (the cpu ones cost ~70 ms for 2000).
local function expected(workload, payloads)
  if workload ~= "cpu" then return nil end
  local ref = {}
  for k, x in ipairs(payloads) do ref[k] = cpu_one(x) end
  return ref
end

-- Every result against its payload; raises on the first that is wrong.
local function check_results(workload, payloads, res, ref)
  if #res ~= #payloads then
    error(string.format("%s: %d results for %d items", workload, #res, #payloads), 0)
  end
  local sum, want = 0, 0
  for k, it in ipairs(res) do
    local x, y = payloads[k], it.payload
    local ok
    if workload == "trivial" then
      ok = y == 2 * x
      sum, want = sum + (tonumber(y) or 0), want + 2 * x
    elseif workload == "records" then
      ok = type(y) == "table" and y.id == x.id and y.words == RECORD_WORDS
    else
      ok = y == ref[k]
    end
    if not ok then
      error(string.format("%s: result %d is %s for payload %s", workload, k,
        core.encode(y), core.encode(x)), 0)
    end
  end
  -- the peer's own check, kept so that the two checks can be compared line by line
  if sum ~= want then error(string.format("trivial: sum %.0f, want %.0f", sum, want), 0) end
end

local clk_tck
-- CPU seconds a process has used (user + system), from /proc/PID/stat.
local function proc_cpu_s(pid)
  if not clk_tck then
    local p = io.popen("getconf CLK_TCK 2>/dev/null")
    clk_tck = p and tonumber(p:read("*l") or "") or 100
    if p then p:close() end
  end
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  -- fields after the ")" that ends the command name: utime and stime are the 12th
  -- and 13th of them
  local fields = {}
  for x in (s:match("%)%s+(.*)$") or ""):gmatch("%S+") do fields[#fields + 1] = x end
  local u, st = tonumber(fields[12]), tonumber(fields[13])
  return u and st and (u + st) / clk_tck
end

local function workers_cpu_s(pool)
  local total = 0
  for _, pid in ipairs(pool:pids()) do total = total + (proc_cpu_s(pid) or 0) end
  return total
end

local function start_dispatch_pool(state, workers)
  local hello
  local id = slither.telemetry.attach("slither.pool.worker.ready", function(_, _, md)
    if md.pool == DISPATCH_POOL then hello = md.hello end
  end)
  local t0 = slither.now()
  local pool, err = slither.pool.start{ name = DISPATCH_POOL, size = workers,
                                        path = { examples_dir() } }
  local ms = slither.now() - t0
  slither.telemetry.detach(id)
  if not pool then error("starting the pool failed: " .. tostring(err.message), 0) end
  state.pools[pool] = true
  return pool, hello or {}, ms
end

local function stop_dispatch_pool(state, pool)
  pool:stop()
  state.pools[pool] = nil
end

local function dispatch_opts(pool, workload, batch)
  return { pool = pool, module = DISPATCH_MODULE, ["function"] = workload, batch_size = batch }
end

local function run_or_raise(items, o)
  local res, rep = slither.dispatch.run(items, o)
  if not res then
    error(string.format("dispatch.run of %s failed: %s: %s", o["function"], tostring(rep.kind),
      tostring(rep.message)), 0)
  end
  return res, rep
end

-- A small dispatch through the same function: the workers import the module, and
-- the engine's Lua paths are traced, before anything is timed.
local function warm_up(pool, workload, n, batch, workers)
  local payloads = make_payloads(workload, math.min(n, WARMUP_BATCHES * workers * batch))
  local res = run_or_raise(slither.item.wrap_many(payloads),
    dispatch_opts(pool, workload, batch))
  check_results(workload, payloads, res, expected(workload, payloads))
end

-- One timed dispatch.run over prepared items; the payloads stay for the check
-- (results replace the items' payloads in place).
local function timed_run(pool, workload, payloads, items, batch)
  collectgarbage("collect") -- the garbage of preparing is not the run's to collect
  local o = dispatch_opts(pool, workload, batch)
  local c0, w0 = os.clock(), workers_cpu_s(pool)
  local t0 = slither.now()
  local res, rep = run_or_raise(items, o)
  local seconds = (slither.now() - t0) / 1000
  local engine_cpu, workers_cpu = os.clock() - c0, workers_cpu_s(pool) - w0
  return res, { items_per_s = #payloads / seconds, wall_s = seconds, batches = rep.batches,
                retries = rep.retries, engine_cpu_s = engine_cpu, workers_cpu_s = workers_cpu }
end

-- slither's figures for one workload: pool start, payloads, warm-up, one timed run.
local function measure_dispatch(state, opts, workload)
  local spec = WORKLOADS[workload]
  local n, batch = opts.n or spec.n, opts.batch or spec.batch
  local pool, hello, start_ms = start_dispatch_pool(state, opts.workers)
  local codec = pool:stats().codec
  warm_up(pool, workload, n, batch, opts.workers)
  local payloads = make_payloads(workload, n)
  local ref = expected(workload, payloads)
  local t0 = slither.now()
  local items = slither.item.wrap_many(payloads)
  local wrap_ms = slither.now() - t0
  local res, fig = timed_run(pool, workload, payloads, items, batch)
  stop_dispatch_pool(state, pool)
  check_results(workload, payloads, res, ref)
  fig.pool_start_ms, fig.wrap_ms, fig.checked = start_ms, wrap_ms, true
  return { workload = workload, n = n, batch = batch, workers = opts.workers, codec = codec,
           hello = hello, slither = fig }
end

local function repo_root()
  local lua = core.paths().lua
  -- <root>/lua in a source tree; said plainly when it is, for readable paths
  return lua:match("^(.*)/lua/?$") or (lua .. "/..")
end

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- SLITHER_SHARED_DIR names shared/ itself; else shared/ sits beside the repository.
local function peer_script()
  local tried = {}
  local env = os.getenv("SLITHER_SHARED_DIR")
  if env and env ~= "" then tried[#tried + 1] = env .. "/bench/mp_dispatch.py" end
  local root = repo_root()
  local parent = root:match("^(.+)/[^/]+$") or (root .. "/..")
  tried[#tried + 1] = parent .. "/shared/bench/mp_dispatch.py"
  for _, path in ipairs(tried) do
    if file_exists(path) then return path end
  end
  return nil, "peer script not found (looked for " .. table.concat(tried, ", ") ..
    "; set SLITHER_SHARED_DIR to the shared/ directory)"
end

-- The peers for one workload. io.popen blocks the loop: fine, our pool is stopped
-- by then, and it must be, or the peers would share the two cores with it.
-- Returns peers | nil, err, missing (true when the script is not there at all).
local function measure_dispatch_peers(m)
  local script, err = peer_script()
  if not script then return nil, err, true end
  local cmd = string.format("%s %s %s %d %d %d 2>&1", shell_quote(core.paths().python),
    shell_quote(script), m.workload, m.n, m.batch, m.workers)
  local p = io.popen(cmd, "r")
  if not p then return nil, "cannot run " .. cmd end
  local peers, other = {}, {}
  for line in p:lines() do
    local rec = line:sub(1, 1) == "{" and core.decode(line) or nil
    if type(rec) == "table" and rec.peer then
      peers[rec.peer] = { items_per_s = rec.items_per_s, wall_s = rec.wall_s }
    else
      other[#other + 1] = line
    end
  end
  p:close()
  for _, name in ipairs(DISPATCH_PEERS) do
    if not peers[name] then
      -- stderr came along (2>&1): its last lines say what went wrong
      local tail = {}
      for i = math.max(1, #other - 5), #other do tail[#tail + 1] = other[i] end
      return nil, "the peer script gave no figure for " .. name .. ": " ..
        table.concat(tail, "\n")
    end
  end
  return peers, script
end

local function evaluate_dispatch_target(m)
  local ours = m.slither.items_per_s
  local peers = m.peers
  if m.workload == "cpu" then
    local seq = peers and peers.sequential
    local ideal = seq and m.workers * seq.items_per_s
    local t = { kind = "speedup", workers = m.workers, limit_fraction = TARGET_CPU_SPEEDUP,
                slither_items_per_s = ours, sequential_items_per_s = seq and seq.items_per_s,
                ideal_items_per_s = ideal }
    if ideal then
      t.fraction_of_ideal = ours / ideal
      t.met = t.fraction_of_ideal >= TARGET_CPU_SPEEDUP
    end
    return t
  end
  local ppe = peers and peers["ProcessPoolExecutor.map"]
  local t = { kind = "vs_executor", limit_ratio = TARGET_VS_EXECUTOR[m.workload],
              slither_items_per_s = ours, executor_items_per_s = ppe and ppe.items_per_s }
  if ppe then
    t.ratio = ours / ppe.items_per_s
    t.met = t.ratio >= t.limit_ratio
  end
  return t
end

-- ---- sweep and memory ------------------------------------------------------------

local function measure_sweep(state, opts)
  local n = opts.n or WORKLOADS.trivial.n
  local pool, hello = start_dispatch_pool(state, opts.workers)
  local codec = pool:stats().codec
  warm_up(pool, "trivial", n, SWEEP_BATCHES[#SWEEP_BATCHES], opts.workers)
  local payloads = make_payloads("trivial", n)
  local runs, best = {}, nil
  for _, batch in ipairs(SWEEP_BATCHES) do
    local items = slither.item.wrap_many(payloads) -- fresh: results replaced the last
    local res, fig = timed_run(pool, "trivial", payloads, items, batch)
    check_results("trivial", payloads, res)
    fig.batch = batch
    runs[#runs + 1] = fig
    if not best or fig.items_per_s > best.items_per_s then best = fig end
  end
  stop_dispatch_pool(state, pool)
  local levels
  for _, r in ipairs(runs) do
    r.fraction_of_best = r.items_per_s / best.items_per_s
    if not levels and r.fraction_of_best >= SWEEP_LEVEL then levels = r.batch end
  end
  return { mode = "sweep", workload = "trivial", n = n, workers = opts.workers, codec = codec,
           hello = hello, runs = runs, best_batch = best.batch,
           best_items_per_s = best.items_per_s, level = SWEEP_LEVEL, levels_off_batch = levels }
end

-- The child of the memory test: a fresh engine that streams N items and reports
-- its own peak RSS. A fresh process, because a high-water mark never comes down:
-- measured in this one it would hold the largest run so far.
local MEMORY_CHILD = [[
local slither = require("slither")
if (os.getenv("SLITHER_LOG") or "") == "" then slither.core.set_log_level("warn") end
local N, B, W, DIR = %d, %d, %d, %q
local function status_kb(field)
  local f = assert(io.open("/proc/self/status", "r"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%%s*(%%d+)"))
end
local pool, err = slither.pool.start{ name = "bench_dispatch", size = W, path = { DIR } }
if not pool then error("starting the pool failed: " .. tostring(err.message), 0) end
local rss_before = status_kb("VmRSS")
local i = -1
local function source()
  if i >= N - 1 then return nil end
  i = i + 1
  return i
end
local stream = slither.dispatch.stream(source, { pool = pool, module = "bench_dispatch",
  ["function"] = "trivial", batch_size = B })
local count, sum = 0, 0
local t0 = slither.now()
for item in stream.next do
  if item.payload ~= 2 * count then
    error(string.format("result %%d is %%s, want %%d", count + 1, tostring(item.payload),
      2 * count))
  end
  count = count + 1
  sum = sum + item.payload
end
local seconds = (slither.now() - t0) / 1000
if count ~= N or sum ~= N * (N - 1) then
  error(string.format("%%d results summing to %%.0f, want %%d summing to %%.0f", count, sum, N,
    N * (N - 1)))
end
local hwm = status_kb("VmHWM")
pool:stop()
print(slither.core.encode({ n = N, batch = B, workers = W, vmhwm_kb = hwm,
  rss_before_kb = rss_before, items_per_s = N / seconds, wall_s = seconds }))
]]

-- This engine's binary, to run the memory children with. /proc/self inside the
-- engine is the engine (io.open is in-process); in a popen'ed command it would be
-- the command, hence the pid.
local function self_exe()
  local f = io.open("/proc/self/stat", "r")
  local pid = f and f:read("*l"):match("^(%d+)")
  if f then f:close() end
  if pid then
    local p = io.popen("readlink /proc/" .. pid .. "/exe 2>/dev/null")
    local exe = p and p:read("*l")
    if p then p:close() end
    if exe and file_exists(exe) then return exe end
    -- a binary rebuilt while running reads "... (deleted)"; its /proc link still runs
    return "/proc/" .. pid .. "/exe"
  end
  if arg and arg[-1] then return arg[-1] end
  return nil, "cannot find the slither binary (no /proc/self/stat)"
end

local function memory_child(exe, n, batch, workers)
  local code = string.format(MEMORY_CHILD, n, batch, workers, examples_dir())
  local p = io.popen(shell_quote(exe) .. " -e " .. shell_quote(code) .. " 2>&1", "r")
  if not p then error("cannot run " .. exe, 0) end
  local rec, other = nil, {}
  for line in p:lines() do
    local r = line:sub(1, 1) == "{" and core.decode(line) or nil
    if type(r) == "table" and r.vmhwm_kb then rec = r else other[#other + 1] = line end
  end
  p:close()
  if not rec then
    local tail = {}
    for i = math.max(1, #other - 8), #other do tail[#tail + 1] = other[i] end
    error(string.format("the memory child for N = %d failed:\n%s", n,
      table.concat(tail, "\n")), 0)
  end
  return rec
end

local function measure_memory(opts)
  local exe, err = self_exe()
  if not exe then error(err, 0) end
  local n = opts.n or MEMORY_N
  local batch = opts.batch or MEMORY_BATCH
  local small = memory_child(exe, n, batch, opts.workers)
  local large = memory_child(exe, n * MEMORY_SCALE, batch, opts.workers)
  local ratio = large.vmhwm_kb / small.vmhwm_kb
  return { mode = "memory", workload = "trivial", batch = batch, workers = opts.workers,
           binary = exe, runs = { small, large }, ratio = ratio,
           target = { limit_ratio = TARGET_MEMORY_RATIO, met = ratio <= TARGET_MEMORY_RATIO } }
end

-- ---- dispatch report -------------------------------------------------------------

local function fmt_int(v)
  local s = string.format("%.0f", v)
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^(%-?),", "%1"))
end

local function fmt_items(v)
  return fmt_int(v) .. " items/s"
end

local function fmt_mb(kb)
  return string.format("%.1f MB", kb / 1024)
end

local function describe_target(m)
  local t = m.target
  if t.kind == "speedup" then
    local head = string.format("cpu: >= %.0f%% of the ideal %d-worker speed-up",
      t.limit_fraction * 100, t.workers)
    if not t.ideal_items_per_s then return head .. ": " .. met_text(nil) end
    return string.format("%s: %s (%.1f%%: %s of ideal %s = %d x sequential %s)", head,
      met_text(t.met), t.fraction_of_ideal * 100, fmt_items(t.slither_items_per_s),
      fmt_int(t.ideal_items_per_s), t.workers, fmt_int(t.sequential_items_per_s))
  end
  local head = string.format("%s: >= %gx ProcessPoolExecutor.map", m.workload, t.limit_ratio)
  if not t.ratio then return head .. ": " .. met_text(nil) end
  return string.format("%s: %s (%.2fx: %s vs %s)", head, met_text(t.met), t.ratio,
    fmt_items(t.slither_items_per_s), fmt_items(t.executor_items_per_s))
end

local function print_workload(m)
  local s = m.slither
  print(string.format("%s (%s): n %s, batch %d, %d workers", m.workload,
    WORKLOADS[m.workload].what, fmt_int(m.n), m.batch, m.workers))
  if not s then
    print("  FAILED: " .. tostring(m.error))
    print("")
    return
  end
  print(string.format("  %-28s %18s %9.3f s", "slither dispatch.run", fmt_items(s.items_per_s),
    s.wall_s))
  for _, name in ipairs(DISPATCH_PEERS) do
    local p = m.peers and m.peers[name]
    if p then
      print(string.format("  %-28s %18s %9.3f s   slither %.2fx", name,
        fmt_items(p.items_per_s), p.wall_s, s.items_per_s / p.items_per_s))
    end
  end
  print(string.format("  untimed: pool start %.0f ms, wrap_many %.0f ms; CPU during the run: "
    .. "engine %.2f s, workers %.2f s", s.pool_start_ms, s.wrap_ms, s.engine_cpu_s,
    s.workers_cpu_s))
  if m.peers_error then print("  peers unavailable: " .. m.peers_error) end
  print("")
end

local function print_dispatch(results, opts)
  local first = {}
  for i = #results, 1, -1 do
    if results[i].slither then first = results[i] end
  end
  local hello = first.hello or {}
  local head = string.format("slither bench dispatch: %d workers", opts.workers)
  if first.codec then
    head = string.format("%s, codec %s, Python %s (%s)", head, first.codec,
      tostring(hello.python), tostring(hello.executable))
  end
  print(head)
  if first.peer_script then print("peers: " .. first.peer_script) end
  print("")
  local any_peer
  for _, m in ipairs(results) do
    print_workload(m)
    any_peer = any_peer or m.peers
  end
  if any_peer then
    -- Without this the comparison misleads either way: the peers' wall time covers
    -- starting and stopping their pools (by fork); ours starts before timing.
    print("(the peers' wall times include starting and stopping their pools; slither's pool")
    print(" starts before timing, its start-up is the untimed figure above)")
    print("")
  end
  local targets = {}
  for _, m in ipairs(results) do
    if m.target then targets[#targets + 1] = "  " .. describe_target(m) end
  end
  if targets[1] then print("targets\n" .. table.concat(targets, "\n")) end
end

local function print_sweep(r)
  print(string.format("slither bench dispatch --sweep: trivial, n %s, %d workers, codec %s",
    fmt_int(r.n), r.workers, tostring(r.codec)))
  print("")
  print(string.format("  %6s %18s %9s %8s", "batch", "items/s", "wall", "of best"))
  for _, x in ipairs(r.runs) do
    print(string.format("  %6d %18s %8.3fs %7.0f%%", x.batch, fmt_int(x.items_per_s), x.wall_s,
      x.fraction_of_best * 100))
  end
  print("")
  print(string.format("best: batch %d, %s", r.best_batch, fmt_items(r.best_items_per_s)))
  print(string.format("throughput levels off at batch %d (the smallest within %.0f%% of the "
    .. "best)", r.levels_off_batch, r.level * 100))
end

local function print_memory(r)
  print(string.format("slither bench dispatch --memory: dispatch.stream of trivial items, "
    .. "batch %d, %d workers", r.batch, r.workers))
  print("  (each N in a fresh engine: " .. r.binary .. " -e ...)")
  print("")
  for _, x in ipairs(r.runs) do
    print(string.format("  N %12s: peak RSS (VmHWM) %9s   RSS before streaming %9s   %s",
      fmt_int(x.n), fmt_mb(x.vmhwm_kb), fmt_mb(x.rss_before_kb), fmt_items(x.items_per_s)))
  end
  print("")
  print(string.format("target: peak RSS at %s / at %s <= %.1f: %s (%.3f)",
    fmt_int(r.runs[2].n), fmt_int(r.runs[1].n), r.target.limit_ratio, met_text(r.target.met),
    r.ratio))
end

local function json_dispatch(m)
  local hello = m.hello or {}
  local out = {}
  for k, v in pairs(m) do out[k] = v end
  out.hello = nil
  out.benchmark = "dispatch"
  out.mode = out.mode or "compare"
  if m.hello then
    out.python = { version = hello.python, implementation = hello.implementation,
                   executable = hello.executable }
  end
  if m.peers then
    out.ratios = {}
    for name, p in pairs(m.peers) do out.ratios[name] = m.slither.items_per_s / p.items_per_s end
  end
  print((core.encode(rounded(out))))
end

local function bench_dispatch(opts)
  -- Every pool started here is in state.pools until stopped, so that an error
  -- anywhere still stops them before we return.
  local state = { pools = {} }
  local broke = false
  local function guarded(fn, ...)
    local ok, res = pcall(fn, ...)
    for p in pairs(state.pools) do p:stop() end
    state.pools = {}
    if not ok then broke = true end
    return ok, res
  end

  if opts.sweep then
    local ok, r = guarded(measure_sweep, state, opts)
    if not ok then
      io.stderr:write("slither bench dispatch --sweep: " .. tostring(r) .. "\n")
    elseif opts.json then
      json_dispatch(r)
    else
      print_sweep(r)
    end
  end
  if opts.memory then
    if opts.sweep and not opts.json then print("") end
    local ok, r = guarded(measure_memory, opts)
    if not ok then
      io.stderr:write("slither bench dispatch --memory: " .. tostring(r) .. "\n")
    elseif opts.json then
      json_dispatch(r)
    else
      print_memory(r)
    end
  end
  if opts.sweep or opts.memory then return not broke end

  local results = {}
  for _, workload in ipairs(opts.workload and { opts.workload } or WORKLOAD_ORDER) do
    local ok, m = guarded(measure_dispatch, state, opts, workload)
    if not ok then
      local spec = WORKLOADS[workload]
      m = { workload = workload, n = opts.n or spec.n, batch = opts.batch or spec.batch,
            workers = opts.workers, error = tostring(m) } -- reported with the figures
    else
      local peers, info, missing = measure_dispatch_peers(m)
      if peers then
        m.peers, m.peer_script = peers, info
      else
        m.peers_error = info
        -- a peer script that is not there is the environment's; one that broke is ours
        if not missing then broke = true end
      end
      m.target = evaluate_dispatch_target(m)
    end
    results[#results + 1] = m
    if opts.json then json_dispatch(m) end
  end
  if not opts.json then print_dispatch(results, opts) end
  return not broke
end

local SUBCOMMANDS = {
  pool = { parse = parse_args, run = bench_pool },
  dispatch = { parse = parse_dispatch_args, run = bench_dispatch },
}

function M.main(args)
  args = args or {}
  local sub = args[1]
  if sub == "-h" or sub == "--help" then
    io.write(USAGE)
    return 0
  end
  if LATER[sub] then
    io.stderr:write("slither bench " .. sub .. ": not built yet\n\n" .. USAGE)
    return 2
  end
  local cmd = SUBCOMMANDS[sub]
  if not cmd then
    if sub then io.stderr:write("slither bench: unknown subcommand '" .. sub .. "'\n\n") end
    io.stderr:write(USAGE)
    return 2
  end
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  local opts, perr = cmd.parse(rest)
  if not opts then
    io.stderr:write("slither bench " .. sub .. ": " .. perr .. "\n\n" .. USAGE)
    return 2
  end
  -- Worker output lines would clutter the figures; an explicit SLITHER_LOG wins,
  -- for debugging the bench itself.
  if (os.getenv("SLITHER_LOG") or "") == "" then core.set_log_level("warn") end
  local ok, err = cmd.run(opts)
  if not ok then
    if err then io.stderr:write("slither bench " .. sub .. ": " .. tostring(err) .. "\n") end
    return 1
  end
  return 0
end

return M
