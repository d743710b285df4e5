-- A VM's name and its runtime directory, around real guests: two vmlua
-- processes starting one name at the same moment, names that are not plain
-- file names, and directories and logs that vmlua did not make.
local core = require "vmlua.core"
local task = require "vmlua.task"
local runtime = require "vmlua.runtime"
local cli = require "support.cli"
local guest = require "support.guest"
local helpers = require "support.helpers"

local function exists(path) return core.stat(path) ~= nil end

local function touch(path) helpers.write(path, "") end

-- The pids of the processes whose command line mentions `text`.
local function processes_with(text)
  local pids = {}
  local p = assert(io.popen("ls /proc"))
  for entry in p:lines() do
    local f = entry:match("^%d+$") and io.open("/proc/" .. entry .. "/cmdline", "rb")
    if f then
      local cmdline = f:read("a") or ""
      f:close()
      if cmdline:find(text, 1, true) then pids[#pids + 1] = tonumber(entry) end
    end
  end
  p:close()
  return pids
end

-- A script defining one x86_64 guest called `name`, then `body`.
local function script(dir, file, name, body)
  local files = guest.files("x86_64")
  return cli.write(dir, file, string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }
]], name, files.kernel, files.initrd) .. body)
end

-- Runs `vmlua args...` with extra environment variables (NAME=VALUE).
local function run_with_env(env, args)
  local argv = { "env" }
  for _, e in ipairs(env) do argv[#argv + 1] = e end
  argv[#argv + 1] = cli.binary
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local h = { out = "", err = "", changed = task.condition() }
  h.process = assert(core.spawn {
    file = "/usr/bin/env", args = argv,
    on_stdout = function(d) h.out = h.out .. d; h.changed.notify() end,
    on_stderr = function(d) h.err = h.err .. d; h.changed.notify() end,
    on_exit = function(code, signal) h.code, h.signal = code, signal; h.changed.notify() end,
  })
  assert(h.changed.wait(function() return h.code or h.signal end, 120), "vmlua did not exit: " .. h.err)
  return h.code, h.out, h.err
end

describe("claiming a VM's name", function()
  local running = {} -- vmlua processes a spec started

  after_each(function()
    for _, h in ipairs(running) do
      if h.code == nil and h.signal == nil then
        h.process:kill("TERM")
        h.changed.wait(function() return h.code or h.signal end, 60)
        if h.code == nil and h.signal == nil then h.process:kill("KILL") end
      end
    end
    running = {}
    guest.cleanup()
  end)

  local RACE = [[
local go, done = ...
local function exists(p) local f = io.open(p) if f then f:close() return true end return false end
print("ready") io.stdout:flush()
while not exists(go) do vmlua.sleep(0.002) end
vm:start()
vm:expect("vmlua# ", { timeout = 120 })
print("started") io.stdout:flush()
while not exists(done) do vmlua.sleep(0.05) end
local out, status = vm:run("echo alive-$((6 * 7))")
print("ran " .. out .. " " .. status) io.stdout:flush()
vm:stop()
]]

  -- Eight trials, since a race may go either way.
  for trial = 1, 8 do
    it("lets exactly one of two processes starting one name at once win (trial " .. trial .. ")", function()
      local dir = guest.tmpdir()
      local name = string.format("race-%d-%d", core.getpid(), trial)
      local go, done = dir .. "/go", dir .. "/done"
      local file = script(dir, "race.lua", name, RACE)
      local a = cli.spawn { file, go, done }
      local b = cli.spawn { file, go, done }
      running[#running + 1], running[#running + 2] = a, b
      a.until_(function() return a.out:find("ready") end)
      b.until_(function() return b.out:find("ready") end)
      touch(go)
      local function ended(h) return h.code ~= nil or h.signal ~= nil end
      local function started(h) return h.out:find("started") ~= nil end
      for _ = 1, 2400 do
        if ended(a) or ended(b) or (started(a) and started(b)) then break end
        task.sleep(0.05)
      end
      local msg = string.format("A (%s %s): %s%s\nB (%s %s): %s%s", tostring(a.code), tostring(a.signal),
        a.out, a.err, tostring(b.code), tostring(b.signal), b.out, b.err)
      assert(not (started(a) and started(b)), "both started: " .. msg)
      assert(ended(a) ~= ended(b), "both ended: " .. msg)
      local winner, loser = a, b
      if ended(a) then winner, loser = b, a end
      assert.are.equal(1, loser.code, msg)
      assert.matches("vm " .. name .. ": cannot start: already running (", loser.err, 1, true)
      assert.matches(runtime.paths(name).dir, loser.err, 1, true)
      -- The winner's VM still works after the loser has come and gone.
      winner.until_(started, 120)
      touch(done)
      local code, out = winner.wait(120)
      assert.are.equal(0, code, msg)
      assert.matches("ran alive%-42\n 0", out)
      assert.are.same({}, processes_with(runtime.paths(name).dir .. "/"), "a QEMU outlived its vmlua")
      assert.is_false(exists(runtime.paths(name).dir), "runtime directory left behind")
    end)
  end

  it("refuses the names '..' and '.', and leaves the directory above alone", function()
    local dir = guest.tmpdir()
    local parent = dir .. "/parent"
    assert(os.execute("mkdir -m 755 " .. helpers.shell_quote(parent)))
    local rt = parent .. "/rt"
    assert(core.mkdir_private(rt))
    for _, name in ipairs { "..", "." } do
      touch(parent .. "/pid")
      touch(parent .. "/console.log")
      touch(rt .. "/console.log")
      local file = script(dir, "dots.lua", name, 'vm:start()\nprint("started")\nvm:kill()\n')
      local code, out, err = run_with_env({ "VMLUA_RUNTIME_DIR=" .. rt }, { file })
      assert.are.equal(1, code, out .. err)
      local expected = string.format('vmlua: %s:2: name: "%s" must start with a letter or a digit\n', file, name)
      assert.are.equal(expected, err:sub(1, #expected))
      assert.are.equal(tonumber("755", 8), core.stat(parent).mode)
      assert.is_true(exists(parent .. "/pid"))
      assert.is_true(exists(parent .. "/console.log"))
      assert.is_true(exists(rt .. "/console.log"))
    end
  end)

  it("refuses a VMLUA_RUNTIME_DIR that other users can enter, rather than chmod it", function()
    local dir = guest.tmpdir()
    local rt = dir .. "/shared"
    assert(os.execute("mkdir -m 755 " .. helpers.shell_quote(rt)))
    local file = script(dir, "vm.lua", "rt-" .. core.getpid(), 'vm:start()\nprint("started")\nvm:kill()\n')
    local code, out, err = run_with_env({ "VMLUA_RUNTIME_DIR=" .. rt }, { file })
    assert.are.equal(1, code, out .. err)
    assert.matches("cannot use the runtime directory " .. rt .. ": it is open to other users (mode 0755)",
      err, 1, true)
    assert.is_nil(out:find("started"))
    assert.are.equal(tonumber("755", 8), core.stat(rt).mode)
  end)

  it("makes a new console log private, and leaves the mode of an existing one alone", function()
    local vmlua = require "vmlua"
    local dir = guest.tmpdir()
    local mine = dir .. "/mine.log"
    helpers.write(mine, "kept\n")
    assert(core.chmod(mine, tonumber("644", 8)))
    local fresh = dir .. "/fresh.log"
    for _, log in ipairs { mine, fresh } do
      local vm = guest.boot(guest.vm("x86_64", { console = vmlua.console { log = log } }))
      vm:kill()
    end
    assert.are.equal(tonumber("644", 8), core.stat(mine).mode)
    assert.are.equal(tonumber("600", 8), core.stat(fresh).mode)
    local f = assert(io.open(mine))
    local text = f:read("a")
    f:close()
    assert.are.equal("kept\n", text:sub(1, 5))
    assert.matches("vmlua# ", text)
  end)
end)
