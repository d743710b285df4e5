-- expect: 02-cpus-string.lua:4: cpus: expected a whole number, got string "two"
local vmlua = require "vmlua"

vmlua.vm {
  cpus = "two",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
