local core = require "vmlua.core"
local config = require "vmlua.config"
local host = require "vmlua.host"
local plan = require "vmlua.plan"
local qemu = require "vmlua.qemu"
local accels = require "vmlua.accel"
local runtime = require "vmlua.runtime"
local helpers = require "support.helpers"

describe("plan", function()
  local dir, choose

  before_each(function()
    dir = helpers.tmpdir()
    for _, arch in ipairs({ "x86_64", "aarch64" }) do
      local bin = helpers.write(dir .. "/qemu-system-" .. arch, "#!/bin/sh\n")
      assert(core.chmod(bin, tonumber("755", 8)))
    end
    host.reset { path = dir }
    choose = accels.choose
    accels.choose = function(arch, asked, by)
      if asked == "hvf" then return nil, '"hvf" is not on linux; here use "kvm" or "tcg"' end
      if asked then return asked, "asked for by " .. (by == "VMLUA_ACCEL" and "VMLUA_ACCEL" or "the definition") end
      local emulated = "aarch64 guest on an x86_64 host: emulated, expect it to be slow"
      if arch == "aarch64" then return "tcg", emulated, emulated end
      return "kvm", "/dev/kvm runs guests (probed)"
    end
  end)

  after_each(function()
    accels.choose = choose
    host.reset()
    helpers.rmtree(dir)
  end)

  local function x86()
    local cfg = config.vm({
      name = "dev", arch = "x86_64", cpus = 2, memory = "2G",
      boot = config.linux { kernel = "/k/vmlinuz", initrd = "/k/initrd.img", cmdline = "quiet" },
      disks = { config.disk { path = "/d/my root.img" }, config.disk { path = "/d/seed.img", readonly = true } },
      net = { config.nat { forward = { [2222] = 22, [8080] = 80 } } },
      console = config.console { log = "/logs/dev.log" },
    }, 2)
    return cfg
  end

  local function arm()
    local cfg = config.vm({
      name = "arm", arch = "aarch64", memory = "1536M", boot = config.linux { kernel = "/k/Image" },
    }, 2)
    return cfg
  end

  describe("text", function()
    it("shows libvirt's domain for a VM on the libvirt backend, with its share, LAN and agent", function()
      local cfg = config.vm({
        name = "dev", arch = "x86_64", memory = "512M", agent = true,
        backend = config.libvirt { uri = "qemu:///system" },
        boot = config.linux { kernel = "/k/vmlinuz" },
        shares = { config.share { host = "/srv/src", tag = "src" } },
        net = { config.lan { name = "lab" } },
      }, 2)
      local text = plan.text(cfg)
      assert.matches("\n  backend   libvirt qemu:///system (backend)\n", text, 1, true)
      assert.matches("\n            virtiofsd: libvirt's, started and ended with the domain", text, 1, true)
      assert.is_nil(text:find("--socket-path", 1, true)) -- vmlua runs no virtiofsd of its own
      assert.matches("<target dir='src'/>", text, 1, true)
      assert.matches("<target name='org.qemu.guest_agent.0' type='virtio'/>", text, 1, true)
      assert.matches("<qemu:arg value='vde,id=net0,sock=" .. require("vmlua.lan").paths("lab").switch .. "'/>", text,
                     1, true)
    end)

    it("shows the resolved x86_64 VM and its command", function()
      local cfg = x86()
      local text = plan.text(cfg)
      local paths = runtime.paths("dev")
      local lines = {}
      for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal("vm dev (" .. cfg.where.short .. ":" .. cfg.where.line .. ")", lines[1])
      assert.equal("  arch      x86_64", lines[2])
      assert.equal("  accel     kvm: /dev/kvm runs guests (probed)", lines[3])
      assert.equal("  cpus      2", lines[4])
      assert.equal("  memory    2 GiB", lines[5])
      assert.equal("  boot      linux kernel /k/vmlinuz", lines[6])
      assert.equal("                  initrd /k/initrd.img", lines[7])
      assert.equal("                  cmdline quiet console=ttyS0 panic=-1", lines[8])
      assert.equal("  disk0     /d/my root.img (raw, read-write)", lines[9])
      assert.equal("  disk1     /d/seed.img (raw, read-only)", lines[10])
      assert.equal("  net0      127.0.0.1:2222 -> guest 22/tcp", lines[11])
      assert.equal("            127.0.0.1:8080 -> guest 80/tcp", lines[12])
      assert.equal("  console   log /logs/dev.log", lines[13])
      assert.equal("  command   (quoted for reading only: vmlua runs this argv itself, without a shell)", lines[14])
      assert.equal("    " .. dir .. "/qemu-system-x86_64 \\", lines[15])
      assert.equal("      -name dev \\", lines[16])
      assert.equal("      -machine q35 \\", lines[17])
      assert.equal("      -accel kvm \\", lines[18])
      assert.equal("      -cpu host \\", lines[19])
      assert.truthy(text:find("      -append 'quiet console=ttyS0 panic=-1' \\\n", 1, true))
      assert.truthy(text:find("      -qmp unix:" .. paths.qmp .. " \\\n", 1, true))
      assert.truthy(text:find("      -drive 'if=none,id=disk0,file=/d/my root.img,format=raw' \\\n", 1, true))
      assert.equal("      -device virtio-net-pci,netdev=net0", lines[#lines])
    end)

    it("shows the emulation warning and the defaults of an aarch64 VM", function()
      local text = plan.text(arm())
      assert.truthy(text:find("\n  arch      aarch64\n"
        .. "  accel     tcg: aarch64 guest on an x86_64 host: emulated, expect it to be slow\n", 1, true))
      assert.truthy(text:find("\n  memory    1.5 GiB\n", 1, true))
      assert.truthy(text:find("\n                  cmdline console=ttyAMA0 panic=-1\n", 1, true))
      assert.truthy(text:find("\n  disks     none\n  net       none\n", 1, true))
      assert.truthy(text:find("\n  console   log " .. runtime.paths("arm").log .. " (in the runtime directory)\n", 1,
        true))
      assert.truthy(text:find("\n      -machine virt \\\n      -accel tcg \\\n      -cpu cortex-a72 \\\n", 1, true))
    end)

    it("says which accelerator was asked for, and why one cannot be used", function()
      local cfg = config.vm({ name = "t", arch = "x86_64", accel = "tcg" }, 2)
      assert.truthy(plan.text(cfg):find("\n  accel     tcg: asked for by the definition\n", 1, true))
      cfg = config.vm({ name = "h", arch = "x86_64", accel = "hvf" }, 2)
      assert.truthy(plan.text(cfg):find('\n  accel     "hvf" is not on linux; here use "kvm" or "tcg"\n', 1, true))
      local v = core.json_decode(plan.json({ cfg })).vms[1]
      assert.equal(core.null, v.accel)
      assert.equal('"hvf" is not on linux; here use "kvm" or "tcg"', v.accel_reason)
    end)

    it("shows a VM it cannot run without failing", function()
      local cfg = config.vm({ name = "r", arch = "riscv64" }, 2)
      local text = plan.text(cfg)
      assert.truthy(text:find("  arch      riscv64 (not supported)", 1, true))
      assert.truthy(text:find("  boot      none", 1, true))
      assert.is_nil(text:find("command", 1, true))
    end)
  end)

  describe("quote", function()
    it("quotes for a POSIX shell only where needed", function()
      assert.equal("-m", plan.quote("-m"))
      assert.equal("if=none,id=d,file=/a/b.img", plan.quote("if=none,id=d,file=/a/b.img"))
      assert.equal("'a b'", plan.quote("a b"))
      assert.equal([['it'\''s']], plan.quote("it's"))
      assert.equal("''", plan.quote(""))
      assert.equal("'$HOME'", plan.quote("$HOME"))
    end)
  end)

  describe("json", function()
    it("gives each VM's configuration and argv", function()
      local a, b = x86(), arm()
      local doc = core.json_decode(plan.json({ a, b }))
      assert.equal(2, #doc.vms)
      local v = doc.vms[1]
      assert.equal("dev", v.name)
      assert.equal("x86_64", v.arch)
      assert.equal("kvm", v.accel)
      assert.equal("/dev/kvm runs guests (probed)", v.accel_reason)
      assert.equal(core.null, v.warning)
      assert.equal(2, v.cpus)
      assert.equal(2 * 1024 ^ 3, v.memory)
      assert.same({ "quiet", "console=ttyS0", "panic=-1" }, v.boot.cmdline)
      assert.equal("/k/vmlinuz", v.boot.kernel)
      assert.equal("/d/my root.img", v.disks[1].path)
      assert.is_true(v.disks[2].readonly)
      assert.same({ host = 2222, guest = 22, address = "127.0.0.1", protocol = "tcp" }, v.net[1].forward[1])
      assert.equal("/logs/dev.log", v.console.log)
      assert.equal(a.where.line, v.where.line)
      assert.same(qemu.command(a, runtime.paths("dev")).args, v.argv)
      assert.equal(dir .. "/qemu-system-x86_64", v.file)

      local w = doc.vms[2]
      assert.equal("aarch64 guest on an x86_64 host: emulated, expect it to be slow", w.warning)
      assert.equal(runtime.paths("arm").log, w.console.log)
      assert.same(qemu.command(b, runtime.paths("arm")).args, w.argv)
      assert.same(host.facts().arch, doc.host.arch)
    end)

    it("writes empty lists as []", function()
      local text = plan.json({ arm() })
      assert.truthy(text:find('"disks": []', 1, true))
      assert.truthy(text:find('"net": []', 1, true))
      assert.is_nil(text:find("empty-list", 1, true))
      assert.truthy(plan.json({}):find('"vms": []', 1, true))
    end)
  end)
end)
