-- Recipes: parameters and their types, errors with file:line, extend,
-- where each value came from, the recipe path and shadowing, and one recipe
-- made several times.
local helpers = require "support.helpers"
local path = require "vmlua.recipe.path"
local plan = require "vmlua.plan"
local recipe = require "vmlua.recipe"
local vmlua = require "vmlua"

-- A recipe file with every parameter type; its VM boots a fixture kernel.
local WEB = [[
local vmlua = require "vmlua"
return vmlua.recipe {
  description = "A small web server VM\nsecond line",
  params = {
    cpus   = { type = "integer", default = 1, description = "vCPUs" },
    memory = { type = "size", default = "512M", description = "guest RAM" },
    flavor = { type = "enum", values = { "small", "big" }, default = "small" },
    ratio  = { type = "number", default = 0.5 },
    debug  = { type = "boolean", default = false },
    motd   = { type = "string", default = "hi" },
    data   = { type = "path" },
  },
  define = function(p)
    local vm = vmlua.vm { name = "web", cpus = p.cpus, memory = p.memory,
                          boot = vmlua.linux { kernel = "vmlinuz" } }
    if p.data then vm:add(vmlua.disk { path = p.data }) end
    return vm
  end,
}
]]

local function no_env() return nil end

describe("a recipe", function()
  local dir, web
  before_each(function()
    dir = helpers.tmpdir()
    helpers.fixtures(dir)
    web = assert(loadfile(helpers.write(dir .. "/web.lua", WEB)))()
  end)
  after_each(function()
    path.getenv, path.script_dir = os.getenv, nil
    helpers.rmtree(dir)
  end)

  local function make(r, values, how)
    how = how or { source = "caller" }
    how.getenv = how.getenv or no_env
    return recipe.instantiate(r, values, how)
  end

  it("is named after its file and describes itself", function()
    assert.is_true(recipe.is(web))
    assert.are.equal("web", web.name)
    assert.are.equal("A small web server VM", recipe.summary(web))
    assert.matches("web%.lua:2%)$", tostring(web))
    local help = recipe.help(web)
    assert.matches("usage: vmlua run web %[NAME=VALUE%.%.%.%]", help)
    assert.matches("\n  cpus=INTEGER +vCPUs %(default 1%)", help)
    assert.matches("\n  flavor=small|big +%(default small%)", help)
    assert.matches("\n  memory=SIZE +guest RAM %(default 512 MiB%)", help)
  end)

  it("converts the command line's text to each type", function()
    local vms = make(web, { cpus = "2", memory = "1G", flavor = "big", ratio = "0.25", debug = "yes",
                            motd = "hello", data = "root.img" }, { source = "command line", text = true })
    local cfg = vms[1].config
    assert.are.equal(2, cfg.cpus)
    assert.are.equal(1024 * 1024 * 1024, cfg.memory)
    local p = {}
    for _, r in ipairs(recipe.origin(cfg).params) do p[r.name] = r end
    assert.are.equal(math.tointeger(2), p.cpus.value)
    assert.are.equal("big", p.flavor.value)
    assert.are.equal(0.25, p.ratio.value)
    assert.is_true(p.debug.value)
    assert.are.equal("hello", p.motd.value)
    -- a path from the command line is relative to the current directory
    assert.are.equal(require("lfs").currentdir() .. "/root.img", p.data.value)
    assert.are.equal("command line", p.cpus.source)
    assert.are.equal("default", p.name.source)
  end)

  it("checks a caller's values by their Lua type", function()
    local vm = web:make { cpus = 3, memory = 256 * 1024 * 1024, debug = true, data = dir .. "/root.img" }
    assert.are.equal(3, vm.config.cpus)
    assert.are.equal(dir .. "/root.img", vm.config.disks[1].path)
    local ok, err = pcall(web.make, web, { cpus = "3" })
    assert.is_false(ok)
    assert.matches('web%.lua:2: recipe web: cpus: expected a whole number, got string "3" %(from the caller, ', err)
  end)

  it("names the parameter, the recipe's file and line, and the valid ones, and defines nothing", function()
    local before = #vmlua.vms()
    local cases = {
      { { cpus = "two" },
        'web%.lua:2: recipe web: cpus: expected a whole number, got "two" %(from the command line%)' },
      { { flavor = "huge" }, 'flavor: "huge" is not one of small, big' },
      { { debug = "maybe" }, "debug: expected true or false" },
      { { memory = "lots" }, 'memory: "lots" is not a size' },
      { { cpu = "2" },
        'web%.lua:2: recipe web: cpu: unknown parameter %(from the command line%); did you mean "cpus"%?' },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(make, web, case[1], { source = "command line", text = true })
      assert.is_false(ok)
      assert.matches(case[2], err)
      assert.matches("web's parameters: cpus %(integer%), data %(path%), debug %(boolean%), flavor %(small|big%), "
                     .. "memory %(size%), motd %(string%), name %(string%), ratio %(number%)$", err)
    end
    assert.are.equal(before, #vmlua.vms(), "a VM was defined despite the error")
  end)

  it("rejects a bad declaration at the line that declares it", function()
    local function err_of(params)
      return helpers.error_of(dir, 'local vmlua = require "vmlua"\n\nreturn vmlua.recipe {\n  params = ' .. params
        .. ',\n  define = function() end,\n}\n', "bad.lua")
    end
    assert.matches('bad%.lua:3: params%.cpus%.type: "int" is not a type; did you mean "integer"%?',
                   err_of('{ cpus = { type = "int" } }'))
    assert.matches('bad%.lua:3: params%.cpus%.default: expected a whole number, got string "two"',
                   err_of('{ cpus = { type = "integer", default = "two" } }'))
    assert.matches("bad%.lua:3: params%.flavor%.values: an enum needs its values",
                   err_of('{ flavor = { type = "enum" } }'))
    assert.matches('bad%.lua:3: params%.cpus%.typ: unknown field; did you mean "type"%?',
                   err_of('{ cpus = { typ = "integer" } }'))
    assert.matches("bad%.lua:3: params%.cpus%.type: missing", err_of("{ cpus = {} }"))
    assert.matches('nodef%.lua:3: define: expected a function%(p%)',
      helpers.error_of(dir, 'local vmlua = require "vmlua"\n\nreturn vmlua.recipe { params = {} }\n', "nodef.lua"))
  end)

  it("takes values from the environment, which the caller's and the command line's override", function()
    local env = { VMLUA_PARAM_CPUS = "2", VMLUA_PARAM_FLAVOR = "big" }
    local getenv = function(k) return env[k] end
    local vms = make(web, { flavor = "small" }, { source = "caller", getenv = getenv })
    local by = {}
    for _, r in ipairs(recipe.origin(vms[1].config).params) do by[r.name] = r end
    assert.are.equal(2, by.cpus.value)
    assert.are.equal("environment", by.cpus.source)
    assert.are.equal("VMLUA_PARAM_CPUS", by.cpus.env)
    assert.are.equal("small", by.flavor.value)
    assert.are.equal("caller", by.flavor.source)
    assert.are.equal("default", by.memory.source)
    env.VMLUA_PARAM_CPUS = "many"
    local ok, err = pcall(make, web, {}, { source = "caller", getenv = getenv })
    assert.is_false(ok)
    assert.matches('cpus: expected a whole number, got "many" %(from the environment, VMLUA_PARAM_CPUS%)', err)
  end)

  it("shows each parameter's value and source in the plan", function()
    local vms = make(web, { cpus = "2" }, { source = "command line", text = true })
    local d = plan.describe(vms[1].config)
    assert.are.equal("web", d.recipe.name)
    local cpus
    for _, p in ipairs(d.recipe.params) do if p.name == "cpus" then cpus = p end end
    assert.are.same({ name = "cpus", type = "integer", value = 2, source = "command line", text = "2" }, cpus)
    local text = plan.text(vms[1].config)
    assert.matches("\n  recipe    web %(.-web%.lua:2%)\n", text)
    assert.matches("\n  param     cpus = 2 %(command line%)\n", text)
    assert.matches("\n  param     memory = 512 MiB %(default%)\n", text)
  end)

  it("is made several times with different parameters: a cluster", function()
    local vms = {}
    for i = 1, 3 do vms[i] = web:make { name = "web-" .. i, cpus = i } end
    for i = 1, 3 do
      assert.are.equal("web-" .. i, vms[i].name)
      assert.are.equal("web-" .. i, vms[i].config.name)
      assert.are.equal(i, vms[i].config.cpus)
    end
    assert.are.equal("web", web { motd = "called" }.name) -- calling it is make; define's own name by default
  end)

  it("extends another: new defaults and parameters, changes to the VM, fields, post-boot steps", function()
    local ran = {}
    local big = web:extend {
      description = "web with more memory and a data disk",
      params = { memory = { default = "1G" }, extra = { type = "boolean", default = true } },
      vm = { qemu = { "-no-hpet" } },
      define = function(p, vm)
        if p.extra then vm:add(vmlua.disk { path = dir .. "/root.img", readonly = true }) end
        vm:on("running", function() ran[#ran + 1] = "running" end)
      end,
    }
    assert.are.equal("web", big.base.name)
    local vm = big:make { cpus = 2 }
    assert.are.equal(1024 * 1024 * 1024, vm.config.memory)
    assert.are.equal(2, vm.config.cpus)
    assert.are.equal(1, #vm.config.disks)
    assert.are.same({ "-no-hpet" }, vm.config.qemu)
    assert.are.equal(1, #(vm.handlers.running or {}))
    -- the base is as it was
    local plain = web:make {}
    assert.are.equal(512 * 1024 * 1024, plain.config.memory)
    assert.are.same({}, plain.config.qemu)
    assert.are.equal(0, #plain.config.disks)
    -- an extension keeps a parameter's type
    local ok, err = pcall(web.extend, web, { params = { cpus = { type = "string" } } })
    assert.is_false(ok)
    assert.matches("params%.cpus%.type: cpus is integer in the recipe it extends", err)
  end)

  it("loads from a file, and refuses a file that returns no recipe", function()
    local r = vmlua.load_recipe(dir .. "/web.lua")
    assert.are.equal("web", r.name)
    helpers.write(dir .. "/plain.lua", "return 42\n")
    local ok, err = pcall(vmlua.load_recipe, dir .. "/plain.lua")
    assert.is_false(ok)
    assert.matches("plain%.lua: not a recipe: the file returns number 42", err)
  end)
end)

describe("the recipe path", function()
  local dir
  before_each(function()
    dir = helpers.tmpdir()
    helpers.fixtures(dir)
    for _, d in ipairs { "a", "b", "c", "config/vmlua/recipes", "script", "tmpl" } do
      assert(os.execute("mkdir -p " .. helpers.shell_quote(dir .. "/" .. d)))
    end
    local function recipe_file(file, description)
      helpers.write(file, string.format([[
local vmlua = require "vmlua"
return vmlua.recipe { description = %q, define = function() return vmlua.vm { name = "x", boot = vmlua.linux {
  kernel = %q } } end }
]], description, dir .. "/vmlinuz"))
    end
    recipe_file(dir .. "/a/shared.lua", "shared from a")
    recipe_file(dir .. "/b/shared.lua", "shared from b")
    recipe_file(dir .. "/b/only_b.lua", "only in b")
    assert(os.execute("mkdir -p " .. helpers.shell_quote(dir .. "/c/pkg")))
    recipe_file(dir .. "/c/pkg/init.lua", "a directory with init.lua")
    recipe_file(dir .. "/config/vmlua/recipes/mine.lua", "the user's own")
    recipe_file(dir .. "/config/vmlua/recipes/only_b.lua", "shadowed by b")
    recipe_file(dir .. "/script/beside.lua", "beside the script")
    recipe_file(dir .. "/tmpl/t-templated.lua", "through a template")
    local env = { VMLUA_PATH = table.concat({ dir .. "/a", dir .. "/b", dir .. "/c", dir .. "/tmpl/t-?.lua" }, ";"),
                  XDG_CONFIG_HOME = dir .. "/config" }
    path.getenv = function(k) return env[k] end
    path.script_dir = dir .. "/script"
    path.install()
  end)
  after_each(function()
    path.getenv, path.script_dir = os.getenv, nil
    for name in pairs { shared = 1, only_b = 1, pkg = 1, mine = 1, beside = 1, templated = 1 } do
      package.loaded[name] = nil
    end
    helpers.rmtree(dir)
  end)

  it("finds the first of a name, in VMLUA_PATH, the user's config, the script's directory, then vmlua's own", function()
    local r, file, origin = recipe.find("shared")
    assert.are.equal("shared from a", r.description)
    assert.are.equal(dir .. "/a/shared.lua", file)
    assert.are.equal("VMLUA_PATH", origin)
    assert.are.equal("a directory with init.lua", recipe.find("pkg").description)
    assert.are.equal("through a template", recipe.find("templated").description)
    assert.are.equal("only in b", recipe.find("only_b").description)
    assert.are.same({ "the user's own", "config" }, { recipe.find("mine").description, select(3, recipe.find("mine")) })
    assert.are.equal("script directory", select(3, recipe.find("beside")))
    local micro, _, how = recipe.find("microvm")
    assert.are.equal("built-in", how)
    assert.are.equal(require("vmlua.recipes.microvm"), micro)
  end)

  it("gives require the same file as find", function()
    assert.are.equal(recipe.find("shared"), require("shared"))
    assert.are.equal("shared from a", require("shared").description)
  end)

  it("says what it searched for a name it cannot find, and suggests a near one", function()
    local ok, err = pcall(recipe.find, "sharde")
    assert.is_false(ok)
    local searched = dir:gsub("%p", "%%%0") .. "/a/sharde%.lua"
    assert.matches('no recipe "sharde" %(did you mean "shared"%?%); searched ' .. searched, err)
  end)

  it("lists every recipe, the later ones of a name as shadowed", function()
    local by = {}
    for _, r in ipairs(path.list()) do
      by[r.file] = r
    end
    assert.is_nil(by[dir .. "/a/shared.lua"].shadowed_by)
    assert.are.equal(dir .. "/a/shared.lua", by[dir .. "/b/shared.lua"].shadowed_by)
    assert.are.equal(dir .. "/b/only_b.lua", by[dir .. "/config/vmlua/recipes/only_b.lua"].shadowed_by)
    assert.are.equal("pkg", by[dir .. "/c/pkg/init.lua"].name)
    assert.are.equal("templated", by[dir .. "/tmpl/t-templated.lua"].name)
    assert.are.equal("config", by[dir .. "/config/vmlua/recipes/mine.lua"].origin)
    assert.are.equal("script directory", by[dir .. "/script/beside.lua"].origin)
    local builtin = {}
    for _, r in ipairs(path.list()) do
      if r.origin == "built-in" then builtin[#builtin + 1] = r.name end
    end
    table.sort(builtin)
    assert.are.same({ "cloud", "debian", "microvm" }, builtin)
  end)
end)

describe("vmlua recipes", function()
  local dir
  local BIN = assert(require("vmlua.core").realpath(os.getenv("VMLUA_BIN") or "build/bin/vmlua"))

  -- Runs `vmlua recipes ARGS...` in an empty directory with VMLUA_PATH=dir/team; its output and exit status.
  local function recipes(...)
    local words = { "cd", helpers.shell_quote(dir .. "/cwd"), "&&", "env",
                    helpers.shell_quote("VMLUA_PATH=" .. dir .. "/team"),
                    helpers.shell_quote("XDG_CONFIG_HOME=" .. dir .. "/none"), helpers.shell_quote(BIN), "recipes" }
    for _, a in ipairs { ... } do words[#words + 1] = helpers.shell_quote(a) end
    local p = assert(io.popen(table.concat(words, " ") .. " 2>&1"))
    local out = p:read("a")
    local _, _, code = p:close()
    return out, code
  end

  before_each(function()
    dir = helpers.tmpdir()
    assert(os.execute("mkdir -p " .. helpers.shell_quote(dir .. "/team") .. " " .. helpers.shell_quote(dir .. "/cwd")))
    helpers.write(dir .. "/team/good.lua", [[
local vmlua = require "vmlua"
return vmlua.recipe {
  description = "a well-behaved recipe\nwith more text",
  params = { cpus = { type = "integer", default = 2, description = "vCPUs" } },
  define = function(p) return vmlua.vm { name = "good", cpus = p.cpus } end,
}
]])
    helpers.write(dir .. "/team/better.lua", [[
local good = require "good"
return good:extend { description = "good, extended", params = { cpus = { default = 3 } } }
]])
    -- listing runs a recipe's top level: these try to get out while they are listed
    helpers.write(dir .. "/team/runs.lua", string.format([[
local vmlua = require "vmlua"
os.execute("touch %s")
return vmlua.recipe { description = "runs a command", define = function() end }
]], dir .. "/ran"))
    helpers.write(dir .. "/team/writes.lua", string.format([[
local vmlua = require "vmlua"
local f = io.open(%q, "w")
if f then f:write("written by a recipe being listed") f:close() end
return vmlua.recipe { description = "writes a file outside its directory", define = function() end }
]], dir .. "/written"))
  end)
  after_each(function() helpers.rmtree(dir) end)

  local function exists(file)
    local f = io.open(file)
    if f then f:close() end
    return f ~= nil
  end

  it("reads a team's recipes in the sandbox: a refused one is listed as such, and nothing of it runs", function()
    local out, code = recipes()
    assert.are.equal(0, code, out)
    assert.is_false(exists(dir .. "/ran"), "listing ran the recipe's os.execute")
    assert.is_false(exists(dir .. "/written"), "listing let the recipe write outside its directory")
    local quoted = dir:gsub("%p", "%%%0")
    assert.matches("\nruns  refused by the sandbox: a sandboxed recipe runs no host commands %(" .. quoted
      .. "/team/runs%.lua:2: os%.execute%)\n    " .. quoted .. "/team/runs%.lua %(VMLUA_PATH%)\n", "\n" .. out)
    assert.matches("\nwrites  refused by the sandbox: mode w; [^\n]*%(" .. quoted
      .. "/team/writes%.lua:2: io%.open%)\n", "\n" .. out)
    -- a well-behaved one lists with its parameters, and one built on it with its own defaults
    assert.matches("\ngood  a well%-behaved recipe\n    " .. quoted .. "/team/good%.lua %(VMLUA_PATH%)\n"
      .. "    cpus=INTEGER%(2%) name=STRING\n", "\n" .. out)
    assert.matches("\nbetter  good, extended\n[^\n]*\n    cpus=INTEGER%(3%) name=STRING\n", "\n" .. out)
    -- vmlua's own recipes stay trusted (debian requires vmlua.runtime, which the sandbox would not give)
    assert.matches("\ndebian  The Debian 12 guest[^\n]*\n[^\n]*%(built%-in%)\n    cpus=INTEGER", "\n" .. out)
  end)

  it("says why in --json, next to the error", function()
    local out, code = recipes("--json")
    assert.are.equal(0, code, out)
    assert.is_false(exists(dir .. "/ran"))
    local by = {}
    for _, r in ipairs(require("vmlua.core").json_decode(out)) do by[r.name] = r end
    assert.matches("^refused by the sandbox: a sandboxed recipe runs no host commands", by.runs.refused)
    assert.matches("runs%.lua:2: os%.execute: refused by the sandbox", by.runs.error)
    assert.is_nil(by.runs.params)
    assert.is_nil(by.good.refused)
    assert.are.equal("cpus", by.good.params[1].name)
    assert.are.equal(2, by.good.params[1].default)
    assert.are.equal("good", by.better.extends)
    assert.is_truthy(by.microvm.params)
  end)
end)
