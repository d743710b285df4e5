-- expect: 16-port-too-big.lua:6: forward[2222]: guest port 70000 is outside 1-65535
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat { forward = { [2222] = 70000 } } },
}
