-- The Debian 12 guest (scripts/build-debian.sh): systemd, ssh from a free
-- 127.0.0.1 port, its disk a copy-on-write overlay of the cached image.
--   vmlua run debian                       boot it (throw-away overlay); vmlua ssh debian
--   vmlua run debian disk=dev.qcow2 share=./src   keep its disk; share a directory as tag "share"
local vmlua = require "vmlua"
local runtime = require "vmlua.runtime"

return vmlua.recipe {
  description = "The Debian 12 guest: ssh on a free local port, optional shared directory",
  params = {
    cpus = { type = "integer", default = 2, description = "vCPUs" },
    memory = { type = "size", default = "1G", description = "guest RAM" },
    disk = { type = "path", description = "keep the guest's writes in this qcow2 overlay "
                                          .. "(default: a throw-away one)" },
    ssh_port = { type = "integer", default = 0, description = "host port forwarded to the guest's ssh "
                                                              .. "(0: a free one, see vmlua ls)" },
    share = { type = "path", description = "a host directory shared with the guest, tag \"share\" "
                                           .. "(mount -t virtiofs share /mnt; needs root)" },
    share_readonly = { type = "boolean", default = true, description = "the share is read-only in the guest" },
  },
  define = function(p)
    local image = runtime.cache() .. "/guests/debian-x86_64/"
    local disk = p.disk and vmlua.disk { path = p.disk, base = image .. "root.ext4" }
      or vmlua.disk { path = image .. "root.ext4", ephemeral = true }
    return vmlua.vm {
      name = "debian",
      arch = "x86_64",
      cpus = p.cpus,
      memory = p.memory,
      boot = vmlua.linux { kernel = image .. "vmlinuz", initrd = image .. "initrd.img",
                           cmdline = { "root=/dev/vda", "rw" } },
      disks = { disk },
      net = { vmlua.nat { forward = { [p.ssh_port] = 22 } } },
      shares = p.share and { vmlua.share { host = p.share, tag = "share", readonly = p.share_readonly } } or nil,
      ssh = { user = "root", key = image .. "id_ed25519" },
      agent = true, -- vm:run through qemu-guest-agent (the console has a login prompt)
    }
  end,
}
