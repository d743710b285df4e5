-- expect: 80-lan-no-name.lua:4: name: missing; give the LAN a name, e.g. name = "lab"
local vmlua = require "vmlua"

local lab = vmlua.lan {}
vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { lab },
}
