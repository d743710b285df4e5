-- expect: 52-disk-base-readonly.lua:6: base: a disk made from a base is an overlay for the guest to write
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/clone.qcow2", base = "fixtures/root.img", readonly = true } },
}
