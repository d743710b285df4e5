-- Facts about the host: CPUs, memory, architecture, OS, and the
-- accelerators that can really be used here.
local core = require "vmlua.core"
local lfs = require "lfs"

local host = {}

local base           -- core.host(), read once
local found = {}     -- executable name -> full path, or false
local path_override  -- for tests: a PATH to search instead of $PATH

-- Forgets what was looked up; `opts.path` replaces $PATH for the searches
-- that follow (tests use it to hide QEMU).
function host.reset(opts)
  base, found = nil, {}
  path_override = opts and opts.path
  if package.loaded["vmlua.accel"] then package.loaded["vmlua.accel"].reset() end
end

-- The full path of executable `name` on PATH, or nil. Cached.
function host.which(name)
  local hit = found[name]
  if hit ~= nil then return hit or nil end
  hit = false
  if not name:find("/", 1, true) then
    local path = path_override or os.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin"
    for dir in (path .. ":"):gmatch("([^:]*):") do
      if dir == "" then dir = "." end
      if dir:sub(1, 1) ~= "/" then dir = lfs.currentdir() .. "/" .. dir end
      local file = dir .. "/" .. name
      if core.executable(file) then
        hit = file
        break
      end
    end
  end
  found[name] = hit
  return hit or nil
end

-- The full path of qemu-system-ARCH on PATH, or nil.
function host.qemu_binary(arch)
  if type(arch) ~= "string" or not arch:match("^[%w_]+$") then return nil end
  return host.which("qemu-system-" .. arch)
end

-- core.host(), read once: { cpus=, memory=, arch=, os= } without accels
-- (what vmlua.accel decides from). Not to be changed.
function host.base()
  base = base or core.host()
  return base
end

-- Where deciding on KVM may start QEMU (a /dev/kvm that opens), `accels`
-- is looked up when first read; pairs() sees it too.
local LAZY = {
  __index = function(t, k)
    if k ~= "accels" then return nil end
    local list = require("vmlua.accel").usable()
    rawset(t, "accels", list)
    return list
  end,
  __pairs = function(t)
    local _ = t.accels
    return next, t, nil
  end,
}

-- host.facts() -> { cpus=, memory= (bytes), arch=, os=, accels={...} }
-- A fresh table on each call; the look-ups behind it are done once.
-- accels lists only what runs guests here (see vmlua.accel).
function host.facts()
  host.base()
  local facts = { cpus = base.cpus, memory = base.memory, arch = base.arch, os = base.os }
  local accel = require "vmlua.accel"
  if accel.settled() then
    facts.accels = accel.usable()
    return facts
  end
  return setmetatable(facts, LAZY)
end

-- host.accel_for(arch) -> accel, warning|nil: what a guest of `arch` runs
-- under when the definition asks for nothing (see accel.choose).
function host.accel_for(arch)
  local name, _, warning = require("vmlua.accel").choose(arch)
  return name, warning
end

return host
