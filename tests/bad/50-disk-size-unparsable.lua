-- expect: 50-disk-size-unparsable.lua:6: size: "8 gigs" is not a size: unknown unit "gigs"
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  disks = { vmlua.disk { path = "fixtures/new.img", size = "8 gigs" } },
}
