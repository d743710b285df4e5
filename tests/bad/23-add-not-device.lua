-- expect: 23-add-not-device.lua:8: add: expected a device made by vmlua.disk{...}, vmlua.nat{...}, vmlua.lan{...} or vmlua.share{...}, got string "fixtures/root.img"
local vmlua = require "vmlua"

local vm = vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}

vm:add("fixtures/root.img")
