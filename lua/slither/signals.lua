-- slither.signals: SIGINT and SIGTERM stop the slither program cleanly.
--
-- The first signal cancels the main task: a dispatch stops launching batches,
-- waiting calls are dropped, and the program's shutdown stops every pool (calls
-- still running get the grace period, 5 s) and removes every store's files; the
-- program then exits with 128 + the signal's number (130 for SIGINT, 143 for
-- SIGTERM). A second signal exits at once with the same code; the reaper kills
-- the workers and removes the store files (engine/reaper.h).
local core = require("slither.core")
local task = require("slither.task")

local M = {}

local NAMES = { [2] = "SIGINT", [15] = "SIGTERM" }

-- The signal that stopped the run (its number), or nil.
M.caught = nil

function M.install()
  core.on_stop_signals(function(sig)
    if M.caught then return end
    M.caught = sig
    local name = NAMES[sig] or ("signal " .. sig)
    core.log("warn", name .. ": stopping: running work is cancelled, pools get 5 s to "
      .. "finish; a second signal stops at once")
    task.interrupt_main("interrupted by " .. name)
  end)
end

-- The exit code for a run a signal stopped, or nil.
function M.exit_code()
  return M.caught and 128 + M.caught or nil
end

return M
