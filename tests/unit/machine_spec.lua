-- The VM class loads the modules that add methods to it (shell, agent,
-- snapshot, ssh) at the first use of one of their methods.
local machine = require "vmlua.machine"

describe("the VM class's extensions", function()
  it("list exactly the methods each module installs", function()
    for module, names in pairs(machine.EXTENSIONS) do
      local class = {}
      require(module).install(class, machine)
      local installed = {}
      for name in pairs(class) do installed[#installed + 1] = name end
      table.sort(installed)
      local listed = { table.unpack(names) }
      table.sort(listed)
      assert.are.same(installed, listed, module)
    end
  end)

  it("give a VM every method before its module is loaded", function()
    local vm = machine.from_config { name = "lazy", arch = "x86_64", cpus = 1, memory = 1, disks = {}, net = {},
                                      shares = {}, console = {} }
    for _, names in pairs(machine.EXTENSIONS) do
      for _, name in ipairs(names) do
        assert.are.equal("function", type(vm[name]), name)
      end
    end
    assert.is_nil(vm.no_such_method)
  end)
end)
