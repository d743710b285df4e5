-- What an operator meets around a real guest: console text that never
-- reaches the terminal as escape sequences, vm.pid, and what cannot work
-- failing at once (a paused VM's console, a device added while it runs, a
-- host port already in use), and vm:stop() saying how it went.
local core = require "vmlua.core"
local cli = require "support.cli"
local guest = require "support.guest"
local pty = require "support.pty"
local vmlua = require "vmlua"

-- A host port that nothing uses now.
local function free_port()
  for _ = 1, 50 do
    local port = math.random(20000, 60000)
    if core.port_free("127.0.0.1", port) then return port end
  end
  error("no free port")
end

local function definition(dir, name, body)
  local files = guest.files("x86_64")
  return cli.write(dir, name .. ".lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }
]], name .. "-" .. core.getpid(), files.kernel, files.initrd) .. body)
end

describe("a running guest", function()
  local vm, port
  setup(function()
    port = free_port()
    vm = guest.vm("x86_64", { net = { vmlua.nat { forward = { [port] = 22 } } } })
    assert.is_nil(vm.pid)
    guest.boot(vm)
  end)
  teardown(guest.cleanup)

  it("has vm.pid, QEMU's pid while it runs", function()
    assert.are.equal(math.tointeger(vm.process:pid()), vm.pid)
    assert.is_true(core.alive(vm.pid))
    assert.matches(", pid " .. vm.pid .. ",", tostring(vm), 1, true)
  end)

  it("shows its console without escape sequences in errors and vm.serial views", function()
    vm:send("printf '\\033[6n\\033]0;title\\007\\033[1;31mred\\033[0m marker\\n'\n")
    vm:expect("marker")
    local ok, err = pcall(vm.expect, vm, "no such text", { timeout = 0.2 })
    assert.is_false(ok)
    assert.matches("last console lines", err, 1, true)
    assert.matches("red marker", err, 1, true)
    assert.is_nil(err:find("\27", 1, true))
    assert.is_nil(vm.serial.tail:find("\27", 1, true))
    assert.is_nil(vm.serial:last_lines(5):find("\27", 1, true))
    assert.truthy(vm.serial.raw_tail:find("\27[6n", 1, true)) -- kept as it came, for vm:console()
  end)

  it("refuses a device added while it runs", function()
    local ok, err = pcall(vm.add, vm, vmlua.nat { forward = { [free_port()] = 80 } })
    assert.is_false(ok)
    assert.matches("operator_spec.lua:%d+: vm spec%-[%d-]+: cannot add a nat: it is running", err)
    assert.are.equal(1, #vm.config.net)
  end)

  it("keeps its own forwarded port, which another VM cannot take (validate and plan say so)", function()
    assert.is_true(vm:validate())
    local other = guest.vm("x86_64", { net = { vmlua.nat { forward = { [port] = 22 } } } })
    local ok, err = other:validate()
    assert.is_nil(ok)
    assert.matches(string.format("net%%[1%%]%%.forward%%[%d%%]: host port %d on 127%%.0%%.0%%.1 cannot be bound " ..
      "%%(Address already in use%%), so vm %s cannot forward it", port, port, other.name:gsub("%-", "%%-")), err)
    local start_ok, start_err = pcall(other.start, other)
    assert.is_false(start_ok)
    assert.matches("host port " .. port, start_err, 1, true)
    assert.are.equal("stopped", other.state)

    local dir = guest.tmpdir()
    local file = definition(dir, "taken", string.format("vm:add(vmlua.nat { forward = { [%d] = 22 } })\n", port))
    local code, out, stderr = cli.run({ "plan", file }, 60)
    assert.are.equal(1, code, out)
    assert.matches("taken.lua:4: net[1].forward[" .. port .. "]: host port " .. port, stderr, 1, true)
  end)

  it("fails run, expect and send at once while paused", function()
    vm:pause()
    for _, call in ipairs {
      { "run", function() return vm:run("true", { timeout = 20 }) end },
      { "expect", function() return vm:expect("x", { timeout = 20 }) end },
      { "send", function() return vm:send("x") end },
    } do
      local t0 = core.now()
      local ok, err = pcall(call[2])
      assert.is_false(ok)
      assert.matches("vm spec%-[%d-]+ is paused, so it cannot " .. call[1], err)
      assert.is_true(core.now() - t0 < 1)
    end
    vm:resume()
    assert.are.same({ "ok\n", 0 }, { vm:run("echo ok") })
  end)

  it("reports vm.pid as nil once it has stopped", function()
    local pid = vm.pid
    assert.are.equal("graceful", vm:stop())
    assert.is_nil(vm.pid)
    assert.is_true(guest.gone_within(pid, 10))
  end)
end)

describe("the vmlua executable", function()
  after_each(guest.cleanup)

  it("says how a graceful stop went in one line, a paused VM's too", function()
    local dir = guest.tmpdir()
    local file = definition(dir, "graceful", [[
vm:start()
vm:expect("vmlua# ")
vm:pause()
print("OUTCOME " .. vm:stop())
]])
    local code, out, err = cli.run({ file }, 120)
    assert.are.equal(0, code, err)
    assert.matches("OUTCOME graceful", out, 1, true)
    local lines = {}
    for line in err:gmatch("[^\n]+") do
      if not line:find("emulated with TCG", 1, true) then lines[#lines + 1] = line end
    end
    assert.are.same({ "vmlua: stopped vm graceful-" .. core.getpid() .. " (graceful: the guest powered off)" }, lines)
  end)

  it("never lets the guest's escape sequences reach the terminal in an error", function()
    local dir = guest.tmpdir()
    local file = definition(dir, "fails", [[
vm:start()
vm:expect("vmlua# ")
vm:send("printf '\\033[6nmarker\\n'\n")
vm:expect("marker")
vm:expect("no such text", { timeout = 0.2 })
]])
    local code, out, err = cli.run({ file }, 120)
    assert.are.equal(1, code, out)
    assert.matches("last console lines", err, 1, true)
    assert.is_nil(err:find("\27", 1, true))
    assert.is_nil(out:find("\27", 1, true))
  end)

  it("shows the guest's prompt on attach and says that Ctrl-] stopped a definition-only VM", function()
    local dir = guest.tmpdir()
    local file = definition(dir, "onlydef", "")
    local t = pty.spawn({ file })
    local ok, err = pcall(function()
      t:expect("Ctrl-] detaches", 60)
      t:expect("vmlua# ", 60) -- booting: the prompt comes as the guest prints it
      t:send(pty.keys.ctrl_bracket)
      t:expect("detached from onlydef-" .. core.getpid() .. "; stopping it", 30)
      t:expect("stopped vm onlydef-" .. core.getpid() .. " (graceful", 30)
      assert.are.equal(0, t:wait_exit(30))
    end)
    t:close()
    assert(ok, err)
  end)

  it("shows the line the guest is on when the terminal attaches", function()
    local dir = guest.tmpdir()
    local file = definition(dir, "later", [[
vm:start()
vm:expect("vmlua# ")
vm:send("printf 'no newline here> '\n")
vm:expect("here> ")
vm:console()
vm:stop()
]])
    local t = pty.spawn({ file })
    local ok, err = pcall(function()
      t:expect("Ctrl-] detaches", 60)
      t:expect("no newline here> vmlua# ", 5) -- without Enter
      -- its text only: the terminal would answer the prompt's ESC[6n to a guest that no longer waits
      local shown = t.raw:sub(t.raw:find("Ctrl-] detaches", 1, true))
      assert.is_nil(shown:find("\27[6n", 1, true))
      t:send(pty.keys.ctrl_bracket)
      t:expect("detached from vm later-" .. core.getpid() .. " (running", 30)
      assert.are.equal(0, t:wait_exit(30))
    end)
    t:close()
    assert(ok, err)
  end)

  it("refuses the script's os.execute and io.popen in vmlua plan", function()
    local dir = guest.tmpdir()
    for _, call in ipairs { "os.execute", "io.popen" } do
      local file = definition(dir, "cmd", call .. "('touch " .. dir .. "/ran')\n")
      local code, _, err = cli.run({ "plan", file }, 30)
      assert.are.equal(1, code)
      assert.matches("cmd.lua:4: " .. call .. ": vmlua plan does not run commands", err, 1, true)
      assert.is_nil(core.stat(dir .. "/ran"))
    end
  end)
end)
