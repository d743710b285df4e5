-- A distribution's cloud image that you downloaded (Debian's genericcloud
-- qcow2, an Ubuntu cloud image), booted the way lima boots one: through
-- UEFI firmware, which runs the image's own boot loader, and configured at
-- its first boot by cloud-init from a seed that vmlua makes, with an ssh key
-- of the VM's own. The image stays as it is: the VM writes to a
-- copy-on-write overlay, cloud.qcow2 beside this file (remove it to start
-- afresh), grown to 8 GiB (cloud-init grows the root file system).
--
-- The image's path is the script's first argument, or VMLUA_IMAGE:
--   vmlua examples/cloud.lua ~/Downloads/debian-12-genericcloud-amd64.qcow2
--   VMLUA_IMAGE=~/Downloads/noble-server-cloudimg-arm64.img vmlua examples/cloud.lua
-- An image whose name says arm64 or aarch64 boots as aarch64, others as
-- x86_64. VMLUA_DETACH=1 leaves it running: then vmlua ssh cloud.
local vmlua = require "vmlua"

local function env(name)
  local v = os.getenv(name)
  if v ~= nil and v ~= "" then return v end
end

local image = type(arg) == "table" and arg[1] or env("VMLUA_IMAGE")
if not image then
  error("which cloud image? vmlua examples/cloud.lua IMAGE.qcow2 (or set VMLUA_IMAGE)", 0)
end
local name = image:match("([^/]*)$")
local arch = (name:find("arm64", 1, true) or name:find("aarch64", 1, true)) and "aarch64" or "x86_64"

local vm = vmlua.vm {
  name = "cloud",
  arch = arch,
  cpus = math.min(2, vmlua.host.cpus),
  memory = "1G",
  boot = vmlua.efi {}, -- the distribution's firmware; the VM's own UEFI variables
  disks = { vmlua.disk { path = vmlua.here("cloud.qcow2"), base = image, size = "8G" } },
  net = { vmlua.nat { forward = { [0] = 22 } } }, -- ssh from a free 127.0.0.1 port
  ssh = { user = "root" }, -- no key given: cloud-init installs the VM's own
  cloudinit = vmlua.cloudinit {
    user_data = { runcmd = { { "sh", "-c", "echo configured by vmlua > /etc/motd" } } },
  },
}

vm:start { detach = env("VMLUA_DETACH") ~= nil }
vm:wait_ssh { timeout = 600 } -- the first boot under TCG takes minutes
print(string.format("ssh: vmlua ssh cloud, or ssh -p %s root@127.0.0.1", vm:ports()[22] or "PORT"))
for _, command in ipairs { "cloud-init status --wait", "uname -srm", "cat /etc/motd", "df -h /" } do
  io.write("$ ", command, "\n", vm:ssh(command))
end
if not env("VMLUA_DETACH") then print(vm:stop()) end
