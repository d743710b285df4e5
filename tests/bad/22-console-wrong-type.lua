-- expect: 22-console-wrong-type.lua:4: console: expected vmlua.console{...} or vmlua.console "stdio", got string "stdio"
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  console = "stdio",
}
