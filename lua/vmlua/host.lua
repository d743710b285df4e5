-- Facts about the host: CPUs, memory, architecture, OS, and the
-- accelerators that can really be used here.
local core = require "vmlua.core"

local host = {}

local base           -- core.host(), read once
local found = {}     -- executable name -> full path, or false
local kvm            -- { ok = bool, why = string }
local path_override  -- for tests: a PATH to search instead of $PATH

-- Forgets what was looked up; `opts.path` replaces $PATH for the searches
-- that follow (tests use it to hide QEMU).
function host.reset(opts)
  base, found, kvm = nil, {}, nil
  path_override = opts and opts.path
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
      if dir:sub(1, 1) ~= "/" then dir = core.cwd() .. "/" .. dir end
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

local function kvm_state()
  if not kvm then
    local ok, err = core.can_open("/dev/kvm", "rw")
    local why
    if not ok then
      why = "/dev/kvm is not usable: " .. (tostring(err):match("^/dev/kvm: (.*)$") or tostring(err))
      if why:find("Permission denied", 1, true) then
        why = why .. "; add yourself to the kvm group"
      end
    end
    kvm = { ok = ok == true, why = why }
  end
  return kvm
end

-- host.facts() -> { cpus=, memory= (bytes), arch=, os=, accels={...} }
-- A fresh table on each call; the look-ups behind it are done once.
function host.facts()
  base = base or core.host()
  local accels = {}
  if base.os == "linux" and kvm_state().ok then accels[#accels + 1] = "kvm" end
  if base.os == "macos" then accels[#accels + 1] = "hvf" end
  if host.qemu_binary(base.arch) then accels[#accels + 1] = "tcg" end
  return { cpus = base.cpus, memory = base.memory, arch = base.arch, os = base.os, accels = accels }
end

local function article(word)
  return word:match("^[aeiouxAEIOUX]") and "an" or "a"
end

-- host.accel_for(arch) -> accel, warning|nil
-- A guest of another architecture is always emulated (TCG); a native guest
-- uses KVM (Linux, when /dev/kvm opens read-write) or HVF (macOS).
function host.accel_for(arch)
  base = base or core.host()
  if arch ~= base.arch then
    return "tcg", string.format("%s guest on %s %s host: emulated, expect it to be slow",
      arch, article(base.arch), base.arch)
  end
  if base.os == "macos" then return "hvf" end
  local k = kvm_state()
  if k.ok then return "kvm" end
  return "tcg", string.format("%s guest: no KVM here (%s), emulated with TCG, expect it to be slow",
    arch, k.why)
end

return host
