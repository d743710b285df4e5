-- expect: 26-cpus-more-than-machine.lua:4: cpus: 600 is more than QEMU's
local vmlua = require "vmlua"

vmlua.vm {
  cpus = 600,
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
