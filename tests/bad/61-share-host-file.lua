-- expect: 61-share-host-file.lua:6: shares[1].host: ... tests/bad/fixtures/root.img is not a directory
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  shares = { vmlua.share { host = "fixtures/root.img", tag = "src" } },
}
