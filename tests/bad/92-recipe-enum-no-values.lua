-- expect: 92-recipe-enum-no-values.lua:4: params.flavor.values: an enum needs its values
local vmlua = require "vmlua"

return vmlua.recipe {
  params = { flavor = { type = "enum", default = "small" } },
  define = function() return vmlua.vm { boot = vmlua.linux { kernel = "fixtures/vmlinuz" } } end,
}
