-- expect: 66-reboot-string.lua:4: reboot: expected true or false, got string "yes"
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  reboot = "yes",
}
