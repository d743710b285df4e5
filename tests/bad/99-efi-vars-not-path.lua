-- expect: 99-efi-vars-not-path.lua:6: vars: expected a path (a string), got boolean true
local vmlua = require "vmlua"

vmlua.vm {
  arch = "x86_64",
  boot = vmlua.efi { vars = true },
}
