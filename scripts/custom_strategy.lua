-- A custom batching strategy: consecutive lines of one document go in one batch
-- (at most batch_size of them), so each call sees whole documents.
--
--   build/slither scripts/custom_strategy.lua
--
-- Prints one check per line, `expected=... observed=... [OK|MISMATCH]`, and raises
-- (exit status 1) if any check fails.
local slither = require("slither")
local dispatch = slither.dispatch

-- strategy(next_item, opts) is called once, when the run starts, and returns the
-- run's batch iterator. next_item() gives the next input item, or nil at the end;
-- opts are the run's options with their defaults filled in. next_batch() gives
-- the next batch (a non-empty list of items), or nil when there are no more.
local function by_document(next_item, opts)
  local held, done = nil, false -- the item read ahead that starts the next batch
  local function pull()
    if done then return nil end
    local it = next_item()
    if it == nil then done = true end
    return it
  end
  return function()
    local first = held or pull()
    held = nil
    if first == nil then return nil end
    -- inside a pipe, next_item may answer dispatch.AGAIN (no item yet): a batch
    -- ends there, and with nothing in hand the strategy answers AGAIN too
    if first == dispatch.AGAIN then return dispatch.AGAIN end
    local batch = { first }
    while #batch < opts.batch_size do
      local it = pull()
      if it == nil or it == dispatch.AGAIN then break end
      if it.payload.doc ~= first.payload.doc then
        held = it
        break
      end
      batch[#batch + 1] = it
    end
    return batch
  end
end

-- three documents of 5, 2 and 9 lines
local lines = {}
for doc, n in ipairs({ 5, 2, 9 }) do
  for line = 1, n do
    lines[#lines + 1] = { id = #lines + 1, doc = doc, text = string.rep("word ", line) }
  end
end

local failures = 0
local function check(what, expected, observed)
  local ok = expected == observed
  if not ok then failures = failures + 1 end
  print(string.format("%s: expected=%s observed=%s [%s]", what, tostring(expected),
    tostring(observed), ok and "OK" or "MISMATCH"))
end

-- A Lua executor shows what each batch held.
local batches = {}
local results, report = dispatch.run(lines, { strategy = by_document, batch_size = 4,
  executor = function(payloads)
    local docs = {}
    for i, p in ipairs(payloads) do docs[i] = p.doc end
    batches[#batches + 1] = table.concat(docs, ",")
    return payloads
  end })
check("batches, one document each, at most 4 lines", "1,1,1,1 1 2,2 3,3,3,3 3,3,3,3 3",
  table.concat(batches, " "))
check("report.batches", 6, report.batches)
local in_order = true
for i, it in ipairs(results) do in_order = in_order and it.payload.id == i end
check("results in input order", true, in_order and #results == #lines)

-- The same strategy on Python workers, over a stream.
local here = arg and arg[0] and arg[0]:match("(.*)/[^/]*$") or "scripts"
local pool = assert(slither.pool.start{ name = "custom_strategy", size = 2,
                                        path = { here .. "/../pyworkers/examples" } })
local ids, scored = {}, 0
for it in dispatch.stream(lines, { pool = pool, module = "dispatch_ops", ["function"] = "score",
                                   strategy = by_document, batch_size = 4 }).next do
  ids[#ids + 1] = it.payload.id
  if type(it.payload.score) == "number" then scored = scored + 1 end
end
pool:stop()
check("python results scored", #lines, scored)
check("python results in input order", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
  table.concat(ids, " "))

if failures > 0 then error(failures .. " check(s) failed", 0) end
print("all checks passed")
