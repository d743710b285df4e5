-- vmlua --sandbox FILE and vmlua plan --sandbox FILE: someone else's recipe
-- is planned for review, refused when it reaches out, and booted (the
-- busybox guest from vmlua's cache, which the sandbox allows) when it
-- behaves.
local core = require "vmlua.core"
local cli = require "support.cli"
local guest = require "support.guest"

-- A recipe in its own directory that defines the cached busybox guest.
local function recipe(dir, extra)
  local files = guest.files("x86_64")
  return cli.write(dir, "recipe.lua", string.format([[
local vmlua = require "vmlua"
return vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q }%s }
]], "sbx-" .. core.getpid() .. "-" .. math.random(1e6), files.kernel, files.initrd, extra or ""))
end

describe("vmlua --sandbox", function()
  after_each(guest.cleanup)

  it("plans a recipe for review and refuses one whose VM reaches outside", function()
    local dir, other = guest.tmpdir(), guest.tmpdir()
    local code, out, err = cli.run({ "plan", "--sandbox", recipe(dir) }, 60)
    assert.are.equal(0, code, err)
    assert.matches("qemu%-system%-x86_64", out)
    assert.matches(guest.files("x86_64").kernel:gsub("%p", "%%%0"), out)
    guest.copy(guest.files("x86_64").data, other .. "/data.ext4")
    local disk = string.format(', disks = { vmlua.disk { path = %q } }', other .. "/data.ext4")
    code, out, err = cli.run({ "plan", "--sandbox", recipe(dir, disk) }, 60)
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("refused by the sandbox", err)
    assert.matches("disks%[1%]%.path: " .. other:gsub("%p", "%%%0") .. "/data%.ext4 is outside", err)
    code, out, err = cli.run({ "plan", "--json", "--sandbox", "--allow", other, recipe(dir, disk) }, 60)
    assert.are.equal(0, code, err)
    assert.matches("data%.ext4", out)
    local _
    code, _, err = cli.run({ "plan", "--sandbox", recipe(dir, ', qemu = { "-device", "virtio-rng-pci" }') }, 60)
    assert.are.equal(1, code)
    assert.matches("qemu: raw QEMU arguments are refused", err)
  end)

  it("refuses a command and ends an endless loop, naming the recipe", function()
    local dir = guest.tmpdir()
    local bad = cli.write(dir, "bad.lua", 'os.execute("touch ' .. dir .. '/ran")\n')
    local code, _, err = cli.run({ "--sandbox", bad }, 60)
    assert.are.equal(1, code)
    assert.matches("bad%.lua:1: os%.execute: refused by the sandbox", err)
    assert.is_nil(core.stat(dir .. "/ran"))
    local loop = cli.write(dir, "loop.lua", "while true do end\n")
    code, _, err = cli.run({ "--sandbox", "--cpu-limit", "0.5", loop }, 60)
    assert.are.equal(1, code)
    assert.matches("loop%.lua: stopped by the sandbox: it used more than 0%.5 s of CPU time", err)
    code, _, err = cli.run({ "plan", "--sandbox", loop }, 60)
    assert.are.equal(1, code)
    assert.matches("loop%.lua: stopped by the sandbox", err)
    local hog = cli.write(dir, "hog.lua", "local t = {} while true do t[#t + 1] = {} end\n")
    code, _, err = cli.run({ "--sandbox", "--memory-limit", "32M", hog }, 60)
    assert.are.equal(1, code)
    assert.matches("hog%.lua: stopped by the sandbox: it needed more than 32 MiB of memory", err)
    code, _, err = cli.run({ "--allow", dir, bad }, 60)
    assert.are.equal(2, code)
    assert.matches("go with %-%-sandbox", err)
  end)

  it("boots the busybox guest a well-behaved recipe defines", function()
    local dir = guest.tmpdir()
    local h = cli.spawn { "--sandbox", recipe(dir) }
    h.until_(function() return h.out:find("vmlua# ") end, 180)
    assert.matches("booting sbx%-", h.err)
    h.process:kill("INT")
    assert.are.equal(130, h.wait(120))
  end)
end)
