-- expect: 74-ssh-no-key-no-seed.lua:4: ssh.key: expected the path of the private key, got nil; or give the VM cloudinit = vmlua.cloudinit{...}
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  ssh = { user = "root" },
}
