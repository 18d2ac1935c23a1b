-- slither.store: tables the engine owns, read without locks from Lua, from host
-- threads and (through a shared mapping) from Python workers.
--
--   local Features = slither.store.define{
--     name = "features",
--     tables = { { name = "features", type = "set" } },  -- set | ordered_set | bag
--     views = { { name = "lookup", mode = "scalar", scope = "global",
--                 handler = function(args, ctx) return ... end } },
--     load = function(tables) tables.features:put("user:42", { tier = "gold" }) end,
--   }
--   local store = slither.store.start(Features)
--   store:get("features", "user:42")
local core = require("slither.core")
local telemetry = require("slither.telemetry")
local views = require("slither.views")

local M = {}

local TYPES = { set = 0, ordered_set = 1, bag = 2 }
local stores = {}

local Definition = {}
Definition.__index = Definition

local function check(cond, fmt, ...)
  if not cond then error("slither.store.define: " .. string.format(fmt, ...), 3) end
end

local DEF_KEYS = { name = true, tables = true, views = true, load = true }
local VIEW_KEYS = { name = true, mode = true, scope = true, handler = true, timeout_ms = true }

function M.define(spec)
  check(type(spec) == "table", "expected a definition table, got %s", type(spec))
  for k in pairs(spec) do
    check(DEF_KEYS[k], "unknown field '%s' (expected name, tables, views, load)", tostring(k))
  end
  check(type(spec.name) == "string" and spec.name:match("^[%w_%-]+$"),
    "name must be a string of letters, digits, '_' or '-'")
  -- the engine keeps names of up to 63 bytes whole (its directory entries)
  check(#spec.name <= 63, "store name '%s' is %d bytes long (at most 63)", spec.name, #spec.name)
  check(type(spec.tables) == "table" and #spec.tables > 0, "store '%s' needs a list of tables",
    spec.name)
  local seen = {}
  for i, t in ipairs(spec.tables) do
    check(type(t) == "table" and type(t.name) == "string" and t.name:match("^[%w_%-]+$"),
      "table %d of store '%s' needs a name of letters, digits, '_' or '-'", i, spec.name)
    check(#t.name <= 63, "table '%s' of store '%s' has a name of %d bytes (at most 63)",
      t.name, spec.name, #t.name)
    for k in pairs(t) do
      check(k == "name" or k == "type", "table '%s': unknown field '%s' (expected name, type)",
        t.name, tostring(k))
    end
    check(not seen[t.name], "store '%s' has two tables named '%s'", spec.name, t.name)
    seen[t.name] = true
    local ty = t.type or "set"
    check(TYPES[ty], "table '%s' has unknown type '%s' (expected set, ordered_set or bag)",
      t.name, tostring(ty))
  end
  local vseen = {}
  for i, v in ipairs(spec.views or {}) do
    check(type(v) == "table" and type(v.name) == "string", "view %d needs a name", i)
    for k in pairs(v) do
      check(VIEW_KEYS[k], "view '%s': unknown field '%s'", v.name, tostring(k))
    end
    check(not vseen[v.name], "store '%s' has two views named '%s'", spec.name, v.name)
    vseen[v.name] = true
    check(type(v.handler) == "function", "view '%s' needs a handler function", v.name)
    check(v.mode == nil or v.mode == "scalar" or v.mode == "batch",
      "view '%s': mode must be \"scalar\" or \"batch\"", v.name)
    check(v.scope == nil or v.scope == "session" or v.scope == "global",
      "view '%s': scope must be \"session\" or \"global\"", v.name)
    check(v.timeout_ms == nil or (type(v.timeout_ms) == "number" and v.timeout_ms > 0),
      "view '%s': timeout_ms must be a number > 0", v.name)
  end
  check(spec.load == nil or type(spec.load) == "function", "load must be a function")
  return setmetatable({ name = spec.name, tables = spec.tables, views = spec.views or {},
                        load = spec.load }, Definition)
end

local Store = {}
Store.__index = Store

local Table = {}
Table.__index = Table

local function event(name, m, md)
  if telemetry.listening(name) then telemetry.execute(name, m, md) end
end

-- The tables handed to load: writes go to the fresh tables a reload fills.
local function shadow_tables(store)
  local t = {}
  for _, d in ipairs(store.def.tables) do
    t[d.name] = setmetatable({ store = store, name = d.name, shadow = true }, Table)
  end
  return t
end

-- A write's outcome: true, or nil and the error (no_space, out_of_memory), the
-- table as it was. A write in load that fails raises, and fails the reload even
-- when load catches it: fresh tables missing a write must not replace the live ones.
local function wrote(store, shadow, ok, kind, msg)
  if ok then return true end
  local err = { kind = kind, message = msg }
  if shadow then
    store.shadow_failure = store.shadow_failure or err
    error(msg, 0)
  end
  return nil, err
end

local function run_load(store)
  local def = store.def
  if not def.load then return true end
  event("slither.store.reload.start", {}, { store = def.name })
  local t0 = core.now()
  local began, kind, msg = store.h:shadow_begin()
  local ok, err, failure
  if began then
    store.shadow_failure = nil
    ok, err = pcall(def.load, shadow_tables(store))
    failure, store.shadow_failure = store.shadow_failure, nil
    if failure then ok, err = false, failure.message end
    local done, k2, m2 = store.h:shadow_end(ok)
    if ok and not done then
      failure = { kind = k2, message = m2 }
      ok, err = false, m2
    end
  else
    failure = { kind = kind, message = msg }
    ok, err = false, msg
  end
  event("slither.store.reload.stop", { duration_ms = core.now() - t0 },
    { store = def.name, ok = ok, error = not ok and tostring(err) or nil })
  if not ok then
    return nil, { kind = failure and failure.kind or "load_failed", message = tostring(err) }
  end
  return true
end

function M.start(def)
  if getmetatable(def) ~= Definition then
    error("slither.store.start: expected a definition from slither.store.define", 2)
  end
  if stores[def.name] then
    error("slither.store.start: a store named '" .. def.name .. "' is already running", 2)
  end
  local names, types = {}, {}
  for i, t in ipairs(def.tables) do
    names[i] = t.name
    types[i] = TYPES[t.type or "set"]
  end
  local h, kind, msg = core.store_new(def.name, names, types)
  if not h then return nil, { kind = kind, message = msg } end
  local store = setmetatable({ name = def.name, def = def, h = h, tables = {}, types = {},
    sorted = {} }, Store)
  for _, t in ipairs(def.tables) do
    store.tables[t.name] = setmetatable({ store = store, name = t.name }, Table)
    store.types[t.name] = t.type or "set"
  end
  local ok, err = run_load(store)
  if not ok then
    store.h:destroy()
    return nil, err
  end
  stores[def.name] = store
  for _, v in ipairs(def.views) do
    if (v.scope or "session") == "global" then views.register(v, store, nil) end
  end
  return store
end

function M.get(name)
  return stores[name]
end

-- The start of every file name of this process's stores in /dev/shm, or in
-- $SLITHER_SHM_DIR ("/dev/shm/slither.<pid>.<token>."): the token is random, so no other user can
-- create a file where a store will be.
function M.files_prefix()
  return core.store_files_prefix()
end

function M.all()
  local list = {}
  for _, s in pairs(stores) do list[#list + 1] = s end
  return list
end

function Store:stop()
  if stores[self.name] == self then stores[self.name] = nil end
  views.remove_store(self)
  self.h:destroy()
end

-- Register this store's session-scoped views for one session (a run).
function Store:open_session(session)
  for _, v in ipairs(self.def.views) do
    if (v.scope or "session") == "session" then views.register(v, self, session) end
  end
end

function Store:close_session(session)
  views.remove_session(self, session)
end

function Store:table(name)
  local t = self.tables[name]
  if not t then error("store '" .. self.name .. "' has no table '" .. tostring(name) .. "'", 2) end
  return t
end

-- ---- reads ------------------------------------------------------------------

function Store:get(tbl, key) return self.h:get(tbl, key) end
function Store:get_many(tbl, keys) return self.h:get_many(tbl, keys) end
function Store:size(tbl) return self.h:size(tbl) end

-- Every entry of a table: { key = k, value = v }, in no particular order.
function Store:entries(tbl)
  local keys, vals = self.h:scan(tbl)
  local out = {}
  for i = 1, #keys do out[i] = { key = keys[i], value = vals[i] } end
  return out
end

-- Entries whose value holds every field of partial with an equal value.
function Store:match(tbl, partial)
  if type(partial) ~= "table" then
    error("store:match: expected a table of fields, got " .. type(partial), 2)
  end
  local out = {}
  local keys, vals = self.h:scan(tbl)
  for i = 1, #keys do
    local v = vals[i]
    local ok = type(v) == "table"
    if ok then
      for k, want in pairs(partial) do
        if v[k] ~= want then ok = false break end
      end
    end
    if ok then out[#out + 1] = { key = keys[i], value = v } end
  end
  return out
end

function Store:select(tbl, pred)
  if type(pred) ~= "function" then
    error("store:select: expected a predicate function, got " .. type(pred), 2)
  end
  local out = {}
  local keys, vals = self.h:scan(tbl)
  for i = 1, #keys do
    if pred(keys[i], vals[i]) then out[#out + 1] = { key = keys[i], value = vals[i] } end
  end
  return out
end

function Store:fold(tbl, fn, acc)
  local keys, vals = self.h:scan(tbl)
  for i = 1, #keys do acc = fn(keys[i], vals[i], acc) end
  return acc
end

-- Numbers before strings; each in natural order.
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta == "number" end
  return a < b
end

-- Range iteration in key order (ordered_set): for key, value in store:range(t, a, b).
-- from and to are inclusive and optional.
function Store:range(tbl, from, to)
  if self.types[tbl] ~= "ordered_set" then
    error("store:range: table '" .. tostring(tbl) .. "' is not an ordered_set", 2)
  end
  if from ~= from or to ~= to then error("store:range: a bound cannot be NaN", 2) end
  local version = self.h:version(tbl)
  local cache = self.sorted[tbl]
  if not cache or cache.version ~= version then
    local keys, vals = self.h:scan(tbl)
    local idx = {}
    for i = 1, #keys do idx[i] = i end
    table.sort(idx, function(x, y) return key_less(keys[x], keys[y]) end)
    local sk, sv = {}, {}
    for i, j in ipairs(idx) do sk[i], sv[i] = keys[j], vals[j] end
    cache = { version = version, keys = sk, vals = sv }
    self.sorted[tbl] = cache
  end
  local i, n = 0, #cache.keys
  if from ~= nil then
    local lo, hi = 1, n + 1 -- first index with key >= from
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if key_less(cache.keys[mid], from) then lo = mid + 1 else hi = mid end
    end
    i = lo - 1
  end
  return function()
    i = i + 1
    if i > n then return nil end
    local k = cache.keys[i]
    if to ~= nil and key_less(to, k) then return nil end
    return k, cache.vals[i]
  end
end

-- ---- writes -----------------------------------------------------------------

function Store:put(tbl, key, value, _shadow)
  if value == nil then error("store:put: value is nil (use store:delete)", 2) end
  local ok, err = wrote(self, _shadow, self.h:put(tbl, key, value, _shadow))
  if not ok then return nil, err end
  event("slither.store.write", { count = 1 }, { store = self.name, table = tbl, operation = "put" })
  return true
end

-- All or nothing: every value is encoded before anything is written, and readers
-- of several keys see all of the writes or none.
function Store:put_many(tbl, map, _shadow)
  if type(map) ~= "table" then
    error("store:put_many: expected a table of key = value, got " .. type(map), 2)
  end
  local ok, err = wrote(self, _shadow, self.h:put_many(tbl, map, _shadow))
  if not ok then return nil, err end
  local n = 0
  for _ in pairs(map) do n = n + 1 end
  event("slither.store.write", { count = n },
    { store = self.name, table = tbl, operation = "put_many" })
  return true
end

function Store:delete(tbl, key, _shadow)
  local ok, err = wrote(self, _shadow, self.h:delete(tbl, key, _shadow))
  if not ok then return nil, err end
  event("slither.store.write", { count = 1 },
    { store = self.name, table = tbl, operation = "delete" })
  return true
end

function Store:clear(tbl, _shadow)
  local ok, err = wrote(self, _shadow, self.h:clear(tbl, _shadow))
  if not ok then return nil, err end
  event("slither.store.write", { count = 0 }, { store = self.name, table = tbl, operation = "clear" })
  return true
end

-- Read, compute, write: fn(current) returns the new value (nil deletes). If fn
-- raises, nothing changes and nil, err is returned.
function Store:update(tbl, key, fn)
  if type(fn) ~= "function" then error("store:update: expected a function, got " .. type(fn), 2) end
  local cur = self.h:get(tbl, key)
  local ok, new = pcall(fn, cur)
  if not ok then return nil, { kind = "update_failed", message = tostring(new) } end
  local wok, werr
  if new == nil then
    wok, werr = wrote(self, false, self.h:delete(tbl, key))
  else
    wok, werr = wrote(self, false, self.h:put(tbl, key, new))
  end
  if not wok then return nil, werr end
  event("slither.store.write", { count = 1 },
    { store = self.name, table = tbl, operation = "update" })
  return new
end

-- Run load into fresh tables and swap them in at once. On failure the old tables
-- stay and nil, err is returned.
function Store:reload()
  return run_load(self)
end

function Store:bytes()
  return self.h:bytes()
end

function Store:__tostring()
  return "slither.store(" .. self.name .. ")"
end

-- Table proxies: store.tables.features:get(k), and the tables load receives. In
-- load (a shadow table) get, put, delete, clear and update act on the fresh
-- tables, so a load that fails half-way leaves the live ones untouched; the
-- other reads see the live tables.
for _, name in ipairs({ "get_many", "size", "entries", "match", "select", "fold", "range" }) do
  Table[name] = function(self, ...) return self.store[name](self.store, self.name, ...) end
end
function Table:get(key) return self.store.h:get(self.name, key, self.shadow) end
function Table:put(key, value) return self.store:put(self.name, key, value, self.shadow) end
function Table:put_many(map) return self.store:put_many(self.name, map, self.shadow) end
function Table:delete(key) return self.store:delete(self.name, key, self.shadow) end
function Table:clear() return self.store:clear(self.name, self.shadow) end
function Table:update(key, fn)
  if not self.shadow then return self.store:update(self.name, key, fn) end
  local ok, new = pcall(fn, self:get(key))
  if not ok then return nil, { kind = "update_failed", message = tostring(new) } end
  if new == nil then self:delete(key) else self:put(key, new) end
  return new
end

-- Stop every store (engine exit).
function M.stop_all()
  for _, s in pairs(stores) do s:stop() end
end

return M
