-- slither.task: cooperative tasks on the engine's loop.
--
-- A task is a coroutine. Code that waits (a pool call, a sleep) hands the loop a
-- callback and yields; the callback resumes it. Code that waits outside any task
-- (a plain `luajit` script, a busted spec) drives the loop itself until its
-- callback has run, so the same API works from both.
local core = require("slither.core")

local M = {}

local tasks = setmetatable({}, { __mode = "k" }) -- coroutine -> task
local pack = function(...) return { n = select("#", ...), ... } end
local unpack = unpack or table.unpack

local Task = {}
Task.__index = Task

local function finish(t, ok, res)
  t.done = true
  if ok then
    t.results = res
  else
    t.err = res
    if not t.joined then
      core.log("error", "unhandled error in task: " .. tostring(res))
    end
  end
  local waiters = t.waiters
  t.waiters = {}
  for _, w in ipairs(waiters) do w() end
end

-- Resume a task with values; record its end when it returns or raises.
local function step(t, ...)
  if t.cancelled then return end -- a cancelled task is never resumed again
  local r = pack(coroutine.resume(t.co, ...))
  if coroutine.status(t.co) == "dead" then
    if r[1] then
      finish(t, true, { n = r.n - 1, select(2, unpack(r, 1, r.n)) })
    else
      finish(t, false, debug.traceback(t.co, tostring(r[2])))
    end
  end
end

local function new_task(fn)
  local t = setmetatable({ co = coroutine.create(fn), done = false, waiters = {} }, Task)
  tasks[t.co] = t
  return t
end

function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("slither.spawn: expected a function, got " .. type(fn), 2)
  end
  local t = new_task(fn)
  step(t, ...)
  return t
end

function M.current()
  local co = coroutine.running()
  return co and tasks[co] or nil
end

-- Wait for an asynchronous operation. start(cb) begins it; cb(...) ends it, at
-- once or later. Returns cb's arguments.
function M.await(start)
  local t = M.current()
  if t then
    local state, res = "running", nil
    start(function(...)
      if state == "waiting" then
        state = "done"
        step(t, ...)
      else
        state = "done"
        res = pack(...)
      end
    end)
    if state == "done" then return unpack(res, 1, res.n) end
    state = "waiting"
    return coroutine.yield()
  end
  local res
  start(function(...) res = pack(...) end)
  while not res do
    if not core.run("once") and not res then
      error("nothing left on the loop to finish this wait", 2)
    end
  end
  return unpack(res, 1, res.n)
end

function M.sleep(ms)
  if type(ms) ~= "number" or ms < 0 then
    error("slither.sleep: expected a number of milliseconds >= 0", 2)
  end
  return M.await(function(cb) core.timer(ms, cb) end)
end

-- task:join() -> true, results... | false, err
function Task:join()
  self.joined = true
  if not self.done then
    M.await(function(cb)
      if self.done then cb() else table.insert(self.waiters, cb) end
    end)
  end
  if self.err then return false, self.err end
  return true, unpack(self.results, 1, self.results.n)
end

function Task:status()
  if self.cancelled then return "cancelled" end
  if not self.done then return "running" end
  return self.err and "failed" or "done"
end

-- Cancel a task that waits: it is never resumed again, and the cleanups it
-- registered (with task.on_cancel) run now; a dispatch stops launching batches.
-- Joiners get false, "cancelled".
function Task:cancel(reason)
  if self.done then return false end
  self.cancelled = true
  local hooks = self.cancel_hooks or {}
  self.cancel_hooks = nil
  for i = #hooks, 1, -1 do pcall(hooks[i]) end
  self.joined = true
  finish(self, false, reason or "cancelled")
  return true
end

-- Register a cleanup for the current task's cancellation (no-op outside tasks).
-- Returns a function that unregisters it: work that ends before its task must
-- call it, or the task keeps the hook, and all the hook refers to, until it ends.
local function no_op() end
function M.on_cancel(fn)
  local t = M.current()
  if not t then return no_op end
  local hooks = t.cancel_hooks or {}
  t.cancel_hooks = hooks
  hooks[#hooks + 1] = fn
  return function()
    if t.cancel_hooks ~= hooks then return end -- cancelled: the hooks have run
    for i = #hooks, 1, -1 do -- most often the latest one
      if hooks[i] == fn then
        table.remove(hooks, i)
        return
      end
    end
  end
end

-- Run fn as the main task and drive the loop until it ends.
function M.run_main(fn, ...)
  local t = new_task(fn)
  M.main_task = t
  t.joined = true -- its error is the caller's to report
  step(t, ...)
  while not t.done do
    if not core.run("once") and not t.done then
      return false, "the main task is blocked: it waits for something that cannot happen"
    end
  end
  if t.err then return false, t.err end
  return true, unpack(t.results, 1, t.results.n)
end

-- Cancel the main task (a stop signal): run_main returns false, reason. False
-- when there is none running.
function M.interrupt_main(reason)
  local t = M.main_task
  if not t or t.done then return false end
  return t:cancel(reason)
end

return M
