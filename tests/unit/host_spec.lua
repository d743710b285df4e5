local core = require "vmlua.core"
local host = require "vmlua.host"
local helpers = require "support.helpers"

describe("host", function()
  local dir

  before_each(function()
    dir = helpers.tmpdir()
    host.reset()
  end)

  after_each(function()
    host.reset()
    helpers.rmtree(dir)
  end)

  local function fake_qemu(arch)
    local path = helpers.write(dir .. "/qemu-system-" .. arch, "#!/bin/sh\nexit 0\n")
    assert(core.chmod(path, tonumber("755", 8)))
    return path
  end

  it("gives the facts of this machine", function()
    local f = host.facts()
    assert.equal("integer", math.type(f.cpus))
    assert.is_true(f.cpus >= 1)
    assert.equal("integer", math.type(f.memory))
    assert.is_true(f.memory > 64 * 1024 * 1024)
    assert.is_truthy(({ x86_64 = true, aarch64 = true })[f.arch] or f.arch:match("^[%w_]+$"))
    assert.is_truthy(({ linux = true, macos = true })[f.os])
    assert.is_table(f.accels)
  end)

  it("lists only the accelerators that can be used", function()
    local f = host.facts()
    local has = {}
    for _, a in ipairs(f.accels) do has[a] = true end
    assert.equal(f.os == "linux" and core.can_open("/dev/kvm", "rw") == true, has.kvm == true)
    assert.equal(f.os == "macos", has.hvf == true)
    assert.equal(host.qemu_binary(f.arch) ~= nil, has.tcg == true)
  end)

  it("has facts without QEMU, and no tcg then", function()
    host.reset { path = dir }
    local f = host.facts()
    assert.is_true(f.cpus >= 1)
    for _, a in ipairs(f.accels) do assert.not_equal("tcg", a) end
  end)

  it("lists tcg when qemu-system-<hostarch> is on PATH", function()
    local arch = host.facts().arch
    fake_qemu(arch)
    host.reset { path = "/nonexistent:" .. dir }
    local f = host.facts()
    assert.equal("tcg", f.accels[#f.accels])
  end)

  it("finds qemu-system-ARCH on PATH, with its full path", function()
    local path = fake_qemu("aarch64")
    host.reset { path = "/nonexistent::" .. dir }
    assert.equal(path, host.qemu_binary("aarch64"))
    assert.is_nil(host.qemu_binary("riscv64"))
    assert.is_nil(host.qemu_binary("../../bin/sh"))
    assert.is_nil(host.qemu_binary(nil))
  end)

  it("caches PATH look-ups until reset", function()
    host.reset { path = dir }
    assert.is_nil(host.qemu_binary("x86_64"))
    local path = fake_qemu("x86_64")
    assert.is_nil(host.qemu_binary("x86_64"))
    host.reset { path = dir }
    assert.equal(path, host.qemu_binary("x86_64"))
  end)

  it("does not take a non-executable file", function()
    helpers.write(dir .. "/qemu-system-x86_64", "")
    host.reset { path = dir }
    assert.is_nil(host.qemu_binary("x86_64"))
  end)

  describe("accel_for", function()
    it("emulates another architecture, and says so", function()
      local arch = host.facts().arch
      local other = arch == "x86_64" and "aarch64" or "x86_64"
      local accel, warning = host.accel_for(other)
      assert.equal("tcg", accel)
      assert.equal(string.format("%s guest on an %s host: emulated, expect it to be slow", other, arch), warning)
    end)

    it("uses KVM or HVF for the host's own architecture, or warns", function()
      local f = host.facts()
      local accel, warning = host.accel_for(f.arch)
      if f.os == "macos" then
        assert.equal("hvf", accel)
        assert.is_nil(warning)
      elseif core.can_open("/dev/kvm", "rw") then
        assert.equal("kvm", accel)
        assert.is_nil(warning)
      else
        assert.equal("tcg", accel)
        assert.matches("^" .. f.arch .. " guest: no KVM here %(/dev/kvm is not usable: .+%), "
          .. "emulated with TCG, expect it to be slow$", warning)
      end
    end)
  end)
end)
