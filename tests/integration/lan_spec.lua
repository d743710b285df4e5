-- Private LANs (vmlua.lan) and UDP forwards on real guests: two detached
-- instances started by two vmlua processes and a VM of this script share a
-- LAN and ping each other; a VM on another LAN with the same addresses
-- reaches none of them; the switch ends with the last VM on it. A UDP
-- forward reaches an echo server in the guest.
local core = require "vmlua.core"
local lan = require "vmlua.lan"
local vmlua = require "vmlua"
local cli = require "support.cli"
local guest = require "support.guest"

local read = require("vmlua.runtime").read_file

-- The pids of the vde_switch processes serving LAN `name`.
local function switches(name)
  local sock = lan.paths(name).switch
  local pids = {}
  local p = assert(io.popen("ls /proc"))
  for entry in p:lines() do
    local cmdline = entry:match("^%d+$") and read("/proc/" .. entry .. "/cmdline")
    if cmdline and cmdline:find("vde_switch", 1, true) and cmdline:find(sock .. "\0", 1, true) then
      pids[#pids + 1] = tonumber(entry)
    end
  end
  p:close()
  return pids
end

local function none_within(name, seconds)
  local deadline = core.now() + seconds
  repeat
    if #switches(name) == 0 then return true end
    vmlua.sleep(0.2)
  until core.now() > deadline
  return false
end

-- Sets the static address 192.168.77.N/24 on the guest's eth0.
local function address(n)
  return string.format("ip addr flush dev eth0 && ip addr add 192.168.77.%d/24 dev eth0 && ip link set eth0 up", n)
end

describe("LAN", function()
  local lan_name, instances = nil, {}

  after_each(function()
    for _, name in ipairs(instances) do
      cli.run({ "stop", "--force", name }, 60)
      cli.run({ "rm", "--force", name }, 60)
    end
    instances = {}
    guest.cleanup()
    -- no switch outlives its VMs, even when the spec failed
    if lan_name then
      for _, pid in ipairs(switches(lan_name)) do
        if not guest.gone_within(pid, 20) then vmlua.exec({ "kill", tostring(pid) }) end
      end
    end
  end)

  it("joins instances of two vmlua processes and a script's VM; another LAN is apart", function()
    lan_name = string.format("spec-%d", core.getpid())
    local other_lan = lan_name .. "-other"
    local files = guest.files("x86_64")
    local dir = guest.tmpdir()
    -- Each instance is started, detached, by a vmlua process of its own,
    -- which sets its address and pings those started before it.
    local function instance(n)
      local name = string.format("lan-%d-%d", core.getpid(), n)
      instances[#instances + 1] = name
      local ping = n > 1 and string.format('print("ping " .. select(2, vm:run("ping -c 2 -W 5 192.168.77.%d", '
        .. '{ timeout = 60 })))\n', n - 1) or ""
      local file = cli.write(dir, name .. ".lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q }, net = { vmlua.lan { name = %q } } }
vm:start { detach = true }
vm:expect("vmlua# ", { timeout = 180 })
assert(select(2, vm:run(%q)) == 0)
print("mac " .. vm:run("cat /sys/class/net/eth0/address"))
]], name, files.kernel, files.initrd, lan_name, address(n)) .. ping)
      local code, out, err = cli.run({ file }, 300)
      assert.are.equal(0, code, out .. err)
      return name, out
    end
    local first, out1 = instance(1)
    local second, out2 = instance(2)
    assert.matches("mac " .. lan.mac(first, lan_name), out1, 1, true)
    assert.matches("mac " .. lan.mac(second, lan_name), out2, 1, true)
    assert.matches("ping 0", out2, 1, true) -- the second instance reached the first
    assert.are.equal(1, #switches(lan_name)) -- one switch for the LAN, its scripts gone

    -- A VM of this script on the LAN, and one on another LAN with the same subnet.
    local here = guest.vm("x86_64", { net = { vmlua.lan { name = lan_name } } })
    local apart = guest.vm("x86_64", { net = { vmlua.lan { name = other_lan } } })
    here:start()
    apart:start()
    for n, vm in pairs { [3] = here, [4] = apart } do
      vm:expect("vmlua# ", { timeout = 180 })
      local _, status = vm:run(address(n))
      assert.are.equal(0, status)
    end
    for peer = 1, 2 do
      local _, status = here:run(string.format("ping -c 2 -W 5 192.168.77.%d", peer), { timeout = 60 })
      assert.are.equal(0, status, "the script's VM reaches instance " .. peer)
      _, status = apart:run(string.format("ping -c 2 -W 2 192.168.77.%d", peer), { timeout = 60 })
      assert.are_not.equal(0, status, "a VM on another LAN reaches instance " .. peer)
    end
    assert.are_not.equal(0, select(2, apart:run("ping -c 2 -W 2 192.168.77.3", { timeout = 60 })))

    -- The switch runs while any VM is on the LAN, and ends with the last.
    apart:kill()
    assert.is_true(none_within(other_lan, 20), "the other LAN's switch outlived its only VM")
    here:kill()
    assert.are.equal(0, (cli.run({ "stop", "--force", first }, 60)))
    assert.are.equal(1, #switches(lan_name), "the switch ended while a VM was still on the LAN")
    assert.are.equal(0, (cli.run({ "stop", "--force", second }, 60)))
    assert.is_true(none_within(lan_name, 20), "the switch outlived the last VM on its LAN")
    assert.is_nil(core.stat(lan.paths(lan_name).switch), "the switch left its sockets")
  end)
end)

-- A UDP echo server for the guest, built static on the host (busybox's nc
-- has no UDP), on an ext4 image the guest mounts.
local ECHO = [[
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
  if (argc < 2 || fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) return 1;
  for (;;) {
    char buf[1500];
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
    if (n > 0) sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
  }
}
]]

local function echo_disk(dir)
  local src = dir .. "/udpecho.c"
  local f = assert(io.open(src, "w"))
  f:write(ECHO)
  f:close()
  os.execute("mkdir -p " .. dir .. "/root")
  local _, status, err = vmlua.exec({ "gcc", "-static", "-O2", "-o", dir .. "/root/udpecho", src })
  assert.are.equal(0, status, err)
  _, status, err = vmlua.exec({ "mke2fs", "-q", "-F", "-t", "ext4", "-d", dir .. "/root", dir .. "/echo.ext4", "8M" })
  assert.are.equal(0, status, err)
  return dir .. "/echo.ext4"
end

describe("UDP forward", function()
  after_each(guest.cleanup)

  it("carries a datagram from 127.0.0.1 to a guest's server and its answer back", function()
    local disk = echo_disk(guest.tmpdir())
    local port = assert(core.free_port("127.0.0.1"))
    local vm = guest.vm("x86_64", { disks = { vmlua.disk { path = disk } },
                                    net = { vmlua.nat { udp = { [port] = 7007 } } } })
    guest.boot(vm)
    local _, status = vm:run("mount /dev/vda /mnt && (/mnt/udpecho 7007 &) && sleep 1")
    assert.are.equal(0, status)
    local answer
    for _ = 1, 5 do -- UDP: the first datagram may go before the guest's ARP is done
      answer = vmlua.exec({ "timeout", "5", "bash", "-c",
        "exec 3<>/dev/udp/127.0.0.1/" .. port .. " && printf hello-udp >&3 && head -c 9 <&3" })
      if answer == "hello-udp" then break end
    end
    assert.are.equal("hello-udp", answer)
    vm:kill()
  end)
end)
