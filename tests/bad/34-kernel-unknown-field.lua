-- expect: 34-kernel-unknown-field.lua:6: kernal: unknown field; did you mean "kernel"?
local vmlua = require "vmlua"

vmlua.vm {
  memory = "256M",
  boot = vmlua.linux { kernal = "fixtures/vmlinuz" },
}
