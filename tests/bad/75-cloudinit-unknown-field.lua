-- expect: 75-cloudinit-unknown-field.lua:6: vendor_data: unknown field; vmlua.cloudinit takes user_data, meta_data, network_config
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  cloudinit = vmlua.cloudinit { vendor_data = "#cloud-config\n" },
}
