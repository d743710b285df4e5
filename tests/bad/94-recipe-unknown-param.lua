-- expect: 94-recipe-unknown-param.lua:4: recipe web: cpu: unknown parameter (from the caller, ... 94-recipe-unknown-param.lua:10); did you mean "cpus"? web's parameters: cpus (integer), name (string)
local vmlua = require "vmlua"

local web = vmlua.recipe {
  name = "web",
  params = { cpus = { type = "integer", default = 1 } },
  define = function(p) return vmlua.vm { cpus = p.cpus, boot = vmlua.linux { kernel = "fixtures/vmlinuz" } } end,
}

web:make { cpu = 2 }
