-- expect: 08-cpus-zero.lua:4: cpus: 0 is too few; a VM needs at least 1 CPU
local vmlua = require "vmlua"

vmlua.vm {
  cpus = 0,
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
