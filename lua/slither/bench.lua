-- slither.bench: `slither bench pool [--json] [--calls N] [--workers W]`.
--
-- Measures the worker pool and, in the same run and with the same interpreter,
-- Python's own process pools (scripts/bench/pool_peers.py), so that the ratios
-- compare figures taken on one machine under one load. It reports; a missed
-- target is a figure, not a failure: the exit code is non-zero only when
-- something broke.
local slither = require("slither")
local core = slither.core

local M = {}

local USAGE = [[
usage: slither bench pool [--json] [--calls N] [--workers W]

subcommands:
  pool      worker pool round trips, calls/s and start-up beside Python's pools
  dispatch  (not built yet)
  store     (not built yet)
  pipe      (not built yet)
]]

local LATER = { dispatch = true, store = true, pipe = true }

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
  if sub ~= "pool" then
    if sub then io.stderr:write("slither bench: unknown subcommand '" .. sub .. "'\n\n") end
    io.stderr:write(USAGE)
    return 2
  end
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  local opts, perr = parse_args(rest)
  if not opts then
    io.stderr:write("slither bench pool: " .. perr .. "\n\n" .. USAGE)
    return 2
  end
  -- Worker output lines would clutter the figures; an explicit SLITHER_LOG wins,
  -- for debugging the bench itself.
  if (os.getenv("SLITHER_LOG") or "") == "" then core.set_log_level("warn") end
  local ok, err = bench_pool(opts)
  if not ok then
    io.stderr:write("slither bench pool: " .. tostring(err) .. "\n")
    return 1
  end
  return 0
end

return M
