-- expect: 06-memory-too-small.lua:4: memory: 32 MiB is less than the minimum (64 MiB)
local vmlua = require "vmlua"

vmlua.vm {
  memory = "32M",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
