-- expect: 17-port-twice.lua:9: net[2].forward[2222]: host port 2222 is already forwarded by net[1] ( ... 17-port-twice.lua:6)
local vmlua = require "vmlua"

local vm = vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat { forward = { [2222] = 22 } } },
}
if true then -- say, an environment variable asked for a second network
  vm:add(vmlua.nat { forward = { [8080] = 80, [2222] = 2222 } })
end
