local lfs = require "lfs"
local fields = require "vmlua.fields"

describe("fields", function()
  it("measures edit distance with transpositions", function()
    assert.equal(0, fields.distance("memory", "memory"))
    assert.equal(1, fields.distance("memroy", "memory"))
    assert.equal(1, fields.distance("cpu", "cpus"))
    assert.equal(2, fields.distance("mmeroy", "memory"))
    assert.equal(6, fields.distance("", "memory"))
  end)

  it("suggests the closest field name", function()
    local names = { "name", "arch", "cpus", "memory", "boot", "disks", "net", "console" }
    assert.equal("memory", fields.suggest("memroy", names))
    assert.equal("memory", fields.suggest("Memory", names))
    assert.equal("memory", fields.suggest("mem", names))
    assert.equal("cpus", fields.suggest("cpu", names))
    assert.equal("disks", fields.suggest("disk", names))
    assert.equal("net", fields.suggest("nets", names))
    assert.equal("console", fields.suggest("consoles", names))
    assert.is_nil(fields.suggest("colour", names))
    assert.is_nil(fields.suggest("x", names))
  end)

  it("normalizes absolute paths lexically", function()
    assert.equal("/a/c", fields.normalize("/a/./b/../c/"))
    assert.equal("/", fields.normalize("/.."))
    assert.equal("/a/b", fields.normalize("//a//b"))
  end)

  it("resolves paths against the defining file", function()
    local w = { source = "/defs/dev.lua", short = "dev.lua", line = 1 }
    assert.equal("/defs/root.img", fields.resolve(w, "root.img"))
    assert.equal("/defs/img/root.img", fields.resolve(w, "./img/root.img"))
    assert.equal("/img/root.img", fields.resolve(w, "../img/root.img"))
    assert.equal("/abs/root.img", fields.resolve(w, "/abs/root.img"))
    assert.equal(lfs.currentdir() .. "/root.img", fields.resolve({ short = "stdin", line = 1 }, "root.img"))
  end)

  it("reads where a chunk was defined", function()
    assert.same({ source = "/x/dev.lua", short = "/x/dev.lua", line = 3 },
      fields.from_info { source = "@/x/dev.lua", short_src = "/x/dev.lua", currentline = 3 })
    assert.same({ source = lfs.currentdir() .. "/dev.lua", short = "./dev.lua", line = 3 },
      fields.from_info { source = "@./dev.lua", short_src = "./dev.lua", currentline = 3 })
    assert.same({ short = "stdin", line = 1 },
      fields.from_info { source = "=stdin", short_src = "stdin", currentline = 1 })
    assert.same({ short = '[string "x"]', line = 1 },
      fields.from_info { source = "x", short_src = '[string "x"]', currentline = 1 })
  end)

  it("formats the one error message", function()
    assert.equal("dev.lua:7: memory: too much", fields.msg({ short = "dev.lua", line = 7 }, "memory", "too much"))
    local ok, err = pcall(fields.fail, { short = "dev.lua", line = 7 }, "cpus", "%d is too few", 0)
    assert.is_false(ok)
    assert.equal("dev.lua:7: cpus: 0 is too few", err)
    assert.is_true(require("vmlua.errors").user[err])
  end)

  it("describes values for messages", function()
    assert.equal('string "two"', fields.describe("two"))
    assert.equal("number 1.5", fields.describe(1.5))
    assert.equal("boolean true", fields.describe(true))
    assert.equal("nil", fields.describe(nil))
    assert.equal("a table", fields.describe({}))
    assert.equal('string "a\\nb"', fields.describe("a\nb"))
  end)
end)
