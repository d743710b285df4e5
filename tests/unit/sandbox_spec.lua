-- vmlua.sandbox: a recipe from someone else runs in a restricted
-- environment under CPU and memory limits, and the VMs it defines are
-- checked before anything starts. Each way out is tried here.
local core = require "vmlua.core"
local helpers = require "support.helpers"
local machine = require "vmlua.machine"
local sandbox = require "vmlua.sandbox"

local VM_HEAD = 'local vmlua = require "vmlua"\n'

describe("vmlua.sandbox", function()
  local dir, outside
  before_each(function()
    dir, outside = helpers.tmpdir(), helpers.tmpdir()
    helpers.fixtures(dir)
    helpers.write(outside .. "/secret", "secret\n")
  end)
  after_each(function()
    helpers.rmtree(dir)
    helpers.rmtree(outside)
  end)

  -- Writes the recipe and loads it in the sandbox: pcall's results.
  local function try(src, opts, name)
    local path = helpers.write(dir .. "/" .. (name or "recipe.lua"), src)
    return pcall(sandbox.load, path, opts)
  end

  local function refused(src, pattern, opts)
    local ok, err = try(src, opts)
    assert.is_false(ok, "the recipe was not refused")
    assert.matches(pattern, tostring(err))
    return err
  end

  it("runs a well-behaved recipe and returns the VM it defines", function()
    local ok = try(VM_HEAD .. [[
      local extra = require "parts.extra"
      local lines = {}
      for line in io.lines("vmlinuz") do lines[#lines + 1] = line end
      return vmlua.vm { name = "sbx-ok", memory = extra.memory, boot = vmlua.linux { kernel = "vmlinuz" },
                        disks = { vmlua.disk { path = "root.img" } } }, lines[1], vmlua.sandboxed
    ]])
    assert.is_false(ok) -- parts/extra.lua does not exist yet
    assert(core.mkdir_private(dir .. "/parts"))
    helpers.write(dir .. "/parts/extra.lua", 'return { memory = require("vmlua").size("256M") }\n')
    local first
    ok, first = try(VM_HEAD .. [[
      local extra = require "parts.extra"
      local f = assert(io.open("vmlinuz"))
      local text = f:read("l")
      f:close()
      local vm = vmlua.vm { name = "sbx-ok", memory = extra.memory, boot = vmlua.linux { kernel = "vmlinuz" } }
      vm:add(vmlua.disk { path = "root.img" })
      return { vm = vm, text = text, sandboxed = vmlua.sandboxed, valid = vm:validate() }
    ]])
    assert.is_true(ok, first)
    assert.are.equal(machine.VM, getmetatable(first.vm)) -- the host gets the VM itself
    assert.are.equal(256 * 1024 * 1024, first.vm.config.memory)
    assert.are.equal(dir .. "/root.img", first.vm.config.disks[1].path)
    assert.are.equal("not a real kernel", first.text)
    assert.is_true(first.sandboxed)
  end)

  it("refuses the functions that reach the host", function()
    for _, src in ipairs {
      'os.execute("true")', 'io.popen("true")', 'os.exit(0)', 'os.remove("vmlinuz")',
      'os.rename("vmlinuz", "x")', 'os.tmpname()', 'os.setlocale("C")', 'io.read()', 'io.output("x")',
      'io.close()', 'string.dump(print)', 'debug.getinfo(1)', 'debug.sethook()', 'package.loadlib("x", "y")',
      'print(package.loaded)', 'coroutine.yield()',
    } do
      refused(src, "refused by the sandbox")
    end
  end)

  it("loads text chunks only: no bytecode, not even from string.dump through a string's methods", function()
    refused('load("return 1", "x", "b")', 'only text chunks')
    refused('load("return 1", "x", "bt")', 'only text chunks')
    refused('loadfile("vmlinuz", "b")', 'only text chunks')
    local err = refused([[
      local bytes = ("").dump(function() return 1 end)
      local f, why = load(bytes)
      assert(f, why)
    ]], "binary chunk")
    assert.matches("mode is 't'", err)
    helpers.write(dir .. "/bytes.luac", string.dump(function() return 1 end))
    refused('assert(loadfile("bytes.luac"))', "binary chunk")
    refused('dofile("bytes.luac")', "binary chunk")
  end)

  it("gives load, loadfile and dofile the sandbox's globals, not the host's", function()
    helpers.write(dir .. "/part.lua", "return os.execute, debug, package\n")
    local ok, a, b, c = try('return load("return os.execute == nil, debug == nil, _G == nil")()')
    assert.is_true(ok, a)
    assert.are.same({ false, false, false }, { a, b, c }) -- present, but the sandbox's own
    local ok2, err = try('local x = dofile("part.lua"); x()')
    assert.is_false(ok2)
    assert.matches("os.execute: refused by the sandbox", err)
  end)

  it("keeps the host's string table, metatables and globals out of reach", function()
    local real_rep = string.rep
    local ok, err = try([[
      assert(getmetatable("") == nil, "the string metatable is visible")
      string.rep = function() return "pwned" end
      string.format = nil
      _G.print = nil
      rawset(_G, "require", nil)
      return getmetatable(io.open("vmlinuz"))
    ]])
    assert.is_true(ok, err)
    assert.is_nil(err)
    assert.are.equal(real_rep, string.rep)
    assert.are.equal("xx", ("x"):rep(2))
    assert.is_function(_G.print)
    assert.is_function(string.format)
    refused('setmetatable(vmlua, {})', "expected a table") -- no global vmlua
    refused(VM_HEAD .. 'local vm = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" } }\nsetmetatable(vm, nil)',
      "setmetatable: refused")
    refused(VM_HEAD .. 'setmetatable(vmlua.disk { path = "root.img" }, {})', "setmetatable: refused")
    refused('setmetatable({}, { __gc = function() while true do end end })', "__gc")
    refused('rawset(package.loaded, "vmlua", {})', "package.loaded: refused")
  end)

  it("allows collectgarbage('count') only", function()
    local ok, kb = try('return collectgarbage("count")')
    assert.is_true(ok, kb)
    assert.is_number(kb)
    for _, opt in ipairs { '"stop"', '"step"', '"collect"', '', '"incremental"', '"generational"', '"restart"' } do
      refused("collectgarbage(" .. opt .. ")", "refused by the sandbox")
    end
    assert.is_true(collectgarbage("isrunning"))
  end)

  it("requires no C module and no module outside the recipe's directory", function()
    helpers.write(outside .. "/evil.lua", "return 1\n")
    refused('require "lfs"', 'no module "lfs"')
    refused('require "vmlua.core"', 'no module "vmlua.core"')
    refused('require "vmlua.machine"', 'no module "vmlua.machine"')
    refused('require "io"', 'no module "io"')
    refused('require("../" .. "' .. outside:match("[^/]+$") .. '/evil")', "no module")
    os.execute(string.format("ln -s %s %s", helpers.shell_quote(outside .. "/evil.lua"),
      helpers.shell_quote(dir .. "/link.lua")))
    refused('require "link"', 'no module "link"')
  end)

  it("reads files only under its directory and vmlua's cache", function()
    refused('io.open("/etc/passwd")', "/etc/passwd is outside the directories it may read")
    refused('io.open("../' .. outside:match("[^/]+$") .. '/secret")', "is outside the directories it may read")
    refused('io.lines("/etc/passwd")', "outside the directories it may read")
    refused('loadfile("/etc/passwd")', "outside the directories it may read")
    os.execute(string.format("ln -s %s %s", helpers.shell_quote(outside .. "/secret"),
      helpers.shell_quote(dir .. "/inside")))
    refused('io.open("inside")', "inside is outside the directories it may read")
    refused('io.open("vmlinuz", "w")', 'mode "?w"?; a sandboxed recipe only reads files')
    refused('io.open("vmlinuz", "r+")', "only reads files")
    local ok, text = try('return io.open("' .. outside .. '/secret"):read("l")', { allow = { outside } })
    assert.is_true(ok, text)
    assert.are.equal("secret", text)
  end)

  it("sees VMLUA_* and the variables it is given from the environment, nothing else", function()
    local ok, home, path, env = try('return os.getenv("HOME"), os.getenv("PATH"), os.getenv("VMLUA_RUNTIME_DIR")',
      { env = { "PATH" } })
    assert.is_true(ok, home)
    assert.is_nil(home)
    assert.are.equal(os.getenv("PATH"), path)
    assert.are.equal(os.getenv("VMLUA_RUNTIME_DIR"), env)
  end)

  it("refuses a VM whose files lie outside, and raw QEMU arguments", function()
    helpers.write(outside .. "/disk.img", "")
    local before = #machine.defined
    local err = refused(VM_HEAD .. 'vmlua.vm { name = "sbx-out", boot = vmlua.linux { kernel = "vmlinuz" },\n'
      .. '  disks = { vmlua.disk { path = "' .. outside .. '/disk.img" } } }\n', "refused by the sandbox")
    assert.matches("recipe.lua:3: disks%[1%]%.path: " .. outside:gsub("%p", "%%%0") .. "/disk.img is outside", err)
    assert.matches("allow it with %-%-allow DIR", err)
    assert.are.equal(before, #machine.defined) -- the refused VM is forgotten
    refused(VM_HEAD .. 'vmlua.vm { boot = vmlua.linux { kernel = "../' .. outside:match("[^/]+$")
      .. '/disk.img" } }\n', "boot%.kernel: .* is outside")
    refused(VM_HEAD .. 'vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" }, qemu = { "-device", "x" } }\n',
      "qemu: raw QEMU arguments are refused")
    refused(VM_HEAD .. 'vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" }, console = vmlua.console { log = "'
      .. outside .. '/log" } }\n', "console%.log: .* is outside")
    refused(VM_HEAD .. 'vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" }, shares = { vmlua.share { host = "'
      .. outside .. '", tag = "x" } } }\n', "shares%[1%]%.host: .* is outside")
    os.execute(string.format("ln -s %s %s", helpers.shell_quote(outside .. "/disk.img"),
      helpers.shell_quote(dir .. "/link.img")))
    refused(VM_HEAD .. 'vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" }, '
      .. 'disks = { vmlua.disk { path = "link.img" } } }\n', "disks%[1%]%.path: .*link%.img is outside")
    -- a disk object changed after it was made is checked as it ends up
    refused(VM_HEAD .. 'local d = vmlua.disk { path = "root.img" }\n'
      .. 'local vm = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" } }\n'
      .. 'd.path = "/etc/passwd"\nvm:add(d)\n', "disks%[1%]%.path: /etc/passwd is outside")
    local ok, vm = try(VM_HEAD .. 'return vmlua.vm { name = "sbx-allowed", boot = vmlua.linux { kernel = "vmlinuz" },\n'
      .. '  disks = { vmlua.disk { path = "' .. outside .. '/disk.img" } } }\n', { allow = { outside } })
    assert.is_true(ok, vm)
    assert.are.equal(outside .. "/disk.img", vm.config.disks[1].path)
  end)

  it("lets a recipe define VMs but not drive them", function()
    for _, call in ipairs { "vm:start()", "vm:stop()", "vm:save('x')", "vm:run('ls')", "vm:on('state', print)" } do
      refused(VM_HEAD .. 'local vm = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" } }\n' .. call,
        "refused by the sandbox: a sandboxed recipe defines VMs")
    end
    refused(VM_HEAD .. 'local vm = vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" } }\nvm.config = {}',
      "read%-only")
    refused(VM_HEAD .. 'vmlua.exec { "true" }', "attempt to call a nil value")
  end)

  it("ends an endless loop within its CPU limit, naming the recipe", function()
    local err = refused("while true do end", "recipe%.lua: stopped by the sandbox: it used more than 0%.5 s of CPU",
      { cpu = 0.5 })
    assert.is_nil(err:find("\n"))
    refused("while true do pcall(function() while true do end end) end", "more than 0%.5 s of CPU", { cpu = 0.5 })
    refused("local function f() return f() end while true do pcall(f) end", "of CPU", { cpu = 0.5 })
  end)

  it("ends an endless loop inside a coroutine, and one that catches errors with xpcall", function()
    refused("coroutine.wrap(function() while true do end end)()", "more than 0%.5 s of CPU", { cpu = 0.5 })
    refused([[
      local co = coroutine.create(function() while true do end end)
      while true do coroutine.resume(co) end
    ]], "more than 0%.5 s of CPU", { cpu = 0.5 })
    refused("while true do xpcall(function() while true do end end, function() while true do end end) end",
      "of CPU", { cpu = 0.5 })
  end)

  it("ends a runaway allocation at its memory limit, naming the recipe, and lifts the limit after", function()
    refused("local t = {} while true do t[#t + 1] = {} end",
      "recipe%.lua: stopped by the sandbox: it needed more than 16 MiB of memory", { memory = "16M" })
    refused('local s = "x" while true do s = s .. s end', "more than 16 MiB of memory", { memory = "16M" })
    refused('local t = {} while true do pcall(function() t[#t + 1] = ("x"):rep(1 << 20) end) end',
      "more than 16 MiB of memory", { memory = "16M" })
    local big = {}
    for i = 1, 200000 do big[i] = { i } end -- the host has its memory again
    assert.are.equal(200000, #big)
  end)

  it("runs the functions a recipe returns under the same sandbox", function()
    local ok, define = try(VM_HEAD .. [[
      return function(n)
        if n == 0 then while true do end end
        return vmlua.vm { name = "sbx-fn-" .. n, boot = vmlua.linux { kernel = n == 2 and "/etc/passwd" or "vmlinuz" } }
      end
    ]], { cpu = 0.5 })
    assert.is_true(ok, define)
    local vm = define(1)
    assert.are.equal(machine.VM, getmetatable(vm))
    local ok0, err0 = pcall(define, 0)
    assert.is_false(ok0)
    assert.matches("CPU", err0)
    local ok2, err2 = pcall(define, 2)
    assert.is_false(ok2)
    assert.matches("boot%.kernel: /etc/passwd is outside", err2)
  end)

  it("loads a team recipe that extends another, and checks what its define makes", function()
    helpers.write(dir .. "/web.lua", VM_HEAD .. [[
      return vmlua.recipe {
        params = { kernel = { type = "string", default = "vmlinuz" } },
        define = function(p) return vmlua.vm { name = "sbx-web", boot = vmlua.linux { kernel = p.kernel } } end,
      }
    ]])
    local ok, big = try(VM_HEAD .. [[
      local web = vmlua.recipe.find "web"
      return web:extend { define = function(_, vm) vm:add(vmlua.disk { path = "root.img" }) end }
    ]])
    assert.is_true(ok, big)
    local recipe = require "vmlua.recipe"
    assert.is_true(recipe.is(big))
    local vm = big:make {}
    assert.are.equal(dir .. "/root.img", vm.config.disks[1].path)
    local ok2, err = pcall(big.make, big, { kernel = "/etc/passwd" })
    assert.is_false(ok2)
    assert.matches("web%.lua:4: boot%.kernel: /etc/passwd is outside", err)
    local loaded = require("vmlua").load_recipe(dir .. "/web.lua", { sandbox = true })
    assert.is_true(recipe.is(loaded))
  end)

  it("reports an error of the recipe with its line, and never runs its error object's metamethods", function()
    refused('\nerror("broken")', "recipe%.lua:2: broken")
    refused('error(setmetatable({}, { __tostring = function() while true do end end }))',
      "error object is a table value")
  end)

  it("refuses a recipe in the root or home directory, and bad options", function()
    assert.has_error(function() sandbox.load("/etc/passwd") end)
    assert.has_error(function() sandbox.load(dir .. "/vmlinuz", { cpu = -1 }) end)
    assert.has_error(function() sandbox.load(dir .. "/vmlinuz", { allow = { dir .. "/missing" } }) end)
  end)
end)
