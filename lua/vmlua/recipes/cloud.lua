-- A cloud image (Debian's, Ubuntu's, ...) booted through UEFI and set up by
-- cloud-init: a user with sudo and the user's own ssh public key, ssh from a
-- free 127.0.0.1 port. The image is a local file, or a URL with its SHA-256
-- (downloaded once into the cache and verified, vmlua.image).
--   vmlua run cloud image=debian-12-genericcloud-amd64.qcow2
--   vmlua run cloud url=https://.../debian-12-genericcloud-amd64.qcow2 sha256=...
--   vmlua ssh cloud
local vmlua = require "vmlua"

local ARCHES = { "x86_64", "aarch64" }

-- The user's public key: the first of these that exists.
local function user_key()
  local home = os.getenv("HOME") or ""
  for _, name in ipairs { "id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub" } do
    local file = home .. "/.ssh/" .. name
    local f = io.open(file)
    if f then
      f:close()
      return file
    end
  end
end

local function read(file)
  local f, err = io.open(file)
  if not f then require("vmlua.errors").raise("recipe cloud: ssh_key: " .. err) end
  local text = f:read("a")
  f:close()
  return (text:gsub("%s+$", ""))
end

return vmlua.recipe {
  description = "A cloud image (local path, or URL and SHA-256) through UEFI and cloud-init, with your ssh key",
  params = {
    image = { type = "path", description = "the cloud image (qcow2 or raw); or give url and sha256" },
    url = { type = "string", description = "where to download the image (http, https or file)" },
    sha256 = { type = "string", description = "the image's SHA-256, checked before it is used" },
    arch = { type = "enum", values = ARCHES, default = vmlua.host.arch == "aarch64" and "aarch64" or "x86_64",
             description = "the image's architecture" },
    cpus = { type = "integer", default = 2, description = "vCPUs" },
    memory = { type = "size", default = "1G", description = "guest RAM" },
    disk = { type = "path", description = "keep the guest's writes in this qcow2 overlay (default: throw-away)" },
    disk_size = { type = "size", default = "10G", description = "the size of the kept overlay (with disk=)" },
    user = { type = "string", default = "vmlua", description = "the user cloud-init makes, with sudo" },
    ssh_key = { type = "path", default = user_key(),
                description = "the public key to log in with (none: the VM gets a key of its own)" },
    ssh_port = { type = "integer", default = 0,
                 description = "host port forwarded to the guest's ssh (0: a free one)" },
  },
  define = function(p)
    local image = p.image
    if not image then
      if not (p.url and p.sha256) then
        require("vmlua.errors").raise("recipe cloud: give image=PATH, or url=URL and sha256=SUM "
                                      .. "(vmlua run cloud --help)")
      end
      image = vmlua.image { url = p.url, sha256 = p.sha256 }
    end
    local disk = p.disk and vmlua.disk { path = p.disk, base = image, size = p.disk_size }
      or vmlua.disk { path = image, ephemeral = true }
    local user = { name = p.user, sudo = "ALL=(ALL) NOPASSWD:ALL", shell = "/bin/bash", lock_passwd = true }
    local ssh = { user = p.user }
    if p.ssh_key then
      user.ssh_authorized_keys = { read(p.ssh_key) }
      ssh.key = p.ssh_key:gsub("%.pub$", "")
    end
    return vmlua.vm {
      name = "cloud",
      arch = p.arch,
      cpus = p.cpus,
      memory = p.memory,
      boot = vmlua.efi {},
      disks = { disk },
      net = { vmlua.nat { forward = { [p.ssh_port] = 22 } } },
      cloudinit = vmlua.cloudinit { user_data = { users = { user } } },
      ssh = ssh,
    }
  end,
}
