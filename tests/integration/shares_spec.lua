-- Shared folders (vmlua.share) through virtio-fs: the guest mounts a host
-- directory by its tag, reads and writes it (or is refused, read-only), and
-- the virtiofsd behind it never outlives the VM, however the VM ends.
local core = require "vmlua.core"
local runtime = require "vmlua.runtime"
local vmlua = require "vmlua"
local cli = require "support.cli"
local guest = require "support.guest"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local read = require("vmlua.runtime").read_file

-- The pids of the virtiofsd processes serving `socket` (QEMU's command line
-- names the socket too, without the option).
local function daemons(socket)
  local text = "--socket-path=" .. socket
  local pids = {}
  local p = assert(io.popen("ls /proc"))
  for entry in p:lines() do
    local cmdline = entry:match("^%d+$") and read("/proc/" .. entry .. "/cmdline")
    if cmdline and cmdline:find(text, 1, true) then pids[#pids + 1] = tonumber(entry) end
  end
  p:close()
  return pids
end

-- Whether no virtiofsd serves `socket` within `seconds`.
local function none_within(socket, seconds)
  local deadline = core.now() + seconds
  while core.now() < deadline do
    if #daemons(socket) == 0 then return true end
    vmlua.sleep(0.1)
  end
  return false
end

local function host_dir()
  local dir = guest.tmpdir()
  write(dir .. "/hello.txt", "hello from the host\n")
  return dir
end

describe("shares", function()
  after_each(guest.cleanup)

  it("read-write: the guest reads a host file and writes one back (added with vm:add)", function()
    local dir = host_dir()
    local vm = guest.vm("x86_64")
    vm:add(vmlua.share { host = dir, tag = "src" })
    guest.boot(vm)
    local out, status = vm:run("mount -t virtiofs src /mnt && cat /mnt/hello.txt")
    assert.are.equal(0, status, out)
    assert.matches("hello from the host", out)
    out, status = vm:run("echo written-by-the-guest > /mnt/back.txt && mkdir /mnt/sub && echo deep > /mnt/sub/f")
    assert.are.equal(0, status, out)
    -- the host sees them at once: no unmount, no sync
    assert.are.equal("written-by-the-guest\n", read(dir .. "/back.txt"))
    assert.are.equal("deep\n", read(dir .. "/sub/f"))
    -- and the guest sees what the host writes
    write(dir .. "/later.txt", "from the host, later\n")
    assert.matches("from the host, later", vm:run("cat /mnt/later.txt"))
    assert.are.equal("graceful", vm:stop())
  end)

  it("read-only: the guest reads, and every write is refused", function()
    local dir = host_dir()
    local vm = guest.vm("x86_64", { shares = { vmlua.share { host = dir, tag = "ro", readonly = true } } })
    guest.boot(vm)
    local out, status = vm:run("mount -t virtiofs ro /mnt && cat /mnt/hello.txt")
    assert.are.equal(0, status, out)
    assert.matches("hello from the host", out)
    for _, cmd in ipairs { "echo x > /mnt/new.txt", "echo x >> /mnt/hello.txt", "rm /mnt/hello.txt",
                           "mkdir /mnt/d", "mv /mnt/hello.txt /mnt/moved.txt" } do
      out, status = vm:run(cmd)
      assert.are_not.equal(0, status, cmd .. " was allowed")
      assert.matches("Read%-only file system", out, cmd)
    end
    assert.are.equal("hello from the host\n", read(dir .. "/hello.txt"))
    assert.is_nil(read(dir .. "/new.txt"))
    assert.is_nil(read(dir .. "/moved.txt"))
    -- the host's own view of the directory stays writable
    write(dir .. "/host.txt", "still mine\n")
    assert.are.equal("still mine\n", read(dir .. "/host.txt"))
    vm:stop()
  end)

  it("ends its daemon with the VM: after vm:stop, and when QEMU is killed", function()
    local vm = guest.vm("x86_64", { shares = { vmlua.share { host = host_dir(), tag = "src" } } })
    local socket = runtime.share_socket(runtime.paths(vm.name), 1)
    guest.boot(vm)
    assert.is_true(#daemons(socket) > 0, "no virtiofsd runs for the share")
    vm:stop()
    assert.are.same({}, daemons(socket), "virtiofsd outlived vm:stop()")
    assert.is_nil(core.stat(socket))

    guest.boot(vm)
    assert.matches("hello from the host", vm:run("mount -t virtiofs src /mnt && cat /mnt/hello.txt"))
    vm.process:kill("KILL")
    vm:wait("error", { timeout = 10 })
    assert.are.same({}, daemons(socket), "virtiofsd outlived QEMU")
    assert.is_nil(core.stat(socket))
  end)

  it("ends its daemon when vmlua itself is killed", function()
    local dir, files = guest.tmpdir(), guest.files("x86_64")
    local name = "shares-" .. core.getpid() .. "-" .. math.random(1e6)
    local socket = runtime.share_socket(runtime.paths(name), 1)
    local h = cli.spawn { cli.write(dir, "share.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q },
  shares = { vmlua.share { host = ".", tag = "here" } } }
vm:start()
vm:expect("vmlua# ", { timeout = 60 })
assert(select(2, vm:run("mount -t virtiofs here /mnt && ls /mnt/share.lua")) == 0)
print("QEMU " .. vm.process:pid())
io.stdout:flush()
vmlua.sleep(600)
]], name, files.kernel, files.initrd)) }
    h.until_(function() return h.out:match("QEMU %d+") end, 120)
    local qemu = tonumber(h.out:match("QEMU (%d+)"))
    assert.is_true(#daemons(socket) > 0, "no virtiofsd runs for the share")
    h.process:kill("KILL")
    h.wait(30)
    assert.is_true(none_within(socket, 10), "virtiofsd outlived vmlua")
    assert.is_true(guest.gone_within(qemu, 30), "QEMU outlived its guard's deadline")
  end)
end)
