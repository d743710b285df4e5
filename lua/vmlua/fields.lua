-- Helpers shared by the configuration code: where a definition was written,
-- the one error format, field checks with "did you mean", path resolution.
--
-- The error rule: a mistake in a definition is reported as
--   FILE:LINE: FIELD: MESSAGE
-- where FILE:LINE is the user's line that made the object holding the field
-- and FIELD is the path of the field ("memory", "disks[2].path").
local core = require "vmlua.core"
local lfs = require "lfs"
local errors = require "vmlua.errors"

local fields = {}

-- Lexically normalises an absolute path: drops "." and empty segments,
-- applies "..". Symbolic links are left alone.
function fields.normalize(path)
  local out = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      out[#out] = nil
    elseif seg ~= "." then
      out[#out + 1] = seg
    end
  end
  return "/" .. table.concat(out, "/")
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return fields.normalize(path) end
  return fields.normalize(lfs.currentdir() .. "/" .. path)
end

-- A `where` from a debug.getinfo-like table (source, short_src, currentline):
-- {source=, short=, line=}. `source` is the absolute path of the defining
-- file, or nil when the chunk has no file (-e, the REPL, load of a string);
-- `short` is the name to show.
function fields.from_info(info)
  local src = info.source or "=?"
  local w = { short = info.short_src or "?", line = info.currentline or 0 }
  if src:sub(1, 1) == "@" then
    w.short = src:sub(2)
    w.source = absolute(src:sub(2))
  elseif src:sub(1, 1) == "=" then
    w.short = src:sub(2)
  end
  return w
end

-- The first Lua function at or above `level` (counted like error's level,
-- from the function calling where), as a `where`.
function fields.where(level)
  level = level + 1
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return { short = "?", line = 0 } end
    if info.what ~= "C" then return fields.from_info(info) end
    level = level + 1
  end
end

-- fields.entry(f) -> a function for users to call: calling it with (...)
-- calls f(where, ...) with the `where` of the user's call.
--
-- Lua keeps no frame for a Lua function called in a tail call, so in
-- `return vmlua.disk{...}` a Lua entry cannot see the line that called it
-- (it sees the caller's caller instead). A C function keeps its caller's
-- frame even then, so when the core offers core.located(f) (a C closure
-- that calls f(info, ...) with debug information about its caller), the
-- entry is built with it and tail calls are located exactly.
--
-- fields.pinned, when set, is the `where` of the next entry called (and is
-- then cleared): the sandbox calls entries for a recipe, from its own frame.
function fields.entry(f)
  if core.located then
    return core.located(function(info, ...)
      local where = fields.pinned or fields.from_info(info)
      fields.pinned = nil
      return f(where, ...)
    end)
  end
  return function(...)
    local where = fields.pinned or fields.where(2)
    fields.pinned = nil
    return f(where, ...)
  end
end

-- The directory relative paths of an object resolve against.
function fields.dir(where)
  if where and where.source then return (where.source:match("^(.*)/[^/]*$")) or "/" end
  return lfs.currentdir()
end

-- An absolute path for `path` written in the file of `where`: absolute
-- paths stay, "~/" is the home directory, anything else is relative to the
-- defining file's directory (the current directory when it has no file).
function fields.resolve(where, path)
  if path:sub(1, 1) == "/" then return fields.normalize(path) end
  if path == "~" or path:sub(1, 2) == "~/" then
    local home = os.getenv("HOME")
    if home and home ~= "" then return fields.normalize(home .. path:sub(2)) end
  end
  return fields.normalize(fields.dir(where) .. "/" .. path)
end

function fields.location(where)
  return string.format("%s:%d", where.short, where.line)
end

-- The message of the error rule.
function fields.msg(where, field, text)
  return string.format("%s: %s: %s", fields.location(where), field, text)
end

-- Raises a definition error; the message already holds file:line.
function fields.fail(where, field, fmt, ...)
  errors.raise(fields.msg(where, field, select("#", ...) > 0 and fmt:format(...) or fmt))
end

-- A short description of a value for messages: `string "two"`, `boolean true`.
function fields.describe(v)
  local t = type(v)
  if t == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return (string.format("string %q", v):gsub("\\\n", "\\n"))
  elseif t == "number" or t == "boolean" then
    return t .. " " .. tostring(v)
  elseif t == "nil" then
    return "nil"
  end
  return "a " .. t
end

-- Optimal string alignment distance (Damerau-Levenshtein with adjacent
-- transpositions).
function fields.distance(a, b)
  local la, lb = #a, #b
  local d = {}
  for i = 0, la do d[i] = { [0] = i } end
  for j = 0, lb do d[0][j] = j end
  for i = 1, la do
    for j = 1, lb do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end

-- The closest of `names` to `name` (distance at most 2, or a prefix), or nil.
function fields.suggest(name, names)
  local lname = name:lower()
  local best, bestd
  for _, cand in ipairs(names) do
    local d = fields.distance(lname, cand)
    if #lname >= 2 and (cand:sub(1, #lname) == lname or lname:sub(1, #cand) == cand) then
      d = math.min(d, 1)
    end
    if d <= 2 and d < #cand and (not bestd or d < bestd) then best, bestd = cand, d end
  end
  return best
end

-- Checks that `spec` has only the named fields in `names`; raises at the
-- first offending key (in sorted order, so the report is stable).
function fields.check(spec, names, where, what)
  local allowed, bad = {}, {}
  for _, n in ipairs(names) do allowed[n] = true end
  for k in pairs(spec) do
    if type(k) ~= "string" then
      fields.fail(where, string.format("[%s]", tostring(k)),
        "unexpected list item; %s takes named fields (%s)", what, table.concat(names, ", "))
    elseif not allowed[k] then
      bad[#bad + 1] = k
    end
  end
  if #bad == 0 then return end
  table.sort(bad)
  local k = bad[1]
  local near = fields.suggest(k, names)
  if near then fields.fail(where, k, 'unknown field; did you mean "%s"?', near) end
  fields.fail(where, k, "unknown field; %s takes %s", what, table.concat(names, ", "))
end

-- Whether t is a sequence 1..n with no other keys.
function fields.is_list(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return true
end

return fields
