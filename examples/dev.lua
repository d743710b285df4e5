-- A development VM sized from the machine it runs on: boot it, run a few
-- commands in it, print what they say, and stop it.
--   vmlua plan examples/dev.lua     show what would run, start nothing
--   vmlua examples/dev.lua          boot it and run the commands
-- The guest (kernel, initramfs, data disk) comes from scripts/build-guests.sh.
local vmlua = require "vmlua"

local function env(name)
  local v = os.getenv(name)
  if v ~= nil and v ~= "" then return v end
end

local host = vmlua.host
local arch = env("VMLUA_ARCH") or host.arch
local cache = env("VMLUA_CACHE") or ((env("XDG_CACHE_HOME") or env("HOME") .. "/.cache") .. "/vmlua")
local guest = cache .. "/guests/" .. arch .. "/"

local vm = vmlua.vm {
  name = "dev",
  arch = arch,
  cpus = math.max(1, host.cpus // 2),                     -- half the host's CPUs
  memory = math.min(host.memory // 4, vmlua.size "2G"),    -- a quarter of its memory, at most 2 GiB
  boot = vmlua.linux { kernel = guest .. "vmlinuz", initrd = guest .. "initrd.img" },
}

-- The data disk only when it has been built; shared, so read-only.
local data = guest .. "data.ext4"
local f = io.open(data)
if f then
  f:close()
  vm:add(vmlua.disk { path = data, readonly = true })
end

-- SSH-style forward only on request: VMLUA_FORWARD=2222 forwards 127.0.0.1:2222 to the guest's port 22.
local port = env("VMLUA_FORWARD")
if port then vm:add(vmlua.nat { forward = { [tonumber(port) or port] = 22 } }) end

vm:on("state", function(new, old) print(("-- %s: %s -> %s"):format(vm.name, old, new)) end)
vm:start()
vm:expect("vmlua# ")
for _, command in ipairs {
  "uname -srm",
  "grep -c ^processor /proc/cpuinfo",
  "free -m | head -2",
  "[ -b /dev/vda ] && mount -o ro /dev/vda /mnt && cat /mnt/hello.txt",
} do
  local output, status = vm:run(command)
  io.write("$ ", command, "\n", output, status ~= 0 and ("(exit status " .. status .. ")\n") or "")
end
vm:stop()
