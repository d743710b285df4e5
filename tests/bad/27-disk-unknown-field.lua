-- expect: 27-disk-unknown-field.lua:6: fromat: unknown field; did you mean "format"?
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/root.img", fromat = "raw" } },
}
