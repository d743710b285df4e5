-- Nothing waits forever: a run that fails or times out leaves the console
-- usable and the run lock free, a queued run keeps its timeout, and a hung
-- QEMU can still be stopped and killed.
local core = require "vmlua.core"
local machine = require "vmlua.machine"
local task = require "vmlua.task"
local guest = require "support.guest"

-- Runs fn(...) as a task; returns pcall's results, or fails the spec when
-- it has not returned within `seconds` (the bug being a wait forever).
local function within(seconds, fn, ...)
  local args = table.pack(...)
  local result
  local done = task.condition()
  task.spawn(function()
    result = table.pack(pcall(fn, table.unpack(args, 1, args.n)))
    done.notify()
  end)
  done.wait(function() return result ~= nil end, seconds)
  assert(result, "did not return within " .. seconds .. " s")
  return table.unpack(result, 1, result.n)
end

-- A literal for assert.matches (VM names hold "-").
local function lit(s) return (s:gsub("%p", "%%%0")) end

-- The shell over the console is the same on every backend: libvirt_spec,
-- which loads this file again, runs only "a hung QEMU".
local describe_shell = guest.on_libvirt() and function() end or describe

describe_shell("vm:run", function()
  local vm
  setup(function() vm = guest.boot(guest.vm("x86_64")) end)
  teardown(guest.cleanup)

  it("reports a bad argument at the caller's line and stays usable", function()
    local ok, err = pcall(function() vm:run(nil) end)
    assert.is_false(ok)
    assert.matches("hangs_spec%.lua:%d+: vm " .. lit(vm.name) .. ": run: the command must be a string, got nil", err)
    ok, err = pcall(function() vm:run(42) end)
    assert.is_false(ok)
    assert.matches("hangs_spec%.lua:%d+: vm " .. lit(vm.name) .. ": run: the command must be a string, got number 42",
                   err)
    ok, err = pcall(function() vm:run("true", { timeout = "x" }) end)
    assert.is_false(ok)
    assert.matches('hangs_spec%.lua:%d+: vm ' .. lit(vm.name) ..
                   ': run: timeout must be a number of seconds %(0 or more, finite%), got string "x"', err)
    local done, out, status = within(30, vm.run, vm, "echo ok", { timeout = 20 })
    assert.is_true(done, out)
    assert.are.equal("ok\n", out)
    assert.are.equal(0, status)
  end)

  it("times out a command that never ends, interrupts it, and runs the next one", function()
    local ok, err = within(60, function()
      local out = vm:run("sleep 1000", { timeout = 2 }) -- not a tail call: the error names this line
      return out
    end)
    assert.is_false(ok)
    assert.matches("hangs_spec%.lua:%d+: vm " .. lit(vm.name) ..
                   ': timed out after 2 s waiting for the command "sleep 1000"', err)
    assert.matches("interrupted it with Ctrl%-C", err)
    local done, out, status = within(60, vm.run, vm, "echo ok", { timeout = 20 })
    assert.is_true(done, out)
    assert.are.equal("ok\n", out)
    assert.are.equal(0, status)
    -- the sleep is gone from the guest
    local _, ps = within(60, vm.run, vm, "ps", { timeout = 20 })
    assert.is_nil(ps:find("sleep 1000", 1, true))
  end)

  it("keeps its timeout while queued behind another run", function()
    local first
    task.spawn(function() first = table.pack(pcall(vm.run, vm, "sleep 6; echo first", { timeout = 40 })) end)
    local ok, err = within(30, vm.run, vm, "echo second", { timeout = 1 })
    assert.is_false(ok)
    assert.matches('timed out after 1 s waiting for the command "echo second" %(queued behind another run%)', err)
    local done = task.condition()
    done.wait(function() return first ~= nil end, 40)
    assert.are.same({ true, "first\n", 0 }, { first[1], first[2], first[3] })
    local _, out = within(30, vm.run, vm, "echo third", { timeout = 20 })
    assert.are.equal("third\n", out)
  end)

  it("frees the lock when a waiting run is interrupted (Ctrl-C at the prompt)", function()
    local result
    local co = task.spawn(function() result = table.pack(pcall(vm.run, vm, "sleep 1000", { timeout = 60 })) end)
    local waited = task.condition()
    waited.wait(function() return false end, 1)
    assert.is_true(task.interrupt(co, "interrupted"))
    assert.are.same({ false, "interrupted" }, { result[1], result[2] })
    local done, out, status = within(60, vm.run, vm, "echo after", { timeout = 20 })
    assert.is_true(done, out)
    assert.are.equal("after\n", out)
    assert.are.equal(0, status)
  end)
end)

describe("vm:run on a console whose shell does not come back", function()
  local saved
  before_each(function() saved = machine.interrupt_timeout end)
  after_each(function()
    machine.interrupt_timeout = saved
    guest.cleanup()
  end)

  it("fails later runs at once, saying why", function()
    local vm = guest.boot(guest.vm("x86_64"))
    machine.interrupt_timeout = 3
    local ok, err = within(60, vm.run, vm, "trap '' INT QUIT; sleep 1000", { timeout = 2 })
    assert.is_false(ok)
    assert.matches("timed out after 2 s waiting for the command", err)
    assert.matches("it did not stop on Ctrl%-C or Ctrl%-\\, so later runs on this console fail at once", err)
    ok, err = within(10, vm.run, vm, "echo ok", { timeout = 30 }) -- at once, not after 30 s
    assert.is_false(ok)
    assert.matches("cannot run a command: the shell on the console has not answered since the command " ..
                   "\"trap '' INT QUIT; sleep 1000\" timed out", err)
  end)
end)

describe("a hung QEMU", function()
  local saved
  local stopped_pid
  before_each(function() saved = machine.start_timeout end)
  after_each(function()
    machine.start_timeout = saved
    if stopped_pid and core.alive(stopped_pid) then os.execute("kill -CONT " .. stopped_pid) end
    stopped_pid = nil
    guest.cleanup()
  end)

  local function hang(vm)
    stopped_pid = vm.process:pid()
    assert(os.execute("kill -STOP " .. stopped_pid))
  end

  it("times out pause() and can still be stopped (forced) afterwards", function()
    local vm = guest.boot(guest.vm("x86_64"))
    machine.start_timeout = 2
    hang(vm)
    local ok, err = within(30, vm.pause, vm)
    assert.is_false(ok)
    assert.matches("vm " .. lit(vm.name) .. ": pause", err)
    assert.matches("QEMU did not answer within 2 s", err)
    assert.are.equal("running", vm.state)
    assert.is_true(vm:can_stop())
    local done, how = within(60, vm.stop, vm, { timeout = 2 })
    assert.is_true(done, how)
    assert.are.equal("forced", how)
    assert.are.equal("stopped", vm.state)
    assert.is_false(core.alive(stopped_pid))
  end)

  it("times out resume() and can still be killed afterwards", function()
    local vm = guest.boot(guest.vm("x86_64"))
    vm:pause()
    machine.start_timeout = 2
    hang(vm)
    local ok = within(30, vm.resume, vm)
    assert.is_false(ok)
    assert.are.equal("paused", vm.state)
    assert.is_true(within(30, vm.kill, vm))
    assert.are.equal("stopped", vm.state)
    assert.is_false(core.alive(stopped_pid))
  end)
end)
