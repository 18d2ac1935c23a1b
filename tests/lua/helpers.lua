-- helpers for the busted specs: pools with the test modules on their path, and the
-- check every spec ends with: no worker process and no libuv handle left.
local slither = require("slither")
local core = slither.core
local ffi = require("ffi")

pcall(ffi.cdef, "int kill(int pid, int sig); int getpid(void);")

local H = {}
H.pypath = assert(os.getenv("SLITHER_TEST_PYPATH"), "SLITHER_TEST_PYPATH is not set")
H.seen = {}
H.events = {}

slither.telemetry.attach("slither.pool.worker", function(name, _, md)
  if md.pid then H.seen[md.pid] = true end
  H.events[#H.events + 1] = { name = name, worker = md.worker, pid = md.pid,
                              reason = md.reason }
end)

function H.pool(opts)
  opts = opts or {}
  opts.name = opts.name or "test"
  opts.path = opts.path or { H.pypath }
  local p, err = slither.pool.start(opts)
  assert(p, err and err.message)
  return p
end

function H.kill(pid, sig)
  return ffi.C.kill(pid, sig or 9)
end

-- What is still alive after finished runs of `what` ("dispatch" or "pipe") in a
-- fresh process (lets_go_child.lua): "alive: none" when nothing is.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
function H.alive_after(what)
  -- the interpreter running the specs runs the child too
  local exe = io.popen("readlink /proc/" .. ffi.C.getpid() .. "/exe"):read("*l") or "luajit"
  local f = assert(io.popen(exe .. " " .. here .. "/lets_go_child.lua " .. what .. " 2>&1"))
  local out = f:read("*a")
  f:close()
  return out:match("(alive: [^\n]*)") or out
end

-- Poll cond every 20 ms (running the loop) until it holds or ms pass.
function H.wait_until(cond, ms)
  local deadline = slither.now() + (ms or 5000)
  while not cond() do
    if slither.now() > deadline then return false end
    slither.sleep(20)
  end
  return true
end

function H.set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- Open file descriptors of this process (the listing itself opens one more).
function H.count_fds()
  collectgarbage() -- files of finished io.popen calls close when collected
  collectgarbage()
  local n = 0
  local p = io.popen("ls /proc/" .. ffi.C.getpid() .. "/fd")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

function H.assert_clean()
  slither.shutdown(2000)
  local ok = H.wait_until(function()
    for pid in pairs(H.seen) do
      if core.pid_alive(pid) then return false end
    end
    return true
  end, 3000)
  for pid in pairs(H.seen) do
    assert(not core.pid_alive(pid), "worker process " .. pid .. " outlived its spec")
  end
  assert(ok)
  local handles = core.handles()
  assert(handles == 0, handles .. " libuv handles are still open after the spec")
  H.seen = {}
  H.events = {}
end

return H
