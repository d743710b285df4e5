-- Boots the x86_64 benchmark VM through libvirt at URI with vmlua
-- (vm:start, vm:expect), prints "PROMPT <QEMU pid>" once its shell prompt
-- shows; when a client connects to the Unix socket STOP_SOCKET, calls
-- vm:stop() and prints "STOPPED <seconds>", the time vm:stop() took, then
-- exits. (vmlua says on stderr if it forced the VM off.)
--   build/bin/vmlua bench/libvirt-once.lua URI NAME STOP_SOCKET
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local vmlua = require "vmlua"
local core = require "vmlua.core"
local task = require "vmlua.task"
local guest = require "guest"

local uri, name, stop_socket = arg[1], arg[2], arg[3]
assert(stop_socket, "usage: libvirt-once.lua URI NAME STOP_SOCKET")
local spec = guest.spec(vmlua, "x86_64")
spec.name, spec.backend = name, vmlua.libvirt { uri = uri }
local vm = vmlua.vm(spec)
vm:start()
vm:expect("vmlua# ")
os.remove(stop_socket)
local stopping, finished, done = false, false, task.condition()
local server
server = assert(core.listen(stop_socket, function(client)
  client:close()
  server:close()
  stopping = true
  task.spawn(function()
    local t0 = core.now()
    vm:stop()
    io.stdout:write(string.format("STOPPED %.6f\n", core.now() - t0))
    io.stdout:flush()
    finished = true
    done.notify()
  end)
end))
io.stdout:write("PROMPT ", tostring(vm.process:pid()), "\n")
io.stdout:flush()
vm:wait("stopped")
if stopping then done.wait(function() return finished end, 60) end
