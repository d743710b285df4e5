-- Recipes around real guests: a built-in one run with a parameter, a team's
-- recipe built on a built-in one, the examples/recipes repository (two
-- recipes, one extending the other), and vmlua recipes --json.
local core = require "vmlua.core"
local cli = require "support.cli"
local guest = require "support.guest"

local ROOT = assert(core.realpath("."))

-- Runs vmlua through env(1) with the given environment.
local function run(env, args, timeout)
  local argv = { "/usr/bin/env" }
  for k, v in pairs(env) do argv[#argv + 1] = k .. "=" .. v end
  argv[#argv + 1] = cli.binary
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local h = { out = "", err = "", changed = require("vmlua.task").condition() }
  h.process = assert(core.spawn {
    file = "/usr/bin/env", args = argv,
    on_stdout = function(d) h.out = h.out .. d; h.changed.notify() end,
    on_stderr = function(d) h.err = h.err .. d; h.changed.notify() end,
    on_exit = function(code, signal) h.code, h.signal = code, signal; h.changed.notify() end,
  })
  assert(h.changed.wait(function() return h.code or h.signal end, timeout or 300),
    "timed out; stdout:\n" .. h.out .. "\nstderr:\n" .. h.err)
  return h.code, h.out, h.err
end

describe("recipes", function()
  after_each(guest.cleanup)

  it("vmlua run microvm cpus=1 boots the busybox guest, runs its command and stops", function()
    guest.files("x86_64")
    local name = "rcp-micro-" .. core.getpid()
    local code, out, err = run({}, { "run", "microvm", "cpus=1", "arch=x86_64", "name=" .. name,
                                     "command=grep -c ^processor /proc/cpuinfo; echo RECIPE-$((6*7))" })
    assert.are.equal(0, code, err)
    assert.matches("vmlua%-guest: ready", out)     -- the console, streamed
    assert.matches("\n1\nRECIPE%-42\n", out)      -- the command's output
    assert.truthy(err:find("booting " .. name, 1, true), err)
    assert.truthy(err:find("stopped vm " .. name, 1, true), err)
  end)

  it("runs a team's recipe built on a built-in one, with parameters from the command line", function()
    guest.files("x86_64")
    local dir = guest.tmpdir()
    cli.write(dir, "team.lua", [[
local vmlua = require "vmlua"
local microvm = vmlua.recipe.find "microvm"
return microvm:extend {
  description = "the team's guest: says its word and the memory it has",
  params = { memory = { default = "192M" }, word = { type = "string", default = "none" } },
  define = function(p, vm)
    vm:on("running", function()
      vm:expect("vmlua# ", { timeout = 120 })
      local mib = "$(( $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) / 1024 ))"
      local out = vm:run("echo TEAM-" .. p.word .. " " .. mib)
      io.stdout:write(out)
      io.stdout:flush()
      vm:stop()
    end)
  end,
}
]])
    local name = "rcp-team-" .. core.getpid()
    local code, out, err = run({ VMLUA_PATH = dir }, { "run", "team", "word=hello", "memory=160M", "arch=x86_64",
                                                       "name=" .. name })
    assert.are.equal(0, code, err)
    local mib = tonumber(out:match("TEAM%-hello (%d+)"))
    assert(mib, out)
    assert.is_true(mib > 100 and mib <= 160, "the guest has " .. mib .. " MiB, not memory=160M")
    -- a bad value: the parameter, the recipe's file:line, the valid ones; nothing starts
    local bad_code, _, bad_err = run({ VMLUA_PATH = dir }, { "run", "team", "word=hello", "memory=lots" })
    code, err = bad_code, bad_err
    assert.are.equal(1, code)
    assert.matches("team%.lua:3: recipe team: memory: .*%(from the command line%); team's parameters: arch", err)
    assert.is_nil(err:find("booting", 1, true))
  end)

  it("runs the examples/recipes repository: smoke extends web, with parameters", function()
    guest.files("x86_64")
    local name = "rcp-smoke-" .. core.getpid()
    local code, out, err = run({ VMLUA_PATH = ROOT .. "/examples/recipes" },
                               { "run", "smoke", "page=it works", "cpus=1", "name=" .. name })
    assert.are.equal(0, code, err)
    assert.matches("web: serving on 127%.0%.0%.1:%d+", out)
    assert.matches("smoke: it works\n", out)
  end)

  it("lists them with vmlua recipes --json: built-in, the team's, shadowed", function()
    local dir = guest.tmpdir()
    local code, out, err = run({ VMLUA_PATH = ROOT .. "/examples/recipes;" .. dir, XDG_CONFIG_HOME = dir .. "/none" },
                               { "recipes", "--json" })
    assert.are.equal(0, code, err)
    local list = core.json_decode(out)
    local by = {}
    for _, r in ipairs(list) do by[r.name .. ":" .. r.origin] = r end
    assert.are.equal("A small web server VM: busybox httpd on a forwarded local port", by["web:VMLUA_PATH"].summary)
    assert.are.equal("web", by["smoke:VMLUA_PATH"].extends)
    assert.is_truthy(by["microvm:built-in"])
    assert.is_false(by["microvm:built-in"].shadowed)
    local params = {}
    for _, p in ipairs(by["web:VMLUA_PATH"].params) do params[p.name] = p end
    assert.are.equal("integer", params.port.type)
    assert.are.equal("VMLUA_PARAM_PORT", params.port.env)
    -- a team's microvm comes first and shadows vmlua's own
    cli.write(dir, "microvm.lua", 'local vmlua = require "vmlua"\nreturn vmlua.recipe { description = "ours", '
      .. 'define = function() end }\n')
    code, out = run({ VMLUA_PATH = dir }, { "recipes", "--json" })
    assert.are.equal(0, code)
    by = {}
    for _, r in ipairs(core.json_decode(out)) do by[r.name .. ":" .. r.origin] = r end
    assert.is_false(by["microvm:VMLUA_PATH"].shadowed)
    assert.is_true(by["microvm:built-in"].shadowed)
    assert.are.equal(dir .. "/microvm.lua", by["microvm:built-in"].shadowed_by)
  end)
end)
