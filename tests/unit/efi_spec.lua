-- vmlua.efi without a hypervisor: QEMU's argv, where the variable store
-- lives, which template it is made from, how it is made, what validate and
-- plan say.
local core = require "vmlua.core"
local efi = require "vmlua.efi"
local host = require "vmlua.host"
local plan = require "vmlua.plan"
local qemu = require "vmlua.qemu"
local store = require "vmlua.instance.store"
local validate = require "vmlua.validate"
local accels = require "vmlua.accel"
local helpers = require "support.helpers"

local MiB = 1024 * 1024
local HEAD = 'local vmlua = require "vmlua"\n'

describe("vmlua.efi", function()
  local dir, def, choose, arches
  local paths = { dir = "/run/v/dev", qmp = "/run/v/dev/qmp.sock", console = "/run/v/dev/console" }

  before_each(function()
    dir = helpers.tmpdir()
    def = dir .. "/def.lua"
    for _, arch in ipairs({ "x86_64", "aarch64" }) do
      assert(core.chmod(helpers.write(dir .. "/qemu-system-" .. arch, "#!/bin/sh\n"), tonumber("755", 8)))
    end
    host.reset { path = dir }
    choose = accels.choose
    accels.choose = function() return "tcg", "chosen by the spec" end
    -- the distribution's firmware, as this spec's files
    helpers.write(dir .. "/OVMF_CODE_4M.fd", string.rep("c", 4096))
    helpers.write(dir .. "/OVMF_VARS_4M.fd", string.rep("v", 1024) .. string.rep("\0", 3072))
    arches = { x86_64 = qemu.arches.x86_64.firmware, aarch64 = qemu.arches.aarch64.firmware }
    qemu.arches.x86_64.firmware = { dir .. "/OVMF_CODE_4M.fd" }
    qemu.arches.aarch64.firmware = { dir .. "/AAVMF_CODE.fd" }
    helpers.fixtures(dir)
  end)

  after_each(function()
    qemu.arches.x86_64.firmware, qemu.arches.aarch64.firmware = arches.x86_64, arches.aarch64
    accels.choose = choose
    host.reset()
    helpers.rmtree(dir)
  end)

  local function cfg(src)
    return helpers.vm(dir, HEAD .. "local r = " .. src .. "\nreturn r").config
  end

  local function args_of(c)
    return qemu.command(c, paths).args
  end

  local function values(args, option)
    local list = {}
    for i, a in ipairs(args) do
      if a == option then list[#list + 1] = args[i + 1] end
    end
    return list
  end

  local function problem(src)
    local ok, msg = validate.vm(cfg(src))
    assert.is_nil(ok, "the definition is valid")
    return msg
  end

  describe("QEMU's arguments", function()
    it("put the firmware on a read-only flash unit and the VM's own store on a writable one", function()
      local c = cfg('vmlua.vm { name = "fw", arch = "x86_64", boot = vmlua.efi {} }')
      local own = store.paths("fw").efi_vars
      assert.same({
        "if=pflash,format=raw,unit=0,readonly=on,file=" .. dir .. "/OVMF_CODE_4M.fd",
        "if=pflash,format=raw,unit=1,file=" .. own,
      }, values(args_of(c), "-drive"))
      assert.same({}, values(args_of(c), "-kernel"))
      assert.same({}, values(args_of(c), "-bios"))
    end)

    it("use the store the definition gives, relative to its file", function()
      local c = cfg('vmlua.vm { arch = "x86_64", boot = vmlua.efi { vars = "my,vars.fd" } }')
      assert.are.equal("if=pflash,format=raw,unit=1,file=" .. dir .. "/my,,vars.fd", values(args_of(c), "-drive")[2])
      assert.is_false(c.boot.own)
    end)

    it("make the disks the boot devices, in their order, and never the network", function()
      local c = cfg('vmlua.vm { arch = "x86_64", boot = vmlua.efi {}, net = { vmlua.nat {} },\n'
        .. '  disks = { vmlua.disk { path = "root.img" }, vmlua.disk { path = "vmlinuz", readonly = true } } }')
      local args = args_of(c)
      assert.same({ "virtio-blk-pci,drive=disk0,bootindex=0", "virtio-blk-pci,drive=disk1,bootindex=1",
                    "virtio-net-pci,netdev=net0" }, values(args, "-device"))
      c = cfg('vmlua.vm { arch = "x86_64", boot = vmlua.linux { kernel = "vmlinuz" },\n'
        .. '  disks = { vmlua.disk { path = "root.img" } } }')
      assert.same({ "virtio-blk-pci,drive=disk0" }, values(args_of(c), "-device"))
    end)
  end)

  describe("the variable store", function()
    it("is the VM's own, in its state directory, unless the definition gives one", function()
      local c = cfg('vmlua.vm { name = "mine", arch = "x86_64", boot = vmlua.efi {} }')
      assert.are.equal(store.root() .. "/mine/efi-vars.fd", c.boot.vars)
      assert.is_true(c.boot.own)
      assert.are.equal(dir .. "/OVMF_VARS_4M.fd", c.boot.template)
    end)

    it("is made from the template a QEMU firmware descriptor names, preferring no enrolled keys", function()
      local fw, desc = dir .. "/fw", dir .. "/firmware"
      assert(core.mkdir_private(fw))
      assert(core.mkdir_private(desc))
      helpers.write(fw .. "/CODE.fd", "code")
      assert(os.execute("ln -s CODE.fd " .. fw .. "/CODE.ms.fd"))
      for _, name in ipairs { "NV.fd", "NV.ms.fd", "VARS.fd" } do helpers.write(fw .. "/" .. name, "nv") end
      local function descriptor(file, exe, nvram, features)
        helpers.write(desc .. "/" .. file, string.format('{ "mapping": { "device": "flash", "executable": '
          .. '{ "filename": "%s" }, "nvram-template": { "filename": "%s" } }, "features": [ %s ] }', exe, nvram,
          features))
      end
      descriptor("40-enrolled.json", fw .. "/CODE.ms.fd", fw .. "/NV.ms.fd", '"enrolled-keys", "secure-boot"')
      descriptor("60-plain.json", fw .. "/CODE.fd", fw .. "/NV.fd", "")
      assert.are.equal(fw .. "/NV.fd", efi.template(fw .. "/CODE.fd", { desc }))
      assert.are.equal(fw .. "/NV.ms.fd", efi.template(fw .. "/CODE.ms.fd", { desc }))
      os.remove(desc .. "/60-plain.json") -- the same file by another name, but with keys: not that one
      assert.are.equal(fw .. "/VARS.fd", efi.template(fw .. "/CODE.fd", { desc }))
    end)

    it("or else from the file beside the firmware named with VARS for CODE", function()
      local none = { dir .. "/no-descriptors" }
      assert.are.equal(dir .. "/OVMF_VARS_4M.fd", efi.template(dir .. "/OVMF_CODE_4M.fd", none))
      helpers.write(dir .. "/OVMF_CODE_4M.secboot.fd", "code")
      assert.are.equal(dir .. "/OVMF_VARS_4M.fd", efi.template(dir .. "/OVMF_CODE_4M.secboot.fd", none))
      helpers.write(dir .. "/edk2-aarch64-code.fd", "code")
      helpers.write(dir .. "/edk2-aarch64-vars.fd", "vars")
      assert.are.equal(dir .. "/edk2-aarch64-vars.fd", efi.template(dir .. "/edk2-aarch64-code.fd", none))
      assert.is_nil(efi.template(dir .. "/vmlinuz", none))
    end)

    it("is made private and sparse at the first start, and never made again", function()
      local c = cfg('vmlua.vm { arch = "x86_64", boot = vmlua.efi { vars = "sub/vars.fd" } }')
      assert(core.mkdir_private(dir .. "/sub"))
      local zeros = dir .. "/zeros.fd"
      helpers.write(zeros, string.rep("\1", 100) .. string.rep("\0", 4 * MiB))
      c.boot.template = zeros
      local ok, made = efi.prepare(c)
      assert.is_true(ok)
      assert.is_true(made)
      local st = assert(core.stat(c.boot.vars))
      assert.are.equal(tonumber("600", 8), st.mode)
      assert.are.equal(4 * MiB + 100, st.size)
      local f = assert(io.open(c.boot.vars, "rb"))
      assert.are.equal(string.rep("\1", 100) .. string.rep("\0", 4 * MiB), f:read("a"))
      f:close()
      local p = io.popen("du -k " .. helpers.shell_quote(c.boot.vars))
      local kib = tonumber(p:read("a"):match("^%d+"))
      p:close()
      assert.is_true(kib < 1024, "not sparse: " .. kib .. " KiB on disk")
      helpers.write(c.boot.vars, "the firmware's own writes")
      ok, made = efi.prepare(c)
      assert.is_true(ok)
      assert.is_false(made)
      f = assert(io.open(c.boot.vars, "rb"))
      assert.are.equal("the firmware's own writes", f:read("a"))
      f:close()
    end)

    it("of the VM's own is made in a private state directory", function()
      local name = "efi-unit-" .. core.getpid()
      local c = cfg('vmlua.vm { name = "' .. name .. '", arch = "x86_64", boot = vmlua.efi {} }')
      assert.is_true((efi.prepare(c)))
      assert.are.equal(tonumber("700", 8), core.stat(store.paths(name).dir).mode)
      assert.are.equal(4096, core.stat(c.boot.vars).size)
      helpers.rmtree(store.paths(name).dir)
    end)
  end)

  describe("validate.vm", function()
    it("wants a store of the template's size", function()
      helpers.write(dir .. "/small.fd", "x")
      assert.are.equal(def .. ":2: boot.vars: " .. dir .. "/small.fd is 1 B, but the variable store of " .. dir
        .. "/OVMF_CODE_4M.fd is 4 KiB (the size of its template " .. dir .. "/OVMF_VARS_4M.fd): it is another "
        .. "firmware's; remove it to start afresh from the template",
        problem('vmlua.vm { arch = "x86_64", boot = vmlua.efi { vars = "small.fd" } }'))
      assert.is_true(validate.vm(cfg('vmlua.vm { arch = "x86_64", boot = vmlua.efi { vars = "new.fd" } }')))
    end)

    it("wants a template to make a missing store from, and a directory to make it in", function()
      assert.are.equal(def .. ":2: boot.vars: " .. dir .. "/new.fd does not exist, and no variable store template "
        .. "was found for " .. dir .. "/vmlinuz to make it from (a QEMU firmware descriptor's nvram-template, "
        .. "or a file beside it named with VARS for CODE); give vars = PATH of an existing store",
        problem('vmlua.vm { arch = "x86_64", boot = vmlua.efi { firmware = "vmlinuz", vars = "new.fd" } }'))
      assert.are.equal(def .. ":2: boot.vars: the directory " .. dir .. "/no such dir does not exist, so " .. dir
        .. "/no such dir/v.fd cannot be made there",
        problem('vmlua.vm { arch = "x86_64", boot = vmlua.efi { vars = "no such dir/v.fd" } }'))
    end)

    it("wants 64 MiB flash images on aarch64's virt machine", function()
      helpers.write(dir .. "/QEMU_EFI.fd", string.rep("f", 4096))
      assert.are.equal(def .. ":2: boot.firmware: " .. dir .. "/QEMU_EFI.fd is 4 KiB, but QEMU's virt machine "
        .. "takes a flash image of exactly 64 MiB (Debian's is /usr/share/AAVMF/AAVMF_CODE.fd; or pad a copy: "
        .. "truncate -s 64M FILE)",
        problem('vmlua.vm { arch = "aarch64", boot = vmlua.efi { firmware = "QEMU_EFI.fd", vars = "vmlinuz" } }'))
    end)
  end)

  describe("vmlua plan", function()
    it("shows the firmware, the store and where it comes from", function()
      local c = cfg('vmlua.vm { name = "shown", arch = "x86_64", boot = vmlua.efi {} }')
      local text = plan.text(c)
      local vars = store.paths("shown").efi_vars
      assert.truthy(text:find("\n  boot      efi firmware " .. dir .. "/OVMF_CODE_4M.fd (read-only)\n"
        .. "                vars " .. vars .. "\n"
        .. "                     this VM's own, kept across its starts (vmlua rm shown removes it)\n"
        .. "                     made from " .. dir .. "/OVMF_VARS_4M.fd at the first start\n", 1, true), text)
      local boot = core.json_decode(plan.json({ c })).vms[1].boot
      assert.are.equal(dir .. "/OVMF_CODE_4M.fd", boot.firmware)
      assert.are.equal(vars, boot.vars)
      assert.are.equal(dir .. "/OVMF_VARS_4M.fd", boot.template)
      assert.is_true(boot.own)
      assert.is_true(boot.create)
    end)
  end)
end)

describe("examples/cloud.lua", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  it("plans a cloud image's UEFI boot, its overlay, seed and ssh forward, from the image path it is given", function()
    local image = dir .. "/debian-12-genericcloud-arm64.qcow2" -- a stand-in: no cloud image is downloaded here
    assert(helpers.sh("qemu-img create -q -f qcow2 " .. helpers.shell_quote(image) .. " 64M"))
    local bin = os.getenv("VMLUA_BIN") or "build/bin/vmlua"
    local p = assert(io.popen(helpers.shell_quote(bin) .. " plan --json examples/cloud.lua "
      .. helpers.shell_quote(image) .. " 2>/dev/null"))
    local out = p:read("a")
    local ok = p:close()
    assert.is_true(ok, out)
    local vm = core.json_decode(out).vms[1]
    assert.are.equal("cloud", vm.name)
    assert.are.equal("aarch64", vm.arch)
    assert.are.equal("efi", vm.boot.kind)
    assert.is_true(vm.boot.own)
    assert.are.equal(image, vm.disks[1].base)
    assert.are.equal("overlay", vm.disks[1].create)
    assert.are.equal(22, vm.net[1].forward[1].guest)
    assert.are.equal("table", type(vm.cloudinit))
  end)
end)
