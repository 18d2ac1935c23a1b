-- slither.views: functions of the engine that Python calls while it runs.
--
-- In a Python function, slither_worker.view("lookup", args) sends a frame to the
-- engine; the handler of the view of that name runs here, in a task of its own, and
-- its result goes back. A "global" view is visible to every call; a "session" view
-- only to calls made in the session that registered it (a run), and any other call
-- gets a permission error naming both sessions.
local core = require("slither.core")
local task = require("slither.task")
local telemetry = require("slither.telemetry")

local M = {}

local global = {}     -- name -> view
local by_session = {} -- session -> name -> view

function M.register(def, store, session)
  local v = { name = def.name, handler = def.handler, mode = def.mode or "scalar",
              scope = def.scope or "session", timeout_ms = def.timeout_ms or 5000,
              store = store, session = session }
  if session then
    by_session[session] = by_session[session] or {}
    by_session[session][def.name] = v
  else
    global[def.name] = v
  end
end

function M.remove_session(store, session)
  local t = by_session[session]
  if not t then return end
  for name, v in pairs(t) do
    if v.store == store then t[name] = nil end
  end
  if next(t) == nil then by_session[session] = nil end
end

function M.remove_store(store)
  for name, v in pairs(global) do
    if v.store == store then global[name] = nil end
  end
  for s in pairs(by_session) do M.remove_session(store, s) end
end

-- The view a call in `session` may use, or nil and the reason.
local function resolve(name, session)
  local t = session and by_session[session]
  if t and t[name] then return t[name] end
  if global[name] then return global[name] end
  for s, views in pairs(by_session) do
    if views[name] then
      return nil, string.format("view '%s' belongs to session '%s'; this call's session is %s",
        name, s, session and ("'" .. session .. "'") or "none")
    end
  end
  return nil, string.format("no view named '%s'", name)
end

local function event(name, m, md)
  if telemetry.listening(name) then telemetry.execute(name, m, md) end
end

-- Answer one request from a worker of `handle` (a pool handle).
function M.serve(handle, worker_id, req_id, name, session, args, worker)
  local v, why = resolve(name, session)
  if not v then
    handle:view_reply(worker_id, req_id, false, why)
    return
  end
  local md = { view = name, session = session, worker = worker }
  local t0 = core.now()
  local answered, timer = false, nil
  local function answer(ok, val)
    if answered then return end
    answered = true
    if timer then timer:stop() end
    local dur = core.now() - t0
    if ok then
      event("slither.bridge.view.stop", { duration_ms = dur }, md)
    else
      -- a table of its own: a handler may keep the start event's metadata
      event("slither.bridge.view.exception", { duration_ms = dur },
        { view = md.view, session = md.session, worker = md.worker, error = val })
    end
    handle:view_reply(worker_id, req_id, ok, val)
  end
  event("slither.bridge.view.start", {}, md)
  timer = core.timer(v.timeout_ms, function()
    answer(false, string.format("view '%s' timed out after %d ms", name, v.timeout_ms))
  end)
  task.spawn(function()
    local ctx = { session = session, store = v.store, caller = { worker = worker }, view = name }
    if v.mode == "batch" and type(args) ~= "table" then
      return answer(false, "batch view '" .. name .. "' takes a list of arguments")
    end
    local ok, res = pcall(v.handler, args, ctx)
    if not ok then return answer(false, "view '" .. name .. "' failed: " .. tostring(res)) end
    if v.mode == "batch" and (type(res) ~= "table" or #res ~= #args) then
      return answer(false, "batch view '" .. name .. "' must return a list of " .. #args ..
        " results")
    end
    if res == nil then res = core.null end
    answer(true, res)
  end)
end

return M
