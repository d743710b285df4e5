-- Boots the benchmark VM of ARCH through vmlua, prints "PROMPT <QEMU pid>"
-- once its shell prompt shows, then idles until SIGTERM (which stops the VM).
--   build/bin/vmlua bench/boot-once.lua ARCH
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local vmlua = require "vmlua"
local guest = require "guest"

local vm = vmlua.vm(guest.spec(vmlua, arg[1] or vmlua.host.arch))
vm:start()
vm:expect("vmlua# ")
io.stdout:write("PROMPT ", vm.process:pid(), "\n")
io.stdout:flush()
vm:wait("stopped")
