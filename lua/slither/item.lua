-- slither.item: the unit that flows through dispatch and pipes.
--
--   { id = 17, payload = ..., meta = {}, route = nil }
--
-- Only the payload travels to Python; a result replaces the payload of the item at
-- the same position and meta stays. Ids are unique and increasing in one engine.
local M = {}

local Item = { __name = "slither.item" }
-- meta is made on first use: most items never need one, and a table per item is
-- a large part of what wrapping a million items costs.
Item.__index = function(t, k)
  if k == "meta" then
    local m = {}
    rawset(t, "meta", m)
    return m
  end
  return Item[k]
end
M.Item = Item

local next_id = 0

function M.wrap(payload, meta)
  if meta ~= nil and type(meta) ~= "table" then
    error("slither.item.wrap: meta must be a table, got " .. type(meta), 2)
  end
  next_id = next_id + 1
  return setmetatable({ id = next_id, payload = payload, meta = meta, route = false }, Item)
end

-- The number of items of an input list. A list cannot hold nil: a nil between
-- items (a "hole") would make #list stop short of, or run past, items that are
-- there, and they would be lost without a word. So a hole is an error naming it,
-- unless the list says its own length in `n` (as table.pack does); nil inside
-- that length is an error too. One pass over the list, before any work starts.
function M.length(list, fname, level)
  level = (level or 1) + 1
  local n = rawget(list, "n")
  if n ~= nil then
    if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then
      error(fname .. ": the input list's n must be an integer >= 0, got " .. tostring(n), level)
    end
  else
    n = #list
    local maxn = table.maxn(list)
    if maxn > n then
      local hole = n + 1
      while list[hole] ~= nil do hole = hole + 1 end
      error(string.format("%s: the input list has a hole: item %d is nil, but there are " ..
        "items up to %d (use slither.null for a null payload, or set the list's n)",
        fname, hole, maxn), level)
    end
  end
  for i = 1, n do
    if list[i] == nil then
      error(string.format("%s: the input list has a hole: item %d of %d is nil (use " ..
        "slither.null for a null payload)", fname, i, n), level)
    end
  end
  return n
end

-- Why `res` is not a list of exactly n results, or nil when it is. A nil inside
-- it is a hole: # may count past it, and the item there would get a nil payload.
-- `who` returned it, for `what` (e.g. "executor", "payloads").
function M.results_problem(res, n, who, what)
  if type(res) ~= "table" then
    return string.format("%s returned %s for %d %s", who, type(res), n, what)
  end
  local maxn = table.maxn(res)
  for i = 1, n do
    if res[i] == nil then
      if maxn > i then
        return string.format("%s returned a list with a hole: result %d of %d is nil " ..
          "(use slither.null for a null result)", who, i, n)
      end
      return string.format("%s returned %d results for %d %s", who, i - 1, n, what)
    end
  end
  if maxn > n then
    return string.format("%s returned %d results for %d %s", who, maxn, n, what)
  end
  return nil
end

function M.wrap_many(list)
  if type(list) ~= "table" then
    error("slither.item.wrap_many: expected a list, got " .. type(list), 2)
  end
  local out = {}
  for i = 1, M.length(list, "slither.item.wrap_many", 2) do
    next_id = next_id + 1
    out[i] = setmetatable({ id = next_id, payload = list[i], route = false }, Item)
  end
  return out
end

function M.is_item(x)
  return getmetatable(x) == Item
end

-- An item as it is, or a new item around a bare payload.
function M.coerce(x)
  if getmetatable(x) == Item then return x end
  next_id = next_id + 1
  -- route is there from the start (false: not routed) so that routing an item
  -- does not grow its table
  return setmetatable({ id = next_id, payload = x, route = false }, Item)
end

function Item:__tostring()
  return "slither.item(" .. self.id .. ")"
end

return M
