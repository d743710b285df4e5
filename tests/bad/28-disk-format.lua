-- expect: 28-disk-format.lua:6: format: "vmdk" is not a disk format; expected "raw" or "qcow2"
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/root.img", format = "vmdk" } },
}
