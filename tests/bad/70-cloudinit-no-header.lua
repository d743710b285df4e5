-- expect: 70-cloudinit-no-header.lua:6: user_data: cloud-init ignores user data that does not start with "#cloud-config"
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  cloudinit = vmlua.cloudinit { user_data = "packages: [ curl ]\n" },
}
