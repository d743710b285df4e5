-- The vmlua executable around real guests: exit status, messages, signals,
-- and that no QEMU outlives it, even when vmlua itself is killed.
local core = require "vmlua.core"
local cli = require "support.cli"
local guest = require "support.guest"

local function script(dir, body)
  local files = guest.files("x86_64")
  local head = string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }
]], "cli-" .. core.getpid() .. "-" .. math.random(1e6), files.kernel, files.initrd)
  return cli.write(dir, "vm.lua", head .. body)
end

local function qemu_pid(h)
  h.until_(function() return h.out:match("QEMU (%d+)") end, 120)
  return tonumber(h.out:match("QEMU (%d+)"))
end

local PRINT_PID = 'vm:start(); print("QEMU " .. vm.process:pid()); io.stdout:flush()\n'

describe("vmlua FILE", function()
  after_each(guest.cleanup)

  it("exits 1 naming the VM, the wait and the console when the script fails", function()
    local dir = guest.tmpdir()
    local failing = 'vm:expect("vmlua# ") vm:expect("no such text", { timeout = 1 })\n'
    local h = cli.spawn { script(dir, PRINT_PID .. failing) }
    local pid = qemu_pid(h)
    local code, _, err = h.wait(120)
    assert.are.equal(1, code)
    assert.matches("vmlua: .*vm%.lua:5: vm cli%-[%d-]+: timed out after 1 s waiting for console output", err)
    assert.matches("--- last console lines of", err, 1, true)
    assert.is_true(guest.gone_within(pid, 10))
  end)

  for signal, status in pairs { TERM = 143, INT = 130 } do
    it("stops its VMs gracefully on SIG" .. signal .. " and exits non-zero", function()
      local dir = guest.tmpdir()
      local h = cli.spawn { script(dir, PRINT_PID .. 'vm:expect("vmlua# ")\nprint("AT PROMPT")\nvmlua.sleep(600)\n') }
      local pid = qemu_pid(h)
      h.until_(function() return h.out:find("AT PROMPT") end)
      h.process:kill(signal)
      local code, _, err = h.wait(120)
      assert.are.equal(status, code)
      assert.matches("stopping VMs", err, 1, true)
      assert.is_false(core.alive(pid))
    end)
  end

  it("leaves no QEMU behind when vmlua itself is killed", function()
    local dir = guest.tmpdir()
    local h = cli.spawn { script(dir, PRINT_PID .. 'vmlua.sleep(600)\n') }
    local pid = qemu_pid(h)
    h.process:kill("KILL")
    h.wait(30)
    -- The guard presses the power button, which a guest still booting
    -- misses: then QEMU quits after the guard's 10 s.
    assert.is_true(guest.gone_within(pid, 20), "QEMU outlived vmlua's guard")
  end)

  it("boots a file that only defines a VM, with its console on the terminal", function()
    local dir = guest.tmpdir()
    local h = cli.spawn { script(dir, "") }
    h.until_(function() return h.out:find("vmlua# ") end)
    assert.matches("booting cli%-", h.err)
    h.process:kill("INT")
    local code = h.wait(120)
    assert.are.equal(130, code)
  end)

  it("reports an error in a callback with its line, and keeps going", function()
    local dir = guest.tmpdir()
    local path = cli.write(dir, "cb.lua", [[
local vmlua = require "vmlua"
vmlua.after(0, function() error("boom") end)
vmlua.sleep(0.2)
print("still here")
]])
    local code, out, err = cli.run({ path }, 30)
    assert.are.equal(1, code)
    assert.matches("cb%.lua:2: boom", err)
    assert.are.equal("still here\n", out)
  end)

  it("says which package to install when QEMU is missing", function()
    local dir = guest.tmpdir()
    local code, _, err = cli.run({ script(dir, "vm:start()\n") }, 30, "/nonexistent")
    assert.are.equal(1, code)
    assert.matches("qemu%-system%-x86_64", err)
    assert.matches("vm%.lua:2:", err)
  end)

  it("runs examples/pair.lua: two guests of two architectures at once", function()
    local code, out = cli.run({ "examples/pair.lua" }, 180)
    assert.are.equal(0, code)
    assert.matches("pair%-x86_64 says x86_64\n", out)
    assert.matches("pair%-aarch64 says aarch64\n", out)
    assert.matches("both stopped\n$", out)
  end)

  it("runs examples/ci.lua and exits with the guest command's status", function()
    local code, out = cli.run({ "examples/ci.lua", "echo from-guest; exit 3" }, 180)
    assert.are.equal(3, code)
    assert.matches("from%-guest", out)
  end)
end)
