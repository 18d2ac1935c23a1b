-- slither.doctor: `slither doctor [--python PATH]`: can this machine run pipelines?
--
-- Everything about Python is asked of a started worker, not guessed from the
-- shell: the interpreter that runs pipelines is whatever the engine spawns, and
-- `python3` on PATH may be a pyenv shim, a venv or Debian's, each with its own
-- packages.
local slither = require("slither")
local core = slither.core

local M = {}

local USAGE = [[
usage: slither doctor [--python PATH]

Checks the Python interpreter the workers run on (SLITHER_PYTHON, else python3;
--python PATH checks another one) and the engine. Exit code 0 when ready.
]]

-- Optional packages the examples use: import name, what to show, Debian package.
local PACKAGES = {
  { name = "numpy", label = "numpy", deb = "python3-numpy" },
  { name = "PIL", label = "PIL (Pillow)", deb = "python3-pil" },
  { name = "sklearn", label = "sklearn (scikit-learn)", deb = "python3-sklearn" },
}

-- Importing scikit-learn can take seconds on a cold disk; a hung import should
-- still end the check.
local PROBE_TIMEOUT_MS = 120000

local function parse_args(args)
  local opts = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--python" then
      opts.python = args[i + 1]
      if not opts.python or opts.python == "" then return nil, "--python needs a path" end
      i = i + 2
    elseif a:match("^%-%-python=") then
      opts.python = a:sub(#"--python=" + 1)
      if opts.python == "" then return nil, "--python needs a path" end
      i = i + 1
    elseif a == "-h" or a == "--help" then
      opts.help = true
      i = i + 1
    else
      return nil, "unknown argument '" .. a .. "'"
    end
  end
  return opts
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function row(label, value)
  print(string.format("  %-22s %s", label, value))
end

local function yesno(b)
  return b and "yes" or "no"
end

-- A start error carries the worker's stderr after its first line. For one line,
-- keep the first line, then of a Python traceback its last line (the exception),
-- of anything else its first and last lines (a shim's or the loader's complaint).
local function one_line(msg)
  local lines, traceback = {}, false
  for l in tostring(msg or ""):gmatch("[^\n]+") do
    l = l:gsub("^%s+", ""):gsub("%s+$", "")
    if l:match("^Traceback %(most recent call last%)") then traceback = true end
    if l ~= "" then lines[#lines + 1] = l end
  end
  if #lines == 0 then return "unknown error" end
  if #lines == 1 then return lines[1] end
  if traceback or #lines == 2 then return lines[1] .. " " .. lines[#lines] end
  return lines[1] .. " " .. lines[2] .. " ... " .. lines[#lines]
end

local function start_probe_pool(python)
  local t0 = slither.now()
  local pool, err = slither.pool.start{
    name = "doctor", size = 1, python = python,
    path = { core.paths().worker .. "/examples" },
  }
  local ms = slither.now() - t0
  return pool, err, pool and pool:hello(), ms
end

function M.main(args)
  local opts, perr = parse_args(args or {})
  if not opts then
    io.stderr:write("slither doctor: " .. perr .. "\n\n" .. USAGE)
    return 2
  end
  if opts.help then
    io.write(USAGE)
    return 0
  end
  -- Worker output lines go to the log and would break up the report; a worker
  -- that fails to start has its stderr in the error printed below anyway. An
  -- explicit SLITHER_LOG still wins, for debugging the doctor itself.
  if (os.getenv("SLITHER_LOG") or "") == "" then core.set_log_level("error") end

  local paths, versions = core.paths(), core.versions()
  local python = opts.python or paths.python
  local source = opts.python and "--python"
    or ((os.getenv("SLITHER_PYTHON") or "") ~= "" and "SLITHER_PYTHON" or "default")
  local problem -- the first reason not to be ready

  print("slither doctor")
  print("")
  print("engine")
  row("slither", versions.slither)
  row("LuaJIT", versions.luajit or "unknown")
  row("libuv", versions.libuv)
  row("Lua modules", paths.lua)
  local worker_ok = exists(paths.worker .. "/slither_worker/__init__.py")
  row("worker package", paths.worker .. "/slither_worker"
    .. (worker_ok and "" or "  (NOT FOUND: set SLITHER_WORKER_PATH)"))
  if not worker_ok then
    problem = "the worker package is not at " .. paths.worker
      .. "/slither_worker (set SLITHER_WORKER_PATH)"
  end

  print("")
  print("python")
  local pool, err, hello, start_ms = start_probe_pool(python)
  if not pool then
    row("interpreter", python .. " (" .. source .. ")")
    row("worker start", "FAILED")
    for l in tostring(err.message):gmatch("[^\n]+") do print("    " .. l) end
    problem = problem or string.format("interpreter '%s' cannot start a worker: %s", python,
      one_line(err.message))
  else
    hello = hello or {}
    local exe = hello.executable
    if type(exe) ~= "string" or exe == "" then exe = "(the worker did not say)" end
    row("interpreter", python .. " (" .. source .. ") -> " .. exe)
    row("version", tostring(hello.python) .. " (" .. tostring(hello.implementation) .. ")")
    row("free-threaded build", yesno(hello.free_threaded))
    row("GIL enabled", yesno(hello.gil_enabled))
    row("worker start", string.format("%.0f ms", start_ms))

    print("")
    print("packages (optional: only the examples that use them need them)")
    local names = {}
    for i, p in ipairs(PACKAGES) do names[i] = p.name end
    local vers, cerr = pool:call("doctor_probe", "versions", names,
      { timeout_ms = PROBE_TIMEOUT_MS })
    local debian
    if vers then
      local sees = pool:call("doctor_probe", "sees_debian_packages", { 0 })
      debian = sees and sees[1] == true
    end
    if not vers then
      row("probe", "FAILED: " .. tostring(cerr.kind) .. ": " .. one_line(cerr.message))
      problem = problem or string.format("interpreter '%s' started, but a call to it failed: %s",
        python, one_line(cerr.message))
    else
      local missing = {}
      for i, p in ipairs(PACKAGES) do
        local v = vers[i]
        if type(v) == "string" then
          row(p.label, v)
        else
          row(p.label, "missing (Debian: apt-get install " .. p.deb .. ")")
          missing[#missing + 1] = p.deb
        end
      end
      if #missing > 0 then
        print("")
        print("  Debian's packages install for /usr/bin/python3 only.")
        if debian then
          print("  This interpreter sees them: apt-get install " .. table.concat(missing, " "))
        else
          print("  This interpreter does not see them (" .. exe .. ").")
          print("  Install them with its own pip, or apt-get install "
            .. table.concat(missing, " "))
          print("  and run with SLITHER_PYTHON=/usr/bin/python3 (or --python to check it).")
        end
      end
    end
    pool:stop()
  end

  print("")
  if problem then
    print("verdict: NOT ready: " .. problem)
    return 1
  end
  print("verdict: ready")
  return 0
end

return M
