-- Hosts whose /dev/kvm opens but cannot run guests, played with real QEMU:
-- a wrapper qemu-system-ARCH on PATH that passes the probe and dies when
-- started for real under KVM (VMLUA_KVM_DEVICE=/dev/null makes KVM look
-- present), and, as root, a private mount namespace whose /dev/kvm is a null
-- device. vmlua must boot the real guest under TCG, say why, and leave
-- nothing behind.
local core = require "vmlua.core"
local task = require "vmlua.task"
local cli = require "support.cli"
local guest = require "support.guest"
local host = require "vmlua.host"
local runtime = require "vmlua.runtime"

local arch = host.facts().arch
local running = {}

-- Runs argv with extra environment through env(1); returns when it ends.
local function run(env, argv, timeout)
  local h = { out = "", err = "", changed = task.condition() }
  local args = { "env" }
  for k, v in pairs(env) do args[#args + 1] = k .. "=" .. v end
  for _, a in ipairs(argv) do args[#args + 1] = a end
  h.process = assert(core.spawn {
    file = "/usr/bin/env", args = args,
    on_stdout = function(d) h.out = h.out .. d; h.changed.notify() end,
    on_stderr = function(d) h.err = h.err .. d; h.changed.notify() end,
    on_exit = function(code, signal) h.code, h.signal = code, signal; h.changed.notify() end,
  })
  running[#running + 1] = h.process
  if not h.changed.wait(function() return h.code or h.signal end, timeout or 240) then
    error("timed out; stdout:\n" .. h.out .. "\nstderr:\n" .. h.err, 2)
  end
  return h
end

local function lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = line end
  return list
end

-- What vmlua said on stderr, without the line each graceful stop adds.
local function notices(err)
  return (err:gsub("vmlua: stopped vm [^\n]*%(graceful[^\n]*\n", ""))
end

-- A script that boots the cached guest, runs a command in it and stops it,
-- printing its accelerator and every state change.
local function script(dir, name, extra)
  local files = guest.files(arch)
  local path = dir .. "/boot.lua"
  local f = assert(io.open(path, "w"))
  f:write(string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, cpus = 1, memory = "256M", %s
                      boot = vmlua.linux { kernel = %q, initrd = %q } }
local events = {}
vm:on("state", function(new, old) events[#events + 1] = old .. "->" .. new end)
vm:start()
print("accel " .. tostring(vm.accel))
vm:expect("vmlua# ", { timeout = 120 })
print((vm:run("echo guest-$((6 * 7))")))
vm:stop()
print("events " .. table.concat(events, " "))
]], name, extra or "", files.kernel, files.initrd))
  f:close()
  return path
end

local function assert_clean(name, pids)
  for _, pid in ipairs(pids) do
    assert.is_false(core.alive(pid), "QEMU pid " .. pid .. " is still alive")
  end
  assert.is_nil(core.stat(runtime.paths(name).dir), "runtime directory left behind")
end

describe("a host whose KVM opens but cannot run guests", function()
  local dir, log, count = nil, nil, 0

  before_each(function()
    dir = guest.tmpdir()
    log = dir .. "/runs"
    count = count + 1
  end)

  after_each(function()
    for _, p in ipairs(running) do p:close() end
    running = {}
    guest.cleanup()
  end)

  -- qemu-system-ARCH in dir: logs "pid args", runs `on_kvm` when started for
  -- real under KVM, and otherwise real QEMU with TCG in KVM's place (so the
  -- probe passes).
  local function wrapper(on_kvm)
    local real = assert(host.qemu_binary(arch))
    local path = dir .. "/qemu-system-" .. arch
    local f = assert(io.open(path, "w"))
    f:write(string.format([[#!/bin/sh
echo "$$ $*" >> %s
probe= kvm=
for a do case $a in stdio) probe=1 ;; kvm) kvm=1 ;; esac; done
if [ -n "$kvm" ] && [ -z "$probe" ]; then
%s
fi
for a do
  shift
  case $a in kvm) a=tcg ;; host) a=max ;; virt,gic-version=host) a=virt ;; esac
  set -- "$@" "$a"
done
exec %s "$@"
]], log, on_kvm, real))
    f:close()
    assert(core.chmod(path, tonumber("755", 8)))
    return {
      PATH = dir .. ":" .. os.getenv("PATH"),
      VMLUA_KVM_DEVICE = "/dev/null",
      VMLUA_CACHE = dir .. "/cache",
      VMLUA_ACCEL = "",
    }
  end

  local ABORT = [[
  echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2
  ulimit -c 0
  kill -ABRT $$]]

  local function runs()
    local list = {}
    local f = io.open(log)
    for line in f:lines() do
      local pid, args = line:match("^(%d+) (.*)$")
      list[#list + 1] = { pid = tonumber(pid), args = args }
    end
    f:close()
    return list
  end

  local function pids()
    local list = {}
    for i, r in ipairs(runs()) do list[i] = r.pid end
    return list
  end

  it("plans KVM, then boots under TCG when QEMU aborts under KVM, quoting QEMU once", function()
    local env = wrapper(ABORT)
    local name = string.format("spec-accel-%d-%d", core.getpid(), count)
    local file = script(dir, name)

    local plan = run(env, { cli.binary, "plan", file })
    assert.equal(0, plan.code, plan.err)
    assert.truthy(plan.out:find("\n  accel     kvm: /dev/null runs guests (probed)\n", 1, true), plan.out)

    local h = run(env, { cli.binary, file })
    assert.equal(0, h.code, h.err)
    local out = lines(h.out)
    assert.same({ "accel tcg", "guest-42",
                  "events stopped->starting starting->running running->stopping stopping->stopped" }, out)
    assert.same({ string.format('vmlua: vm %s: QEMU was killed by SIGABRT under KVM ("qemu-system-x86_64: error: '
      .. 'failed to set MSR 0x10a to 0x69"); starting it again under TCG', name) }, lines(notices(h.err)))

    -- the plan's probe, then (its verdict cached) the start under KVM and the one under TCG
    local r = runs()
    assert.equal(3, #r)
    assert.matches("%-qmp stdio$", r[1].args)
    assert.matches("%-accel kvm %-cpu host ", r[2].args)
    assert.matches("%-accel tcg %-cpu max ", r[3].args)
    assert_clean(name, pids())
  end)

  it("falls back as well when QEMU connects to vmlua before it dies", function()
    -- real QEMU, which opens its sockets and then fails on a device
    local env = wrapper('  set -- "$@" -device vmlua-no-such-device')
    local name = string.format("spec-accel-%d-%d", core.getpid(), count)
    local h = run(env, { cli.binary, script(dir, name) })
    assert.equal(0, h.code, h.err)
    assert.matches("accel tcg\nguest%-42\n", h.out)
    assert.matches("events stopped%->starting starting%->running ", h.out)
    local err = lines(notices(h.err))
    assert.equal(1, #err, h.err)
    assert.matches("^vmlua: vm " .. name:gsub("%p", "%%%0") .. ": QEMU exited with status 1 under KVM "
      .. '%(".*vmlua%-no%-such%-device.*"%); starting it again under TCG$', err[1])
    assert_clean(name, pids())
  end)

  it("does not fall back from a KVM the definition asks for", function()
    local env = wrapper(ABORT)
    local name = string.format("spec-accel-%d-%d", core.getpid(), count)
    local h = run(env, { cli.binary, script(dir, name, 'accel = "kvm",') })
    assert.equal(1, h.code)
    assert.matches("vm " .. name:gsub("%p", "%%%0") .. ": cannot start: QEMU was killed by SIGABRT: "
      .. "qemu%-system%-x86_64: error: failed to set MSR 0x10a to 0x69", h.err)
    assert.is_nil(h.err:find("under TCG", 1, true))
    assert_clean(name, pids())
  end)

  it("runs TCG without probing when VMLUA_ACCEL says so", function()
    local env = wrapper(ABORT)
    env.VMLUA_ACCEL = "tcg"
    local name = string.format("spec-accel-%d-%d", core.getpid(), count)
    local plan = run(env, { cli.binary, "plan", script(dir, name, 'accel = "kvm",') })
    assert.equal(0, plan.code, plan.err)
    assert.truthy(plan.out:find("\n  accel     tcg: asked for by VMLUA_ACCEL\n", 1, true), plan.out)
    assert.is_nil(io.open(log))
  end)

  it("says why KVM cannot be asked for, in vmlua plan", function()
    local env = wrapper(ABORT)
    env.VMLUA_KVM_DEVICE = dir .. "/kvm"
    env.VMLUA_ACCEL = "kvm"
    local file = script(dir, "spec-accel-plan")
    local plan = run(env, { cli.binary, "plan", file })
    assert.equal(1, plan.code)
    local err = lines(plan.err) -- after what the script printed
    assert.equal(string.format("vmlua: %s:2: accel: VMLUA_ACCEL=kvm cannot be used: no KVM here (%s/kvm: "
      .. "No such file or directory)", file, dir), err[#err])
    env.VMLUA_ACCEL = "kvn"
    plan = run(env, { cli.binary, "plan", file })
    assert.equal(1, plan.code)
    assert.equal(string.format('vmlua: %s:2: accel: VMLUA_ACCEL: "kvn" is not an accelerator; did you mean "kvm"? '
      .. '(one of "kvm", "hvf", "tcg")\n', file), plan.err)
  end)

  -- /dev/kvm a null device: real QEMU fails "failed to initialize kvm".
  local as_root = core.getuid() == 0 and it or pending
  as_root("boots under TCG in a mount namespace whose /dev/kvm is a null device (root)", function()
    local ns = dir .. "/ns.sh"
    local f = assert(io.open(ns, "w"))
    f:write([[
set -e
mount -t tmpfs -o mode=755 vmlua-dev /dev
for d in null:1:3 zero:1:5 random:1:8 urandom:1:9 tty:5:0 kvm:1:3; do
  IFS=: read n ma mi <<EOF
$d
EOF
  mknod -m 666 /dev/$n c $ma $mi
done
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
exec "$@"
]])
    f:close()
    local name = string.format("spec-accel-%d-%d", core.getpid(), count)
    local file = script(dir, name)
    local env = { VMLUA_CACHE = dir .. "/cache", VMLUA_ACCEL = "", VMLUA_KVM_DEVICE = "" }
    local unshare = { "unshare", "-m", "--propagation", "private", "sh", ns }
    local function inside(args)
      local argv = {}
      for _, a in ipairs(unshare) do argv[#argv + 1] = a end
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      return run(env, argv)
    end

    local plan = inside { cli.binary, "plan", file }
    assert.equal(0, plan.code, plan.err)
    assert.matches("\n  accel     tcg: /dev/kvm opens but QEMU fails under KVM: [^\n]*failed to initialize kvm",
      plan.out)

    local h = inside { cli.binary, file }
    assert.equal(0, h.code, h.err)
    assert.same({ "accel tcg", "guest-42",
                  "events stopped->starting starting->running running->stopping stopping->stopped" }, lines(h.out))
    assert.matches("^vmlua: " .. arch .. " guest: /dev/kvm opens but QEMU fails under KVM: [^\n]*failed to "
      .. "initialize kvm[^\n]*, emulated with TCG, expect it to be slow\n$", notices(h.err))
    assert_clean(name, {})
  end)
end)
