-- CI in a throw-away VM: boot a clean guest, run one test command in it,
-- stop it, and exit with that command's status.
--   vmlua examples/ci.lua ['COMMAND']
local vmlua = require "vmlua"

local command = arg[1] or "cat /proc/cpuinfo | grep -c ^processor"
local arch = os.getenv("VMLUA_ARCH") or vmlua.host.arch
local cache = os.getenv("VMLUA_CACHE")
  or (os.getenv("XDG_CACHE_HOME") or os.getenv("HOME") .. "/.cache") .. "/vmlua"
local guest = cache .. "/guests/" .. arch

local vm = vmlua.vm {
  name = "ci-" .. os.time() .. "-" .. math.random(1000, 9999),
  arch = arch,
  cpus = vmlua.host.cpus,
  memory = "512M",
  boot = vmlua.linux { kernel = guest .. "/vmlinuz", initrd = guest .. "/initrd.img" },
}

vm:start()
vm:expect("vmlua# ")
local output, status = vm:run(command, { timeout = 600 })
io.write(output)
vm:stop { timeout = 10 }
os.exit(status)
