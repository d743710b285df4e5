local core = require "vmlua.core"
local host = require "vmlua.host"
local helpers = require "support.helpers"

local getenv = os.getenv

describe("host", function()
  local dir, env

  before_each(function()
    dir = helpers.tmpdir()
    -- a probe of KVM here keeps its verdict in dir, not in the user's cache
    env = { VMLUA_CACHE = dir .. "/cache" }
    os.getenv = function(name) -- luacheck: ignore 122 (the spec plays the environment)
      local v = env[name]
      if v ~= nil then return v or nil end
      return getenv(name)
    end
    host.reset()
  end)

  after_each(function()
    os.getenv = getenv -- luacheck: ignore 122
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
    assert.equal(f.os == "linux" and require("vmlua.accel").kvm().ok, has.kvm == true)
    assert.equal(f.os == "macos", has.hvf == true)
    assert.equal(host.qemu_binary(f.arch) ~= nil, has.tcg == true)
  end)

  it("does not list kvm where /dev/kvm opens but QEMU aborts under it", function()
    local arch = host.facts().arch
    local qemu = helpers.write(dir .. "/qemu-system-" .. arch, [[#!/bin/sh
echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2
ulimit -c 0
kill -ABRT $$
]])
    assert(core.chmod(qemu, tonumber("755", 8)))
    env.VMLUA_KVM_DEVICE = "/dev/null"
    host.reset { path = dir }
    assert.same({ "tcg" }, host.facts().accels)
  end)

  it("looks up the accelerators only when they are read, and still shows them", function()
    local arch = host.facts().arch
    local ran = dir .. "/ran"
    local qemu = helpers.write(dir .. "/qemu-system-" .. arch, "#!/bin/sh\ntouch " .. ran .. "\n")
    assert(core.chmod(qemu, tonumber("755", 8)))
    env.VMLUA_KVM_DEVICE = "/dev/null"
    host.reset { path = dir }
    local f = host.facts()
    assert.is_true(f.cpus >= 1)
    assert.is_nil(rawget(f, "accels"))
    assert.is_nil(core.stat(ran), "facts() started QEMU")
    local keys = {}
    for k in pairs(f) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "accels", "arch", "cpus", "memory", "os" }, keys)
    assert.is_table(rawget(f, "accels"))
    assert.is_truthy(core.stat(ran), "reading accels did not probe KVM")
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
      elseif require("vmlua.accel").kvm().ok then
        assert.equal("kvm", accel)
        assert.is_nil(warning)
      else
        assert.equal("tcg", accel)
        assert.matches("^" .. f.arch .. " guest: .+, emulated with TCG, expect it to be slow$", warning)
      end
    end)
  end)
end)
