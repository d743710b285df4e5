local core = require "vmlua.core"
local host = require "vmlua.host"
local size = require "vmlua.size"
local validate = require "vmlua.validate"
local runtime = require "vmlua.runtime"
local helpers = require "support.helpers"

local HEAD = 'local vmlua = require "vmlua"\n'
-- root opens files whatever their mode: those specs are pending as root
local it_not_root = core.getuid() == 0 and pending or it

describe("validate.vm", function()
  local dir, def, facts

  before_each(function()
    host.reset()
    facts = host.facts()
    dir = helpers.tmpdir()
    def = dir .. "/def.lua"
    helpers.fixtures(dir)
  end)

  after_each(function()
    host.reset()
    helpers.rmtree(dir)
  end)

  -- The configuration of a definition whose body is `src`; the VM is
  -- returned from a local (see config_spec's "tail calls").
  local function cfg(src)
    return helpers.vm(dir, HEAD .. "local r = " .. src .. "\nreturn r").config
  end

  -- The first problem validate.vm finds in `src`.
  local function problem(src)
    local ok, msg, all = validate.vm(cfg(src))
    assert.is_nil(ok, "the definition is valid")
    assert.equal(msg, all[1])
    return msg
  end

  local BOOT = 'boot = vmlua.linux { kernel = "vmlinuz", initrd = "initrd.img" }'

  it("accepts a valid definition", function()
    assert.is_true(validate.vm(cfg('vmlua.vm {\n  ' .. BOOT .. ',\n  disks = { vmlua.disk { path = "root.img" } },\n'
      .. '  net = { vmlua.nat { forward = { [2222] = 22 } } },\n  console = vmlua.console { log = "dev.log" },\n}')))
  end)

  describe("cpus", function()
    it("needs at least one", function()
      assert.equal(def .. ":2: cpus: 0 is too few; a VM needs at least 1 CPU",
        problem('vmlua.vm { cpus = 0, ' .. BOOT .. ' }'))
      assert.equal(def .. ":2: cpus: -2 is too few; a VM needs at least 1 CPU",
        problem('vmlua.vm { cpus = -2, ' .. BOOT .. ' }'))
    end)

    it("at most what the host has", function()
      local n = facts.cpus + 1
      if n > 288 then return end
      assert.equal(string.format("%s:2: cpus: %d is more than this host has (%d)", def, n, facts.cpus),
        problem(string.format('vmlua.vm { cpus = %d, %s }', n, BOOT)))
    end)

    it("at most what the machine type allows", function()
      assert.equal(def .. ":2: cpus: 600 is more than QEMU's q35 machine allows (288)",
        problem('vmlua.vm { arch = "x86_64", cpus = 600, ' .. BOOT .. ' }'))
      assert.equal(def .. ":2: cpus: 600 is more than QEMU's virt machine allows (512)",
        problem('vmlua.vm { arch = "aarch64", cpus = 600, ' .. BOOT .. ' }'))
    end)
  end)

  describe("name", function()
    -- sun_path holds 108 bytes on Linux, with the final NUL; guard.sock is the longest socket.
    local MAX = core.max_socket_path or 107
    local function longest(name)
      return runtime.root() .. "/" .. name .. "/control.sock"
    end

    it("is refused when its socket paths do not fit in a Unix socket address", function()
      local fits = MAX - #longest("")
      assert.is_true(fits > 0, "the runtime directory " .. runtime.root() .. " is itself too long")
      local ok = validate.vm(cfg(string.format('vmlua.vm { name = %q, %s }', string.rep("n", fits), BOOT)))
      assert.is_true(ok)
      local name = string.rep("n", fits + 1)
      assert.equal(string.format("%s:2: name: %q is too long: its socket %s would be %d bytes, and a Unix "
        .. "socket path holds at most %d; use a name of at most %d characters, or set VMLUA_RUNTIME_DIR "
        .. "to a shorter directory", def, name, longest(name), MAX + 1, MAX, fits),
        problem(string.format('vmlua.vm { name = %q, %s }', name, BOOT)))
      name = string.rep("n", 200)
      assert.matches(':2: name: "n+" is too long: its socket .- would be ' .. #longest(name) .. " bytes",
        problem(string.format('vmlua.vm { name = %q, %s }', name, BOOT)))
    end)

    it("is refused when it is not a plain file name, even if set after vmlua.vm{}", function()
      local c = cfg('vmlua.vm { ' .. BOOT .. ' }')
      c.name = ".."
      local _, msg = validate.vm(c)
      assert.equal(def .. ':2: name: ".." must start with a letter or a digit', msg)
    end)
  end)

  describe("memory", function()
    it("at least 64 MiB", function()
      assert.equal(def .. ":2: memory: 32 MiB is less than the minimum (64 MiB)",
        problem('vmlua.vm { memory = "32M", ' .. BOOT .. ' }'))
      assert.is_true(validate.vm(cfg('vmlua.vm { memory = "64M", ' .. BOOT .. ' }')))
    end)

    it("at most what the host has", function()
      local m = facts.memory + size.parse("1G")
      assert.equal(string.format("%s:2: memory: %s is more than this host has (%s)", def, size.format(m),
        size.format(facts.memory)), problem(string.format('vmlua.vm { memory = %d, %s }', m, BOOT)))
    end)
  end)

  describe("arch", function()
    it("must be one this backend runs", function()
      assert.equal(def .. ":2: arch: riscv64 is not supported (x86_64, aarch64)",
        problem('vmlua.vm { arch = "riscv64", ' .. BOOT .. ' }'))
    end)

    it("needs qemu-system-ARCH on PATH", function()
      local c = cfg('vmlua.vm { arch = "aarch64", ' .. BOOT .. ' }')
      host.reset { path = dir }
      local _, msg = validate.vm(c)
      assert.equal(def .. ":2: arch: aarch64 needs qemu-system-aarch64, which is not on PATH "
        .. "(Debian package qemu-system-arm)", msg)
      c = cfg('vmlua.vm { arch = "x86_64", ' .. BOOT .. ' }')
      _, msg = validate.vm(c)
      assert.equal(def .. ":2: arch: x86_64 needs qemu-system-x86_64, which is not on PATH "
        .. "(Debian package qemu-system-x86)", msg)
    end)
  end)

  describe("boot", function()
    it("is required", function()
      assert.equal(def .. ":2: boot: missing; give boot = vmlua.linux{ kernel = ... } or vmlua.efi{}",
        problem('vmlua.vm {}'))
    end)

    it("needs a kernel that exists, at the line of vmlua.linux", function()
      assert.equal(def .. ":4: boot.kernel: " .. dir .. "/nope does not exist",
        problem('vmlua.vm {\n  cpus = 1,\n  boot = vmlua.linux { kernel = "nope" },\n}'))
    end)

    it("needs files, not directories or empty files", function()
      assert.equal(def .. ":2: boot.kernel: " .. dir .. " is a directory, not a file",
        problem('vmlua.vm { boot = vmlua.linux { kernel = "." } }'))
      helpers.write(dir .. "/empty", "")
      assert.equal(def .. ":2: boot.initrd: " .. dir .. "/empty is empty",
        problem('vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz", initrd = "empty" } }'))
      assert.equal(def .. ":2: boot.initrd: " .. dir .. "/no-initrd does not exist",
        problem('vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz", initrd = "no-initrd" } }'))
    end)

    it_not_root("needs files it can read", function()
      assert(core.chmod(dir .. "/initrd.img", 0))
      assert.equal(def .. ":2: boot.initrd: " .. dir .. "/initrd.img cannot be opened for reading: Permission denied",
        problem('vmlua.vm { ' .. BOOT .. ' }'))
    end)

    it("needs EFI firmware", function()
      local c = cfg('vmlua.vm { arch = "x86_64", boot = vmlua.efi {} }')
      c.boot.firmware = nil -- as on a host without OVMF
      local _, msg = validate.vm(c)
      assert.equal(def .. ":2: boot.firmware: no EFI firmware found for x86_64; install the Debian package ovmf, "
        .. "or give firmware = PATH", msg)
      assert.equal(def .. ":2: boot.firmware: " .. dir .. "/code.fd does not exist",
        problem('vmlua.vm { boot = vmlua.efi { firmware = "code.fd" } }'))
      -- a missing store is made from the firmware's template, when it has one (efi_spec.lua)
      assert.equal(def .. ":2: boot.vars: " .. dir .. "/vars.fd does not exist, and no variable store template "
        .. "was found for " .. dir .. "/vmlinuz to make it from (a QEMU firmware descriptor's nvram-template, or a "
        .. "file beside it named with VARS for CODE); give vars = PATH of an existing store",
        problem('vmlua.vm { arch = "x86_64", boot = vmlua.efi { firmware = "vmlinuz", vars = "vars.fd" } }'))
    end)
  end)

  describe("disks", function()
    it("must exist, at the line of vmlua.disk", function()
      assert.equal(def .. ":5: disks[2].path: " .. dir .. "/data.img does not exist",
        problem('vmlua.vm {\n  ' .. BOOT .. ',\n  disks = { vmlua.disk { path = "root.img" },\n'
          .. '    vmlua.disk { path = "data.img" } },\n}'))
    end)

    it("must be files or block devices", function()
      assert.equal(def .. ":2: disks[1].path: " .. dir .. " is a directory, not a file",
        problem('vmlua.vm { ' .. BOOT .. ', disks = { vmlua.disk { path = "." } } }'))
      assert.equal(def .. ":2: disks[1].path: /dev/null is not a regular file",
        problem('vmlua.vm { ' .. BOOT .. ', disks = { vmlua.disk { path = "/dev/null" } } }'))
    end)

    it_not_root("must open read-write unless read-only", function()
      assert(core.chmod(dir .. "/root.img", tonumber("444", 8)))
      assert.equal(def .. ":2: disks[1].path: " .. dir .. "/root.img cannot be opened for reading and writing: "
        .. "Permission denied", problem('vmlua.vm { ' .. BOOT .. ', disks = { vmlua.disk { path = "root.img" } } }'))
      assert.is_true(validate.vm(cfg('vmlua.vm { ' .. BOOT .. ', disks = { vmlua.disk { path = "root.img", '
        .. 'readonly = true } } }')))
    end)

    it("must not be given twice, even through another name", function()
      assert(os.execute("ln -s root.img " .. helpers.shell_quote(dir .. "/link.img")))
      assert.equal(def .. ":3: disks[2].path: " .. dir .. "/link.img is the same file as disks[1] (" .. def .. ":2)",
        problem('vmlua.vm { ' .. BOOT .. ', disks = { vmlua.disk { path = "root.img" } } }\n'
          .. 'r:add(vmlua.disk { path = "link.img" })'))
    end)

    it("must have the format given", function()
      helpers.write(dir .. "/disk.qcow2", "QFI\251" .. string.rep("\0", 100))
      helpers.write(dir .. "/disk.img", "QFI\251" .. string.rep("\0", 100))
      assert.equal(def .. ":2: disks[1].format: " .. dir .. '/disk.img is a qcow2 image, but the format is raw; '
        .. 'give format = "qcow2"',
          problem('vmlua.vm { ' .. BOOT .. ', disks = { vmlua.disk { path = "disk.img" } } }'))
      assert.equal(def .. ":2: disks[1].format: " .. dir .. "/root.img is not a qcow2 image",
        problem('vmlua.vm { ' .. BOOT .. ', disks = { vmlua.disk { path = "root.img", format = "qcow2" } } }'))
      assert.is_true(validate.vm(cfg('vmlua.vm { ' .. BOOT .. ', disks = { vmlua.disk { path = "disk.qcow2" } } }')))
    end)
  end)

  describe("net", function()
    it("forwards each host port once", function()
      assert.equal(def .. ":5: net[2].forward[2222]: host port 2222 is already forwarded by net[1] ("
        .. def .. ":4)",
        problem('vmlua.vm {\n  ' .. BOOT .. ',\n  net = { vmlua.nat { forward = { [2222] = 22 } },\n'
          .. '    vmlua.nat { forward = { [8080] = 80, [2222] = 23 }, address = "0.0.0.0" } },\n}'))
    end)
  end)

  describe("console", function()
    it("logs into a directory that exists", function()
      assert.equal(def .. ":4: console.log: the directory " .. dir .. "/logs does not exist",
        problem('vmlua.vm {\n  ' .. BOOT .. ',\n  console = vmlua.console { log = "logs/dev.log" } }'))
    end)

    it("logs into a file, not a directory", function()
      assert.equal(def .. ":2: console.log: " .. dir .. " is a directory, not a file",
        problem('vmlua.vm { ' .. BOOT .. ', console = vmlua.console { log = "." } }'))
    end)
  end)

  it("returns the first problem, and the list of all in field order", function()
    local ok, first, all = validate.vm(cfg('vmlua.vm {\n  cpus = 0,\n  memory = "32M",\n'
      .. '  disks = { vmlua.disk { path = "nope.img" } },\n}'))
    assert.is_nil(ok)
    assert.same({
      def .. ":2: cpus: 0 is too few; a VM needs at least 1 CPU",
      def .. ":2: memory: 32 MiB is less than the minimum (64 MiB)",
      def .. ":2: boot: missing; give boot = vmlua.linux{ kernel = ... } or vmlua.efi{}",
      def .. ":5: disks[1].path: " .. dir .. "/nope.img does not exist",
    }, all)
    assert.equal(all[1], first)
  end)

  it("is what vm:validate returns", function()
    local v = helpers.vm(dir, HEAD .. "local r = vmlua.vm { cpus = 0, " .. BOOT .. " }\nreturn r")
    local ok, msg = v:validate()
    assert.is_nil(ok)
    assert.equal(def .. ":2: cpus: 0 is too few; a VM needs at least 1 CPU", msg)
  end)
end)

describe("validate.all", function()
  local dir, def

  before_each(function()
    dir = helpers.tmpdir()
    def = dir .. "/def.lua"
    helpers.fixtures(dir)
  end)

  after_each(function()
    helpers.rmtree(dir)
  end)

  it("refuses two VMs with one name or one host port", function()
    local ok, a, b = helpers.run(dir, HEAD .. [[
local boot = vmlua.linux { kernel = "vmlinuz" }
local a = vmlua.vm { name = "x", boot = boot, net = { vmlua.nat { forward = { [2222] = 22 } } } }
local b = vmlua.vm { name = "x", boot = boot, net = { vmlua.nat { forward = { [2222] = 22 } } } }
return a, b]])
    assert.is_true(ok, a)
    local valid, first, all = validate.all({ a.config, b.config })
    assert.is_nil(valid)
    assert.same({
      def .. ':4: name: "x" is already the name of the VM defined at ' .. def .. ":3",
      def .. ":4: net[1].forward[2222]: host port 2222 is already forwarded by VM x (" .. def .. ":3)",
    }, all)
    assert.equal(all[1], first)
    assert.is_true(validate.all({ a.config }))
  end)
end)
