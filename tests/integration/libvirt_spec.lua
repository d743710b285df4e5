-- The life-cycle specs again, with every VM run by libvirt: a private
-- libvirtd (tests/support/libvirtd.lua) and the busybox guests.
local cli = require "support.cli"
local config = require "vmlua.config"
local core = require "vmlua.core"
local guest = require "support.guest"
local libvirtd = require "support.libvirtd"
local pty = require "support.pty"
local task = require "vmlua.task"
local vmlua = require "vmlua"

local read = require("vmlua.runtime").read_file

local usable, why = libvirtd.usable()

describe("on the libvirt backend", function()
  if not usable then
    pending("libvirt specs: " .. tostring(why))
    return
  end
  local daemon
  setup(function()
    daemon = libvirtd.start()
    config.connect = daemon.uri
  end)
  teardown(function()
    config.connect, guest.libvirt = nil, false
    if daemon then daemon:stop() end
  end)

  describe("an instance", function()
    after_each(guest.cleanup)

    local function entry(name)
      local code, out, err = cli.run({ "ls", "--json" }, 60)
      assert.are.equal(0, code, err)
      for _, e in ipairs(core.json_decode(out)) do
        if e.name == name then return e end
      end
      return nil
    end

    it("detached, outlives its script and is stopped by name", function()
      local files = guest.files("x86_64")
      local name = "lv-detached-" .. core.getpid()
      local script = cli.write(guest.tmpdir(), "detached.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, memory = "256M", backend = vmlua.libvirt { uri = %q },
  boot = vmlua.linux { kernel = %q, initrd = %q } }
vm:start { detach = true }
vm:expect("vmlua# ")
print(vm:run("echo $((6 * 7))"))
]], name, daemon.uri, files.kernel, files.initrd))
      local code, out, err = cli.run({ script }, 180)
      assert.are.equal(0, code, out .. err)
      assert.matches("42", out, 1, true)
      local running = entry(name)
      assert.are.equal("running", running.state)
      assert.are.equal(daemon.uri, running.host)
      assert.is_true(running.detached)
      assert.are.same({ running.pid }, daemon:qemu_pids())
      code, out, err = cli.run({ "stop", name }, 60)
      assert.are.equal(0, code, out .. err)
      assert.are.equal("stopped", entry(name).state)
      assert.are.same({}, daemon:qemu_pids())
      assert.are.equal(0, (cli.run({ "rm", name }, 60)))
    end)

    it("that libvirt runs on after its vmlua is killed is listed truthfully, taken over, stopped and removed",
       function()
      local files = guest.files("x86_64")
      local name = "lv-orphan-" .. core.getpid()
      local script = cli.write(guest.tmpdir(), "orphan.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, memory = "256M", backend = vmlua.libvirt { uri = %q },
  boot = vmlua.linux { kernel = %q, initrd = %q } }
vm:start()
vm:expect("vmlua# ")
print("up") io.stdout:flush()
vmlua.sleep(600)
]], name, daemon.uri, files.kernel, files.initrd))
      local h = cli.spawn { script }
      h.until_(function() return h.out:find("up") end, 120)
      local serving = entry(name)
      assert.are.equal(daemon.uri, serving.host)
      assert.are.equal(serving.pid, daemon:qemu_pids()[1])
      h.process:kill("KILL")
      h.wait(10)
      local orphan = entry(name)
      assert.are.equal("running", orphan.state, orphan.reason)
      assert.are.equal(daemon.uri, orphan.host)
      assert.matches("no vmlua serves it; libvirt runs it on", orphan.reason, 1, true)
      assert.are.equal(1, #daemon:qemu_pids())
      -- vmlua.attach takes it over: its console, monitor and events are this process's until it lets go
      local vm = require("vmlua").attach(name)
      assert.are.equal("running", vm.state)
      assert.are.same({ "adopted\n", 0 }, { vm:run("echo adopted") })
      assert.are.equal("running", vm:qmp_command("query-status").status)
      assert.are.equal(daemon.uri, entry(name).host)
      require("vmlua.machine").let_go_all()
      assert.matches("no vmlua serves it", entry(name).reason, 1, true)
      -- and so does vmlua attach, at a terminal; Ctrl-] leaves it running
      local t = pty.spawn { "attach", name }
      t:expect("attached to the console of " .. name)
      t:send("echo hi-$((6 * 7))\r")
      t:expect("hi-42")
      t:send(pty.keys.ctrl_bracket)
      t:expect("detached from vm " .. name .. " (running")
      assert.are.equal(0, t:wait_exit(10))
      assert.are.equal("running", entry(name).state)
      assert.are.equal(1, #daemon:qemu_pids())
      local code, out, err = cli.run({ "rm", name }, 60)
      assert.are.equal(1, code, out)
      assert.matches("is running on", err, 1, true)
      code, out, err = cli.run({ "stop", name }, 60)
      assert.are.equal(0, code, out .. err)
      assert.matches("stopped (graceful)", err, 1, true)
      assert.are.equal("stopped", entry(name).state)
      local deadline = core.now() + 10
      while #daemon:qemu_pids() > 0 and core.now() < deadline do task.sleep(0.2) end
      assert.are.same({}, daemon:qemu_pids())
      code, out, err = cli.run({ "rm", name }, 60)
      assert.are.equal(0, code, out .. err)
      assert.is_nil(entry(name))
    end)
  end)

  describe("a LAN", function()
    local instance
    after_each(function()
      guest.cleanup()
      if instance then
        cli.run({ "stop", "--force", instance }, 60)
        cli.run({ "rm", "--force", instance }, 60)
      end
      instance = nil
    end)

    it("joins a libvirt VM and a QEMU instance of another vmlua; its switch ends with the last", function()
      local lan = require "vmlua.lan"
      local lan_name = "lv-lan-" .. core.getpid()
      local files = guest.files("x86_64")
      instance = "lv-lan-qemu-" .. core.getpid()
      local code, out, err = cli.run({ cli.write(guest.tmpdir(), "qemu.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q }, net = { vmlua.lan { name = %q } } }
vm:start { detach = true }
vm:expect("vmlua# ", { timeout = 180 })
assert(select(2, vm:run("ip addr add 192.168.78.1/24 dev eth0 && ip link set eth0 up")) == 0)
]], instance, files.kernel, files.initrd, lan_name)) }, 300)
      assert.are.equal(0, code, out .. err)

      local vm = guest.vm("x86_64", { net = { vmlua.lan { name = lan_name } } })
      guest.boot(vm)
      assert.are.equal(1, #daemon:qemu_pids()) -- libvirt runs this one, vmlua's QEMU the other
      assert.are.equal(lan.mac(vm.name, lan_name) .. "\n", vm:run("cat /sys/class/net/eth0/address"))
      assert.are.equal(0, select(2, vm:run("ip addr add 192.168.78.2/24 dev eth0 && ip link set eth0 up")))
      local ping, status = vm:run("ping -c 2 -W 5 192.168.78.1", { timeout = 60 })
      assert.are.equal(0, status, ping)

      -- The domain's QEMU holds the LAN: its switch runs on after the other VM, and ends with the domain.
      assert.are.equal(0, (cli.run({ "stop", "--force", instance }, 60)))
      assert.is_true(lan.running(lan_name), "the switch ended while the domain was on the LAN")
      assert.are.equal("graceful", vm:stop())
      local deadline = core.now() + 20
      while lan.running(lan_name) and core.now() < deadline do task.sleep(0.2) end
      assert.is_false(lan.running(lan_name), "the switch outlived the domain")
    end)
  end)

  describe("when libvirtd goes away", function()
    local other
    after_each(function()
      config.connect = daemon.uri
      guest.cleanup()
      if other then other:stop() end
      other = nil
    end)

    it("its VM ends in error naming the connection and the domain it lost, and a later call says so", function()
      other = libvirtd.start()
      config.connect = other.uri
      local vm = guest.boot(guest.vm("x86_64"))
      assert.are.equal(0, (libvirtd.run { "kill", "-KILL", tostring(other.daemon_pid) }))
      vm:wait("error", { timeout = 30 })
      local uri = other.uri:gsub("%p", "%%%0")
      assert.matches("^vmlua lost libvirt's connection to " .. uri .. " %(eof%): the domain may still run there "
        .. "%(virsh %-c " .. uri .. " list%)$", vm.reason)
      local ok, err = pcall(vm.run, vm, "true", { timeout = 5 })
      assert.is_false(ok)
      assert.matches("^vm " .. vm.name:gsub("%p", "%%%0") .. ": cannot run: it is error %(vmlua lost", tostring(err))
    end)
  end)

  describe("a share", function()
    after_each(guest.cleanup)

    it("is served by a virtiofsd that libvirt runs with the domain and ends with it", function()
      local dir = guest.tmpdir()
      cli.write(dir, "hello.txt", "hello from the host\n")
      local vm = guest.vm("x86_64", { shares = { vmlua.share { host = dir, tag = "src" } } })
      guest.boot(vm)
      local out, status = vm:run("mount -t virtiofs src /mnt && cat /mnt/hello.txt && echo back > /mnt/back.txt")
      assert.are.equal(0, status, out)
      assert.matches("hello from the host", out)
      assert.are.equal("back\n", read(dir .. "/back.txt"))
      assert.are.equal(1, #daemon:pids("virtiofsd"))
      assert.are.equal("graceful", vm:stop())
      local deadline = core.now() + 10
      while #daemon:pids("virtiofsd") > 0 and core.now() < deadline do task.sleep(0.2) end
      assert.are.same({}, daemon:pids("virtiofsd"))
    end)

    it("read-only is served by vmlua's own virtiofsd: the guest reads, every write is refused", function()
      local dir = guest.tmpdir()
      cli.write(dir, "hello.txt", "hello from the host\n")
      local vm = guest.vm("x86_64", { shares = { vmlua.share { host = dir, tag = "ro", readonly = true } } })
      local socket = require("vmlua.runtime").share_socket(require("vmlua.runtime").paths(vm.name), 1)
      guest.boot(vm)
      local out, status = vm:run("mount -t virtiofs ro /mnt && cat /mnt/hello.txt")
      assert.are.equal(0, status, out)
      assert.matches("hello from the host", out)
      for _, cmd in ipairs { "echo x > /mnt/new.txt", "echo x >> /mnt/hello.txt", "rm /mnt/hello.txt" } do
        out, status = vm:run(cmd)
        assert.are_not.equal(0, status, cmd .. " was allowed")
        assert.matches("Read%-only file system", out, cmd)
      end
      assert.are.equal("hello from the host\n", read(dir .. "/hello.txt"))
      assert.is_nil(read(dir .. "/new.txt"))
      assert.are.same({}, daemon:pids("virtiofsd")) -- none of libvirt's
      assert.is_true(core.stat(socket) ~= nil, "vmlua's virtiofsd does not listen on " .. socket)
      assert.are.equal("graceful", vm:stop())
      assert.is_nil(core.stat(socket), "vmlua's virtiofsd outlived the domain")
    end)
  end)

  -- console_spec tests vmlua's console code, which libvirt_core_spec's
  -- stream feeds the same way; the shell half of hangs_spec is skipped too.
  local specs = { "lifecycle", "failures", "network", "hangs", "snapshot", "agent" }
  if os.getenv("LV_SPECS") then -- a few of them, for debugging
    specs = {}
    for name in os.getenv("LV_SPECS"):gmatch("%S+") do specs[#specs + 1] = name end
  end
  guest.libvirt = true
  for _, spec in ipairs(specs) do
    assert(loadfile("tests/integration/" .. spec .. "_spec.lua", "t", _ENV))()
  end
end)
