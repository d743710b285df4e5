-- Two guests side by side, an x86_64 and an aarch64 one, each driven by its
-- own task: they boot and run at the same time, on one event loop.
--   vmlua examples/pair.lua
local vmlua = require "vmlua"

local cache = os.getenv("VMLUA_CACHE")
  or (os.getenv("XDG_CACHE_HOME") or os.getenv("HOME") .. "/.cache") .. "/vmlua"

local function guest(arch)
  local dir = cache .. "/guests/" .. arch .. "/"
  return vmlua.vm {
    name = "pair-" .. arch,
    arch = arch,
    memory = "256M",
    boot = vmlua.linux { kernel = dir .. "vmlinuz", initrd = dir .. "initrd.img" },
  }
end

local vms = { guest("x86_64"), guest("aarch64") }
for _, vm in ipairs(vms) do
  vmlua.spawn(function()
    vm:start()
    vm:expect("vmlua# ")
    local out = vm:run("uname -m")
    print(vm.name .. " says " .. out:gsub("\n$", ""))
    vm:stop()
  end)
end

-- The main task waits too, on each VM's state, without holding them up.
for _, vm in ipairs(vms) do vm:wait("stopped") end
print("both stopped")
