-- Real guests under QEMU (TCG here): boot, run, the state machine, disks.
local core = require "vmlua.core"
local guest = require "support.guest"

describe("a real guest", function()
  after_each(guest.cleanup)

  for _, arch in ipairs { "x86_64", "aarch64" } do
    it("boots on " .. arch .. " and runs commands with their status", function()
      local vm = guest.boot(guest.vm(arch))
      local out, status = vm:run("uname -m")
      assert.are.equal(arch .. "\n", out)
      assert.are.equal(0, status)
      out, status = vm:run("echo one; echo 'two three' >&2; exit_code() { return 3; }; exit_code")
      assert.are.equal("one\ntwo three\n", out)
      assert.are.equal(3, status)
      vm:kill()
      assert.are.equal("stopped", vm.state)
    end)
  end

  it("goes through start, pause, resume and stop, firing each state in order", function()
    local vm = guest.vm("x86_64")
    local seen, named = {}, {}
    vm:on("state", function(new, old) seen[#seen + 1] = old .. ">" .. new end)
    vm:on("paused", function(v) named[#named + 1] = v.state end)
    local events = {}
    local watched = { STOP = true, RESUME = true, POWERDOWN = true, SHUTDOWN = true }
    vm:on("qmp", function(name) if watched[name] then events[#events + 1] = name end end)
    assert.is_true(vm:can_start())
    assert.is_false(vm:can_pause())
    guest.boot(vm)
    assert.is_true(vm:can_pause() and vm:can_stop())
    assert.is_false(vm:can_start() or vm:can_resume())
    vm:pause()
    assert.are.equal("paused", vm:qmp_command("query-status").status)
    assert.is_true(vm:can_resume())
    vm:resume()
    assert.are.equal("running", vm:qmp_command("query-status").status)
    local pid = vm.process:pid()
    assert.are.equal("graceful", vm:stop { timeout = 30 })
    assert.are.same({ "stopped>starting", "starting>running", "running>pausing", "pausing>paused",
                      "paused>resuming", "resuming>running", "running>stopping", "stopping>stopped" },
                    seen)
    assert.are.same({ "paused" }, named)
    assert.are.same({ "STOP", "RESUME", "POWERDOWN", "SHUTDOWN" }, events)
    assert.is_false(core.alive(pid))
    assert.is_nil(core.stat(vm.paths.dir))
  end)

  it("refuses operations the current state does not allow, and keeps its files private", function()
    local vm = guest.vm("x86_64")
    assert.error_matches(function() vm:pause() end, "vm " .. vm.name .. ": cannot pause: it is stopped", 1, true)
    guest.boot(vm)
    assert.are.equal(tonumber("700", 8), core.stat(vm.paths.dir).mode, "runtime directory")
    assert.are.equal(tonumber("600", 8), core.stat(vm.paths.log).mode, "console log")
    assert.error_matches(function() vm:start() end, "vm " .. vm.name .. ": cannot start: it is running", 1, true)
    assert.error_matches(function() vm:resume() end, "vm " .. vm.name .. ": cannot resume: it is running", 1, true)
    vm:kill()
    assert.are.equal("forced off by vmlua", vm.reason)
    guest.boot(vm) -- the same VM starts again, afresh
    assert.are.equal("running", vm.state)
    assert.is_nil(vm.reason)
    assert.are.equal("graceful", vm:stop { timeout = 30 })
    assert.are.equal("stopped by vmlua", vm.reason)
  end)

  -- aarch64 stops gracefully too: its UEFI firmware gives it ACPI, and so
  -- the power button.
  for _, arch in ipairs { "x86_64", "aarch64" } do
    it("keeps what " .. arch .. " wrote to a disk across a graceful stop and a new boot", function()
      local vm, disk = guest.vm_with_disk(arch)
      guest.boot(vm)
      local _, status = vm:run("mount /dev/vda /mnt && cat /mnt/hello.txt && echo kept-$((6*7)) > /mnt/note")
      assert.are.equal(0, status)
      assert.are.equal("graceful", vm:stop { timeout = 30 })
      local again = guest.boot(guest.vm_with_disk(arch, { disk_path = disk }))
      local out
      out, status = again:run("mount /dev/vda /mnt && cat /mnt/note")
      assert.are.equal(0, status)
      assert.are.equal("kept-42\n", out)
      again:kill()
    end)
  end

  it("forces off a guest that ignores the power button, and says so", function()
    local machine = require "vmlua.machine"
    local vm = guest.boot(guest.vm("x86_64"))
    local _, status = vm:run("killall acpid") -- nothing in the guest hears the button now
    assert.are.equal(0, status)
    local notices, notice = {}, machine.notice
    machine.notice = function(message) notices[#notices + 1] = message end
    local how = vm:stop { timeout = 2 }
    machine.notice = notice
    assert.are.equal("forced", how)
    assert.are.equal("stopped", vm.state)
    assert.are.equal("forced off by vmlua", vm.reason)
    assert.are.same({ "vm " .. vm.name .. ": the guest did not power off within 2 s; forcing it off" }, notices)
  end)

  it("can wait for a state, and fails clearly when it can never come", function()
    local vm = guest.boot(guest.vm("x86_64"))
    vm:wait("running", { timeout = 1 })
    vm:send("poweroff\n")
    vm:wait("stopped", { timeout = 60 })
    assert.are.equal("the guest powered off", vm.reason)
    assert.error_matches(function() vm:wait("running") end,
                         "vm " .. vm.name .. ": it is stopped, so it will never be running (the guest powered off)",
                         1, true)
  end)
end)
