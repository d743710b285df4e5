-- expect: 100-efi-firmware-missing.lua:6: boot.firmware: ... tests/bad/fixtures/OVMF_CODE.fd does not exist
local vmlua = require "vmlua"

vmlua.vm {
  arch = "x86_64",
  boot = vmlua.efi { firmware = "fixtures/OVMF_CODE.fd" },
}
