-- expect: 101-efi-vars-wrong-size.lua:7: boot.vars: ... tests/bad/fixtures/root.img is 4 KiB, but the variable store of ... it is another firmware's
local vmlua = require "vmlua"

-- a store made for other firmware (Debian's ovmf gives the default)
vmlua.vm {
  arch = "x86_64",
  boot = vmlua.efi { vars = "fixtures/root.img" },
}
