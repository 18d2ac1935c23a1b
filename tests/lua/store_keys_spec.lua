-- Store keys and names the engine cannot keep as given are refused by name:
-- NaN keys (NaN equals nothing, so it broke ordered_set order and range), -0.0
-- is the key 0, and store and table names longer than 63 bytes (they were cut
-- short, and every access then failed with "has no table").

local slither = require("slither")

local function errmsg(fn, ...)
  local ok, msg = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(msg)
end

local function start(spec) return assert(slither.store.start(slither.store.define(spec))) end

local function range_keys(st, t, a, b)
  local ks = {}
  for k in st:range(t, a, b) do ks[#ks + 1] = k end
  return ks
end

describe("store keys", function()
  local nan = 0 / 0

  it("refuses NaN as a key in every table type and every operation (#12 item 7)", function()
    local st = start{ name = "nan_keys", tables = { { name = "s" },
      { name = "o", type = "ordered_set" }, { name = "b", type = "bag" } } }
    for _, t in ipairs({ "s", "o", "b" }) do
      local msg = errmsg(st.put, st, t, nan, 1)
      assert.truthy(msg:find("cannot be NaN", 1, true), msg)
      assert.truthy(errmsg(st.get, st, t, nan):find("cannot be NaN", 1, true))
      assert.truthy(errmsg(st.delete, st, t, nan):find("cannot be NaN", 1, true))
      assert.are.equal(0, st:size(t))
    end
    st:stop()
  end)

  it("keeps ordered_set order and range whole around refused NaN keys (#12 item 7)", function()
    local st = start{ name = "nan_range", tables = { { name = "o", type = "ordered_set" } } }
    for k = 1, 40 do
      st:put("o", k, k)
      if k % 3 == 0 then pcall(st.put, st, "o", nan, k) end
    end
    local want = {}
    for k = 22, 30 do want[#want + 1] = k end
    assert.are.same(want, range_keys(st, "o", 22, 30))
    assert.are.equal(40, #range_keys(st, "o"))
    assert.truthy(errmsg(function() for _ in st:range("o", nan, 30) do end end)
      :find("cannot be NaN", 1, true))
    assert.truthy(errmsg(function() for _ in st:range("o", 1, nan) do end end)
      :find("cannot be NaN", 1, true))
    st:stop()
  end)

  it("treats -0.0 and 0 as one key (#12 item 7)", function()
    local st = start{ name = "zero_keys", tables = { { name = "s" },
      { name = "o", type = "ordered_set" } } }
    for _, t in ipairs({ "s", "o" }) do
      st:put(t, -0.0, "neg")
      st:put(t, 0, "pos")
      assert.are.equal(1, st:size(t))
      assert.are.equal("pos", st:get(t, -0.0))
      st:delete(t, -0.0)
      assert.is_nil(st:get(t, 0))
    end
    st:stop()
  end)
end)

describe("store names", function()
  it("refuses a table name over 63 bytes and keeps one of 63 whole (#12 item 17)", function()
    local long = string.rep("t", 64)
    local msg = errmsg(slither.store.define, { name = "long_tables", tables = { { name = long } } })
    assert.truthy(msg:find("at most 63", 1, true), msg)
    local name63 = string.rep("u", 62) .. "x"
    local st = start{ name = "long_tables", tables = { { name = name63 }, { name = "short" } } }
    st:put(name63, "k", 1)
    st:put("short", "k", 2)
    assert.are.equal(1, st:get(name63, "k"))
    assert.are.equal(2, st:get("short", "k"))
    st:stop()
  end)

  it("refuses a store name over 63 bytes (#12 item 17)", function()
    local msg = errmsg(slither.store.define, { name = string.rep("s", 64),
      tables = { { name = "t" } } })
    assert.truthy(msg:find("at most 63", 1, true), msg)
  end)
end)
