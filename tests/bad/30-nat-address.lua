-- expect: 30-nat-address.lua:6: address: expected an IPv4 address such as "127.0.0.1" or "0.0.0.0" (all interfaces), got string "any"
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat { forward = { [2222] = 22 }, address = "any" } },
}
