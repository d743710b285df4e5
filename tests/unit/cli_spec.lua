-- The executable as a Lua interpreter: options, `arg`, exit status, errors.
local helpers = require "support.helpers"

local BIN = os.getenv("VMLUA_BIN") or "build/bin/vmlua"

-- Runs vmlua with a shell command line made of quoted words; returns
-- output (stdout and stderr) and the exit status.
local function vmlua(args, stdin)
  local words = { helpers.shell_quote(BIN) }
  for _, a in ipairs(args) do words[#words + 1] = helpers.shell_quote(a) end
  local cmd = table.concat(words, " ") .. " 2>&1"
  if stdin then cmd = "printf %s " .. helpers.shell_quote(stdin) .. " | " .. cmd end
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

describe("vmlua as an interpreter", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  it("runs -e statements and prints its version with -v", function()
    local out, code = vmlua { "-e", "print(6 * 7)" }
    assert.are.equal("42\n", out)
    assert.are.equal(0, code)
    out = vmlua { "-v" }
    assert.matches("^vmlua %d+%.%d+%.%d+ %(Lua 5%.4%)\n$", out)
  end)

  it("gives a script its arguments in arg and ...", function()
    local script = helpers.write(dir .. "/args.lua",
      'print(arg[0] == ..., select("#", ...), arg[1], arg[2], arg[-1] ~= nil)\n')
    local out, code = vmlua { "--", script, "a b", "c" }
    assert.are.equal("false\t2\ta b\tc\ttrue\n", out)
    assert.are.equal(0, code)
  end)

  it("loads modules with -l, also into another name", function()
    local out = vmlua { "-l", "v=vmlua", "-e", "print(type(v.vm), type(v.host.cpus))" }
    assert.are.equal("function\tnumber\n", out)
  end)

  it("runs standard input with -", function()
    local out, code = vmlua({ "-" }, "print('from stdin')")
    assert.are.equal("from stdin\n", out)
    assert.are.equal(0, code)
  end)

  it("exits 1 with vmlua: and a traceback when a script fails", function()
    local script = helpers.write(dir .. "/fail.lua", "local x = nil\nprint(x.y)\n")
    local out, code = vmlua { script }
    assert.are.equal(1, code)
    assert.matches("^vmlua: [^\n]*fail%.lua:2: attempt to index a nil value", out)
    assert.matches("stack traceback", out)
  end)

  it("reports a syntax error and an unknown option", function()
    local script = helpers.write(dir .. "/syntax.lua", "print(\n")
    local out, code = vmlua { script }
    assert.are.equal(1, code)
    assert.matches("^vmlua: [^\n]*syntax%.lua:2:", out)
    out, code = vmlua { "-Z" }
    assert.are.equal(2, code)
    assert.matches("unrecognized option '%-Z'", out)
  end)

  it("reports a missing script and a misused vmlua.size in one line, as lua does", function()
    local out, code = vmlua { dir .. "/nosuchfile.lua" }
    assert.are.equal(1, code)
    assert.are.equal("vmlua: cannot open " .. dir .. "/nosuchfile.lua: No such file or directory\n", out)
    local script = helpers.write(dir .. "/size.lua", 'local vmlua = require "vmlua"\nlocal n = vmlua.size("abc")\n')
    out, code = vmlua { script }
    assert.are.equal(1, code)
    assert.are.equal("vmlua: " .. script .. ':2: size: "abc" is not a size; expected a number of bytes or a ' ..
                     'string like "512M" or "2G"\n', out)
    helpers.write(script, 'local vmlua = require "vmlua"\n\nlocal n = vmlua.size({})\n')
    out, code = vmlua { script }
    assert.are.equal(1, code)
    assert.are.equal("vmlua: " .. script .. ":3: size: expected a number of bytes or a string like " ..
                     '"512M" or "2G", got a table\n', out)
  end)

  it("passes a script's os.exit status through", function()
    local out, code = vmlua { "-e", "io.write('bye') os.exit(5)" }
    assert.are.equal("bye", out)
    assert.are.equal(5, code)
  end)

  it("prints help", function()
    local out, code = vmlua { "--help" }
    assert.are.equal(0, code)
    assert.matches("vmlua plan %[%-%-json%] FILE", out)
    assert.are.equal(out, (vmlua { "-h" }))
  end)

  it("lists every option and command in --help", function()
    local out = vmlua { "--help" }
    for _, option in ipairs { "-e STAT", "-l MOD", "-i", "-q", "-v, --version", "-h, --help", "--", "-",
                              "plan", "ls", "start", "stop", "attach", "rm", "VMLUA_DEBUG=qmp" } do
      assert.matches("\n  " .. option:gsub("%p", "%%%0") .. "%s", out:gsub("Environment: ", "\n  "))
    end
  end)

  it("silences notices with -q, never errors", function()
    local script = helpers.write(dir .. "/notices.lua", [[
require("vmlua.machine").notice("from the machine")
require("vmlua.instance.store").notice("from the store")
require("vmlua").size("abc")
]])
    local out, code = vmlua { script }
    assert.are.equal(1, code)
    local failure = 'vmlua: [^\n]*notices.lua:3: size: "abc" is not a size;[^\n]*\n$'
    assert.matches("^vmlua: from the machine\nvmlua: from the store\n" .. failure, out)
    out, code = vmlua { "-q", script }
    assert.are.equal(1, code)
    assert.matches("^" .. failure, out)
  end)

  it("gives -e the prompt's globals: vmlua and help", function()
    local out, code = vmlua { "-e", "print(vmlua.size('1K'), vmlua == require('vmlua'))", "-e", "help 'start'" }
    assert.are.equal(0, code)
    assert.matches("^1024\ttrue\nvm:start%(%[opts%]%)\n  Starts QEMU", out)
  end)

  it("lists every VM the session defined with vmlua.vms()", function()
    helpers.fixtures(dir)
    local out, code = vmlua { "-e", string.format([[
for i = 1, 2 do vmlua.vm { name = "vms" .. i, boot = vmlua.linux { kernel = %q } } end
for _, vm in ipairs(vmlua.vms()) do print(vm.name, vm.state) end]], dir .. "/vmlinuz") }
    assert.are.equal(0, code)
    assert.are.equal("vms1\tstopped\nvms2\tstopped\n", out)
  end)

  it("exits 1 when piped input to the prompt raised an error, as lua - does", function()
    local out, code = vmlua({}, "x = 6\nerror('boom')\nprint(x * 7)\n")
    assert.are.equal(1, code)
    assert.matches("stdin:1: boom", out, 1, true)
    assert.matches("42", out, 1, true)
    out, code = vmlua({}, "x = = 1\nprint(1)\n")
    assert.matches("stdin:1:", out, 1, true)
    assert.are.equal(1, code)
    out, code = vmlua({}, "print(6 * 7)\n")
    assert.are.equal("42\n", out)
    assert.are.equal(0, code)
  end)

  it("says a mistyped command in one line", function()
    local out, code = vmlua { "list" }
    assert.are.equal(1, code)
    assert.are.equal('vmlua: cannot open list: No such file or directory (did you mean "vmlua ls"?)\n', out)
  end)
end)

describe("vmlua plan", function()
  it("plans a script that starts its VM without starting anything", function()
    local out, code = vmlua { "plan", "--json", "examples/dev.lua" }
    assert.are.equal(0, code)
    local json = out:sub((out:find("{", 1, true)))
    local plan = require("vmlua.core").json_decode(json)
    assert.are.equal(1, #plan.vms)
    assert.are.equal("dev", plan.vms[1].name)
    assert.matches("qemu%-system%-", plan.vms[1].argv[1])
    assert.is_nil(out:find("-> running", 1, true), "the VM was started")
  end)
end)
