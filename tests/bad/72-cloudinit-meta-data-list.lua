-- expect: 72-cloudinit-meta-data-list.lua:6: meta_data: expected a table with named fields ... got a list
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  cloudinit = vmlua.cloudinit { meta_data = { "dev-1" } },
}
