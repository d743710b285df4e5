-- The runtime directory without a hypervisor: who may claim a VM's name,
-- and what a claim leaves behind.
local core = require "vmlua.core"
local runtime = require "vmlua.runtime"
local helpers = require "support.helpers"

describe("runtime", function()
  local root, paths

  before_each(function()
    root = helpers.tmpdir() .. "/run"
    paths = runtime.paths("dev", root)
  end)
  after_each(function() helpers.rmtree(root:match("^(.*)/run$")) end)

  local function exists(path) return core.stat(path) ~= nil end

  it("claims a name whose pid file holds a live but unrelated pid (such as 1)", function()
    assert(core.mkdir_private(root))
    assert(core.mkdir_private(paths.dir))
    helpers.write(paths.pid, "1\n")
    helpers.write(paths.qmp, "stale")
    helpers.write(paths.guard, "stale")
    local claim, err = runtime.claim(paths)
    assert.is_truthy(claim, err)
    assert.is_false(exists(paths.pid))
    assert.is_false(exists(paths.qmp))
    assert.is_false(exists(paths.guard))
    runtime.remove(paths, claim)
    assert.is_false(exists(paths.dir))
  end)

  it("lets one claim hold a name until it is removed", function()
    local claim = assert(runtime.claim(paths))
    runtime.write_pid(paths, 4242)
    local twin = runtime.paths("dev", root)
    local none, err = runtime.claim(twin)
    assert.is_nil(none)
    assert.equal(string.format("already running (QEMU pid 4242, vmlua pid %d, runtime directory %s)",
      core.getpid(), paths.dir), err)
    -- A loser's paths hold no claim: removing them leaves the winner's files.
    runtime.remove(twin, none)
    assert.is_true(exists(paths.pid))
    runtime.remove(paths, claim)
    assert.is_false(exists(paths.dir))
    runtime.remove(paths, claim) -- twice is harmless
    local again = assert(runtime.claim(twin))
    runtime.remove(twin, again)
  end)

  it("says so when the winner has not started QEMU yet", function()
    local claim = assert(runtime.claim(paths))
    local _, err = runtime.claim(runtime.paths("dev", root))
    assert.equal(string.format("already running (vmlua pid %d, runtime directory %s)", core.getpid(), paths.dir),
      err)
    runtime.remove(paths, claim)
  end)

  it("refuses a runtime directory that others can use, and leaves its mode alone", function()
    assert(core.mkdir_private(root))
    assert(core.chmod(root, tonumber("755", 8)))
    local none, err = runtime.claim(paths)
    assert.is_nil(none)
    assert.equal("cannot use the runtime directory " .. root .. ": it is open to other users (mode 0755); "
      .. "run chmod 700 " .. root .. ", or set VMLUA_RUNTIME_DIR to a private directory", err)
    assert.equal(tonumber("755", 8), core.stat(root).mode)
    assert.is_false(exists(paths.dir))
  end)
end)
