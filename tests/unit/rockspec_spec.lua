-- The rockspec builds the same module the Makefile does: every C file of the
-- core and every Lua module, so `luarocks make` users get all of vmlua.
local function lines(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  table.sort(out)
  return out
end

describe("vmlua-scm-1.rockspec", function()
  local spec = {}
  assert(loadfile("vmlua-scm-1.rockspec", "t", spec))()
  local modules = spec.build.modules

  it("compiles every C file of the core", function()
    local sources = {}
    for _, file in ipairs(modules["vmlua.core"].sources) do sources[#sources + 1] = file end
    table.sort(sources)
    local expected = {}
    for _, file in ipairs(lines("ls src/*.c")) do
      if file ~= "src/main.c" then expected[#expected + 1] = file end
    end
    assert.are.same(expected, sources)
  end)

  it("installs every Lua module", function()
    local installed = {}
    for name, file in pairs(modules) do
      if type(file) == "string" then
        installed[#installed + 1] = file
        local short = file:match("^lua/vmlua/(.-)%.lua$")
        assert.are.equal(short == "init" and "vmlua" or "vmlua." .. short, name)
      end
    end
    table.sort(installed)
    assert.are.same(lines("ls lua/vmlua/*.lua"), installed)
  end)
end)
