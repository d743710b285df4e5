-- Guests for integration specs: the cache built by scripts/build-guests.sh,
-- scratch copies of the data disk, and clean-up of every VM a spec started.
local core = require "vmlua.core"
local machine = require "vmlua.machine"

local guest = {}

function guest.files(arch)
  local dir = require("vmlua.runtime").cache() .. "/guests/" .. arch
  for _, f in ipairs { "vmlinuz", "initrd.img", "data.ext4" } do
    assert(core.stat(dir .. "/" .. f), "no guest " .. dir .. "/" .. f .. ": run scripts/build-guests.sh")
  end
  return { kernel = dir .. "/vmlinuz", initrd = dir .. "/initrd.img", data = dir .. "/data.ext4" }
end

-- The directory of the Debian guest built by scripts/build-debian.sh.
function guest.debian()
  local dir = require("vmlua.runtime").cache() .. "/guests/debian-x86_64/"
  for _, f in ipairs { "vmlinuz", "initrd.img", "root.ext4", "id_ed25519" } do
    assert(core.stat(dir .. f), "no Debian guest " .. dir .. f .. ": run scripts/build-debian.sh")
  end
  return dir
end

-- Whether libvirt runs the specs' VMs: tests/integration/libvirt_spec.lua
-- sets guest.libvirt as it loads some spec files again (and
-- config.connect before they run).
guest.libvirt = false
function guest.on_libvirt()
  return guest.libvirt
end

-- How the backend words the end of a QEMU that vm.process:kill("KILL")
-- ended (libvirt destroys the domain) or that was killed by its pid.
function guest.killed_reason(by_pid)
  if not guest.on_libvirt() then return "QEMU was killed by SIGKILL" end
  return by_pid and "QEMU ended unexpectedly (libvirt: failed)" or "libvirt destroyed the domain (QEMU was killed)"
end

-- A private scratch directory, removed by guest.cleanup().
local scratch = {}
function guest.tmpdir()
  local p = io.popen("mktemp -d /tmp/vmlua-spec.XXXXXX")
  local dir = p:read("l")
  p:close()
  scratch[#scratch + 1] = dir
  return dir
end

function guest.copy(from, to)
  local src = assert(io.open(from, "rb"))
  local dst = assert(io.open(to, "wb"))
  while true do
    local block = src:read(1 << 20)
    if not block then break end
    dst:write(block)
  end
  src:close()
  dst:close()
  return to
end

local count = 0
-- A VM booting the cached guest; spec fields override the defaults.
function guest.vm(arch, spec)
  local vmlua = require "vmlua"
  local files = guest.files(arch)
  count = count + 1
  local t = {
    name = string.format("spec-%d-%d", core.getpid(), count),
    arch = arch, cpus = 1, memory = "256M",
    boot = vmlua.linux { kernel = files.kernel, initrd = files.initrd },
  }
  for k, v in pairs(spec or {}) do t[k] = v end
  return vmlua.vm(t)
end

-- A VM with its own copy of the data disk.
function guest.vm_with_disk(arch, spec)
  local vmlua = require "vmlua"
  local disk = (spec and spec.disk_path) or guest.copy(guest.files(arch).data, guest.tmpdir() .. "/data.ext4")
  local s = {}
  for k, v in pairs(spec or {}) do if k ~= "disk_path" then s[k] = v end end
  s.disks = { vmlua.disk { path = disk } }
  return guest.vm(arch, s), disk
end

-- Kills every VM still alive and removes scratch directories.
function guest.cleanup()
  for vm in pairs(machine.live) do pcall(vm.kill, vm) end
  for _, dir in ipairs(scratch) do os.execute("rm -rf '" .. dir .. "'") end
  scratch = {}
end

-- Whether process `pid` is gone within `seconds`.
function guest.gone_within(pid, seconds)
  local deadline = core.now() + seconds
  while core.now() < deadline do
    if not core.alive(pid) then return true end
    require("vmlua.task").sleep(0.1)
  end
  return false
end

-- Boots to the shell prompt.
function guest.boot(vm)
  vm:start()
  vm:expect("vmlua# ", { timeout = 60 })
  return vm
end

return guest
