-- slither: the user API.
--
--   local slither = require("slither")
--   local pool = assert(slither.pool.start{ size = 2 })
--   print(pool:call("math_ops", "double", { 1, 2, 3 })[3])  --> 6
local core = require("slither.core")
local task = require("slither.task")

local slither = {
  version = core.version,
  null = core.null,
  core = core,
  task = task,
  spawn = task.spawn,
  sleep = task.sleep,
  await = task.await,
  telemetry = require("slither.telemetry"),
  pool = require("slither.pool"),
  item = require("slither.item"),
  dispatch = require("slither.dispatch"),
  store = require("slither.store"),
}

local pipe_mod = require("slither.pipe")
slither.pipe = pipe_mod.pipe
slither.run_pipe = pipe_mod.run_pipe
slither.stream_pipe = pipe_mod.stream_pipe
slither.skip = pipe_mod.skip

-- Milliseconds on a monotonic clock.
function slither.now()
  return core.now()
end

-- Mark a table as a list, so that an empty one travels as [] (not {}).
function slither.array(t)
  if t ~= nil and type(t) ~= "table" then
    error("slither.array: expected a table or nothing, got " .. type(t), 2)
  end
  return setmetatable(t or {}, core.array_mt)
end

-- Mark a string as bytes: Python receives `bytes`, not `str`. Strings that are
-- not valid UTF-8 travel as bytes without this.
function slither.bytes(s)
  if type(s) ~= "string" then
    error("slither.bytes: expected a string, got " .. type(s), 2)
  end
  return setmetatable({ s }, core.bytes_mt)
end

function slither.log(level, fmt, ...)
  core.log(level, select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt))
end

-- Stop every pool; the engine calls this when a script ends.
function slither.shutdown(grace_ms)
  slither.pool.stop_all(grace_ms)
  slither.store.stop_all()
end

return slither
