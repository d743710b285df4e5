-- expect: 95-recipe-bad-value.lua:4: recipe web: flavor: "huge" is not one of small, big (from the caller, ... web's parameters: flavor (small|big), name (string)
local vmlua = require "vmlua"

local web = vmlua.recipe {
  name = "web",
  params = { flavor = { type = "enum", values = { "small", "big" }, default = "small" } },
  define = function() return vmlua.vm { boot = vmlua.linux { kernel = "fixtures/vmlinuz" } } end,
}

for _, flavor in ipairs { "small", "huge" } do web { flavor = flavor } end
