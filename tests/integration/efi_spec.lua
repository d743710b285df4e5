-- UEFI boot (vmlua.efi): the disk that scripts/build-efi.sh makes (GRUB on
-- an EFI system partition, with the busybox guest's kernel and initrd)
-- booted through the distribution's firmware, under TCG; and the VM's own
-- variable store, made at its first start and kept for the next.
local core = require "vmlua.core"
local guest = require "support.guest"
local runtime = require "vmlua.runtime"
local store = require "vmlua.instance.store"
local vmlua = require "vmlua"

local function efi_disk(arch)
  local path = runtime.cache() .. "/guests/efi-" .. arch .. "/disk.img"
  assert(core.stat(path), "no EFI disk " .. path .. ": run scripts/build-efi.sh")
  return path
end

local read = require("vmlua.runtime").read_file

local count = 0
local names = {}
-- A VM booting the EFI disk of `arch` (read-only: the cache is shared).
local function efi_vm(arch, name)
  count = count + 1
  name = name or string.format("efi-spec-%d-%d", core.getpid(), count)
  names[name] = true
  return vmlua.vm {
    name = name, arch = arch, cpus = 1, memory = "256M",
    boot = vmlua.efi {},
    disks = { vmlua.disk { path = efi_disk(arch), readonly = true } },
  }
end

-- Firmware, then GRUB from the disk, then the guest's shell.
local function boot(vm)
  vm:start()
  vm:expect("vmlua%-efi: GRUB boots the busybox guest from %(hd0,gpt1%)", { timeout = 300 })
  vm:expect("vmlua# ", { timeout = 300 })
  return vm
end

describe("vmlua.efi", function()
  after_each(function()
    guest.cleanup()
    for name in pairs(names) do os.execute("rm -rf '" .. store.paths(name).dir .. "'") end
    names = {}
  end)

  for _, arch in ipairs { "x86_64", "aarch64" } do
    it("boots GRUB from an EFI system partition to the guest on " .. arch .. ", and stops it gracefully", function()
      local vm = boot(efi_vm(arch))
      local out, status = vm:run("test -d /sys/firmware/efi && echo booted-by-uefi; uname -m")
      assert.are.equal(0, status)
      assert.are.equal("booted-by-uefi\n" .. arch .. "\n", out)
      assert.are.equal("graceful", vm:stop { timeout = 60 })
    end)
  end

  it("makes the VM's own variable store at its first start and keeps it for the next", function()
    local name = string.format("efi-vars-%d", core.getpid())
    local vm = efi_vm("x86_64", name)
    local vars, template = vm.config.boot.vars, vm.config.boot.template
    assert.are.equal(store.paths(name).efi_vars, vars)
    assert.is_nil(core.stat(vars))
    boot(vm)
    local st = assert(core.stat(vars))
    assert.are.equal(core.stat(template).size, st.size)
    assert.are.equal(tonumber("600", 8), st.mode)
    assert.are.equal("graceful", vm:stop { timeout = 60 })
    assert.are_not.equal(read(template), read(vars), "the firmware wrote nothing to its store")

    local again = boot(efi_vm("x86_64", name))
    local st2 = assert(core.stat(vars))
    assert.are.equal(st.ino, st2.ino, "the store was made again")
    assert.are.equal(st.size, st2.size)
    assert.are.equal("graceful", again:stop { timeout = 60 })
  end)
end)
