-- expect: 90-recipe-param-type.lua:4: params.cpus.type: "int" is not a type; did you mean "integer"?
local vmlua = require "vmlua"

return vmlua.recipe {
  params = { cpus = { type = "int", default = 1 } },
  define = function(p) return vmlua.vm { cpus = p.cpus, boot = vmlua.linux { kernel = "fixtures/vmlinuz" } } end,
}
