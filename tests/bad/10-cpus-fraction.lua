-- expect: 10-cpus-fraction.lua:4: cpus: 1.5 is not a whole number
local vmlua = require "vmlua"

vmlua.vm {
  cpus = 1.5,
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
