-- expect: 62-share-tag-missing.lua:6: tag: missing; give the name the guest mounts it by
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  shares = { vmlua.share { host = "fixtures" } },
}
