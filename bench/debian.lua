-- The Debian guest (scripts/build-debian.sh) booted to ssh through vmlua
-- against the same QEMU argv run directly, in interleaved rounds; then
-- vmlua's own memory and CPU while the last guest idles.
--   build/bin/vmlua bench/debian.lua [-n ROUNDS] [-i IDLE_SECONDS]
-- Both are timed from outside the same way: from spawn until `ssh ... true`
-- gets in through the NAT forward (asked every 0.25 s once sshd's banner
-- shows). Each boot gets a fresh copy-on-write overlay, made beforehand.
-- With --child OVERLAY PORT it is the vmlua side: it starts the VM, prints
-- "STARTED <QEMU pid>", and stops it on SIGTERM.
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "benchlib"
local vmlua = require "vmlua"
local config = require "vmlua.config"
local exec = require "vmlua.exec"
local host = require "vmlua.host"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"
local ssh = require "vmlua.ssh"
local core, task = lib.core, lib.task

local IMAGE = runtime.cache() .. "/guests/debian-x86_64/"

-- The Debian example's VM (examples/debian.lua), on `overlay`, ssh on `port`.
local function spec(overlay, port)
  return {
    name = "bench-debian", arch = "x86_64", cpus = 2, memory = "1G",
    boot = vmlua.linux { kernel = IMAGE .. "vmlinuz", initrd = IMAGE .. "initrd.img",
                         cmdline = { "root=/dev/vda", "rw" } },
    disks = { vmlua.disk { path = overlay, base = IMAGE .. "root.ext4" } },
    net = { vmlua.nat { forward = { [port] = 22 } } },
    ssh = { user = "root", key = IMAGE .. "id_ed25519" },
    agent = true,
  }
end

if arg[1] == "--child" then
  local vm = vmlua.vm(spec(arg[2], math.tointeger(tonumber(arg[3]))))
  vm:start()
  io.stdout:write("STARTED ", vm.process:pid(), "\n")
  io.stdout:flush()
  vm:wait("stopped")
  return
end

local ROUNDS, IDLE = 3, 30
local i = 1
while arg[i] do
  if arg[i] == "-n" then ROUNDS, i = assert(tonumber(arg[i + 1]), "-n ROUNDS"), i + 2
  elseif arg[i] == "-i" then IDLE, i = assert(tonumber(arg[i + 1]), "-i SECONDS"), i + 2
  else error("usage: bench/debian.lua [-n ROUNDS] [-i IDLE_SECONDS]") end
end

local scratch = io.popen("mktemp -d /tmp/vmlua-bench.XXXXXX"):read("l")
local boots = 0

-- A fresh overlay of the image and a free port, for one boot.
local function fresh()
  boots = boots + 1
  local overlay = string.format("%s/debian-%d.qcow2", scratch, boots)
  local img = assert(host.which("qemu-img"), "no qemu-img on PATH")
  lib.time_run({ img, "create", "-q", "-f", "qcow2", "-b", IMAGE .. "root.ext4", "-F", "raw", overlay }, 60)
  return overlay, assert(core.free_port("127.0.0.1"))
end

-- vmlua's exact argv, with the console written to a file instead of its
-- FIFOs, no QMP, and the agent's socket in a directory of its own.
local function direct_argv(overlay, port)
  local cfg = config.vm(spec(overlay, port))
  local paths = runtime.paths(cfg.name, scratch .. "/direct-" .. boots)
  assert(core.mkdir_private(paths.dir:match("^(.*)/[^/]+$")))
  assert(core.mkdir_private(paths.dir))
  local dir = paths.dir
  return lib.direct_argv(qemu.command(cfg, paths).args, "file:" .. dir .. "/console.log")
end

-- Seconds from t0 until ssh gets in on `port`; raises after `timeout`.
local function until_ssh(t0, port, timeout, alive)
  local target = { address = "127.0.0.1", port = port, user = "root", key = IMAGE .. "id_ed25519",
                   known_hosts = scratch .. "/known_hosts" }
  local deadline = t0 + timeout
  while core.now() < deadline do
    if not alive() then error("the guest's QEMU ended before ssh answered") end
    if pcall(exec.wait_port, "127.0.0.1", port, { timeout = 0.5, banner = "^SSH%-" }) then
      local ok, _, status = pcall(exec.run, ssh.argv(target, "true"), { timeout = 30 })
      if ok and status == 0 then return core.now() - t0 end
    end
    task.sleep(0.25)
  end
  error(string.format("no ssh on 127.0.0.1:%d within %d s", port, timeout))
end

local function boot_direct()
  local overlay, port = fresh()
  local argv = direct_argv(overlay, port)
  local t0, exited, err = core.now(), false, ""
  local p = lib.spawn { file = argv[1], args = argv,
                        on_stderr = function(data) err = (err .. data):sub(-2000) end,
                        on_exit = function() exited = true end }
  local ok, t = pcall(until_ssh, t0, port, 900, function() return not exited end)
  p:kill("TERM")
  if not lib.wait_exit(p, 10) then p:close() end
  if not ok then error("direct: " .. tostring(t) .. "\n" .. err, 0) end
  return t
end

local function boot_vmlua()
  local overlay, port = fresh()
  local t0, exited, err, pid = core.now(), false, "", nil
  local p = lib.spawn { file = lib.vmlua, args = { lib.vmlua, lib.root .. "/bench/debian.lua", "--child", overlay,
                                                    tostring(port) },
                        on_stdout = function(data) pid = pid or tonumber(data:match("STARTED (%d+)")) end,
                        on_stderr = function(data) err = (err .. data):sub(-2000) end,
                        on_exit = function() exited = true end }
  local ok, t = pcall(until_ssh, t0, port, 900, function() return not exited end)
  if pid then lib.pids[pid] = "qemu-system-x86_64" end
  if not ok then error("vmlua: " .. tostring(t) .. "\n" .. err, 0) end
  return { p = p, t = t, qemu = pid }
end

-- SIGTERM to vmlua: it stops its VM (the power button) and exits.
local function stop_vmlua(run)
  local t0 = core.now()
  run.p:kill("TERM")
  if not lib.wait_exit(run.p, 90) then
    run.p:kill("TERM") -- a second one forces the VM off
    assert(lib.wait_exit(run.p, 15), "vmlua did not exit after two SIGTERMs")
  end
  local seconds = core.now() - t0
  for _ = 1, 40 do
    if not (run.qemu and core.alive(run.qemu)) then break end
    task.sleep(0.05)
  end
  if run.qemu then lib.pids[run.qemu] = nil end
  return seconds
end

-- vmlua's RSS, and the CPU vmlua and QEMU use, over `seconds` of idling.
local function idle(run, seconds)
  local pid = run.p:pid()
  local t0, cpu0, q0 = core.now(), lib.cpu(pid), lib.cpu(run.qemu)
  task.sleep(seconds)
  local wall, st = core.now() - t0, lib.status(pid)
  return { wall = wall, rss = st.rss, hwm = st.hwm, cpu = lib.cpu(pid) - cpu0, qemu = lib.cpu(run.qemu) - q0 }
end

local function bench()
  for _, f in ipairs { "vmlinuz", "initrd.img", "root.ext4", "id_ed25519" } do
    assert(core.can_open(IMAGE .. f, "r"), IMAGE .. f .. " is missing: run scripts/build-debian.sh")
  end
  local direct, via, last = {}, {}, nil
  for round = 1, ROUNDS do
    -- Alternate who goes first; the last round ends with vmlua, whose VM stays up.
    local order = (ROUNDS - round) % 2 == 0 and { "direct", "vmlua" } or { "vmlua", "direct" }
    for n, which in ipairs(order) do
      if which == "direct" then
        direct[#direct + 1] = boot_direct()
      else
        local run = boot_vmlua()
        via[#via + 1] = run.t
        if round == ROUNDS and n == 2 then last = run else stop_vmlua(run) end
      end
      io.stderr:write(string.format("bench: round %d, %s: %.1f s\n", round, which,
                                    which == "direct" and direct[#direct] or via[#via]))
    end
  end
  local r = idle(last, IDLE)
  local stop_s = stop_vmlua(last)
  local d, v = lib.stats(direct), lib.stats(via)
  print(string.format("Debian 12 boot to ssh: x86_64, 2 CPUs, 1 GiB, %d rounds, interleaved", d.n))
  print(string.format("  %-10s %8s %8s %8s", "", "median", "min", "max"))
  print(string.format("  %-10s %6.1f s %6.1f s %6.1f s", "direct", d.median, d.min, d.max))
  print(string.format("  %-10s %6.1f s %6.1f s %6.1f s", "vmlua", v.median, v.min, v.max))
  print(string.format("  ratio %.3f (%+.1f%%)                        target: <= 1.02",
    v.median / d.median, (v.median / d.median - 1) * 100))
  print(string.format("idle after ssh answered, %.0f s window", r.wall))
  print(string.format("  vmlua RSS  %5.1f MiB (peak %.1f MiB)", r.rss / 1024, r.hwm / 1024))
  print(string.format("  vmlua CPU  %5.2f%% of one core, %.0f ms", r.cpu / r.wall * 100, r.cpu * 1e3))
  print(string.format("  QEMU CPU   %5.1f%% of one core (for context)", r.qemu / r.wall * 100))
  print(string.format("  stop       SIGTERM to vmlua's exit %.1f s (power button)", stop_s))
end

lib.main(function()
  local ok, err = xpcall(bench, debug.traceback)
  lib.cleanup() -- every QEMU ends before its overlay goes
  os.execute("rm -rf '" .. scratch .. "'")
  if not ok then error(err, 0) end
end)
