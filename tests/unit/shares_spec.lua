-- vmlua.share, reboot = and qemu = in the configuration, validation, QEMU's
-- argv and `vmlua plan`; no guest runs (tests/integration/shares_spec.lua
-- and extras_spec.lua boot them).
local config = require "vmlua.config"
local plan = require "vmlua.plan"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"
local validate = require "vmlua.validate"
local helpers = require "support.helpers"

local HEAD = 'local vmlua = require "vmlua"\n'

-- The index of `value` in the list, or nil.
local function find(list, value, from)
  for i = from or 1, #list do
    if list[i] == value then return i end
  end
  return nil
end

describe("shares and the other machine options", function()
  local dir, def

  before_each(function()
    dir = helpers.tmpdir()
    def = dir .. "/def.lua"
    helpers.fixtures(dir)
    assert(os.execute("mkdir " .. helpers.shell_quote(dir .. "/src")))
  end)

  after_each(function()
    helpers.rmtree(dir)
  end)

  local function vm(src) return helpers.vm(dir, HEAD .. src) end
  local function err(src) return helpers.error_of(dir, HEAD .. src) end

  describe("vmlua.share", function()
    it("resolves the host directory against the defining file, and defaults to read-write", function()
      local cfg = vm([[
local v = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" },
  shares = { vmlua.share { host = "src", tag = "src" }, vmlua.share { host = ".", tag = "all", readonly = true } } }
return v]]).config
      assert.are.equal(2, #cfg.shares)
      local first = cfg.shares[1]
      assert.are.same({ dir .. "/src", "src", false }, { first.host, first.tag, first.readonly })
      assert.are.same({ dir, "all", true }, { cfg.shares[2].host, cfg.shares[2].tag, cfg.shares[2].readonly })
      assert.are.equal(3, cfg.shares[1].where.line)
    end)

    it("is added with vm:add, before the VM starts", function()
      local cfg = vm([[
local v = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" } }
v:add(vmlua.share { host = "src", tag = "src" })
return v]]).config
      assert.are.equal(dir .. "/src", cfg.shares[1].host)
    end)

    it("names the field and the line of a mistake", function()
      assert.are.equal(def .. ":2: tag: missing; give the name the guest mounts it by, e.g. tag = \"src\"",
        err('local s = vmlua.share { host = "src" }'))
      assert.are.equal(def .. ":2: host: missing; give the host directory to share",
        err('local s = vmlua.share { tag = "src" }'))
      assert.are.equal(def .. [[:3: tag: "my src" is not a tag: use 1 to 36 letters, digits, '.', '_' or '-']],
        err('\nlocal s = vmlua.share { host = "src", tag = "my src" }'))
      assert.matches("is not a tag", err('local s = vmlua.share { host = "src", tag = ("x"):rep(37) }'))
      assert.are.equal(def .. ':2: readonly: expected true or false, got string "yes"',
        err('local s = vmlua.share { host = "src", tag = "t", readonly = "yes" }'))
      assert.are.equal(def .. ':2: hots: unknown field; did you mean "host"?',
        err('local s = vmlua.share { hots = "src", tag = "t" }'))
      assert.are.equal(def .. ':2: shares[1]: expected vmlua.share{...}, got a disk',
        err('local v = vmlua.vm { shares = { vmlua.disk { path = "root.img" } } }'))
    end)

    it("is checked against the file system: a directory that exists, one tag per share", function()
      local cfg = vm([[
local v = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" }, memory = "256M",
  shares = { vmlua.share { host = "gone", tag = "a" },
             vmlua.share { host = "vmlinuz", tag = "b" },
             vmlua.share { host = "src", tag = "a" } } }
return v]]).config
      local ok, _, all = validate.vm(cfg)
      assert.is_nil(ok)
      local text = table.concat(all, "\n")
      assert.matches(def:gsub("%p", "%%%0") .. ":3: shares%[1%]%.host: [^\n]*/gone does not exist", text)
      assert.matches(":4: shares%[2%]%.host: [^\n]*/vmlinuz is not a directory", text)
      assert.matches(':5: shares%[3%]%.tag: "a" is already the tag of shares%[1%] %(' .. def:gsub("%p", "%%%0")
        .. ":3%)", text)
    end)
  end)

  describe("virtiofsd", function()
    it("needs root when vmlua runs it, and not when libvirtd does", function()
      local core = require "vmlua.core"
      local virtiofsd = require "vmlua.qemu.virtiofsd"
      if not virtiofsd.binary() then pending("no virtiofsd on this host") return end
      local getuid = core.getuid
      core.getuid = function() return 1000 end
      local ok, own, libvirts = pcall(function() return virtiofsd.problem(), virtiofsd.problem(true) end)
      core.getuid = getuid
      assert(ok, own)
      assert.matches("^shares need root", own)
      assert.is_nil(libvirts)
    end)
  end)

  describe("reboot and qemu", function()
    it("default to a VM that ends when the guest reboots, with no extra arguments", function()
      local cfg = vm('local v = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" } }\nreturn v').config
      assert.is_false(cfg.reboot)
      assert.are.same({}, cfg.qemu)
      assert.is_truthy(find(qemu.command(cfg, runtime.paths("x")).args, "-no-reboot"))
    end)

    it("are checked at the definition's line", function()
      assert.are.equal(def .. ':2: reboot: expected true or false, got string "yes"',
        err('local v = vmlua.vm { reboot = "yes" }'))
      assert.are.equal(def .. ':2: qemu: expected a list of strings such as { "-device", "virtio-rng-pci" }, '
        .. 'got string "-device foo"', err('local v = vmlua.vm { qemu = "-device foo" }'))
      assert.are.equal(def .. ":2: qemu[2]: expected a string, got number 1",
        err('local v = vmlua.vm { qemu = { "-smp", 1 } }'))
      assert.are.equal(def .. ":2: qemu: expected a list of strings such as { \"-device\", \"virtio-rng-pci\" }, "
        .. "got a table with named keys", err('local v = vmlua.vm { qemu = { device = "x" } }'))
    end)
  end)

  describe("QEMU's argv", function()
    local cfg, args, paths
    before_each(function()
      cfg = vm([[
local v = vmlua.vm { name = "sharing", memory = "256M", boot = vmlua.linux { kernel = "vmlinuz" }, reboot = true,
  shares = { vmlua.share { host = "src", tag = "src", readonly = true } },
  qemu = { "-device", "pci-testdev" } }
return v]]).config
      paths = runtime.paths("sharing")
      args = qemu.command(cfg, paths).args
    end)

    it("shares the guest's memory with the daemons and has a device per share", function()
      assert.matches(",memory%-backend=mem$", args[find(args, "-machine") + 1])
      assert.are.equal("memory-backend-memfd,id=mem,size=256M,share=on", args[find(args, "-object") + 1])
      local chardev = find(args, "socket,id=fs0,path=" .. runtime.share_socket(paths, 1))
      assert.is_truthy(chardev, "no chardev for the share")
      assert.are.equal("vhost-user-fs-pci,chardev=fs0,tag=src", args[chardev + 2])
    end)

    it("lets the guest reboot, and ends with the extra arguments as given", function()
      assert.is_nil(find(args, "-no-reboot"))
      assert.are.same({ "-device", "pci-testdev" }, { args[#args - 1], args[#args] })
    end)

    it("has no shared memory without shares", function()
      local plain = vm('local v = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" } }\nreturn v').config
      local a = qemu.command(plain, paths).args
      assert.is_nil(find(a, "-object"))
      assert.is_nil(a[find(a, "-machine") + 1]:find("memory-backend", 1, true))
    end)

    it("is shown by vmlua plan with each daemon's argv and the unchecked arguments", function()
      local text = plan.text(cfg)
      assert.matches("share0    " .. (dir .. "/src"):gsub("%p", "%%%0") .. " as tag src %(read%-only%)", text)
      assert.matches("virtiofsd, in a mount namespace of its own where the directory is a read%-only bind mount", text)
      assert.matches("%-%-socket%-path=" .. runtime.share_socket(paths, 1):gsub("%p", "%%%0"), text)
      assert.matches("%-o source=" .. (dir .. "/src"):gsub("%p", "%%%0"), text)
      assert.matches("qemu      %-device pci%-testdev\n%s+unchecked", text)
      assert.matches("its last 2, from qemu = {...}, are unchecked", text, 1, true)
      assert.matches("reboot    the guest may reboot", text, 1, true)
      local json = plan.describe(cfg)
      assert.are.equal("src", json.shares[1].tag)
      assert.are.equal(dir .. "/src", json.shares[1].daemon.readonly_view)
      assert.are.equal("--socket-path=" .. runtime.share_socket(paths, 1), json.shares[1].daemon.argv[2])
      assert.are.same({ "-device", "pci-testdev" }, json.qemu.args)
      assert.is_false(json.qemu.checked)
      assert.is_true(json.reboot)
    end)

    it("keeps a comma in a host path from adding daemon options", function()
      assert(os.execute("mkdir " .. helpers.shell_quote(dir .. "/a,b")))
      local c = vm('local v = vmlua.vm { shares = { vmlua.share { host = "a,b", tag = "t" } } }\nreturn v').config
      local d = require("vmlua.qemu.virtiofsd").command(c.shares[1], 1, paths)
      assert.are.equal("source=" .. dir .. "/a\\,b", d.args[4])
    end)
  end)

  it("survive the configuration's round trip through JSON", function()
    local cfg = vm([[
local v = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" }, reboot = true, qemu = { "-S" },
  shares = { vmlua.share { host = "src", tag = "src" } } }
return v]]).config
    local back = assert(config.decode(config.encode(cfg)))
    assert.are.equal("src", back.shares[1].tag)
    assert.is_true(back.reboot)
    assert.are.same({ "-S" }, back.qemu)
    local plain = assert(config.decode(config.encode(config.vm({ name = "p" }, 1))))
    assert.are.same({}, plain.shares)
    assert.are.same({}, plain.qemu)
  end)
end)
