-- Instances that outlive their script, around real guests: vm:start{detach=true},
-- vmlua ls/stop/attach/rm/start, vmlua.attach, and what a SIGKILL leaves.
local core = require "vmlua.core"
local task = require "vmlua.task"
local runtime = require "vmlua.runtime"
local store = require "vmlua.instance.store"
local vmlua = require "vmlua"
local cli = require "support.cli"
local guest = require "support.guest"
local pty = require "support.pty"

local function exists(path) return core.stat(path) ~= nil end
local function mode(path) return core.stat(path).mode & tonumber("777", 8) end

local read = require("vmlua.runtime").read_file

-- A script that defines one x86_64 guest called `name`, starts it detached,
-- waits for its shell, then runs `body`.
local function detach_script(dir, name, body, extra)
  local files = guest.files("x86_64")
  return cli.write(dir, name .. ".lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M", %s
  boot = vmlua.linux { kernel = %q, initrd = %q } }
vm:start { detach = true }
vm:expect("vmlua# ", { timeout = 120 })
]], name, extra or "", files.kernel, files.initrd) .. (body or ""))
end

local function ls()
  local code, out, err = cli.run({ "ls", "--json" }, 60)
  assert.are.equal(0, code, err)
  local list = {}
  for _, s in ipairs(core.json_decode(out)) do list[s.name] = s end
  return list, err
end

-- Waits until `vmlua ls` says `name` is in one of `states`; returns its entry.
local function ls_until(name, states, seconds)
  local deadline = core.now() + seconds
  local entry
  repeat
    entry = ls()[name]
    if entry and states[entry.state] then return entry end
    task.sleep(0.2)
  until core.now() > deadline
  error(string.format("vm %s: ls says %s after %g s", name, entry and entry.state or "nothing", seconds))
end

describe("instances", function()
  local names = {}
  local count = 0
  local function new_name()
    count = count + 1
    local name = string.format("inst-%d-%d", core.getpid(), count)
    names[#names + 1] = name
    return name
  end

  after_each(function()
    local reports = {}
    local list = ls()
    for _, name in ipairs(names) do
      local entry = list[name]
      if entry and not ({ stopped = true, error = true })[entry.state] then
        cli.run({ "stop", "--force", name }, 60)
      end
      -- a keeper's own errors (and, under make sanitize, ASan's) go to its log
      if entry and entry.vmlua then guest.gone_within(math.tointeger(entry.vmlua), 20) end
      local log = read(store.paths(name).keeper_log)
      if log and log:find("Sanitizer", 1, true) then reports[#reports + 1] = log end
      cli.run({ "rm", "--force", name }, 60)
    end
    names = {}
    guest.cleanup()
    assert.are.same({}, reports, "a keeper reported errors")
  end)

  it("outlives the script that started it, and is reached, stopped and removed by name", function()
    local dir = guest.tmpdir()
    local name = new_name()
    local file = detach_script(dir, name, [[
print(vm:run("echo detached > /tmp/mark; echo $((6 * 7))"))
vm:send("(sleep 2; echo late-$((40 + 2))) &\n")
print(vm)
]], "net = { vmlua.nat { forward = { [0] = 22 } } },")
    local code, out, err = cli.run({ file }, 180)
    assert.are.equal(0, code, out .. err)
    assert.matches("42\n\t0\n", out, 1, true)
    local entry = ls()[name]
    assert.are.equal("running", entry.state)
    assert.is_true(entry.detached)
    assert.is_true(core.alive(entry.pid), "QEMU is not running")
    assert.are.equal("x86_64", entry.arch)
    assert.are.equal(256 * 1024 * 1024, entry.memory)
    assert.matches("^127%.0%.0%.1:%d+%->22$", entry.ports[1])

    -- Private files: the state and runtime directories, the sockets.
    local paths, state = runtime.paths(name), store.paths(name)
    assert.are.equal(tonumber("700", 8), mode(paths.dir))
    assert.are.equal(tonumber("700", 8), mode(state.dir))
    assert.are.equal(tonumber("600", 8), mode(paths.control))
    assert.are.equal(tonumber("600", 8), mode(paths.console_sock))

    -- The console is logged while nobody is attached.
    local deadline = core.now() + 30
    while not (read(state.log) or ""):find("late-42", 1, true) and core.now() < deadline do task.sleep(0.2) end
    assert.matches("late-42", read(state.log), 1, true)

    -- From Lua: the same VM, where the script left it.
    local vm = vmlua.attach(name)
    assert.are.equal("running", vm.state)
    assert.are.equal(entry.ports[1], "127.0.0.1:" .. vm:ports()[22] .. "->22") -- chosen by the keeper
    local mark, status = vm:run("cat /tmp/mark")
    assert.are.same({ "detached\n", 0 }, { mark, status })
    local states = {}
    vm:on("state", function(new) states[#states + 1] = new end)
    vm:pause()
    assert.are.equal("paused", ls()[name].state)
    vm:resume()
    assert.are.same({ "pausing", "paused", "resuming", "running" }, states)

    -- Starting the name again is refused, and says how to reach it.
    code, out, err = cli.run({ file }, 120)
    assert.are.equal(1, code, out .. err)
    assert.matches("vm " .. name .. ": cannot start: it is already running", err, 1, true)
    assert.matches("vmlua attach " .. name, err, 1, true)

    -- rm refuses a running instance.
    local rm_code, _, rm_err = cli.run({ "rm", name }, 60)
    assert.are.equal(1, rm_code)
    assert.matches("is running", rm_err, 1, true)

    -- vmlua stop: the guest powers off; the attached VM object sees it end.
    code, out, err = cli.run({ "stop", name }, 60)
    assert.are.equal(0, code, out .. err)
    assert.matches("vm " .. name .. " stopped (graceful)", err, 1, true)
    assert.is_true(vm:_wait_until(function(s) return s == "stopped" end, 10))
    assert.is_false(core.alive(entry.pid))
    assert.are.equal("stopped", ls()[name].state)
    assert.is_false(exists(paths.dir), "runtime directory left behind")

    -- vmlua start brings it back from its saved configuration.
    code, out, err = cli.run({ "start", name }, 180)
    assert.are.equal(0, code, out .. err)
    vm = vmlua.attach(name)
    vm:expect("vmlua# ", { timeout = 120 })
    assert.are.equal("graceful", vm:stop())

    rm_code, _, rm_err = cli.run({ "rm", name }, 60)
    assert.are.equal(0, rm_code, rm_err)
    assert.is_false(exists(state.dir))
    assert.is_nil(ls()[name])
  end)

  it("lists a VM that a script runs, and lets vmlua stop end it", function()
    local dir = guest.tmpdir()
    local name = new_name()
    local files = guest.files("x86_64")
    local file = cli.write(dir, "owned.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }
vm:start()
vm:expect("vmlua# ", { timeout = 120 })
print("up") io.stdout:flush()
vm:wait("stopped", { timeout = 120 })
print("ended: " .. vm.reason)
]], name, files.kernel, files.initrd))
    local h = cli.spawn { file }
    h.until_(function() return h.out:find("up") end, 180)
    local entry = ls()[name]
    assert.are.equal("running", entry.state)
    assert.is_false(entry.detached)
    local code, out, err = cli.run({ "stop", name }, 60)
    assert.are.equal(0, code, out .. err)
    code, out = h.wait(60)
    assert.are.equal(0, code, out .. h.err)
    assert.matches("ended: stopped by vmlua", out, 1, true)
  end)

  it("runs on when the script that detached it is killed", function()
    local dir = guest.tmpdir()
    local name = new_name()
    local h = cli.spawn { detach_script(dir, name, 'print("up") io.stdout:flush()\nvmlua.sleep(600)\n') }
    h.until_(function() return h.out:find("up") end, 180)
    h.process:kill("KILL")
    h.wait(10)
    task.sleep(1)
    local entry = ls()[name]
    assert.are.equal("running", entry.state)
    assert.is_true(core.alive(entry.pid))
    local vm = vmlua.attach(name)
    assert.are.same({ "still\n", 0 }, { vm:run("echo still") })
  end)

  -- Starts an instance from a script that detaches it; returns the script and ls's entry.
  local function start_detached(name)
    local file = detach_script(guest.tmpdir(), name)
    local code, out, err = cli.run({ file }, 180)
    assert.are.equal(0, code, out .. err)
    return file, ls()[name]
  end

  local function kill9(pid)
    assert.are.equal(0, select(2, vmlua.exec { "kill", "-KILL", tostring(math.tointeger(pid)) }))
  end

  it("tells the truth after QEMU is killed, and starts again", function()
    local name = new_name()
    local file, entry = start_detached(name)
    kill9(entry.pid)
    local after = ls_until(name, { error = true, stopped = true }, 5)
    assert.are.equal("error", after.state)
    assert.matches("SIGKILL", after.reason, 1, true)
    local code, out, err = cli.run({ file }, 180)
    assert.are.equal(0, code, out .. err)
    assert.are.equal("running", ls()[name].state)
  end)

  it("tells the truth after its keeper is killed: the guard powers the guest off", function()
    local name = new_name()
    local file, entry = start_detached(name)
    kill9(entry.vmlua)
    -- Within 5 s, ls no longer says it runs.
    local after = ls_until(name, { stopping = true, stopped = true }, 5)
    assert.matches("keeper", after.reason, 1, true)
    assert.is_true(guest.gone_within(math.tointeger(entry.pid), 20), "QEMU outlived its keeper and guard")
    after = ls_until(name, { stopped = true }, 10)
    assert.matches("keeper", after.reason, 1, true)
    local code, out, err = cli.run({ file }, 180)
    assert.are.equal(0, code, out .. err)
    assert.are.equal("running", ls()[name].state)
  end)

  it("lets exactly one of two processes detaching one name at once win", function()
    local dir = guest.tmpdir()
    local name = new_name()
    local file = detach_script(dir, name)
    local a, b = cli.spawn { file }, cli.spawn { file }
    local code_a, out_a = a.wait(180)
    local code_b, out_b = b.wait(180)
    local msg = string.format("A %s: %s%s\nB %s: %s%s", tostring(code_a), out_a, a.err, tostring(code_b), out_b, b.err)
    assert.are.same({ 0, 1 }, { math.min(code_a, code_b), math.max(code_a, code_b) }, msg)
    local loser = code_a == 1 and a or b
    assert.matches("vm " .. name .. ": cannot start: already running (", loser.err, 1, true)
    assert.matches("vmlua attach " .. name .. " reaches it", loser.err, 1, true)
    assert.are.equal("running", ls()[name].state)
    local vm = vmlua.attach(name)
    assert.are.same({ "ok\n", 0 }, { vm:run("echo ok") })
  end)

  it("cleans up the files of a vmlua that died, with a notice", function()
    local name = new_name()
    local paths = runtime.paths(name)
    assert(core.mkdir_private(runtime.root()))
    assert(core.mkdir_private(paths.dir))
    for _, f in ipairs { paths.lock, paths.status, paths.qmp } do
      local h = assert(io.open(f, "w"))
      h:write('{"name":"' .. name .. '","state":"running","vmlua":99999999}')
      h:close()
    end
    local list, err = ls()
    assert.is_nil(list[name])
    assert.matches("vm " .. name .. ": removed the files left by vmlua pid 99999999", err, 1, true)
    assert.is_false(exists(paths.dir))
  end)

  it("never takes a keeper that is recording the end for a dead one", function()
    local name = new_name()
    local state = assert(store.prepare(name))
    local h = assert(io.open(state.config, "w"))
    h:write(require("vmlua.config").encode { name = name, arch = "x86_64", cpus = 1, memory = 1, console = {} })
    h:close()
    -- a process whose command line reads like a keeper's
    local keeper = assert(core.spawn { file = "/bin/sh", args = { "sh", "-c", "sleep 60", "keeper" } })
    h = assert(io.open(state.status, "w"))
    h:write(core.json_encode { name = name, state = "running", vmlua = keeper:pid() })
    h:close()
    assert.are.equal("stopping", ls()[name].state)
    assert.are.equal("running", runtime.read_json(state.status).state, "ls wrote over the keeper's record")
    keeper:kill("KILL")
    task.sleep(0.2)
    local entry, err = ls()
    assert.are.equal("stopped", entry[name].state)
    assert.matches("its keeper (vmlua pid " .. keeper:pid() .. ") ended without recording its end", err, 1, true)
    keeper:close()
  end)

  it("attaches a terminal to the console; Ctrl-] detaches and leaves it running", function()
    local dir = guest.tmpdir()
    local name = new_name()
    local code, out, err = cli.run({ detach_script(dir, name) }, 180)
    assert.are.equal(0, code, out .. err)
    local t = pty.spawn { "attach", name }
    t:expect("attached to the console of " .. name)
    t:send("echo hi-$((6 * 7))\r")
    t:expect("hi-42")
    t:send(pty.keys.ctrl_bracket)
    t:expect("detached from vm " .. name .. " (running")
    assert.are.equal(0, t:wait_exit(10))
    assert.are.equal("running", ls()[name].state)
  end)

  it("refuses what cannot work, naming the VM", function()
    local name = new_name()
    assert.has_error(function() vmlua.attach(name) end,
      "vmlua.attach: no VM named " .. name .. " is running (see vmlua ls)")
    local code, _, err = cli.run({ "stop", name }, 30)
    assert.are.equal(1, code)
    assert.matches("no VM named " .. name .. " is running", err, 1, true)
    code, _, err = cli.run({ "rm", name }, 30)
    assert.are.equal(1, code)
    assert.matches("no instance named " .. name, err, 1, true)
    code, _, err = cli.run({ "stop" }, 30)
    assert.are.equal(1, code)
    assert.matches("usage: vmlua stop NAME", err, 1, true)
    local help
    code, help = cli.run({ "ls", "--help" }, 30)
    assert.are.equal(0, code)
    assert.matches("usage: vmlua ls [--json]", help, 1, true)
  end)
end)
