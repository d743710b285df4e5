-- expect: 31-disk-not-qcow2.lua:6: disks[1].format: ... tests/bad/fixtures/root.img is not a qcow2 image
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/root.img", format = "qcow2", readonly = true } },
}
