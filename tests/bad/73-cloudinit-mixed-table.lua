-- expect: 73-cloudinit-mixed-table.lua:4: user_data.runcmd[1]: a table is a list (1, 2, 3, ...) or has names for keys, not both
local vmlua = require "vmlua"

local seed = vmlua.cloudinit {
  user_data = { runcmd = { "touch /x", shell = "/bin/sh" } },
}
vmlua.vm { boot = vmlua.linux { kernel = "fixtures/vmlinuz" }, cloudinit = seed }
