-- expect: 83-udp-port-zero.lua:6: udp[0]: a free host port is chosen for TCP forwards only
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat { forward = { [0] = 22 }, udp = { [0] = 53 } } },
}
