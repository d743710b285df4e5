-- expect: 82-lan-twice.lua:9: net[2]: vm 82-lan-twice is already on LAN lab (net[1], ... 82-lan-twice.lua:4)
local vmlua = require "vmlua"

local lab = vmlua.lan { name = "lab" }
local vm = vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  net = { lab },
}
vm:add(vmlua.lan { name = "lab" })
