-- The C core without a hypervisor: JSON, timers, child processes, sockets,
-- private directories, and errors in callbacks.
local core = require "vmlua.core"
local task = require "vmlua.task"
local helpers = require "support.helpers"

-- Runs the loop until pred() holds (checked every 10 ms), at most 5 s.
local function wait_for(pred)
  local poll
  task.await(function(wake)
    poll = core.timer(0, 0.01, function() if pred() then wake() end end)
  end, 5)
  poll:stop()
end

describe("vmlua.core", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  it("round-trips JSON, with null and nested values", function()
    local text = core.json_encode { a = 1, b = { 1, 2.5, "x" }, c = core.null, d = {} }
    local v = core.json_decode(text)
    assert.are.equal(1, v.a)
    assert.are.same({ 1, 2.5, "x" }, v.b)
    assert.are.equal(core.null, v.c)
    assert.are.same({}, v.d)
    assert.are.equal('{"execute":"stop"}', core.json_encode { execute = "stop" })
    local bad, err = core.json_decode("{oops")
    assert.is_nil(bad)
    assert.matches("^JSON: ", err)
    assert.has_error(function() core.json_encode { [true] = 1 } end)
  end)

  it("fires timers in order, and a repeating one until it is stopped", function()
    local fired, ticks = {}, 0
    core.timer(0.02, 0, function() fired[#fired + 1] = "late" end)
    core.timer(0.01, 0, function() fired[#fired + 1] = "early" end)
    local every
    every = core.timer(0.005, 0.005, function()
      ticks = ticks + 1
      if ticks == 3 then every:stop() end
    end)
    wait_for(function() return #fired == 2 and ticks == 3 end)
    assert.are.same({ "early", "late" }, fired)
    assert.is_false(every:active())
    task.sleep(0.02)
    assert.are.equal(3, ticks)
  end)

  it("passes arguments to a child as data, never through a shell", function()
    local out, code = "", nil
    core.spawn {
      file = "/bin/echo", args = { "echo", "a b", "$HOME", "; rm -rf /", "`id`" },
      on_stdout = function(d) out = out .. d end,
      on_exit = function(c) code = c end,
    }
    wait_for(function() return code end)
    assert.are.equal("a b $HOME ; rm -rf / `id`\n", out)
    assert.are.equal(0, code)
  end)

  it("reports a child's exit status, its signal, and a program that cannot run", function()
    local result = {}
    local p = core.spawn { file = "/bin/sh", args = { "sh", "-c", "echo oops >&2; exit 7" },
                           on_stderr = function(d) result.err = (result.err or "") .. d end,
                           on_exit = function(c, s) result.code, result.signal = c, s end }
    local q = core.spawn { file = "/bin/sleep", args = { "sleep", "30" },
                           on_exit = function(c, s) result.qcode, result.qsignal = c, s end }
    assert.is_true(q:running())
    q:kill("KILL")
    wait_for(function() return result.code and result.qsignal end)
    assert.are.equal(7, result.code)
    assert.are.equal("oops\n", result.err)
    assert.are.equal("KILL", result.qsignal)
    assert.is_false(p:running())
    local none, err = core.spawn { file = dir .. "/missing", args = { "missing" } }
    assert.is_nil(none)
    assert.matches("cannot run .*missing: No such file or directory", err)
  end)

  it("listens on a private socket and exchanges data with a client", function()
    local path = dir .. "/s.sock"
    local at_server, at_client = "", ""
    local server = assert(core.listen(path, function(stream)
      stream:write("hello\n")
      stream:read(function(data) if data then at_server = at_server .. data end end)
    end))
    assert.are.equal(tonumber("600", 8), core.stat(path).mode)
    local client = task.await(function(wake) core.connect(path, wake) end, 5)
    client:read(function(data) if data then at_client = at_client .. data end end)
    client:write("ping")
    wait_for(function() return at_server == "ping" and at_client == "hello\n" end)
    assert.are.equal("ping", at_server)
    assert.are.equal("hello\n", at_client)
    client:close()
    server:close()
    local none, err = task.await(function(wake) core.connect(dir .. "/nobody.sock", wake) end, 5)
    assert.is_nil(none)
    assert.matches("no such file", err:lower())
  end)

  it("makes private directories 0700 and refuses, never chmods, one it did not make private", function()
    local sub = dir .. "/run"
    assert.are.same({ true, true }, { core.mkdir_private(sub) })
    assert.are.equal(tonumber("700", 8), core.stat(sub).mode)
    assert.are.same({ true, false }, { core.mkdir_private(sub) }) -- ours and private: used as it is
    for _, mode in ipairs { "755", "750", "701", "770" } do
      core.chmod(sub, tonumber(mode, 8))
      local none, err = core.mkdir_private(sub)
      assert.is_nil(none)
      assert.are.equal(sub .. ": it is open to other users (mode 0" .. mode .. ")", err)
      assert.are.equal(tonumber(mode, 8), core.stat(sub).mode)
    end
    helpers.write(dir .. "/file", "x")
    assert.are.equal(dir .. "/file: it is not a directory", select(2, core.mkdir_private(dir .. "/file")))
    assert(os.execute("ln -s run " .. helpers.shell_quote(dir .. "/link")))
    core.chmod(sub, tonumber("700", 8))
    assert.are.equal(dir .. "/link: it is a symbolic link", select(2, core.mkdir_private(dir .. "/link")))
  end)

  it("creates a file with a mode, and leaves an existing one alone", function()
    local path = dir .. "/new.log"
    assert.is_true(core.create_file(path, tonumber("600", 8)))
    assert.are.equal(tonumber("600", 8), core.stat(path).mode)
    helpers.write(dir .. "/mine.log", "kept")
    core.chmod(dir .. "/mine.log", tonumber("644", 8))
    assert.is_false(core.create_file(dir .. "/mine.log", tonumber("600", 8)))
    assert.are.equal(tonumber("644", 8), core.stat(dir .. "/mine.log").mode)
    assert.are.equal(4, core.stat(dir .. "/mine.log").size)
    local none, err = core.create_file(dir .. "/no/such", tonumber("600", 8))
    assert.is_nil(none)
    assert.matches("no/such: No such file or directory", err)
  end)

  describe("lock", function()
    -- Whether another process (the vmlua executable) gets the lock on path.
    local function other_process_locks(path)
      local code, err = nil, ""
      assert(core.spawn {
        file = core.realpath(os.getenv("VMLUA_BIN") or "build/bin/vmlua"),
        args = { "vmlua", "-e", string.format("os.exit(require('vmlua.core').lock(%q) and 0 or 3)", path) },
        on_stderr = function(d) err = err .. d end,
        on_exit = function(c) code = c end,
      })
      wait_for(function() return code end)
      assert(code == 0 or code == 3, "vmlua exited with " .. tostring(code) .. ": " .. err)
      return code == 0
    end

    it("is held by one holder at a time, in this process and others, until unlocked", function()
      local path = dir .. "/lock"
      local lock = assert(core.lock(path))
      assert.are.equal("lock " .. path .. " (held)", tostring(lock))
      assert.are.equal(tonumber("600", 8), core.stat(path).mode)
      local none, err, held = core.lock(path)
      assert.is_nil(none)
      assert.is_true(held)
      assert.are.equal(path .. ": held by another process", err)
      assert.is_false(other_process_locks(path))
      lock:unlock()
      assert.are.equal("lock " .. path .. " (released)", tostring(lock))
      assert.is_true(other_process_locks(path))
      lock:unlock() -- twice is harmless
      local again = assert(core.lock(path))
      again:unlock()
    end)

    it("is not inherited by child processes", function()
      local path = dir .. "/lock"
      local lock = assert(core.lock(path))
      local child = core.spawn { file = "/bin/sleep", args = { "sleep", "30" } }
      lock:unlock()
      local ok = other_process_locks(path) -- a child holding a copy would keep it locked
      child:kill("KILL")
      assert.is_true(ok)
    end)

    it("is released by __close and by the collector, each safe after unlock", function()
      local path = dir .. "/lock"
      do
        local scoped <close> = assert(core.lock(path))
        assert.is_false(other_process_locks(path))
        assert.is_true(scoped:held())
      end
      assert.is_true(other_process_locks(path))
      local lock = assert(core.lock(path))
      local close = getmetatable(lock).__close
      close(lock)
      close(lock)
      getmetatable(lock).__gc(lock)
      assert.is_false(lock:held())
      lock = assert(core.lock(path)) -- luacheck: ignore 311
      lock = nil -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      assert.is_true(other_process_locks(path))
    end)

    it("reports a path it cannot open", function()
      local none, err, held = core.lock(dir .. "/no/such/lock")
      assert.is_nil(none)
      assert.is_false(held)
      assert.are.equal(dir .. "/no/such/lock: No such file or directory", err)
    end)
  end)

  it("reports an error in a callback and keeps the loop going", function()
    local reported
    local saved = task.report
    task.report = function(msg) reported = msg end
    core.timer(0, 0, function() error("boom") end)
    local after = false
    core.timer(0.01, 0, function() after = true end)
    task.sleep(0.03)
    task.report = saved
    assert.matches("core_spec.lua:%d+: boom", reported)
    assert.matches("stack traceback", reported)
    assert.is_true(after)
  end)
end)
