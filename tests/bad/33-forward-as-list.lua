-- expect: 33-forward-as-list.lua:6: forward[1]: this forwards host port 1; write { [HOSTPORT] = GUESTPORT }
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat { forward = { 2222, 22 } } },
}
