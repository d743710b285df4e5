-- A recipe's parameters: their declarations (checked where the recipe is
-- written), and the values of one instantiation, each converted to its type
-- and labelled with where it came from.
--
--   declaration: { type = "string"|"integer"|"number"|"boolean"|"size"|"path"|"enum",
--                  default = V, description = TEXT, values = { ... } (enum), required = true }
--   sources, strongest first: the command line or the caller's table, then the
--   environment (VMLUA_PARAM_<NAME>, the name upper-cased), then the default.
local fields = require "vmlua.fields"
local size = require "vmlua.size"

local params = {}

params.TYPES = { "string", "integer", "number", "boolean", "size", "path", "enum" }
local KNOWN = {}
for _, t in ipairs(params.TYPES) do KNOWN[t] = true end

local DECL_FIELDS = { "type", "default", "description", "values", "required" }
local TRUE = { ["true"] = true, yes = true, on = true, ["1"] = true }
local FALSE = { ["false"] = true, no = true, off = true, ["0"] = true }

-- How to write a value of the type on the command line, for help and errors.
function params.shape(decl)
  if decl.type == "enum" then return table.concat(decl.values, "|") end
  return decl.type:upper()
end

-- The environment variable that sets parameter `name`.
function params.env_name(name)
  return "VMLUA_PARAM_" .. name:upper()
end

-- converters: (decl, value, is_text, where) -> converted | nil, message
local convert = {}

function convert.string(_, v)
  if type(v) ~= "string" then return nil, "expected a string, got " .. fields.describe(v) end
  return v
end

function convert.integer(_, v, text)
  local n = v
  if text then n = tonumber(v) end
  if math.type(n) == "float" and math.tointeger(n) then n = math.tointeger(n) end
  if math.type(n) ~= "integer" then
    return nil, "expected a whole number, got " .. (text and string.format("%q", v) or fields.describe(v))
  end
  return n
end

function convert.number(_, v, text)
  local n = v
  if text then n = tonumber(v) end
  if type(n) ~= "number" or n ~= n then
    return nil, "expected a number, got " .. (text and string.format("%q", v) or fields.describe(v))
  end
  return n
end

function convert.boolean(_, v, text)
  if text then
    local s = v:lower()
    if TRUE[s] then return true elseif FALSE[s] then return false end
    return nil, string.format("expected true or false (yes/no, on/off, 1/0), got %q", v)
  end
  if type(v) ~= "boolean" then return nil, "expected true or false, got " .. fields.describe(v) end
  return v
end

function convert.size(_, v)
  local bytes, err = size.check(v)
  if not bytes then return nil, err end
  return bytes
end

function convert.path(_, v, _, where)
  if type(v) ~= "string" then return nil, "expected a path (a string), got " .. fields.describe(v) end
  if v == "" then return nil, "the path is empty" end
  if v:find("\0", 1, true) then return nil, "the path contains a NUL byte" end
  return fields.resolve(where, v)
end

function convert.enum(decl, v)
  for _, allowed in ipairs(decl.values) do
    if v == allowed then return v end
  end
  return nil, string.format("%s is not one of %s", type(v) == "string" and string.format("%q", v) or
                            fields.describe(v), table.concat(decl.values, ", "))
end

-- params.convert(decl, value, is_text, where) -> the value of the type, or nil and why.
-- Text (the command line, the environment) is parsed; a Lua value is checked.
function params.convert(decl, v, text, where)
  return convert[decl.type](decl, v, text, where)
end

-- Checks one declaration written at `where`; `base` is the inherited one
-- (an extension may give only a new default or description). Returns the
-- normalized declaration { type, default, description, values, required, where }.
function params.declare(where, name, decl, base)
  local field = "params." .. tostring(name)
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
    fields.fail(where, field, "a parameter's name is a Lua name (letters, digits, _), got %s", fields.describe(name))
  end
  if type(decl) ~= "table" then
    fields.fail(where, field, 'expected a table like { type = "integer", default = 1 }, got %s', fields.describe(decl))
  end
  local allowed = {}
  for _, f in ipairs(DECL_FIELDS) do allowed[f] = true end
  for k in pairs(decl) do
    if not allowed[k] then
      local near = type(k) == "string" and fields.suggest(k, DECL_FIELDS)
      fields.fail(where, field .. "." .. tostring(k), "unknown field; %s", near and string.format('did you mean "%s"?',
        near) or "a parameter takes " .. table.concat(DECL_FIELDS, ", "))
    end
  end
  local t = decl.type or (base and base.type)
  if t == nil then
    fields.fail(where, field .. ".type", "missing; one of %s", table.concat(params.TYPES, ", "))
  elseif not KNOWN[t] then
    local near = type(t) == "string" and fields.suggest(t, params.TYPES)
    fields.fail(where, field .. ".type", "%s is not a type; %s", type(t) == "string" and string.format("%q", t)
      or fields.describe(t),
      near and string.format('did you mean "%s"?', near) or "one of " .. table.concat(params.TYPES, ", "))
  end
  if base and decl.type and decl.type ~= base.type then
    fields.fail(where, field .. ".type", "%s is %s in the recipe it extends (%s); an extension keeps its type",
      name, base.type, fields.location(base.where))
  end
  local out = { name = name, type = t, where = where }
  local values = decl.values
  if values == nil and base then values = base.values end
  if t == "enum" then
    if type(values) ~= "table" or #values == 0 or not fields.is_list(values) then
      fields.fail(where, field .. ".values", 'an enum needs its values, a list of strings like { "small", "big" }')
    end
    for i, v in ipairs(values) do
      if type(v) ~= "string" then
        fields.fail(where, string.format("%s.values[%d]", field, i), "expected a string, got %s", fields.describe(v))
      end
    end
    out.values = values
  elseif decl.values ~= nil then
    fields.fail(where, field .. ".values", "only an enum has values (this is a %s)", t)
  end
  local description = decl.description
  if description == nil and base then description = base.description end
  if description ~= nil and type(description) ~= "string" then
    fields.fail(where, field .. ".description", "expected a string, got %s", fields.describe(description))
  end
  out.description = description or ""
  local required = decl.required
  if required == nil and base then required = base.required end
  if required ~= nil and type(required) ~= "boolean" then
    fields.fail(where, field .. ".required", "expected true or false, got %s", fields.describe(required))
  end
  out.required = required == true
  if decl.default ~= nil then
    local v, err = params.convert(out, decl.default, false, where)
    if v == nil then fields.fail(where, field .. ".default", "%s", err) end
    out.default, out.default_text = v, decl.default
  elseif base then
    out.default, out.default_text = base.default, base.default_text
  end
  return out
end

-- The names of a declaration table, sorted.
function params.names(decls)
  local names = {}
  for name in pairs(decls) do names[#names + 1] = name end
  table.sort(names)
  return names
end

-- "cpus (integer), flavor (small|big), ..." for errors.
function params.summary(decls)
  local parts = {}
  for _, name in ipairs(params.names(decls)) do
    parts[#parts + 1] = string.format("%s (%s)", name, params.shape(decls[name]):lower())
  end
  return table.concat(parts, ", ")
end

-- A value as text: sizes as sizes, strings quoted only when empty.
function params.format(decl, v)
  if v == nil then return "(none)" end
  if decl.type == "size" then return size.format(v) end
  if type(v) == "string" and v == "" then return '""' end
  return tostring(v)
end

-- Parses the command line's NAME=VALUE words into { name = text }.
-- Returns the table, or nil and the first word that is not NAME=VALUE.
function params.parse_args(words)
  local out = {}
  for _, word in ipairs(words) do
    local name, value = word:match("^([%a_][%w_%-]*)=(.*)$")
    if not name then return nil, word end
    out[name:gsub("%-", "_")] = value
  end
  return out
end

-- params.resolve(recipe, given, how) -> p, resolved
-- recipe: { name=, where=, params = decls }; given: { name = value } or nil;
-- how: { source = "command line"|"caller", text = true (values are text),
--        where = the caller's location (paths resolve against it), getenv = os.getenv }.
-- p: { name = value }; resolved: { { name=, value=, source=, type= }, ... } sorted by name.
-- Raises "FILE:LINE: recipe NAME: PARAM: MESSAGE" with the recipe's place
-- (the parameter's declaration) for any unknown parameter or bad value.
function params.resolve(recipe, given, how)
  local decls = recipe.params
  local getenv = how.getenv or os.getenv
  local from = how.source
  if how.where and how.source == "caller" then from = "caller, " .. fields.location(how.where) end
  local function fail(where, name, text)
    fields.fail(where, "recipe " .. recipe.name .. ": " .. name, "%s%s %s's parameters: %s", text,
      text:sub(-1) == "?" and "" or ";", recipe.name, params.summary(decls))
  end
  given = given or {}
  if type(given) ~= "table" then
    fields.fail(how.where or recipe.where, "recipe " .. recipe.name,
      "expected a table of parameters like { cpus = 2 }, got %s", fields.describe(given))
  end
  local unknown = {}
  for name in pairs(given) do
    if type(name) ~= "string" or not decls[name] then unknown[#unknown + 1] = tostring(name) end
  end
  if #unknown > 0 then
    table.sort(unknown)
    local name = unknown[1]
    local near = fields.suggest(name, params.names(decls))
    fail(recipe.where, name, string.format("unknown parameter (from the %s)%s", from,
      near and string.format('; did you mean "%s"?', near) or ""))
  end
  local p, resolved = {}, {}
  for _, name in ipairs(params.names(decls)) do
    local decl = decls[name]
    local value, source, raw, err
    local env = params.env_name(name)
    if given[name] ~= nil then
      raw, source = given[name], how.source
      value, err = params.convert(decl, raw, how.text, how.text and { short = "command line", line = 0 }
                                  or how.where or recipe.where)
      if value == nil then fail(decl.where, name, string.format("%s (from the %s)", err, from)) end
    elseif getenv(env) ~= nil and getenv(env) ~= "" then
      raw, source = getenv(env), "environment"
      value, err = params.convert(decl, raw, true, { short = env, line = 0 })
      if value == nil then fail(decl.where, name, string.format("%s (from the environment, %s)", err, env)) end
    elseif decl.default ~= nil then
      value, source = decl.default, "default"
    elseif decl.required then
      fail(decl.where, name, "missing; it has no default, so give it (" .. name .. "=" .. params.shape(decl) .. ")")
    else
      source = "default"
    end
    p[name] = value
    resolved[#resolved + 1] = { name = name, value = value, source = source, type = decl.type,
                                env = source == "environment" and env or nil }
  end
  return p, resolved
end

return params
