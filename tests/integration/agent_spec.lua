-- vm:run through the QEMU guest agent (agent = true): the Debian guest of
-- scripts/build-debian.sh has a getty on its serial console and
-- qemu-guest-agent, which udev starts when the port shows up. And what
-- vm:run says when neither the agent nor a shell answers.
local agent = require "vmlua.agent"
local core = require "vmlua.core"
local task = require "vmlua.task"
local vmlua = require "vmlua"
local guest = require "support.guest"

local function error_of(fn)
  local ok, err = pcall(fn)
  assert(not ok, "it did not fail")
  return tostring(err)
end

-- A Lua pattern that matches `s` as it is.
local function literal(s)
  return (s:gsub("%p", "%%%0"))
end

describe("vm:run through the guest agent", function()
  after_each(guest.cleanup)

  it("runs commands in a guest whose console has a login prompt, and says when the agent is gone", function()
    local image = guest.debian()
    local vm = vmlua.vm {
      name = "agent-" .. core.getpid(), arch = "x86_64", cpus = 2, memory = "1G",
      boot = vmlua.linux { kernel = image .. "vmlinuz", initrd = image .. "initrd.img",
                           cmdline = { "root=/dev/vda", "rw" } },
      disks = { vmlua.disk { path = guest.tmpdir() .. "/debian.qcow2", base = image .. "root.ext4" } },
      agent = true,
    }
    vm:start()
    -- Right after the start: vm:run waits for whichever answers, and only the agent will.
    assert.are.same({ "x86_64\n", 0 }, { vm:run("uname -m", { timeout = 300 }) })
    -- the agent ran it (the console has no shell to run it)
    assert.are.same({ "qemu-ga\n", 0 }, { vm:run("cat /proc/$PPID/comm") })
    assert.are.same({ "out\nerr\n", 3 }, { vm:run("echo out; echo err >&2; exit 3") })
    assert.are.same({ "/root\n", 0 }, { vm:run("pwd") })
    assert.are.same({ "", 0 }, { vm:run("read line; test -z \"$line\"") }) -- stdin reads nothing
    local long = vm:run("head -c 300000 /dev/zero | tr '\\0' x")
    assert.are.equal(300000, #long)
    assert.matches("^x+$", long)

    -- A command that outlives its timeout is killed.
    local err = error_of(function() vm:run("sleep 600", { timeout = 3 }) end)
    assert.matches('timed out after 3 s waiting for the command "sleep 600", run by the guest agent; killed it',
                   err, 1, true)
    assert.are.same({ "none\n", 0 }, { vm:run("pgrep -x sleep || echo none") })

    -- Without the agent, vm:run has no way in: it says so, and what it tried.
    -- (a stop from the agent's own command would end that command too: a timer stops it)
    assert.are.same(0, select(2, vm:run("systemd-run --on-active=5 systemctl stop qemu-guest-agent")))
    -- QEMU throttles VSERPORT_CHANGE, so ask for the port's state, as vm:run's message does
    local function port_open()
      for _, c in ipairs(vm.qmp:execute("query-chardev")) do
        if agent.is_port(c) then return c["frontend-open"] end
      end
      error("no chardev for the agent's port")
    end
    local deadline = core.now() + 120
    while port_open() and core.now() < deadline do task.sleep(0.5) end
    assert.is_false(port_open(), "the agent did not close its port; last console lines:\n" .. vm.serial.tail)
    err = error_of(function() vm:run("true", { timeout = 10 }) end)
    assert.matches('vm ' .. literal(vm.name) .. ': timed out after 10 s waiting for the command "true": neither '
      .. 'the guest agent nor a shell prompt on the console answered; the guest agent on the virtio%-serial port '
      .. 'org%.qemu%.guest_agent%.0 never opened its port in the guest', err)
    assert.matches("vm:ssh(command)", err, 1, true)
    assert.matches("--- last console lines of " .. vm.name .. " ---", err, 1, true)
    assert.are.equal("graceful", vm:stop { timeout = 60 })
  end)

  it("says so when a guest has neither a shell on its console nor an agent", function()
    local files = guest.files("x86_64")
    -- init is sleep: nothing reads the console
    local vm = guest.vm("x86_64", { boot = vmlua.linux { kernel = files.kernel, initrd = files.initrd,
                                                         cmdline = { "rdinit=/bin/sleep", "600" } } })
    vm:start()
    local err = error_of(function() vm:run("true", { timeout = 10 }) end)
    assert.matches('vm ' .. literal(vm.name) .. ': timed out after 10 s waiting for the command "true": neither '
      .. 'the guest agent nor a shell prompt on the console answered; it has no guest agent channel '
      .. '%(agent = true adds one, for a guest with qemu%-guest%-agent%); what vmlua typed on the console got no '
      .. 'answer', err)
    vm:kill()
  end)
end)
