-- expect: 84-udp-port-twice.lua:8: net[2].udp[5353]: host port 5353/udp is already forwarded by net[1] ( ... 84-udp-port-twice.lua:6)
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat { udp = { [5353] = 53 } },
          -- a TCP forward may share the number; a second UDP one may not
          vmlua.nat { forward = { [5353] = 53 }, udp = { [5353] = 5353 } } },
}
