-- slither.options: checking option tables, so that a wrong name or type raises at
-- once with a message that names it.
--
-- A spec maps each option to { types, check, wanted }: types is a type name or a
-- list of them; check (optional) validates the value; wanted says what check wants.
local M = {}

-- Raises (at `level` above the caller of check) on an unknown option, a wrong
-- type or a value check refuses. Returns opts, or {} for nil.
function M.check(fname, opts, spec, level)
  level = (level or 2) + 1
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(fname .. ": expected an options table, got " .. type(opts), level)
  end
  for k, v in pairs(opts) do
    local s = spec[k]
    if not s then
      local names = {}
      for n in pairs(spec) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("%s: unknown option '%s' (expected one of: %s)", fname, tostring(k),
        table.concat(names, ", ")), level)
    end
    local types = type(s[1]) == "table" and s[1] or { s[1] }
    local ok = false
    for _, t in ipairs(types) do
      if type(v) == t then ok = true end
    end
    if not ok then
      error(string.format("%s: option '%s' must be a %s, got %s", fname, k,
        table.concat(types, " or "), type(v)), level)
    end
    if s[2] and not s[2](v) then
      error(string.format("%s: option '%s' must be %s, got %s", fname, k, s[3], tostring(v)),
        level)
    end
  end
  return opts
end

-- Spec entries for numbers the engine keeps in a C int: a value outside its range
-- (or NaN, or infinite) would otherwise be cast without meaning.
M.INT_MAX = 2147483647

-- An integer from lo to hi (hi: INT_MAX unless given).
function M.int(lo, hi)
  hi = hi or M.INT_MAX
  return { "number", function(v) return v >= lo and v <= hi and v % 1 == 0 end,
           string.format("an integer from %d to %d", lo, hi) }
end

-- Milliseconds, from lo (0: none) to INT_MAX; a fraction is rounded up by the
-- engine, so 0.5 means 1 ms, never "no timeout".
function M.ms(lo)
  return { "number", function(v) return v >= lo and v <= M.INT_MAX end,
           string.format("a number of milliseconds from %d%s to %d", lo,
                         lo == 0 and " (none)" or "", M.INT_MAX) }
end

-- A number from lo to hi (NaN refused).
function M.num(lo, hi)
  return { "number", function(v) return v >= lo and v <= hi end,
           string.format("a number from %s to %s", tostring(lo), tostring(hi)) }
end

return M
