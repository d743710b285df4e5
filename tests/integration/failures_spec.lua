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
    -- a qcow2 image of a version QEMU does not know: it passes validation, QEMU refuses it
    local disk = guest.tmpdir() .. "/future.qcow2"
    local f = assert(io.open(disk, "wb"))
    f:write("QFI\251\0\0\0\99", string.rep("\0", 504))
    f:close()
    local second = guest.vm_with_disk("x86_64", { disk_path = disk })
    local seen = states_of(second)
    local ok, err = pcall(second.start, second)
    assert.is_false(ok)
    local says = guest.on_libvirt() and "libvirt " or "QEMU exited with status 1: "
    assert.matches("vm " .. second.name .. ": cannot start: " .. says, err, 1, true)
    assert.matches("Unsupported qcow2 version 99", err, 1, true)
    assert.are.equal("error", second.state)
    assert.matches(says, second.reason, 1, true)
    assert.are.same({ "starting", "error" }, seen)
    assert.is_nil(core.stat(second.paths.dir))
  end)

  it("refuses to start a VM whose name a running VM holds, and reclaims a dead one's directory", function()
    local first = guest.vm("x86_64")
    first:start()
    local pid = first.process:pid()
    local twin = guest.vm("x86_64", { name = first.name })
    local ok, err = pcall(twin.start, twin)
    assert.is_false(ok)
    assert.matches(string.format("vm %s: cannot start: already running (QEMU pid %d, vmlua pid %d, runtime "
      .. "directory %s)", first.name, pid, core.getpid(), first.paths.dir), err, 1, true)
    assert.are.equal("stopped", twin.state)
    assert.are.equal("running", first.state)
    assert.is_true(core.stat(first.paths.pid) ~= nil, "the refused twin removed the running VM's files")
    first:kill()
    -- A pid file that holds a live but unrelated pid (1 here) does not hold
    -- the name: only the lock does.
    assert(core.mkdir_private(first.paths.dir))
    local f = assert(io.open(first.paths.pid, "w"))
    f:write("1\n")
    f:close()
    twin:start()
    assert.are.equal("running", twin.state)
    twin:kill()
    assert.is_nil(core.stat(twin.paths.dir))
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
    assert.are.equal(guest.killed_reason(true), vm.reason)
    assert.are.same({ "error" }, seen)
    assert_gone(vm, pid)
  end)

  -- QEMU's own QMP socket; libvirt_spec has libvirtd going away instead
  local it_qemu = guest.on_libvirt() and pending or it
  it_qemu("ends in error, and ends QEMU, when the QMP connection closes", function()
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

  it("says what really happened when QEMU dies while the script is in expect", function()
    local vm = guest.boot(guest.vm("x86_64"))
    local pid = vm.process:pid()
    core.timer(1, 0, function() vm.process:kill("KILL") end)
    local ok, err = pcall(vm.expect, vm, "never printed", { timeout = 30 })
    assert.is_false(ok)
    assert.matches("vm " .. vm.name .. ": " .. guest.killed_reason() .. " while waiting for console output", err, 1,
                   true)
    assert.is_nil(err:find("the console closed", 1, true), err)
    assert_gone(vm, pid)
  end)

  it("refuses to stop a VM that never started or has failed, and never claims graceful", function()
    local idle = guest.vm("x86_64")
    local ok, err = pcall(idle.stop, idle)
    assert.is_false(ok)
    assert.matches("vm " .. idle.name .. ": cannot stop: it is stopped", err, 1, true)
    local vm = guest.boot(guest.vm("x86_64"))
    vm.process:kill("KILL")
    vm:wait("error", { timeout = 30 })
    ok, err = pcall(vm.stop, vm)
    assert.is_false(ok)
    assert.matches("vm " .. vm.name .. ": cannot stop: it is error (" .. guest.killed_reason() .. ")", err, 1, true)
  end)

  -- As SIGTERM does: every VM is stopped while this one is still starting.
  for _, delay in ipairs { 0, 0.2, 0.5 } do
    it("ends its events on its final state when stopped " .. delay .. " s into start", function()
      local machine = require "vmlua.machine"
      local task = require "vmlua.task"
      local vm = guest.vm("x86_64")
      local seen = states_of(vm)
      local done
      task.spawn(function() done = table.pack(pcall(vm.start, vm)) end)
      local timer = core.timer(delay, 0, function() machine.stop_all(false, 3) end)
      local deadline = core.now() + 60
      while not (done and machine.live[vm] == nil) and core.now() < deadline do core.run("once") end
      timer:close()
      assert.is_truthy(done, "start never returned")
      assert.is_true(vm.state == "stopped" or vm.state == "error", vm.state)
      assert.are.equal(vm.state, seen[#seen], table.concat(seen, " "))
      for i = 2, #seen do assert.are_not.equal(seen[i - 1], seen[i]) end
      assert.is_nil(core.stat(vm.paths.dir))
    end)
  end

  it("has called the state handlers by the time start, pause, resume and stop return", function()
    local task = require "vmlua.task"
    local vm = guest.vm("x86_64")
    local last
    vm:on("state", function(new) last = new end)
    local after = {}
    local finished
    task.spawn(function()
      local ok, err = pcall(function()
        vm:start()
        after.start = last
        vm:expect("vmlua# ", { timeout = 60 })
        vm:pause()
        after.pause = last
        vm:resume()
        after.resume = last
        vm:stop { timeout = 30 }
        after.stop = last
      end)
      finished = { ok, err }
    end)
    local deadline = core.now() + 120
    while not finished and core.now() < deadline do core.run("once") end
    assert.is_truthy(finished, "the task never finished")
    assert.is_true(finished[1], finished[2])
    assert.are.same({ start = "running", pause = "paused", resume = "running", stop = "stopped" }, after)
  end)
end)
