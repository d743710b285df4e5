-- expect: 63-share-tag-twice.lua:8: shares[2].tag: "src" is already the tag of shares[1] ... 63-share-tag-twice.lua:7); the guest mounts a share by its tag
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  shares = {
    vmlua.share { host = "fixtures", tag = "src" },
    vmlua.share { host = ".", tag = "src", readonly = true },
  },
}
