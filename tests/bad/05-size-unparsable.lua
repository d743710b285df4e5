-- expect: 05-size-unparsable.lua:4: memory: "2Q" is not a size: unknown unit "Q"
local vmlua = require "vmlua"

vmlua.vm {
  memory = "2Q",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
