-- expect: 14-disk-twice.lua:8: disks[2].path: ... is the same file as disks[1] ( ... 14-disk-twice.lua:6)
local vmlua = require "vmlua"

local vm = vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/root.img", readonly = true } },
}
vm:add(vmlua.disk { path = "./fixtures/../fixtures/root.img", readonly = true })
