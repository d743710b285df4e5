-- Snapshots with real guests: vm:save, vm:restore and vmlua.restore bring a
-- guest back where it was (a file in its RAM-backed /tmp, a process started
-- before the save), with disks that match its memory; clones are
-- independent; a mismatched VM is refused before anything starts; an
-- interrupted save leaves nothing behind.
local vmlua = require "vmlua"
local core = require "vmlua.core"
local guest = require "support.guest"
local helpers = require "support.helpers"

local q = helpers.shell_quote

local function sh(vm, cmd)
  local out, status = vm:run(cmd, { timeout = 60 })
  assert.are.equal(0, status, cmd .. ": " .. out)
  return out
end

-- Marks the guest: a file in /tmp and a background process; returns its pid.
local function mark(vm)
  sh(vm, "echo before-save > /tmp/marker")
  return assert(tonumber(sh(vm, "sleep 1000 & echo $!"):match("(%d+)")))
end

local function assert_marked(vm, pid)
  assert.are.equal("before-save", sh(vm, "cat /tmp/marker"):match("%S+"))
  assert.truthy(sh(vm, "ps"):find("%f[%d]" .. pid .. "%f[%D][^\n]*sleep 1000"),
                "the sleep started before the save is gone")
end

local function ls(dir)
  local p = io.popen("ls -A " .. q(dir))
  local names = p:read("a")
  p:close()
  return names
end

local function md5(file)
  local p = io.popen("md5sum " .. q(file))
  local sum = p:read("a"):match("^(%x+)")
  p:close()
  return sum
end

describe("snapshots", function()
  after_each(guest.cleanup)

  it("vm:save stops the VM, and vm:restore brings it back where it was, its disk rewound to match", function()
    local vm, disk = guest.vm_with_disk("x86_64")
    guest.boot(vm)
    local pid = mark(vm)
    sh(vm, "mount /dev/vda /mnt && echo on-disk > /mnt/a && sync")
    local dir = guest.tmpdir()
    local snap = dir .. "/snap"
    assert.are.equal(vm, vm:save(snap))
    assert.are.equal("stopped", vm.state)
    assert.matches("saved to " .. snap, vm.reason, 1, true)
    assert.are.equal("config.json\ndisk1.qcow2\nfingerprint\nstate\n", ls(snap))
    assert.are.equal("snap\n", ls(dir), "a temporary file is left beside the snapshot")

    -- The disk changes after the save: the restore must put back the saved one.
    guest.copy(guest.files("x86_64").data, disk)
    vm:restore(snap)
    assert.are.equal("running", vm.state)
    assert_marked(vm, pid)
    assert.are.equal("on-disk", sh(vm, "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/a"):match("%S+"))
    sh(vm, "echo after > /mnt/b && umount /mnt")
    vm:kill()
    -- The VM writes its own disk again, not the snapshot's copy.
    assert.is_true(os.execute("e2fsck -fn " .. q(disk) .. " >/dev/null 2>&1") == true, "the restored disk is not clean")
    local p = io.popen("debugfs -R 'cat /b' " .. q(disk) .. " 2>/dev/null")
    assert.are.equal("after", p:read("a"):match("%S+"))
    p:close()
  end)

  it("keep_running leaves the guest running, and vmlua.restore rebuilds the VM from the snapshot beside it", function()
    local vm = guest.boot(guest.vm("x86_64"))
    local pid = mark(vm)
    local snap = guest.tmpdir() .. "/snap"
    vm:save(snap, { keep_running = true })
    assert.are.equal("running", vm.state)
    assert_marked(vm, pid)
    sh(vm, "echo changed > /tmp/marker")

    local copy = vmlua.restore(snap, { name = vm.name .. "-copy" })
    assert.are.equal(vm.name .. "-copy", copy.name)
    assert.are.equal("running", copy.state)
    assert.are.equal(vm.config.memory, copy.config.memory)
    assert_marked(copy, pid)
    assert.are.equal("changed", sh(vm, "cat /tmp/marker"):match("%S+"))
  end)

  it("restores one snapshot as two ephemeral clones at once, independent, the disks untouched", function()
    local vm, disk = guest.vm_with_disk("x86_64")
    guest.boot(vm)
    local pid = mark(vm)
    sh(vm, "mount /dev/vda /mnt && echo on-disk > /mnt/a && sync")
    local snap = guest.tmpdir() .. "/snap"
    vm:save(snap)
    local disk_sum, copy_sum = md5(disk), md5(snap .. "/disk1.qcow2")

    local a = vmlua.restore(snap, { ephemeral = true })
    local b = vmlua.restore(snap, { ephemeral = true })
    assert.are_not.equal(a.name, b.name)
    assert.are.equal("running", a.state)
    assert.are.equal("running", b.state)
    assert_marked(a, pid)
    assert_marked(b, pid)
    sh(a, "echo from-a > /mnt/only-a && echo a > /tmp/marker && sync")
    assert.are.equal("on-disk", sh(b, "cat /mnt/a"):match("%S+"))
    local seen = sh(b, "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/only-a 2>/dev/null || echo gone")
    assert.are.equal("gone", seen:match("%S+"))
    assert.are.equal("before-save", sh(b, "cat /tmp/marker"):match("%S+"))
    local dirs = { a.paths.dir, b.paths.dir }
    a:kill()
    b:kill()
    for _, d in ipairs(dirs) do assert.is_nil(core.stat(d), d .. " (its overlay) is left") end
    assert.are.equal(disk_sum, md5(disk), "the original disk changed")
    assert.are.equal(copy_sum, md5(snap .. "/disk1.qcow2"), "the snapshot's disk changed")
  end)

  it("refuses to restore into a VM whose configuration differs, naming the field, and starts nothing", function()
    local vm = guest.boot(guest.vm("x86_64"))
    local snap = guest.tmpdir() .. "/snap"
    vm:save(snap)
    local bigger = guest.vm("x86_64", { memory = "512M" })
    local ok, err = pcall(function() bigger:restore(snap) end)
    assert.is_false(ok)
    assert.matches("vm " .. bigger.name .. ": cannot restore " .. snap
                   .. ": memory differs: the snapshot has 256 MiB, this VM 512 MiB", err, 1, true)
    assert.matches("^[^:]*snapshot_spec%.lua:%d+: ", err) -- at the caller's line
    assert.are.equal("stopped", bigger.state)
    assert.is_nil(bigger.process)
    assert.is_nil(core.stat(require("vmlua.runtime").paths(bigger.name).dir))
  end)

  it("leaves no snapshot and no temporary file when QEMU is killed during the save", function()
    local vm = guest.boot(guest.vm("x86_64"))
    local dir = guest.tmpdir()
    local killed = false
    vm:on("qmp", function(name, data)
      if name == "MIGRATION" and data.status == "active" and not killed then
        killed = true
        vm.process:kill("KILL")
      end
    end)
    local ok, err = pcall(vm.save, vm, dir .. "/snap")
    assert.is_true(killed, "the migration never became active")
    assert.is_false(ok)
    assert.matches("cannot save to " .. dir .. "/snap", err, 1, true)
    assert.are.equal("error", vm.state)
    assert.are.equal("", ls(dir))
    assert.is_nil(core.stat(vm.paths.dir), "the migration socket kept the runtime directory")
  end)
end)
