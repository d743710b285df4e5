-- expect: 93-recipe-no-define.lua:4: define: expected a function(p) that returns the VM(s), got nil
local vmlua = require "vmlua"

return vmlua.recipe {
  description = "forgot its define",
  params = { cpus = { type = "integer", default = 1 } },
}
