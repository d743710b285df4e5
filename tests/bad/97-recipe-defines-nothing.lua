-- expect: 97-recipe-defines-nothing.lua:4: recipe nothing defines no VM
local vmlua = require "vmlua"

return vmlua.recipe {
  name = "nothing",
  define = function() end,
}
