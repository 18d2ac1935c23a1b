-- slither.examples: `slither example [NAME... | --all] [options]`.
--
-- The examples live in <repo>/scripts/examples/*.lua, one module each:
--
--   return { name = "text_analysis", description = "...", needs = { "sklearn" },
--            run = function(opts) ... end }
--
-- run(opts) gets { scale = "small"|"full", workers = N, pypath = dir, python = the
-- interpreter that has the example's packages (nil: the default), out = print-like,
-- check = function(label, expected, observed [, tolerance | predicate]),
-- timing = function(label, ms), throughput = function(label, count, ms, unit),
-- progress = function(label, unit) -> { done = function() } }. Every claim an
-- example makes is a check, printed as
--
--   "  <label>: expected=E observed=O [OK|MISMATCH]"
--
-- and any MISMATCH (or an example that raises) makes the command exit 1. Usage
-- errors exit 2. A script also runs on its own (`slither scripts/examples/x.lua`):
-- it calls M.run_script(module, arg).
local slither = require("slither")
local core = slither.core
local ffi = require("ffi")

pcall(ffi.cdef, "int isatty(int fd);")

local M = {}

-- What a script's chunk receives as `...` when this module loads it (a direct
-- run receives the command-line arguments instead).
M.MODULE_ARG = "--slither-examples-module"

-- Import name -> Debian package.
local DEBIAN = {
  sklearn = "python3-sklearn",
  PIL = "python3-pil",
  numpy = "python3-numpy",
  scipy = "python3-scipy",
  pandas = "python3-pandas",
}

local USAGE = [[
usage: slither example                      list the examples and what they need
       slither example NAME [NAME...]       run examples
       slither example --all                run every example whose packages import

options:
  --scale small|full   data sizes: small (quick, for tests) or full (as in the
                       original; the default)
  --workers N          Python worker processes (default: the number of CPUs)
  --no-baseline        do not run the pure-Python baseline after an example
  -h, --help           this text

Every claim an example makes is checked and printed as
  <label>: expected=... observed=... [OK|MISMATCH]
Exit status: 0 when every check holds, 1 on a MISMATCH or a failed example,
2 on a usage error. Workers run on SLITHER_PYTHON (default python3); an example
that needs packages (sklearn, PIL) runs on the first of SLITHER_PYTHON, python3
and /usr/bin/python3 that imports them, and is skipped, with the apt-get line,
when none does.
]]

-- ---- small helpers ------------------------------------------------------------

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function stdout_is_tty()
  local ok, r = pcall(function() return ffi.C.isatty(1) end)
  return ok and r == 1
end

local function cpu_count()
  local p = io.popen("nproc 2>/dev/null")
  local n = p and tonumber((p:read("*l") or ""):match("%d+"))
  if p then p:close() end
  return n or 2
end

local function this_dir()
  local src = debug.getinfo(1, "S").source
  return src:sub(1, 1) == "@" and src:sub(2):match("(.*)/[^/]*$") or nil
end

-- Directories the examples may live in: beside the Lua modules, or in the source
-- tree this file belongs to. SLITHER_EXAMPLES_DIR wins.
local function examples_dir()
  local cands = {}
  local env = os.getenv("SLITHER_EXAMPLES_DIR")
  if env and env ~= "" then cands[#cands + 1] = env end
  local paths = core.paths()
  cands[#cands + 1] = paths.lua .. "/../scripts/examples"
  local here = this_dir()
  if here then cands[#cands + 1] = here .. "/../../scripts/examples" end
  for _, d in ipairs(cands) do
    if file_exists(d .. "/text_analysis.lua") then return d end
  end
  for _, d in ipairs(cands) do
    local p = io.popen('ls -1 "' .. d .. '" 2>/dev/null')
    local any = p and p:read("*l")
    if p then p:close() end
    if any then return d end
  end
  return nil, "no examples directory (looked in: " .. table.concat(cands, ", ") .. ")"
end

-- The Python modules the examples call.
local function python_dir(exdir)
  local cands = {}
  if exdir then cands[#cands + 1] = exdir .. "/../../pyworkers/examples" end
  cands[#cands + 1] = core.paths().worker .. "/examples"
  for _, d in ipairs(cands) do
    if file_exists(d .. "/text_analyzer.py") then return d end
  end
  return cands[#cands]
end
M.python_dir = python_dir

local function load_example(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local ok, ex = pcall(chunk, M.MODULE_ARG)
  if not ok then return nil, tostring(ex) end
  if type(ex) ~= "table" or type(ex.name) ~= "string" or type(ex.run) ~= "function" then
    return nil, path .. " does not return { name =, description =, needs =, run = }"
  end
  ex.needs = ex.needs or {}
  ex.description = ex.description or ""
  ex.path = path
  return ex
end

-- Every example of the directory, sorted by name.
local function load_examples(dir)
  local list, errors = {}, {}
  local p = io.popen('ls -1 "' .. dir .. '" 2>/dev/null')
  if p then
    for f in p:lines() do
      if f:match("^[%w_]+%.lua$") then
        local ex, err = load_example(dir .. "/" .. f)
        if ex then list[#list + 1] = ex else errors[#errors + 1] = err end
      end
    end
    p:close()
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list, errors
end

-- ---- helpers for the examples ---------------------------------------------------

-- A small deterministic generator (Park-Miller, exact in doubles), so the data do
-- not depend on math.random, which other code of the engine also draws from.
local Rng = {}
Rng.__index = Rng

function M.rng(seed)
  local s = math.floor(seed) % 2147483647
  if s <= 0 then s = s + 2147483646 end
  return setmetatable({ s = s }, Rng)
end

function Rng:next()
  self.s = (self.s * 48271) % 2147483647
  return self.s
end

-- An integer in [lo, hi].
function Rng:int(lo, hi)
  return lo + (self:next() % (hi - lo + 1))
end

-- A float in [0, 1).
function Rng:float()
  return (self:next() - 1) / 2147483646
end

function Rng:pick(list)
  return list[self:int(1, #list)]
end

function Rng:shuffle(list)
  for i = #list, 2, -1 do
    local j = self:int(1, i)
    list[i], list[j] = list[j], list[i]
  end
  return list
end

-- A normal draw (Box-Muller, two uniform draws per call), as the pure-Python
-- baselines' Rng.gauss draws it.
function Rng:gauss(mu, sigma)
  local u1 = math.max(self:float(), 1e-12)
  local u2 = self:float()
  return mu + sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
end

-- The worker pool an example uses: opts.workers processes with the example
-- modules on the path, on opts.python (the interpreter found to have the
-- example's packages) when there is one. extra: more pool options (size,
-- affinity...), which win.
function M.start_pool(opts, name, extra)
  local po = { name = name or "examples", size = opts.workers, path = { opts.pypath },
               startup_timeout_ms = 30000, python = opts.python }
  for k, v in pairs(extra or {}) do po[k] = v end
  local pool, err = slither.pool.start(po)
  if not pool then M.fail("cannot start the worker pool: " .. tostring(err and err.message)) end
  return pool
end

-- Stop an example with a message and no traceback (an operational failure, such
-- as an interpreter that cannot start, rather than a bug).
local Fail = {}
function M.fail(message)
  error(setmetatable({ message = message }, Fail), 0)
end

local function error_text(e)
  if getmetatable(e) == Fail then return e.message end
  return debug.traceback(tostring(e), 2)
end

-- ---- formatting -----------------------------------------------------------------

local function fmt_value(v)
  local t = type(v)
  if t == "number" then
    if v ~= v then return "nan" end
    if v % 1 == 0 and math.abs(v) < 1e15 then return string.format("%d", v) end
    return string.format("%.10g", v)
  elseif t == "boolean" then
    return v and "yes" or "no"
  elseif t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    if #v > 0 and #keys == #v then
      for i = 1, #v do parts[i] = fmt_value(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. ":" .. fmt_value(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif v == nil then
    return "nil"
  end
  return tostring(v)
end
M.fmt_value = fmt_value

local function fmt_ms(ms)
  if ms < 1000 then return string.format("%.0fms", ms) end
  if ms < 60000 then return string.format("%.2fs", ms / 1000) end
  return string.format("%dm %ds", math.floor(ms / 60000), math.floor(ms / 1000) % 60)
end
M.fmt_ms = fmt_ms

local function same(expected, observed, how)
  if type(how) == "function" then return how(expected, observed) and true or false end
  if type(how) == "number" and type(expected) == "number" and type(observed) == "number" then
    return math.abs(expected - observed) <= how
  end
  return fmt_value(expected) == fmt_value(observed)
end

-- ---- progress lines -------------------------------------------------------------

-- One line per stage, rewritten in place with \r while the stage runs, from the
-- pool's call events (items done, items/s, calls in flight). Nothing at all when
-- stdout is not a terminal.
local open_progress = {} -- lines not yet done: closed when their example ends

local function close_progress()
  for p in pairs(open_progress) do p.done() end
end

local function progress_factory(enabled)
  if not enabled then
    return function() return { done = function() end } end
  end
  return function(label, unit)
    unit = unit or "items"
    local st = { started = 0, finished = 0, items = 0, t0 = slither.now(), last = 0, width = 0 }
    local function paint(force)
      local now = slither.now()
      if not force and now - st.last < 100 then return end
      st.last = now
      local secs = math.max((now - st.t0) / 1000, 0.001)
      local line = string.format("  %s: %d %s  %.0f %s/s  %d in flight", label, st.items, unit,
        st.items / secs, unit, st.started - st.finished)
      io.stdout:write("\r" .. line .. string.rep(" ", math.max(0, st.width - #line)))
      io.stdout:flush()
      st.width = #line
    end
    local id = slither.telemetry.attach("slither.pool.call", function(name, m)
      if name == "slither.pool.call.start" then
        st.started = st.started + 1
      else
        st.finished = st.finished + 1
        if name == "slither.pool.call.stop" then st.items = st.items + (m.items or 0) end
      end
      paint(false)
    end)
    paint(true)
    local handle = {}
    handle.done = function()
      if not open_progress[handle] then return end
      open_progress[handle] = nil
      slither.telemetry.detach(id)
      io.stdout:write("\r" .. string.rep(" ", st.width) .. "\r")
      io.stdout:flush()
    end
    open_progress[handle] = true
    return handle
  end
end

-- ---- running one example --------------------------------------------------------

local function gil_text(h)
  local gil = h.gil_enabled == false and "GIL disabled" or "GIL enabled"
  return gil .. (h.free_threaded and ", free-threaded build" or "")
end

local function python_line(h)
  local exe = type(h.executable) == "string" and h.executable ~= "" and h.executable
    or "(the worker did not say)"
  return string.format("%s, Python %s (%s), %s", exe, tostring(h.python),
    tostring(h.implementation), gil_text(h))
end

-- The pure-Python way of doing the same work (pyworkers/examples/
-- pure_python_baselines.py): an unsafe threaded version and a safe one, run on a
-- free-threaded CPython when one is at hand, so the races can really happen.
-- Its lines are shown behind "  | ": a MISMATCH there is the unsafe version
-- losing updates, the race the example exists to avoid, not a failure of Slither.
local FT_PYTHON = (os.getenv("HOME") or "") .. "/.local/slither-python3.13t/bin/python3.13t"

function M.baseline_python()
  local env = os.getenv("SLITHER_BASELINE_PYTHON")
  if env and env ~= "" then return env, "SLITHER_BASELINE_PYTHON" end
  if file_exists(FT_PYTHON) then return FT_PYTHON, "built by scripts/build-free-threaded-python.sh" end
  return os.getenv("SLITHER_PYTHON") or "python3", "no free-threaded build found"
end

function M.baseline(ex, cfg, out)
  local script = python_dir(examples_dir()) .. "/pure_python_baselines.py"
  if not file_exists(script) then
    out("  baseline: " .. script .. " is missing")
    return
  end
  local py, why = M.baseline_python()
  if cfg.python and why ~= "SLITHER_BASELINE_PYTHON" then
    -- An example that needs packages: the baseline runs where they import, the
    -- free-threaded build when it has them, else the example's interpreter.
    local imports = {}
    for _, n in ipairs(ex.needs) do imports[#imports + 1] = "import " .. n end
    local ok = why ~= "no free-threaded build found" and
      os.execute(string.format("%q -c %q >/dev/null 2>&1", py, table.concat(imports, "; ")))
    if ok ~= true and ok ~= 0 then
      if why ~= "no free-threaded build found" then
        why = string.format("the free-threaded build lacks %s; the example's interpreter",
          table.concat(ex.needs, ", "))
      end
      py = cfg.python
    end
  end
  local cmd = string.format("%q %q %s --mode both --scale %s --threads %d 2>&1", py, script,
    ex.name, cfg.scale, math.max(2, (cfg.workers or 2) * 2))
  out(string.format("--- pure-Python baseline (%s; %s) ---", py, why))
  if why == "no free-threaded build found" then
    out("  (scripts/build-free-threaded-python.sh builds one, on request; under a GIL the" ..
      " unsafe races rarely show)")
  end
  local p = io.popen(cmd)
  if not p then
    out("  baseline: cannot run " .. py)
    return
  end
  for line in p:lines() do out("  | " .. line) end
  local ok, _, code = p:close()
  if not ok and code ~= 0 then out("  baseline: exited with " .. tostring(code)) end
end

-- Run ex with cfg = { scale, workers, pypath, no_baseline, progress, python,
-- python_note }. Returns ok (no mismatch, no error) and the counts.
local function run_one(ex, cfg)
  local out = print
  local res = { ok = 0, mismatch = 0, mismatches = {} }
  out("")
  out(string.format("=== %s: %s (scale %s, %d workers) ===", ex.name, ex.description,
    cfg.scale, cfg.workers))
  -- The interpreter the example's workers run on, from their hello.
  local hellos, shown = {}, false
  local tid = slither.telemetry.attach("slither.pool.worker.ready", function(_, _, md)
    local h = md.hello or {}
    hellos[#hellos + 1] = h
    if not shown then
      shown = true
      out("  python: " .. python_line(h))
    end
  end)
  local pools_before, stores_before = {}, {}
  for _, p in ipairs(slither.pool.all()) do pools_before[p] = true end
  for _, s in ipairs(slither.store.all()) do stores_before[s] = true end

  if cfg.python_note then out("  interpreter: " .. cfg.python_note) end
  local opts = {
    scale = cfg.scale,
    workers = cfg.workers,
    pypath = cfg.pypath,
    python = cfg.python,
    out = out,
    progress = cfg.progress,
  }
  function opts.check(label, expected, observed, how)
    local ok = same(expected, observed, how)
    if ok then res.ok = res.ok + 1 else
      res.mismatch = res.mismatch + 1
      res.mismatches[#res.mismatches + 1] = label
    end
    out(string.format("  %s: expected=%s observed=%s [%s]", label, fmt_value(expected),
      fmt_value(observed), ok and "OK" or "MISMATCH"))
    return ok
  end
  function opts.timing(label, ms)
    out(string.format("  %s: %s", label, fmt_ms(ms)))
  end
  function opts.throughput(label, count, ms, unit)
    local secs = math.max(ms / 1000, 0.001)
    out(string.format("  %s: %.1f %s/s (%d %s in %.2fs)", label, count / secs, unit or "items",
      count, unit or "items", ms / 1000))
  end

  local t0 = slither.now()
  local ok, err = xpcall(function() return ex.run(opts) end, error_text)
  local ms = slither.now() - t0
  close_progress()
  slither.telemetry.detach(tid)
  -- leave nothing running for the next example
  for _, p in ipairs(slither.pool.all()) do
    if not pools_before[p] then pcall(p.stop, p, { grace_ms = 2000 }) end
  end
  for _, s in ipairs(slither.store.all()) do
    if not stores_before[s] then pcall(s.stop, s) end
  end
  if not ok then
    out("  example failed: " .. tostring(err))
    res.failed = true
  end
  local exes = {}
  for _, h in ipairs(hellos) do
    exes[tostring(h.implementation) .. " " .. tostring(h.python) .. " " ..
      tostring(h.gil_enabled)] = true
  end
  local n = 0
  for _ in pairs(exes) do n = n + 1 end
  if n > 1 then out("  note: the workers ran on more than one interpreter") end
  if not cfg.no_baseline then M.baseline(ex, cfg, out) end
  out(string.format("--- %s: %d checks OK, %d MISMATCH%s, %s ---", ex.name, res.ok, res.mismatch,
    res.failed and ", FAILED" or "", fmt_ms(ms)))
  if res.mismatch > 0 then
    out("  mismatched: " .. table.concat(res.mismatches, "; "))
  end
  res.passed = not res.failed and res.mismatch == 0
  return res
end

-- ---- which interpreter ------------------------------------------------------------

-- Debian's python3-* packages install for /usr/bin/python3 only, which is not
-- always the first python3 on PATH (a pyenv or a venv may come first). An example
-- that needs packages runs on the first of these interpreters that imports them
-- all; an example that needs none runs on the default one (the first).
function M.python_candidates()
  local list, seen = {}, {}
  for _, p in ipairs({ os.getenv("SLITHER_PYTHON") or "", "python3", "/usr/bin/python3" }) do
    if p ~= "" and not seen[p] then
      seen[p] = true
      list[#list + 1] = p
    end
  end
  return list
end

-- Which of names import in interpreter python: name -> version | false, and the
-- probe worker's hello. A 1-worker pool asks the real interpreter.
local function probe(names, pypath, python)
  local pool, err = slither.pool.start{ name = "examples-probe", size = 1, path = { pypath },
                                        startup_timeout_ms = 30000, python = python }
  if not pool then return nil, err end
  local hello = pool:hello()
  local found = {}
  if #names > 0 then
    local vers, cerr = pool:call("doctor_probe", "versions", names, { timeout_ms = 120000 })
    if not vers then
      pool:stop()
      return nil, cerr
    end
    for i, n in ipairs(names) do found[n] = type(vers[i]) == "string" and vers[i] or false end
  end
  pool:stop()
  return found, hello or {}
end

-- The interpreter search over M.python_candidates(), for the packages `names`:
-- each candidate is probed once, and only when an earlier one lacks something.
-- An entry is { python =, index =, found = name -> version | false, hello = } or,
-- for an interpreter that did not start, { python =, index =, err = }.
local function interpreter_search(names, pypath)
  local S = { tried = {} }
  local cands = M.python_candidates()
  local function at(i)
    local t = S.tried[i]
    if not t then
      local f, h = probe(names, pypath, cands[i])
      t = { python = cands[i], index = i }
      if f then t.found, t.hello = f, h else t.err = h end
      S.tried[i] = t
    end
    return t
  end
  S.at = at
  S.count = #cands
  -- The first candidate that imports every one of needs, or nil.
  function S.pick(needs)
    for i = 1, #cands do
      local t = at(i)
      local all = t.found ~= nil
      for _, n in ipairs(needs) do
        if all and not t.found[n] then all = false end
      end
      if all then return t end
    end
    return nil
  end
  -- Every candidate probed so far, in order.
  function S.probed()
    local l = {}
    for i = 1, #cands do if S.tried[i] then l[#l + 1] = S.tried[i] end end
    return l
  end
  return S
end

local function exe_of(t)
  local e = t.hello and t.hello.executable
  if type(e) == "string" and e ~= "" and e ~= t.python then return t.python .. " = " .. e end
  return t.python
end

-- What the candidates probed so far say about needs: "python3 (= /x/python3,
-- Python 3.11.7): sklearn missing; /usr/bin/python3 (...): sklearn 1.2.1".
local function looked_in(S, needs)
  local parts = {}
  for _, t in ipairs(S.probed()) do
    if t.err then
      parts[#parts + 1] = t.python .. ": cannot start (" .. tostring(t.err.message or t.err) .. ")"
    else
      local what = {}
      for _, n in ipairs(needs) do
        what[#what + 1] = t.found[n] and (n .. " " .. t.found[n]) or (n .. " missing")
      end
      parts[#parts + 1] = string.format("%s (Python %s): %s", exe_of(t),
        tostring(t.hello.python), table.concat(what, ", "))
    end
  end
  return table.concat(parts, "; ")
end

-- Why an example runs on the interpreter it runs on.
local function interpreter_note(S, t, needs)
  local have = {}
  for _, n in ipairs(needs) do have[#have + 1] = n .. " " .. t.found[n] end
  local text = string.format("%s (has %s", exe_of(t), table.concat(have, ", "))
  if t.index > 1 then
    local before = {}
    for i = 1, t.index - 1 do
      local o = S.tried[i]
      local lacks = {}
      if o.err then
        lacks[1] = "does not start"
      else
        for _, n in ipairs(needs) do if not o.found[n] then lacks[#lacks + 1] = n end end
        lacks = { "lacks " .. table.concat(lacks, ", ") }
      end
      before[#before + 1] = o.python .. " " .. lacks[1]
    end
    text = text .. "; " .. table.concat(before, "; ")
  end
  return text .. ")"
end

-- The needs no probed interpreter has (or, when each is somewhere but no one
-- interpreter has them all, those the default lacks).
local function missing_of(ex, S)
  local miss = {}
  for _, n in ipairs(ex.needs) do
    local anywhere = false
    for _, t in ipairs(S.probed()) do
      if t.found and t.found[n] then anywhere = true end
    end
    if not anywhere then miss[#miss + 1] = n end
  end
  if #miss == 0 then
    local d = S.tried[1]
    for _, n in ipairs(ex.needs) do
      if not (d and d.found and d.found[n]) then miss[#miss + 1] = n end
    end
  end
  return miss
end

local function apt_line(miss)
  local debs = {}
  for _, n in ipairs(miss) do debs[#debs + 1] = DEBIAN[n] or ("python3-" .. n:lower()) end
  return "apt-get install -y " .. table.concat(debs, " ")
end

-- What an example needs, as the list shows it: versions (and the interpreter,
-- when it is not the default), or what is missing with its apt-get line.
local function needs_text(ex, S)
  if #ex.needs == 0 then return "standard library only" end
  if not S then return table.concat(ex.needs, ", ") end
  local t = S.pick(ex.needs)
  if t then
    local parts = {}
    for _, n in ipairs(ex.needs) do parts[#parts + 1] = n .. " " .. t.found[n] end
    local text = table.concat(parts, ", ")
    if t.index > 1 then text = text .. " (on " .. t.python .. ")" end
    return text
  end
  local miss = missing_of(ex, S)
  local parts = {}
  for _, n in ipairs(ex.needs) do
    local gone = false
    for _, m in ipairs(miss) do if m == n then gone = true end end
    parts[#parts + 1] = gone and (n .. " (missing: " .. apt_line({ n }) .. ")") or n
  end
  return table.concat(parts, ", ")
end

-- The interpreter for ex: cfg fields python and python_note, or nil and the
-- lines that say why it is skipped.
local function choose_python(ex, S)
  if #ex.needs == 0 then return {} end
  local t = S.pick(ex.needs)
  if t then return { python = t.python, python_note = interpreter_note(S, t, ex.needs) } end
  local miss = missing_of(ex, S)
  return nil, {
    string.format("skipped: needs %s (%s)", table.concat(miss, ", "), apt_line(miss)),
    "looked in: " .. looked_in(S, ex.needs),
  }, miss
end

-- ---- arguments ------------------------------------------------------------------

local function parse_args(args)
  local o = { names = {}, scale = "full", workers = nil, no_baseline = false }
  local i = 1
  local function value(name, a)
    local v = a:match("^%-%-" .. name .. "=(.*)$")
    if v then return v, 1 end
    v = args[i + 1]
    if v == nil or v == "" then return nil, 0 end
    return v, 2
  end
  while i <= #args do
    local a = args[i]
    if a == "--all" then
      o.all = true
      i = i + 1
    elseif a == "--no-baseline" then
      o.no_baseline = true
      i = i + 1
    elseif a == "-h" or a == "--help" then
      o.help = true
      i = i + 1
    elseif a == "--scale" or a:match("^%-%-scale=") then
      local v, step = value("scale", a)
      if not v then return nil, "--scale needs a value: small or full" end
      if v ~= "small" and v ~= "full" then
        return nil, "--scale must be small or full, got '" .. v .. "'"
      end
      o.scale = v
      i = i + step
    elseif a == "--workers" or a:match("^%-%-workers=") then
      local v, step = value("workers", a)
      local n = tonumber(v)
      if not v then return nil, "--workers needs a number" end
      if not n or n < 1 or n % 1 ~= 0 or n > 1024 then
        return nil, "--workers must be an integer from 1 to 1024, got '" .. v .. "'"
      end
      o.workers = n
      i = i + step
    elseif a:sub(1, 1) == "-" then
      return nil, "unknown option '" .. a .. "'"
    else
      o.names[#o.names + 1] = a
      i = i + 1
    end
  end
  if o.all and #o.names > 0 then
    return nil, "cannot combine --all with example names (" .. table.concat(o.names, ", ") .. ")"
  end
  return o
end

local function usage_error(msg, list)
  io.stderr:write("slither example: " .. msg .. "\n")
  if list then
    local names = {}
    for _, ex in ipairs(list) do names[#names + 1] = ex.name end
    io.stderr:write("available examples: " .. table.concat(names, ", ") .. "\n")
  end
  io.stderr:write("(slither example --help for the usage)\n")
  return 2
end

local function quiet_logs()
  -- Worker output goes to the log; it would break up the report. An explicit
  -- SLITHER_LOG still wins.
  if (os.getenv("SLITHER_LOG") or "") == "" then core.set_log_level("error") end
end

local function default_workers()
  return math.max(2, cpu_count())
end

-- ---- the command ----------------------------------------------------------------

local function needed_names(list)
  local names, seen = {}, {}
  for _, ex in ipairs(list) do
    for _, n in ipairs(ex.needs) do
      if not seen[n] then seen[n] = true; names[#names + 1] = n end
    end
  end
  return names
end

local function list_examples(list, pypath)
  local S = interpreter_search(needed_names(list), pypath)
  local default = S.at(1)
  print("Slither examples:")
  print("")
  for _, ex in ipairs(list) do
    print(string.format("  %-15s %s", ex.name, ex.description))
    print(string.format("  %-15s needs: %s", "", needs_text(ex, default.found and S)))
  end
  print("")
  if default.found then
    print("python: " .. python_line(default.hello))
  else
    print("python: cannot start a worker: " .. tostring(default.err and default.err.message
      or default.err))
  end
  if S.count > 1 then
    print("(an example that needs packages runs on the first of " ..
      table.concat(M.python_candidates(), ", ") .. " that has them)")
  end
  print("")
  print("run one: slither example NAME [--scale small|full] [--workers N] [--no-baseline]")
  print("run all: slither example --all")
  return 0
end

function M.main(args)
  args = args or {}
  local o, perr = parse_args(args)
  if not o then return usage_error(perr) end
  if o.help then
    io.write(USAGE)
    return 0
  end
  quiet_logs()
  local dir, derr = examples_dir()
  if not dir then
    io.stderr:write("slither example: " .. derr .. "\n")
    return 1
  end
  local list, load_errors = load_examples(dir)
  for _, e in ipairs(load_errors) do io.stderr:write("slither example: cannot load " .. e .. "\n") end
  local by_name = {}
  for _, ex in ipairs(list) do by_name[ex.name] = ex end
  local pypath = python_dir(dir)

  if not o.all and #o.names == 0 then return list_examples(list, pypath) end

  local selected = {}
  if o.all then
    selected = list
  else
    local unknown = {}
    for _, n in ipairs(o.names) do
      if by_name[n] then selected[#selected + 1] = by_name[n] else unknown[#unknown + 1] = n end
    end
    if #unknown > 0 then
      return usage_error((#unknown == 1 and "unknown example '" or "unknown examples '") ..
        table.concat(unknown, "', '") .. "'", list)
    end
  end

  local cfg = { scale = o.scale, workers = o.workers or default_workers(), pypath = pypath,
                no_baseline = o.no_baseline, progress = progress_factory(stdout_is_tty()) }

  -- Which interpreter has the packages each selected example needs, asked of
  -- the real interpreters (the default first).
  local need_names = needed_names(selected)
  local S
  if #need_names > 0 then
    S = interpreter_search(need_names, pypath)
    local any = false
    for i = 1, S.count do
      if not any and S.at(i).found then any = true end
    end
    if not any then
      print("cannot start a Python worker to check packages: " ..
        tostring(S.at(1).err and S.at(1).err.message))
      return 1
    end
  end

  local t0 = slither.now()
  local ran, passed, skipped = 0, 0, {}
  local failed_names = {}
  for _, ex in ipairs(selected) do
    local py, why, miss = choose_python(ex, S)
    if not py then
      skipped[#skipped + 1] = { ex = ex, miss = miss }
      print("")
      print(string.format("=== %s: %s ===", ex.name, ex.description))
      for _, l in ipairs(why) do print("  " .. l) end
    else
      local c = {}
      for k, v in pairs(cfg) do c[k] = v end
      c.python, c.python_note = py.python, py.python_note
      local r = run_one(ex, c)
      ran = ran + 1
      if r.passed then passed = passed + 1 else failed_names[#failed_names + 1] = ex.name end
    end
  end
  print("")
  print(string.format("=== examples: %d run, %d passed, %d failed, %d skipped (%s) ===", ran, passed,
    #failed_names, #skipped, fmt_ms(slither.now() - t0)))
  if #failed_names > 0 then print("  failed: " .. table.concat(failed_names, ", ")) end
  for _, s in ipairs(skipped) do
    print(string.format("  skipped %s: %s", s.ex.name, apt_line(s.miss)))
  end
  if #failed_names > 0 then return 1 end
  -- an example named on the command line that cannot run is a failure
  if not o.all and #skipped > 0 then return 1 end
  return 0
end

-- A script run on its own: `slither scripts/examples/NAME.lua [--scale S]
-- [--workers N] [--no-baseline]` (small scale unless told). Exits 1 on a
-- mismatch, 2 on a usage error.
function M.run_script(ex, args)
  local list = {}
  for i = 1, #(args or {}) do list[i] = args[i] end
  local o, perr = parse_args(list)
  local rc
  if not o then
    rc = usage_error(perr)
  elseif #o.names > 0 or o.all then
    rc = usage_error("a script runs its own example only; use `slither example` for others")
  elseif o.help then
    io.write("usage: slither " .. tostring(ex.path or (ex.name .. ".lua")) ..
      " [--scale small|full] [--workers N] [--no-baseline]\n")
    rc = 0
  else
    quiet_logs()
    ex.needs = ex.needs or {}
    ex.description = ex.description or ""
    local scale = "small"
    for _, a in ipairs(list) do if a:match("^%-%-scale") then scale = o.scale end end
    local here = arg and arg[0] and arg[0]:match("(.*)/[^/]*$")
    local pypath = python_dir(here)
    local py, why = choose_python(ex, #ex.needs > 0 and interpreter_search(ex.needs, pypath))
    if not py then
      print(string.format("=== %s: %s ===", ex.name, ex.description))
      for _, l in ipairs(why) do print("  " .. l) end
      rc = 1
    else
      local r = run_one(ex, { scale = scale, workers = o.workers or default_workers(),
                              pypath = pypath, no_baseline = o.no_baseline,
                              python = py.python, python_note = py.python_note,
                              progress = progress_factory(stdout_is_tty()) })
      rc = r.passed and 0 or 1
    end
  end
  if rc ~= 0 then
    io.stdout:flush()
    slither.shutdown(2000)
    os.exit(rc)
  end
  return rc
end

return M
