-- The busybox guest of vmlua's tests and demo: a kernel and an initramfs
-- from the guest cache (scripts/build-guests.sh), a shell on the console.
--   vmlua run microvm cpus=1                      boot it, the console on this terminal
--   vmlua run microvm command="uname -m"          boot it, run the command, print its output, stop
local vmlua = require "vmlua"
local runtime = require "vmlua.runtime"

local ARCHES = { "x86_64", "aarch64" }
local default_arch = vmlua.host.arch == "aarch64" and "aarch64" or "x86_64"

return vmlua.recipe {
  description = "The busybox test guest: kernel and initramfs from the guest cache, a shell on the console",
  params = {
    arch = { type = "enum", values = ARCHES, default = default_arch, description = "the guest's architecture" },
    cpus = { type = "integer", default = 1, description = "vCPUs" },
    memory = { type = "size", default = "256M", description = "guest RAM" },
    data = { type = "boolean", default = false, description = "attach the cache's data disk, read-only (/dev/vda)" },
    command = { type = "string", description = "a shell command to run once the guest is up; "
                                               .. "its output is printed, then the VM stops" },
    timeout = { type = "number", default = 120, description = "seconds to wait for the shell prompt" },
  },
  define = function(p)
    local dir = runtime.cache() .. "/guests/" .. p.arch .. "/"
    local vm = vmlua.vm {
      name = "microvm",
      arch = p.arch,
      cpus = p.cpus,
      memory = p.memory,
      boot = vmlua.linux { kernel = dir .. "vmlinuz", initrd = dir .. "initrd.img" },
    }
    if p.data then vm:add(vmlua.disk { path = dir .. "data.ext4", readonly = true }) end
    if p.command then
      vm:on("running", function()
        vm:expect("vmlua# ", { timeout = p.timeout })
        local output, status = vm:run(p.command)
        io.stdout:write(output)
        if status ~= 0 then io.stdout:write("(exit status ", status, ")\n") end
        io.stdout:flush()
        vm:stop()
      end)
    end
    return vm
  end,
}
