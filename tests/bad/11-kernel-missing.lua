-- expect: 11-kernel-missing.lua:6: boot.kernel: ... tests/bad/fixtures/no-such-vmlinuz does not exist
local vmlua = require "vmlua"

vmlua.vm {
  memory = "256M",
  boot = vmlua.linux { kernel = "fixtures/no-such-vmlinuz" },
}
