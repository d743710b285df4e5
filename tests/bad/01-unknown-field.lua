-- expect: 01-unknown-field.lua:4: memroy: unknown field; did you mean "memory"?
local vmlua = require "vmlua"

vmlua.vm {
  memroy = "1G",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
