-- expect: 19-arch-unsupported.lua:4: arch: riscv64 is not supported (x86_64, aarch64)
local vmlua = require "vmlua"

vmlua.vm {
  arch = "riscv64",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
