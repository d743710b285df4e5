-- Three guests on a private LAN, built in a loop: each takes a static
-- address on it and pings the next one. The first also has NAT.
--   vmlua examples/lab.lua
local vmlua = require "vmlua"

local cache = os.getenv("VMLUA_CACHE")
  or (os.getenv("XDG_CACHE_HOME") or os.getenv("HOME") .. "/.cache") .. "/vmlua"
local dir = cache .. "/guests/x86_64/"

local lab = vmlua.lan { name = "lab" }
local vms = {}
for i = 1, 3 do
  vms[i] = vmlua.vm {
    name = "lab-" .. i,
    arch = "x86_64",
    memory = "256M",
    boot = vmlua.linux { kernel = dir .. "vmlinuz", initrd = dir .. "initrd.img" },
    -- NIC order is PCI order: the first VM's eth0 is NAT and eth1 the LAN
    net = i == 1 and { vmlua.nat {}, lab } or { lab },
  }
end

local function lan_nic(i) return i == 1 and "eth1" or "eth0" end

-- vm:start() returns once QEMU runs, so the three boot side by side; then
-- each takes 192.168.50.i on its LAN NIC.
for _, vm in ipairs(vms) do vm:start() end
for i, vm in ipairs(vms) do
  vm:expect("vmlua# ", { timeout = 120 })
  local nic = lan_nic(i)
  vm:run(string.format("ip addr flush dev %s && ip addr add 192.168.50.%d/24 dev %s && ip link set %s up",
    nic, i, nic, nic))
end

for i, vm in ipairs(vms) do
  local peer = i % #vms + 1
  local _, status = vm:run(string.format("ping -c 2 -W 5 192.168.50.%d", peer), { timeout = 60 })
  print(string.format("%s (mac %s) -> 192.168.50.%d: %s", vm.name, vm.config.net[i == 1 and 2 or 1].mac, peer,
    status == 0 and "reachable" or "unreachable"))
end
for _, vm in ipairs(vms) do vmlua.spawn(function() vm:stop() end) end
for _, vm in ipairs(vms) do vm:wait("stopped") end
