-- A Debian 12 development VM, reached by ssh: 2 CPUs, 1 GiB, its disk a
-- copy-on-write overlay of the image that scripts/build-debian.sh builds
-- (so the image stays as it is), ssh forwarded from a free 127.0.0.1 port.
--   vmlua examples/debian.lua            boot it, run a few commands over ssh, stop it
--   VMLUA_DETACH=1 vmlua examples/debian.lua   leave it running: vmlua ssh debian
local vmlua = require "vmlua"

local function env(name)
  local v = os.getenv(name)
  if v ~= nil and v ~= "" then return v end
end

local cache = env("VMLUA_CACHE") or ((env("XDG_CACHE_HOME") or env("HOME") .. "/.cache") .. "/vmlua")
local image = cache .. "/guests/debian-x86_64/"
local port = tonumber(env("VMLUA_SSH_PORT") or "0") -- 0: a free port, chosen at start

local vm = vmlua.vm {
  name = "debian",
  arch = "x86_64",
  cpus = 2,
  memory = "1G",
  boot = vmlua.linux { kernel = image .. "vmlinuz", initrd = image .. "initrd.img",
                       cmdline = { "root=/dev/vda", "rw" } },
  disks = { vmlua.disk { path = vmlua.here("debian.qcow2"), base = image .. "root.ext4" } },
  net = { vmlua.nat { forward = { [port] = 22 } } },
  ssh = { user = "root", key = image .. "id_ed25519" },
  agent = true, -- qemu-guest-agent runs vm:run's commands: the console has a login prompt
}

vm:start { detach = env("VMLUA_DETACH") ~= nil }
vm:wait_ssh { timeout = 180 }
-- (vmlua plan starts nothing, so no port is chosen yet)
print(string.format("ssh: vmlua ssh debian, or ssh -p %s root@127.0.0.1", vm:ports()[22] or "PORT"))
for _, command in ipairs { "uname -srm", "systemctl is-system-running", "df -h /" } do
  local output = vm:ssh(command)
  io.write("$ ", command, "\n", output)
end
io.write("vm:run, through the guest agent: ", vm:run("systemd-detect-virt"))
if not env("VMLUA_DETACH") then print(vm:stop()) end
