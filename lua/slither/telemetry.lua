-- slither.telemetry: named events with measurements and metadata.
--
-- attach(prefix, fn) calls fn(name, measurements, metadata) for every event
-- whose name starts with prefix ("slither.pool" or "slither.pool.call.stop").
local core = require("slither.core")

local M = {}
local handlers = {}
local next_id = 0

local CALL_EVENTS = "slither.pool.call"

-- name -> whether any handler listens; lets hot paths skip building events.
local listening_cache = {}

function M.listening(name)
  local v = listening_cache[name]
  if v == nil then
    v = false
    for _, h in ipairs(handlers) do
      if name:sub(1, #h.prefix) == h.prefix then v = true end
    end
    listening_cache[name] = v
  end
  return v
end

local function update_call_events()
  listening_cache = {}
  local on = false
  for _, h in ipairs(handlers) do
    local p = h.prefix
    if CALL_EVENTS:sub(1, #p) == p or p:sub(1, #CALL_EVENTS) == CALL_EVENTS then on = true end
  end
  core.set_call_events(on)
end

function M.attach(prefix, fn)
  if type(prefix) ~= "string" then
    error("slither.telemetry.attach: prefix must be a string, got " .. type(prefix), 2)
  end
  if type(fn) ~= "function" then
    error("slither.telemetry.attach: handler must be a function, got " .. type(fn), 2)
  end
  next_id = next_id + 1
  local h = { id = next_id, prefix = prefix, fn = fn }
  handlers[#handlers + 1] = h
  update_call_events()
  return h.id
end

function M.detach(id)
  for i, h in ipairs(handlers) do
    if h.id == id then
      table.remove(handlers, i)
      update_call_events()
      return true
    end
  end
  return false
end

function M.execute(name, measurements, metadata)
  for _, h in ipairs(handlers) do
    if name:sub(1, #h.prefix) == h.prefix then
      local ok, err = pcall(h.fn, name, measurements, metadata)
      if not ok then
        core.log("error", "telemetry handler for '" .. h.prefix .. "' failed: " .. tostring(err))
      end
    end
  end
end

return M
