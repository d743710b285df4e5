-- No way of ending a VM throws away what the guest wrote: each case writes
-- 4 MiB to a file on the mounted data disk without sync, ends the VM, and
-- reads the file back from the image on the host (debugfs).
local core = require "vmlua.core"
local task = require "vmlua.task"
local cli = require "support.cli"
local guest = require "support.guest"
local helpers = require "support.helpers"

local q = helpers.shell_quote

local WRITE = "mount /dev/vda /mnt && dd if=/dev/urandom of=/mnt/big bs=4096 count=1024 2>/dev/null"
  .. " && md5sum /mnt/big"

-- Writes the file in a booted guest; returns its md5 as the guest sees it.
local function write_big(vm)
  local out, status = vm:run(WRITE, { timeout = 60 })
  assert.are.equal(0, status, out)
  return assert(out:match("^(%x+)"), out)
end

-- The md5 of /big in the disk image, or nil and why not; and whether the
-- file system is clean (e2fsck -n finds nothing to do).
local function on_disk(disk)
  local dir = guest.tmpdir()
  local copy = dir .. "/big"
  os.execute(string.format("debugfs -R %s %s >/dev/null 2>&1", q("dump /big " .. copy), q(disk)))
  local p = io.popen("md5sum " .. q(copy) .. " 2>/dev/null")
  local md5 = p:read("a"):match("^(%x+)")
  p:close()
  local clean = os.execute("e2fsck -fn " .. q(disk) .. " >/dev/null 2>&1")
  return md5, clean
end

local function assert_kept(disk, md5)
  local found, clean = on_disk(disk)
  assert.are.equal(md5, found, "the 4 MiB file is not on the disk as the guest wrote it")
  assert.is_true(clean == true, "the file system was not left clean")
end

-- A script for the vmlua executable: boots a guest with `disk`, writes the
-- file, prints "MD5 <sum>" and "QEMU <pid>", then runs `tail`.
local function script(dir, name, disk, tail)
  local files = guest.files("x86_64")
  return cli.write(dir, "data.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q },
  disks = { vmlua.disk { path = %q } } }
vm:start()
vm:expect("vmlua# ", { timeout = 60 })
local out = vm:run(%q, { timeout = 60 })
print("QEMU " .. vm.process:pid())
print("MD5 " .. out:match("^(%%x+)"))
io.stdout:flush()
]], name, files.kernel, files.initrd, disk, WRITE) .. tail)
end

local function scratch_disk()
  return guest.copy(guest.files("x86_64").data, guest.tmpdir() .. "/data.ext4")
end

local function spawn(tail)
  local dir, disk = guest.tmpdir(), scratch_disk()
  local name = "data-" .. core.getpid() .. "-" .. math.random(1e6)
  local h = cli.spawn { script(dir, name, disk, tail) }
  h.until_(function() return h.out:match("MD5 %x+") end, 180)
  return h, disk, h.out:match("MD5 (%x+)"), tonumber(h.out:match("QEMU (%d+)")), name
end

describe("the data a guest wrote", function()
  after_each(guest.cleanup)

  it("survives vm:pause() then vm:stop(): the VM resumes and powers off", function()
    local vm, disk = guest.vm_with_disk("x86_64")
    guest.boot(vm)
    local md5 = write_big(vm)
    vm:pause()
    assert.are.equal("graceful", vm:stop { timeout = 30 })
    assert.are.equal("stopped", vm.state)
    assert_kept(disk, md5)
  end)

  for signal, status in pairs { TERM = 143, INT = 130 } do
    it("survives SIG" .. signal .. " during vm:stop{timeout=20}: the stop is not cut short", function()
      local h, disk, md5, pid = spawn('print("STOPPING") io.stdout:flush()\n'
                                      .. 'print("STOP " .. vm:stop { timeout = 20 }) io.stdout:flush()\n')
      h.until_(function() return h.out:find("STOPPING") end)
      h.process:kill(signal)
      local code, out, err = h.wait(120)
      assert.are.equal(status, code, err)
      assert.is_nil(out:match("STOP forced"), err)
      assert.is_nil(err:match("forcing"), err)
      assert.is_true(guest.gone_within(pid, 10))
      assert_kept(disk, md5)
    end)
  end

  it("survives SIGHUP (the terminal closed): a graceful stop, and exit 129", function()
    local h, disk, md5, pid = spawn('vmlua.sleep(600)\n')
    h.process:kill("HUP")
    local code, _, err = h.wait(120)
    assert.are.equal(129, code, err)
    assert.is_true(guest.gone_within(pid, 10))
    assert_kept(disk, md5)
  end)

  it("survives SIGKILL of vmlua: its guard presses the power button", function()
    local h, disk, md5, pid, name = spawn('vmlua.sleep(600)\n')
    local rundir = require("vmlua.runtime").paths(name).dir
    assert.is_truthy(core.stat(rundir))
    h.process:kill("KILL")
    h.wait(30)
    assert.is_true(guest.gone_within(pid, 20), "QEMU outlived its guard's deadline")
    assert_kept(disk, md5)
    local deadline = core.now() + 5
    while core.stat(rundir) and core.now() < deadline do task.sleep(0.1) end
    assert.is_nil(core.stat(rundir), "runtime directory left behind")
  end)
end)
