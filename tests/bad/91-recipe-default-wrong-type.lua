-- expect: 91-recipe-default-wrong-type.lua:4: params.memory.default: "lots" is not a size
local vmlua = require "vmlua"

return vmlua.recipe {
  params = { memory = { type = "size", default = "lots" } },
  define = function(p) return vmlua.vm { memory = p.memory, boot = vmlua.linux { kernel = "fixtures/vmlinuz" } } end,
}
