-- The vmlua executable when things go wrong around it: signals (during a
-- busy loop, twice), a QEMU that dies under the script, a write to a QEMU
-- that just died. It always says what happened and exits with the status
-- the README gives.
local core = require "vmlua.core"
local task = require "vmlua.task"
local cli = require "support.cli"
local guest = require "support.guest"

local function script(dir, body)
  local files = guest.files("x86_64")
  local name = "sig-" .. core.getpid() .. "-" .. math.random(1e6)
  return cli.write(dir, "vm.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }
vm:start()
vm:expect("vmlua# ", { timeout = 60 })
print("QEMU " .. vm.process:pid())
io.stdout:flush()
]], name, files.kernel, files.initrd) .. body), name
end

local function spawn(body)
  local path, name = script(guest.tmpdir(), body)
  local h = cli.spawn { path }
  h.until_(function() return h.out:match("QEMU %d+") end, 180)
  return h, tonumber(h.out:match("QEMU (%d+)")), name
end

describe("vmlua, when things go wrong,", function()
  after_each(guest.cleanup)

  for signal, status in pairs { INT = 130, TERM = 143, HUP = 129 } do
    it("breaks a busy Lua loop on SIG" .. signal .. ", stops the VM gracefully and exits " .. status, function()
      local h, pid = spawn('print("BUSY") io.stdout:flush()\nwhile true do end\n')
      h.until_(function() return h.out:find("BUSY") end)
      h.process:kill(signal)
      local code, _, err = h.wait(60)
      assert.are.equal(status, code, err)
      assert.matches("interrupted", err, 1, true)
      assert.is_nil(err:find("forcing", 1, true), err)
      assert.is_true(guest.gone_within(pid, 10))
    end)
  end

  it("forces the VMs off on a second signal, and says so for each", function()
    local h, pid = spawn('print("SLEEPING") io.stdout:flush()\nvmlua.sleep(600)\n')
    h.until_(function() return h.out:find("SLEEPING") end)
    h.process:kill("TERM")
    h.until_(function() return h.err:find("stopping VMs", 1, true) end, 30)
    h.process:kill("TERM")
    local code, _, err = h.wait(60)
    assert.are.equal(143, code, err)
    assert.matches("vmlua: vm sig%-[%d-]+: .*forcing it off", err)
    assert.is_true(guest.gone_within(pid, 10))
  end)

  it("keeps the VM's name while the guard of a killed vmlua powers it off", function()
    -- Nothing in the guest hears the button: the guard waits its 10 s.
    local h, pid, name = spawn('vm:run("killall acpid")\nprint("DEAF") io.stdout:flush()\nvmlua.sleep(600)\n')
    h.until_(function() return h.out:find("DEAF") end)
    h.process:kill("KILL")
    h.wait(30)
    local files = guest.files("x86_64")
    local twin = cli.write(guest.tmpdir(), "twin.lua", string.format([[
local vmlua = require "vmlua"
vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }:start()
]], name, files.kernel, files.initrd))
    local code, _, err = cli.run({ twin }, 60)
    assert.are.equal(1, code, err)
    assert.matches("cannot start: already running", err, 1, true)
    assert.is_true(core.alive(pid))
    assert.is_true(guest.gone_within(pid, 20), "QEMU outlived its guard")
    local dir = require("vmlua.runtime").paths(name).dir
    local deadline = core.now() + 5
    while core.stat(dir) and core.now() < deadline do task.sleep(0.1) end
    assert.is_nil(core.stat(dir), "runtime directory left behind")
  end)

  it("exits 1 with QEMU's reason when QEMU dies while the script sleeps", function()
    local h, pid = spawn('print("SLEEPING") io.stdout:flush()\nvmlua.sleep(8)\nprint("WOKE")\n')
    h.until_(function() return h.out:find("SLEEPING") end)
    os.execute("kill -KILL " .. pid)
    local code, out, err = h.wait(60)
    assert.matches("WOKE", out, 1, true)
    assert.are.equal(1, code, err)
    assert.matches("vmlua: vm sig%-[%d-]+: QEMU was killed by SIGKILL", err)
  end)

  -- Each operation writes to QEMU (QMP or the console) before vmlua has
  -- seen it die: a write that once killed vmlua with SIGPIPE.
  for _, op in ipairs { "vm:send('echo hi\\n')", "vm:pause()", "vm:stop()", "vm:run('true')" } do
    it("reports, rather than dying of SIGPIPE, " .. op .. " right after QEMU was killed", function()
      local h = spawn('vm.process:kill("KILL") os.execute("sleep 0.3")\n' .. op .. '\nvmlua.sleep(2)\n')
      local code, _, err = h.wait(60)
      assert.is_nil(h.signal, "vmlua was killed by SIG" .. tostring(h.signal))
      assert.are.equal(1, code, err)
      assert.matches("QEMU was killed by SIGKILL", err, 1, true)
    end)
  end
end)
