-- The libvirt domain XML of a VM configuration (libvirt/domain.lua): valid
-- against libvirt's own schema (virt-xml-validate), read back with an XML
-- parser (xmllint) for what matters, and refused where libvirt cannot run
-- the VM yet.
local config = require "vmlua.config"
local domain = require "vmlua.libvirt.domain"
local helpers = require "support.helpers"
local runtime = require "vmlua.runtime"

local q = helpers.shell_quote

describe("libvirt domain XML", function()
  local dir
  local paths = { dir = "/run/v/dev" }

  setup(function()
    assert.is_true(os.execute("command -v virt-xml-validate >/dev/null"),
                   "virt-xml-validate is missing (libvirt-clients)")
    assert.is_true(os.execute("command -v xmllint >/dev/null"), "xmllint is missing (libxml2-utils)")
    dir = helpers.tmpdir()
  end)

  teardown(function() helpers.rmtree(dir) end)

  local count = 0
  -- Writes the XML to a file, checks it against libvirt's schema, and
  -- returns a query: x(xpath) -> what xmllint prints for it (strings are
  -- the parsed text, entities decoded).
  local function check(xml)
    assert.is_string(xml)
    count = count + 1
    local file = helpers.write(string.format("%s/%d.xml", dir, count), xml)
    local ok, out = helpers.sh("virt-xml-validate " .. q(file) .. " domain")
    assert(ok, out .. "\n" .. xml)
    return function(xpath)
      local p = assert(io.popen("xmllint --xpath " .. q(xpath) .. " " .. q(file) .. " 2>/dev/null"))
      local value = p:read("a")
      p:close()
      return (value:gsub("\n$", "")) -- xmllint ends a string with a newline
    end
  end

  local function vm(spec)
    return config.vm(spec, 2)
  end

  local function linux(extra)
    local spec = { kernel = "/k/vmlinuz", initrd = "/k/initrd.img", cmdline = "root=/dev/vda" }
    for k, v in pairs(extra or {}) do spec[k] = v end
    return config.linux(spec)
  end

  -- The QEMU arguments in <qemu:commandline>, in order.
  local function qemu_args(x)
    local args = {}
    for v in x("//*[local-name()='commandline']/*[local-name()='arg']/@value"):gmatch('value="([^"]*)"') do
      args[#args + 1] = v
    end
    return args
  end

  it("boots an x86_64 kernel on q35 with ACPI, virtio disks, a pty serial console and NAT forwards", function()
    local x = check(domain.xml(vm {
      name = "dev", arch = "x86_64", cpus = 2, memory = "1G", boot = linux(),
      disks = { config.disk { path = "/d/root.img" }, config.disk { path = "/d/data.qcow2", readonly = true } },
      net = { config.nat { forward = { [8080] = 80, [2222] = 22 }, udp = { [5353] = 53 } },
              config.nat { forward = { [2223] = 22 }, address = "0.0.0.0" } },
    }))
    assert.are.equal("qemu", x("string(/domain/@type)"))
    assert.are.equal("dev", x("string(/domain/name)"))
    assert.are.equal("MiB 1024", x("concat(/domain/memory/@unit, ' ', /domain/memory)"))
    assert.are.equal("2", x("string(/domain/vcpu)"))
    assert.are.equal("x86_64 q35 hvm",
      x("concat(/domain/os/type/@arch, ' ', /domain/os/type/@machine, ' ', /domain/os/type)"))
    assert.are.equal("/k/vmlinuz", x("string(/domain/os/kernel)"))
    assert.are.equal("/k/initrd.img", x("string(/domain/os/initrd)"))
    assert.are.equal("root=/dev/vda console=ttyS0 panic=-1", x("string(/domain/os/cmdline)"))
    assert.are.equal("0", x("count(/domain/os/loader)"))
    assert.are.equal("1", x("count(/domain/features/acpi)")) -- without it a graceful stop does nothing
    assert.are.equal("maximum", x("string(/domain/cpu/@mode)")) -- -cpu max, as qemu.lua under TCG
    assert.are.equal("destroy", x("string(/domain/on_reboot)")) -- a guest's reboot ends the VM
    assert.are.equal("destroy destroy", x("concat(/domain/on_poweroff, ' ', /domain/on_crash)"))
    -- disks: virtio, in order, with their formats, read-only where asked
    assert.are.equal("/d/root.img raw vda virtio 0",
      x("concat(//disk[1]/source/@file, ' ', //disk[1]/driver/@type, ' ', //disk[1]/target/@dev, ' ', "
        .. "//disk[1]/target/@bus, ' ', count(//disk[1]/readonly))"))
    assert.are.equal("/d/data.qcow2 qcow2 vdb 1",
      x("concat(//disk[2]/source/@file, ' ', //disk[2]/driver/@type, ' ', //disk[2]/target/@dev, ' ', "
        .. "count(//disk[2]/readonly))"))
    assert.are.equal("0", x("count(//disk/boot)"))
    -- the console libvirt 9.0 streams, and none of the slow defaults
    assert.are.equal("pty 0", x("concat(/domain/devices/serial/@type, ' ', /domain/devices/serial/target/@port)"))
    assert.are.equal("pty serial",
      x("concat(/domain/devices/console/@type, ' ', /domain/devices/console/target/@type)"))
    assert.are.equal("none", x("string(/domain/devices/memballoon/@model)"))
    assert.are.equal("none", x("string(/domain/devices/controller[@type='usb']/@model)"))
    assert.are.equal("0", x("count(//graphics | //video | //interface | //sound)"))
    -- NAT through QEMU's own arguments (libvirt 9.0 drops <portForward>), on fixed high slots
    assert.are.same({
      "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80,"
        .. "hostfwd=udp:127.0.0.1:5353-:53",
      "-device", "virtio-net-pci,netdev=net0,bus=pcie.0,addr=0x10",
      "-netdev", "user,id=net1,hostfwd=tcp:0.0.0.0:2223-:22",
      "-device", "virtio-net-pci,netdev=net1,bus=pcie.0,addr=0x11",
    }, qemu_args(x))
    assert.are.equal(domain.namespace, x("namespace-uri(//*[local-name()='commandline'])"))
  end)

  it("boots an aarch64 kernel on virt with cortex-a72, and ACPI through the firmware", function()
    local x = check(domain.xml(vm {
      name = "arm", arch = "aarch64", memory = "512M", boot = linux { firmware = "/fw/QEMU_EFI.fd" },
    }))
    assert.are.equal("aarch64 virt", x("concat(/domain/os/type/@arch, ' ', /domain/os/type/@machine)"))
    assert.are.equal("custom exact cortex-a72 forbid",
      x("concat(/domain/cpu/@mode, ' ', /domain/cpu/@match, ' ', /domain/cpu/model, ' ', /domain/cpu/model/@fallback)"))
    -- -bios FIRMWARE, as qemu.lua's linux_firmware
    assert.are.equal("rom yes /fw/QEMU_EFI.fd",
      x("concat(/domain/os/loader/@type, ' ', /domain/os/loader/@readonly, ' ', /domain/os/loader)"))
    assert.are.equal("root=/dev/vda console=ttyAMA0 panic=-1", x("string(/domain/os/cmdline)"))
    -- libvirt refuses <acpi/> on aarch64 without flash firmware, and then
    -- passes -no-acpi: a later -machine acpi=on gives the guest its power button
    assert.are.equal("0", x("count(/domain/features/acpi)"))
    assert.are.same({ "-machine", "acpi=on" }, qemu_args(x))
    assert.are.equal("0", x("count(/domain/features/gic)"))
  end)

  it("boots an aarch64 kernel without firmware, and more than 8 CPUs on GICv3", function()
    local x = check(domain.xml(vm {
      name = "arm", arch = "aarch64", cpus = 9, boot = linux { firmware = false },
    }))
    assert.are.equal("0", x("count(/domain/os/loader)"))
    assert.are.equal("0", x("count(/domain/features/acpi)"))
    assert.are.same({}, qemu_args(x))
    assert.are.equal("0", x("count(//*[local-name()='commandline'])"))
    assert.are.equal("3", x("string(/domain/features/gic/@version)"))
  end)

  it("asks for KVM with the host's CPU when opts.accel is kvm", function()
    local x = check(domain.xml(vm { name = "k", arch = "x86_64", boot = linux() }, { accel = "kvm" }))
    assert.are.equal("kvm host-passthrough", x("concat(/domain/@type, ' ', /domain/cpu/@mode)"))
    x = check(domain.xml(vm { name = "k", arch = "aarch64", boot = linux { firmware = false } }, { accel = "kvm" }))
    assert.are.equal("kvm host-passthrough host",
      x("concat(/domain/@type, ' ', /domain/cpu/@mode, ' ', /domain/features/gic/@version)"))
    local xml, err = domain.xml(vm { name = "k", arch = "x86_64", boot = linux() }, { accel = "xen" })
    assert.is_nil(xml)
    assert.matches('accel: "xen" is not an accelerator', err, 1, true)
  end)

  it("boots EFI firmware from flash with its variable store, and the disks in their order", function()
    local cfg = vm {
      name = "efi", arch = "x86_64", reboot = true,
      boot = config.efi { firmware = "/fw/OVMF_CODE_4M.fd", vars = "/v/efi vars.fd" },
      disks = { config.disk { path = "/d/boot.img", readonly = true }, config.disk { path = "/d/data.img" } },
    }
    cfg.boot.template = "/fw/OVMF_VARS_4M.fd" -- as efi.resolve finds it on a host with OVMF
    local x = check(domain.xml(cfg))
    assert.are.equal("pflash yes /fw/OVMF_CODE_4M.fd",
      x("concat(/domain/os/loader/@type, ' ', /domain/os/loader/@readonly, ' ', /domain/os/loader)"))
    assert.are.equal("/fw/OVMF_VARS_4M.fd|/v/efi vars.fd",
      x("concat(/domain/os/nvram/@template, '|', /domain/os/nvram)"))
    assert.are.equal("0", x("count(/domain/os/kernel | /domain/os/cmdline)"))
    assert.are.equal("1 2", x("concat(//disk[1]/boot/@order, ' ', //disk[2]/boot/@order)"))
    assert.are.equal("1", x("count(/domain/features/acpi)"))
    assert.are.equal("restart", x("string(/domain/on_reboot)")) -- reboot = true
  end)

  it("puts an ephemeral disk's overlay, an overlay disk and the cloud-init seed (read-only, last) in place", function()
    local cfg = vm {
      name = "ci", arch = "x86_64", boot = linux(),
      disks = { config.disk { path = "/d/root.img", ephemeral = true },
                config.disk { path = "/d/work.qcow2", base = "/d/base.img" } },
      cloudinit = config.cloudinit { user_data = "#cloud-config\n" },
    }
    cfg.cloudinit.seed = "/cache/seed.iso" -- made at start
    local x = check(domain.xml(cfg, { paths = paths }))
    assert.are.equal(require("vmlua.runtime").overlay(paths, 1) .. " qcow2 0",
      x("concat(//disk[1]/source/@file, ' ', //disk[1]/driver/@type, ' ', count(//disk[1]/readonly))"))
    assert.are.equal("/d/work.qcow2 qcow2 vdb", x("concat(//disk[2]/source/@file, ' ', //disk[2]/driver/@type, "
      .. "' ', //disk[2]/target/@dev)"))
    assert.are.equal("/cache/seed.iso raw vdc 1",
      x("concat(//disk[3]/source/@file, ' ', //disk[3]/driver/@type, ' ', //disk[3]/target/@dev, ' ', "
        .. "count(//disk[3]/readonly))"))
  end)

  it("names disks past the 26th as libvirt does, and maps every path through opts.files", function()
    local list = {}
    for i = 1, 28 do list[i] = config.disk { path = "/d/" .. i .. ".img" } end
    local cfg = vm { name = "many", arch = "aarch64", disks = list,
                     boot = linux { firmware = "/fw/QEMU_EFI.fd" } }
    local x = check(domain.xml(cfg, { files = function(p) return "/pool" .. p end,
                                      emulator = "/usr/bin/qemu-system-aarch64" }))
    assert.are.equal("vdz vdaa vdab",
      x("concat(//disk[26]/target/@dev, ' ', //disk[27]/target/@dev, ' ', //disk[28]/target/@dev)"))
    assert.are.equal("/pool/d/28.img", x("string(//disk[28]/source/@file)"))
    assert.are.equal("/pool/k/vmlinuz /pool/k/initrd.img /pool/fw/QEMU_EFI.fd",
      x("concat(/domain/os/kernel, ' ', /domain/os/initrd, ' ', /domain/os/loader)"))
    assert.are.equal("/usr/bin/qemu-system-aarch64", x("string(/domain/devices/emulator)"))
  end)

  it("escapes names, paths, the command line and QEMU arguments: they come back as given", function()
    local hostile = [[/t/a&b<c>'d"e]] .. "\ttab &amp; ]]> <!-- é"
    local cfg = vm {
      name = "dev", arch = "x86_64",
      boot = config.linux { kernel = hostile .. "/vmlinuz", initrd = hostile .. "/initrd",
                            cmdline = { [[a='<b>' c="&d"]] } },
      disks = { config.disk { path = hostile .. "/root.img" } },
      qemu = { "-fw_cfg", [[name=opt/x,string='"<&>"']] },
    }
    cfg.name = [[dev'"<&>]] -- the XML must hold whatever it is given
    local x = check(domain.xml(cfg))
    assert.are.equal(cfg.name, x("string(/domain/name)"))
    assert.are.equal(hostile .. "/vmlinuz", x("string(/domain/os/kernel)"))
    assert.are.equal(hostile .. "/initrd", x("string(/domain/os/initrd)"))
    assert.are.equal([[a='<b>' c="&d" console=ttyS0 panic=-1]], x("string(/domain/os/cmdline)"))
    assert.are.equal(hostile .. "/root.img", x("string(//disk[1]/source/@file)"))
    assert.are.equal([[name=opt/x,string='"<&>"']],
      x("string(//*[local-name()='commandline']/*[local-name()='arg'][2]/@value)"))
  end)

  it("refuses what XML cannot carry, naming the field", function()
    for _, bad in ipairs { "\1", "\n", "\r", "\127" } do
      local cfg = vm { name = "dev", arch = "x86_64", boot = linux { kernel = "/k/" .. bad .. "vmlinuz" } }
      local xml, err = domain.xml(cfg)
      assert.is_nil(xml)
      assert.matches("libvirt_domain_spec.lua:%d+: boot.kernel: contains a control character", err)
    end
    local cfg = vm { name = "dev", arch = "x86_64", boot = linux(), disks = { config.disk { path = "/d/\xff.img" } } }
    local xml, err = domain.xml(cfg)
    assert.is_nil(xml)
    assert.matches("libvirt_domain_spec.lua:%d+: disks%[1%]%.path: is not UTF%-8", err)
  end)

  it("gives the guest agent a virtio-serial channel, which libvirt itself connects to", function()
    assert.are.equal("", check(domain.xml(vm { name = "dev", arch = "x86_64", boot = linux() }))("//channel"))
    local x = check(domain.xml(vm { name = "dev", arch = "x86_64", boot = linux(), agent = true }))
    assert.are.equal(' type="unix"', x("//channel/@type"))
    assert.are.equal(' type="virtio"', x("//channel/target/@type"))
    assert.are.equal(' name="org.qemu.guest_agent.0"', x("//channel/target/@name"))
  end)

  it("joins a LAN's switch through QEMU's own arguments, on the next fixed slot", function()
    local lan = require "vmlua.lan"
    local x = check(domain.xml(vm { name = "dev", arch = "x86_64", boot = linux(),
                                    net = { config.nat {}, config.lan { name = "lab" } } }))
    local p = lan.paths("lab")
    assert.are.same({
      "-netdev", "user,id=net0",
      "-device", "virtio-net-pci,netdev=net0,bus=pcie.0,addr=0x10",
      "-chardev", "file,id=net1-hold,path=" .. p.hold,
      "-netdev", "vde,id=net1,sock=" .. p.switch,
      "-device", "virtio-net-pci,netdev=net1,mac=" .. lan.mac("dev", "lab") .. ",bus=pcie.0,addr=0x11",
    }, qemu_args(x))
  end)

  it("gives each share a virtiofsd that libvirt runs, and the guest shared memory for it", function()
    assert.are.equal("", check(domain.xml(vm { name = "dev", arch = "x86_64", boot = linux() }))("//memoryBacking"))
    local x = check(domain.xml(vm { name = "dev", arch = "x86_64", boot = linux(), shares = {
      config.share { host = "/srv/src", tag = "src" }, config.share { host = "/srv/a&b", tag = "data" } } }))
    assert.are.equal(' type="memfd"', x("//memoryBacking/source/@type"))
    assert.are.equal(' mode="shared"', x("//memoryBacking/access/@mode"))
    assert.are.equal("2", x("count(//filesystem[@type='mount'][driver/@type='virtiofs'])"))
    assert.are.equal(' dir="/srv/src"', x("//filesystem[1]/source/@dir"))
    assert.are.equal(' dir="src"', x("//filesystem[1]/target/@dir"))
    assert.are.equal(' dir="/srv/a&amp;b"', x("//filesystem[2]/source/@dir"))
    assert.are.equal(' dir="data"', x("//filesystem[2]/target/@dir"))
    assert.matches('^ path="/[^"]*virtiofsd"$', x("//filesystem[1]/binary/@path"))
  end)

  it("connects a read-only share to vmlua's own virtiofsd, which libvirt 9.0 cannot make read-only", function()
    local shares = { config.share { host = "/srv/src", tag = "src" },
                     config.share { host = "/srv/ro", tag = "ro", readonly = true } }
    local cfg = vm { name = "dev", arch = "x86_64", boot = linux(), shares = shares }
    local x = check(domain.xml(cfg, { paths = paths }))
    assert.are.equal(' socket="' .. runtime.share_socket(paths, 2) .. '"', x("//filesystem[2]/source/@socket"))
    assert.are.equal("", x("//filesystem[2]/binary | //filesystem[2]/source/@dir"))
    assert.are.equal(' dir="ro"', x("//filesystem[2]/target/@dir"))
    assert.are.equal(' dir="/srv/src"', x("//filesystem[1]/source/@dir"))
    assert.are.equal(' mode="shared"', x("//memoryBacking/access/@mode"))
  end)

  describe("refuses what the libvirt backend cannot run yet, naming the field", function()
    local cases = {
      { "shares[1]", "a share is a directory of this machine, and the VM runs on another host "
        .. "%(qemu%+ssh://h/system%): virtio%-fs shares there are",
        function(s)
          s.shares = { config.share { host = "/tmp", tag = "src" } }
          s.backend = config.libvirt { uri = "qemu+ssh://h/system" }
        end },
      { "net[2]", "LAN lab is a switch on this machine, and the VM runs on another host %(qemu%+ssh://h/system%): "
        .. "LANs there are",
        function(s)
          s.net = { config.nat {}, config.lan { name = "lab" } }
          s.backend = config.libvirt { uri = "qemu+ssh://h/system" }
        end },
    }
    for _, case in ipairs(cases) do
      local field, what, change = table.unpack(case)
      it(field .. ": " .. what:gsub("%%", ""), function()
        local spec = { name = "dev", arch = "x86_64", boot = linux() }
        change(spec)
        local xml, err = domain.xml(vm(spec))
        assert.is_nil(xml)
        assert.matches("^[^:]*libvirt_domain_spec%.lua:%d+: " .. field:gsub("[%[%]]", "%%%0") .. ": " .. what, err)
        assert.matches(" not supported on the libvirt backend yet$", err)
      end)
    end
  end)
end)
