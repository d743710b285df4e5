-- expect: 07-memory-too-big.lua:4: memory: ... is more than this host has (
local vmlua = require "vmlua"

vmlua.vm {
  memory = vmlua.host.memory + vmlua.size "1G",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
