local core = require "vmlua.core"
local lfs = require "lfs"
local config = require "vmlua.config"
local host = require "vmlua.host"
local helpers = require "support.helpers"

-- Every definition below is a file DIR/def.lua; its first line is line 1.
local HEAD = 'local vmlua = require "vmlua"\n'

describe("config", function()
  local dir, def

  before_each(function()
    dir = helpers.tmpdir()
    def = dir .. "/def.lua"
    helpers.fixtures(dir)
  end)

  after_each(function()
    helpers.rmtree(dir)
  end)

  -- `return vmlua.x{...}` is a tail call, which hides the caller's line
  -- from a Lua function (see "tail calls" below): these definitions keep
  -- the result in a local first.
  local function notail(src)
    if src:match("^return ") then return (src:gsub("^return ", "local r = ")) .. "\nreturn r" end
    return src
  end
  local function vm(src) return helpers.vm(dir, HEAD .. notail(src)) end
  local function err(src) return helpers.error_of(dir, HEAD .. notail(src)) end

  describe("vmlua.vm", function()
    it("fills in the defaults", function()
      local cfg = vm('return vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" } }').config
      assert.equal("def", cfg.name)
      assert.equal(host.facts().arch, cfg.arch)
      assert.equal(1, cfg.cpus)
      assert.equal(512 * 1024 * 1024, cfg.memory)
      assert.same({}, cfg.disks)
      assert.same({}, cfg.net)
      assert.equal("console", cfg.console.kind)
      assert.is_nil(cfg.console.log)
      assert.is_false(cfg.console.stdio)
      assert.same({ source = def, short = def, line = 2 }, cfg.where)
    end)

    it("keeps what it is given, normalized", function()
      local cfg = vm([[
return vmlua.vm {
  name = "web-1.test_x",
  arch = "aarch64",
  cpus = 2.0,
  memory = "1.5G",
  boot = vmlua.linux { kernel = "vmlinuz", initrd = "initrd.img", cmdline = "root=/dev/vda rw" },
  disks = { vmlua.disk { path = "root.img" } },
  net = vmlua.nat { forward = { [2222] = 22 } },
  console = vmlua.console "stdio",
}]]).config
      assert.equal("web-1.test_x", cfg.name)
      assert.equal("aarch64", cfg.arch)
      assert.equal(2, cfg.cpus)
      assert.equal("integer", math.type(cfg.cpus))
      assert.equal(1536 * 1024 * 1024, cfg.memory)
      assert.same({ "root=/dev/vda", "rw", "console=ttyAMA0", "panic=-1" }, cfg.boot.cmdline)
      assert.equal(dir .. "/vmlinuz", cfg.boot.kernel)
      assert.equal(dir .. "/initrd.img", cfg.boot.initrd)
      assert.equal(7, cfg.boot.where.line)
      assert.equal(1, #cfg.disks)
      assert.equal(8, cfg.disks[1].where.line)
      assert.equal(1, #cfg.net) -- one device stands for a list of one
      assert.is_true(cfg.console.stdio)
      assert.equal(10, cfg.console.where.line)
    end)

    it("names the VM after its file, sanitised", function()
      local ok, v = helpers.run(dir, HEAD .. notail('return vmlua.vm {}'), "my dev box!.lua")
      assert.is_true(ok, v)
      assert.equal("my-dev-box", v.config.name)
      ok, v = helpers.run(dir, HEAD .. notail('return vmlua.vm {}'), "---.lua")
      assert.is_true(ok, v)
      assert.equal("vm", v.config.name)
    end)

    it("names the VM 'vm' and resolves against the current directory without a file", function()
      local chunk = assert(load(HEAD .. notail('return vmlua.vm { boot = vmlua.linux { kernel = "k" } }'),
        "=(command line)"))
      local cfg = chunk().config
      assert.equal("vm", cfg.name)
      assert.same({ short = "(command line)", line = 2 }, cfg.where)
      assert.equal(lfs.currentdir() .. "/k", cfg.boot.kernel)
    end)

    it("refuses unknown fields, suggesting the closest", function()
      -- a call over several lines is located at its first line
      assert.equal(def .. ':2: memroy: unknown field; did you mean "memory"?',
        err('return vmlua.vm {\n  memroy = "1G",\n}'))
      assert.equal(def .. ':2: cpu: unknown field; did you mean "cpus"?', err('return vmlua.vm { cpu = 2 }'))
      assert.equal(def .. ':2: mem: unknown field; did you mean "memory"?', err('return vmlua.vm { mem = 2 }'))
      assert.equal(def .. ':2: disk: unknown field; did you mean "disks"?', err('return vmlua.vm { disk = {} }'))
      -- (every field, in order: the list grows with the definition)
      local want = def .. ':2: colour: unknown field; vmlua.vm takes name, arch, accel, cpus, memory, boot, disks, '
        .. 'net, console'
      assert.equal(want, err('return vmlua.vm { colour = "red" }'):sub(1, #want))
      want = def .. ':2: [1]: unexpected list item; vmlua.vm takes named fields (name, arch, accel, cpus, '
        .. 'memory, boot, disks, net, console'
      assert.equal(want, err('return vmlua.vm { "dev" }'):sub(1, #want))
    end)

    describe("accel", function()
      local getenv, env = os.getenv, {}
      before_each(function()
        env = { VMLUA_ACCEL = false }
        os.getenv = function(name) -- luacheck: ignore 122 (the spec plays the environment)
          if env[name] ~= nil then return env[name] or nil end
          return getenv(name)
        end
      end)
      after_each(function() os.getenv = getenv end) -- luacheck: ignore 122

      it("is chosen by vmlua unless the definition or VMLUA_ACCEL asks", function()
        local cfg = vm('return vmlua.vm {}').config
        assert.is_nil(cfg.accel)
        assert.is_nil(cfg.accel_by)
        cfg = vm('return vmlua.vm { accel = "tcg" }').config
        assert.equal("tcg", cfg.accel)
        assert.equal("accel", cfg.accel_by)
        env.VMLUA_ACCEL = "kvm"
        cfg = vm('return vmlua.vm { accel = "tcg" }').config
        assert.equal("kvm", cfg.accel)
        assert.equal("VMLUA_ACCEL", cfg.accel_by)
        env.VMLUA_ACCEL = ""
        assert.is_nil(vm('return vmlua.vm {}').config.accel)
      end)

      it("refuses an unknown one at the user's line, listing the valid ones", function()
        assert.equal(def .. ':2: accel: "kvmm" is not an accelerator; did you mean "kvm"? (one of "kvm", "hvf", '
          .. '"tcg")', err('return vmlua.vm { accel = "kvmm" }'))
        assert.equal(def .. ':2: accel: "KVM" is not an accelerator; did you mean "kvm"? (one of "kvm", "hvf", '
          .. '"tcg")', err('return vmlua.vm { accel = "KVM" }'))
        assert.equal(def .. ':2: accel: "xen" is not an accelerator; use one of "kvm", "hvf", "tcg"',
          err('return vmlua.vm { accel = "xen" }'))
        assert.equal(def .. ':2: accel: expected one of "kvm", "hvf", "tcg", got boolean true',
          err('return vmlua.vm { accel = true }'))
        assert.equal(def .. ':2: acel: unknown field; did you mean "accel"?', err('return vmlua.vm { acel = "kvm" }'))
      end)

      it("refuses an unknown VMLUA_ACCEL at the line of each VM", function()
        env.VMLUA_ACCEL = "tgc"
        assert.equal(def .. ':2: accel: VMLUA_ACCEL: "tgc" is not an accelerator; did you mean "tcg"? (one of '
          .. '"kvm", "hvf", "tcg")', err('return vmlua.vm {}'))
      end)
    end)

    it("refuses wrong types", function()
      assert.equal(def .. ':2: vm: expected a table like { memory = "1G", boot = vmlua.linux{...} }, got string "dev"',
        err('return vmlua.vm "dev"'))
      assert.equal(def .. ':2: cpus: expected a whole number, got string "two"',
        err('return vmlua.vm { cpus = "two" }'))
      assert.equal(def .. ':2: cpus: 1.5 is not a whole number', err('return vmlua.vm { cpus = 1.5 }'))
      assert.equal(def .. ':2: memory: expected a number of bytes or a string like "512M" or "2G", got boolean true',
        err('return vmlua.vm { memory = true }'))
      assert.equal(def .. ':2: memory: "2Q" is not a size: unknown unit "Q" (use K, M, G or T, e.g. "512M", "2G")',
        err('return vmlua.vm { memory = "2Q" }'))
      assert.equal(def .. ':2: name: expected a string, got number 7', err('return vmlua.vm { name = 7 }'))
      assert.equal(def .. ':2: arch: expected a string such as "x86_64" or "aarch64", got boolean false',
        err('return vmlua.vm { arch = false }'))
      assert.equal(def .. ':2: arch: "../x" is not an architecture name; expected "x86_64" or "aarch64"',
        err('return vmlua.vm { arch = "../x" }'))
      assert.equal(def .. ':2: boot: expected vmlua.linux{...} or vmlua.efi{...}, got a table',
        err('return vmlua.vm { boot = { kernel = "vmlinuz" } }'))
      assert.equal(def .. ':2: boot: expected vmlua.linux{...} or vmlua.efi{...}, got a disk',
        err('return vmlua.vm { boot = vmlua.disk { path = "root.img" } }'))
      assert.equal(def .. ':2: disks: expected a list of vmlua.disk{...}, got string "root.img"',
        err('return vmlua.vm { disks = "root.img" }'))
      assert.equal(def .. ':2: disks[2]: expected vmlua.disk{...}, got a nat',
        err('return vmlua.vm { disks = { vmlua.disk { path = "a" }, vmlua.nat {} } }'))
      assert.equal(def .. ':2: disks: expected a list of vmlua.disk{...}, got a table with named keys',
        err('return vmlua.vm { disks = { root = vmlua.disk { path = "a" } } }'))
      assert.equal(def .. ':2: net[1]: expected vmlua.nat{...} or vmlua.lan{...}, got a table',
        err('return vmlua.vm { net = { { forward = {} } } }'))
      assert.equal(def .. ':2: console: expected vmlua.console{...} or vmlua.console "stdio", got string "stdio"',
        err('return vmlua.vm { console = "stdio" }'))
    end)

    it("refuses a bad name", function()
      assert.equal(def .. [[:2: name: "my vm" may only use letters, digits, '.', '_' and '-']],
        err('return vmlua.vm { name = "my vm" }'))
      assert.equal(def .. [[:2: name: "" may only use letters, digits, '.', '_' and '-']],
        err('return vmlua.vm { name = "" }'))
      assert.equal(def .. [[:2: name: "a/b" may only use letters, digits, '.', '_' and '-']],
        err('return vmlua.vm { name = "a/b" }'))
    end)

    -- The name is a directory under the runtime directory: ".." would be
    -- its parent (/tmp itself, for root), and a leading '-' reads as an option.
    it("refuses a name that is not a plain file name", function()
      for _, name in ipairs { "..", ".", ".hidden", "-rf", "_x", "..." } do
        assert.equal(string.format("%s:2: name: %q must start with a letter or a digit", def, name),
          err(string.format("return vmlua.vm { name = %q }", name)))
      end
      assert.equal("a..b", vm('return vmlua.vm { name = "a..b" }').config.name)
      assert.equal("9-lives", vm('return vmlua.vm { name = "9-lives" }').config.name)
    end)

    it("never derives such a name from the file's name", function()
      assert.equal("x", helpers.vm(dir, HEAD .. "local r = vmlua.vm {}\nreturn r", "_x.lua").config.name)
      assert.equal("vm", helpers.vm(dir, HEAD .. "local r = vmlua.vm {}\nreturn r", "..lua").config.name)
    end)

    it("is refused at the user's line when called through pcall", function()
      local ran, ok, e = helpers.run(dir, HEAD .. 'local ok, e = pcall(vmlua.vm, { cpus = "x" })\nreturn ok, e')
      assert.is_true(ran)
      assert.is_false(ok)
      assert.equal(def .. ':2: cpus: expected a whole number, got string "x"', e)
    end)
  end)

  describe("vmlua.linux", function()
    it("resolves paths against the defining file and keeps the cmdline", function()
      local b = vm('return vmlua.linux { kernel = "sub/../vmlinuz", initrd = "/abs/initrd", '
        .. 'cmdline = { "root=/dev/vda", "console=hvc0" } }')
      assert.equal("linux", b.kind)
      assert.equal(dir .. "/vmlinuz", b.kernel)
      assert.equal("/abs/initrd", b.initrd)
      assert.same({ "root=/dev/vda", "console=hvc0" }, b.cmdline)
      assert.same({ source = def, short = def, line = 2 }, b.where)
    end)

    it("splits a cmdline string on spaces", function()
      assert.same({ "a=1", "b", "c=x" }, vm('return vmlua.linux { kernel = "k", cmdline = " a=1  b\tc=x " }').cmdline)
    end)

    it("expands ~/ to the home directory", function()
      assert.equal(os.getenv("HOME") .. "/k", vm('return vmlua.linux { kernel = "~/k" }').kernel)
    end)

    it("adds the serial console and panic=-1 for the VM's architecture unless given", function()
      local cfg = vm('return vmlua.vm { arch = "x86_64", boot = vmlua.linux { kernel = "k", cmdline = "quiet" } }')
      assert.same({ "quiet", "console=ttyS0", "panic=-1" }, cfg.config.boot.cmdline)
      cfg = vm('return vmlua.vm { arch = "aarch64", boot = vmlua.linux { kernel = "k", '
        .. 'cmdline = "console=hvc0 panic=10" } }')
      assert.same({ "console=hvc0", "panic=10" }, cfg.config.boot.cmdline)
    end)

    it("does not change the linux object shared by several VMs", function()
      local ok, x, y, boot = helpers.run(dir, HEAD .. [[
local boot = vmlua.linux { kernel = "k" }
local x = vmlua.vm { name = "x", arch = "x86_64", boot = boot }
local y = vmlua.vm { name = "y", arch = "aarch64", boot = boot }
return x, y, boot]])
      assert.is_true(ok, x)
      assert.same({ "console=ttyS0", "panic=-1" }, x.config.boot.cmdline)
      assert.same({ "console=ttyAMA0", "panic=-1" }, y.config.boot.cmdline)
      assert.same({}, boot.cmdline)
    end)

    it("refuses bad fields", function()
      assert.equal(def .. ':2: kernel: missing; give the path of the file', err('return vmlua.linux {}'))
      assert.equal(def .. ':2: kernal: unknown field; did you mean "kernel"?',
        err('return vmlua.linux { kernal = "k" }'))
      assert.equal(def .. ':2: kernel: expected a path (a string), got number 1',
        err('return vmlua.linux { kernel = 1 }'))
      assert.equal(def .. ':2: initrd: the path is empty', err('return vmlua.linux { kernel = "k", initrd = "" }'))
      assert.equal(def .. ':2: cmdline[2]: expected a string, got number 3',
        err('return vmlua.linux { kernel = "k", cmdline = { "a", 3 } }'))
      assert.equal(def .. ':2: cmdline: expected a list of strings or one string, got boolean true',
        err('return vmlua.linux { kernel = "k", cmdline = true }'))
      assert.equal(def .. ':2: linux: expected a table like { kernel = "vmlinuz" }, got string "vmlinuz"',
        err('return vmlua.linux "vmlinuz"'))
    end)
  end)

  describe("vmlua.efi", function()
    it("takes optional firmware and vars", function()
      local e = vm('return vmlua.efi { firmware = "code.fd", vars = "vars.fd" }')
      assert.equal("efi", e.kind)
      assert.equal(dir .. "/code.fd", e.firmware)
      assert.equal(dir .. "/vars.fd", e.vars)
      e = vm('return vmlua.efi()')
      assert.is_nil(e.firmware)
      assert.is_nil(e.vars)
    end)

    it("defaults the firmware to the distribution's for the VM's architecture, when installed", function()
      local cfg = vm('return vmlua.vm { arch = "x86_64", boot = vmlua.efi {} }').config
      local want
      for _, f in ipairs(require("vmlua.qemu").arches.x86_64.firmware) do
        local st = core.stat(f)
        if st and st.type == "file" then
          want = f
          break
        end
      end
      assert.equal(want, cfg.boot.firmware)
    end)

    it("refuses bad fields", function()
      assert.equal(def .. ':2: firmwre: unknown field; did you mean "firmware"?',
        err('return vmlua.efi { firmwre = "x" }'))
      assert.equal(def .. ':2: vars: expected a path (a string), got boolean true',
        err('return vmlua.efi { vars = true }'))
    end)
  end)

  describe("vmlua.disk", function()
    it("guesses the format from the extension", function()
      local d = vm('return vmlua.disk { path = "root.img" }')
      assert.same({ kind = "disk", path = dir .. "/root.img", format = "raw", readonly = false, ephemeral = false,
        where = { source = def, short = def, line = 2 } }, d)
      assert.equal("qcow2", vm('return vmlua.disk { path = "/x/root.QCOW2" }').format)
      assert.equal("raw", vm('return vmlua.disk { path = "root.qcow2", format = "raw" }').format)
      assert.is_true(vm('return vmlua.disk { path = "root.img", readonly = true }').readonly)
    end)

    it("refuses bad fields", function()
      assert.equal(def .. ':2: path: missing; give the path of the file', err('return vmlua.disk {}'))
      assert.equal(def .. ':2: format: "vmdk" is not a disk format; expected "raw" or "qcow2"',
        err('return vmlua.disk { path = "a.vmdk", format = "vmdk" }'))
      assert.equal(def .. ':2: readonly: expected true or false, got string "yes"',
        err('return vmlua.disk { path = "a", readonly = "yes" }'))
      assert.equal(def .. ':2: fromat: unknown field; did you mean "format"?',
        err('return vmlua.disk { path = "a", fromat = "raw" }'))
      assert.equal(def .. ':2: path: the path contains a NUL byte', err('return vmlua.disk { path = "a\\0b" }'))
    end)
  end)

  describe("vmlua.nat", function()
    it("lists forwards sorted by host port, bound to 127.0.0.1", function()
      local n = vm('return vmlua.nat { forward = { [8080] = 80, [2222] = 22 } }')
      assert.equal("nat", n.kind)
      assert.same({ { host = 2222, guest = 22, address = "127.0.0.1", protocol = "tcp" },
        { host = 8080, guest = 80, address = "127.0.0.1", protocol = "tcp" } }, n.forward)
      assert.same({}, vm('return vmlua.nat {}').forward)
      assert.same({}, vm('return vmlua.nat()').forward)
    end)

    it("binds all interfaces with address 0.0.0.0", function()
      local n = vm('return vmlua.nat { forward = { [2222] = 22 }, address = "0.0.0.0" }')
      assert.equal("0.0.0.0", n.forward[1].address)
    end)

    it("takes host port 0 as a free port chosen at each start", function()
      local n = vm('return vmlua.nat { forward = { [0] = 22, [2222] = 80 } }')
      assert.same({ host = 0, guest = 22, address = "127.0.0.1", auto = true, protocol = "tcp" }, n.forward[1])
      assert.same({ host = 2222, guest = 80, address = "127.0.0.1", protocol = "tcp" }, n.forward[2])
    end)

    it("refuses bad ports and addresses", function()
      assert.equal(def .. ':2: forward[-1]: host port -1 is outside 1-65535',
        err('return vmlua.nat { forward = { [-1] = 22 } }'))
      assert.equal(def .. ':2: forward[2222]: guest port 70000 is outside 1-65535',
        err('return vmlua.nat { forward = { [2222] = 70000 } }'))
      assert.equal(def .. ':2: forward[2222]: guest port must be a whole number in 1-65535, got number 22.5',
        err('return vmlua.nat { forward = { [2222] = 22.5 } }'))
      assert.equal(def .. ':2: forward["ssh"]: host port must be a whole number in 1-65535, got string "ssh"',
        err('return vmlua.nat { forward = { ssh = 22 } }'))
      assert.equal(def .. ':2: forward[1]: this forwards host port 1; write { [HOSTPORT] = GUESTPORT }, '
        .. 'e.g. { [2222] = 22 }', err('return vmlua.nat { forward = { 2222, 22 } }'))
      assert.equal(def .. ':2: forward: expected a table { [HOSTPORT] = GUESTPORT }, got number 22',
        err('return vmlua.nat { forward = 22 }'))
      assert.equal(def .. ':2: address: expected an IPv4 address such as "127.0.0.1" or "0.0.0.0" (all interfaces), '
        .. 'got string "1.2.3.4,hostfwd=tcp::1-:2"', err('return vmlua.nat { address = "1.2.3.4,hostfwd=tcp::1-:2" }'))
      assert.matches('address: expected an IPv4 address', err('return vmlua.nat { address = "256.0.0.1" }'))
    end)
  end)

  describe("vmlua.console", function()
    it("logs to a file, or goes to the terminal", function()
      local c = vm('return vmlua.console { log = "logs/dev.log" }')
      assert.same({ kind = "console", log = dir .. "/logs/dev.log", stdio = false,
        where = { source = def, short = def, line = 2 } }, c)
      assert.is_true(vm('return vmlua.console "stdio"').stdio)
      assert.is_true(vm('return vmlua.console { stdio = true }').stdio)
      assert.is_nil(vm('return vmlua.console {}').log)
      assert.is_false(vm('return vmlua.console()').stdio)
    end)

    it("refuses both, and wrong types", function()
      assert.equal(def .. ':2: stdio: a console goes to a log file or to the terminal, not both; drop log or stdio',
        err('return vmlua.console { log = "x.log", stdio = true }'))
      assert.equal(def .. ':2: console: "dev.log" is not a console; use "stdio" or { log = "FILE" }',
        err('return vmlua.console "dev.log"'))
      assert.equal(def .. ':2: console: expected a table like { log = "console.log" } or "stdio", got number 1',
        err('return vmlua.console(1)'))
      assert.equal(def .. ':2: stdio: expected true or false, got string "yes"',
        err('return vmlua.console { stdio = "yes" }'))
    end)
  end)

  describe("vm:add", function()
    it("adds disks and NAT devices", function()
      local cfg = vm([[
local v = vmlua.vm { boot = vmlua.linux { kernel = "k" } }
v:add(vmlua.disk { path = "root.img" })
v:add(vmlua.nat { forward = { [2222] = 22 } })
return v]]).config
      assert.equal(1, #cfg.disks)
      assert.equal(dir .. "/root.img", cfg.disks[1].path)
      assert.equal(3, cfg.disks[1].where.line)
      assert.equal(1, #cfg.net)
      assert.equal(2222, cfg.net[1].forward[1].host)
    end)

    it("refuses anything else at the user's line", function()
      assert.equal(def .. ':4: add: expected a device made by vmlua.disk{...}, vmlua.nat{...}, vmlua.lan{...} or '
        .. 'vmlua.share{...}, got string "data.img"',
        err('local v = vmlua.vm {}\n\nv:add("data.img")'))
      assert.equal(def .. ':3: add: a console is not a device to add; set it with vmlua.vm{ console = ... }',
        err('local v = vmlua.vm {}\nv:add(vmlua.console "stdio")'))
      assert.equal(def .. ':3: add: a linux is not a device to add; set it with vmlua.vm{ boot = ... }',
        err('local v = vmlua.vm {}\nv:add(vmlua.linux { kernel = "k" })'))
      assert.equal(def .. ':3: add: expected a device made by vmlua.disk{...}, vmlua.nat{...}, vmlua.lan{...} or '
        .. 'vmlua.share{...}, got a table',
        err('local v = vmlua.vm {}\nv:add({ kind = "disk", path = "x" })'))
    end)
  end)

  describe("tail calls", function()
    -- `return vmlua.vm{...}` (a definition file's last line, a recipe's
    -- body) leaves no frame for its line when the constructor is a Lua
    -- function; with core.located the constructors are C entries and see it.
    local located = core.located and it or pending

    located("locate `return vmlua.x{...}` at the user's line", function()
      local d = helpers.vm(dir, HEAD .. '\nreturn vmlua.disk { path = "root.img" }')
      assert.same({ source = def, short = def, line = 3 }, d.where)
      assert.equal(dir .. "/root.img", d.path)
      assert.equal(def .. ':2: cpus: expected a whole number, got string "x"',
        helpers.error_of(dir, HEAD .. 'return vmlua.vm { cpus = "x" }'))
    end)

    located("locate a recipe's `return vmlua.vm{...}` in the recipe", function()
      helpers.write(dir .. "/recipe.lua", HEAD .. 'return function(o)\n  return vmlua.vm { name = o.name, '
        .. 'boot = vmlua.linux { kernel = "k" } }\nend')
      local cfg = helpers.vm(dir, 'local recipe = dofile(' .. string.format("%q", dir .. "/recipe.lua")
        .. ')\nlocal v = recipe { name = "r" }\nreturn v').config
      assert.equal(dir .. "/recipe.lua", cfg.where.source)
      assert.equal(3, cfg.where.line)
      assert.equal(dir .. "/k", cfg.boot.kernel)
    end)
  end)

  it("config.is tells constructed objects from look-alikes", function()
    assert.is_true(config.is(config.disk { path = "/x" }, "disk"))
    assert.is_false(config.is({ kind = "disk", path = "/x" }, "disk"))
    assert.is_false(config.is(config.nat {}, "disk"))
  end)
end)
