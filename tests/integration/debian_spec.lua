-- A real distribution: the Debian 12 guest of scripts/build-debian.sh
-- (systemd, sshd, the cloud kernel) on a copy-on-write overlay, reached by
-- ssh through a NAT forward, stopped by its power button.
local core = require "vmlua.core"
local vmlua = require "vmlua"
local cli = require "support.cli"
local guest = require "support.guest"

local count = 0
local function debian_vm(overlay, port)
  local image = guest.debian()
  count = count + 1
  return vmlua.vm {
    name = string.format("debian-%d-%d", core.getpid(), count),
    arch = "x86_64", cpus = 2, memory = "1G",
    boot = vmlua.linux { kernel = image .. "vmlinuz", initrd = image .. "initrd.img",
                         cmdline = { "root=/dev/vda", "rw" } },
    disks = { vmlua.disk { path = overlay, base = image .. "root.ext4" } },
    net = { vmlua.nat { forward = { [port] = 22 } } },
    ssh = { key = image .. "id_ed25519" },
  }
end

describe("the Debian guest", function()
  after_each(guest.cleanup)

  it("boots systemd, lets vmlua in by ssh, powers off by its button, and keeps what it wrote", function()
    local overlay = guest.tmpdir() .. "/debian.qcow2"
    local port = 20000 + math.random(0, 20000)
    local vm = debian_vm(overlay, port)
    vm:start()
    vm:wait_ssh { timeout = 240 }
    -- degraded: a unit failed; running: none did (see the README)
    local state = vm:ssh("systemctl is-system-running --wait", { timeout = 120 })
    assert.matches("^running\n$", state)
    assert.are.same({ "root\n", 0 }, { vm:ssh("id -un") })
    local _, status = vm:ssh("exit 7")
    assert.are.equal(7, status)
    -- the root account takes no password: only the key
    assert.matches("^L", vm:ssh("passwd -S root"):match("^root (%S+)"))
    assert.are.equal(0, select(2, vm:ssh("echo kept-$((6 * 7)) > /root/mark")))
    assert.are.equal("graceful", vm:stop { timeout = 60 })

    -- The overlay holds the guest's writes; the image is untouched. This
    -- time it runs detached, and `vmlua ssh NAME` reaches it.
    local again = debian_vm(overlay, port)
    again:start { detach = true }
    again:wait_ssh { timeout = 240 }
    local code, out, err = cli.run({ "ssh", again.name, "cat", "/root/mark" }, 60)
    assert.are.same({ 0, "kept-42\n" }, { code, out }, err)
    code, out = cli.run({ "ssh", again.name, "exit 3" }, 60)
    assert.are.same({ 3, "" }, { code, out })
    assert.are.equal("graceful", again:stop { timeout = 60 })
    cli.run({ "rm", again.name }, 30)
  end)

  it("says why ssh cannot work before trying", function()
    local image = guest.debian()
    local vm = vmlua.vm { name = "debian-nossh-" .. core.getpid(), arch = "x86_64", memory = "1G",
      boot = vmlua.linux { kernel = image .. "vmlinuz", initrd = image .. "initrd.img" },
      ssh = { key = image .. "id_ed25519" } }
    assert.has_error(function() vm:ssh("true") end,
      "vm " .. vm.name .. ": ssh: no NAT forward reaches its ssh port 22 (add forward = { [2222] = 22 })")
    local bare = vmlua.vm { name = "debian-nokey-" .. core.getpid(), arch = "x86_64", memory = "1G",
      boot = vmlua.linux { kernel = image .. "vmlinuz" } }
    assert.has_error(function() bare:wait_ssh() end,
      "vm " .. bare.name .. ": wait for ssh: it has no ssh = { key = ... } in its definition")
  end)
end)
