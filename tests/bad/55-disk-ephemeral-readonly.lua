-- expect: 55-disk-ephemeral-readonly.lua:6: ephemeral: a read-only disk is never written
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/root.img", ephemeral = true, readonly = true } },
}
