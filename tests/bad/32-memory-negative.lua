-- expect: 32-memory-negative.lua:4: memory: "-1G" is negative
local vmlua = require "vmlua"

vmlua.vm {
  memory = "-1G",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
