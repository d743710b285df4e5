-- One timed run for bench/restore.lua, through vmlua; prints "READY <QEMU
-- pid>" once the guest's shell answers, then ends its VM.
--   vmlua bench/restore-once.lua boot ARCH           cold boot to the shell
--   vmlua bench/restore-once.lua restore SNAPSHOT    vmlua.restore to the shell
--   vmlua bench/restore-once.lua save ARCH SNAPSHOT [MEMORY]
--                                                    boot, save: "SAVED <seconds>"
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local vmlua = require "vmlua"
local guest = require "guest"
local core = require "vmlua.core"

local mode = arg[1]
local vm
if mode == "restore" then
  vm = vmlua.restore(arg[2], { name = "bench-restore" })
else
  local spec = guest.spec(vmlua, arg[2])
  spec.memory = arg[4] or spec.memory
  vm = vmlua.vm(spec)
  vm:start()
  vm:expect("vmlua# ")
end
local out = vm:run("echo hi-$((6*7))")
assert(out:find("hi-42", 1, true), out)
if mode == "save" then
  local t0 = core.now()
  vm:save(arg[3])
  io.stdout:write(string.format("SAVED %.3f\n", core.now() - t0))
else
  io.stdout:write("READY ", vm.process:pid(), "\n")
  io.stdout:flush()
  vm:kill()
end
