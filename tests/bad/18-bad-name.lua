-- expect: 18-bad-name.lua:4: name: "my vm" may only use letters, digits, '.', '_' and '-'
local vmlua = require "vmlua"

vmlua.vm {
  name = "my vm",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
