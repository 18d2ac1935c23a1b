-- A pipe: Lua stages, a Python stage that reads the store, and a router, all
-- streaming at once into named outputs.
--
--   slither scripts/pipe.lua
local slither = require("slither")

local here = arg[0]:match("(.*)/[^/]*$") or "."
assert(slither.pool.start{ name = "default", size = 2,
                           path = { here .. "/../pyworkers/examples" } })

local Features = slither.store.define{
  name = "features",
  tables = { { name = "features" } },
  views = { { name = "discount", scope = "session", handler = function(args)
    return ({ gold = 0.2, silver = 0.1 })[args.tier] or 0
  end } },
  load = function(t)
    for i = 1, 500 do t.features:put("user:" .. i, { tier = i % 4 == 0 and "gold" or "silver" }) end
  end,
}

local Score = slither.pipe("score", function(p)
  p:store(Features)
  p:stage("prepare", "lua", { handler = function(item)
    if item.payload % 50 == 0 then return nil, slither.skip("test account") end
    return "user:" .. item.payload
  end })
  p:stage("enrich", "python", { module = "store_ops", ["function"] = "enrich", batch_size = 32 })
  p:stage("predict", "python", { module = "store_ops", ["function"] = "score", batch_size = 32 })
  p:stage("route", "router", { routes = {
    { function(item) return item.payload.score >= 0.8 end, "accept" },
    { function(item) return item.payload.score >= 0.4 end, "review" } } })
  p:output("accept")
  p:output("review")
  p:on_error("*", "halt")
end)

local input = {}
for i = 1, 500 do input[i] = i end
local outputs, report = assert(slither.run_pipe(Score, input))
print(string.format("accept %d, review %d, default %d", #outputs.accept, #outputs.review,
  #outputs.default))
for _, name in ipairs({ "prepare", "enrich", "predict", "route" }) do
  local c = report.stages[name]
  print(string.format("  %-8s in %4d  out %4d  skipped %2d  failed %d", name, c["in"], c.out,
    c.skipped, c.failed))
end

-- The same pipe as a stream over an endless input, stopped after 20 results.
local n = 0
local stream = slither.stream_pipe(Score, function() n = n % 500 + 1; return n end)
local got = 0
for output, item in stream.next do
  got = got + 1
  if got == 20 then break end
end
stream:close()
print(string.format("streamed %d results, pulled %d inputs", got, n))
