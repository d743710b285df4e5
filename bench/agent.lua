-- A command run through the guest agent (vm:run with agent = true) on the
-- Debian guest, from the call to its exit status, in interleaved rounds:
--   libvirt  vm:run on the libvirt backend (libvirt passes guest-exec and
--            guest-exec-status through, virDomainQemuAgentCommand);
--   virsh    the same work without vmlua: `virsh qemu-agent-command` with
--            guest-exec, then with guest-exec-status until it has exited;
--   QEMU     vm:run on vmlua's QEMU backend (QEMU's socket for the port).
-- The libvirt daemon is the private one of the specs (needs root); both
-- guests run at once, each on a fresh overlay, timed once their boot's jobs
-- are done, and are stopped at the end.
--   build/bin/vmlua bench/agent.lua [-n ROUNDS]
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "benchlib"
package.path = lib.root .. "/tests/?.lua;" .. package.path -- support.libvirtd
local vmlua = require "vmlua"
local host = require "vmlua.host"
local runtime = require "vmlua.runtime"
local libvirtd = require "support.libvirtd"
local core, task = lib.core, lib.task

local ROUNDS = 20
if arg[1] == "-n" then ROUNDS = assert(tonumber(arg[2]), "-n ROUNDS")
elseif arg[1] then error("usage: bench/agent.lua [-n ROUNDS]") end

local IMAGE = runtime.cache() .. "/guests/debian-x86_64/"
local COMMAND = "true"

local function debian(name, overlay, backend)
  return vmlua.vm {
    name = name, arch = "x86_64", cpus = 1, memory = "1G", agent = true, backend = backend,
    boot = vmlua.linux { kernel = IMAGE .. "vmlinuz", initrd = IMAGE .. "initrd.img",
                         cmdline = { "root=/dev/vda", "rw" } },
    disks = { vmlua.disk { path = overlay, base = IMAGE .. "root.ext4" } },
  }
end

-- `virsh -c URI qemu-agent-command DOMAIN JSON`: the agent's reply, decoded.
local function virsh_agent(d, name, request)
  local out = ""
  local code = task.await(function(wake)
    lib.spawn { file = host.which("virsh"), args = { "virsh", "-q", "-c", d.uri, "qemu-agent-command", name,
                                                   core.json_encode(request) },
                on_stdout = function(data) out = out .. data end, on_exit = wake }
  end, 30)
  if code ~= 0 then error("virsh qemu-agent-command: exit status " .. tostring(code)) end
  return core.json_decode(out)["return"]
end

-- The command through virsh: guest-exec, then guest-exec-status until it has exited.
local function by_virsh(d, name)
  local started = virsh_agent(d, name, { execute = "guest-exec",
    arguments = { path = "/bin/sh", arg = { "-c", COMMAND }, ["capture-output"] = true } })
  while true do
    local status = virsh_agent(d, name, { execute = "guest-exec-status", arguments = { pid = started.pid } })
    if status.exited then return status.exitcode end
  end
end

local function timed(fn)
  local t0 = core.now()
  local status = fn()
  assert(status == 0, "the command failed: " .. tostring(status))
  return (core.now() - t0) * 1000
end

lib.main(function()
  assert(libvirtd.usable())
  local scratch = io.popen("mktemp -d /tmp/vmlua-bench.XXXXXX"):read("l")
  local d = libvirtd.start()
  local ok, err = pcall(function()
    local on_libvirt = debian("bench-agent-lv", scratch .. "/lv.qcow2", vmlua.libvirt { uri = d.uri })
    local on_qemu = debian("bench-agent-qemu", scratch .. "/qemu.qcow2")
    on_libvirt:start()
    on_qemu:start()
    local booted = {}
    for _, vm in ipairs { on_libvirt, on_qemu } do
      task.spawn(function()
        assert(select(2, vm:run("true", { timeout = 600 })) == 0)
        vm:run("systemctl is-system-running --wait", { timeout = 600 }) -- the boot's jobs done: a quiet guest
        booted[#booted + 1] = vm
      end)
    end
    local deadline = core.now() + 600
    while #booted < 2 and core.now() < deadline do task.sleep(0.5) end
    assert(#booted == 2, "the guests' agents did not answer within 600 s")

    local cases = {
      { label = "vm:run, libvirt backend", fn = function() return select(2, on_libvirt:run(COMMAND)) end },
      { label = "virsh qemu-agent-command", fn = function() return by_virsh(d, on_libvirt.name) end },
      { label = "vm:run, QEMU backend", fn = function() return select(2, on_qemu:run(COMMAND)) end },
    }
    for round = 0, ROUNDS do -- round 0 warms up
      for _, c in ipairs(cases) do
        c.times = c.times or {}
        local t = timed(c.fn)
        if round > 0 then c.times[#c.times + 1] = t end
      end
    end
    local load = io.open("/proc/loadavg"):read("l"):match("^(%S+)")
    print(string.format("%q through the guest agent of the Debian guest (TCG), call to exit status, %d rounds, "
      .. "interleaved, after 1 warm-up round; load %s", COMMAND, ROUNDS, load))
    print(string.format("  %-28s %9s %9s %9s", "", "median", "min", "p90"))
    for _, c in ipairs(cases) do
      c.stats = lib.stats(c.times)
      print(string.format("  %-28s %6.1f ms %6.1f ms %6.1f ms", c.label, c.stats.median, c.stats.min, c.stats.p90))
    end
    print(string.format("  libvirt backend / virsh: %.2f; libvirt backend / QEMU backend: %.2f",
      cases[1].stats.median / cases[2].stats.median, cases[1].stats.median / cases[3].stats.median))
    on_qemu:stop { timeout = 60 }
    on_libvirt:stop { timeout = 60 }
  end)
  for vm in pairs(require("vmlua.machine").live) do pcall(vm.kill, vm) end
  d:stop()
  os.execute("rm -rf '" .. scratch .. "'")
  if not ok then error(err, 0) end
end)
