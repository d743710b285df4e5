-- expect: 04-disks-not-table.lua:4: disks: expected a list of vmlua.disk{...}, got string "fixtures/root.img"
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = "fixtures/root.img",
}
