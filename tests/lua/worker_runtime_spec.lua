-- The Python worker's runtime against real workers: every call gets an answer, and
-- a failure in user results is reported as an error, never as a dead worker.
local H = require("helpers")

describe("the worker runtime", function()
  after_each(function() H.assert_clean() end)

  for _, threads in ipairs({ 1, 4 }) do
    for _, codec in ipairs({ "auto", "json" }) do
      it(("reports a result too deep to encode as a codec error (threads = %d, codec = %s) (#11)")
          :format(threads, codec), function()
        -- the timeout only bounds a call that would never be answered
        local pool = H.pool{ size = 1, threads = threads, codec = codec, call_timeout_ms = 30000 }
        local pid = pool:call("sl_worker_mod", "pid", { 0 })[1]
        local r, err = pool:call("sl_worker_mod", "too_deep", { 0 })
        assert.is_nil(r)
        assert.are.equal("codec", err.kind)
        assert.are.equal("RecursionError", err.type)
        assert.truthy(err.message:find("could not encode the results", 1, true), err.message)
        -- the same worker lives on and serves the next call
        assert.are.same({ pid }, pool:call("sl_worker_mod", "pid", { 0 }))
        assert.are.equal(0, pool:stats().restarts)
      end)
    end

    it(("answers a call that fails after user code returned (threads = %d) (#11)"):format(threads),
      function()
        local pool = H.pool{ size = 1, threads = threads, call_timeout_ms = 30000 }
        local pid = pool:call("sl_worker_mod", "pid", { 0 })[1]
        local r, err = pool:call("sl_worker_mod", "lying_list", { 1, 2 })
        assert.is_nil(r)
        assert.are.equal("python", err.kind)
        assert.are.equal("RuntimeError", err.type)
        assert.truthy(err.message:find("will not say its length", 1, true), err.message)
        assert.are.same({ pid }, pool:call("sl_worker_mod", "pid", { 0 }))
        assert.are.equal(0, pool:stats().restarts)
      end)

    for _, case in ipairs({
      { "unprintable", "python", "_Unprintable", "__str__ failed" },
      { "not_text", "python", "_NotText", "__str__ failed" },
      { "bad_tolist", "codec", "_Unprintable", "could not encode the results" },
      { "interrupt_tolist", "python", "KeyboardInterrupt", "could not answer the call" },
    }) do
      it(("answers a call whose exception escapes the runtime: %s (threads = %d) (#12 item 11)")
          :format(case[1], threads), function()
        local pool = H.pool{ size = 1, threads = threads, call_timeout_ms = 30000 }
        local pid = pool:call("sl_worker_mod", "pid", { 0 })[1]
        local r, err = pool:call("sl_worker_mod", case[1], { 1, 2 })
        assert.is_nil(r)
        assert.are.equal(case[2], err.kind, err.message)
        assert.are.equal(case[3], err.type, err.message)
        assert.truthy(err.message:find(case[4], 1, true), err.message)
        assert.are.same({ pid }, pool:call("sl_worker_mod", "pid", { 0 }))
        assert.are.equal(0, pool:stats().restarts)
      end)
    end

    it(("refuses a module or function name that is not UTF-8 (threads = %d) (#12 item 11)")
        :format(threads), function()
      local pool = H.pool{ size = 1, threads = threads, call_timeout_ms = 30000 }
      local pid = pool:call("sl_worker_mod", "pid", { 0 })[1]
      local r, err = pool:call("sl_worker_mod\255", "pid", { 0 })
      assert.is_nil(r)
      assert.truthy(err.message:find("module name is not valid UTF-8", 1, true), err.message)
      r, err = pool:call("sl_worker_mod", "p\192id", { 0 })
      assert.is_nil(r)
      assert.truthy(err.message:find("function name is not valid UTF-8", 1, true), err.message)
      assert.are.same({ pid }, pool:call("sl_worker_mod", "pid", { 0 }))
      assert.are.equal(0, pool:stats().restarts)
    end)
  end
end)
