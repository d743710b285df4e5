-- Where recipes are found. The recipe path, first match wins:
--   1. VMLUA_PATH: `;`-separated entries, each a directory (for DIR/NAME.lua
--      and DIR/NAME/init.lua) or a template with `?` (like LUA_PATH's);
--   2. $XDG_CONFIG_HOME/vmlua/recipes (~/.config/vmlua/recipes);
--   3. the directory of the script being run (the current directory for
--      `vmlua run`, `vmlua recipes` and the prompt);
--   4. package.path as vmlua.recipes.NAME: vmlua's own recipes, and rocks
--      that install a module of that name.
-- Directory walks and file attributes use LuaFileSystem.
local lfs = require "lfs"

local path = {}

-- Set by the command line: the directory of the script it runs.
path.script_dir = nil
-- Overridable for specs.
path.getenv = os.getenv

local function env(name)
  local v = path.getenv(name)
  if v ~= nil and v ~= "" then return v end
end

local function is_file(file)
  return lfs.attributes(file, "mode") == "file"
end

local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  return (lfs.currentdir() .. "/" .. p):gsub("/%./", "/"):gsub("/%.$", "")
end

-- The templates of a directory.
local function dir_templates(dir)
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  return { dir .. "/?.lua", dir .. "/?/init.lua" }
end

-- The recipe path: { { template=, origin= }, ... } in search order.
function path.entries()
  local out = {}
  local function add(templates, origin)
    for _, t in ipairs(templates) do out[#out + 1] = { template = absolute(t), origin = origin } end
  end
  for entry in (env("VMLUA_PATH") or ""):gmatch("[^;]+") do
    add(entry:find("?", 1, true) and { entry } or dir_templates(entry), "VMLUA_PATH")
  end
  local config = env("XDG_CONFIG_HOME") or ((env("HOME") or "") .. "/.config")
  add(dir_templates(config .. "/vmlua/recipes"), "config")
  add(dir_templates(path.script_dir or lfs.currentdir()), "script directory")
  local own = package.searchpath("vmlua", package.path) -- vmlua/init.lua: vmlua's own modules are beside it
  own = own and own:match("^(.*)/init%.lua$")
  own = own and absolute(own)
  for t in package.path:gmatch("[^;]+") do
    local template = absolute(t:gsub("%?", "vmlua/recipes/?"))
    local builtin = own and template:sub(1, #own + 1) == own .. "/"
    out[#out + 1] = { template = template, origin = builtin and "built-in" or "package.path", module = true }
  end
  return out
end

-- path.find(name) -> file, module name (what require loads it as), origin;
-- or nil and the places searched.
function path.find(name)
  local sub = name:gsub("%.", "/")
  local tried = {}
  for _, e in ipairs(path.entries()) do
    local file = e.template:gsub("%?", sub)
    if is_file(file) then
      return file, e.module and ("vmlua.recipes." .. name) or name, e.origin
    end
    tried[#tried + 1] = file
  end
  return nil, tried
end

-- The searcher that `require` uses for recipes (names outside vmlua's own):
-- the same files, in the same order, as path.find.
function path.searcher(name)
  if name:match("^vmlua%.") then return nil end
  local sub = name:gsub("%.", "/")
  local tried = {}
  for _, e in ipairs(path.entries()) do
    if e.module then break end -- package.path: the next searcher's job
    local file = e.template:gsub("%?", sub)
    if is_file(file) then
      local chunk, err = loadfile(file)
      if not chunk then error(string.format("error loading recipe '%s' from file '%s':\n\t%s", name, file, err), 0) end
      return chunk, file
    end
    tried[#tried + 1] = "\n\tno file '" .. file .. "' (recipe path)"
  end
  return table.concat(tried)
end

-- Installs path.searcher once, right after package.preload's.
function path.install()
  for _, s in ipairs(package.searchers) do
    if s == path.searcher then return end
  end
  table.insert(package.searchers, 2, path.searcher)
end

-- The recipe files a template holds: { { name=, file= }, ... }.
local function scan(template)
  local found = {}
  local head, tail = template:match("^(.-)%?(.*)$")
  if not head or tail:find("?", 1, true) then return found end
  local dir, prefix = head:match("^(.*)/([^/]*)$")
  if not dir then return found end
  if dir == "" then dir = "/" end
  if lfs.attributes(dir, "mode") ~= "directory" then return found end
  local ok, iter, state = pcall(lfs.dir, dir)
  if not ok then return found end
  for entry in iter, state do
    if entry:sub(1, 1) ~= "." and entry:sub(1, #prefix) == prefix then
      local rest = entry:sub(#prefix + 1)
      local name, file
      if tail:sub(1, 1) == "/" then -- NAME/init.lua: a directory
        file = dir .. "/" .. entry .. tail
        if is_file(file) then name = rest end
      elseif #rest > #tail and rest:sub(-#tail) == tail then
        name, file = rest:sub(1, #rest - #tail), dir .. "/" .. entry
        if not is_file(file) then name = nil end
      end
      if name and name:match("^[%w_%-]+$") then found[#found + 1] = { name = name, file = file } end
    end
  end
  table.sort(found, function(a, b) return a.name < b.name end)
  return found
end

-- Every recipe on the path: { { name=, file=, origin=, module=, shadowed_by=|nil }, ... }
-- in path order; a name seen before is shadowed by the first file of that name.
function path.list()
  local out, first, seen = {}, {}, {}
  for _, e in ipairs(path.entries()) do
    for _, r in ipairs(scan(e.template)) do
      if not seen[r.file] then
        seen[r.file] = true
        r.origin = e.origin
        r.module = e.module and ("vmlua.recipes." .. r.name) or r.name
        r.shadowed_by = first[r.name]
        first[r.name] = first[r.name] or r.file
        out[#out + 1] = r
      end
    end
  end
  return out
end

return path
