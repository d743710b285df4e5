local size = require "vmlua.size"

describe("size.parse", function()
  local KiB, MiB, GiB = 1024, 1024 ^ 2, 1024 ^ 3

  it("takes whole numbers of bytes", function()
    assert.equal(0, size.parse(0))
    assert.equal(4096, size.parse(4096))
    assert.equal(2 * GiB, size.parse(2 * 1024 ^ 3)) -- a float with a whole value
    assert.equal("integer", math.type(size.parse(2 * 1024 ^ 3)))
  end)

  it("takes strings with binary units, in any case", function()
    local cases = {
      ["4096"] = 4096, ["4096B"] = 4096, ["1024K"] = 1024 * KiB, ["1024k"] = 1024 * KiB,
      ["512M"] = 512 * MiB, ["64MiB"] = 64 * MiB, ["64mib"] = 64 * MiB, ["2G"] = 2 * GiB,
      ["2GiB"] = 2 * GiB, ["2GB"] = 2 * GiB, ["2g"] = 2 * GiB, ["1.5G"] = 1.5 * GiB,
      [".5G"] = GiB // 2, ["1T"] = 1024 * GiB, [" 2 G "] = 2 * GiB,
    }
    for text, bytes in pairs(cases) do
      local got = size.parse(text)
      assert.equal(bytes, got, text)
      assert.equal("integer", math.type(got), text)
    end
  end)

  local function err(v)
    local ok, msg = pcall(size.parse, v)
    assert.is_false(ok)
    return msg
  end

  it("refuses anything else, saying why", function()
    assert.matches('"2Q" is not a size: unknown unit "Q" %(use K, M, G or T', err("2Q"), 1)
    assert.matches('"-1G" is negative', err("-1G"))
    assert.matches("-5 is negative", err(-5))
    assert.matches("1.5 is not a whole number of bytes %(use // for integer division%)", err(1.5))
    assert.matches('"1.3K" is not a whole number of bytes', err("1.3K"))
    assert.matches('"two" is not a size; expected a number of bytes or a string like "512M" or "2G"', err("two"))
    assert.matches('"1..2G" is not a size', err("1..2G"))
    assert.matches('"" is not a size', err(""))
    assert.matches('expected a number of bytes or a string like "512M" or "2G", got boolean true', err(true))
    assert.matches("got a table", err({}))
    assert.matches("is too large", err("99999999P"))
    assert.matches("is not a size", err(0 / 0))
  end)

  it("raises at the caller's line", function()
    local ok, msg = pcall(function()
      local n = size.parse("2Q")
      return n
    end)
    assert.is_false(ok)
    assert.matches("size_spec.lua:%d+: ", msg)
  end)

  it("raises a user error, reported in one line without a traceback", function()
    local ok, msg = pcall(function()
      local n = size.parse({})
      return n
    end)
    assert.is_false(ok)
    assert.matches("size_spec%.lua:%d+: size: expected a number of bytes", msg)
    assert.is_true(require("vmlua.errors").user[msg])
  end)

  it("check returns nil and the reason", function()
    local n, why = size.check("2X")
    assert.is_nil(n)
    assert.equal('"2X" is not a size: unknown unit "X" (use K, M, G or T, e.g. "512M", "2G")', why)
    assert.equal(1024, size.check("1K"))
  end)
end)

describe("size.format", function()
  it("writes sizes for messages", function()
    assert.equal("100 B", size.format(100))
    assert.equal("1 KiB", size.format(1024))
    assert.equal("512 MiB", size.format(512 * 1024 * 1024))
    assert.equal("2 GiB", size.format(2 * 1024 ^ 3))
    assert.equal("23.5 GiB", size.format(25276026880))
    assert.equal("1.5 GiB", size.format(1.5 * 1024 ^ 3))
    assert.equal("64 GiB", size.format(64 * 1024 ^ 3))
    assert.equal("2 TiB", size.format(2 * 1024 ^ 4))
  end)
end)
