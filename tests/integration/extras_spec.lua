-- What real guests also need (issue 9, part 6): a guest that may reboot,
-- extra QEMU arguments, and a stop issued before the guest listens for the
-- power button.
local guest = require "support.guest"

describe("a VM", function()
  after_each(guest.cleanup)

  it("with reboot = true lives through the guest's reboot", function()
    local vm = guest.vm("x86_64", { reboot = true })
    local resets = 0
    vm:on("qmp", function(name) if name == "RESET" then resets = resets + 1 end end)
    local pid = guest.boot(vm).pid
    vm:send("reboot -f\n")
    -- the kernel boots again: its banner, then the guest's shell
    vm:expect("Linux version", { timeout = 60 })
    vm:expect("vmlua# ", { timeout = 60 })
    assert.are.equal("running", vm.state)
    assert.are.equal(pid, vm.pid, "the reboot started another QEMU")
    assert.is_true(resets >= 1, "no RESET event")
    local out, status = vm:run("echo back")
    assert.are.equal(0, status)
    assert.matches("back", out)
    assert.are.equal("graceful", vm:stop())
  end)

  it("without it ends when the guest reboots, as before", function()
    local vm = guest.boot(guest.vm("x86_64"))
    vm:send("reboot -f\n")
    vm:wait("stopped", { timeout = 30 })
    assert.matches("the guest rebooted %(a reboot stops the VM unless it has reboot = true%)", vm.reason)
  end)

  it("passes qemu = {...} to QEMU as given", function()
    -- QEMU's PCI test device: vendor 0x1b36 (Red Hat), device 0x0005
    local vm = guest.vm("x86_64", { qemu = { "-device", "pci-testdev" } })
    guest.boot(vm)
    local out = vm:run("cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device | tr '\\n' ' '")
    assert.matches("0x1b36", out)
    assert.matches("0x0005", out)
    vm:stop()
    -- and a wrong one fails the start in QEMU's words
    local bad = guest.vm("x86_64", { qemu = { "-device", "no-such-device" } })
    local ok, err = pcall(bad.start, bad)
    assert.is_false(ok)
    assert.matches("no%-such%-device", err)
  end)

  it("stops gracefully when the stop comes before the guest listens for the power button", function()
    local vm = guest.vm("x86_64")
    vm:start()
    -- QEMU runs, but the guest's kernel has not even started its init:
    -- acpid, which powers the guest off, starts seconds later
    assert.is_nil(vm.serial.tail:find("Run /init", 1, true))
    assert.are.equal("graceful", vm:stop { timeout = 40 })
    assert.is_truthy(vm.serial.tail:find("Run /init", 1, true), "the guest never started its init")
  end)
end)
