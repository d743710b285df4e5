-- expect: 20-boot-missing.lua:4: boot: missing; give boot = vmlua.linux{ kernel = ... } or vmlua.efi{}
local vmlua = require "vmlua"

vmlua.vm {
  memory = "256M",
  disks = { vmlua.disk { path = "fixtures/root.img", readonly = true } },
}
