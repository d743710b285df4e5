-- expect: 15-port-too-big.lua:6: forward[65536]: host port 65536 is outside 1-65535
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat { forward = { [65536] = 22 } } },
}
