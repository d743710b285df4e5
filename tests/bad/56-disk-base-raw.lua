-- expect: 56-disk-base-raw.lua:6: format: a disk with a base is a qcow2 overlay, not raw
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/clone.img", base = "fixtures/root.img", format = "raw" } },
}
