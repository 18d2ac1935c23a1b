-- Property test of the wire codecs through real workers (#11): seeded random values
-- cross Lua -> Python -> Lua and Python -> Lua under pickle and JSON, and each side
-- checks what it received against a canonical text of what was sent (see
-- tests/py/sl_codec_prop.py). A failure prints the seed and the smallest failing
-- value found by shrinking. SLITHER_SEED=N replays a run; SLITHER_PROP_VALUES sets
-- how many values each direction and codec tries (25,000 by default).
local slither = require("slither")
local H = require("helpers")
local ffi = require("ffi")

pcall(ffi.cdef, "int snprintf(char *s, size_t n, const char *fmt, ...);")

local SEED = tonumber(os.getenv("SLITHER_SEED") or "") or (os.time() % 1000000)
local COUNT = tonumber(os.getenv("SLITHER_PROP_VALUES") or "") or 25000
local BATCH = 500
local DEPTH = 6

-- ---- canonical text --------------------------------------------------------------

local numbuf = ffi.new("char[64]")
local function num(x)
  if x ~= x then return "nan" end
  local n = ffi.C.snprintf(numbuf, 64, "%.17g", ffi.cast("double", x))
  return ffi.string(numbuf, n)
end

local HEX = {}
for b = 0, 255 do HEX[string.char(b)] = string.format("%02x", b) end
local function hex(s)
  return (s:gsub(".", HEX))
end

-- Strict UTF-8, as the engine checks it: no overlongs, no surrogates, <= U+10FFFF.
local function utf8_valid(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len, cp
    if c < 0x80 then len, cp = 1, c
    elseif c >= 0xc2 and c <= 0xdf then len, cp = 2, c - 0xc0
    elseif c >= 0xe0 and c <= 0xef then len, cp = 3, c - 0xe0
    elseif c >= 0xf0 and c <= 0xf4 then len, cp = 4, c - 0xf0
    else return false end
    if i + len - 1 > n then return false end
    for k = 1, len - 1 do
      local b = s:byte(i + k)
      if b < 0x80 or b > 0xbf then return false end
      cp = cp * 64 + (b - 0x80)
    end
    if (len == 3 and cp < 0x800) or (len == 4 and (cp < 0x10000 or cp > 0x10ffff)) or
       (cp >= 0xd800 and cp <= 0xdfff) then
      return false
    end
    i = i + len
  end
  return true
end

local array_mt = getmetatable(slither.array())
local bytes_mt = getmetatable(slither.bytes(""))

local function is_list(t)
  if getmetatable(t) == array_mt then return true end
  return next(t) ~= nil and #t > 0 and next(t, #t) == nil
end

-- What Python receives for a Lua value (py = true), or what Lua holds (py = false:
-- strings and bytes are both Lua strings).
local function desc(v, py)
  local tv = type(v)
  if v == nil or v == slither.null then return "n" end
  if tv == "boolean" then return v and "T" or "F" end
  if tv == "number" then return num(v) end
  if tv == "string" then
    return ((py and not utf8_valid(v)) and "b" or "s") .. hex(v)
  end
  if getmetatable(v) == bytes_mt then return (py and "b" or "s") .. hex(v[1]) end
  if is_list(v) then
    local parts = {}
    for i = 1, #v do parts[i] = desc(v[i], py) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = desc(k, py) .. ":" .. desc(x, py) end
  table.sort(parts)
  return "{" .. table.concat(parts, ",") .. "}"
end

-- A readable rendering of a Lua value for failure messages.
local function show(v, depth)
  depth = depth or 0
  local tv = type(v)
  if v == slither.null then return "slither.null" end
  if tv == "string" then return string.format("%q", v) end
  if tv == "number" then return num(v) end
  if tv ~= "table" then return tostring(v) end
  if depth > 20 then return "..." end
  if getmetatable(v) == bytes_mt then return "slither.bytes(" .. string.format("%q", v[1]) .. ")" end
  local parts = {}
  if is_list(v) then
    for i = 1, #v do parts[i] = show(v[i], depth + 1) end
    return (getmetatable(v) == array_mt and "slither.array{" or "{") ..
      table.concat(parts, ", ") .. "}"
  end
  for k, x in pairs(v) do parts[#parts + 1] = "[" .. show(k) .. "] = " .. show(x, depth + 1) end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- ---- values built in Lua ---------------------------------------------------------

local u64 = ffi.new("union { double d; uint64_t u; uint32_t w[2]; }")
local bit = require("bit")
local function bits_double(hi, lo)
  -- A NaN read through the FFI keeps its payload, and some payloads are LuaJIT's
  -- own type tags: make it the canonical NaN, as lua_pushnumber does in the engine.
  if bit.band(hi, 0x7ff00000) == 0x7ff00000 and (bit.band(hi, 0xfffff) ~= 0 or lo ~= 0) then
    return 0 / 0
  end
  u64.w[0], u64.w[1] = lo, hi
  return u64.d
end

local R = math.random
local function rand32() return R(0, 0xffff) * 65536 + R(0, 0xffff) end

local SPECIAL_STR = { "", "\0", "\0b", "\0\0b", "\\", '"', "\\u0000", "\226\128\168",
                      "a\0b", "\127", "\239\187\191", "\244\143\191\191", "\237\160\128",
                      "\192\128", "\255\254" }
local SPECIAL_NUM = { 0, -0.0, 1 / 0, -1 / 0, 0 / 0, 5e-324, -5e-324, 2.2250738585072014e-308,
                      1.7976931348623157e308, -1.7976931348623157e308, 0.1, 1e15, 1e16,
                      2 ^ 53, -(2 ^ 53), 2 ^ 63, -(2 ^ 63), 2 ^ 64, 1e300, 4503599627370495.5 }

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xc0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xe0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xf0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
                     0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local LENS = { 0, 1, 2, 3, 5, 8, 16, 40, 120 }
local function rand_string()
  local k = R()
  if k < 0.12 then return SPECIAL_STR[R(#SPECIAL_STR)] end
  local n = LENS[R(#LENS)]
  local out = {}
  if k < 0.25 then -- raw bytes, most of them not UTF-8
    for i = 1, n do out[i] = string.char(R(0, 255)) end
    return table.concat(out)
  end
  for i = 1, n do
    local c = R()
    local cp
    if c < 0.5 then cp = R(0, 0x7f)
    elseif c < 0.7 then cp = R(0x80, 0x7ff)
    elseif c < 0.85 then
      cp = R(0x800, 0xfffd)
      if cp >= 0xd800 and cp <= 0xdfff then cp = cp - 0x800 end
    else cp = R(0x10000, 0x10ffff) end
    out[i] = utf8_char(cp)
  end
  return table.concat(out)
end

local function rand_number()
  local k = R()
  local v
  if k < 0.3 then
    v = 2 ^ R(0, 53) + R(-1, 1)
  elseif k < 0.55 then
    v = math.floor(R() * 2 ^ R(1, 53))
  elseif k < 0.62 then
    v = math.floor(R() * 2 ^ R(54, 63)) * 2 ^ R(0, 8) -- integral doubles past 2^53
  elseif k < 0.72 then
    return SPECIAL_NUM[R(#SPECIAL_NUM)]
  elseif k < 0.92 then
    return bits_double(rand32(), rand32())
  else
    return bits_double(R(0, 0xfffff), rand32()) * (R() < 0.5 and 1 or -1) -- subnormal
  end
  return R() < 0.5 and -v or v
end

local function gen(depth)
  local k = R()
  if depth <= 0 or k < 0.55 then
    local c = R()
    if c < 0.05 then return slither.null end
    if c < 0.1 then return R() < 0.5 end
    if c < 0.5 then return rand_number() end
    if c < 0.9 then return rand_string() end
    return slither.bytes(rand_string())
  end
  if k < 0.58 then -- a deep chain
    local v = gen(0)
    for _ = 1, R(1, 150) do
      if R() < 0.5 then v = slither.array{ v } else v = { k = v } end
    end
    return v
  end
  local n = ({ 0, 0, 1, 2, 3, 5, 10 })[R(7)]
  if k < 0.8 then
    local t = R() < 0.5 and slither.array() or {}
    for i = 1, n do t[i] = gen(depth - 1) end
    if n == 0 then t = slither.array() end -- a plain empty table is a dict
    return t
  end
  local t = {}
  for _ = 1, n do
    local key = rand_string()
    if not utf8_valid(key) then key = hex(key) end
    t[key] = gen(depth - 1)
  end
  return t
end

local function gen_at(seed, i)
  math.randomseed(seed * 1000003 + i)
  return gen(DEPTH)
end

-- ---- shrinking -------------------------------------------------------------------

local function copy_list(t, skip)
  local out = getmetatable(t) == array_mt and slither.array() or {}
  for i = 1, #t do
    if i ~= skip then out[#out + 1] = t[i] end
  end
  if #out == 0 then out = slither.array() end
  return out
end

-- Values smaller than v: its parts, v with one part removed or made simpler.
local function candidates(v)
  local out = {}
  local tv = type(v)
  if tv == "number" then
    for _, c in ipairs{ 0, 1, math.floor(v / 2) } do
      if c == c and math.abs(c) < math.abs(v) then out[#out + 1] = c end
    end
  elseif tv == "string" then
    if #v > 0 then
      out[#out + 1] = v:sub(1, math.floor(#v / 2))
      out[#out + 1] = v:sub(math.floor(#v / 2) + 1)
      for i = 1, math.min(#v, 12) do out[#out + 1] = v:sub(1, i - 1) .. v:sub(i + 1) end
    end
  elseif tv == "table" and getmetatable(v) == bytes_mt then
    for _, s in ipairs(candidates(v[1])) do out[#out + 1] = slither.bytes(s) end
    out[#out + 1] = v[1]
  elseif tv == "table" and is_list(v) then
    for i = 1, #v do out[#out + 1] = v[i] end
    for i = 1, #v do out[#out + 1] = copy_list(v, i) end
    for i = 1, #v do
      for _, c in ipairs(candidates(v[i])) do
        local t = copy_list(v)
        t[i] = c
        out[#out + 1] = t
      end
    end
  elseif tv == "table" then
    for k, x in pairs(v) do
      out[#out + 1] = x
      local t = {}
      for k2, x2 in pairs(v) do if k2 ~= k then t[k2] = x2 end end
      out[#out + 1] = t
    end
    for k, x in pairs(v) do
      for _, c in ipairs(candidates(x)) do
        local t = {}
        for k2, x2 in pairs(v) do t[k2] = x2 end
        t[k] = c
        out[#out + 1] = t
      end
    end
  end
  return out
end

-- Smaller batches than b (a list of payloads): one item alone, a half, b without
-- one item, b with one item made smaller (cand gives an item's candidates).
local function batch_candidates(b, cand)
  local out = {}
  if #b > 1 then
    for i = 1, #b do out[#out + 1] = { b[i] } end
    local h = math.floor(#b / 2)
    out[#out + 1] = { unpack(b, 1, h) }
    out[#out + 1] = { unpack(b, h + 1) }
    for i = 1, #b do
      local t = {}
      for j = 1, #b do if j ~= i then t[#t + 1] = b[j] end end
      out[#out + 1] = t
    end
  end
  for i = 1, #b do
    for _, c in ipairs(cand(b[i])) do
      local t = { unpack(b) }
      t[i] = c
      out[#out + 1] = t
    end
  end
  return out
end

-- Greedy: take the first smaller candidate that still fails, until none does. A
-- failure that needs two items together (one value's bytes beside another's key)
-- survives, since whole batches shrink.
local function shrink(b, cand, fails)
  local steps, progress = 0, true
  while progress and steps < 2000 do
    progress = false
    for _, c in ipairs(batch_candidates(b, cand)) do
      steps = steps + 1
      if fails(c) then
        b, progress = c, true
        break
      end
    end
  end
  return b
end

-- ---- the checks --------------------------------------------------------------------

-- Lua -> Python -> Lua for one batch: the text Python received and the value that
-- came back must both match. Returns nil, or a message.
local function lua_round_trip(pool, batch)
  -- a value the engine refuses to encode raises (misuse): that fails here too
  local ok, got, err = pcall(pool.call, pool, "sl_codec_prop", "describe", batch)
  if not ok then return "refused: " .. tostring(got) end
  if not got then return "describe failed: " .. tostring(err.kind) .. ": " .. tostring(err.message) end
  local back, err2 = pool:call("sl_codec_prop", "echo", batch)
  if not back then return "echo failed: " .. tostring(err2.kind) .. ": " .. tostring(err2.message) end
  for i = 1, #batch do
    local want = desc(batch[i], true)
    if got[i] ~= want then
      return string.format("item %d: Python received %s, want %s", i, got[i], want), i
    end
    local want_back, have = desc(batch[i], false), desc(back[i], false)
    if have ~= want_back then
      return string.format("item %d: came back as %s, want %s", i, have, want_back), i
    end
  end
  return nil
end

local function fail_report(what, codec, seed, index, msg, smallest)
  return string.format("%s (codec %s) failed for seed %d (SLITHER_SEED=%d), value %d:\n  %s\n" ..
                       "smallest failing value: %s", what, codec, seed, seed, index, msg, smallest)
end

describe("codec properties through real workers (#11)", function()
  after_each(function() H.assert_clean() end)
  print(string.format("codec properties: seed %d (SLITHER_SEED=%d replays), %d values per " ..
                      "direction and codec", SEED, SEED, COUNT))

  for _, codec in ipairs{ "pickle", "json" } do
    it("carries random Lua values to Python and back unchanged under " .. codec, function()
      local pool = H.pool{ size = 2, codec = codec }
      local n = 0
      for first = 1, COUNT, BATCH do
        local batch = {}
        for i = first, math.min(first + BATCH - 1, COUNT) do batch[#batch + 1] = gen_at(SEED, i) end
        local msg, at = lua_round_trip(pool, batch)
        if msg then
          local index = first + (at or 1) - 1
          local small = shrink(batch, candidates, function(c) return lua_round_trip(pool, c) ~= nil end)
          error(fail_report("Lua -> Python", codec, SEED, index, msg,
                            "batch " .. show(small) .. "\n  " .. tostring(lua_round_trip(pool, small))), 0)
        end
        n = n + #batch
      end
      assert.are.equal(COUNT, n)
    end)

    it("carries random values built in Python to Lua unchanged under " .. codec, function()
      local pool = H.pool{ size = 2, codec = codec }
      local n = 0
      -- nil, or what is wrong with the batch built from these specs
      local function check_specs(specs)
        local b, err = pool:call("sl_codec_prop", "build", specs)
        if not b then return "did not cross: " .. tostring(err.kind) .. ": " .. tostring(err.message) end
        for j, pair in ipairs(b) do
          local have = desc(pair[1], false)
          if have ~= pair[2] then return string.format("value %d: Lua received %s, want %s", j, have, pair[2]) end
        end
        return nil
      end
      local cache = {}
      local function spec_candidates(spec)
        if not cache[spec] then cache[spec] = assert(pool:call("sl_codec_prop", "shrink", { spec }))[1] end
        return cache[spec]
      end
      for first = 1, COUNT, BATCH do
        local count = math.min(BATCH, COUNT - first + 1)
        local range = slither.array{ SEED, first, count, DEPTH }
        local r, err = pool:call("sl_codec_prop", "gen", { range })
        local msg
        if not r then
          msg = "the batch did not cross: " .. tostring(err.kind) .. ": " .. tostring(err.message)
        else
          for j, pair in ipairs(r[1]) do
            local have = desc(pair[1], false)
            if have ~= pair[2] then
              msg = string.format("value %d: Lua received %s, want %s", first + j - 1, have, pair[2])
              break
            end
            n = n + 1
          end
        end
        if msg then
          local specs = assert(pool:call("sl_codec_prop", "specs", { range }))[1]
          local small = shrink(specs, spec_candidates, function(c) return check_specs(c) ~= nil end)
          error(fail_report("Python -> Lua", codec, SEED, first, msg,
                            "specs " .. table.concat(small, " ") .. "\n  " .. tostring(check_specs(small))), 0)
        end
      end
      assert.are.equal(COUNT, n)
    end)

    it("carries a payload nested 199 deep both ways, and refuses one level more, under " ..
       codec, function()
      local pool = H.pool{ size = 1, codec = codec }
      local function chain(k)
        local v = 1
        for _ = 1, k do v = slither.array{ v } end
        return v
      end
      local function depth(v)
        local k = 0
        while type(v) == "table" do v, k = v[1], k + 1 end
        assert.are.equal(1, v)
        return k
      end
      local r = assert(pool:call("sl_codec_prop", "echo", { chain(199) }))
      assert.are.equal(199, depth(r[1]))
      local ok, msg = pcall(pool.call, pool, "sl_codec_prop", "echo", { chain(200) })
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("nested too deeply", 1, true), tostring(msg))
      r = assert(pool:call("sl_codec_prop", "chain", { 199 }))
      assert.are.equal(199, depth(r[1]))
      local deeper, err = pool:call("sl_codec_prop", "chain", { 200 })
      assert.is_nil(deeper)
      assert.are.equal("codec", err.kind)
      assert.truthy(err.message:find("too deeply", 1, true), err.message)
      -- the worker lives on
      assert.are.same({ 2 }, pool:call("sl_testmod", "double", { 1 }))
    end)

    it("refuses Lua values that cannot cross, naming where they are, under " .. codec, function()
      local pool = H.pool{ size = 1, codec = codec }
      local cyc = {}
      cyc.self = cyc
      local bad = {
        { function() end, "cannot encode a value of type function" },
        { coroutine.create(function() end), "cannot encode a value of type thread" },
        { io.stdout, "cannot encode a value of type userdata" },
        { { 1, a = 2 }, "table mixes list indices and string keys" },
        { { 1, nil, 3 }, "use slither.null for nil" },
        { { ["\255"] = 1 }, "table key is not valid UTF-8" },
        { { [1.5] = 1 }, "number key that is not a list index" },
        { { [true] = 1 }, "table key of type boolean" },
        { cyc, "nested too deeply (or a cycle)" },
      }
      math.randomseed(SEED)
      for trial = 1, 200 do
        local b = bad[(trial - 1) % #bad + 1]
        -- the bad value at a random place inside a random valid payload
        local v, path = b[1], ""
        local steps = {}
        for _ = 1, R(0, 4) do
          if R() < 0.5 then
            local n = R(1, 3)
            steps[#steps + 1] = "[" .. n .. "]"
            local t = slither.array()
            for i = 1, n - 1 do t[i] = gen(1) end
            t[n] = v
            v = t
          else
            local key = "k" .. R(1, 99)
            steps[#steps + 1] = "." .. key
            v = { [key] = v, other = gen(1) }
          end
        end
        for i = #steps, 1, -1 do path = path .. steps[i] end
        local batch = { gen(2), gen(2) }
        local at = R(1, 3)
        table.insert(batch, at, v)
        path = ("payloads[%d]%s"):format(at, path):gsub("%]%.", "].")
        local ok, msg = pcall(pool.call, pool, "sl_codec_prop", "echo", batch)
        msg = tostring(msg)
        if ok or not msg:find(b[2], 1, true) or (b[1] ~= cyc and not msg:find(path .. ": ", 1, true)) then
          error(("seed %d trial %d: want an error at %s saying %q, got %s"):format(
            SEED, trial, path, b[2], ok and "success" or msg), 0)
        end
      end
      -- nothing was sent: the worker serves the next call
      assert.are.same({ 2 }, pool:call("sl_testmod", "double", { 1 }))
    end)

    it("refuses Python values that cannot cross with a codec error naming them, under " ..
       codec, function()
      local pool = H.pool{ size = 1, codec = codec }
      for _, case in ipairs{ { "set", "set" }, { "frozenset", "set" }, { "object", "Opaque" },
                             { "complex", "complex" }, { "function", "builtin_function" },
                             { "lone surrogate", "lone surrogate" } } do
        local r, err = pool:call("sl_codec_prop", "bad_result", { "fine", case[1] })
        assert.is_nil(r)
        assert.are.equal("codec", err.kind, case[1] .. ": " .. tostring(err.message))
        assert.truthy(err.message:find(case[2], 1, true), case[1] .. ": " .. err.message)
        assert.are.equal("test/w1", err.worker)
      end
      assert.are.same({ 2 }, pool:call("sl_testmod", "double", { 1 }))
    end)
  end

  it("carries random Lua values through the store to Python's direct reads, and Python " ..
     "values through views into Lua", function()
    local n_store = math.max(1, math.floor(COUNT / 5))
    local values = {}
    local def = slither.store.define{
      name = "codec_prop",
      tables = { { name = "vals", type = "set" } },
      views = {
        { name = "value_at", mode = "scalar", scope = "global",
          handler = function(k) return values[k] end },
        { name = "describe", mode = "scalar", scope = "global",
          handler = function(v) return desc(v, false) end },
      },
    }
    local store = slither.store.start(def)
    local pool = H.pool{ size = 2 }
    for first = 1, n_store, BATCH do
      local keys = slither.array()
      for i = first, math.min(first + BATCH - 1, n_store) do
        local v = gen_at(SEED + 1, i)
        values["k" .. i] = v
        keys[#keys + 1] = "k" .. i
        store:put("vals", "k" .. i, v)
      end
      local got = assert(pool:call("sl_codec_prop", "describe_store",
                                   { slither.array{ "codec_prop", "vals", keys } }))[1]
      local viewed = assert(pool:call("sl_codec_prop", "describe_view",
                                      { slither.array{ "value_at", slither.array{ unpack(keys, 1, 20) } } }))[1]
      for j, key in ipairs(keys) do
        local want = desc(values[key], true)
        if got[j] ~= want then
          error(("store path, seed %d (SLITHER_SEED=%d) value %s = %s:\n  Python read %s, want %s")
            :format(SEED, SEED, key, show(values[key]), got[j], want), 0)
        end
        local back = desc(store:get("vals", key), false)
        assert.are.equal(desc(values[key], false), back, "store:get of " .. key)
        if viewed[j] then
          assert.are.equal(want, viewed[j], "view result for " .. key .. ": " .. show(values[key]))
        end
      end
      values = {}
    end
    -- Python values as view arguments, described by the Lua handler
    local n_view = math.max(1, math.floor(COUNT / 25))
    local pairs_ = assert(pool:call("sl_codec_prop", "send_view",
                                    { slither.array{ "describe", SEED + 2, 1, n_view, DEPTH } }))[1]
    assert.are.equal(n_view, #pairs_)
    for j, p in ipairs(pairs_) do
      if p[1] ~= p[2] then
        error(("view argument path, seed %d value %d, spec %s:\n  Lua saw %s, want %s")
          :format(SEED + 2, j, p[3], p[1], p[2]), 0)
      end
    end
    store:stop()
  end)
end)
