-- slither.pool: pools of Python worker processes.
--
--   local pool = assert(slither.pool.start{ name = "default", size = 2 })
--   local results, err = pool:call("my_module", "predict_batch", { 1, 2, 3 })
--
-- Operational failures (a worker crashed, a Python exception, a timeout) return
-- nil, err with err.kind; misuse (a wrong option) raises at once.
local core = require("slither.core")
local task = require("slither.task")
local telemetry = require("slither.telemetry")
local options = require("slither.options")

local M = {}
local pools = {} -- name -> running Pool

local Pool = {}
Pool.__index = Pool

-- option -> { lua type, check, what the check wants }
local OPTIONS = {
  name = { "string" },
  size = options.int(1, 4096),
  python = { "string" },
  path = { "table" },
  env = { "table" },
  startup_timeout_ms = options.ms(1),
  threads = options.int(1, 4096),
  call_timeout_ms = options.ms(0),
  max_calls = options.int(0),
  max_calls_jitter = { "number", function(v) return v >= 0 and v < 1 end, "a fraction in [0, 1)" },
  max_rss_mb = options.num(0, 1048576),
  ttl_s = options.num(0, 1e9),
  affinity = { "string", function(v) return v == "hint" or v == "strict" end, '"hint" or "strict"' },
  max_frame_mb = { "number", function(v) return v >= 1 and v <= 4095 end, "a number in [1, 4095]" },
  max_start_failures = options.int(1),
  codec = { "string", function(v) return v == "auto" or v == "json" or v == "pickle" end,
            '"auto", "json" or "pickle"' },
}

local function check_options(fname, opts, spec)
  return options.check(fname, opts, spec, 3)
end
M._check_options = check_options

local views = require("slither.views")

-- The pool's events as telemetry; last.hello: the hello of the latest worker to start.
local function event_forwarder(last)
  return function(ev)
    local name = ev.name
    if name == "worker.ready" and ev.hello then last.hello = ev.hello end
    local measurements = { duration_ms = ev.duration_ms, queued_ms = ev.queued_ms,
                           items = ev.items }
    ev.name, ev.duration_ms, ev.queued_ms, ev.items = nil, nil, nil, nil
    telemetry.execute("slither.pool." .. name, measurements, ev)
  end
end

function M.start(opts)
  opts = check_options("slither.pool.start", opts, OPTIONS)
  local copts = {}
  for k, v in pairs(opts) do copts[k] = v end
  copts.name = opts.name or "default"
  if pools[copts.name] then
    error("slither.pool.start: a pool named '" .. copts.name .. "' is already running", 2)
  end
  if opts.path then
    for i, p in ipairs(opts.path) do
      if type(p) ~= "string" then
        error("slither.pool.start: option 'path' must be a list of strings (item " .. i .. ")", 2)
      end
    end
  end
  if opts.env then
    local list = {}
    for k, v in pairs(opts.env) do
      if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
        error("slither.pool.start: option 'env' must map names to strings", 2)
      end
      list[#list + 1] = k .. "=" .. tostring(v)
    end
    copts.env = list
  end
  local handle
  local last = {}
  local ok, err = task.await(function(cb)
    handle = core.pool_start(copts, cb, event_forwarder(last))
    handle:on_view(function(...) views.serve(handle, ...) end)
  end)
  if not ok then return nil, err end
  local self = setmetatable({ name = copts.name, handle = handle, options = opts, last = last },
                            Pool)
  pools[self.name] = self
  return self
end

function M.get(name)
  return pools[name or "default"]
end

function M.all()
  local list = {}
  for _, p in pairs(pools) do list[#list + 1] = p end
  return list
end

local CALL_OPTIONS = {
  session = { "string" },
  timeout_ms = options.ms(0),
}

-- pool:call(module, fn, payloads, { session =, timeout_ms = }) -> results | nil, err
function Pool:call(module, fn, payloads, opts)
  if type(module) ~= "string" or module == "" then
    error("pool:call: module must be a non-empty string, got " .. type(module), 2)
  end
  if type(fn) ~= "string" or fn == "" then
    error("pool:call: function must be a non-empty string, got " .. type(fn), 2)
  end
  if type(payloads) ~= "table" then
    error("pool:call: payloads must be a list, got " .. type(payloads), 2)
  end
  opts = check_options("pool:call", opts, CALL_OPTIONS)
  local handle = self.handle
  local off
  local function done(...)
    if off then off() end
    return ...
  end
  return done(task.await(function(cb)
    local id = handle:call(module, fn, payloads, opts.session, opts.timeout_ms, nil, false, cb)
    -- an interrupted task does not leave its worker busy
    if id then off = task.on_cancel(function() handle:cancel(id) end) end
  end))
end

function Pool:stats()
  return self.handle:stats()
end

-- What the latest worker to start said of itself: python (version), implementation,
-- executable, free_threaded, gil_enabled, codecs.
function Pool:hello()
  return self.last.hello
end

function Pool:pids()
  return self.handle:pids()
end

function Pool:release_session(id)
  if type(id) ~= "string" then
    error("pool:release_session: session id must be a string, got " .. type(id), 2)
  end
  self.handle:release_session(id)
end

local STOP_OPTIONS = { grace_ms = options.ms(0) }

-- pool:stop{ grace_ms = 5000 }: in-flight calls get grace_ms to finish, then the
-- workers get SIGTERM, then SIGKILL a second later. Returns when all are gone.
function Pool:stop(opts)
  opts = check_options("pool:stop", opts, STOP_OPTIONS)
  if pools[self.name] == self then pools[self.name] = nil end
  local handle = self.handle
  task.await(function(cb) handle:stop(opts.grace_ms or 5000, cb) end)
  return true
end

function Pool:__tostring()
  return "slither.pool(" .. self.name .. ")"
end

-- Stop every pool (engine exit).
function M.stop_all(grace_ms)
  local list = M.all()
  for _, p in ipairs(list) do
    if pools[p.name] == p then pools[p.name] = nil end
  end
  local left = #list
  if left == 0 then return end
  task.await(function(cb)
    for _, p in ipairs(list) do
      p.handle:stop(grace_ms or 5000, function()
        left = left - 1
        if left == 0 then cb() end
      end)
    end
  end)
end

return M
