-- Completion after vm. and vm: offers a VM's public fields (machine.FIELDS,
-- the ones its doc comment lists) and methods, never its internals.
local machine = require "vmlua.machine"
local repl = require "vmlua.repl"
local vmlua = require "vmlua"

describe("completion of a VM", function()
  local env
  setup(function()
    local vm = vmlua.vm { name = "comp", memory = "256M", boot = vmlua.linux { kernel = "/nonexistent" } }
    vm:on("state", function() end) -- handlers now exist
    env = setmetatable({ vm = vm }, { __index = _G })
  end)

  it("offers the public fields after vm.", function()
    local offered, set = repl.complete(env, "vm.", ""), {}
    for _, c in ipairs(offered) do set[c] = true end
    for _, name in ipairs { "state", "reason", "pid", "config", "name", "accel", "serial" } do
      assert.is_true(set["vm." .. name], "vm." .. name .. " is not offered")
    end
    for _, internal in ipairs { "handlers", "run_queue", "stop_requested", "changed", "process", "runs", "qmp" } do
      for _, c in ipairs(offered) do assert.are_not.equal("vm." .. internal, c) end
    end
    for _, c in ipairs(offered) do assert.is_nil(c:find("^vm%._"), c) end
  end)

  it("offers the methods after vm:, without a leading _", function()
    local expected = {}
    for name, v in pairs(machine.class()) do
      if type(v) == "function" and name:sub(1, 1) == "s" then expected[#expected + 1] = "vm:" .. name .. "(" end
    end
    table.sort(expected)
    assert.are.same(expected, repl.complete(env, "vm:s", ""))
    local set = {}
    for _, c in ipairs(expected) do set[c] = true end
    for _, m in ipairs { "vm:save(", "vm:send(", "vm:start(", "vm:stop(" } do assert.is_true(set[m], m) end
    for _, c in ipairs(repl.complete(env, "vm:", "")) do
      assert.matches("^vm:[%a][%w_]*%($", c)
    end
    assert.are.same({}, repl.complete(env, "vm:hand", ""))
  end)

  it("has a doc comment for every public field", function()
    local text = require("vmlua.help").text("vm")
    for _, name in ipairs(machine.FIELDS) do assert.matches("vm%." .. name .. " ", text) end
  end)
end)

describe("vm.pid", function()
  it("is nil while the VM has no QEMU", function()
    local vm = vmlua.vm { name = "nopid", memory = "256M", boot = vmlua.linux { kernel = "/nonexistent" } }
    assert.is_nil(vm.pid)
    assert.are.equal("vm nopid (stopped, " .. vm.config.arch .. ")", tostring(vm))
  end)
end)
