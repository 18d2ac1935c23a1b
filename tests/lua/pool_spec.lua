-- The worker pool against real Python workers: results, every error kind, crashes,
-- timeouts, garbage on the pipe, affinity, recycling and clean shutdown.
local slither = require("slither")
local H = require("helpers")
local ffi = require("ffi")

describe("slither.pool", function()
  after_each(function() H.assert_clean() end)

  it("calls a Python function with a batch and returns its results", function()
    local pool = H.pool{ size = 2 }
    local r = assert(pool:call("sl_testmod", "double", { 1, 2, 3 }))
    assert.are.same({ 2, 4, 6 }, r)
    local s = pool:stats()
    assert.are.equal(2, s.workers)
    assert.are.equal(2, s.capacity)
    assert.are.equal(1, s.calls)
    assert.are.equal(0, s.errors)
    assert.are.equal(pool, slither.pool.get("test"))
    -- what the workers said of themselves in their hello
    local h = pool:hello()
    assert.truthy(tostring(h.python):match("^3%.%d+"))
    assert.are.equal("CPython", h.implementation)
    local f = io.open(h.executable, "rb")
    assert.truthy(f, "the hello's executable is a file: " .. tostring(h.executable))
    f:close()
  end)

  it("reports a Python exception with its type, message and traceback", function()
    local pool = H.pool{ size = 1 }
    local pid = pool:pids()[1]
    local r, err = pool:call("sl_testmod", "boom", { 42 })
    assert.is_nil(r)
    assert.are.equal("python", err.kind)
    assert.are.equal("ValueError", err.type)
    assert.are.equal("bad value: 42", err.message)
    assert.truthy(err.traceback:find("in boom", 1, true))
    assert.are.equal("test/w1", err.worker)
    -- an exception is not a crash: the same worker serves the next call
    assert.are.same({ 2 }, pool:call("sl_testmod", "double", { 1 }))
    assert.are.equal(pid, pool:pids()[1])
    assert.are.equal(0, pool:stats().restarts)
  end)

  it("reports a missing module and a missing function as kind import", function()
    local pool = H.pool{ size = 1 }
    local _, err = pool:call("no_such_module_xyz", "f", { 1 })
    assert.are.equal("import", err.kind)
    assert.truthy(err.message:find("no_such_module_xyz", 1, true))
    local _, err2 = pool:call("sl_testmod", "no_such_function", { 1 })
    assert.are.equal("import", err2.kind)
    assert.truthy(err2.message:find("no_such_function", 1, true))
  end)

  it("refuses a result of the wrong length or type (result_mismatch)", function()
    local pool = H.pool{ size = 1 }
    local _, err = pool:call("sl_testmod", "wrong_length", { 1, 2 })
    assert.are.equal("result_mismatch", err.kind)
    assert.truthy(err.message:find("3 results for 2 payloads", 1, true))
    local _, err2 = pool:call("sl_testmod", "not_a_list", { 1 })
    assert.are.equal("result_mismatch", err2.kind)
    local _, err3 = pool:call("sl_testmod", "unencodable", { 1 })
    assert.are.equal("codec", err3.kind) -- nothing in the function failed (#11)
    assert.truthy(err3.message:find("cannot encode a value of type object", 1, true))
  end)

  it("times out a hung call, kills its worker and serves the next call", function()
    local pool = H.pool{ size = 1, call_timeout_ms = 300 }
    local old = pool:pids()[1]
    local t0 = slither.now()
    local r, err = pool:call("sl_testmod", "hang", { 1 })
    assert.is_nil(r)
    assert.are.equal("timeout", err.kind)
    assert.truthy(slither.now() - t0 < 3000)
    -- the next call runs on a new worker; the hung one is gone, so no overlap
    assert.are.same({ 4 }, pool:call("sl_testmod", "double", { 2 }))
    assert.is_false(slither.core.pid_alive(old))
    assert.are_not.equal(old, pool:pids()[1])
    assert.are.equal(1, pool:stats().timeouts)
    -- a per-call timeout overrides the pool's
    local _, err2 = pool:call("sl_testmod", "slow", { 0.5 }, { timeout_ms = 100 })
    assert.are.equal("timeout", err2.kind)
  end)

  it("reports a worker that exits mid-call and replaces it", function()
    local pool = H.pool{ size = 1 }
    local _, err = pool:call("sl_testmod", "exit_now", { 3 })
    assert.are.equal("worker_crashed", err.kind)
    assert.are.equal(3, err.exit_status)
    assert.are.same({ 2 }, pool:call("sl_testmod", "double", { 1 }))
    assert.are.equal(1, pool:stats().restarts)
  end)

  it("reports a worker killed with SIGKILL mid-call and replaces it", function()
    local pool = H.pool{ size = 2 }
    local t = slither.spawn(function() return pool:call("sl_testmod", "slow", { 5 }) end)
    assert.is_true(H.wait_until(function() return pool:stats().busy == 1 end))
    -- kill both workers: the busy one dies mid-call
    for _, pid in ipairs(pool:pids()) do H.kill(pid, 9) end
    local ok, r, err = t:join()
    assert.is_true(ok)
    assert.is_nil(r)
    assert.are.equal("worker_crashed", err.kind)
    assert.are.equal(9, err.signal)
    assert.is_true(H.wait_until(function() return pool:stats().ready == 2 end))
    assert.are.same({ 2, 4 }, pool:call("sl_testmod", "double", { 1, 2 }))
  end)

  it("survives garbage on the frame pipe: the worker is replaced", function()
    local pool = H.pool{ size = 1 }
    local _, err = pool:call("sl_testmod", "garbage", { 1 })
    assert.are.equal("protocol", err.kind)
    assert.truthy(err.message:find("bad frame", 1, true))
    assert.are.same({ 6 }, pool:call("sl_testmod", "double", { 3 }))
  end)

  it("keeps the protocol intact when a function prints a lot", function()
    local pool = H.pool{ size = 1 }
    local r = assert(pool:call("sl_testmod", "chatty", { 50000, 2 }))  -- ~5 MB of lines
    assert.are.same({ 99, 99 }, r)
  end)

  it("carries values exactly through Python and back", function()
    local pool = H.pool{ size = 1 }
    local big = 2 ^ 53
    local payload = {
      big, -big, 123456789012345, 0.1, 1 / 3, -0.0, 1e300, "héllo 😀", "",
      slither.array(), {}, { a = { b = { 1, 2, slither.null } } }, slither.null, true, false,
      slither.bytes("\0\1\2\255"), "\255\254 not utf-8",
    }
    local r = assert(pool:call("sl_testmod", "echo", payload))
    assert.are.equal(#payload, #r)
    assert.are.equal(big, r[1])
    assert.are.equal(-big, r[2])
    assert.are.equal(123456789012345, r[3])
    assert.are.equal(0.1, r[4])
    assert.are.equal(1 / 3, r[5])
    assert.are.equal(1e300, r[7])
    assert.are.equal("héllo 😀", r[8])
    assert.are.equal("", r[9])
    assert.are.equal(slither.core.array_mt, getmetatable(r[10]))
    assert.are.equal(0, #r[10])
    assert.are.equal(nil, next(r[11]))
    assert.are.equal(slither.null, r[12].a.b[3])
    assert.are.equal(slither.null, r[13])
    assert.are.equal(true, r[14])
    assert.are.equal(false, r[15])
    assert.are.equal("\0\1\2\255", r[16])
    assert.are.equal("\255\254 not utf-8", r[17])
    local t = assert(pool:call("sl_testmod", "types", payload))
    assert.are.same({ "int", "int", "int", "float", "float", "float", "float", "str", "str",
      "list", "dict", "dict", "NoneType", "bool", "bool", "bytes", "bytes" }, t)
    local nan = assert(pool:call("sl_testmod", "echo", { 0 / 0, math.huge, -math.huge }))
    assert.is_true(nan[1] ~= nan[1])
    assert.are.equal(math.huge, nan[2])
    assert.are.equal(-math.huge, nan[3])
  end)

  it("round-trips records with repeated keys, many keys, and a refused mixed table", function()
    local pool = H.pool{ size = 1 }
    local recs = {}
    for i = 1, 300 do recs[i] = { id = i, text = "t" .. i, nested = { id = -i } } end
    local wide = {}
    for k = 1, 200 do wide["k" .. k] = k end
    recs[301] = wide
    local r = assert(pool:call("sl_testmod", "echo", recs))
    assert.are.equal(301, #r)
    for i = 1, 300 do
      assert.are.same({ id = i, text = "t" .. i, nested = { id = -i } }, r[i])
    end
    assert.are.same(wide, r[301])
    -- a table whose keys turn out not to be all strings is refused whole, and the
    -- keys written before that point leave nothing behind in the stream
    local ok, msg = pcall(pool.call, pool, "sl_testmod", "echo",
      { { a = 1, b = 2 }, { a = 3, [5] = 4 } })
    assert.is_false(ok)
    assert.truthy(tostring(msg):find("[2]", 1, true))
    assert.are.same({ { a = 1 }, { b = 2 } }, pool:call("sl_testmod", "echo", { { a = 1 }, { b = 2 } }))
  end)

  it("raises at once on payloads it cannot encode, naming the place", function()
    local pool = H.pool{ size = 1 }
    assert.has_error(function() pool:call("sl_testmod", "echo", { 1, { f = print } }) end,
      "cannot encode payloads[2].f: cannot encode a value of type function")
    assert.has_error(function() pool:call("sl_testmod", "echo", { a = 1 }) end)
    -- nothing was sent, the pool still works
    assert.are.same({ 1 }, pool:call("sl_testmod", "echo", { 1 }))
  end)

  it("keeps strict sessions on their worker and reports a lost session", function()
    local pool = H.pool{ size = 2, affinity = "strict" }
    local a1 = assert(pool:call("sl_testmod", "count_calls", { 0 }, { session = "A" }))[1]
    local b1 = assert(pool:call("sl_testmod", "count_calls", { 0 }, { session = "B" }))[1]
    assert.are_not.equal(a1[2], b1[2]) -- new sessions go to the least loaded worker
    for i = 2, 5 do
      local a = assert(pool:call("sl_testmod", "count_calls", { 0 }, { session = "A" }))[1]
      assert.are.same({ i, a1[2] }, a)
    end
    H.kill(a1[2], 9)
    assert.is_true(H.wait_until(function() return pool:stats().restarts == 1 end))
    local r, err = pool:call("sl_testmod", "count_calls", { 0 }, { session = "A" })
    assert.is_nil(r)
    assert.are.equal("session_lost", err.kind)
    assert.truthy(err.message:find("'A'", 1, true))
    -- the other session lives on
    assert.are.same({ 2, b1[2] }, pool:call("sl_testmod", "count_calls", { 0 }, { session = "B" })[1])
    -- releasing the lost session lets it start afresh
    pool:release_session("A")
    assert.are.equal(1, pool:call("sl_testmod", "count_calls", { 0 }, { session = "A" })[1][1])
  end)

  it("keeps hint sessions on their worker and moves them when it dies", function()
    local pool = H.pool{ size = 2, affinity = "hint" }
    local first = assert(pool:call("sl_testmod", "count_calls", { 0 }, { session = "S" }))[1]
    for i = 2, 4 do
      assert.are.same({ i, first[2] }, pool:call("sl_testmod", "count_calls", { 0 },
        { session = "S" })[1])
    end
    H.kill(first[2], 9)
    assert.is_true(H.wait_until(function() return pool:stats().restarts == 1 end))
    local moved = assert(pool:call("sl_testmod", "count_calls", { 0 }, { session = "S" }))[1]
    assert.are.equal(1, moved[1]) -- fresh state on another worker, no error under hint
    assert.are_not.equal(first[2], moved[2])
  end)

  it("releases a session's state in the workers", function()
    local pool = H.pool{ size = 1 }
    pool:call("sl_testmod", "count_calls", { 0 }, { session = "R" })
    assert.are.equal(2, pool:call("sl_testmod", "count_calls", { 0 }, { session = "R" })[1][1])
    pool:release_session("R")
    assert.are.equal(1, pool:call("sl_testmod", "count_calls", { 0 }, { session = "R" })[1][1])
    local _, err = pool:call("sl_testmod", "count_calls", { 0 })
    assert.are.equal("python", err.kind)
    assert.truthy(err.message:find("no session", 1, true))
  end)

  it("recycles a worker after max_calls, starting its replacement first", function()
    local pool = H.pool{ size = 1, max_calls = 5, max_calls_jitter = 0 }
    local pids = {}
    for i = 1, 12 do
      local r = assert(pool:call("sl_testmod", "pid", { i }))
      pids[#pids + 1] = r[1]
    end
    assert.are.equal(pids[1], pids[5])
    assert.are_not.equal(pids[5], pids[6])
    assert.are.equal(pids[6], pids[10])
    assert.are_not.equal(pids[10], pids[11])
    assert.are.equal(2, pool:stats().recycles)
    assert.are.equal(0, pool:stats().errors)
    -- the replacement was started before the recycled worker left
    local order = {}
    for _, ev in ipairs(H.events) do
      if ev.name == "slither.pool.worker.start" or ev.name == "slither.pool.worker.exit" then
        order[#order + 1] = ev.name:match("worker%.(%a+)") .. ":" .. ev.pid
      end
    end
    local start2, exit1
    for i, e in ipairs(order) do
      if e == "start:" .. pids[6] then start2 = i end
      if e == "exit:" .. pids[1] then exit1 = i end
    end
    assert.truthy(start2 and exit1 and start2 < exit1)
  end)

  it("recycles a worker whose resident memory passes max_rss_mb", function()
    local pool = H.pool{ size = 1, max_rss_mb = 150 }
    local pid = assert(pool:call("sl_testmod", "hog", { 200 }))[1]
    assert.is_true(H.wait_until(function() return pool:stats().recycles == 1 end, 5000))
    -- it serves on until its replacement is ready, then leaves
    assert.is_true(H.wait_until(function() return not H.set(pool:pids())[pid] end, 5000))
    assert.are.equal(1, pool:stats().ready)
    local now = assert(pool:call("sl_testmod", "pid", { 0 }))[1]
    assert.are_not.equal(pid, now)
  end)

  it("recycles a worker when it reaches its ttl", function()
    local pool = H.pool{ size = 1, ttl_s = 0.5 }
    local first = assert(pool:call("sl_testmod", "pid", { 0 }))[1]
    assert.is_true(H.wait_until(function() return pool:stats().recycles >= 1 end, 5000))
    assert.is_true(H.wait_until(function()
      local now = pool:call("sl_testmod", "pid", { 0 })
      return now and now[1] ~= first
    end, 5000))
    local recycled = false
    for _, ev in ipairs(H.events) do
      if ev.name == "slither.pool.worker.recycle" and ev.reason == "ttl" then recycled = true end
    end
    assert.is_true(recycled)
  end)

  it("fails to start when a worker does not say hello in time", function()
    local p, err = slither.pool.start{ name = "slow", size = 1, startup_timeout_ms = 1 }
    assert.is_nil(p)
    assert.are.equal("start_failed", err.kind)
    assert.truthy(err.message:find("did not say hello within 1 ms", 1, true))
  end)

  it("runs up to `threads` calls at once in one worker", function()
    local pool = H.pool{ size = 1, threads = 4 }
    assert.are.equal(4, pool:stats().capacity)
    local tasks = {}
    for i = 1, 4 do
      tasks[i] = slither.spawn(function() return pool:call("sl_testmod", "rendezvous", { 4 }) end)
    end
    local idents = {}
    for i = 1, 4 do
      local ok, r, err = tasks[i]:join()
      assert.is_true(ok)
      assert(r, err and err.message)
      idents[r[1]] = true
    end
    local n = 0
    for _ in pairs(idents) do n = n + 1 end
    assert.are.equal(4, n) -- four threads met at the barrier: really concurrent
  end)

  it("makes 10,000 calls without growing descriptors or handles", function()
    local pool = H.pool{ size = 2 }
    for i = 1, 200 do pool:call("sl_testmod", "double", { i }) end
    local fds, handles = H.count_fds(), slither.core.handles()
    local tasks = {}
    for k = 1, 4 do
      tasks[k] = slither.spawn(function()
        for i = 1, 2500 do
          local r = pool:call("sl_testmod", "double", { i })
          if not r or r[1] ~= 2 * i then error("bad result at " .. i) end
        end
      end)
    end
    for k = 1, 4 do assert.is_true((tasks[k]:join())) end
    -- a leak would grow by thousands; one descriptor comes and goes with the
    -- listing itself and with libuv's internals
    local after = H.count_fds()
    assert.is_true(after <= fds + 1, "descriptors grew from " .. fds .. " to " .. after)
    assert.are.equal(handles, slither.core.handles())
    assert.are.equal(10200, pool:stats().calls)
  end)

  it("fails to start naming the worker and the interpreter error", function()
    local p, err = slither.pool.start{ name = "bad", size = 2, python = "/nonexistent/python" }
    assert.is_nil(p)
    assert.are.equal("start_failed", err.kind)
    assert.truthy(err.message:find("/nonexistent/python", 1, true))
    assert.truthy(err.message:find("bad/w", 1, true))
    local p2, err2 = slither.pool.start{ name = "bad2", size = 2,
      python = H.pypath .. "/bad_python.sh" }
    assert.is_nil(p2)
    assert.truthy(err2.message:find("exited with code 1", 1, true))
    assert.truthy(err2.message:find("boom: cannot import the worker package", 1, true))
    assert.is_nil(slither.pool.get("bad"))
  end)

  it("gives the real reason a start failed: a bad frame, a death after the hello (#12 item 17)",
    function()
    local odd = H.pypath .. "/odd_python.sh"
    local p, err = slither.pool.start{ name = "odd1", size = 1, python = odd,
      env = { SLITHER_TEST_ODD = "bad_frame" } }
    assert.is_nil(p)
    assert.are.equal("start_failed", err.kind)
    assert.truthy(err.message:find("bad frame", 1, true), err.message)
    assert.truthy(err.message:find("(before its hello)", 1, true), err.message)
    assert.falsy(err.message:find("signal 9", 1, true), err.message)
    local lock = os.tmpname()
    os.remove(lock)
    p, err = slither.pool.start{ name = "odd2", size = 2, python = odd,
      env = { SLITHER_TEST_ODD = "hello_then_exit", SLITHER_TEST_LOCK = lock } }
    os.remove(lock)
    assert.is_nil(p)
    assert.are.equal("start_failed", err.kind)
    assert.truthy(err.message:find("exited with code 3 after its hello, before the pool was ready",
      1, true), err.message)
    assert.falsy(err.message:find("before saying hello", 1, true), err.message)
  end)

  it("keeps no memory for pools it stopped: 2,000 start/stop cycles (#12 item 15)", function()
    -- In a fresh process, so the figures are this engine's alone. Each cycle
    -- leaked about 9 KB of C memory and 1 KB of Lua heap: 1,800 cycles after the
    -- warm-up grew RSS by 16 MB and the heap by 1.7 MB.
    local exe = io.popen("readlink /proc/" .. ffi.C.getpid() .. "/exe"):read("*l")
    local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
    local f = assert(io.popen(("%s %s/pool_cycles_child.lua 2000 200 %s/hello_only.sh 2>&1")
      :format(exe, here, H.pypath)))
    local out = f:read("*a")
    f:close()
    local n, rss0, rss1, heap0, heap1 =
      out:match("cycles: (%d+) rss_kb: (%d+) (%d+) heap_kb: ([%d.]+) ([%d.]+)")
    assert(n, out)
    assert.are.equal("2000", n)
    assert.truthy(tonumber(heap1) - tonumber(heap0) < 64,
      ("Lua heap grew from %s to %s KB"):format(heap0, heap1))
    -- AddressSanitizer keeps freed memory in quarantine, so RSS says nothing
    -- under it; the Lua heap above is still checked there
    if not (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then
      assert.truthy(tonumber(rss1) - tonumber(rss0) < 1024,
        ("RSS grew from %s to %s KB"):format(rss0, rss1))
    end
  end)

  it("finds a bare interpreter name on each pool's own PATH (#12 item 3)", function()
    -- The engine remembers where a bare name was found; a pool with another PATH
    -- must search again, and its choice must not leak into pools on the default PATH.
    local a = H.pool{ name = "interp_a", size = 1, python = "python3" }
    local default_exe = assert(a:hello().executable)
    a:stop()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir .. " && ln -s " .. default_exe .. " " .. dir .. "/python3") == 0)
    local ok, err = pcall(function()
      local b = H.pool{ name = "interp_b", size = 1, python = "python3",
        env = { PATH = dir .. ":" .. os.getenv("PATH") } }
      assert.are.equal(dir .. "/python3", b:hello().executable)
      assert.are.same({ 4 }, b:call("sl_testmod", "double", { 2 }))
      b:stop()
      local c = H.pool{ name = "interp_c", size = 1, python = "python3" }
      assert.are.equal(default_exe, c:hello().executable)
      c:stop()
    end)
    os.execute("rm -rf " .. dir)
    assert(ok, err)
  end)

  it("fails a pool whose replacements keep crashing at start-up", function()
    local flag = os.tmpname()
    os.remove(flag)
    local pool = H.pool{ size = 1, python = H.pypath .. "/flaky_python.sh",
      env = { SLITHER_FLAKY_FLAG = flag } }
    assert.are.same({ 2 }, pool:call("sl_testmod", "double", { 1 }))
    io.open(flag, "w"):close()
    H.kill(pool:pids()[1], 9)
    assert.is_true(H.wait_until(function() return pool:stats().failed end, 5000))
    local t0 = slither.now()
    local r, err = pool:call("sl_testmod", "double", { 1 })
    assert.is_nil(r)
    assert.are.equal("pool_failed", err.kind)
    assert.truthy(slither.now() - t0 < 100)
    os.remove(flag)
  end)

  it("validates options, naming the one that is wrong", function()
    assert.has_error(function() slither.pool.start{ sise = 2 } end)
    local ok, msg = pcall(slither.pool.start, { sise = 2 })
    assert.is_false(ok)
    assert.truthy(msg:find("unknown option 'sise'", 1, true))
    ok, msg = pcall(slither.pool.start, { size = "two" })
    assert.truthy(msg:find("option 'size' must be a number, got string", 1, true))
    ok, msg = pcall(slither.pool.start, { affinity = "sticky" })
    assert.truthy(msg:find("option 'affinity' must be \"hint\" or \"strict\"", 1, true))
    local pool = H.pool{ size = 1 }
    ok, msg = pcall(pool.call, pool, "m", "f", { 1 }, { sesion = "x" })
    assert.truthy(msg:find("unknown option 'sesion'", 1, true))
    ok, msg = pcall(slither.pool.start, { name = "test" })
    assert.truthy(msg:find("already running", 1, true))
  end)

  it("range-checks every numeric option, naming it (#12 item 16)", function()
    local function refused(f, want)
      local ok, msg = pcall(f)
      assert.is_false(ok)
      assert.truthy(tostring(msg):find(want, 1, true), msg)
    end
    refused(function() slither.pool.start{ size = 3e9 } end,
      "option 'size' must be an integer from 1 to 4096, got 3000000000")
    refused(function() slither.pool.start{ size = 0 / 0 } end, "option 'size' must be")
    refused(function() slither.pool.start{ call_timeout_ms = 3e9 } end,
      "option 'call_timeout_ms' must be a number of milliseconds from 0 (none) to 2147483647")
    refused(function() slither.pool.start{ startup_timeout_ms = 1 / 0 } end,
      "option 'startup_timeout_ms' must be")
    refused(function() slither.pool.start{ max_calls = -1 } end, "option 'max_calls' must be")
    refused(function() slither.pool.start{ max_rss_mb = 1e300 } end, "option 'max_rss_mb' must be")
    refused(function() slither.pool.start{ max_start_failures = 2.5 } end,
      "option 'max_start_failures' must be an integer")
    refused(function() slither.dispatch.run({ 1 }, { module = "m", ["function"] = "f",
      timeout_ms = 3e9 }) end, "option 'timeout_ms' must be")
    refused(function() slither.dispatch.run({ 1 }, { module = "m", ["function"] = "f",
      batch_size = 1e12 }) end, "option 'batch_size' must be an integer from 1 to 2147483647")
    -- the C side names the option too, for a caller that skips the Lua checks
    refused(function() slither.core.pool_start({ size = 1e10 }, function() end) end,
      "option 'size' must be an integer from 1 to 4096, got 10000000000")
    refused(function() slither.core.pool_start({ call_timeout_ms = -1 }, function() end) end,
      "option 'call_timeout_ms' must be a number of milliseconds")
    local pool = H.pool{ size = 1 }
    refused(function() pool:call("sl_testmod", "double", { 1 }, { timeout_ms = 3e9 }) end,
      "option 'timeout_ms' must be")
    refused(function() pool:stop{ grace_ms = 1e12 } end, "option 'grace_ms' must be")
    -- half a millisecond is a timeout of 1 ms, not "no timeout"
    local r, err = pool:call("sl_testmod", "slow", { 0.3 }, { timeout_ms = 0.5 })
    assert.is_nil(r)
    assert.are.equal("timeout", err.kind)
    -- a timer too long for any clock waits without a cast out of range
    local t = slither.core.timer(1e300, function() end)
    t:stop()
  end)

  it("finishes in-flight calls when stopped with a grace period", function()
    local pool = H.pool{ size = 1 }
    local t = slither.spawn(function() return pool:call("sl_testmod", "slow", { 0.3 }) end)
    assert.is_true(H.wait_until(function() return pool:stats().busy == 1 end))
    pool:stop{ grace_ms = 5000 }
    local ok, r = t:join()
    assert.is_true(ok)
    assert.truthy(r and r[1] > 0)
    local r2, err = pool:call("sl_testmod", "double", { 1 })
    assert.is_nil(r2)
    assert.are.equal("pool_stopped", err.kind)
  end)

  it("terminates calls that outlast the grace period", function()
    local pool = H.pool{ size = 1 }
    local t = slither.spawn(function() return pool:call("sl_testmod", "slow", { 30 }) end)
    assert.is_true(H.wait_until(function() return pool:stats().busy == 1 end))
    local t0 = slither.now()
    pool:stop{ grace_ms = 200 }
    assert.truthy(slither.now() - t0 < 3000)
    local ok, r, err = t:join()
    assert.is_true(ok)
    assert.is_nil(r)
    assert.are.equal("pool_stopped", err.kind)
  end)

  it("emits telemetry for workers and calls", function()
    local seen = {}
    local id = slither.telemetry.attach("slither.pool", function(name, m, md)
      seen[#seen + 1] = { name = name, m = m, md = md }
    end)
    local pool = H.pool{ size = 1 }
    pool:call("sl_testmod", "double", { 1 })
    pool:call("sl_testmod", "boom", { 1 })
    slither.telemetry.detach(id)
    local by = {}
    for _, e in ipairs(seen) do by[e.name] = by[e.name] or e end
    local ready = by["slither.pool.worker.ready"]
    assert.truthy(ready)
    assert.truthy(ready.md.hello.python:match("^3%."))
    assert.are.equal("boolean", type(ready.md.hello.gil_enabled))
    assert.are.equal("boolean", type(ready.md.hello.free_threaded))
    assert.truthy(by["slither.pool.call.start"])
    local stop = by["slither.pool.call.stop"]
    assert.truthy(stop and stop.m.duration_ms >= 0)
    assert.are.equal("double", stop.md["function"])
    local exc = by["slither.pool.call.exception"]
    assert.are.equal("python", exc.md.kind)
  end)

  -- ---- issue #11 -------------------------------------------------------------------

  it("call.exception carries the kind the caller gets: import and result_mismatch (#11)", function()
    local kinds = {}
    local id = slither.telemetry.attach("slither.pool.call.exception", function(_, _, md)
      kinds[#kinds + 1] = md.kind
    end)
    local pool = H.pool{ size = 1 }
    local _, e1 = pool:call("no_such_module_xyz", "f", { 1 })
    local _, e2 = pool:call("sl_testmod", "no_such_function", { 1 })
    local _, e3 = pool:call("sl_testmod", "wrong_length", { 1, 2 })
    local _, e4 = pool:call("sl_testmod", "boom", { 1 })
    slither.telemetry.detach(id)
    assert.are.same({ "import", "import", "result_mismatch", "python" },
      { e1.kind, e2.kind, e3.kind, e4.kind })
    assert.are.same({ "import", "import", "result_mismatch", "python" }, kinds)
  end)

  it("an error frame whose meta cannot be read fails as protocol and replaces the worker (#11)",
    function()
    local pool = H.pool{ size = 1 }
    local bad = {
      "garbage, not JSON",
      '{"kind": "import"',                    -- cut short
      '{"kind": 5, "message": "m"}',          -- kind is not a string
      '{"kind": "timeout", "message": "m"}',  -- a kind only the engine may give
      '{"message": "no kind"}',
      '["kind", "import"]',
      '{"kind": "import", "message": "m"} trailing',
      string.rep("[", 100000),
      "",
    }
    for i, meta in ipairs(bad) do
      local seen
      local id = slither.telemetry.attach("slither.pool.call.exception", function(_, _, md)
        seen = md.kind
      end)
      local r, err = pool:call("sl_testmod", "raw_error_meta", { meta })
      slither.telemetry.detach(id)
      assert.is_nil(r)
      assert.are.equal("protocol", err.kind, "meta " .. i .. ": " .. tostring(err.kind))
      assert.truthy(err.message:find("error", 1, true), err.message)
      assert.are.equal("protocol", seen, "meta " .. i)
      -- the engine lives and a fresh worker serves the next call
      assert.are.same({ 2 * i }, pool:call("sl_testmod", "double", { i }))
    end
  end)

  for _, n in ipairs({ 3, 5 }) do
    it("max_calls = " .. n .. " serves exactly " .. n .. " calls per worker (#11)", function()
      local pool = H.pool{ size = 1, max_calls = n, max_calls_jitter = 0 }
      local served, order = {}, {}
      -- in a task, as dispatch and pipes call: the next call is sent from the
      -- callback of the one before
      assert.is_true((slither.spawn(function()
        for i = 1, 4 * n + 1 do
          local pid = assert(pool:call("sl_testmod", "pid", { i }))[1]
          if not served[pid] then order[#order + 1] = pid end
          served[pid] = (served[pid] or 0) + 1
        end
      end):join()))
      assert.are.equal(5, #order)
      for k = 1, 4 do assert.are.equal(n, served[order[k]], "worker " .. k) end
      assert.are.equal(1, served[order[5]])
      assert.are.equal(4, pool:stats().recycles)
    end)
  end

  it("max_calls holds exactly under concurrent calls on two workers (#11)", function()
    local pool = H.pool{ size = 2, max_calls = 4, max_calls_jitter = 0 }
    local served = {}
    local tasks = {}
    for k = 1, 4 do
      tasks[k] = slither.spawn(function()
        for i = 1, 10 do
          local r = assert(pool:call("sl_testmod", "pid", { i }))
          served[r[1]] = (served[r[1]] or 0) + 1
        end
      end)
    end
    for k = 1, 4 do assert.is_true((tasks[k]:join())) end
    local live = H.set(pool:pids())
    local total = 0
    for pid, count in pairs(served) do
      total = total + count
      if live[pid] then
        assert.is_true(count <= 4, pid .. " served " .. count)
      else
        assert.are.equal(4, count, "recycled worker " .. pid)
      end
    end
    assert.are.equal(40, total)
  end)

  it("a size-1 pool keeps a ready worker through every recycle (#11)", function()
    local pool
    local low, order = math.huge, {}
    local function sample()
      if pool then low = math.min(low, pool:stats().ready) end
    end
    local id = slither.telemetry.attach("slither.pool.worker", function(name, _, md)
      if md.pool ~= "rc" then return end
      sample()
      order[#order + 1] = { name = name:match("[^.]+$"), pid = md.pid }
    end)
    pool = H.pool{ name = "rc", size = 1, max_calls = 3, max_calls_jitter = 0 }
    local running = true
    local sampler = slither.spawn(function()
      while running do
        sample()
        slither.sleep(2)
      end
    end)
    local pids = {}
    for i = 1, 10 do
      local pid = assert(pool:call("sl_testmod", "slow", { 0.02 }))[1]
      if pids[#pids] ~= pid then pids[#pids + 1] = pid end
      sample()
    end
    running = false
    sampler:join()
    assert.is_true(H.wait_until(function() return pool:stats().recycles == 3 end))
    slither.telemetry.detach(id)
    assert.are.equal(4, #pids)
    assert.are.equal(1, low, "ready workers dropped to " .. low)
    -- each recycled worker left only after its replacement said hello
    local at = {}
    for i, e in ipairs(order) do at[e.name .. ":" .. tostring(e.pid)] = i end
    for k = 1, 3 do
      local ready_next, exit_old = at["ready:" .. pids[k + 1]], at["exit:" .. pids[k]]
      assert.truthy(ready_next, "ready of " .. pids[k + 1])
      assert.truthy(exit_old, "exit of " .. pids[k])
      assert.is_true(ready_next < exit_old, "worker " .. k .. " left before its replacement")
    end
  end)

  it("emits worker.start for a pool's initial workers (#11)", function()
    local starts, readies = {}, {}
    local id = slither.telemetry.attach("slither.pool.worker", function(name, _, md)
      if name == "slither.pool.worker.start" then starts[#starts + 1] = md.pid end
      if name == "slither.pool.worker.ready" then readies[md.pid] = #starts end
    end)
    local pool = H.pool{ size = 2 }
    slither.telemetry.detach(id)
    assert.are.equal(2, #starts)
    local pids = pool:pids()
    table.sort(pids)
    table.sort(starts)
    assert.are.same(pids, starts)
    for _, pid in ipairs(pids) do assert.truthy(readies[pid], "ready after start of " .. pid) end
  end)

  -- Keep the loop thread in Lua for ms milliseconds, as a long computation would.
  local function block(ms)
    local t = slither.now()
    while slither.now() - t < ms do end
  end

  it("a pool started after Lua blocked the loop gets its whole hello timeout (#11)", function()
    slither.sleep(1) -- the loop's clock is fresh here
    block(3000)
    local p, err = slither.pool.start{ name = "late", size = 2, startup_timeout_ms = 2500,
                                       path = { H.pypath } }
    assert(p, err and err.message)
    assert.are.same({ 2 }, p:call("sl_testmod", "double", { 1 }))
  end)

  it("a call sent after Lua blocked the loop gets its whole timeout (#11)", function()
    local pool = H.pool{ size = 1, call_timeout_ms = 1500 }
    assert(pool:call("sl_testmod", "pid", { 0 }))
    block(2500)
    local r, err = pool:call("sl_testmod", "slow", { 1.0 })
    assert(r, err and err.message)
    block(2500)
    local r2, err2 = pool:call("sl_testmod", "slow", { 3 })
    assert.is_nil(r2)
    assert.are.equal("timeout", err2.kind)
  end)
end)
