-- expect: 29-boot-plain-table.lua:4: boot: expected vmlua.linux{...} or vmlua.efi{...}, got a table
local vmlua = require "vmlua"

vmlua.vm {
  boot = { kernel = "fixtures/vmlinuz" },
}
