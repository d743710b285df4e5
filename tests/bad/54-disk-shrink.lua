-- expect: 54-disk-shrink.lua:6: disks[1].size: 1 KiB is smaller than ... tests/bad/fixtures/root.img (4 KiB); vmlua grows a disk but never shrinks it
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/root.img", size = "1K" } },
}
