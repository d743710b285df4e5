-- expect: 35-name-parent-dir.lua:5: name: ".." must start with a letter or a digit
-- The runtime directory would be the one above vmlua's own (/tmp itself, for root).
local vmlua = require "vmlua"

vmlua.vm {
  name = "..",
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
}
