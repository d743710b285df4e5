-- expect: 51-disk-size-readonly.lua:6: size: a read-only disk is never created or grown
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/root.img", size = "1G", readonly = true } },
}
