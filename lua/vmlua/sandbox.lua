--- Running someone else's recipe safely: `sandbox.load(path, opts)` runs a
-- Lua file in a restricted environment, with limits on its CPU time and
-- memory, and checks every VM it defines before anything starts.
-- @module vmlua.sandbox
local check = require "vmlua.sandbox.check"
local core = require "vmlua.core"
local env = require "vmlua.sandbox.env"
local errors = require "vmlua.errors"
local machine = require "vmlua.machine"
local membrane = require "vmlua.sandbox.membrane"
local paths = require "vmlua.sandbox.paths"
local run = require "vmlua.sandbox.run"
local size = require "vmlua.size"

local sandbox = {
  --- The limits when the options give none: `cpu` (seconds of CPU time per run of the recipe's code)
  -- and `memory` (bytes the Lua state may grow by while it runs).
  defaults = { cpu = 1, memory = 64 * 1024 * 1024 },
}

-- Where vmlua's own modules are: vmlua.recipes.NAME is required from there only.
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")

local Box = {}
Box.__index = Box

-- Runs fn(...) as the recipe's code, then checks the VMs it defined or
-- was given; returns fn's results.
function Box:call(fn, ...)
  if self.depth > 0 then return fn(...) end
  local first = #machine.defined + 1
  local function finish(...)
    local vms, seen = {}, {}
    for i = first, #machine.defined do
      seen[machine.defined[i]], vms[#vms + 1] = true, machine.defined[i]
    end
    for _, vm in ipairs(self.vms) do
      if not seen[vm] then seen[vm], vms[#vms + 1] = true, vm end
    end
    check.vms(self, vms, machine)
    return ...
  end
  local results = table.pack(pcall(run.call, self, fn, ...))
  if not results[1] then
    for i = #machine.defined, first, -1 do table.remove(machine.defined, i) end -- nothing half-defined
    error(results[2], 0)
  end
  return finish(table.unpack(results, 2, results.n))
end

-- require inside the sandbox: "vmlua" is the recipe's view of it;
-- vmlua.recipes.NAME is vmlua's own (trusted) recipe; any other module is
-- a Lua file under the recipe's directory, loaded into the same sandbox.
function Box:require(name)
  if type(name) ~= "string" then errors.raise("require: expected a module name (a string)", 3) end
  if name == "vmlua" then return self.view end
  local done = self.loaded[name]
  if done ~= nil then
    if done == self.loading then errors.raise("require: " .. name .. " requires itself", 3) end
    return done
  end
  local file = name:gsub("%.", "/")
  local own = name:match("^vmlua%.recipes%.[%w_]+$") and core.realpath(HERE .. "/recipes/" .. name:sub(15) .. ".lua")
  if own and core.realpath(package.searchpath(name, package.path) or "") == own then
    self.loaded[name] = membrane.to_sandbox(self, require(name))
    return self.loaded[name]
  end
  for _, candidate in ipairs { file .. ".lua", file .. "/init.lua" } do
    local dir, real = paths.inside(candidate, { self.dir }, self.dir)
    local st = dir and core.stat(real)
    if st and st.type == "file" then
      local chunk, err = loadfile(real, "t", self.env)
      if not chunk then errors.raise(err, 3) end
      self.loaded[name] = self.loading
      local result = chunk(name, real)
      if result == nil then result = true end
      self.loaded[name] = result
      return result
    end
  end
  errors.raise(string.format("require: refused by the sandbox: no module %q under %s (a sandboxed recipe "
    .. "requires vmlua, vmlua's own recipes and Lua files under its directory; C modules never)", name,
    self.dir), 3)
end

local function option_dirs(name, list)
  local dirs = {}
  if list == nil then return dirs end
  if type(list) == "string" then list = { list } end
  if type(list) ~= "table" then errors.raise("sandbox: " .. name .. ": expected a list of directories", 3) end
  for _, d in ipairs(list) do
    if type(d) ~= "string" or d == "" then errors.raise("sandbox: " .. name .. ": expected directory paths", 3) end
    local real = core.realpath(d)
    local st = real and core.stat(real)
    if not st or st.type ~= "directory" then errors.raise("sandbox: allow: " .. d .. " is not a directory", 3) end
    dirs[#dirs + 1] = real
  end
  return dirs
end

local function positive(name, v, default, parse)
  if v == nil then return default end
  if parse then v = parse(v) end
  if type(v) ~= "number" or v <= 0 or v ~= v or v == math.huge then
    errors.raise(string.format("sandbox: %s: expected a positive number, got %s", name, tostring(v)), 3)
  end
  return v
end

local function new_box(path, opts)
  if type(path) ~= "string" or path == "" then errors.raise("sandbox.load: expected the path of a Lua file", 3) end
  local real = core.realpath(path)
  local st = real and core.stat(real)
  if not st or st.type ~= "file" then errors.raise("sandbox.load: " .. path .. ": no such file", 3) end
  local dir = real:match("^(.*)/[^/]*$")
  if dir == "" then dir = "/" end
  local home = os.getenv("HOME") and core.realpath(os.getenv("HOME"))
  if dir == "/" or dir == home then
    errors.raise(string.format("sandbox.load: %s: a sandboxed recipe may read its whole directory, and %s is "
      .. "too much; put the recipe in a directory of its own", path, dir), 3)
  end
  local box = setmetatable({
    name = path, path = real, dir = dir, depth = 0, loaded = {}, loading = {},
    cpu = positive("cpu", opts.cpu, sandbox.defaults.cpu),
    memory = math.floor(positive("memory", opts.memory, sandbox.defaults.memory,
      function(v) return size.check(v) or v end)),
    env_names = {},
  }, Box)
  for _, name in ipairs(opts.env or {}) do box.env_names[name] = true end
  box.dirs = { dir }
  local cache = core.realpath(require("vmlua.runtime").cache())
  if cache then box.dirs[#box.dirs + 1] = cache end
  for _, d in ipairs(option_dirs("allow", opts.allow)) do box.dirs[#box.dirs + 1] = d end
  membrane.init(box)
  box.env = env.new(box)
  box.env.require = function(name) return box:require(name) end
  box.view = env.vmlua(box, require "vmlua")
  return box
end

--- Runs the Lua file at `path` in a sandbox and returns what it returns.
-- The file sees a restricted set of globals: no os.execute, io.popen, debug, package, binary chunks or
-- C modules; io.open and io.lines read only under its directory, vmlua's cache and the allowed directories;
-- os.getenv sees VMLUA_* and the names in `env`. `require "vmlua"` gives the definition functions, and
-- a VM it defines is checked before anything starts: its files must lie under those directories, and raw
-- `qemu` arguments are refused. Functions it returns run under the same sandbox when called.
-- Raises a clear error naming the file when it is refused or passes a limit.
-- @tparam string path the recipe's file
-- @tparam[opt] table opts `allow` (more directories, a list), `cpu` (seconds of CPU time, default 1),
-- `memory` (bytes or a size such as "64M", default 64 MiB), `env` (environment variable names it may read),
-- `args` (a list: its `...` and `arg`)
-- @return the file's results (a VM it returns is the VM itself)
function sandbox.load(path, opts)
  if opts ~= nil and type(opts) ~= "table" then errors.raise("sandbox.load: the options must be a table", 2) end
  opts = opts or {}
  local box = new_box(path, opts)
  local args = opts.args or {}
  local arg = { [0] = path }
  for i, a in ipairs(args) do arg[i] = tostring(a) end
  box.env.arg = arg
  return box:call(function()
    local chunk, err = loadfile(path, "t", box.env)
    if not chunk then errors.raise(err) end
    return membrane.to_host(box, chunk(table.unpack(arg, 1, #arg)))
  end)
end

return sandbox
