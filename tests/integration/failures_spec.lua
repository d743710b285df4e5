-- Every way a VM can fail at run time ends in "error" (or "stopped") with a
-- reason, fires the state events, removes the runtime directory and leaves
-- no QEMU process behind.
local core = require "vmlua.core"
local guest = require "support.guest"

local function assert_gone(vm, pid)
  assert.is_false(core.alive(pid), "QEMU pid " .. pid .. " is still alive")
  assert.is_nil(core.stat(vm.paths.dir), "runtime directory left behind")
end

local function states_of(vm)
  local seen = {}
  vm:on("state", function(new) seen[#seen + 1] = new end)
  return seen
end

describe("a failing VM", function()
  after_each(guest.cleanup)

  it("reports QEMU's own words when QEMU exits during start", function()
    local first, disk = guest.vm_with_disk("x86_64")
    first:start()
    local second = guest.vm_with_disk("x86_64", { disk_path = disk })
    local seen = states_of(second)
    local ok, err = pcall(second.start, second)
    assert.is_false(ok)
    assert.matches("vm " .. second.name .. ": cannot start: QEMU exited with status 1: ", err, 1, true)
    assert.matches('Failed to get "write" lock', err, 1, true)
    assert.are.equal("error", second.state)
    assert.matches("QEMU exited with status 1", second.reason)
    assert.are.same({ "starting", "error" }, seen)
    assert.is_nil(core.stat(second.paths.dir))
    assert.are.equal("running", first.state)
    first:kill()
  end)

  it("refuses to start a VM whose name a running VM holds, and reclaims a dead one's directory", function()
    local first = guest.vm("x86_64")
    first:start()
    local pid = first.process:pid()
    local twin = guest.vm("x86_64", { name = first.name })
    local ok, err = pcall(twin.start, twin)
    assert.is_false(ok)
    assert.matches("vm " .. first.name .. ": cannot start: already running (QEMU pid " .. pid, err, 1, true)
    assert.are.equal("stopped", twin.state)
    assert.are.equal("running", first.state)
    first:kill()
    -- A pid file left by a QEMU that is gone does not hold the name.
    assert(core.mkdir_private(first.paths.dir))
    local f = assert(io.open(first.paths.pid, "w"))
    f:write(pid, "\n")
    f:close()
    twin:start()
    assert.are.equal("running", twin.state)
    twin:kill()
  end)

  it("ends in error when the guest kernel panics", function()
    local vm = guest.boot(guest.vm("x86_64"))
    local seen, pid = states_of(vm), vm.process:pid()
    vm:send("echo c > /proc/sysrq-trigger\n")
    vm:wait("error", { timeout = 60 })
    assert.are.equal("the guest kernel panicked", vm.reason)
    assert.are.same({ "stopping", "error" }, seen)
    assert_gone(vm, pid)
  end)

  it("ends in error when QEMU is killed with SIGKILL", function()
    local vm = guest.boot(guest.vm("x86_64"))
    local seen, pid = states_of(vm), vm.process:pid()
    os.execute("kill -KILL " .. pid)
    vm:wait("error", { timeout = 30 })
    assert.are.equal("QEMU was killed by SIGKILL", vm.reason)
    assert.are.same({ "error" }, seen)
    assert_gone(vm, pid)
  end)

  it("ends in error, and ends QEMU, when the QMP connection closes", function()
    local vm = guest.boot(guest.vm("x86_64"))
    local seen, pid = states_of(vm), vm.process:pid()
    vm.qmp.stream:close()       -- as if QEMU had hung up its monitor
    vm.qmp:_closed("connection reset")
    vm:wait("error", { timeout = 30 })
    assert.are.equal("the QMP connection closed: connection reset", vm.reason)
    assert.are.same({ "error" }, seen)
    assert_gone(vm, pid)
  end)

  it("names the VM, the pattern and the last console lines when expect times out", function()
    local vm = guest.boot(guest.vm("x86_64"))
    vm:send("echo marker-$((40+2))\n")
    vm:expect("marker%-42")
    local ok, err = pcall(vm.expect, vm, "never printed", { timeout = 1 })
    assert.is_false(ok)
    assert.matches("vm " .. vm.name .. ": timed out after 1 s waiting for console output matching "
                   .. '"never printed"', err, 1, true)
    assert.matches("--- last console lines of " .. vm.name .. " ---", err, 1, true)
    assert.matches("marker-42", err, 1, true)
    assert.are.equal("running", vm.state)
    vm:kill()
  end)
end)
