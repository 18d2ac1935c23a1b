-- The store: engine-owned tables that Python reads directly from shared memory,
-- views that Python calls, and reload by atomic swap.
--
--   slither scripts/store.lua
local slither = require("slither")

local here = arg[0]:match("(.*)/[^/]*$") or "."
local generation = 1

local Features = slither.store.define{
  name = "features",
  tables = { { name = "features", type = "set" }, { name = "history", type = "bag" } },
  views = { { name = "discount", scope = "global", handler = function(args)
    return ({ gold = 0.2, silver = 0.1 })[args.tier] or 0
  end } },
  load = function(tables)
    for i = 1, 1000 do
      tables.features:put("user:" .. i, { tier = i % 3 == 0 and "gold" or "silver",
                                          generation = generation })
    end
  end,
}

local store = assert(slither.store.start(Features))
print(string.format("features: %d users, user:3 is %s", store:size("features"),
  store:get("features", "user:3").tier))

store:put("history", "user:3", "login")
store:put("history", "user:3", "purchase")
print("history of user:3: " .. table.concat(store:get("history", "user:3"), ", "))

local n = 0
for k in pairs(store:match("features", { tier = "gold" })) do n = n + 1 end
print(string.format("gold users (match): %d", n))

-- Python reads the table and calls the view while it runs.
local pool = assert(slither.pool.start{ size = 2, path = { here .. "/../pyworkers/examples" } })
local rows = assert(pool:call("store_ops", "enrich", { "user:3", "user:4", "user:99999" }))
for _, r in ipairs(rows) do
  print(string.format("  %-10s tier=%-6s discount=%.1f", r.user, r.tier, r.discount))
end

-- A write made before a call is visible to the call.
store:put("features", "user:4", { tier = "gold", generation = generation })
print("after promoting user:4: " .. pool:call("store_ops", "enrich", { "user:4" })[1].tier)

-- Reload: load runs into fresh tables that replace the old ones in one step.
generation = 2
assert(store:reload())
print(string.format("reloaded: generation %d, user:4 is %s again",
  store:get("features", "user:1").generation, store:get("features", "user:4").tier))
