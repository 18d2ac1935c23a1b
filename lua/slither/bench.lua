-- slither.bench: `slither bench pool`, `dispatch`, `store` and `pipe`.
--
-- Each measures slither and, in the same run and with the same interpreter, what a
-- Python user would pick instead: Python's own process pools for round trips
-- (scripts/bench/pool_peers.py), multiprocessing and ProcessPoolExecutor for
-- batched fan-out (shared/bench/mp_dispatch.py), a local Redis for shared-state
-- reads (shared/bench/redis_reads.py); a pipe is measured against its own stages
-- run alone. Figures taken on one machine under one load are the only ones whose
-- ratios mean something. It reports; a missed target is a figure, not a failure:
-- the exit code is non-zero only when something broke.
local slither = require("slither")
local core = slither.core

local M = {}

local USAGE = [[
usage: slither bench pool [--json] [--calls N] [--workers W]
       slither bench dispatch [--workload trivial|records|cpu] [--n N] [--batch B]
                              [--workers W] [--repeat R] [--sweep] [--memory] [--json]
       slither bench store [--json] [--keys N] [--lookups N]
       slither bench pipe [--json] [--n N] [--work US]

subcommands:
  pool      worker pool round trips, calls/s and start-up beside Python's pools
  dispatch  slither.dispatch.run items/s beside multiprocessing.Pool.imap and
            ProcessPoolExecutor.map (shared/bench/mp_dispatch.py); all three
            workloads without --workload. Defaults: trivial n 1,000,000 batch 256,
            records n 200,000 batch 256, cpu n 2,000 batch 16; 2 workers.
            --sweep   trivial only, slither only: items/s for batch sizes 16..4096
            --memory  peak RSS of the engine streaming N and 10 N items (N from
                      --n, default 1,000,000), each in 3 fresh slither processes
            --repeat  rounds of slither and the peers, each workload (default 3);
                      the figures are the medians of items/s
            --sweep and --memory replace the comparison; they may go together.
  store     store reads and writes from Lua, from 1 and 2 C host threads, and from
            one Python worker (direct reads, get_many, view calls) beside a local
            Redis server's GET and MGET (shared/bench/redis_reads.py; skipped, with
            the apt-get line, when redis-server or python3-redis is missing).
            Defaults: --keys 100,000, --lookups 100,000.
  pipe      a prepare (lua) -> python -> route pipe of --n items (1,000,000) on 2
            workers: items/s, the Lua stage's cost per item against a plain loop,
            the whole pipe against its slowest stage run alone (the overlap), and
            peak RSS streaming N and 10 N items, each in 3 fresh slither processes.
            The Python stage returns x + 1; the overlap is measured again with it
            also doing --work US microseconds of Python per item (default 1; 0
            skips these runs).
]]

local DEFAULTS = { calls = 5000, workers = 2 }
local WARMUP = 200        -- calls before timing: imports, caches, JIT traces settle
local INFLIGHT = 8        -- concurrent tasks for the calls/s figure
local STARTUP_SIZE = 8    -- workers in the start-up measurement
local STARTUP_RUNS = 3    -- start-up is noisy; report the median
local PEERS = { "ProcessPoolExecutor", "multiprocessing.Pool" }
local TARGET_P50_RATIO = 10     -- p50 at most a tenth of ProcessPoolExecutor's
local TARGET_STARTUP_MS = 1000  -- 8 workers ready in under 1 s

-- A parser of --NAME N or --NAME=N as an integer >= 1.
local function int_arg(name)
  return function(v)
    local n = tonumber(v)
    if not n or n < 1 or n % 1 ~= 0 then
      return nil, "--" .. name .. " needs an integer >= 1, got " .. tostring(v)
    end
    return n
  end
end

-- A subcommand's arguments: flags[NAME] for --NAME alone, values[NAME] a parser of
-- --NAME V or --NAME=V that returns the value or nil and the message.
local function parse_opts(args, flags, values)
  local opts = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-(%a+)=(.*)$")
    name = name or a:match("^%-%-(%a+)$")
    if name and not inline and flags[name] then
      opts[name] = true
      i = i + 1
    elseif name and values[name] then
      local v, err = values[name](inline or args[i + 1])
      if v == nil then return nil, err end
      opts[name] = v
      i = i + (inline and 1 or 2)
    else
      return nil, "unknown argument '" .. a .. "'"
    end
  end
  return opts
end

-- --json, and integer options over defaults.
local function parse_int_args(args, defaults)
  local values = {}
  for k in pairs(defaults) do values[k] = int_arg(k) end
  local opts, err = parse_opts(args, { json = true }, values)
  if not opts then return nil, err end
  for k, v in pairs(defaults) do
    if opts[k] == nil then opts[k] = v end
  end
  return opts
end

local function parse_args(args)
  return parse_int_args(args, { calls = DEFAULTS.calls, workers = DEFAULTS.workers })
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
    local pool, err = slither.pool.start{ name = "bench", size = opts.workers,
                                          path = { examples_dir() } }
    if not pool then error("starting the pool failed: " .. tostring(err.message), 0) end
    state.pools[pool] = true
    ours.hello = pool:hello()
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
local DISPATCH_DEFAULTS = { workers = 2, ["repeat"] = 3 }
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
  local opts, err = parse_opts(args, { json = true, sweep = true, memory = true }, {
    workload = function(v)
      if not WORKLOADS[v or ""] then
        return nil, "--workload needs trivial, records or cpu, got " .. tostring(v)
      end
      return v
    end,
    n = int_arg("n"), batch = int_arg("batch"), workers = int_arg("workers"),
    ["repeat"] = int_arg("repeat"),
  })
  if not opts then return nil, err end
  opts.workers = opts.workers or DISPATCH_DEFAULTS.workers
  if opts["repeat"] and (opts.sweep or opts.memory) then
    return nil, "--repeat goes with the comparison, not with --sweep or --memory"
  end
  opts["repeat"] = opts["repeat"] or DISPATCH_DEFAULTS["repeat"]
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
  local t0 = slither.now()
  local pool, err = slither.pool.start{ name = DISPATCH_POOL, size = workers,
                                        path = { examples_dir() } }
  local ms = slither.now() - t0
  if not pool then error("starting the pool failed: " .. tostring(err.message), 0) end
  state.pools[pool] = true
  return pool, pool:hello() or {}, ms
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

-- One workload, --repeat times: slither and then the peers in each round, so that
-- both see the same drift in the machine's load. The figures kept are the medians
-- of items/s (a wall time is n over its median); every round's are in .runs.
local function measure_compare(state, opts, workload)
  local rounds, peer_rounds = {}, {}
  local m
  for r = 1, opts["repeat"] do
    local mr = measure_dispatch(state, opts, workload)
    rounds[r] = mr.slither
    m = m or mr
    if not m.peers_error then
      local peers, info, missing = measure_dispatch_peers(mr)
      if peers then
        peer_rounds[#peer_rounds + 1] = peers
        m.peer_script = info
      else
        m.peers_error, m.peers_missing = info, missing
      end
    end
  end
  local function med(list, get)
    local xs = {}
    for i, x in ipairs(list) do xs[i] = get(x) end
    return median(xs)
  end
  local s = {}
  for k, v in pairs(rounds[1]) do s[k] = v end
  for _, k in ipairs({ "items_per_s", "engine_cpu_s", "workers_cpu_s", "pool_start_ms",
                       "wrap_ms" }) do
    s[k] = med(rounds, function(x) return x[k] end)
  end
  s.wall_s = m.n / s.items_per_s
  s.runs = {}
  for i, x in ipairs(rounds) do s.runs[i] = x.items_per_s end
  m.slither, m["repeat"] = s, opts["repeat"]
  if not m.peers_error then
    m.peers = {}
    for _, name in ipairs(DISPATCH_PEERS) do
      local ips = med(peer_rounds, function(x) return x[name].items_per_s end)
      local runs = {}
      for i, x in ipairs(peer_rounds) do runs[i] = x[name].items_per_s end
      m.peers[name] = { items_per_s = ips, wall_s = m.n / ips, runs = runs }
    end
  end
  return m
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

-- template: MEMORY_CHILD, or another child taking the same N, B, W and DIR
local function memory_child(exe, n, batch, workers, template)
  local code = string.format(template or MEMORY_CHILD, n, batch, workers, examples_dir())
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

-- Peak RSS depends on where the collector's cycles fall, so each N runs in
-- MEMORY_ROUNDS fresh engines; the record kept is the one with the median peak,
-- and .vmhwm_runs_kb holds every engine's.
local MEMORY_ROUNDS = 3
local function memory_median(exe, n, batch, workers, template)
  local recs, peaks = {}, {}
  for i = 1, MEMORY_ROUNDS do
    recs[i] = memory_child(exe, n, batch, workers, template)
    peaks[i] = recs[i].vmhwm_kb
  end
  table.sort(recs, function(a, b) return a.vmhwm_kb < b.vmhwm_kb end)
  local rec = recs[math.floor(MEMORY_ROUNDS / 2) + 1]
  rec.vmhwm_runs_kb = peaks
  return rec
end

local function measure_memory(opts)
  local exe, err = self_exe()
  if not exe then error(err, 0) end
  local n = opts.n or MEMORY_N
  local batch = opts.batch or MEMORY_BATCH
  local small = memory_median(exe, n, batch, opts.workers)
  local large = memory_median(exe, n * MEMORY_SCALE, batch, opts.workers)
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
  print(string.format("%s (%s): n %s, batch %d, %d workers%s", m.workload,
    WORKLOADS[m.workload].what, fmt_int(m.n), m.batch, m.workers,
    (m["repeat"] or 1) > 1 and string.format(", median of %d rounds", m["repeat"]) or ""))
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
  if #(s.runs or {}) > 1 then
    local function runs(xs)
      local t = {}
      for i, x in ipairs(xs) do t[i] = fmt_int(x) end
      return table.concat(t, ", ")
    end
    print("  each round, items/s:")
    print(string.format("    %-26s %s", "slither dispatch.run", runs(s.runs)))
    for _, name in ipairs(DISPATCH_PEERS) do
      local p = m.peers and m.peers[name]
      if p then print(string.format("    %-26s %s", name, runs(p.runs))) end
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

-- The rows of a peak-RSS comparison: per N the median engine's figures, then
-- every engine's peak.
local function print_memory_runs(binary, runs)
  print(string.format("  (each N in %d fresh engines, the median kept: %s -e ...)",
    MEMORY_ROUNDS, binary))
  for _, x in ipairs(runs) do
    print(string.format("  N %12s: peak RSS (VmHWM) %9s   RSS before streaming %9s   %s",
      fmt_int(x.n), fmt_mb(x.vmhwm_kb), fmt_mb(x.rss_before_kb), fmt_items(x.items_per_s)))
    local peaks = {}
    for i, kb in ipairs(x.vmhwm_runs_kb or {}) do peaks[i] = fmt_mb(kb) end
    print(string.format("  %16s  every engine's peak: %s", "", table.concat(peaks, ", ")))
  end
end

local function print_memory(r)
  print(string.format("slither bench dispatch --memory: dispatch.stream of trivial items, "
    .. "batch %d, %d workers", r.batch, r.workers))
  print_memory_runs(r.binary, r.runs)
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
    local ok, m = guarded(measure_compare, state, opts, workload)
    if not ok then
      local spec = WORKLOADS[workload]
      m = { workload = workload, n = opts.n or spec.n, batch = opts.batch or spec.batch,
            workers = opts.workers, error = tostring(m) } -- reported with the figures
    else
      if m.peers_error and not m.peers_missing then broke = true end
      m.peers_missing = nil
      m.target = evaluate_dispatch_target(m)
    end
    results[#results + 1] = m
    if opts.json then json_dispatch(m) end
  end
  if not opts.json then print_dispatch(results, opts) end
  return not broke
end

-- ---- slither bench store ---------------------------------------------------------
--
-- The store from each of its readers: Lua on the engine's thread, C host threads,
-- and one Python worker reading directly (shared memory), through views (a message
-- to the engine per lookup) and, as the peer, through a local Redis server run by
-- shared/bench/redis_reads.py on the same keys, values and random key sequence
-- (pyworkers/examples/bench_store.py times our reads the same way, inside Python).

local STORE_DEFAULTS = { keys = 100000, lookups = 100000 }
local STORE_NAME = "bench_store"
local STORE_TABLE = "users"
local STORE_VIEW = "bench_store_lookup"
local STORE_POOL = "bench_store"
local STORE_GROUP = 100           -- keys per get_many, as the peer's MGET
local THREAD_OPS = 1000000        -- gets per host thread in one read_threads run
local THREAD_ROUNDS = 5           -- 1 and 2 threads, interleaved; the best of each kept
local TARGET_DIRECT_VS_GET = 10   -- direct get at least 10x Redis GET lookups/s
local REDIS_APT = "apt-get install -y redis-server python3-redis"
local REDIS_PEERS = { "redis GET", "redis MGET x100" }

local function parse_store_args(args)
  return parse_int_args(args, { keys = STORE_DEFAULTS.keys, lookups = STORE_DEFAULTS.lookups })
end

-- The value of key user:i, as the peer stores it (there as JSON, here as a pickle).
local function user_value(i)
  return { tier = i % 3 == 0 and "gold" or "silver", score = i % 100 }
end

-- os.execute's success, whether LuaJIT returns a status (5.1) or true/"exit"/code.
local function run_ok(cmd)
  local a, _, code = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (code == nil or code == 0)
end

-- First line a command prints (stderr dropped), or nil.
local function read_line(cmd)
  local p = io.popen(cmd .. " 2>/dev/null", "r")
  if not p then return nil end
  local line = p:read("*l")
  p:close()
  return line
end

local function cpu_count()
  return tonumber(read_line("getconf _NPROCESSORS_ONLN") or "")
end

-- CPUs and the load average at the start: the machine may be shared, and its
-- neighbours' load is part of every figure.
local function machine()
  local f = io.open("/proc/loadavg", "r")
  local load = f and tonumber((f:read("*l") or ""):match("^(%S+)"))
  if f then f:close() end
  return { cpus = cpu_count(), load_average_1m = load }
end

local function machine_text(m)
  return string.format("machine: %s CPUs, load average %s at the start", tostring(m.cpus or "?"),
    m.load_average_1m and string.format("%.2f", m.load_average_1m) or "?")
end

local function engine_pid()
  local f = io.open("/proc/self/stat", "r")
  local pid = f and f:read("*l"):match("^(%d+)")
  if f then f:close() end
  return pid or tostring(os.time())
end

-- Lua on the engine's thread: N puts of new keys into the empty table, then random
-- gets (after a warm-up pass), every value checked through the sum of its scores.
local function measure_store_lua(store, opts)
  local n, lookups, now = opts.keys, opts.lookups, slither.now
  local keys = {}
  for i = 1, n do keys[i] = "user:" .. (i - 1) end
  local vals = {}
  for i = 1, n do vals[i] = user_value(i - 1) end
  collectgarbage("collect")
  local t0 = now()
  for i = 1, n do store:put(STORE_TABLE, keys[i], vals[i]) end
  local put_s = (now() - t0) / 1000
  if store:size(STORE_TABLE) ~= n then
    error(string.format("store: %d keys after %d puts", store:size(STORE_TABLE), n), 0)
  end
  local v = store:get(STORE_TABLE, keys[n])
  if type(v) ~= "table" or v.tier ~= vals[n].tier or v.score ~= vals[n].score then
    error("store: " .. keys[n] .. " reads back as " .. core.encode(v), 0)
  end

  math.randomseed(7)
  local idx, want = {}, 0
  for i = 1, lookups do
    local k = math.random(n)
    idx[i] = k
    want = want + (k - 1) % 100
  end
  local function pass(count)
    local sum, found = 0, 0
    for i = 1, count do
      local x = store:get(STORE_TABLE, keys[idx[i]])
      if x then sum, found = sum + x.score, found + 1 end
    end
    return sum, found
  end
  pass(math.min(lookups, 10000)) -- traces built, the segment's pages touched
  collectgarbage("collect")
  t0 = now()
  local sum, found = pass(lookups)
  local get_s = (now() - t0) / 1000
  if found ~= lookups or sum ~= want then
    error(string.format("store: %d of %d gets found a value, scores summing to %.0f, want %.0f",
      found, lookups, sum, want), 0)
  end
  return keys, {
    put = { ops_per_s = n / put_s, ops = n, wall_s = put_s, what = "new keys" },
    get = { ops_per_s = lookups / get_s, ops = lookups, wall_s = get_s, what = "random keys" },
  }
end

-- C host threads doing lock-free gets at once (store.h:read_threads): 1 and 2
-- threads interleaved THREAD_ROUNDS times, every get must find. The best of each:
-- on a shared machine a neighbour's burst lowers a run, nothing raises one.
local function measure_store_threads(store, keys)
  local one, two = {}, {}
  for r = 1, THREAD_ROUNDS do
    for _, nth in ipairs({ 1, 2 }) do
      local secs, found = store.h:read_threads(STORE_TABLE, keys, nth, THREAD_OPS)
      if found ~= nth * THREAD_OPS then
        error(string.format("read_threads: %d of %d gets found a value with %d threads", found,
          nth * THREAD_OPS, nth), 0)
      end
      local list = nth == 1 and one or two
      list[r] = nth * THREAD_OPS / secs
    end
  end
  local m1, m2 = math.max(unpack(one)), math.max(unpack(two))
  return { one_thread_ops_per_s = m1, two_threads_ops_per_s = m2, scaling = m2 / m1,
           ops_per_thread = THREAD_OPS, rounds = THREAD_ROUNDS, runs_one = one, runs_two = two }
end

-- A Python with the redis module: SLITHER_PYTHON, the workers' default, python3,
-- /usr/bin/python3. Returns the command and what it says of itself, or nil.
local function redis_python()
  local seen, tried = {}, {}
  local cands = { os.getenv("SLITHER_PYTHON") or "", core.paths().python, "python3",
                  "/usr/bin/python3" }
  for _, py in ipairs(cands) do
    if py ~= "" and not seen[py] then
      seen[py] = true
      tried[#tried + 1] = py
      local line = read_line(shell_quote(py) .. " -c " .. shell_quote(
        "import sys, redis; print(sys.version.split()[0], redis.__version__, sys.executable)"))
      local ver, rver, exe = (line or ""):match("^(%S+) (%S+) (.+)$")
      if ver then return { cmd = py, python = ver, redis = rver, executable = exe } end
    end
  end
  return nil, "no Python with the redis module (tried " .. table.concat(tried, ", ") .. ")"
end

local function start_store_pool(state, python)
  local pool, err = slither.pool.start{ name = STORE_POOL, size = 1, python = python,
                                        path = { examples_dir() } }
  if not pool then error("starting the pool failed: " .. tostring(err.message), 0) end
  state.pools[pool] = true
  return pool, pool:hello() or {}
end

local function call_one(pool, module, fn, job)
  local res, err = pool:call(module, fn, { job })
  if not res then
    error(string.format("%s.%s failed: %s: %s%s", module, fn, tostring(err.kind),
      tostring(err.message), err.traceback and ("\n" .. err.traceback) or ""), 0)
  end
  local r = res[1]
  if type(r) ~= "table" or r.values_ok ~= true then
    error(string.format("%s.%s: wrong values: %s", module, fn, core.encode(r)), 0)
  end
  return r
end

-- One Python worker: direct reads (get, get_many) in one call, then one view call
-- per lookup in another. The figures come from inside Python.
local function measure_store_python(state, opts, python)
  local pool, hello = start_store_pool(state, python)
  local job = { store = STORE_NAME, table = STORE_TABLE, keys = opts.keys,
                lookups = opts.lookups, group = STORE_GROUP, view = STORE_VIEW }
  local d = call_one(pool, "bench_store", "direct", job)
  local v = call_one(pool, "bench_store", "views", job)
  pool:stop()
  state.pools[pool] = nil
  return hello, {
    direct_get = { lookups_per_s = d.get_lookups_per_s, wall_s = d.get_wall_s,
                   lookups = d.lookups },
    direct_get_many = { lookups_per_s = d.get_many_lookups_per_s, wall_s = d.get_many_wall_s,
                        lookups = d.lookups, group = d.group },
    view = { lookups_per_s = v.lookups_per_s, wall_s = v.wall_s, lookups = v.lookups },
  }
end

-- SLITHER_SHARED_DIR names shared/ itself; else shared/ sits beside the repository.
local function shared_script(rel)
  local tried = {}
  local env = os.getenv("SLITHER_SHARED_DIR")
  if env and env ~= "" then tried[#tried + 1] = env .. "/" .. rel end
  local root = repo_root()
  local parent = root:match("^(.+)/[^/]+$") or (root .. "/..")
  tried[#tried + 1] = parent .. "/shared/" .. rel
  for _, path in ipairs(tried) do
    if file_exists(path) then return path end
  end
  return nil, "peer script not found (looked for " .. table.concat(tried, ", ") ..
    "; set SLITHER_SHARED_DIR to the shared/ directory)"
end

local function tail_lines(lines, n)
  local t = {}
  for i = math.max(1, #lines - n + 1), #lines do t[#t + 1] = lines[i] end
  return table.concat(t, "\n")
end

local function file_tail(path, n)
  local f = io.open(path, "r")
  if not f then return "" end
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  return tail_lines(lines, n)
end

local function process_gone(pid)
  if not run_ok("kill -0 " .. pid .. " 2>/dev/null") then return true end
  -- a zombie answers kill -0 until its parent (init, here) reaps it
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return true end
  local s = f:read("*l") or ""
  f:close()
  return s:match("%)%s+(%a)") == "Z"
end

-- Stop the Redis server we started: SIGTERM, up to 3 s, then SIGKILL. Safe to call
-- twice, and on a server that never came up.
local function stop_redis(srv)
  if not srv or srv.stopped then return end
  srv.stopped = true
  local pid = srv.pid
  local f = io.open(srv.pidfile, "r")
  if f then
    pid = tonumber(f:read("*l") or "") or pid
    f:close()
  end
  if pid then
    run_ok("kill " .. pid .. " 2>/dev/null")
    local t0 = slither.now()
    while not process_gone(pid) and slither.now() - t0 < 3000 do slither.sleep(20) end
    if not process_gone(pid) then run_ok("kill -9 " .. pid .. " 2>/dev/null") end
  end
  os.remove(srv.pidfile)
  os.remove(srv.logfile)
end

-- redis-server on 127.0.0.1 on a free port, without persistence, in the foreground
-- of a background shell job: in our process group, so a Ctrl-C ends it too. Its
-- pid (and pid file) go in state.redis before it can answer, so that every path
-- stops it.
local function start_redis(state, py)
  local port = tonumber(read_line(shell_quote(py.cmd) .. " -c " .. shell_quote(
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); " ..
    "print(s.getsockname()[1])")) or "")
  if not port then error("cannot find a free port for Redis", 0) end
  local base = string.format("/tmp/slither-bench-redis.%s.%d", engine_pid(), port)
  local srv = { port = port, pidfile = base .. ".pid", logfile = base .. ".log" }
  state.redis = srv
  local cmd = string.format("redis-server --port %d --bind 127.0.0.1 --save '' " ..
    "--appendonly no --daemonize no --pidfile %s > %s 2>&1 & echo $!", port,
    shell_quote(srv.pidfile), shell_quote(srv.logfile))
  srv.pid = tonumber(read_line(cmd) or "")
  if not srv.pid then error("cannot start redis-server", 0) end
  local ping = "import sys, time, redis\n" ..
    "r = redis.Redis(host='127.0.0.1', port=int(sys.argv[1]))\n" ..
    "for _ in range(200):\n" ..
    "    try:\n        r.ping(); sys.exit(0)\n" ..
    "    except redis.exceptions.ConnectionError:\n        time.sleep(0.025)\n" ..
    "sys.exit(1)\n"
  if not run_ok(shell_quote(py.cmd) .. " -c " .. shell_quote(ping) .. " " .. port ..
      " >/dev/null 2>&1") then
    error("redis-server on port " .. port .. " did not answer within 5 s:\n" ..
      file_tail(srv.logfile, 6), 0)
  end
  srv.version = (read_line("redis-server --version") or ""):match("v=(%S+)")
  return srv
end

-- The Redis peer: nil, reason when it cannot run here (skipped); raises when it
-- broke. The server is stopped before this returns, on every path.
local function measure_redis(state, opts, py, script)
  local srv = start_redis(state, py)
  local cmd = string.format("%s %s %d %d %d 2>&1", shell_quote(py.cmd), shell_quote(script),
    srv.port, opts.keys, opts.lookups)
  local p = io.popen(cmd, "r")
  if not p then error("cannot run " .. cmd, 0) end
  local peers, other = {}, {}
  for line in p:lines() do
    local rec = line:sub(1, 1) == "{" and core.decode(line) or nil
    if type(rec) == "table" and rec.peer then
      peers[rec.peer] = { lookups_per_s = rec.lookups_per_s, wall_s = rec.wall_s,
                          lookups = rec.lookups }
    else
      other[#other + 1] = line
    end
  end
  p:close()
  stop_redis(srv)
  state.redis = nil
  for _, name in ipairs(REDIS_PEERS) do
    if not peers[name] then
      error("the Redis peer gave no figure for " .. name .. ":\n" .. tail_lines(other, 6), 0)
    end
  end
  return peers, { port = srv.port, server = srv.version, script = script }
end

local function evaluate_store_targets(py, redis)
  local get = redis and redis["redis GET"]
  local mget = redis and redis["redis MGET x100"]
  local dg = py.direct_get.lookups_per_s
  local dm = py.direct_get_many.lookups_per_s
  local vw = py.view.lookups_per_s
  local t = {
    direct_get_10x_redis_get = { slither = dg, redis = get and get.lookups_per_s,
                                 limit_ratio = TARGET_DIRECT_VS_GET },
    direct_get_faster_than_mget = { slither = dg, redis = mget and mget.lookups_per_s,
                                    limit_ratio = 1 },
    direct_get_many_faster_than_mget = { slither = dm, redis = mget and mget.lookups_per_s,
                                         limit_ratio = 1 },
    view_no_slower_than_get = { slither = vw, redis = get and get.lookups_per_s,
                                limit_ratio = 1 },
  }
  for name, x in pairs(t) do
    if x.redis then
      x.ratio = x.slither / x.redis
      -- "faster than" is strict; "at least" and "no slower than" are not
      if name:match("faster") then x.met = x.ratio > x.limit_ratio
      else x.met = x.ratio >= x.limit_ratio end
    end
  end
  return t
end

local function fmt_ops(v)
  return fmt_int(v) .. " ops/s"
end

local STORE_TARGET_ROWS = {
  { "direct_get_10x_redis_get", "direct get at least 10x Redis GET" },
  { "direct_get_faster_than_mget", "direct get (one key at a time) faster than Redis MGET x100" },
  { "direct_get_many_faster_than_mget", "direct get_many x100 faster than Redis MGET x100" },
  { "view_no_slower_than_get", "a view call no slower than a Redis GET" },
}

local function print_store(r)
  print(string.format("slither bench store: %s keys \"user:<i>\" of {tier, score}, %s lookups",
    fmt_int(r.keys), fmt_int(r.lookups)))
  print(machine_text(r.machine))
  local py = r.python
  print(string.format("Python %s (%s)%s", tostring(py.version), tostring(py.executable),
    r.redis and ", for the worker and the Redis client" or ""))
  print("")
  print("Lua, on the engine's thread")
  for _, k in ipairs({ "put", "get" }) do
    local x = r.lua[k]
    print(string.format("  %-30s %20s %9.3f s   (%s)", "store:" .. k, fmt_ops(x.ops_per_s),
      x.wall_s, x.what))
  end
  local th = r.threads
  print(string.format("C host threads, lock-free gets (store.h:read_threads, %s gets each; "
    .. "best of %d)", fmt_int(th.ops_per_thread), th.rounds))
  print(string.format("  %-30s %20s", "1 thread", fmt_ops(th.one_thread_ops_per_s)))
  print(string.format("  %-30s %20s   in total, %.2fx of 1 thread", "2 threads at once",
    fmt_ops(th.two_threads_ops_per_s), th.scaling))
  print("")
  print(string.format("one Python worker, %s random lookups (timed inside Python)",
    fmt_int(r.lookups)))
  local get = r.redis and r.redis["redis GET"]
  local mget = r.redis and r.redis["redis MGET x100"]
  local function row(label, x)
    local rel = ""
    if get then
      rel = string.format("   %6.1fx Redis GET  %5.2fx Redis MGET", x.lookups_per_s /
        get.lookups_per_s, x.lookups_per_s / mget.lookups_per_s)
    end
    print(string.format("  %-30s %17s/s %9.3f s%s", label, fmt_int(x.lookups_per_s) ..
      " lookups", x.wall_s, rel))
  end
  row("direct get", r.slither.direct_get)
  row("direct get_many x" .. STORE_GROUP, r.slither.direct_get_many)
  row("view call per lookup", r.slither.view)
  if r.redis then
    for _, name in ipairs(REDIS_PEERS) do
      local x = r.redis[name]
      print(string.format("  %-30s %17s/s %9.3f s", name, fmt_int(x.lookups_per_s) ..
        " lookups", x.wall_s))
    end
    print(string.format("  (Redis %s on 127.0.0.1:%d, no persistence; client redis-py %s; "
      .. "%s)", tostring(r.redis_info.server), r.redis_info.port, tostring(py.redis),
      r.redis_info.script))
  elseif r.redis_skipped then
    print("  Redis baseline skipped: " .. r.redis_skipped)
    print("  to measure it: " .. REDIS_APT)
  elseif r.redis_error then
    print("  Redis baseline FAILED: " .. r.redis_error)
  end
  print("")
  print("targets")
  for _, row_ in ipairs(STORE_TARGET_ROWS) do
    local t = r.targets[row_[1]]
    local detail = t.ratio and string.format(" (%.2fx: %s vs %s lookups/s)", t.ratio,
      fmt_int(t.slither), fmt_int(t.redis)) or ""
    print(string.format("  %s: %s%s", row_[2], t.ratio and met_text(t.met) or
      "unknown (no Redis figure)", detail))
  end
end

local function json_store(r)
  local out = {}
  for k, v in pairs(r) do out[k] = v end
  out.benchmark = "store"
  if r.redis then
    out.ratios = {}
    for _, k in ipairs({ "direct_get", "direct_get_many", "view" }) do
      local x = r.slither[k].lookups_per_s
      out.ratios[k] = { ["redis GET"] = x / r.redis["redis GET"].lookups_per_s,
                        ["redis MGET x100"] = x / r.redis["redis MGET x100"].lookups_per_s }
    end
    out.ratios_mean = "lookups/s of slither over the Redis peer's: > 1 faster"
  end
  if r.redis_skipped then out.redis_install = REDIS_APT end
  out.versions = core.versions()
  print((core.encode(rounded(out))))
end

local function bench_store(opts)
  -- Every pool, store and Redis server started here is in state until stopped, so
  -- that an error anywhere still stops them before we return.
  local state = { pools = {}, stores = {} }
  local r = { keys = opts.keys, lookups = opts.lookups, machine = machine() }
  local ok, err = pcall(function()
    -- the peer's interpreter, found first: the worker runs on it too, so that the
    -- Python side of both is the same
    local py, why = redis_python()
    local script, serr = shared_script("bench/redis_reads.py")
    local server = run_ok("command -v redis-server >/dev/null 2>&1")
    if not server then r.redis_skipped = "redis-server is not installed"
    elseif not py then r.redis_skipped = why
    elseif not script then r.redis_skipped = serr end

    local def = slither.store.define{
      name = STORE_NAME,
      tables = { { name = STORE_TABLE, type = "set" } },
      views = { { name = STORE_VIEW, mode = "scalar", scope = "global",
                  handler = function(args, ctx) return ctx.store:get(STORE_TABLE, args.key) end } },
    }
    local store, serr2 = slither.store.start(def)
    if not store then
      error("starting the store failed: " .. tostring(serr2 and serr2.message), 0)
    end
    state.stores[store] = true
    local keys
    keys, r.lua = measure_store_lua(store, opts)
    r.threads = measure_store_threads(store, keys)
    local hello
    hello, r.slither = measure_store_python(state, opts,
      not r.redis_skipped and py.cmd or nil)
    r.python = { version = hello.python, implementation = hello.implementation,
                 executable = hello.executable, redis = py and py.redis }
    store:stop()
    state.stores[store] = nil
    -- the peer last, alone: our worker and store are gone by then
    if not r.redis_skipped then
      local rok, peers, info = pcall(measure_redis, state, opts, py, script)
      if rok then r.redis, r.redis_info = peers, info
      else r.redis_error = tostring(peers) end
    end
    r.targets = evaluate_store_targets(r.slither, r.redis)
  end)
  for p in pairs(state.pools) do p:stop() end
  for s in pairs(state.stores) do s:stop() end
  stop_redis(state.redis)
  if not ok then return nil, err end
  if opts.json then json_store(r) else print_store(r) end
  -- a Redis that is not installed is the machine's; one that broke is a failure
  if r.redis_error then return nil, "the Redis baseline failed" end
  return true
end

-- ---- slither bench pipe ----------------------------------------------------------
--
-- One pipe, prepare (Lua: x*3+1) -> python (bench_pipe.inc: x+1) -> route (even/odd
-- into two outputs), against itself taken apart: each stage alone as a one-stage
-- pipe over the very values it sees in the whole pipe, and the Lua stage's work
-- as a plain loop. The whole pipe can be no faster than its slowest stage; how
-- close it comes says how well the stages overlap.

local PIPE_N = 1000000
local PIPE_POOL = "bench_pipe"
local PIPE_MODULE = "bench_pipe"
local PIPE_FUNCTION = "inc"  -- the engine figures: as little Python as possible
local PIPE_WORK_US = 1       -- Python per item in the overlap runs (--work)
local PIPE_BATCH = 1024
local PIPE_WORKERS = 2
local PIPE_ROUNDS = 3          -- every run repeated, interleaved; the fastest of each kept
local PIPE_MEMORY_SCALE = 10   -- peak RSS at N and at 10 N
local TARGET_OVERLAP = 1.15    -- whole pipe over its slowest stage alone
local TARGET_PIPE_MEMORY = 1.2 -- peak RSS at 10 N over peak RSS at N
local PIPE_STAGES = { "prepare", "python", "route" }

local function parse_pipe_args(args)
  local opts, err = parse_opts(args, { json = true }, {
    n = int_arg("n"),
    -- whole microseconds of Python per item in the overlap runs
    work = function(v)
      local w = tonumber(v)
      if not w or w < 0 or w % 1 ~= 0 then
        return nil, "--work needs a whole number of microseconds >= 0"
      end
      return w
    end,
  })
  if not opts then return nil, err end
  opts.n = opts.n or PIPE_N
  opts.work = opts.work or PIPE_WORK_US
  return opts
end

local function pipe_prepare(item) return item.payload * 3 + 1 end
local function pipe_is_even(item) return item.payload % 2 == 0 end
local function pipe_rest() return true end

-- The whole pipe and each stage alone, built from the same pieces; fn is the
-- Python stage's function (PIPE_FUNCTION unless given).
local function make_pipes(batch, fn)
  local function add(p, stage)
    if stage == "prepare" then
      p:stage("prepare", "lua", { handler = pipe_prepare })
    elseif stage == "python" then
      p:stage("python", "python", { pool = PIPE_POOL, module = PIPE_MODULE,
                                    ["function"] = fn or PIPE_FUNCTION, batch_size = batch })
    else
      p:stage("route", "router", { routes = { { pipe_is_even, "even" }, { pipe_rest, "odd" } } })
      p:output("even")
      p:output("odd")
    end
  end
  local pipes = { whole = slither.pipe("bench_pipe", function(p)
    for _, s in ipairs(PIPE_STAGES) do add(p, s) end
  end) }
  for _, s in ipairs(PIPE_STAGES) do
    pipes[s] = slither.pipe("bench_pipe_" .. s, function(p) add(p, s) end)
  end
  return pipes
end

-- What each run is fed (x, as the pipe; each stage what it sees in the pipe) and
-- what its k-th result (k from 0) must be. Routed runs put x even in "even".
local PIPE_RUNS = {
  whole = { input = function(x) return x end, output = function(x) return 3 * x + 2 end,
            routed = true },
  prepare = { input = function(x) return x end, output = function(x) return 3 * x + 1 end },
  python = { input = function(x) return 3 * x + 1 end, output = function(x) return 3 * x + 2 end },
  route = { input = function(x) return 3 * x + 2 end, output = function(x) return 3 * x + 2 end,
            routed = true },
}

local function pipe_inputs(n)
  local inputs = {}
  for name, run in pairs(PIPE_RUNS) do
    local f, xs = run.input, {}
    for i = 1, n do xs[i] = f(i - 1) end
    inputs[name] = xs
  end
  return inputs
end

-- Every output item's value and place, counts per output and the report's counts;
-- raises on the first thing wrong.
local function check_pipe_run(kind, outputs, report, n)
  local run = PIPE_RUNS[kind]
  local f = run.output
  local function check_list(out, list, first, step, count)
    if #list ~= count then
      error(string.format("%s: %d items in output '%s', want %d", kind, #list, out, count), 0)
    end
    for k = 1, count do
      local x = first + (k - 1) * step
      local y = list[k].payload
      if y ~= f(x) then
        error(string.format("%s: item %d of output '%s' is %s, want %s (for x = %d)", kind, k,
          out, tostring(y), tostring(f(x)), x), 0)
      end
    end
  end
  local counts = {}
  if run.routed then
    check_list("even", outputs.even, 0, 2, math.floor((n + 1) / 2))
    check_list("odd", outputs.odd, 1, 2, math.floor(n / 2))
    check_list("default", outputs.default, 0, 1, 0)
    counts.even, counts.odd = #outputs.even, #outputs.odd
    local re, ro = report.routing["route->even"] or 0, report.routing["route->odd"] or 0
    if re ~= counts.even or ro ~= counts.odd then
      error(string.format("%s: the report routed %d even and %d odd, the outputs hold %d and %d",
        kind, re, ro, counts.even, counts.odd), 0)
    end
  else
    check_list("default", outputs.default, 0, 1, n)
    counts.default = #outputs.default
  end
  for name, c in pairs(report.stages) do
    if c["in"] ~= n or c.out ~= n or c.failed ~= 0 or c.skipped ~= 0 then
      error(string.format("%s: stage %s counted in %d, out %d, failed %d, skipped %d for %d items",
        kind, name, c["in"], c.out, c.failed, c.skipped, n), 0)
    end
  end
  return counts
end

local function timed_pipe(pipe, input, pool)
  collectgarbage("collect") -- the last run's garbage is not this one's to collect
  local c0, w0 = os.clock(), workers_cpu_s(pool)
  local t0 = slither.now()
  local outputs, report = slither.run_pipe(pipe, input)
  local wall = (slither.now() - t0) / 1000
  local engine_cpu, workers_cpu = os.clock() - c0, workers_cpu_s(pool) - w0
  if not outputs then
    error(string.format("run_pipe %s failed: %s: %s", pipe.name, tostring(report.kind),
      tostring(report.message)), 0)
  end
  return outputs, report, { wall_s = wall, items_per_s = #input / wall,
                            engine_cpu_s = engine_cpu, workers_cpu_s = workers_cpu }
end

-- The prepare stage's work without the pipe: a plain loop over the same list.
local function plain_loop(xs)
  collectgarbage("collect")
  local out, n = {}, #xs
  local c0, t0 = os.clock(), slither.now()
  for i = 1, n do out[i] = xs[i] * 3 + 1 end
  local wall = (slither.now() - t0) / 1000
  local cpu = os.clock() - c0
  for i = 1, n do
    if out[i] ~= 3 * (i - 1) + 1 then
      error(string.format("plain loop: item %d is %s", i, tostring(out[i])), 0)
    end
  end
  return { wall_s = wall, items_per_s = n / wall, engine_cpu_s = cpu, workers_cpu_s = 0 }
end

local PIPE_KINDS = { "whole", "prepare", "python", "route" }

local function measure_pipe(state, opts)
  local n = opts.n
  local pool, err = slither.pool.start{ name = PIPE_POOL, size = PIPE_WORKERS,
                                        path = { examples_dir() } }
  if not pool then error("starting the pool failed: " .. tostring(err.message), 0) end
  state.pools[pool] = true
  local hello = pool:hello()
  local codec = pool:stats().codec
  local pipes = make_pipes(PIPE_BATCH)

  -- warm-up: workers import the module, and every kind runs once at full size
  -- so that the Lua paths are traced as they are taken at that size (the first
  -- full run of the whole pipe is otherwise ~20% slower: it traces the paths of
  -- outputs and logs that grow past what a small run reaches)
  local inputs = pipe_inputs(n)
  for _, kind in ipairs(PIPE_KINDS) do
    local outputs, report = timed_pipe(pipes[kind], inputs[kind], pool)
    check_pipe_run(kind, outputs, report, n)
  end

  local runs, best, counts = {}, {}, {}
  local function keep(kind, fig)
    fig.ns_per_item = fig.wall_s / n * 1e9
    runs[kind] = runs[kind] or {}
    runs[kind][#runs[kind] + 1] = fig.wall_s * 1000 -- ms: a fast loop's seconds round to 0
    if not best[kind] or fig.wall_s < best[kind].wall_s then best[kind] = fig end
  end
  for _ = 1, PIPE_ROUNDS do
    for _, kind in ipairs(PIPE_KINDS) do
      local outputs, report, fig = timed_pipe(pipes[kind], inputs[kind], pool)
      counts[kind] = check_pipe_run(kind, outputs, report, n)
      outputs, report = nil, nil
      keep(kind, fig)
    end
    keep("plain_loop", plain_loop(inputs.prepare))
  end

  -- The overlap with Python doing work of its own: the whole pipe and the Python
  -- stage alone again (the Lua stages alone are as above).
  if opts.work > 0 then
    local wpipes = make_pipes(PIPE_BATCH, "work_" .. opts.work)
    local wkinds = { whole_work = "whole", python_work = "python" }
    -- a small warm-up: these runs take ~1 s at full size
    local wn = math.min(n, 4 * PIPE_WORKERS * PIPE_BATCH)
    local warm = pipe_inputs(wn)
    for _, as in pairs(wkinds) do
      local outputs, report = timed_pipe(wpipes[as], warm[as], pool)
      check_pipe_run(as, outputs, report, wn)
    end
    for _ = 1, PIPE_ROUNDS do
      for _, kind in ipairs({ "whole_work", "python_work" }) do
        local as = wkinds[kind]
        local outputs, report, fig = timed_pipe(wpipes[as], inputs[as], pool)
        check_pipe_run(as, outputs, report, n)
        outputs, report = nil, nil
        keep(kind, fig)
      end
    end
  end
  pool:stop()
  state.pools[pool] = nil

  -- whole over its slowest stage alone, where Python's stage is `python`
  local function overlap(whole, python, work_us)
    local alone = { prepare = best.prepare, python = best[python], route = best.route }
    local slowest, sum = nil, 0
    for _, s in ipairs(PIPE_STAGES) do
      if not slowest or alone[s].wall_s > alone[slowest].wall_s then slowest = s end
      sum = sum + alone[s].wall_s
    end
    local w = best[whole]
    local ratio = w.wall_s / alone[slowest].wall_s
    return { work_us = work_us, whole_s = w.wall_s, slowest_stage = slowest,
             slowest_stage_s = alone[slowest].wall_s, sum_of_stages_s = sum, ratio = ratio,
             engine_busy = w.engine_cpu_s / w.wall_s,
             limit_ratio = TARGET_OVERLAP, met = ratio <= TARGET_OVERLAP }
  end
  local stage_ns = best.prepare.wall_s / n * 1e9
  local loop_ns = best.plain_loop.wall_s / n * 1e9
  return {
    n = n, batch = PIPE_BATCH, workers = PIPE_WORKERS, codec = codec, rounds = PIPE_ROUNDS,
    hello = hello or {}, best = best, runs_ms = runs, counts = counts.whole,
    lua_stage = { pipe_ns_per_item = stage_ns, loop_ns_per_item = loop_ns,
                  added_ns_per_item = stage_ns - loop_ns, ratio = stage_ns / loop_ns },
    -- the target's figure: no Python work, every stage's work on the engine's thread
    overlap = overlap("whole", "python", 0),
    -- Python doing --work us per item (nil with --work 0)
    overlap_work = opts.work > 0 and overlap("whole_work", "python_work", opts.work) or nil,
  }
end

-- The child of the memory test (a fresh engine, see MEMORY_CHILD): streams N items
-- through the whole pipe with stream_pipe over an iterator, consumes and checks
-- each, and reports its own peak RSS.
local PIPE_CHILD = [[
if (os.getenv("SLITHER_LOG") or "") == "" then require("slither").core.set_log_level("warn") end
require("slither.bench")._pipe_stream_child(%d, %d, %d, %q)
]]

function M._pipe_stream_child(n, batch, workers, dir)
  local function status_kb(field)
    local f = assert(io.open("/proc/self/status", "r"))
    local s = f:read("*a")
    f:close()
    return tonumber(s:match(field .. ":%s*(%d+)"))
  end
  local pool, err = slither.pool.start{ name = PIPE_POOL, size = workers, path = { dir } }
  if not pool then error("starting the pool failed: " .. tostring(err.message), 0) end
  local ok, rec = pcall(function()
    local pipe = make_pipes(batch).whole
    local rss_before = status_kb("VmRSS")
    local x = -1
    local function source()
      if x >= n - 1 then return nil end
      x = x + 1
      return x
    end
    local counts, k = { even = 0, odd = 0 }, 0
    local t0 = slither.now()
    local stream = slither.stream_pipe(pipe, source)
    for out, item in stream.next do
      -- the k-th item out is x = k's: the pipe keeps input order across outputs
      local want_out = k % 2 == 0 and "even" or "odd"
      if out ~= want_out or item.payload ~= 3 * k + 2 then
        error(string.format("item %d came out in '%s' as %s, want '%s' and %d", k + 1,
          tostring(out), tostring(item.payload), want_out, 3 * k + 2), 0)
      end
      counts[out] = counts[out] + 1
      k = k + 1
    end
    local seconds = (slither.now() - t0) / 1000
    if k ~= n or counts.even ~= math.floor((n + 1) / 2) then
      error(string.format("%d items out (even %d, odd %d) for %d in", k, counts.even,
        counts.odd, n), 0)
    end
    return { n = n, batch = batch, workers = workers, vmhwm_kb = status_kb("VmHWM"),
             rss_before_kb = rss_before, items_per_s = n / seconds, wall_s = seconds,
             counts = counts }
  end)
  pool:stop()
  if not ok then error(rec, 0) end
  print(core.encode(rec))
end

local function measure_pipe_memory(n)
  local exe, err = self_exe()
  if not exe then error(err, 0) end
  local small = memory_median(exe, n, PIPE_BATCH, PIPE_WORKERS, PIPE_CHILD)
  local large = memory_median(exe, n * PIPE_MEMORY_SCALE, PIPE_BATCH, PIPE_WORKERS, PIPE_CHILD)
  local ratio = large.vmhwm_kb / small.vmhwm_kb
  return { binary = exe, runs = { small, large }, ratio = ratio,
           target = { limit_ratio = TARGET_PIPE_MEMORY, met = ratio <= TARGET_PIPE_MEMORY } }
end

local function fmt_ns(v)
  return string.format(v < 10 and "%.1f ns" or "%.0f ns", v)
end

local PIPE_LABELS = {
  whole = "whole pipe",
  prepare = "prepare (lua) alone",
  python = "python alone",
  route = "route (router) alone",
  plain_loop = "plain Lua loop (prepare's work)",
}

local function print_pipe(r)
  local hello = r.hello
  print(string.format("slither bench pipe: n %s; prepare (lua: x*3+1) -> python (%s.%s: x+1, "
    .. "batch %d) -> route (even/odd)", fmt_int(r.n), PIPE_MODULE, PIPE_FUNCTION, r.batch))
  print(string.format("%d workers, codec %s, Python %s (%s); fastest of %d runs each", r.workers,
    tostring(r.codec), tostring(hello.python), tostring(hello.executable), r.rounds))
  print(machine_text(r.machine))
  print("")
  print(string.format("  %-32s %18s %9s %12s %12s", "", "items/s", "wall", "engine CPU",
    "workers CPU"))
  for _, kind in ipairs({ "whole", "prepare", "python", "route", "plain_loop" }) do
    local b = r.best[kind]
    print(string.format("  %-32s %18s %8.3fs %11.3fs %11.3fs", PIPE_LABELS[kind],
      fmt_int(b.items_per_s), b.wall_s, b.engine_cpu_s, b.workers_cpu_s))
  end
  print("  (each stage alone is fed what it sees in the pipe; every run's outputs checked,")
  print(string.format("   item by item: even %s, odd %s, default 0)", fmt_int(r.counts.even),
    fmt_int(r.counts.odd)))
  print("")
  local ls = r.lua_stage
  print(string.format("Lua stage: %s/item in a one-stage pipe, %s/item as a plain loop;",
    fmt_ns(ls.pipe_ns_per_item), fmt_ns(ls.loop_ns_per_item)))
  print(string.format("  the pipe adds %s/item (%.0fx the loop)", fmt_ns(ls.added_ns_per_item),
    ls.ratio))
  local o, ow = r.overlap, r.overlap_work
  print("")
  print("overlap: the whole pipe against its slowest stage run alone (fastest runs)")
  print(string.format("  %-24s %9s %24s %8s %13s", "Python work per item", "whole",
    "slowest stage alone", "ratio", "engine busy"))
  for _, x in ipairs({ o, ow }) do
    print(string.format("  %-24s %8.3fs %15s %7.3fs %7.2fx %13s",
      x.work_us > 0 and string.format("%d us (work_%d)", x.work_us, x.work_us) or
        "none (x + 1)", x.whole_s, x.slowest_stage, x.slowest_stage_s, x.ratio,
      -- a shorter run's CPU figure is mostly the clock's grain
      x.whole_s >= 0.05 and string.format("%.0f%%", 100 * x.engine_busy) or "-"))
  end
  print("  With no Python work, the engine's thread is the limit: the Lua stage, the")
  print("  router and the Python stage's batching, encoding and decoding all run on it,")
  print("  taking turns, so the whole pipe can only come close to its slowest stage if")
  print("  the others cost the engine little per item (the stages alone add up to")
  print(string.format("  %.3f s; whole / sum = %.2f).", o.sum_of_stages_s,
    o.whole_s / o.sum_of_stages_s))
  if ow then
    print("  With Python doing work, the workers are the limit, and the other stages run")
    print("  while they compute.")
  end
  print("")
  local m = r.memory
  if m then
    print("peak RSS of the engine: slither.stream_pipe over an iterator, outputs consumed")
    print_memory_runs(m.binary, m.runs)
  else
    print("peak RSS: FAILED: " .. tostring(r.memory_error))
  end
  print("")
  print("targets")
  print(string.format("  whole pipe within %.2fx of its slowest stage alone, no Python work: %s (%.2fx)",
    o.limit_ratio, met_text(o.met), o.ratio))
  if ow then
    print(string.format("    (with %d us of Python per item: %.2fx)", ow.work_us, ow.ratio))
  end
  if m then
    print(string.format("  peak RSS at %s / at %s <= %.1f: %s (%.3f)", fmt_int(m.runs[2].n),
      fmt_int(m.runs[1].n), m.target.limit_ratio, met_text(m.target.met), m.ratio))
  else
    print(string.format("  peak RSS at 10 N / at N <= %.1f: %s", TARGET_PIPE_MEMORY,
      met_text(nil)))
  end
end

local function json_pipe(r)
  local out = {}
  for k, v in pairs(r) do out[k] = v end
  out.hello = nil
  out.benchmark = "pipe"
  out.python = { version = r.hello.python, implementation = r.hello.implementation,
                 executable = r.hello.executable }
  out.targets = {
    whole_within_slowest_stage = { ratio = r.overlap.ratio, limit_ratio = r.overlap.limit_ratio,
                                   met = r.overlap.met },
    peak_rss_10n_over_n = r.memory and { ratio = r.memory.ratio,
      limit_ratio = r.memory.target.limit_ratio, met = r.memory.target.met } or nil,
  }
  out.versions = core.versions()
  print((core.encode(rounded(out))))
end

local function bench_pipe(opts)
  local state = { pools = {} }
  local m0 = machine()
  local ok, r = pcall(measure_pipe, state, opts)
  for p in pairs(state.pools) do p:stop() end
  if not ok then return nil, r end
  r.machine = m0
  -- the memory children after our pool is gone: they have the CPUs to themselves
  local mok, m = pcall(measure_pipe_memory, opts.n)
  if mok then r.memory = m else r.memory_error = tostring(m) end
  if opts.json then json_pipe(r) else print_pipe(r) end
  if not mok then return nil, "the peak RSS runs failed" end
  return true
end

local SUBCOMMANDS = {
  pool = { parse = parse_args, run = bench_pool },
  dispatch = { parse = parse_dispatch_args, run = bench_dispatch },
  store = { parse = parse_store_args, run = bench_store },
  pipe = { parse = parse_pipe_args, run = bench_pipe },
}

function M.main(args)
  args = args or {}
  local sub = args[1]
  if sub == "-h" or sub == "--help" then
    io.write(USAGE)
    return 0
  end
  local cmd = SUBCOMMANDS[sub]
  if cmd and (args[2] == "-h" or args[2] == "--help") then
    io.write(USAGE)
    return 0
  end
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
