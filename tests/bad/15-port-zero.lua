-- expect: 15-port-zero.lua:6: forward[0]: host port 0 is outside 1-65535
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat { forward = { [0] = 22 } } },
}
