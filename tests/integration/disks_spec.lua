-- Disks around real guests: images made with a size, copy-on-write clones
-- of a base, growing (never shrinking), ephemeral disks that leave nothing
-- behind however the VM ends, and QEMU's image lock between two VMs.
local core = require "vmlua.core"
local task = require "vmlua.task"
local runtime = require "vmlua.runtime"
local vmlua = require "vmlua"
local cli = require "support.cli"
local guest = require "support.guest"
local helpers = require "support.helpers"

local q = helpers.shell_quote
local function lit(s) return (s:gsub("%p", "%%%0")) end -- a Lua pattern matching s
local MiB = 1024 * 1024

local function read(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local function md5(path) return read("md5sum " .. q(path)):match("^(%x+)") end

local function info(path)
  return assert(core.json_decode(read("qemu-img info -U --output=json " .. q(path))))
end

-- The text of /NAME on the ext4 file system in `image` (raw or qcow2), or nil.
local function file_in(image, name)
  local raw = image
  if info(image).format ~= "raw" then
    raw = guest.tmpdir() .. "/flat.raw"
    assert(os.execute("qemu-img convert -U -O raw " .. q(image) .. " " .. q(raw)))
  end
  local text = read(string.format("debugfs -R %s %s 2>/dev/null", q("cat /" .. name), q(raw)))
  return text ~= "" and text or nil
end

-- Mounts the guest's /dev/vda, writes `text` to /NAME on it, and unmounts.
local function guest_writes(vm, name, text)
  local out, status = vm:run(string.format("mount /dev/vda /mnt && echo %s > /mnt/%s && umount /mnt", text, name))
  assert.are.equal(0, status, out)
end

local function guest_reads(vm, name)
  local out = vm:run(string.format("mount /dev/vda /mnt && cat /mnt/%s; umount /mnt", name))
  return out
end

local function sectors(vm, dev)
  return tonumber(vm:run("cat /sys/block/" .. dev .. "/size"):match("%d+"))
end

local function scratch_data()
  return guest.copy(guest.files("x86_64").data, guest.tmpdir() .. "/data.ext4")
end

local function wait_gone(path, seconds)
  local deadline = core.now() + seconds
  while core.stat(path) and core.now() < deadline do task.sleep(0.1) end
  return core.stat(path) == nil
end

describe("disks", function()
  after_each(guest.cleanup)

  it("are made with their size when missing: raw, and qcow2 by extension", function()
    local dir = guest.tmpdir()
    local vm = guest.vm("x86_64", { disks = {
      vmlua.disk { path = dir .. "/new.img", size = "48M" },
      vmlua.disk { path = dir .. "/new.qcow2", size = "40M" },
    } })
    guest.boot(vm)
    assert.are.equal(48 * MiB // 512, sectors(vm, "vda"))
    assert.are.equal(40 * MiB // 512, sectors(vm, "vdb"))
    vm:stop()
    local raw, qcow2 = info(dir .. "/new.img"), info(dir .. "/new.qcow2")
    assert.are.equal("raw", raw.format)
    assert.are.equal(48 * MiB, raw["virtual-size"])
    assert.are.equal("qcow2", qcow2.format)
    assert.are.equal(40 * MiB, qcow2["virtual-size"])
  end)

  it("with a base are copy-on-write clones: the guest's writes stay in the clone", function()
    local base = scratch_data()
    local before = md5(base)
    local clone = guest.tmpdir() .. "/clone.qcow2"
    local vm = guest.vm("x86_64", { disks = { vmlua.disk { path = clone, base = base } } })
    guest.boot(vm)
    guest_writes(vm, "hello", "from-the-clone")
    vm:stop()
    assert.are.equal(before, md5(base), "the base changed")
    local i = info(clone)
    assert.are.equal(base, i["backing-filename"])
    assert.are.equal("raw", i["backing-filename-format"])
    assert.are.equal("from-the-clone\n", file_in(clone, "hello"))
    assert.is_nil(file_in(base, "hello"))
    -- started again, the clone is the same disk, not a new one
    guest.boot(vm)
    assert.matches("from%-the%-clone", guest_reads(vm, "hello"))
    vm:stop()
  end)

  it("grow to a larger size, keeping their data", function()
    local disk = scratch_data()
    local old = core.stat(disk).size
    local vm = guest.vm("x86_64", { disks = { vmlua.disk { path = disk, size = "32M" } } })
    assert.is_true(old < 32 * MiB)
    guest.boot(vm)
    assert.are.equal(32 * MiB // 512, sectors(vm, "vda"))
    guest_writes(vm, "after-grow", "still-ext4")
    vm:stop()
    assert.are.equal(32 * MiB, info(disk)["virtual-size"])
    assert.are.equal("still-ext4\n", file_in(disk, "after-grow"))
  end)

  it("never shrink: a smaller size fails before anything starts, naming the field and both sizes", function()
    local disk = scratch_data()
    local vm = guest.vm("x86_64", { disks = { vmlua.disk { path = disk, size = "8M" } } })
    local ok, err = pcall(vm.start, vm)
    assert.is_false(ok)
    assert.matches("disks_spec.lua:%d+: disks%[1%]%.size: 8 MiB is smaller than " .. lit(disk)
      .. " %(16 MiB%); vmlua grows a disk but never shrinks it", err)
    assert.are.equal("stopped", vm.state)
    assert.is_nil(vm.process)
    assert.are.equal(16 * MiB, core.stat(disk).size)
  end)

  describe("ephemeral", function()
    local function ephemeral_vm(disk)
      return guest.vm("x86_64", { disks = { vmlua.disk { path = disk, ephemeral = true } } })
    end

    it("keeps the guest's writes out of the file, and its overlay goes at stop", function()
      local disk = scratch_data()
      local before = md5(disk)
      local vm = ephemeral_vm(disk)
      guest.boot(vm)
      local overlay = runtime.overlay(runtime.paths(vm.name), 1)
      assert.is_truthy(core.stat(overlay), "no overlay in the runtime directory")
      guest_writes(vm, "scratch", "thrown-away")
      assert.matches("thrown%-away", guest_reads(vm, "scratch"))
      assert.are.equal("graceful", vm:stop())
      assert.is_nil(core.stat(overlay), "the overlay outlived the VM")
      assert.are.equal(before, md5(disk), "the guest wrote to the file itself")
      -- the next run starts from the untouched file
      guest.boot(vm)
      assert.is_nil(guest_reads(vm, "scratch"):match("thrown%-away"))
      vm:stop()
    end)

    it("leaves no overlay when QEMU is killed", function()
      local disk = scratch_data()
      local before = md5(disk)
      local vm = ephemeral_vm(disk)
      guest.boot(vm)
      guest_writes(vm, "scratch", "thrown-away")
      local overlay = runtime.overlay(runtime.paths(vm.name), 1)
      vm.process:kill("KILL")
      vm:wait("error", { timeout = 10 })
      assert.is_nil(core.stat(overlay), "the overlay outlived QEMU")
      assert.are.equal(before, md5(disk))
    end)

    it("leaves no overlay when vmlua itself is killed: its guard removes it", function()
      local dir, disk = guest.tmpdir(), scratch_data()
      local before = md5(disk)
      local files = guest.files("x86_64")
      local name = "disks-" .. core.getpid() .. "-" .. math.random(1e6)
      local h = cli.spawn { cli.write(dir, "eph.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q },
  disks = { vmlua.disk { path = %q, ephemeral = true } } }
vm:start()
vm:expect("vmlua# ", { timeout = 60 })
assert(select(2, vm:run("mount /dev/vda /mnt && echo x > /mnt/scratch && umount /mnt")) == 0)
print("QEMU " .. vm.process:pid())
io.stdout:flush()
vmlua.sleep(600)
]], name, files.kernel, files.initrd, disk)) }
      h.until_(function() return h.out:match("QEMU %d+") end, 120)
      local pid = tonumber(h.out:match("QEMU (%d+)"))
      local paths = runtime.paths(name)
      local overlay = runtime.overlay(paths, 1)
      assert.is_truthy(core.stat(overlay))
      h.process:kill("KILL")
      h.wait(30)
      assert.is_true(guest.gone_within(pid, 20), "QEMU outlived its guard's deadline")
      assert.is_true(wait_gone(overlay, 5), "the overlay was left behind")
      assert.is_true(wait_gone(paths.dir, 5), "the runtime directory was left behind")
      assert.are.equal(before, md5(disk))
    end)

    it("lets several VMs run over one file at once, each on its own overlay", function()
      local disk = scratch_data()
      local before = md5(disk)
      local a, b = ephemeral_vm(disk), ephemeral_vm(disk)
      guest.boot(a)
      guest.boot(b)
      guest_writes(a, "mine", "from-a")
      guest_writes(b, "mine", "from-b")
      assert.matches("from%-a", guest_reads(a, "mine"))
      assert.matches("from%-b", guest_reads(b, "mine"))
      a:stop()
      b:stop()
      assert.are.equal(before, md5(disk))
    end)
  end)

  describe("QEMU's image lock", function()
    it("keeps a second VM off a disk the first writes, naming the disk and the holder", function()
      local disk = scratch_data()
      local first = guest.vm("x86_64", { disks = { vmlua.disk { path = disk } } })
      guest.boot(first)
      guest_writes(first, "kept", "first-vm-data")
      local second = guest.vm("x86_64", { disks = { vmlua.disk { path = disk } } })
      local ok, err = pcall(second.start, second)
      assert.is_false(ok)
      assert.matches("vm " .. lit(second.name) .. ": cannot start: .-disks_spec.lua:%d+: disks%[1%]%.path: "
        .. lit(disk) .. " is in use by VM " .. lit(first.name)
        .. " %(QEMU pid " .. first.process:pid() .. "%)", err)
      assert.are.equal("error", second.state)
      -- a read-only or ephemeral user would not write it, but the first still does
      local reader = guest.vm("x86_64", { disks = { vmlua.disk { path = disk, ephemeral = true } } })
      ok, err = pcall(reader.start, reader)
      assert.is_false(ok)
      assert.matches("is in use by VM " .. lit(first.name), err)
      -- the first VM runs on, with its data
      assert.are.equal("running", first.state)
      assert.matches("first%-vm%-data", guest_reads(first, "kept"))
      assert.are.equal("graceful", first:stop())
      assert.are.equal("first-vm-data\n", file_in(disk, "kept"))
      assert.is_true(os.execute("e2fsck -fn " .. q(disk) .. " >/dev/null 2>&1") == true)
    end)

    it("held by a QEMU that vmlua did not start is told in words that name the disk", function()
      local disk = scratch_data()
      local holder = assert(core.spawn {
        file = assert(require("vmlua.host").which("qemu-system-x86_64")),
        args = { "qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "q35", "-accel", "tcg",
                 "-drive", "if=none,id=d0,format=raw,file=" .. disk, "-device", "virtio-blk-pci,drive=d0" },
        on_exit = function() end,
      })
      finally(function() holder:close() end)
      -- QEMU holds the lock once it has opened the image
      local deadline = core.now() + 10
      while core.now() < deadline and os.execute("qemu-io -c quit -f raw " .. q(disk) .. " >/dev/null 2>&1") do
        task.sleep(0.1)
      end
      local vm = guest.vm("x86_64", { disks = { vmlua.disk { path = disk } } })
      local ok, err = pcall(vm.start, vm)
      assert.is_false(ok)
      assert.matches("disks%[1%]%.path: " .. lit(disk) .. " is in use by another process, which holds "
        .. "QEMU's lock on it", err)
      assert.is_true(holder:running())
    end)
  end)
end)
