-- expect: 40-accel-unknown.lua:4: accel: "kvmm" is not an accelerator; did you mean "kvm"? (one of "kvm", "hvf", "tcg")
local vmlua = require "vmlua"

vmlua.vm {
  accel = "kvmm",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
