-- vmlua.here(path): a path relative to the calling file, as the paths in a
-- definition are, for io.open and the like (which use the current directory).
local helpers = require "support.helpers"

describe("vmlua.here", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  it("resolves against the calling file, not the current directory", function()
    assert.are_not.equal(dir, require("lfs").currentdir())
    helpers.write(dir .. "/scratch.img", "x")
    local src = 'local vmlua = require "vmlua"\n' ..
      'local f = io.open(vmlua.here "scratch.img")\n' ..
      'return vmlua.here "scratch.img", f ~= nil, vmlua.here "/abs/x", vmlua.here "sub/../y"\n'
    local ok, path, opened, abs, norm = helpers.run(dir, src)
    assert.is_true(ok, path)
    assert.are.equal(dir .. "/scratch.img", path)
    assert.is_true(opened)
    assert.are.equal("/abs/x", abs)
    assert.are.equal(dir .. "/y", norm)
  end)

  it("raises at the caller's line for a value that is not a path", function()
    local err = helpers.error_of(dir, 'local vmlua = require "vmlua"\n\nreturn vmlua.here(42)\n')
    assert.are.equal(dir .. "/def.lua:3: here: expected a path (a string), got number 42", err)
  end)
end)
