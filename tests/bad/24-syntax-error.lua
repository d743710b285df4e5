-- expect: 24-syntax-error.lua:6: ... '}' expected (to close '{' at line 4) near 'memory'
local vmlua = require "vmlua"

vmlua.vm {
  cpus = 2
  memory = "1G",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
