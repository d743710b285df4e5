-- vmlua.disk's size, base and ephemeral: the fields, the checks before
-- anything starts, what `vmlua plan` says, the argv, and where throw-away
-- overlays live. qemu-img makes the images here; no guest runs.
local core = require "vmlua.core"
local disks = require "vmlua.disks"
local img = require "vmlua.qemu.img"
local plan = require "vmlua.plan"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"
local validate = require "vmlua.validate"
local helpers = require "support.helpers"

local HEAD = 'local vmlua = require "vmlua"\n'
local MiB = 1024 * 1024

describe("disks", function()
  local dir, def

  before_each(function()
    dir = helpers.tmpdir()
    def = dir .. "/def.lua"
    helpers.fixtures(dir)
  end)

  after_each(function()
    helpers.rmtree(dir)
  end)

  local function value(src) return helpers.vm(dir, HEAD .. "local r = " .. src .. "\nreturn r") end
  local function err(src) return helpers.error_of(dir, HEAD .. "local r = " .. src .. "\nreturn r") end
  -- The configuration of a VM with these disks (Lua source of a list).
  local function cfg(list)
    return value('vmlua.vm { name = "d", boot = vmlua.linux { kernel = "vmlinuz" },\n  disks = ' .. list .. ' }').config
  end
  -- validate.vm's messages about the disks of `list`.
  local function disk_problems(list)
    local _, _, all = validate.vm(cfg(list))
    local found = {}
    for _, m in ipairs(all or {}) do
      if m:find("disks[", 1, true) then found[#found + 1] = m end
    end
    return found
  end
  local function raw(name, bytes)
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:seek("set", bytes - 1)
    f:write("\0")
    f:close()
    return dir .. "/" .. name
  end
  local function qcow2(name, bytes, backing)
    local path = dir .. "/" .. name
    assert(img.create { path = path, format = "qcow2", size = bytes, backing = backing,
                        backing_format = backing and img.format(backing) })
    return path
  end

  describe("vmlua.disk's fields", function()
    it("take a size, a base and ephemeral", function()
      local d = value('vmlua.disk { path = "data.img", size = "8G", ephemeral = true }')
      assert.equal(8 * 1024 * MiB, d.size)
      assert.is_true(d.ephemeral)
      assert.equal("raw", d.format)
      d = value('vmlua.disk { path = "clone.img", base = "base.qcow2" }')
      assert.equal(dir .. "/base.qcow2", d.base)
      assert.equal("qcow2", d.format) -- an overlay is qcow2 whatever its name
      assert.is_false(d.ephemeral)
      assert.is_nil(value('vmlua.disk { path = "a.img" }').size)
    end)

    it("refuse what cannot work, at the line that made the disk", function()
      assert.equal(def .. ':2: size: "8Q" is not a size: unknown unit "Q" (use K, M, G or T, e.g. "512M", "2G")',
        err('vmlua.disk { path = "a.img", size = "8Q" }'))
      assert.equal(def .. ':2: size: number 1000 is not a whole number of 512-byte sectors (at least one)',
        err('vmlua.disk { path = "a.img", size = 1000 }'))
      assert.equal(def .. ':2: size: number 0 is not a whole number of 512-byte sectors (at least one)',
        err('vmlua.disk { path = "a.img", size = 0 }'))
      assert.equal(def .. ":2: size: a read-only disk is never created or grown; drop size or readonly",
        err('vmlua.disk { path = "a.img", size = "1G", readonly = true }'))
      assert.matches("^" .. def:gsub("%p", "%%%0") .. ":2: base: a disk made from a base is an overlay",
        err('vmlua.disk { path = "a.qcow2", base = "b.qcow2", readonly = true }'))
      assert.matches(":2: ephemeral: a read%-only disk is never written",
        err('vmlua.disk { path = "a.img", ephemeral = true, readonly = true }'))
      assert.equal(def .. ':2: format: a disk with a base is a qcow2 overlay, not raw; drop format or give "qcow2"',
        err('vmlua.disk { path = "a.img", base = "b.qcow2", format = "raw" }'))
      assert.equal(def .. ":2: base: " .. dir .. "/a.qcow2 is the disk's own path; a base is another image",
        err('vmlua.disk { path = "a.qcow2", base = "a.qcow2" }'))
      assert.equal(def .. ':2: ephemeral: expected true or false, got string "yes"',
        err('vmlua.disk { path = "a.img", ephemeral = "yes" }'))
      assert.equal(def .. ':2: bsae: unknown field; did you mean "base"?',
        err('vmlua.disk { path = "a.img", bsae = "b.img" }'))
    end)
  end)

  describe("validate.vm", function()
    it("accepts a missing disk that a size or a base makes", function()
      qcow2("base.qcow2", 64 * MiB)
      assert.same({}, disk_problems('{ vmlua.disk { path = "new.img", size = "1G" },\n'
        .. 'vmlua.disk { path = "clone.qcow2", base = "base.qcow2" } }'))
      assert.same({ def .. ":3: disks[1].path: " .. dir .. '/new.img does not exist' },
        disk_problems('{ vmlua.disk { path = "new.img" } }'))
    end)

    it("names the base that is missing", function()
      assert.same({ def .. ":3: disks[1].base: " .. dir .. "/nope.qcow2 does not exist" },
        disk_problems('{ vmlua.disk { path = "clone.qcow2", base = "nope.qcow2" } }'))
    end)

    it("refuses to shrink, naming the field, the line and both sizes", function()
      raw("data.img", 64 * MiB)
      assert.same({ def .. ":4: disks[2].size: 32 MiB is smaller than " .. dir .. "/data.img (64 MiB); vmlua grows "
        .. "a disk but never shrinks it: give at least 64 MiB" },
        disk_problems('{ vmlua.disk { path = "root.img" },\n vmlua.disk { path = "data.img", size = "32M" } }'))
      qcow2("base.qcow2", 64 * MiB)
      assert.same({ def .. ":3: disks[1].size: 32 MiB is smaller than its base " .. dir .. "/base.qcow2 (64 MiB); "
        .. "vmlua grows a disk but never shrinks it: give at least 64 MiB" },
        disk_problems('{ vmlua.disk { path = "clone.qcow2", base = "base.qcow2", size = "32M" } }'))
      -- sizes that read the same are told apart in bytes
      raw("odd.img", 64 * MiB + 512)
      assert.matches("64 MiB %(67108864 bytes%) is smaller than .- %(64 MiB %(67109376 bytes%)%)",
        disk_problems('{ vmlua.disk { path = "odd.img", size = "64M" } }')[1])
      assert.same({}, disk_problems('{ vmlua.disk { path = "data.img", size = "64M" } }'))
    end)

    it("refuses an existing image that is not an overlay of the base given", function()
      qcow2("base.qcow2", 64 * MiB)
      qcow2("other.qcow2", 64 * MiB)
      qcow2("clone.qcow2", 0, dir .. "/other.qcow2")
      assert.same({ def .. ":3: disks[1].base: " .. dir .. "/clone.qcow2 exists and is not an overlay of " .. dir
        .. "/base.qcow2 (its backing file is " .. dir .. "/other.qcow2); remove it to make a new overlay, or give "
        .. "its own base" }, disk_problems('{ vmlua.disk { path = "clone.qcow2", base = "base.qcow2" } }'))
      assert.same({}, disk_problems('{ vmlua.disk { path = "clone.qcow2", base = "other.qcow2" } }'))
    end)

    it("needs an ephemeral disk's file only for reading", function()
      raw("ro.img", MiB)
      assert(core.chmod(dir .. "/ro.img", tonumber("444", 8)))
      local _, _, all = validate.vm(cfg('{ vmlua.disk { path = "ro.img", ephemeral = true } }'))
      assert.is_nil(all)
    end)
  end)

  describe("the plan", function()
    it("says what happens to each disk", function()
      qcow2("base.qcow2", 64 * MiB)
      raw("small.img", 16 * MiB)
      local c = cfg('{ vmlua.disk { path = "new.qcow2", size = "1G" },\n'
        .. 'vmlua.disk { path = "clone.qcow2", base = "base.qcow2" },\n'
        .. 'vmlua.disk { path = "small.img", size = "32M", ephemeral = true } }')
      local text = plan.text(c)
      assert.matches("disk0     " .. dir .. "/new.qcow2 %(qcow2, read%-write%)\n%s+created, 1 GiB\n", text)
      assert.matches("created as a copy%-on%-write overlay of " .. dir .. "/base.qcow2 %(qcow2%), 64 MiB", text)
      assert.matches("grown from 16 MiB to 32 MiB; ephemeral: the guest writes to a throw%-away overlay", text)
      local json = core.json_decode(plan.json { c })
      local d = json.vms[1].disks
      assert.equal("blank", d[1].create)
      assert.equal(1024 * MiB, d[1].size)
      assert.equal("overlay", d[2].create)
      assert.equal(dir .. "/base.qcow2", d[2].base)
      assert.equal("qcow2", d[2].base_format)
      assert.equal(16 * MiB, d[3].grow_from)
      assert.is_true(d[3].ephemeral)
      assert.is_false(d[1].ephemeral)
    end)
  end)

  describe("an ephemeral disk", function()
    it("is its overlay in the runtime directory on QEMU's command line", function()
      raw("data.img", MiB)
      local c = cfg('{ vmlua.disk { path = "root.img", readonly = true },\n'
        .. 'vmlua.disk { path = "data.img", ephemeral = true } }')
      local paths = runtime.paths("d", dir .. "/run")
      local args = table.concat(qemu.command(c, paths).args, " ")
      assert.matches("file=" .. dir .. "/root.img,format=raw,readonly=on ", args, 1, true)
      assert.truthy(args:find("-drive if=none,id=disk1,file=" .. dir .. "/run/d/disk1.ephemeral.qcow2,format=qcow2 ",
        1, true), args)
      assert.is_nil(args:find("file=" .. dir .. "/data.img", 1, true))
    end)

    it("is made over the file, which stays as it was", function()
      raw("data.img", 4 * MiB)
      local c = cfg('{ vmlua.disk { path = "data.img", ephemeral = true } }')
      local paths = runtime.paths("d", dir .. "/run")
      local claim = assert(runtime.claim(paths))
      runtime.write_file(paths.config, core.json_encode(c))
      assert(disks.prepare(c, paths))
      local overlay = runtime.overlay(paths, 1)
      assert.equal(dir .. "/data.img", img.backing(overlay))
      assert.equal("raw", img.info(overlay)["backing-filename-format"])
      assert.equal(4 * MiB, img.virtual_size(overlay, "qcow2"))
      runtime.remove(paths, claim)
      assert.is_nil(core.stat(overlay), "the overlay outlived the VM's directory")
      assert.is_nil(core.stat(paths.dir))
      assert.equal(4 * MiB, core.stat(dir .. "/data.img").size)
    end)

    it("left by a VM that died goes when the name is claimed again", function()
      local paths = runtime.paths("d", dir .. "/run")
      local claim = assert(runtime.claim(paths))
      runtime.write_file(paths.config, core.json_encode(cfg('{ vmlua.disk { path = "root.img", ephemeral = true } }')))
      helpers.write(runtime.overlay(paths, 1), "left behind")
      claim:unlock() -- as a vmlua killed with SIGKILL lets go
      claim = assert(runtime.claim(paths))
      assert.is_nil(core.stat(runtime.overlay(paths, 1)))
      runtime.remove(paths, claim)
    end)
  end)

  describe("growing and making", function()
    it("makes blank images and overlays with their backing format, and grows", function()
      qcow2("base.qcow2", 64 * MiB)
      raw("grow.img", 16 * MiB)
      local c = cfg('{ vmlua.disk { path = "new.img", size = "8M" },\n'
        .. 'vmlua.disk { path = "clone.qcow2", base = "base.qcow2", size = "128M" },\n'
        .. 'vmlua.disk { path = "grow.img", size = "32M" } }')
      local paths = runtime.paths("d", dir .. "/run")
      assert(disks.prepare(c, paths))
      local info = img.info(dir .. "/new.img")
      assert.equal("raw", info.format)
      assert.equal(8 * MiB, info["virtual-size"])
      info = img.info(dir .. "/clone.qcow2")
      assert.equal(128 * MiB, info["virtual-size"])
      assert.equal(dir .. "/base.qcow2", info["backing-filename"])
      assert.equal("qcow2", info["backing-filename-format"])
      assert.equal(32 * MiB, core.stat(dir .. "/grow.img").size)
      assert.equal(64 * MiB, img.info(dir .. "/base.qcow2")["virtual-size"])
      -- a second start changes nothing
      assert(disks.prepare(c, paths))
      assert.equal(32 * MiB, core.stat(dir .. "/grow.img").size)
    end)

    it("reports qemu-img's words, naming the disk", function()
      local c = cfg('{ vmlua.disk { path = "bad.qcow2", base = "base.img" } }') -- no base.img
      local ok, msg = disks.prepare(c, runtime.paths("d", dir .. "/run"))
      assert.is_nil(ok)
      assert.matches("^" .. def:gsub("%p", "%%%0") .. ":3: disks%[1%]%.base: cannot make .-bad%.qcow2 as an overlay of "
        .. ".-base%.img: .*No such file", msg)
    end)
  end)

  describe("QEMU's image lock", function()
    it("is explained in words that name the disk", function()
      local c = cfg('{ vmlua.disk { path = "root.img" } }')
      local words = 'qemu-system-x86_64: -device virtio-blk-pci,drive=disk0: Failed to get "write" lock\n'
        .. "Is another process using the image [" .. dir .. "/root.img]?"
      assert.equal(def .. ":3: disks[1].path: " .. dir .. "/root.img is in use by another process, which holds "
        .. "QEMU's lock on it: VMs may share a disk only if none writes it, and this one would write it; stop it first",
        disks.lock_problem(c, words))
      assert.is_nil(disks.lock_problem(c, "qemu-system-x86_64: something else"))
    end)
  end)
end)
