-- expect: 71-cloudinit-plain-table.lua:4: cloudinit: expected vmlua.cloudinit{ user_data = ... }, got a table
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  cloudinit = { user_data = "#cloud-config\n" },
}
