-- expect: 60-share-host-missing.lua:6: shares[1].host: ... tests/bad/fixtures/src does not exist
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  shares = { vmlua.share { host = "fixtures/src", tag = "src" } },
}
