-- expect: 25-runtime-error.lua:5: boom
local vmlua = require "vmlua"

local function size_for(kind)
  if kind ~= "small" then error("boom") end
  return "256M"
end
vmlua.vm { memory = size_for("huge"), boot = vmlua.linux { kernel = "fixtures/vmlinuz" } }
