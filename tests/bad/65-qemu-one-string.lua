-- expect: 65-qemu-one-string.lua:4: qemu: expected a list of strings such as { "-device", "virtio-rng-pci" }
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  qemu = "-device virtio-rng-pci",
}
