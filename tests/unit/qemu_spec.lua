local core = require "vmlua.core"
local config = require "vmlua.config"
local host = require "vmlua.host"
local qemu = require "vmlua.qemu"
local accels = require "vmlua.accel"
local helpers = require "support.helpers"

describe("qemu.command", function()
  local dir, choose, accel
  local paths = { dir = "/run/v/dev", qmp = "/run/v/dev/qmp.sock", console = "/run/v/dev/console",
                  guard = "/run/v/dev/guard.sock" }

  before_each(function()
    dir = helpers.tmpdir()
    for _, arch in ipairs({ "x86_64", "aarch64" }) do
      local bin = helpers.write(dir .. "/qemu-system-" .. arch, "#!/bin/sh\n")
      assert(core.chmod(bin, tonumber("755", 8)))
    end
    host.reset { path = dir }
    -- The accelerator depends on the host; these specs choose it.
    choose, accel = accels.choose, "tcg"
    accels.choose = function() return accel, "chosen by the spec" end
  end)

  after_each(function()
    accels.choose = choose
    host.reset()
    helpers.rmtree(dir)
  end)

  local function vm(spec)
    return config.vm(spec, 2)
  end

  local function linux(extra)
    local spec = { kernel = "/k/vmlinuz", initrd = "/k/initrd.img", cmdline = "root=/dev/vda" }
    for k, v in pairs(extra or {}) do spec[k] = v end
    return config.linux(spec)
  end

  it("boots an x86_64 guest on q35, emulated with -cpu max", function()
    local cmd = qemu.command(vm {
      name = "dev", arch = "x86_64", cpus = 2, memory = "1G", boot = linux(),
      disks = { config.disk { path = "/d/root.img" }, config.disk { path = "/d/seed.qcow2", readonly = true } },
      net = { config.nat { forward = { [8080] = 80, [2222] = 22 } } },
    }, paths)
    assert.equal(dir .. "/qemu-system-x86_64", cmd.file)
    assert.same({
      dir .. "/qemu-system-x86_64",
      "-name", "dev",
      "-machine", "q35",
      "-accel", "tcg",
      "-cpu", "max",
      "-smp", "2",
      "-m", "1024",
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-kernel", "/k/vmlinuz",
      "-initrd", "/k/initrd.img",
      "-append", "root=/dev/vda console=ttyS0 panic=-1",
      "-qmp", "unix:/run/v/dev/qmp.sock",
      "-qmp", "unix:/run/v/dev/guard.sock,server=on,wait=off",
      "-chardev", "pipe,id=console,path=/run/v/dev/console",
      "-serial", "chardev:console",
      "-drive", "if=none,id=disk0,file=/d/root.img,format=raw",
      "-device", "virtio-blk-pci,drive=disk0",
      "-drive", "if=none,id=disk1,file=/d/seed.qcow2,format=qcow2,readonly=on",
      "-device", "virtio-blk-pci,drive=disk1",
      "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80",
      "-device", "virtio-net-pci,netdev=net0",
    }, cmd.args)
  end)

  it("boots an aarch64 guest on virt, emulated with -cpu cortex-a72", function()
    local cmd = qemu.command(vm {
      name = "arm", arch = "aarch64", cpus = 4, memory = "512M", boot = linux { firmware = "/fw/QEMU_EFI.fd" },
      net = { config.nat {}, config.nat { forward = { [2223] = 22 }, address = "0.0.0.0" } },
    }, paths)
    assert.equal(dir .. "/qemu-system-aarch64", cmd.file)
    assert.same({
      dir .. "/qemu-system-aarch64",
      "-name", "arm",
      "-machine", "virt",
      "-accel", "tcg",
      "-cpu", "cortex-a72",
      "-smp", "4",
      "-m", "512",
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-bios", "/fw/QEMU_EFI.fd",
      "-kernel", "/k/vmlinuz",
      "-initrd", "/k/initrd.img",
      "-append", "root=/dev/vda console=ttyAMA0 panic=-1",
      "-qmp", "unix:/run/v/dev/qmp.sock",
      "-qmp", "unix:/run/v/dev/guard.sock,server=on,wait=off",
      "-chardev", "pipe,id=console,path=/run/v/dev/console",
      "-serial", "chardev:console",
      "-netdev", "user,id=net0",
      "-device", "virtio-net-pci,netdev=net0",
      "-netdev", "user,id=net1,hostfwd=tcp:0.0.0.0:2223-:22",
      "-device", "virtio-net-pci,netdev=net1",
    }, cmd.args)
  end)

  it("gives an aarch64 kernel UEFI firmware when installed (for ACPI), unless told not to", function()
    local installed = qemu.arches.aarch64.linux_firmware
    local fake = helpers.write(dir .. "/QEMU_EFI.fd", "firmware")
    qemu.arches.aarch64.linux_firmware = { dir .. "/missing.fd", fake }
    local with = qemu.command(vm { name = "a", arch = "aarch64", boot = linux() }, paths).args
    local without = qemu.command(vm { name = "b", arch = "aarch64", boot = linux { firmware = false } }, paths).args
    local x86 = qemu.command(vm { name = "c", arch = "x86_64", boot = linux() }, paths).args
    qemu.arches.aarch64.linux_firmware = installed
    local function bios(args)
      for i, a in ipairs(args) do if a == "-bios" then return args[i + 1] end end
    end
    assert.equal(fake, bios(with))
    assert.is_nil(bios(without))
    assert.is_nil(bios(x86))
  end)

  local function arg_after(args, opt)
    for i, a in ipairs(args) do
      if a == opt then return args[i + 1] end
    end
  end

  it("uses GICv3 on virt beyond 8 CPUs", function()
    local args = qemu.command(vm { arch = "aarch64", cpus = 9, boot = linux() }, paths).args
    assert.equal("virt,gic-version=3", arg_after(args, "-machine"))
  end)

  it("uses -cpu host with KVM or HVF", function()
    accel = "kvm"
    local args = qemu.command(vm { arch = "x86_64", boot = linux() }, paths).args
    assert.equal("kvm", arg_after(args, "-accel"))
    assert.equal("host", arg_after(args, "-cpu"))
    args = qemu.command(vm { arch = "aarch64", boot = linux() }, paths).args
    assert.equal("host", arg_after(args, "-cpu"))
    assert.equal("virt,gic-version=host", arg_after(args, "-machine"))
    accel = "hvf"
    args = qemu.command(vm { arch = "aarch64", boot = linux() }, paths).args
    assert.equal("hvf", arg_after(args, "-accel"))
    assert.equal("host", arg_after(args, "-cpu"))
  end)

  it("chooses the accelerator with accel.choose", function()
    accels.choose = choose
    local want = accels.choose("aarch64")
    assert.equal(want, qemu.accel(vm { arch = "aarch64" }))
    local args = qemu.command(vm { arch = "aarch64", boot = linux() }, paths).args
    assert.equal(want, arg_after(args, "-accel"))
  end)

  it("runs what the definition asks for, and what it is told to", function()
    accels.choose = choose
    local args = qemu.command(vm { arch = "aarch64", accel = "tcg", boot = linux() }, paths).args
    assert.equal("tcg", arg_after(args, "-accel"))
    args = qemu.command(vm { arch = "x86_64", boot = linux() }, paths, "kvm").args
    assert.equal("kvm", arg_after(args, "-accel"))
    assert.equal("host", arg_after(args, "-cpu"))
  end)

  it("connects to vmlua's sockets rather than serving them, but for the guard's", function()
    local args = qemu.command(vm { boot = linux() }, paths).args
    for i, arg in ipairs(args) do
      if arg:find("server", 1, true) or arg:find("wait", 1, true) then
        assert.equal("-qmp", args[i - 1])
        assert.equal("unix:" .. paths.dir .. "/guard.sock,server=on,wait=off", arg)
      end
    end
  end)

  it("doubles commas in values inside QEMU option strings", function()
    local cmd = qemu.command(vm {
      arch = "x86_64", boot = linux { kernel = "/k,a/vmlinuz", initrd = "/k,a/initrd" },
      disks = { config.disk { path = "/d/a,b.img,format=qcow2" } },
    }, { qmp = "/run/a,b/qmp.sock", console = "/run/a,b/console" })
    local args = cmd.args
    assert.equal("if=none,id=disk0,file=/d/a,,b.img,,format=qcow2,format=raw", arg_after(args, "-drive"))
    assert.equal("unix:/run/a,,b/qmp.sock", arg_after(args, "-qmp"))
    assert.equal("pipe,id=console,path=/run/a,,b/console", arg_after(args, "-chardev"))
    -- -kernel, -initrd and -append are not option strings: QEMU takes them verbatim
    assert.equal("/k,a/vmlinuz", arg_after(args, "-kernel"))
    assert.equal("/k,a/initrd", arg_after(args, "-initrd"))
    assert.equal("a,,b", qemu.escape("a,b"))
    assert.equal(",,,,", qemu.escape(",,"))
  end)

  it("boots EFI firmware from pflash", function()
    local args = qemu.command(vm {
      arch = "x86_64", boot = config.efi { firmware = "/fw/CODE,1.fd", vars = "/fw/VARS.fd" },
    }, paths).args
    local drives = {}
    for i, a in ipairs(args) do
      if a == "-drive" then drives[#drives + 1] = args[i + 1] end
    end
    assert.same({
      "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE,,1.fd",
      "if=pflash,format=raw,unit=1,file=/fw/VARS.fd",
    }, drives)
    assert.is_nil(arg_after(args, "-kernel"))
  end)

  it("gives QEMU memory in MiB", function()
    local args = qemu.command(vm { memory = "1.5G", boot = linux() }, paths).args
    assert.equal("1536", arg_after(args, "-m"))
  end)

  it("names the bare binary when QEMU is not on PATH", function()
    host.reset { path = "/nonexistent" }
    local cmd = qemu.command(vm { arch = "aarch64", boot = linux() }, paths)
    assert.equal("qemu-system-aarch64", cmd.file)
    assert.equal("qemu-system-aarch64", cmd.args[1])
  end)

  it("refuses an architecture it does not run", function()
    assert.has_error(function() qemu.command(vm { arch = "riscv64" }, paths) end,
      "arch: riscv64 is not supported (x86_64, aarch64)")
  end)

  it("gives only strings", function()
    for _, a in ipairs(qemu.command(vm { boot = linux() }, paths).args) do assert.is_string(a) end
  end)
end)
