-- expect: 98-efi-unknown-field.lua:5: firmwre: unknown field; did you mean "firmware"?
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.efi { firmwre = "fixtures/vmlinuz" },
}
