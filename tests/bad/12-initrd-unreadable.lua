-- expect: 12-initrd-unreadable.lua:5: boot.initrd: ... tests/bad/fixtures is a directory, not a file
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux {
    kernel = "fixtures/vmlinuz",
    initrd = "fixtures", -- a directory: it cannot be read as an initramfs
  },
}
