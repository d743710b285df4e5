-- expect: 53-disk-base-missing.lua:7: disks[2].base: ... tests/bad/fixtures/base.qcow2 does not exist
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/root.img", readonly = true },
    vmlua.disk { path = "fixtures/clone.qcow2", base = "fixtures/base.qcow2" } },
}
