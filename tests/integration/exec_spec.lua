-- vmlua.exec and vmlua.wait_port: host commands and ports from a script,
-- without stopping the event loop.
local core = require "vmlua.core"
local task = require "vmlua.task"
local vmlua = require "vmlua"
local guest = require "support.guest"

local function free_port()
  return 20000 + math.random(0, 20000)
end

describe("vmlua.exec", function()
  it("returns the output, the exit status and the errors of an argv, with no shell", function()
    local out, status, err = vmlua.exec { "sh", "-c", "echo out; echo err >&2; exit 3" }
    assert.are.same({ "out\n", 3, "err\n" }, { out, status, err })
    out, status = vmlua.exec { "printf", "%s|", "a b", "$HOME", ";true" }
    assert.are.same({ "a b|$HOME|;true|", 0 }, { out, status })
    out, status = vmlua.exec { "sh", "-c", "kill -TERM $$" }
    assert.are.same({ "", 128 + 15 }, { out, status })
  end)

  it("lets the loop run while the command runs", function()
    local ticks = 0
    local timer = vmlua.every(0.05, function() ticks = ticks + 1 end)
    vmlua.exec { "sleep", "0.5" }
    timer:stop()
    assert.is_true(ticks >= 5, "the loop stood still: " .. ticks .. " ticks")
  end)

  it("kills a command that outlives its timeout, and says so", function()
    local started = core.now()
    assert.has_error(function() vmlua.exec({ "sleep", "30" }, { timeout = 0.3 }) end,
      "vmlua.exec: sleep timed out after 0.3 s")
    assert.is_true(core.now() - started < 5)
    local out = vmlua.exec { "sh", "-c", "pgrep -x -f 'sleep 30' || true" }
    assert.are.equal("", out, "the timed-out command still runs")
  end)

  it("refuses what cannot run", function()
    assert.has_error(function() vmlua.exec { "no-such-command-vmlua" } end,
      "vmlua.exec: cannot run no-such-command-vmlua: No such file or directory")
    assert.has_error(function() vmlua.exec "ls" end,
      'vmlua.exec: expected an argv array such as { "ssh", "-V" }, got string "ls"')
    assert.has_error(function() vmlua.exec({ "true" }, { timout = 1 }) end,
      'vmlua.exec: unknown option string "timout"')
  end)
end)

describe("vmlua.wait_port", function()
  after_each(guest.cleanup)

  it("waits for a server to listen and to send its banner", function()
    local port = free_port()
    local server
    vmlua.after(0.5, function()
      server = assert(core.spawn { file = "/bin/busybox",
        args = { "busybox", "nc", "-l", "-p", tostring(port), "-e", "echo", "SSH-2.0-vmlua-spec" } })
    end)
    local started = core.now()
    assert.is_true(vmlua.wait_port("127.0.0.1", port, { timeout = 10, banner = "^SSH%-2" }))
    assert.is_true(core.now() - started >= 0.4, "it answered before anything listened")
    server:close()
  end)

  it("tells a forward that accepts from a guest service that answers", function()
    -- host port 0: a free port, chosen as the VM starts
    local vm = guest.vm("x86_64", { net = { vmlua.nat { forward = { [0] = 22 } } } })
    assert.are.same({}, vm:ports())
    guest.boot(vm)
    local port = vm:ports()[22]
    assert.is_true(math.type(port) == "integer" and port > 0, tostring(port))
    -- QEMU accepts on the forwarded port even though nothing in the guest listens
    assert.is_true(vmlua.wait_port("127.0.0.1", port, { timeout = 10 }))
    assert.has_error(function() vmlua.wait_port("127.0.0.1", port, { timeout = 1.5, banner = "^SSH%-" }) end)
    vm:send("nc -l -p 22 -e echo SSH-2.0-guest &\n")
    assert.is_true(vmlua.wait_port("127.0.0.1", port, { timeout = 30, banner = "^SSH%-2%.0%-guest" }))
    vm:stop()
  end)

  it("gives up after its timeout, naming the port", function()
    local port = free_port()
    local ok, err = pcall(vmlua.wait_port, "127.0.0.1", port, { timeout = 0.5 })
    assert.is_false(ok)
    assert.matches("vmlua.wait_port: 127.0.0.1:" .. port .. " did not answer within 0.5 s (", err, 1, true)
    task.sleep(0)
  end)
end)
