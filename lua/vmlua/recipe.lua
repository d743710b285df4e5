-- Recipes: reusable, parameterised VM definitions (vmlua.recipe{...}).
--
--   local web = vmlua.recipe { description = TEXT, params = { NAME = DECL, ... },
--                              define = function(p) return vmlua.vm{...} end }
--   web:extend { description=, params=, define = function(p, vm, vms) end, vm = { FIELD = V } }
--   web:make { cpus = 2 }  or  web { cpus = 2 }   -> the VM(s) it defines
--   vmlua.recipe.find "web"                       -> the recipe, from the recipe path
--
-- Parameters are declared and resolved by recipe/params.lua; the recipe
-- path is recipe/path.lua's. Every recipe has a `name` parameter (the VM's
-- name) unless it declares its own.
local config = require "vmlua.config"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local machine = require "vmlua.machine"
local params = require "vmlua.recipe.params"
local path = require "vmlua.recipe.path"
local runtime = require "vmlua.runtime"

local recipe = {}

local Recipe = {}
Recipe.__index = Recipe

local SPEC_FIELDS = { "name", "description", "params", "define" }
local EXTEND_FIELDS = { "name", "description", "params", "define", "vm" }

-- What each VM came from: cfg -> { recipe=, params = resolved, source= } (plan reads it).
local origins = setmetatable({}, { __mode = "k" })

function recipe.is(v)
  return getmetatable(v) == Recipe
end

-- The recipe's default name: its file's basename (NAME.lua, or NAME/init.lua).
local function name_of(where)
  local file = where.source or where.short or ""
  local dir, base = file:match("^(.-)/?([^/]*)%.lua$")
  if base == "init" and dir then base = dir:match("([^/]+)$") end
  if base and base:match("^[%w_%-]+$") then return base end
  return "recipe"
end

local function check_name(where, name)
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    fields.fail(where, "name", "a recipe's name is letters, digits, _ and -, got %s", fields.describe(name))
  end
  return name
end

local function declare_all(where, spec_params, base)
  local decls = {}
  for name, decl in pairs(base or {}) do decls[name] = decl end
  if spec_params == nil then return decls end
  if type(spec_params) ~= "table" then
    fields.fail(where, "params", "expected a table of parameters like { cpus = { type = \"integer\" } }, got %s",
      fields.describe(spec_params))
  end
  for name, decl in pairs(spec_params) do
    decls[name] = params.declare(where, name, decl, base and base[name])
  end
  return decls
end

-- Every recipe takes `name` (unless it declares its own): given, it renames
-- what define made, so that one recipe makes a cluster of distinct VMs.
local function implicit_name(decls, where)
  if decls.name then return decls end
  decls.name = params.declare(where, "name", { type = "string",
    description = "the VM's name, instead of the one define gives (several VMs: NAME-THEIRS)" })
  decls.name.implicit = true
  return decls
end

local function check_description(where, d)
  if d ~= nil and type(d) ~= "string" then fields.fail(where, "description", "expected a string, got %s",
    fields.describe(d)) end
  return d
end

-- vmlua.recipe { ... }: `where` is the line that declared it.
local function new_recipe(where, spec)
  if type(spec) ~= "table" then
    fields.fail(where, "recipe", "expected a table like { params = {...}, define = function(p) ... end }, got %s",
      fields.describe(spec))
  end
  fields.check(spec, SPEC_FIELDS, where, "vmlua.recipe")
  if type(spec.define) ~= "function" then
    fields.fail(where, "define", "expected a function(p) that returns the VM(s), got %s", fields.describe(spec.define))
  end
  local name = spec.name and check_name(where, spec.name) or name_of(where)
  local self = setmetatable({
    name = name,
    description = check_description(where, spec.description) or "",
    where = where,
    file = where.source,
    steps = { { define = spec.define, where = where } },
  }, Recipe)
  self.params = implicit_name(declare_all(where, spec.params), where)
  return self
end
recipe.new = fields.entry(new_recipe)

-- A recipe built on this one: its parameters (new ones, or new defaults and descriptions for
-- inherited ones), then its define(p, vm, vms) after the base's, to change the VM(s) or add steps.
-- @function Recipe:extend
-- @tparam table spec `description`, `params`, `define`, `vm` (fields given to every vmlua.vm{} of the base)
-- @treturn Recipe
Recipe.extend = fields.entry(function(where, self, spec)
  if not recipe.is(self) then
    errors.raise(fields.location(where) .. ": extend: call it as base:extend { ... } (with a colon)")
  end
  if type(spec) ~= "table" then
    fields.fail(where, "extend", "expected a table like { params = {...}, define = function(p, vm) ... end }, got %s",
      fields.describe(spec))
  end
  fields.check(spec, EXTEND_FIELDS, where, self.name .. ":extend")
  if spec.define ~= nil and type(spec.define) ~= "function" then
    fields.fail(where, "define", "expected a function(p, vm, vms), got %s", fields.describe(spec.define))
  end
  if spec.vm ~= nil and type(spec.vm) ~= "table" and type(spec.vm) ~= "function" then
    fields.fail(where, "vm", "expected a table of vmlua.vm fields, or a function(spec, p), got %s",
      fields.describe(spec.vm))
  end
  local name = spec.name and check_name(where, spec.name) or name_of(where)
  local steps = table.move(self.steps, 1, #self.steps, 1, {})
  steps[#steps + 1] = { define = spec.define, where = where, vm = spec.vm, extends = true }
  local decls = declare_all(where, spec.params, self.params)
  return setmetatable({
    name = name,
    description = check_description(where, spec.description) or self.description,
    where = where,
    file = where.source,
    base = self,
    steps = steps,
    params = decls,
  }, Recipe)
end)

-- The recipe's parameters resolved for one instantiation, without defining anything.
-- @function Recipe:resolve
-- @tparam[opt] table values `{ NAME = value }` (the caller's)
-- @treturn table p, the values by name
-- @treturn table each `{ name=, value=, source=, type= }`, sorted by name
Recipe.resolve = fields.entry(function(where, self, values, how)
  how = how or { source = "caller", where = where }
  return params.resolve(self, values, how)
end)

-- The vmlua.vm{} overrides of extensions, applied while a base's define runs.
local overrides = {}

local function apply_overrides(spec)
  if #overrides == 0 or type(spec) ~= "table" then return spec end
  local out = {}
  for k, v in pairs(spec) do out[k] = v end
  for _, o in ipairs(overrides) do
    if type(o.vm) == "function" then
      out = o.vm(out, o.p) or out
    else
      for k, v in pairs(o.vm) do out[k] = v end
    end
  end
  return out
end

local function collect(results, before)
  local vms = {}
  for i = 1, results.n do
    local r = results[i]
    if getmetatable(r) == machine.VM then
      vms[#vms + 1] = r
    elseif type(r) == "table" and getmetatable(r) == nil then
      for _, v in ipairs(r) do
        if getmetatable(v) == machine.VM then vms[#vms + 1] = v end
      end
    end
  end
  if #vms == 0 then
    for i = before + 1, #machine.defined do vms[#vms + 1] = machine.defined[i] end
  end
  return vms
end

local function rename(vm, name, where)
  local problem = runtime.name_problem(name)
  if problem then fields.fail(where, "name", "%s", problem) end
  vm.name, vm.config.name = name, name
end

-- Runs the steps: the first defines, each extension changes.
local function define(self, p)
  local vms
  local first_extension = #self.steps + 1
  for i, step in ipairs(self.steps) do
    if step.extends then first_extension = i break end
  end
  -- the extensions' vm = {...} apply to the base's vmlua.vm{} calls
  local pushed = 0
  for i = first_extension, #self.steps do
    if self.steps[i].vm then
      overrides[#overrides + 1] = { vm = self.steps[i].vm, p = p }
      pushed = pushed + 1
    end
  end
  local before = #machine.defined
  local hook = config.spec_hook
  config.spec_hook = apply_overrides
  local ok, results = pcall(function() return table.pack(self.steps[1].define(p)) end)
  config.spec_hook = hook
  for _ = 1, pushed do table.remove(overrides) end
  if not ok then error(results, 0) end
  vms = collect(results, before)
  for i = 2, #self.steps do
    local step = self.steps[i]
    if step.define then
      before = #machine.defined
      local more = collect(table.pack(step.define(p, vms[1], vms)), before)
      for _, vm in ipairs(more) do
        local known = false
        for _, v in ipairs(vms) do known = known or v == vm end
        if not known then vms[#vms + 1] = vm end
      end
    end
  end
  return vms
end

-- Instantiates the recipe: resolves the parameters (all of them, before
-- anything is defined), runs define, names the VMs. Returns the VMs.
function recipe.instantiate(self, values, how)
  local p, resolved = params.resolve(self, values, how)
  local vms = define(self, p)
  if #vms == 0 then
    errors.raise(string.format("%s: recipe %s defines no VM: its define returns none and calls no vmlua.vm{}",
      fields.location(self.steps[1].where), self.name))
  end
  local named = self.params.name
  if named and named.implicit and p.name ~= nil then
    for _, vm in ipairs(vms) do
      rename(vm, #vms == 1 and p.name or (p.name .. "-" .. vm.name), how.where or self.where)
    end
  end
  for _, vm in ipairs(vms) do origins[vm.config] = { recipe = self, params = resolved } end
  return vms
end

-- Defines the recipe's VM(s) with these parameters: call it once for each VM of a cluster.
-- `recipe:make(values)` and `recipe(values)` are the same.
-- @function Recipe:make
-- @tparam[opt] table values `{ NAME = value }`; the others come from the environment or their defaults
-- @return the VM(s) it defines (several results when it defines several)
Recipe.make = fields.entry(function(where, self, values)
  if not recipe.is(self) then
    errors.raise(fields.location(where) .. ": make: call it as recipe:make { ... } (with a colon)")
  end
  return table.unpack(recipe.instantiate(self, values, { source = "caller", where = where }))
end)

Recipe.__call = Recipe.make

function Recipe:__tostring()
  return string.format("recipe %s (%s)", self.name, fields.location(self.where))
end

-- Where a VM's configuration came from: { recipe=, params = resolved } or nil.
function recipe.origin(cfg)
  return origins[cfg]
end

-- The help text of `vmlua run NAME --help`.
function recipe.help(self, found)
  local out = { string.format("usage: vmlua run %s [NAME=VALUE...]", self.name) }
  if self.description ~= "" then out[#out + 1] = self.description end
  out[#out + 1] = string.format("recipe %s, %s%s", self.name, fields.location(self.where),
    found and (" (" .. found .. ")") or "")
  if self.base then out[#out + 1] = "extends " .. tostring(self.base) end
  out[#out + 1] = "parameters:"
  local width = 0
  local rows = {}
  for _, name in ipairs(params.names(self.params)) do
    local d = self.params[name]
    local left = name .. "=" .. params.shape(d)
    width = math.max(width, #left)
    local default = d.default ~= nil and ("(default " .. params.format(d, d.default) .. ")") or
                    (d.required and "(required)" or "")
    rows[#rows + 1] = { left, (d.description .. " " .. default):gsub("^ ", ""):gsub(" $", "") }
  end
  for _, row in ipairs(rows) do out[#out + 1] = string.format("  %-" .. width .. "s  %s", row[1], row[2]) end
  out[#out + 1] = "Each may come from the environment too: VMLUA_PARAM_NAME=VALUE (the name upper-cased);"
  out[#out + 1] = "the command line wins over the environment, the environment over the default."
  return table.concat(out, "\n")
end

-- The recipe as plain data (vmlua recipes --json).
function recipe.describe(self)
  local list = {}
  for _, name in ipairs(params.names(self.params)) do
    local d = self.params[name]
    list[#list + 1] = { name = name, type = d.type, default = d.default, description = d.description,
                        values = d.values, required = d.required, env = params.env_name(name) }
  end
  return { name = self.name, description = self.description, where = fields.location(self.where),
           extends = self.base and self.base.name or nil, params = list }
end

-- The first line of a description.
function recipe.summary(self)
  return (self.description:match("^[^\n]*"))
end

-- Loads a recipe file and returns its recipe; with `{ sandbox = true }` in vmlua's sandbox.
-- @function load_recipe
-- @tparam string file the recipe's file
-- @tparam[opt] table opts `sandbox` (true: run it restricted, see vmlua.sandbox), and the sandbox's options
-- @treturn Recipe
function recipe.load(file, opts)
  opts = opts or {}
  local results
  if opts.sandbox then
    results = table.pack(require("vmlua.sandbox").load(file, opts))
  else
    local chunk, err = loadfile(file)
    if not chunk then errors.raise(err) end
    local name = name_of({ source = file })
    results = table.pack(chunk(name, file))
  end
  local r = results[1]
  if not recipe.is(r) then
    errors.raise(string.format("%s: not a recipe: the file returns %s, not vmlua.recipe{...}", file,
      r == nil and "nothing" or fields.describe(r)))
  end
  return r
end

-- Finds a recipe by name on the recipe path (VMLUA_PATH, the user's recipes, the script's directory,
-- vmlua's own) and returns it, as `require` would load it.
-- @function recipe.find
-- @tparam string name the recipe's name ("web")
-- @treturn Recipe
-- @treturn string its file
-- @treturn string where it was found: "VMLUA_PATH", "config", "script directory", "built-in" or "package.path"
function recipe.find(name)
  if type(name) ~= "string" or name == "" then
    errors.raise("recipe.find: expected a recipe's name, got " .. fields.describe(name), 2)
  end
  path.install()
  local file, module, origin = path.find(name)
  if not file then
    local names = {}
    for _, r in ipairs(path.list()) do names[#names + 1] = r.name end
    local near = fields.suggest(name, names)
    errors.raise(string.format('no recipe "%s"%s; searched %s', name,
      near and string.format(' (did you mean "%s"?)', near) or "", table.concat(module, ", ")))
  end
  local r = require(module)
  if not recipe.is(r) then
    errors.raise(string.format("%s: not a recipe: the module returns %s, not vmlua.recipe{...}", file,
      fields.describe(r)))
  end
  return r, file, origin
end

-- vmlua.recipe: call it to declare a recipe; recipe.find finds one.
recipe.api = setmetatable({ find = recipe.find }, {
  __call = fields.entry(function(where, _, spec) return new_recipe(where, spec) end),
})

return recipe
