-- The console's buffers and matching without a guest: output is fed in
-- chunks as the stream would deliver it. Also the checks of patterns and
-- options that vm:expect, vm:run, vm:send, vm:wait and vm:stop make at the
-- caller's line.
local console = require "vmlua.console"
local core = require "vmlua.core"
local task = require "vmlua.task"
local helpers = require "support.helpers"

-- A console whose expect/read_until runs as a task while `feed` delivers
-- output; returns what the call returned.
local function waiting(con, method, ...)
  local result
  local args = table.pack(...)
  task.spawn(function() result = table.pack(con[method](con, table.unpack(args, 1, args.n))) end)
  return function() return result end
end

describe("console.pattern", function()
  it("knows the longest match of bounded patterns", function()
    assert.are.equal(6, console.pattern("login:").max)
    assert.are.equal(7, console.pattern("vmlua# ").max)
    assert.are.equal(3, console.pattern("%d[%]x]?.").max)
    assert.are.equal(3, console.pattern("%f[%w]ab()c$").max)
    assert.are.equal(0, console.pattern("").max)
    assert.is_true(console.pattern("^root").anchored)
  end)

  it("has no bound for repetitions, %b and back-references", function()
    for _, p in ipairs { "a*", "x.-y", "%d+", "%b()", "(a)%1" } do
      local info = assert(console.pattern(p), p)
      assert.is_nil(info.max, p)
    end
  end)

  it("rejects malformed patterns, even where string.find would not look", function()
    local cases = {
      ["["] = "malformed pattern (missing ']')",
      ["login["] = "malformed pattern (missing ']')",
      ["a%"] = "malformed pattern (ends with '%')",
      ["(a"] = "unfinished capture",
      ["a)"] = "invalid pattern capture",
      ["x%b"] = "malformed pattern (missing arguments to '%b')",
      ["x%fa"] = "missing '[' after '%f' in pattern",
      ["(a)%2"] = "invalid capture index %2",
      ["%1(a)"] = "invalid capture index %1",
    }
    for p, why in pairs(cases) do
      local info, err = console.pattern(p)
      assert.is_nil(info, p)
      assert.are.equal(why, err, p)
    end
    assert.are.equal("a pattern must be a string", select(2, console.pattern(nil)))
  end)
end)

describe("a console", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  it("matches a pattern split across chunks, leftmost first, consuming up to the match", function()
    local con = console.new {}
    local got = waiting(con, "expect", "log(%a+):", 5)
    for _, c in ipairs { "boot ", "lo", "g", "in", ": then login: again" } do con:_output(c) end
    assert.are.same({ "in", n = 1 }, got())
    assert.are.equal("in", con:expect("log(%a+):", 0))
    assert.are.same({ nil, "timeout" }, { con:expect("log(%a+):", 0) })
    assert.are.equal(" again", con:expect(".*", 0))
  end)

  it("matches unbounded patterns across a flood, once the output settles", function()
    local con = console.new {}
    local got = waiting(con, "expect", "done (%d+) of (%d+)", 10)
    local line = string.rep("z", 99) .. "\n"
    for _ = 1, 30000 do con:_output(line) end -- 3 MB, more than expect keeps
    con:_output("done 7 of ")
    con:_output("9\n")
    task.sleep(0.5) -- the rescan waits for the output to settle
    assert.are.same({ "7", "9", n = 2 }, got())
  end)

  it("keeps at most its limit of unread output, and the latest", function()
    local con = console.new {}
    for i = 1, 5000 do con:_output(string.format("%09d\n", i)) end
    assert.is_true(con.pending:size() <= 2 * console.PENDING_BYTES)
    local big = string.rep("q", 1000)
    for _ = 1, 3000 do con:_output(big) end
    assert.is_true(con.pending:size() <= 2 * console.PENDING_BYTES)
    con:_output("the end")
    assert.are.equal("the end", con:expect("the end", 0))
    assert.are.equal("..." .. string.rep("q", console.LINE_BYTES - 7) .. "the end", con:last_lines(1))
    assert.is_true(#con.tail <= 2 * console.TAIL_BYTES)
  end)

  it("reads everything up to a mark, however long", function()
    local con = console.new {}
    local got = waiting(con, "read_until", "<<end>>", 10)
    local parts = {}
    for i = 1, 40000 do
      local s = string.format("line %d\r\n", i)
      parts[#parts + 1] = s
      con:_output(s)
    end
    con:_output("<<en")
    con:_output("d>>rest")
    local result = got()
    assert.are.equal(table.concat(parts), result[1])
    assert.are.equal("rest", con:expect("rest", 0))
  end)

  it("reads a stream written a byte at a time, losing nothing while it lets output gather", function()
    local path = dir .. "/console.sock"
    local accepted
    local server = assert(core.listen(path, function(stream) accepted = stream end))
    local client = task.await(function(wake) core.connect(path, wake) end, 5)
    for _ = 1, 100 do
      if accepted then break end
      task.sleep(0.01)
    end
    assert.truthy(accepted)
    local con = console.new {}
    con:attach(accepted)
    local sent = {}
    for i = 1, 3000 do
      local c = string.char(97 + i % 26)
      sent[#sent + 1] = c
      client:write(c)
      if i % 100 == 0 then task.sleep(0.002) end
    end
    client:write("<<done>>")
    local before = con:read_until("<<done>>", 10)
    assert.are.equal(table.concat(sent), before)
    client:close()
    assert.are.same({ nil, "ended" }, { con:expect("never", 5) })
    server:close()
    con:close()
  end)

  it("says when the output ended", function()
    local con = console.new {}
    local got = waiting(con, "expect", "never", 10)
    con:_output("something")
    con:_ended()
    assert.are.same({ nil, "ended", n = 2 }, got())
  end)

  it("rotates a scratch log at its limit, keeping two files with the latest output", function()
    local log = dir .. "/console.log"
    local con = console.new { log = log, rotate = 1000 }
    for i = 1, 500 do con:_output(string.format("%5d\n", i)) end
    con.log:flush() -- the log is buffered for at most console.FLUSH seconds
    local cur, old = io.open(log):read("a"), io.open(log .. ".1"):read("a")
    assert.is_true(#cur < 1000 and #old >= 1000 and #old < 1100)
    assert.are.equal("  500\n", cur:sub(-6))
    assert.are.equal(tonumber("600", 8), core.stat(log).mode & tonumber("777", 8))
    con:close()
    assert.is_nil(core.stat(log .. ".1"))
  end)

  it("leaves a log the user named alone: no rotation, and its mode if it was there", function()
    local log = helpers.write(dir .. "/mine.log", "before\n")
    os.execute("chmod 644 '" .. log .. "'")
    local con = console.new { log = log }
    for _ = 1, 100 do con:_output(string.rep("u", 100)) end
    con:close()
    assert.are.equal(7 + 10000, #io.open(log):read("a"))
    assert.are.equal(tonumber("644", 8), core.stat(log).mode & tonumber("777", 8))
  end)
end)

describe("vm:expect, vm:run, vm:send, vm:wait and vm:stop", function()
  local dir, vm
  before_each(function()
    dir = helpers.tmpdir()
    helpers.fixtures(dir)
    local vmlua = require "vmlua"
    vm = vmlua.vm { name = "args", memory = "256M",
                    boot = vmlua.linux { kernel = dir .. "/vmlinuz", initrd = dir .. "/initrd.img" } }
  end)
  after_each(function() helpers.rmtree(dir) end)

  -- The error of calling f, which must be at this file's line `line`.
  local function err_at(line, ok, msg)
    assert.is_false(ok)
    assert.matches("console_spec%.lua:" .. line .. ": ", msg)
    return msg:gsub("^[^:]*:%d+: ", "")
  end
  local function here() return debug.getinfo(2, "l").currentline end

  it("report bad patterns at the caller's line", function()
    local l = here() local ok, msg = pcall(function() vm:expect("[") end)
    assert.are.equal([[vm args: expect: bad pattern "[": malformed pattern (missing ']')]], err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:expect("login[") end)
    assert.are.equal([[vm args: expect: bad pattern "login[": malformed pattern (missing ']')]], err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:expect(nil) end)
    assert.are.equal("vm args: expect: the pattern must be a string, got nil", err_at(l, ok, msg))
    assert.is_true(require("vmlua.errors").user[msg] ~= nil) -- no traceback
  end)

  it("report bad options at the caller's line", function()
    local l = here() local ok, msg = pcall(function() vm:expect("x", { timeout = 0 / 0 }) end)
    assert.are.equal("vm args: expect: timeout must be a number of seconds (0 or more, finite), got NaN",
                     err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:expect("x", { timeout = "x" }) end)
    assert.are.equal('vm args: expect: timeout must be a number of seconds (0 or more, finite), got string "x"',
                     err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:expect("x", { timeout = -1 }) end)
    assert.matches("got number %-1$", err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:expect("x", { timout = 3 }) end)
    assert.are.equal('vm args: expect: unknown option string "timout"; did you mean "timeout"?', err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:expect("x", 5) end)
    assert.are.equal("vm args: expect: the options must be a table, got number 5", err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:run("true", { timeout = math.huge }) end)
    assert.matches("^vm args: run: timeout must be", err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:wait("running", { timeout = "soon" }) end)
    assert.matches("^vm args: wait: timeout must be", err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:stop { timeout = 0 / 0 } end)
    assert.matches("^vm args: stop: timeout must be .*got NaN$", err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:stop { force = true } end)
    assert.are.equal('vm args: stop: unknown option string "force"; it takes timeout', err_at(l, ok, msg))
  end)

  it("report bad commands, texts and states at the caller's line", function()
    local l = here() local ok, msg = pcall(function() vm:run(nil) end)
    assert.are.equal("vm args: run: the command must be a string, got nil", err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:run(42) end)
    assert.are.equal("vm args: run: the command must be a string, got number 42", err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:send({}) end)
    assert.are.equal("vm args: send: the text must be a string, got a table", err_at(l, ok, msg))
    l = here() ok, msg = pcall(function() vm:wait("runing") end)
    assert.are.equal('vm args: wait: string "runing" is not a state; did you mean "running"?', err_at(l, ok, msg))
  end)

  it("still refuse a stopped VM once the arguments are right", function()
    local l = here() local ok, msg = pcall(function() vm:expect("login:", { timeout = 1 }) end)
    assert.are.equal("vm args: cannot expect: it is stopped", err_at(l, ok, msg))
  end)
end)
