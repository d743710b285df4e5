-- expect: 64-share-tag-spaces.lua:6: tag: "my files" is not a tag: use 1 to 36 letters
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  shares = { vmlua.share { host = "fixtures", tag = "my files" } },
}
