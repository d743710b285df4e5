-- expect: 09-cpus-more-than-host.lua:4: cpus: ... is more than this host has (
local vmlua = require "vmlua"

vmlua.vm {
  cpus = vmlua.host.cpus + 1,
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
