-- The API reference and help(): every public function (what vmlua exports,
-- and the VM's methods without a leading _) has a doc comment, which
-- help() shows and LDoc puts in the reference (make doc).
local help = require "vmlua.help"
local machine = require "vmlua.machine"
local vmlua = require "vmlua"

local function public_methods()
  local names = {}
  for name, v in pairs(machine.class()) do
    if type(v) == "function" and name:sub(1, 1) ~= "_" then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

describe("the API's doc comments", function()
  local docs = help.docs()

  it("document everything vmlua exports", function()
    local missing = {}
    for name in pairs(vmlua) do
      local doc = docs.vmlua[name]
      if not doc or doc.summary == "" then missing[#missing + 1] = "vmlua." .. name end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("document every public method of a VM", function()
    local missing = {}
    for _, name in ipairs(public_methods()) do
      local doc = docs.vm[name]
      if not doc or doc.summary == "" then missing[#missing + 1] = "vm:" .. name end
    end
    assert.are.same({}, missing)
    assert.is_true(#public_methods() > 15)
  end)

  it("are what LDoc puts in the reference", function()
    assert.is_true(os.execute("command -v ldoc >/dev/null"), "ldoc is missing: scripts/install-deps.sh")
    local p = assert(io.popen("ldoc --filter pl.pretty.dump . 2>/dev/null"))
    local dump = p:read("a")
    p:close()
    local names = {} -- of the items in LDoc's dump of what it read
    for name in dump:gmatch('\n%s*name = "([^"]+)"') do names[(name:gsub("^methods:", "VM:"))] = true end
    local missing = {}
    for name, v in pairs(vmlua) do
      if type(v) == "function" and not names[name] then missing[#missing + 1] = "vmlua." .. name end
    end
    for _, name in ipairs(public_methods()) do
      if not names["VM:" .. name] then missing[#missing + 1] = "vm:" .. name end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("find a function that has none", function()
    local docs_of = help.parse([[
--- Documented.
-- @tparam string a the thing
function VM:documented(a) end

function VM:undocumented() end
]])
    assert.are.equal(1, #docs_of)
    assert.are.equal("VM:documented", docs_of[1].name)
    assert.are.equal("Documented.", docs_of[1].summary)
  end)
end)

describe("help()", function()
  it("lists vmlua's functions and a VM's methods, one line each", function()
    local text = help.text()
    assert.matches("\n  vmlua%.vm%(spec%) +Defines a VM", text)
    assert.matches("\n  vmlua%.vms%(%) +Every VM", text)
    assert.matches("\n  vm:start%(%[opts%]%) +Starts QEMU", text)
    assert.is_nil(text:find("vm:_", 1, true))
  end)

  it("describes one function, by name or by value, with its arguments and results", function()
    local text = help.text("start")
    assert.matches("^vm:start%(%[opts%]%)\n  Starts QEMU and returns when the guest runs", text)
    assert.matches("opts +%(table%) `detach`", text)
    assert.are.equal(text, help.text("vm:start"))
    assert.are.equal(text, help.text(machine.VM.start))
    local size = help.text(vmlua.size)
    assert.matches("^vmlua%.size%(size%)\n  A size in bytes", size)
    assert.matches("returns %(integer%) bytes", size)
    assert.are.equal(size, help.text("vmlua.size"))
    assert.matches('^no help for "bogus"', help.text("bogus"))
  end)

  it("describes a VM: its fields and methods", function()
    local vm = setmetatable({}, machine.VM)
    local text = help.text(vm)
    assert.matches("vm%.state +\"stopped\"", text)
    assert.matches("vm:run%(command, %[opts%]%)", text)
    assert.are.equal(text, help.text("vm"))
  end)
end)
