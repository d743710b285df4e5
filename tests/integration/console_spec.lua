-- The console under a flood: vm:run returns megabytes whole, expect still
-- finds what follows, and the runtime directory's log stays bounded.
local console = require "vmlua.console"
local core = require "vmlua.core"
local guest = require "support.guest"

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

local read = require("vmlua.runtime").read_file

describe("the console", function()
  local saved
  before_each(function() saved = console.LOG_BYTES end)
  after_each(function()
    console.LOG_BYTES = saved
    guest.cleanup()
  end)

  it("returns 3 MB of output from vm:run whole and exact", function()
    local vm = guest.boot(guest.vm("x86_64"))
    local n = 3000000
    local out, status = vm:run(string.format("head -c %d /dev/zero | tr '\\0' x; echo; echo end", n),
                               { timeout = 300 })
    assert.are.equal(0, status)
    assert.are.equal(n + #"\nend\n", #out)
    assert.is_true(out:sub(1, n) == string.rep("x", n), "the output is not all x")
    assert.are.equal("\nend\n", out:sub(n + 1))
    -- and with line breaks, which the terminal sends as \r\n
    out = vm:run("seq 1 200000", { timeout = 300 })
    local expected = {}
    for i = 1, 200000 do expected[#expected + 1] = i .. "\n" end
    assert.are.equal(#table.concat(expected), #out)
    assert.is_true(out == table.concat(expected), "the lines differ")
    assert.are.equal("ok\n", vm:run("echo ok"))
  end)

  it("rotates the runtime directory's log, keeping the latest output", function()
    console.LOG_BYTES = 64 * 1024
    local vm = guest.boot(guest.vm("x86_64"))
    local log = vm.paths.log
    local out = vm:run("head -c 400000 /dev/zero | tr '\\0' y; echo; echo the-last-line", { timeout = 120 })
    assert.are.equal(400000 + #"\nthe-last-line\n", #out)
    require("vmlua").sleep(3 * console.FLUSH) -- the log is written within console.FLUSH
    local size, old = file_size(log), file_size(log .. ".1")
    assert.is_true(size + old <= 2 * console.LOG_BYTES + 65536,
                   string.format("logs of %d + %d bytes", size, old))
    assert.is_true(old >= console.LOG_BYTES, "no rotated log " .. log .. ".1")
    assert.truthy(read(log):find("the-last-line", 1, true))
    vm:stop()
    assert.is_nil(core.stat(log .. ".1"))
    assert.is_nil(core.stat(vm.paths.dir))
  end)

  it("finds a prompt that follows a flood", function()
    local vm = guest.boot(guest.vm("x86_64"))
    vm:send("head -c 1500000 /dev/zero | tr '\\0' z; echo; echo fl''ood-done\n")
    assert.are.equal("flood-done", vm:expect("fl%a+%-done", { timeout = 120 }))
    assert.are.equal("vmlua# ", vm:expect("vmlua# ", { timeout = 30 }))
  end)
end)
