-- The examples (scripts/examples/*.lua) at small scale: every check they print
-- holds, and `slither example`'s argument errors exit 2 naming what was wrong.
local slither = require("slither")
local H = require("helpers")
local examples = require("slither.examples")

-- Run fn with print captured; returns fn's results and the printed lines.
local function capture(fn)
  local lines = {}
  local real = _G.print
  _G.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    local text = table.concat(parts, "\t")
    for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  end
  local ok, a = pcall(fn)
  _G.print = real
  if not ok then error(a, 0) end
  return a, lines
end

local function check_lines(lines)
  local n, bad = 0, {}
  for _, l in ipairs(lines) do
    if l:match("^  .-: expected=.* observed=.* %[[A-Z]+%]$") then
      n = n + 1
      if not l:match("%[OK%]$") then bad[#bad + 1] = l end
    end
    assert.is_nil(l:find("\r", 1, true), "a progress line reached a non-terminal: " .. l)
  end
  return n, bad
end

describe("slither example", function()
  after_each(function() H.assert_clean() end)

  for _, name in ipairs({ "text_analysis", "batch_stats", "data_etl" }) do
    it("runs " .. name .. " at small scale with every check OK", function()
      local rc, lines = capture(function()
        return examples.main({ name, "--scale", "small", "--no-baseline", "--workers", "2" })
      end)
      local n, bad = check_lines(lines)
      assert.are.same({}, bad)
      assert.is_true(n >= 10, name .. " printed only " .. n .. " checks")
      assert.are.equal(0, rc, table.concat(lines, "\n"))
      -- the interpreter the workers ran on, from their hello
      local python
      for _, l in ipairs(lines) do python = python or l:match("^  python: (.*)$") end
      assert.is_truthy(python)
      assert.is_truthy(python:match("GIL"))
      -- nothing of the example is left running
      assert.are.equal(0, #slither.pool.all())
      assert.are.equal(0, #slither.store.all())
    end)
  end

  it("runs the pure-Python baseline after an example unless told not to", function()
    local rc, lines = capture(function()
      return examples.main({ "data_etl", "--scale=small", "--workers=1" })
    end)
    assert.are.equal(0, rc)
    local found = false
    for _, l in ipairs(lines) do if l:match("pure%-Python baseline") then found = true end end
    assert.is_true(found)
  end)

  it("lists the examples with what they need", function()
    local rc, lines = capture(function() return examples.main({}) end)
    assert.are.equal(0, rc)
    local text = table.concat(lines, "\n")
    for _, name in ipairs({ "text_analysis", "batch_stats", "data_etl" }) do
      assert.is_truthy(text:find(name, 1, true))
    end
    assert.is_truthy(text:find("standard library only", 1, true))
    assert.is_truthy(text:find("python: ", 1, true))
  end)

  it("rejects unknown names and options with exit code 2", function()
    local stderr = io.stderr
    local written = {}
    io.stderr = { write = function(_, s) written[#written + 1] = s end } -- luacheck: ignore
    local rcs = {
      examples.main({ "no_such_example" }),
      examples.main({ "--frobnicate" }),
      examples.main({ "--scale", "huge", "text_analysis" }),
      examples.main({ "--workers", "zero" }),
      examples.main({ "--all", "text_analysis" }),
    }
    io.stderr = stderr
    assert.are.same({ 2, 2, 2, 2, 2 }, rcs)
    local text = table.concat(written)
    assert.is_truthy(text:find("no_such_example", 1, true))
    assert.is_truthy(text:find("--frobnicate", 1, true))
    assert.is_truthy(text:find("huge", 1, true))
    assert.is_truthy(text:find("zero", 1, true))
  end)

  it("makes a deterministic generator", function()
    local a, b = examples.rng(7), examples.rng(7)
    for _ = 1, 100 do
      local x = a:int(1, 1000)
      assert.are.equal(x, b:int(1, 1000))
      assert.is_true(x >= 1 and x <= 1000)
    end
    local f = a:float()
    assert.is_true(f >= 0 and f < 1)
  end)
end)
