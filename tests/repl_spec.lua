-- The interactive prompt, driven through a real pseudo-terminal: what a user
-- types, Ctrl-C and Ctrl-D included, and what the terminal shows.
local core = require "vmlua.core"
local guest = require "support.guest"
local helpers = require "support.helpers"
local pty = require "support.pty"

local K = pty.keys

describe("vmlua.repl, without a terminal", function()
  local repl = require "vmlua.repl"

  it("prints tables readably, sorted, to a depth, and cycles once", function()
    assert.are.equal("{}", repl.format({}))
    assert.are.equal('{ 1, "a", b = { c = 3 }, ["not a name"] = 4, [true] = 2 }',
                     repl.format({ 1, "a", b = { c = 3 }, ["not a name"] = 4, [true] = 2 }))
    local t = { name = "loop" }
    t.self = t
    assert.are.equal('{ name = "loop", self = <cycle> }', repl.format(t))
    assert.are.equal("{ { { {...} } } }", repl.format({ { { { { 1 } } } } }))
    assert.are.equal("vm x", repl.format(setmetatable({}, { __tostring = function() return "vm x" end })))
    local long = {}
    for i = 1, 30 do long["field" .. i] = i end
    assert.truthy(repl.format(long):find("^{\n  field1 = 1,\n  field10 = 10,\n"))
    assert.are.equal("as is", repl.format("as is"))
    assert.are.equal('"quoted\\n"', repl.format("quoted\n", true))
  end)

  it("completes names, fields, and methods after a colon", function()
    local obj = setmetatable({ field = 1 }, { __index = { method = function() end, _private = print } })
    local env = setmetatable({ obj = obj, other = 2 }, { __index = _G })
    assert.are.same({ "obj.field", "obj.method(" }, repl.complete(env, "obj.", ""))
    assert.are.same({ "obj:method(" }, repl.complete(env, "obj:", ""))
    assert.are.same({ "obj:_private(" }, repl.complete(env, "obj:_", ""))
    assert.are.same({ "other" }, repl.complete(env, "oth", "x = "))
    assert.are.same({ "string.format(" }, repl.complete(env, "string.form", ""))
    assert.are.same({}, repl.complete(env, "obj.", "print('"))
    assert.are.same({}, repl.complete(env, "nothing.", ""))
  end)

  it("completes the names of running VMs after vmlua.attach(", function()
    local runtime = require "vmlua.runtime"
    local name = "repl-complete-" .. core.getpid()
    local paths = runtime.paths(name)
    assert(core.mkdir_private(runtime.root()))
    assert(core.mkdir_private(paths.dir))
    local f = assert(io.open(paths.status, "w"))
    f:write(core.json_encode({ name = name, state = "running", vmlua = core.getpid() }))
    f:close()
    local lock = assert(core.lock(paths.lock)) -- this process runs it, as far as ls can tell
    -- '-' breaks words, so the word is what follows the last one
    local ok, result = pcall(repl.complete, {}, "comp", 'vmlua.attach("repl-')
    local whole = repl.complete({}, "repl", "vmlua.attach '")
    local missing = repl.complete({}, "comp", 'print("repl-')
    runtime.remove(paths, lock)
    assert(ok, result)
    assert.are.same({ "complete-" .. core.getpid() }, result)
    assert.are.same({ name }, whole)
    assert.are.same({}, missing)
  end)

  it("tells an incomplete chunk from a wrong one", function()
    assert.is_function(repl.compile("1 + 1"))
    assert.is_function(repl.compile("x = 1"))
    assert.is_true(select(3, repl.compile("function f()")))
    assert.is_true(select(3, repl.compile("print(1,")))
    local chunk, err, incomplete = repl.compile("x = = 1")
    assert.is_nil(chunk)
    assert.truthy(err:find("^stdin:1:"))
    assert.is_false(incomplete)
  end)
end)

describe("the prompt", function()
  local dir, term

  -- Starts vmlua on a pty, isolated from the user's files: HOME (libedit's
  -- ~/.editrc), the history under XDG_STATE_HOME and the runtime directory
  -- of VMs are all in the spec's directory.
  local function start(args, no_prompt)
    term = pty.spawn(args or {}, {
      "TERM=xterm", "HOME=" .. dir, "XDG_STATE_HOME=" .. dir .. "/state",
      "VMLUA_RUNTIME_DIR=" .. dir .. "/run",
    })
    if not no_prompt then term:expect("> ") end
    return term
  end

  -- Types a line at the prompt, and waits for the next prompt after it.
  local function enter(line)
    term:line(line)
    return term:expect("> ")
  end

  -- A definition whose kernel is a stand-in: the VM is never started.
  local function definition(name)
    helpers.fixtures(dir)
    return helpers.write(dir .. "/" .. name, string.format([[
local vmlua = require "vmlua"
local answer = 42
local vm = vmlua.vm { name = "repl-%d", arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }
]], core.getpid(), dir .. "/vmlinuz", dir .. "/initrd.img"))
  end

  before_each(function()
    dir = helpers.tmpdir()
  end)

  -- Whatever happened, nothing the spec started survives it: vmlua is
  -- killed (its QEMU gets SIGTERM from the kernel), and a QEMU still alive
  -- is killed through its pid file.
  after_each(function()
    if term then term:close() end
    term = nil
    local ls = io.popen("ls " .. helpers.shell_quote(dir .. "/run") .. " 2>/dev/null")
    for name in ls:lines() do
      local f = io.open(dir .. "/run/" .. name .. "/pid")
      local pid = f and tonumber(f:read("l"))
      if f then f:close() end
      if pid and core.alive(pid) then os.execute("kill -9 " .. pid) end
    end
    ls:close()
    helpers.rmtree(dir)
  end)

  it("evaluates what is typed and prints values readably", function()
    start()
    term:line("1 + 1")
    term:expect("2\n")
    enter("")
    term:line('{ 1, "two", t = { x = true }, [10] = "ten" }')
    term:expect('{ 1, "two", [10] = "ten", t = { x = true } }\n')
    enter("x = 6 * 7")
    term:line("'a string'")
    term:expect("a string\n")
    term:line("x, 'two\\nlines'") -- several values: strings quoted
    term:expect('42\t"two\\nlines"\n')
    term:line("{ { { { 1 } } } }")
    term:expect("{ { { {...} } } }\n")
    term:line('error("boom")')
    term:expect("stdin:1: boom\n")
    term:expect("> ")
    term:send(K.ctrl_d)
    assert.are.equal(0, term:wait_exit())
  end)

  it("completes globals, fields and methods with Tab", function()
    helpers.fixtures(dir)
    start()
    enter(string.format("k = %q", dir .. "/vmlinuz"))
    enter('vm = vmlua.vm { name = "c", arch = "x86_64", boot = vmlua.linux { kernel = k } }')
    term:send("vmlua.ho" .. K.tab)
    term:expect("vmlua.host")
    term:line("")
    term:expect('arch = "')
    term:expect("> ")
    term:send("vm:pa" .. K.tab)
    term:expect("vm:pause(")
    term:send(")" .. K.enter)
    term:expect("cannot pause: it is stopped")
    term:expect("> ")
    term:send("vm:st" .. K.tab) -- start( and stop(: nothing to add, so listed
    term:expect("start(  stop(")
    term:expect("> vm:st")
    term:send("art" .. K.ctrl_c)
    term:expect("^C")
    term:expect("> ")
    term:send("pri" .. K.tab)
    term:expect("print(")
    term:send("'done')" .. K.enter)
    term:expect("done\n")
  end)

  it("keeps the history across runs, in a private file", function()
    start()
    enter("marker = 12345")
    term:send(K.ctrl_d)
    assert.are.equal(0, term:wait_exit())
    term:close()
    local file = dir .. "/state/vmlua/history"
    assert.are.equal(tonumber("600", 8), assert(core.stat(file)).mode)
    assert.are.equal(tonumber("700", 8), assert(core.stat(dir .. "/state/vmlua")).mode)

    start()
    term:send(K.ctrl_p) -- the previous line, from the first run
    term:expect("marker = 12345")
    term:line("")
    term:expect("> ")
    term:line("marker")
    term:expect("12345\n")
  end)

  it("continues an incomplete chunk on a >> prompt", function()
    start()
    term:line("function double(x)")
    term:expect(">> ")
    term:line("return x * 2")
    term:expect(">> ")
    term:line("end")
    term:expect("> ")
    term:line("double(")
    term:expect(">> ")
    term:line("21)")
    term:expect("42\n")
  end)

  it("interrupts a wait with Ctrl-C and goes on", function()
    start()
    term:line("vmlua.sleep(100)")
    term:send(K.ctrl_c)
    term:expect("interrupted\n")
    term:expect("> ")
    term:line("1 + 2")
    term:expect("3\n")
    term:expect("> ")
    -- busy code too
    term:line("while true do end")
    term:send(K.ctrl_c)
    term:expect("interrupted\n")
    term:expect("> ")
    -- at the prompt, Ctrl-C drops the line being typed
    term:send("abc")
    term:expect("abc")
    term:send(K.ctrl_c)
    term:expect("^C")
    term:expect("> ")
    term:line("7 * 6")
    term:expect("42\n")
  end)

  it("prints asynchronous output above the line being typed", function()
    start()
    enter("ticks = vmlua.every(0.2, function() print('tick') end)")
    term:send("print('half")
    term:expect("print('half")
    term:expect("tick\n")
    term:expect("> print('half") -- drawn again below, as it was
    term:send(" typed')" .. K.enter)
    term:expect("half typed\n")
    term:expect("> ")
    term:line("ticks:stop()")
  end)

  it("with -i FILE, runs the file and offers its locals and VMs", function()
    start { "-i", definition("def.lua") }
    term:line("answer")
    term:expect("42\n")
    term:expect("> ")
    term:line("vm")
    term:expect(string.format("vm repl-%d (stopped, x86_64)", core.getpid()))
  end)

  it("has help() and help \"start\", and vmlua.vms() for a VM no local names", function()
    helpers.fixtures(dir)
    start { "-i", helpers.write(dir .. "/unbound.lua", string.format('local vmlua = require "vmlua"\n' ..
      'vmlua.vm { name = "unbound", arch = "x86_64", boot = vmlua.linux { kernel = %q } }\n', dir .. "/vmlinuz")) }
    term:line("help()")
    term:expect("vm:start([opts])")
    term:expect("> ")
    term:line('help "start"')
    term:expect("vm:start([opts])")
    term:expect("  Starts QEMU and returns when the guest runs")
    term:expect("> ")
    term:line("vmlua.vms()[1]")
    term:expect("vm unbound (stopped, x86_64)")
  end)

  it("reads plain lines when stdin is not a terminal", function()
    local out = ""
    local done
    local p = assert(core.spawn {
      file = "/bin/sh",
      args = { "sh", "-c", "printf 'x = 20\\nx + 22\\nfor i = 1, 2 do\\nprint(i)\\nend\\n' | " ..
                            helpers.shell_quote(pty.binary) },
      on_stdout = function(d) out = out .. d end,
      on_exit = function(code) done = code end,
    })
    local deadline = core.now() + 15
    while done == nil and core.now() < deadline do core.run("once") end
    p:close()
    assert.are.equal(0, done)
    assert.are.equal("42\n1\n2\n", out)
  end)

  local have_guest = pcall(guest.files, "x86_64")
  local with_guest = have_guest and it or pending

  with_guest("attaches the terminal to a VM's console, and stops the VM at the end", function()
    local files = guest.files("x86_64")
    local log = dir .. "/console.log"
    local def = helpers.write(dir .. "/dev.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = "repl-%d", arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q }, console = vmlua.console { log = %q } }
]], core.getpid(), files.kernel, files.initrd, log))
    start { "-i", def }
    term:line("vm:start() vm:expect('vmlua# ', { timeout = 60 })")
    term:expect("> ", 90)
    term:line("vm:console()")
    term:expect("Ctrl-] detaches")
    -- The shell may still be settling: Enter until it shows a fresh prompt.
    local fresh = false
    for _ = 1, 5 do
      term:send(K.enter)
      if pcall(term.expect, term, "vmlua# ", 5) then
        fresh = true
        break
      end
    end
    assert.is_true(fresh, "the guest shell never answered:\n" .. term:rest())
    term:send("echo hi$((6*7))" .. K.enter)
    term:expect("hi42")
    term:send(K.ctrl_bracket)
    term:expect(string.format("detached from vm repl-%d (running", core.getpid()))
    term:expect("> ")
    term:line("vm.state")
    term:expect("running\n")
    term:expect("> ")
    local f = assert(io.open(log))
    local logged = f:read("a")
    f:close()
    assert.truthy(logged:find("hi42", 1, true), "the console log lacks what was typed")
    term:send(K.ctrl_d)
    term:expect(string.format("stopping vm repl-%d", core.getpid()))
    term:expect(string.format("vm repl-%d stopped", core.getpid()), 30)
    assert.are.equal(0, term:wait_exit(30))
  end)
  with_guest("boots a file that only defines a VM with the terminal on its console", function()
    local files = guest.files("x86_64")
    local def = helpers.write(dir .. "/only.lua", string.format([[
local vmlua = require "vmlua"
vmlua.vm { name = "only-%d", arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }
]], core.getpid(), files.kernel, files.initrd))
    start({ def }, "no prompt")
    term:expect("Ctrl-] detaches and stops it", 30)
    term:expect("vmlua# ", 90)
    term:send("echo typed-$((6*7))" .. K.enter)
    term:expect("typed-42")
    term:send(K.ctrl_bracket)
    term:expect(string.format("detached from only-%d; stopping it", core.getpid()))
    term:expect(string.format("stopped vm only-%d (graceful", core.getpid()))
    assert.are.equal(0, term:wait_exit(60))
  end)
end)
