-- Sessions in the thread profile: a worker runs several calls at once, but never
-- two calls of one session, so the session's state sees one call at a time.
local slither = require("slither")
local H = require("helpers")

local MOD = "sl_session_threads_mod"

-- Run fn(i) for i = 1..n as concurrent tasks; their results in order.
local function all(n, fn)
  local tasks = {}
  for i = 1, n do tasks[i] = slither.spawn(function() return fn(i) end) end
  local out = {}
  for i = 1, n do
    local ok, r, err = tasks[i]:join()
    assert(ok, r)
    out[i] = assert(r, err and err.message)
  end
  return out
end

describe("thread-profile sessions", function()
  after_each(function() H.assert_clean() end)

  it("runs one session's calls one at a time: 40 increments end at 40 (#11)", function()
    local pool = H.pool{ size = 1, threads = 4, affinity = "strict" }
    local results = all(20, function()
      return pool:call(MOD, "bump", { 0, 0 }, { session = "counter" })
    end)
    assert.are.same({ 40 }, pool:call(MOD, "peek", { 0 }, { session = "counter" }))
    -- by the worker's own clock, no two calls of the session overlapped
    local spans = {}
    for _, r in ipairs(results) do spans[#spans + 1] = { r[1][2], r[1][3] } end
    table.sort(spans, function(a, b) return a[1] < b[1] end)
    for i = 2, #spans do
      assert(spans[i][1] >= spans[i - 1][2],
        ("calls %d and %d of one session overlapped"):format(i - 1, i))
    end
  end)

  it("still runs calls of two sessions at once on one worker (#11)", function()
    local pool = H.pool{ size = 1, threads = 4, affinity = "strict" }
    local r = all(2, function(i)
      local tag, other = i == 1 and "A" or "B", i == 1 and "B" or "A"
      return pool:call(MOD, "meet", { tag, other }, { session = tag })
    end)
    local a, b = r[1][1], r[2][1]
    assert.is_true(a[3], "session A's call never saw session B's come in")
    assert.is_true(b[3], "session B's call never saw session A's come in")
    assert(a[1] < b[2] and b[1] < a[2], "the two sessions' calls did not overlap in time")
  end)
end)
