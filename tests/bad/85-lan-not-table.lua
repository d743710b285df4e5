-- expect: 85-lan-not-table.lua:4: net[2]: expected vmlua.nat{...} or vmlua.lan{...}, got string "lab"
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.nat {}, "lab" },
}
