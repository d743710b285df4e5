-- expect: 81-lan-name-spaces.lua:6: name: "my lab" may only use letters, digits
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { vmlua.lan { name = "my lab" } },
}
