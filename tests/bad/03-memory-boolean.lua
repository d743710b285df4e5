-- expect: 03-memory-boolean.lua:4: memory: expected a number of bytes or a string like "512M" or "2G", got boolean true
local vmlua = require "vmlua"

vmlua.vm {
  memory = true,
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
