-- The rockspec drives the Makefile (build type "make"), so `luarocks make`
-- installs what `make install` does: the executable, every Lua module (the
-- list comes from the tree, subfolders included) and the core module, and
-- builds out of the checkout. Checked for real, with luarocks, into a
-- temporary tree from a copy of the checkout.
local helpers = require "support.helpers"

local q = helpers.shell_quote

local lines, sh = helpers.sorted_lines, helpers.sh

describe("vmlua-scm-1.rockspec", function()
  local spec = {}
  assert(loadfile("vmlua-scm-1.rockspec", "t", spec))()

  it("builds with the Makefile, into the rock's directory, and installs with make install", function()
    assert.are.equal("make", spec.build.type)
    assert.are.equal("compile", spec.build.build_target)
    assert.matches("^install", spec.build.install_target)
    for _, vars in ipairs { spec.build.build_variables, spec.build.install_variables } do
      assert.are.equal("$(PREFIX)/build", vars.BUILD)
    end
    for _, name in ipairs { "PREFIX", "BINDIR", "LUADIR", "LIBDIR" } do
      assert.are.equal("$(" .. name .. ")", spec.build.install_variables[name])
    end
  end)

  it("installs the executable, every Lua module and core.so, and leaves the checkout as it was", function()
    assert.is_true(os.execute("command -v luarocks >/dev/null"), "luarocks is missing: scripts/install-deps.sh")
    local dir = helpers.tmpdir()
    local ok, err = pcall(function()
      local co, tree = dir .. "/checkout", dir .. "/tree"
      local files = "lua src man completion Makefile vmlua-scm-1.rockspec"
      assert(os.execute("mkdir " .. q(co) .. " && cp -r " .. files .. " " .. q(co)))
      local before = lines("cd " .. q(co) .. " && find . | sort")
      -- luafilesystem comes from Debian's lua-filesystem, which luarocks does not see
      local built, out = sh("cd " .. q(co) .. " && luarocks --lua-version 5.4 make --deps-mode=none --tree " ..
                            q(tree) .. " vmlua-scm-1.rockspec")
      assert(built, out)
      assert.are.same(before, lines("cd " .. q(co) .. " && find . | sort"))
      local modules = lines("cd lua && find vmlua -name '*.lua'")
      assert.is_true(#modules > 20)
      for _, file in ipairs(modules) do
        assert(io.open(tree .. "/share/lua/5.4/" .. file), file .. " was not installed")
      end
      assert(io.open(tree .. "/lib/lua/5.4/vmlua/core.so"), "core.so was not installed")
      local ran, said = sh("cd / && " .. q(tree .. "/bin/vmlua") .. " -e 'print(vmlua.version)'")
      assert(ran, said)
      assert.are.equal(require("vmlua").version .. "\n", said)
      -- nothing of the build is left in the rock's own directory
      assert.are.same({}, lines("find " .. q(tree) .. " -name '*.o'"))
    end)
    helpers.rmtree(dir)
    assert(ok, err)
  end)
end)
