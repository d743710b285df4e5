-- The globals of a sandboxed recipe: Lua's safe parts, copies of the
-- libraries it may change, and guarded versions of the rest. Nothing in
-- it reaches the host's _G, package.loaded, the string table or the
-- metatables of host objects.
local core = require "vmlua.core"
local config = require "vmlua.config"
local errors = require "vmlua.errors"
local membrane = require "vmlua.sandbox.membrane"
local paths = require "vmlua.sandbox.paths"
local run = require "vmlua.sandbox.run"

local env = {}

local refuse = membrane.refuse
local host_G = _G

-- What of the real vmlua a recipe sees (when the module has it).
env.VMLUA = { "size", "vm", "linux", "efi", "disk", "nat", "share", "console", "here", "lan", "cloudinit" }

local function copy(t, except)
  local c = {}
  for k, v in pairs(t) do
    if not (except and except[k]) then c[k] = v end
  end
  return c
end

-- A table every use of which raises: debug, package.
local function absent(name, why)
  return setmetatable({}, {
    __index = function(_, k) errors.raise(string.format("%s.%s: refused by the sandbox: %s", name, k, why), 2) end,
    __newindex = function() errors.raise(name .. ": refused by the sandbox: " .. why, 2) end,
    __metatable = false,
  })
end

-- The real path of a file the recipe may read, or raises naming `what`.
local function readable(box, what, path)
  if type(path) ~= "string" then errors.raise(what .. ": expected a path (a string)", 3) end
  local dir, real = paths.inside(path, box.dirs, box.dir)
  if not dir then
    errors.raise(string.format("%s: refused by the sandbox: %s is outside the directories it may read (%s)",
      what, path, paths.list(box.dirs)), 3)
  end
  local st = core.stat(real)
  if not st or st.type ~= "file" then
    errors.raise(string.format("%s: %s: no such file", what, path), 3)
  end
  return real
end

local function read_mode(what, mode)
  if mode ~= nil and mode ~= "r" and mode ~= "rb" then
    errors.raise(string.format('%s: refused by the sandbox: mode %s; a sandboxed recipe only reads files ("r")',
      what, tostring(mode)), 3)
  end
end

local function text_only(what, mode)
  if mode ~= nil and mode ~= "t" then
    errors.raise(string.format('%s: refused by the sandbox: mode %s; only text chunks (mode "t") are loaded',
      what, tostring(mode)), 3)
  end
end

local function lib_io(box)
  return {
    open = function(path, mode)
      read_mode("io.open", mode)
      return io.open(readable(box, "io.open", path), mode or "r")
    end,
    lines = function(path, ...)
      if path == nil then errors.raise("io.lines: refused by the sandbox: standard input", 2) end
      return io.lines(readable(box, "io.lines", path), ...)
    end,
    write = function(...) io.write(...) end,
    type = io.type,
    read = refuse("io.read", "a sandboxed recipe does not read standard input"),
    popen = refuse("io.popen", "a sandboxed recipe runs no host commands"),
    close = refuse("io.close", "it closes vmlua's own output"),
    input = refuse("io.input", "a sandboxed recipe opens files with io.open"),
    output = refuse("io.output", "a sandboxed recipe writes no files"),
    tmpfile = refuse("io.tmpfile", "a sandboxed recipe writes no files"),
  }
end

local function lib_os(box)
  local host_cmd = "a sandboxed recipe runs no host commands"
  return {
    time = os.time, clock = os.clock, date = os.date, difftime = os.difftime,
    getenv = function(name)
      if type(name) == "string" and (name:match("^VMLUA_") or box.env_names[name]) then return os.getenv(name) end
      return nil
    end,
    execute = refuse("os.execute", host_cmd),
    exit = refuse("os.exit", "a sandboxed recipe ends by returning"),
    remove = refuse("os.remove", "a sandboxed recipe writes no files"),
    rename = refuse("os.rename", "a sandboxed recipe writes no files"),
    tmpname = refuse("os.tmpname", "a sandboxed recipe writes no files"),
    setlocale = refuse("os.setlocale", "it changes how vmlua itself reads and prints numbers"),
  }
end

local function lib_coroutine(box)
  local co = copy(coroutine)
  co.create = function(f)
    local c = coroutine.create(f)
    run.hook(box, c)
    return c
  end
  co.resume = function(c, ...) return run.rethrow(box, coroutine.resume(c, ...)) end
  co.close = function(c) return run.rethrow(box, coroutine.close(c)) end
  co.wrap = function(f)
    local c = co.create(f)
    return function(...)
      local function pass(ok, ...)
        if not ok then error((...), 0) end
        return ...
      end
      return pass(run.rethrow(box, coroutine.resume(c, ...)))
    end
  end
  co.yield = function(...)
    if coroutine.running() == box.runner then
      errors.raise("coroutine.yield: refused by the sandbox: the recipe's own code is not a coroutine", 2)
    end
    return coroutine.yield(...)
  end
  return co
end

local function metatables(box, G)
  local own = setmetatable({}, { __mode = "k" }) -- metatables the recipe set
  G.getmetatable = function(v)
    local mt = debug.getmetatable(v)
    if mt ~= nil and own[mt] then return getmetatable(v) end
    return nil -- strings, files and vmlua's objects: not the recipe's to see
  end
  G.setmetatable = function(t, mt)
    if type(t) ~= "table" then errors.raise("setmetatable: expected a table", 2) end
    local current = debug.getmetatable(t)
    if (current ~= nil and not own[current]) or config.is(t) or box.outside[t] then
      errors.raise("setmetatable: refused by the sandbox: the table is vmlua's", 2)
    end
    if mt ~= nil then
      if type(mt) ~= "table" then errors.raise("setmetatable: expected a table or nil", 2) end
      if rawget(mt, "__gc") ~= nil then
        errors.raise("setmetatable: refused by the sandbox: __gc (a finalizer would run outside its limits)", 2)
      end
      own[mt] = true
    end
    return setmetatable(t, mt)
  end
end

local function loaders(box, G)
  G.load = function(chunk, name, mode, ...)
    text_only("load", mode)
    if select("#", ...) > 0 then return load(chunk, name, "t", (...)) end
    return load(chunk, name, "t", G)
  end
  G.loadfile = function(path, mode, ...)
    text_only("loadfile", mode)
    local real = readable(box, "loadfile", path)
    if select("#", ...) > 0 then return loadfile(real, "t", (...)) end
    return loadfile(real, "t", G)
  end
  G.dofile = function(path)
    local chunk, err = loadfile(readable(box, "dofile", path), "t", G)
    if not chunk then error(err, 0) end
    return chunk()
  end
end

-- env.new(box) -> the globals of the box's code.
function env.new(box)
  local G = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, select = select,
    tonumber = tonumber, tostring = tostring, type = type, rawequal = rawequal, rawlen = rawlen,
    rawget = rawget, rawset = rawset, _VERSION = _VERSION,
    print = function(...) return host_G.print(...) end, -- vmlua plan sends it to stderr
    pcall = function(f, ...) return run.rethrow(box, pcall(f, ...)) end,
    -- Lua runs a message handler with hooks off after a hook's error: past
    -- the limit, the recipe's handler is not run at all.
    xpcall = function(f, h, ...)
      return run.rethrow(box, xpcall(f, function(e)
        if box.expired then return e end
        return h(e)
      end, ...))
    end,
    collectgarbage = function(opt)
      if opt == "count" then return collectgarbage("count") end
      errors.raise(string.format('collectgarbage(%s): refused by the sandbox: only "count"',
        opt == nil and "" or string.format("%q", tostring(opt))), 2)
    end,
    string = copy(string, { dump = true }),
    table = copy(table), math = copy(math), utf8 = copy(utf8),
    coroutine = lib_coroutine(box),
    io = lib_io(box), os = lib_os(box),
    debug = absent("debug", "it reaches past every limit"),
    package = absent("package", "a sandboxed recipe requires only Lua files under its directory"),
  }
  G.string.dump = refuse("string.dump", "binary chunks are never loaded in the sandbox")
  G._G = G
  metatables(box, G)
  loaders(box, G)
  return G
end

-- The recipe's view of vmlua: the definition functions, through the membrane.
function env.vmlua(box, real)
  local view = { version = real.version, sandboxed = true }
  for _, name in ipairs(env.VMLUA) do
    if real[name] ~= nil then view[name] = membrane.to_sandbox(box, real[name]) end
  end
  view.host = membrane.to_sandbox(box, real.host)
  if real.recipe ~= nil then
    -- vmlua.recipe{...} declares one; vmlua.recipe.find finds one as the sandbox's require does
    local recipe = require "vmlua.recipe"
    view.recipe = setmetatable({ find = function(name) return box:require(name) end }, {
      __call = membrane.to_sandbox(box, function(_, spec) return recipe.new(spec) end),
      __metatable = false,
    })
  end
  return view
end

return env
