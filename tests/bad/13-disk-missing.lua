-- expect: 13-disk-missing.lua:8: disks[2].path: ... tests/bad/fixtures/data.img does not exist
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = {
    vmlua.disk { path = "fixtures/root.img", readonly = true },
    vmlua.disk { path = "fixtures/data.img" },
  },
}
