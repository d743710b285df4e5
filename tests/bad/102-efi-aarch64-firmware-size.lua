-- expect: 102-efi-aarch64-firmware-size.lua:6: boot.firmware: ... tests/bad/fixtures/vmlinuz is 122 B, but QEMU's virt machine takes a flash image of exactly 64 MiB
local vmlua = require "vmlua"

vmlua.vm {
  arch = "aarch64",
  boot = vmlua.efi { firmware = "fixtures/vmlinuz", vars = "fixtures/root.img" },
}
