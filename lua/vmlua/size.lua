-- Sizes: a number of bytes, or a string with a binary unit.
--   4096, "4096", "1024K", "512M", "64MiB", "2G", "2GiB", "1.5G", "1T"
-- Units are powers of 1024 whatever their spelling ("2GB" is 2 GiB),
-- case does not matter, and the result must be a whole number of bytes.
local size = {}

local KiB = 1024
local units = { [""] = 1, k = KiB, m = KiB ^ 2, g = KiB ^ 3, t = KiB ^ 4, p = KiB ^ 5 }
local LIMIT = 2 ^ 63

local EXPECTED = 'expected a number of bytes or a string like "512M" or "2G"'

local function num(v)
  if math.type(v) == "float" and v == math.floor(v) and v > -LIMIT and v < LIMIT then
    return string.format("%.0f", v)
  end
  return tostring(v)
end

-- size.check(v) -> bytes | nil, reason (a message without location).
function size.check(v)
  local t = math.type(v)
  if t then
    if v ~= v or v == math.huge or v == -math.huge then return nil, num(v) .. " is not a size" end
    if v < 0 then return nil, num(v) .. " is negative" end
    if v >= LIMIT then return nil, num(v) .. " is too large" end
    local i = math.tointeger(v)
    if not i then
      return nil, num(v) .. " is not a whole number of bytes (use // for integer division)"
    end
    return i
  end
  if type(v) ~= "string" then
    local desc = type(v) == "table" and "a table" or (type(v) .. " " .. tostring(v))
    return nil, EXPECTED .. ", got " .. desc
  end
  local sign, digits, unit = v:match("^%s*(%-?)%s*([%d%.]+)%s*(%a*)%s*$")
  local n = digits and (digits:match("^%d+%.?%d*$") or digits:match("^%.%d+$")) and tonumber(digits)
  if not n then return nil, string.format("%q is not a size; %s", v, EXPECTED) end
  local u = unit:lower()
  local letter = (u == "" or u == "b") and "" or u:match("^([kmgtp])i?b?$")
  local mult = letter and units[letter]
  if not mult then
    return nil, string.format('%q is not a size: unknown unit "%s" (use K, M, G or T, e.g. "512M", "2G")', v, unit)
  end
  if sign == "-" and n ~= 0 then return nil, string.format("%q is negative", v) end
  local bytes = n * mult
  if bytes >= LIMIT then return nil, string.format("%q is too large", v) end
  if bytes ~= math.floor(bytes) then
    return nil, string.format("%q is not a whole number of bytes", v)
  end
  return math.tointeger(bytes)
end

-- size.parse(v) -> bytes; raises "FILE:LINE: size: why" at the caller's line
-- otherwise, as a user error (no traceback).
function size.parse(v)
  local n, err = size.check(v)
  if not n then require("vmlua.errors").raise("size: " .. err, 2) end
  return n
end

local names = { "KiB", "MiB", "GiB", "TiB", "PiB" }

-- size.format(bytes) -> "512 MiB", "2 GiB", "23.5 GiB", "100 B"
function size.format(bytes)
  if bytes < KiB then return string.format("%d B", bytes) end
  local v, i = bytes / KiB, 1
  while v >= KiB and i < #names do
    v, i = v / KiB, i + 1
  end
  local s = string.format("%.1f", v):gsub("%.0$", "")
  return s .. " " .. names[i]
end

return size
