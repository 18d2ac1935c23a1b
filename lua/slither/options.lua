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

return M
