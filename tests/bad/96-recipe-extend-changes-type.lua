-- expect: 96-recipe-extend-changes-type.lua:10: params.cpus.type: cpus is integer in the recipe it extends ... 96-recipe-extend-changes-type.lua:4); an extension keeps its type
local vmlua = require "vmlua"

local web = vmlua.recipe {
  name = "web",
  params = { cpus = { type = "integer", default = 1 } },
  define = function(p) return vmlua.vm { cpus = p.cpus, boot = vmlua.linux { kernel = "fixtures/vmlinuz" } } end,
}

return web:extend {
  params = { cpus = { type = "string", default = "two" } },
}
