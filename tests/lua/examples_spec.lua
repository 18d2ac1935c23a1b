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

-- The first interpreter of the examples' search that imports every module, asked
-- directly (not through the harness), or nil.
local function importable(modules)
  for _, py in ipairs(examples.python_candidates()) do
    local rc = os.execute(string.format("%q -c %q >/dev/null 2>&1", py,
      "import " .. table.concat(modules, ", ")))
    if rc == 0 or rc == true then return py end
  end
  return nil
end

local function has_line(lines, text)
  for _, l in ipairs(lines) do
    if l:find(text, 1, true) then return true end
  end
  return false
end

-- An interpreter (the default one) in which sklearn and PIL do not import: a
-- wrapper that puts modules raising ImportError first on the path.
local function interpreter_without_packages()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir .. "/hide/sklearn " .. dir .. "/hide/PIL") == 0)
  for _, m in ipairs({ "sklearn", "PIL" }) do
    local f = assert(io.open(dir .. "/hide/" .. m .. "/__init__.py", "w"))
    f:write("raise ImportError('hidden by examples_spec')\n")
    f:close()
  end
  local py = dir .. "/python"
  local f = assert(io.open(py, "w"))
  f:write("#!/bin/sh\nPYTHONPATH=\"" .. dir .. "/hide${PYTHONPATH:+:$PYTHONPATH}\" exec " ..
    (os.getenv("SLITHER_PYTHON") or "python3") .. " \"$@\"\n")
  f:close()
  assert(os.execute("chmod +x " .. py) == 0)
  return py, dir
end

local NEEDS = {
  { name = "ml_scoring", modules = { "sklearn" }, import = "sklearn", deb = "python3-sklearn" },
  { name = "image_pipeline", modules = { "PIL" }, import = "PIL", deb = "python3-pil" },
}

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

  for _, ex in ipairs(NEEDS) do
    it("runs " .. ex.name .. " at small scale where its packages import, else skips it",
      function()
        local py = importable(ex.modules)
        local rc, lines = capture(function()
          return examples.main({ ex.name, "--scale", "small", "--no-baseline", "--workers", "2" })
        end)
        local n, bad = check_lines(lines)
        if py then
          assert.are.same({}, bad)
          assert.is_true(n >= 10, ex.name .. " printed only " .. n .. " checks")
          assert.are.equal(0, rc, table.concat(lines, "\n"))
          -- the interpreter the search chose, and why
          local note
          for _, l in ipairs(lines) do note = note or l:match("^  interpreter: (.*)$") end
          assert.is_truthy(note, table.concat(lines, "\n"))
          assert.is_truthy(note:find(ex.import, 1, true))
          assert.is_truthy(has_line(lines, "1 run, 1 passed, 0 failed, 0 skipped"))
        else
          -- never reported as passed: skipped, with what is missing and the apt line
          assert.are.equal(0, n)
          assert.are.equal(1, rc)
          assert.is_true(has_line(lines, "skipped: needs " .. ex.import .. " (apt-get install -y " ..
            ex.deb .. ")"), table.concat(lines, "\n"))
          assert.is_true(has_line(lines, "0 run, 0 passed, 0 failed, 1 skipped"))
        end
        assert.are.equal(0, #slither.pool.all())
        assert.are.equal(0, #slither.store.all())
      end)
  end

  it("skips the examples no interpreter has the packages for, naming them", function()
    local py, dir = interpreter_without_packages()
    local real = examples.python_candidates
    examples.python_candidates = function() return { py } end
    local ok, err = pcall(function()
      local rc, lines = capture(function()
        return examples.main({ "--all", "--scale", "small", "--no-baseline", "--workers", "2" })
      end)
      local text = table.concat(lines, "\n")
      local _, bad = check_lines(lines)
      assert.are.same({}, bad)
      assert.are.equal(0, rc, text) -- under --all a skipped example is not a failure
      assert.is_true(has_line(lines, "3 run, 3 passed, 0 failed, 2 skipped"), text)
      for _, ex in ipairs(NEEDS) do
        assert.is_true(has_line(lines, "skipped: needs " .. ex.import .. " (apt-get install -y " ..
          ex.deb .. ")"), text)
        assert.is_true(has_line(lines, "skipped " .. ex.name .. ": apt-get install -y " .. ex.deb),
          text)
        for _, l in ipairs(lines) do -- not run: no header with a scale
          assert.is_nil(l:match("^=== " .. ex.name .. ": .*%(scale "), l)
        end
      end
      assert.is_true(has_line(lines, "looked in: " .. py), text)
      -- named on the command line, a skipped example is a failure
      rc, lines = capture(function() return examples.main({ "ml_scoring", "--scale", "small" }) end)
      assert.are.equal(1, rc)
      assert.is_true(has_line(lines, "skipped: needs sklearn (apt-get install -y python3-sklearn)"))
      -- and the list says what is missing
      rc, lines = capture(function() return examples.main({}) end)
      assert.are.equal(0, rc)
      assert.is_true(has_line(lines, "PIL (missing: apt-get install -y python3-pil)"))
    end)
    examples.python_candidates = real
    os.execute("rm -rf " .. dir)
    if not ok then error(err, 0) end
  end)

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
    for _, name in ipairs({ "text_analysis", "batch_stats", "data_etl", "ml_scoring",
                            "image_pipeline" }) do
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
    -- normal draws, the same as the pure-Python baselines' Rng(7).gauss
    local g = examples.rng(7)
    assert.are.equal(-3.457962924433206, g:gauss(0, 1))
    assert.are.equal(10.193678652274803, g:gauss(10, 2))
  end)
end)
