-- data_etl: 15,000 rows (small: 1,500) in three batches (10 %, 20 % and 15 %
-- invalid) through prepare (Lua) -> validate (Python) -> transform (Lua) -> route.
-- The Python stage reads the schema straight from the engine's store for every
-- row. The schema changes between batches (store:reload) and, during the third,
-- a concurrent task toggles it between v1 and v2 continuously.
--
-- v1 and v2 classify the generated rows differently (a 16-year-old, a one-letter
-- name or an email without '@' pass v1 only; a 30-letter name passes v2 only), so
-- the version each row was validated against shows in the results. The schema
-- is one value that carries its version, and every field rule carries it too: a
-- row validated against a mix of two versions would show.
--
-- Checks: every row was validated against one whole version; each row's outcome
-- is what that version's rules give (computed here, per row, per version); the
-- counts per version match; and the audit totals agree from two independent
-- counts (the rows the engine received, and the workers' own audit counters).
--
--   slither example data_etl [--scale small|full]
--   slither scripts/examples/data_etl.lua          (small scale)
local slither = require("slither")
local examples = require("slither.examples")

local M = {
  name = "data_etl",
  description = "15K Rows / Hot-Reload Under Contention",
  needs = {},
}

local SCHEMAS = {
  {
    version = 1,
    fields = {
      name = { type = "string", required = true, min_length = 1, max_length = 20, version = 1 },
      age = { type = "integer", required = true, min = 0, max = 150, version = 1 },
      email = { type = "string", required = true, version = 1 },
    },
  },
  {
    version = 2,
    fields = {
      name = { type = "string", required = true, min_length = 2, max_length = 40, version = 2 },
      age = { type = "integer", required = true, min = 18, max = 120, version = 2 },
      email = { type = "string", required = true, pattern = "^[^@]+@[^@]+$", version = 2 },
      role = { type = "string", required = false, version = 2 },
    },
  },
}
-- The Python side uses re.search; this pattern means the same in Lua.
local LUA_PATTERN = { ["^[^@]+@[^@]+$"] = "^[^@]+@[^@]+$" }

local TRANSFORM = { rename = { name = "full_name" }, cast = { age = "integer" },
                    defaults = { role = "user" } }

local active = 1 -- the version load() writes

local SchemaStore = slither.store.define{
  name = "etl_schema",
  tables = { { name = "schemas", type = "set" } },
  load = function(t)
    -- one value: the version travels with its fields
    t.schemas:put("current", SCHEMAS[active])
  end,
}

local function transform(row)
  local r = {}
  for k, v in pairs(row) do r[k] = v end
  for from, to in pairs(TRANSFORM.rename) do
    if r[from] ~= nil then r[to], r[from] = r[from], nil end
  end
  for f, ty in pairs(TRANSFORM.cast) do
    if ty == "integer" then
      local v = r[f]
      if type(v) == "string" then v = tonumber(v) or v end
      if type(v) == "number" then v = v >= 0 and math.floor(v) or math.ceil(v) end
      r[f] = v
    end
  end
  for f, v in pairs(TRANSFORM.defaults) do
    if r[f] == nil then r[f] = v end
  end
  return r
end

local EtlPipe = slither.pipe("data_etl", function(p)
  p:store(SchemaStore)
  p:stage("prepare", "lua", { handler = function(item)
    return { row_id = item.meta.row_id, row = item.payload }
  end })
  p:stage("validate", "python", { pool = "examples", module = "csv_transformer",
                                  ["function"] = "validate_batch", batch_size = 25 })
  p:stage("transform", "lua", { handler = function(item)
    local r = item.payload
    if r.valid then r.row = transform(r.row) end
    return r
  end })
  p:stage("route", "router", { routes = {
    { function(item) return item.payload.valid == false end, "invalid" } } })
  p:output("invalid")
  p:on_error("validate", "skip")
  p:on_error("transform", "skip")
  p:on_error("*", "halt")
end)

-- ---- rows ---------------------------------------------------------------------------

local NAMES = {
  "Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy",
  "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Xena",
  "Yusuf", "Zoe", "Amir", "Bea", "Chen", "Dana", "Emil", "Fay", "Gus", "Hana",
}

-- count rows, `ratio` of them invalid under both versions, 6 % valid under v1
-- only and 4 % valid under v2 only.
local function generate_rows(count, ratio, seed)
  local rng = examples.rng(seed)
  local rows = {}
  for i = 1, count do
    local name = NAMES[i % #NAMES + 1]
    local row = { name = name, age = 20 + i % 60, email = name:lower() .. i .. "@example.com" }
    if i % 3 == 0 then row.role = i % 2 == 0 and "admin" or "analyst" end
    local u = rng:float()
    if u < ratio then
      local k = i % 4
      if k == 0 then row.name = ""
      elseif k == 1 then row.age = -5
      elseif k == 2 then row.name = nil
      else row.age = 200 end
    elseif u < ratio + 0.06 then
      local k = rng:int(1, 4)
      if k == 1 then row.age = 16
      elseif k == 2 then row.age = 130
      elseif k == 3 then row.name = name:sub(1, 1)
      else row.email = name:lower() .. i .. ".example.com" end
    elseif u < ratio + 0.10 then
      row.name = name .. " " .. string.rep("Longname", 3) -- over v1's 20 characters
    end
    rows[i] = row
  end
  return rows
end

-- The errors a row has under a schema: the same rules as csv_transformer.py.
local function error_count(row, schema)
  local names = {}
  for f in pairs(schema.fields) do names[#names + 1] = f end
  table.sort(names)
  local n = 0
  for _, f in ipairs(names) do
    local rule, v = schema.fields[f], row[f]
    if v == nil then
      if rule.required then n = n + 1 end
    else
      local t = rule.type
      local type_ok = t == nil or (t == "string" and type(v) == "string") or
        (t == "integer" and type(v) == "number" and v % 1 == 0) or
        (t == "float" and type(v) == "number") or (t == "boolean" and type(v) == "boolean")
      if not type_ok then
        n = n + 1
      else
        if type(v) == "number" then
          if rule.min and v < rule.min then n = n + 1 end
          if rule.max and v > rule.max then n = n + 1 end
        end
        if type(v) == "string" then
          if rule.min_length and #v < rule.min_length then n = n + 1 end
          if rule.max_length and #v > rule.max_length then n = n + 1 end
          if rule.pattern and not v:find(LUA_PATTERN[rule.pattern]) then n = n + 1 end
        end
      end
    end
  end
  return n
end

-- ---- the run ----------------------------------------------------------------------

function M.run(opts)
  local out = opts.out
  -- checks are collected per batch and printed together at the end
  local pending = {}
  local function check(...)
    pending[#pending + 1] = { n = select("#", ...), ... }
  end
  local per_batch = opts.scale == "small" and 500 or 5000
  local pool = examples.start_pool(opts)
  active = 1
  local store = slither.store.get("etl_schema") or assert(slither.store.start(SchemaStore))

  local batches = {
    { label = "batch 1", ratio = 0.10, seed = 101 },
    { label = "batch 2", ratio = 0.20, seed = 202 },
    { label = "batch 3", ratio = 0.15, seed = 303, toggle = true },
  }
  local total_rows, total_out, total_audit = 0, 0, 0
  local torn, wrong_outcome, transformed, valid_total = 0, 0, 0, 0
  for b, spec in ipairs(batches) do
    local rows = generate_rows(per_batch, spec.ratio, spec.seed)
    total_rows = total_rows + #rows
    -- what each version must make of every row
    local expect = { {}, {} }
    local differ, accepts = 0, { 0, 0 }
    for i, row in ipairs(rows) do
      for v = 1, 2 do
        expect[v][i] = error_count(row, SCHEMAS[v])
        if expect[v][i] == 0 then accepts[v] = accepts[v] + 1 end
      end
      if (expect[1][i] == 0) ~= (expect[2][i] == 0) then differ = differ + 1 end
    end
    out("")
    if b == 2 then
      active = 2
      assert(store:reload())
      out("Schema version: 1 -> 2 (store:reload)")
      out("  changes: name length 1-20 -> 2-40, age 0-150 -> 18-120, email must match " ..
        "^[^@]+@[^@]+$, optional role")
    end
    out(string.format("--- %s: %d rows, %.0f%% invalid under both versions, %d rows that v1 " ..
      "and v2 classify differently%s ---", spec.label, #rows, spec.ratio * 100, differ,
      spec.toggle and "; schema toggling during the run" or ""))
    out(string.format("  v1 would accept %d rows, v2 %d", accepts[1], accepts[2]))

    local toggler, stop, toggles = nil, false, 0
    if spec.toggle then
      toggler = slither.spawn(function()
        while not stop do
          active = 3 - active
          assert(store:reload())
          toggles = toggles + 1
          slither.sleep(1)
        end
      end)
    end
    local input = {}
    for i, row in ipairs(rows) do input[i] = slither.item.wrap(row, { row_id = i }) end
    local progress = opts.progress("validate", "rows")
    local t0 = slither.now()
    local ok, outputs, report = pcall(slither.run_pipe, EtlPipe, input,
      { session = "data_etl:" .. b })
    local ms = slither.now() - t0
    progress.done()
    if toggler then
      stop = true
      local tok, terr = toggler:join()
      active = 2
      assert(store:reload())
      if not tok then error("the schema toggler failed: " .. tostring(terr), 0) end
    end
    if not ok then error(outputs, 0) end
    if not outputs then examples.fail("the pipe halted: " .. tostring(report and report.message)) end

    -- count 1: the rows the engine received; count 2: the workers' own audits
    local seen, n_out = {}, 0
    local per_version, valid_per_version, expected_valid_per_version = {}, {}, {}
    local finals = {}
    for _, bucket in ipairs({ "default", "invalid" }) do
      for _, it in ipairs(outputs[bucket]) do
        local r = it.payload
        local i, v = r.row_id, r.schema_version
        if not seen[i] then seen[i] = true; n_out = n_out + 1 end
        local key = "v" .. tostring(v)
        per_version[key] = (per_version[key] or 0) + 1
        if r.valid then valid_per_version[key] = (valid_per_version[key] or 0) + 1 end
        local errs = expect[v] and expect[v][i]
        if errs == 0 then
          expected_valid_per_version[key] = (expected_valid_per_version[key] or 0) + 1
        end
        if not r.schema_whole then torn = torn + 1 end
        if errs == nil or (errs == 0) ~= (r.valid == true) or errs ~= #r.errors or
            (bucket == "invalid") == (r.valid == true) then
          wrong_outcome = wrong_outcome + 1
        end
        if r.valid then
          valid_total = valid_total + 1
          local row = r.row
          if row.full_name ~= nil and row.name == nil and row.role ~= nil then
            transformed = transformed + 1
          end
        end
        if r.audit and (not finals[r.audit.pid] or r.audit.batches > finals[r.audit.pid].batches) then
          finals[r.audit.pid] = r.audit
        end
      end
    end
    local audit_n, audit_versions, audit_valid = 0, {}, 0
    for _, a in pairs(finals) do
      audit_n = audit_n + a.validations
      audit_valid = audit_valid + a.valid
      for k, c in pairs(a.versions) do audit_versions[k] = (audit_versions[k] or 0) + c end
    end
    total_out, total_audit = total_out + n_out, total_audit + audit_n

    for _, bucket in ipairs({ "default", "invalid" }) do
      out(string.format("  %s: %d", bucket, #outputs[bucket]))
    end
    if spec.toggle then
      out(string.format("  schema toggled %d times while the batch ran; rows per version: v1 %d, " ..
        "v2 %d", toggles, per_version.v1 or 0, per_version.v2 or 0))
    end
    opts.timing("elapsed", ms)
    opts.throughput("throughput", #rows, ms, "rows")
    local L = spec.label
    check(L .. ": rows out (valid + invalid)", #rows, #outputs.default + #outputs.invalid)
    check(L .. ": distinct rows out", #rows, n_out)
    if spec.toggle then
      check(L .. ": rows validated with v1 or v2", #rows, (per_version.v1 or 0) + (per_version.v2 or 0))
      check(L .. ": both versions used while toggling", true,
        (per_version.v1 or 0) > 0 and (per_version.v2 or 0) > 0)
      check(L .. ": valid rows, each under the version it read", (expected_valid_per_version.v1 or 0)
        + (expected_valid_per_version.v2 or 0), #outputs.default)
      check(L .. ": valid rows per version", expected_valid_per_version, valid_per_version)
    else
      local v = "v" .. b
      local expected_valid = 0
      for i = 1, #rows do if expect[b][i] == 0 then expected_valid = expected_valid + 1 end end
      check(L .. ": rows validated with " .. v, #rows, per_version[v] or 0)
      check(L .. ": valid rows (" .. v .. " rules)", expected_valid, #outputs.default)
      check(L .. ": invalid rows (" .. v .. " rules)", #rows - expected_valid, #outputs.invalid)
    end
    check(L .. ": workers' audit: validations", n_out, audit_n)
    check(L .. ": workers' audit: valid rows", #outputs.default, audit_valid)
    check(L .. ": workers' audit: rows per version", per_version, audit_versions)
  end
  pool:stop()
  store:stop()

  check("rows validated against a torn schema (a field of another version)", 0, torn)
  check("rows whose outcome differs from their version's rules", 0, wrong_outcome)
  check("valid rows transformed (name -> full_name, role defaulted)", valid_total, transformed)
  check("audit total: rows the engine received", total_rows, total_out)
  check("audit total: validations the workers counted", total_rows, total_audit)
  out("")
  out("--- Correctness ---")
  for _, c in ipairs(pending) do opts.check(unpack(c, 1, c.n)) end
  out("Each row read the schema once, as one value carrying its version, so no row saw")
  out("half of a reload; the counts per version are what each version's rules give.")
end

if (...) ~= examples.MODULE_ARG then
  return examples.run_script(M, arg)
end
return M
