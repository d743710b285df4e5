-- vmlua recipes, vmlua run RECIPE, and parameters from the command line
-- (`vmlua FILE key=value` when FILE returns a recipe).
local core = require "vmlua.core"
local errors = require "vmlua.errors"
local params = require "vmlua.recipe.params"
local path = require "vmlua.recipe.path"
local recipe = require "vmlua.recipe"

local recipes = {}

recipes.HELP = {
  recipes = [[
usage: vmlua recipes [--json]
List the recipes on the recipe path: name, where it was found, its
description and parameters. A name found twice is used from the first
place; the later ones are listed as shadowed. A recipe from VMLUA_PATH,
the config directory or the current directory is read in the sandbox
(see vmlua --sandbox); one that does what the sandbox refuses is listed
as refused, and nothing of it runs outside.
The path: VMLUA_PATH (';'-separated directories or ?-templates),
$XDG_CONFIG_HOME/vmlua/recipes, the current directory, then vmlua's own
recipes and rocks (modules vmlua.recipes.NAME on package.path).]],
  run = [[
usage: vmlua run RECIPE [NAME=VALUE...]
       vmlua run RECIPE --help     its parameters
Find RECIPE on the recipe path (see vmlua recipes; a path to a file works
too), resolve its parameters and boot what it defines, as vmlua FILE does.
A parameter comes from NAME=VALUE, else VMLUA_PARAM_<NAME>, else its default.]],
}

local function fail(message)
  io.stderr:write("vmlua: ", message, "\n")
  return 1
end

-- Whether a command-line word names a recipe rather than a file.
function recipes.is_name(word)
  return word:match("^[%w_%-%.]+$") ~= nil and not word:match("%.lua$")
    and require("lfs").attributes(word, "mode") ~= "file"
end

-- The recipe a command names: a file's, or one found by name.
function recipes.resolve_name(word)
  if recipes.is_name(word) then
    local r, file, origin = recipe.find(word)
    return r, file, origin
  end
  return recipe.load(word), word, "file"
end

-- When a file or name gave a recipe: its VMs from the command line's
-- NAME=VALUE words. Returns "help" after printing the parameters for --help.
function recipes.instantiate(r, words, found)
  for _, w in ipairs(words) do
    if w == "--help" or w == "-h" then
      io.stdout:write(recipe.help(r, found), "\n")
      return "help"
    end
  end
  local given, bad = params.parse_args(words)
  if not given then
    errors.raise(string.format('recipe %s: expected NAME=VALUE, got "%s" (vmlua run %s --help lists its parameters)',
      r.name, bad, r.name))
  end
  return recipe.instantiate(r, given, { source = "command line", text = true })
end

-- Where vmlua's own recipes come from, and rocks that install a module
-- vmlua.recipes.NAME: code installed like any Lua module, trusted. The
-- rest (VMLUA_PATH, the config directory, the script's) is someone's file.
local TRUSTED = { ["built-in"] = true, ["package.path"] = true }

-- The recipe a listing describes: a trusted one as require loads it (a
-- shadowed one from its own file); any other from its file, in the
-- sandbox, since listing runs its top level.
local function load_listed(found)
  if not TRUSTED[found.origin] then return recipe.load(found.file, { sandbox = true }) end
  if found.shadowed_by then return recipe.load(found.file) end
  return require(found.module)
end

-- "FILE:LINE: WHAT: refused by the sandbox: WHY" -> "refused by the sandbox: WHY (FILE:LINE: WHAT)",
-- or nil for an error that is not the sandbox's.
local function refusal(message)
  local before, verb, why = message:match("^(.-):?%s*(%a+) by the sandbox:%s*(.*)$")
  if not (verb == "refused" or verb == "stopped") then return nil end
  why = why:gsub("%s*\n%s*", "; ")
  return string.format("%s by the sandbox: %s%s", verb, why, before ~= "" and (" (" .. before .. ")") or "")
end

-- vmlua recipes [--json]
local function list(args)
  local json = false
  for _, a in ipairs(args) do
    if a == "--json" then
      json = true
    elseif a == "--help" or a == "-h" then
      io.stdout:write(recipes.HELP.recipes, "\n")
      return 0
    else
      return fail("recipes: unknown argument '" .. a .. "'\n" .. recipes.HELP.recipes)
    end
  end
  path.install()
  local out = {}
  for _, found in ipairs(path.list()) do
    local item = { name = found.name, file = found.file, origin = found.origin, module = found.module,
                   shadowed = found.shadowed_by ~= nil, shadowed_by = found.shadowed_by }
    local ok, r = pcall(load_listed, found)
    if ok and recipe.is(r) then
      local d = recipe.describe(r)
      item.description, item.summary, item.params, item.extends = d.description, recipe.summary(r), d.params, d.extends
    else
      item.error = ok and (found.file .. ": not a recipe") or tostring(r)
      item.refused = not ok and refusal(item.error) or nil
    end
    out[#out + 1] = item
  end
  if json then
    for _, item in ipairs(out) do
      if item.params and #item.params == 0 then item.params = nil end
      for _, p in ipairs(item.params or {}) do
        if p.values and #p.values == 0 then p.values = nil end
      end
    end
    io.stdout:write((core.json_encode(out, true):gsub("^{}$", "[]")), "\n")
    return 0
  end
  for _, item in ipairs(out) do
    local where = string.format("%s (%s)", item.file, item.origin)
    if item.shadowed then where = where .. ", shadowed by " .. item.shadowed_by end
    local summary = item.summary or item.refused or ("error: " .. (item.error or "?"))
    io.stdout:write(item.name, "  ", summary, "\n    ", where, "\n")
    if item.params then
      local names = {}
      for _, p in ipairs(item.params) do
        names[#names + 1] = p.name .. "=" .. params.shape(p) ..
          (p.default ~= nil and ("(" .. params.format(p, p.default) .. ")") or "")
      end
      io.stdout:write("    ", table.concat(names, " "), "\n")
    end
  end
  return 0
end

-- vmlua recipes ...: returns the exit status.
function recipes.list_command(args)
  return list(args)
end

-- vmlua run ...: nil and the exit status when nothing is to run (--help, no
-- recipe), else the recipe's word.
function recipes.run_args(argv)
  local word = argv[2]
  if word == nil then
    io.stderr:write("vmlua: run: which recipe?\n", recipes.HELP.run, "\n")
    return nil, 2
  elseif word == "--help" or word == "-h" then
    io.stdout:write(recipes.HELP.run, "\n")
    return nil, 0
  elseif word:sub(1, 1) == "-" then
    io.stderr:write("vmlua: run: unknown option '", word, "'\n", recipes.HELP.run, "\n")
    return nil, 2
  end
  return word
end

return recipes
