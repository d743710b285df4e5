-- Boot-to-shell-prompt time through vmlua against the same QEMU command run
-- directly, then vmlua's own memory and CPU while its guest sits idle.
--   build/bin/vmlua bench/boot.lua [-n RUNS] [-i IDLE_SECONDS] [ARCH ...]
-- Both are timed from outside the same way: from spawn until the marker
-- shows on the child's stdout ("vmlua# " from QEMU, "PROMPT" from vmlua).
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "benchlib"
local guest = require "guest"
local vmlua = require "vmlua"
local config = require "vmlua.config"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"
local core, task = lib.core, lib.task

local RUNS, IDLE, arches = 5, 10, {}
local i = 1
while arg[i] do
  if arg[i] == "-n" then RUNS, i = assert(tonumber(arg[i + 1]), "-n RUNS"), i + 2
  elseif arg[i] == "-i" then IDLE, i = assert(tonumber(arg[i + 1]), "-i SECONDS"), i + 2
  else arches[#arches + 1], i = arg[i], i + 1 end
end
if #arches == 0 then arches = { "x86_64", "aarch64" } end

-- vmlua's exact argv, with the console on stdio instead of its FIFOs, and no QMP.
local function direct_argv(arch)
  local cfg = config.vm(guest.spec(vmlua, arch))
  return lib.direct_argv(qemu.command(cfg, runtime.paths(cfg.name)).args, "stdio"), qemu.accel(cfg)
end

-- Spawns args and waits until `pattern` shows on its stdout. Returns the
-- process, the seconds from spawn to then, and the pattern's capture.
local function boot(args, pattern)
  local p, t0, tail, err = nil, nil, "", ""
  local t, capture = task.await(function(wake)
    t0 = core.now()
    p = lib.spawn { file = args[1], args = args,
      on_stdout = function(data)
        local now = core.now()
        tail = tail:sub(-64) .. data
        local s, _, c = tail:find(pattern)
        if s then wake(now - t0, c) end
      end,
      on_stderr = function(data) err = (err .. data):sub(-2000) end,
      on_exit = function(code, signal) wake(nil, "exited: " .. tostring(signal or code)) end }
  end, 120)
  if not t then error(args[1] .. " " .. (args[2] or "") .. ": no prompt (" .. tostring(capture) .. ")\n" .. err, 2) end
  return p, t, capture, function() return err end
end

local function boot_direct(argv)
  local p, t = boot(argv, "vmlua# ")
  p:kill("TERM")
  if not lib.wait_exit(p, 5) then p:close() end
  return t
end

local function boot_vmlua(arch)
  local p, t, pid, stderr = boot({ lib.vmlua, lib.root .. "/bench/boot-once.lua", arch }, "PROMPT (%d+)\n")
  local run = { p = p, t = t, qemu = tonumber(pid), stderr = stderr }
  lib.pids[run.qemu] = "qemu-system-" .. arch
  return run
end

-- SIGTERM to vmlua: it stops its VM and exits. After `grace` seconds a second
-- SIGTERM makes it force the VM off. Then QEMU must be gone as well.
local function stop_vmlua(run, grace)
  local t0, how = core.now(), "graceful"
  run.p:kill("TERM")
  if not lib.wait_exit(run.p, grace) then
    how = "forced by a second SIGTERM"
    run.p:kill("TERM")
    if not lib.wait_exit(run.p, 10) then error("vmlua did not exit after two SIGTERMs") end
  end
  if run.stderr():find("forcing it off", 1, true) then how = "forced by vmlua (guest ignored power-off)" end
  local seconds = core.now() - t0
  for _ = 1, 40 do -- QEMU is vmlua's child, reaped by vmlua or init: allow a moment
    if not core.alive(run.qemu) then break end
    task.sleep(0.05)
  end
  local left = core.alive(run.qemu) and lib.signal_pid(run.qemu, "KILL", lib.pids[run.qemu])
  lib.pids[run.qemu] = nil
  if left then error("QEMU pid " .. run.qemu .. " outlived vmlua; killed it") end
  return seconds, how
end

-- vmlua's RSS, and the CPU vmlua and QEMU use over `seconds` of guest idling.
local function idle(run, seconds)
  local pid = run.p:pid()
  task.sleep(1) -- let the guest settle after the prompt
  local t0, cpu0, q0, st0 = core.now(), lib.cpu(pid), lib.cpu(run.qemu), lib.status(pid)
  task.sleep(seconds)
  local wall, st = core.now() - t0, lib.status(pid)
  return { wall = wall, rss = st.rss, hwm = st.hwm, threads = st.threads, switches = st.switches - st0.switches,
           cpu = lib.cpu(pid) - cpu0, qemu = lib.cpu(run.qemu) - q0 }
end

local function report(arch, accel, direct, via, r, stop_s, how)
  local d, v = lib.stats(direct), lib.stats(via)
  print(string.format("boot to shell prompt: %s (%s), %d runs each, interleaved", arch, accel, d.n))
  print(string.format("  %-10s %9s %9s %9s", "", "median", "min", "max"))
  print(string.format("  %-10s %6.0f ms %6.0f ms %6.0f ms", "direct", d.median * 1e3, d.min * 1e3, d.max * 1e3))
  print(string.format("  %-10s %6.0f ms %6.0f ms %6.0f ms", "vmlua", v.median * 1e3, v.min * 1e3, v.max * 1e3))
  print(string.format("  ratio %.3f (%+.1f%%), difference %+.0f ms       target: < 5%% and < 100 ms",
    v.median / d.median, (v.median / d.median - 1) * 100, (v.median - d.median) * 1e3))
  print(string.format("idle at the prompt, %.0f s window", r.wall))
  print(string.format("  vmlua RSS  %5.1f MiB (peak %.1f MiB)                target: < 8 MiB",
    r.rss / 1024, r.hwm / 1024))
  print(string.format("  vmlua CPU  %5.2f%% of one CPU, %.0f ms; %d wake-ups (%d thread%s)   target: ~0",
    r.cpu / r.wall * 100, r.cpu * 1e3, r.switches, r.threads, r.threads == 1 and "" or "s"))
  print(string.format("  QEMU CPU   %5.2f%% of one CPU, %.0f ms (for context)", r.qemu / r.wall * 100, r.qemu * 1e3))
  print(string.format("  stop       SIGTERM to exit %.1f s, %s; QEMU gone", stop_s, how))
  print()
end

lib.main(function()
  for _, arch in ipairs(arches) do
    local dir = guest.dir(arch)
    for _, f in ipairs { "vmlinuz", "initrd.img" } do
      assert(core.can_open(dir .. f, "r"), dir .. f .. " is missing: run scripts/build-guests.sh")
    end
    local argv, accel = direct_argv(arch)
    boot_direct(argv) -- warm-up: QEMU, kernel and initrd into the page cache
    local direct, via, last = {}, {}, nil
    for round = 1, RUNS do
      -- Alternate who goes first; the last round ends with vmlua, whose VM stays up.
      local order = (RUNS - round) % 2 == 0 and { "direct", "vmlua" } or { "vmlua", "direct" }
      for n, which in ipairs(order) do
        if which == "direct" then
          direct[#direct + 1] = boot_direct(argv)
        else
          local run = boot_vmlua(arch)
          via[#via + 1] = run.t
          if round == RUNS and n == 2 then last = run else stop_vmlua(run, 1) end
        end
      end
    end
    local r = idle(last, IDLE)
    report(arch, accel, direct, via, r, stop_vmlua(last, 25))
  end
end)
