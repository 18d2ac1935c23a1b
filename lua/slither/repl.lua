-- slither.repl: the Lua half of the interactive prompt (engine/repl.c drives the
-- terminal and the loop). Statements run as tasks, so the loop keeps running
-- while they wait, and Ctrl-C cancels the one that runs.
local slither = require("slither")
local core = require("slither.core")
local task = require("slither.task")

local M = {}

local MAX_DEPTH = 4
local MAX_ITEMS = 50

local function key_repr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. M.show(k, MAX_DEPTH) .. "]"
end

-- A readable form of a value: nested tables to a bounded depth, cycles marked.
function M.show(v, depth, seen)
  depth = depth or 0
  local t = type(v)
  if v == core.null then return "null" end
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring and mt ~= core.array_mt then return tostring(v) end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  if depth >= MAX_DEPTH then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, math.min(n, MAX_ITEMS) do parts[#parts + 1] = M.show(v[i], depth + 1, seen) end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  for _, k in ipairs(keys) do
    if #parts >= MAX_ITEMS then break end
    parts[#parts + 1] = key_repr(k) .. " = " .. M.show(v[k], depth + 1, seen)
  end
  seen[v] = nil
  local total = n + #keys
  if total > MAX_ITEMS then parts[#parts + 1] = "... (" .. total .. " entries)" end
  if #parts == 0 then return mt == core.array_mt and "[]" or "{}" end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

local env = setmetatable({}, { __index = _G, __newindex = _G })
_G.slither = slither

-- Compile a statement: an expression first (so `1 + 1` prints 2), else a chunk.
-- Returns fn, or nil and "incomplete", or nil and the error.
function M.compile(src)
  local code = src:gsub("^%s*=", "return ")
  local fn = loadstring("return " .. code, "=stdin")
  if not fn then
    local err
    fn, err = loadstring(code, "=stdin")
    if not fn then
      if err:match("<eof>$") or err:match("'<eof>'") then return nil, "incomplete" end
      return nil, err
    end
  end
  setfenv(fn, env)
  return fn
end

local current

-- Run one statement as a task; done(text) is called with what to print.
function M.run(src, done)
  local fn, err = M.compile(src)
  if not fn then
    if err == "incomplete" then return "incomplete" end
    done(err .. "\n")
    return "done"
  end
  current = task.spawn(function()
    local r = { n = 0 }
    local ok, e = xpcall(function()
      r = { n = 0 }
      local function keep(...) r = { n = select("#", ...), ... } end
      keep(fn())
    end, function(m) return debug.traceback(tostring(m), 2) end)
    if not ok then
      -- a short traceback: drop the REPL's own frames
      local lines = {}
      for line in tostring(e):gmatch("[^\n]+") do
        if #lines == 0 then
          -- `return error(...)` is a tail call: its position is the REPL's own
          line = line:gsub("^%S*slither/repl%.lua:%d+: ", "stdin: ")
        elseif line:match("slither/repl.lua") or line:match("%[C%]: in function 'xpcall'") then
          break
        end
        lines[#lines + 1] = line
      end
      if lines[#lines] == "stack traceback:" then lines[#lines] = nil end
      return table.concat(lines, "\n") .. "\n"
    end
    if r.n == 0 then return "" end
    local parts = {}
    for i = 1, r.n do parts[i] = M.show(r[i]) end
    return table.concat(parts, "\t") .. "\n"
  end)
  current.joined = true
  local t = current
  local function finish()
    if t.cancelled then return end
    current = nil
    if t.err then done(tostring(t.err) .. "\n") else done(t.results[1] or "") end
  end
  if t.done then
    finish()
    return "done"
  end
  table.insert(t.waiters, finish)
  return "running"
end

-- Ctrl-C: cancel the running statement. Returns true when one was running.
function M.interrupt()
  if not current then return false end
  local t = current
  current = nil
  t:cancel("interrupted")
  return true
end

-- Names for tab completion: globals, or fields of a table path (a.b.c).
function M.complete(word)
  local base, partial = word:match("^(.-)([%w_]*)$")
  local scope = _G
  local prefix = ""
  if base ~= "" then
    local path = base:sub(1, -2)
    local sep = base:sub(-1)
    if sep ~= "." and sep ~= ":" then return {} end
    for part in path:gmatch("[^.:]+") do
      if type(scope) ~= "table" then return {} end
      scope = scope[part]
    end
    prefix = base
  end
  local out = {}
  local function add(t)
    if type(t) ~= "table" then return end
    for k in pairs(t) do
      if type(k) == "string" and k:sub(1, #partial) == partial then out[#out + 1] = prefix .. k end
    end
  end
  add(scope)
  local mt = type(scope) == "table" and getmetatable(scope)
  if mt and type(mt.__index) == "table" then add(mt.__index) end
  table.sort(out)
  return out
end

-- Ctrl-D: stop pools and stores.
function M.shutdown()
  slither.shutdown(2000)
end

return M
