-- The KVM probe and its cache, with real QEMU behind small wrappers that
-- play the three kinds of host: KVM that runs guests (QEMU under TCG in its
-- place), KVM that opens but aborts QEMU, and no KVM. VMLUA_KVM_DEVICE
-- points the "does it open" check at /dev/null.
local core = require "vmlua.core"
local accel = require "vmlua.accel"
local config = require "vmlua.config"
local fields = require "vmlua.fields"
local host = require "vmlua.host"
local validate = require "vmlua.validate"
local helpers = require "support.helpers"

local getenv = os.getenv

describe("accel", function()
  local dir, env, arch, real_qemu, log, timeout

  -- A qemu-system-ARCH in dir that logs its pid and argv, then runs `body`.
  local function wrapper(body)
    local path = dir .. "/qemu-system-" .. arch
    os.remove(path) -- a new file: a new inode, as a QEMU upgrade gives
    helpers.write(path, string.format('#!/bin/sh\necho "$$ $*" >> %s\n%s\n', log, body))
    assert(core.chmod(path, tonumber("755", 8)))
    return path
  end

  -- Real QEMU, with KVM swapped for TCG: a host whose KVM runs guests.
  local function working_kvm()
    return wrapper(string.format([[
for a do
  shift
  case $a in kvm) a=tcg ;; host) a=max ;; virt,gic-version=host) a=virt ;; esac
  set -- "$@" "$a"
done
exec %s "$@"]], real_qemu))
  end

  -- What QEMU does on a host whose /dev/kvm opens but cannot run guests.
  local function aborting_kvm()
    return wrapper([[
echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2
ulimit -c 0
kill -ABRT $$]])
  end

  local function runs()
    local f = io.open(log)
    if not f then return {} end
    local list = {}
    for line in f:lines() do list[#list + 1] = line end
    f:close()
    return list
  end

  local function cache_text()
    local f = io.open(dir .. "/cache/accel.json")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    return text
  end

  before_each(function()
    dir = helpers.tmpdir()
    log = dir .. "/runs"
    arch = host.facts().arch
    real_qemu = host.qemu_binary(arch)
    env = { VMLUA_KVM_DEVICE = "/dev/null", VMLUA_CACHE = dir .. "/cache", VMLUA_ACCEL = false }
    os.getenv = function(name) -- luacheck: ignore 122 (the spec plays the environment)
      local v = env[name]
      if v ~= nil then return v or nil end
      return getenv(name)
    end
    host.reset { path = dir .. ":/usr/bin:/bin" }
    timeout = accel.probe_timeout
  end)

  after_each(function()
    os.getenv = getenv -- luacheck: ignore 122
    accel.probe_timeout = timeout
    host.reset()
    helpers.rmtree(dir)
  end)

  it("does not probe when the device does not open", function()
    working_kvm()
    env.VMLUA_KVM_DEVICE = dir .. "/kvm"
    local k = accel.kvm()
    assert.is_false(k.ok)
    assert.equal("no KVM here (" .. dir .. "/kvm: No such file or directory)", k.why)
    assert.same({}, runs())
    assert.is_nil(cache_text())
    assert.same({ "tcg" }, accel.usable())
  end)

  it("offers KVM when QEMU answers QMP under it, and remembers that", function()
    working_kvm()
    local k = accel.kvm()
    assert.is_true(k.ok, k.why)
    assert.equal("/dev/null runs guests (probed)", k.why)
    local probe = runs()
    assert.equal(1, #probe)
    local pid, args = probe[1]:match("^(%d+) (.*)$")
    assert.matches("^%-accel kvm %-cpu host %-S %-machine %S+ %-nodefaults .*%-qmp stdio$", args)
    assert.is_false(core.alive(tonumber(pid)), "the probe's QEMU is still running")
    assert.same({ "kvm", "tcg" }, accel.usable())
    assert.equal("kvm", (accel.choose(arch)))

    -- a later run reads the verdict and starts nothing
    accel.reset()
    assert.is_true(accel.kvm().ok)
    assert.equal(1, #runs())
    local doc = core.json_decode(cache_text())
    assert.equal(1, #doc.kvm)
    assert.is_true(doc.kvm[1].ok)
  end)

  it("refuses KVM when QEMU aborts under it, in QEMU's words", function()
    aborting_kvm()
    local k = accel.kvm()
    assert.is_false(k.ok)
    local why = "/dev/null opens but QEMU aborts under KVM: "
      .. "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 (SIGABRT)"
    assert.equal(why, k.why)
    assert.same({ "tcg" }, accel.usable())
    local name, reason, warning = accel.choose(arch)
    assert.equal("tcg", name)
    assert.equal(why, reason)
    assert.equal(arch .. " guest: " .. why .. ", emulated with TCG, expect it to be slow", warning)
    assert.same({ nil, '"kvm" cannot be used: ' .. why }, { accel.choose(arch, "kvm", "accel") })
    assert.same({ nil, "VMLUA_ACCEL=kvm cannot be used: " .. why }, { accel.choose(arch, "kvm", "VMLUA_ACCEL") })
    -- also remembered
    accel.reset()
    assert.equal(why, accel.kvm().why)
    assert.equal(1, #runs())
  end)

  it("probes again when QEMU changes", function()
    working_kvm()
    assert.is_true(accel.kvm().ok)
    aborting_kvm()
    accel.reset()
    assert.is_false(accel.kvm().ok)
    assert.equal(2, #runs())
    assert.equal(2, #core.json_decode(cache_text()).kvm)
  end)

  it("keeps no verdict when QEMU does not answer, and leaves nothing running", function()
    wrapper("exec sleep 30")
    accel.probe_timeout = 0.5
    local k = accel.kvm()
    assert.is_false(k.ok)
    assert.equal("QEMU did not answer under KVM within 0.5 s", k.why)
    assert.is_nil(cache_text())
    local pid = runs()[1]:match("^(%d+)")
    assert.is_false(core.alive(tonumber(pid)))
  end)

  it("replaces a damaged cache whole, through a temporary file", function()
    assert(core.mkdir_private(dir .. "/cache"))
    helpers.write(dir .. "/cache/accel.json", "{ not json")
    working_kvm()
    assert.is_true(accel.kvm().ok)
    assert.is_true(core.json_decode(cache_text()).kvm[1].ok)
    local p = io.popen("ls -A " .. helpers.shell_quote(dir .. "/cache"))
    assert.equal("accel.json\n", p:read("a"))
    p:close()
  end)

  it("gives QEMU's line that says what failed", function()
    local failed = "qemu-system-x86_64: -accel kvm: failed to initialize kvm: No such device"
    assert.equal(failed, accel.words("kvm version too old\r\n" .. failed .. "\r\n"))
    assert.equal("something else", accel.words('{"QMP": {}}\n  something else  \n'))
    assert.is_nil(accel.words(""))
  end)

  describe("validation", function()
    local function vm(spec)
      helpers.fixtures(dir)
      spec.boot = config.linux { kernel = dir .. "/vmlinuz" }
      return config.vm(spec, 2)
    end

    it("refuses kvm where it did not pass, naming why", function()
      aborting_kvm()
      local cfg = vm { arch = arch, accel = "kvm" }
      local ok, msg = validate.vm(cfg)
      assert.is_nil(ok)
      assert.equal(fields.location(cfg.where) .. ': accel: "kvm" cannot be used: /dev/null opens but QEMU aborts '
        .. "under KVM: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 (SIGABRT)", msg)
      env.VMLUA_KVM_DEVICE = dir .. "/none"
      accel.reset()
      env.VMLUA_ACCEL = "kvm"
      cfg = vm { arch = arch }
      assert.equal(fields.location(cfg.where) .. ": accel: VMLUA_ACCEL=kvm cannot be used: no KVM here ("
        .. dir .. "/none: No such file or directory)", select(2, validate.vm(cfg)))
    end)

    it("refuses kvm for a guest of another architecture", function()
      working_kvm()
      local other = arch == "x86_64" and "aarch64" or "x86_64"
      local cfg = vm { arch = other, accel = "kvm" }
      local _, msg, all = validate.vm(cfg)
      for _, m in ipairs(all) do
        if m:find(": accel: ", 1, true) then msg = m end
      end
      assert.equal(fields.location(cfg.where) .. string.format(
        ': accel: "kvm" runs only %s guests on this host, and this one is %s: use "tcg"', arch, other), msg)
    end)

    it("takes kvm where it runs, and never probes for tcg", function()
      working_kvm()
      assert.is_true(validate.vm(vm { arch = arch, accel = "kvm" }))
      assert.equal(1, #runs())
      accel.reset()
      os.remove(dir .. "/cache/accel.json")
      assert.is_true(validate.vm(vm { arch = arch, accel = "tcg" }))
      assert.is_true(validate.vm(vm { arch = arch }))
      assert.equal(1, #runs())
    end)
  end)

  describe("choose", function()
    it("emulates a guest of another architecture, and says so", function()
      aborting_kvm()
      local other = arch == "x86_64" and "aarch64" or "x86_64"
      local emulated = string.format("%s guest on an %s host: emulated, expect it to be slow", other, arch)
      assert.same({ "tcg", emulated, emulated }, { accel.choose(other) })
      assert.same({ "tcg", "asked for by the definition", emulated }, { accel.choose(other, "tcg", "accel") })
      assert.same({ nil, string.format('"kvm" runs only %s guests on this host, and this one is %s: use "tcg"',
        arch, other) }, { accel.choose(other, "kvm", "accel") })
      assert.same({}, runs()) -- no probe for a foreign guest
    end)

    it("takes TCG when asked, without probing", function()
      working_kvm()
      assert.same({ "tcg", "asked for by VMLUA_ACCEL" }, { accel.choose(arch, "tcg", "VMLUA_ACCEL") })
      assert.same({}, runs())
    end)

    it("takes KVM when asked and it runs", function()
      working_kvm()
      assert.same({ "kvm", "asked for by the definition; /dev/null runs guests (probed)" },
        { accel.choose(arch, "kvm", "accel") })
    end)

    it("refuses the other OS's hypervisor", function()
      if host.facts().os ~= "linux" then return end
      aborting_kvm()
      assert.same({ nil, '"hvf" is not on linux; here use "tcg"' }, { accel.choose(arch, "hvf", "accel") })
    end)
  end)
end)
