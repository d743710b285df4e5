-- Restore to a shell against a cold boot to a shell, of the same guest,
-- through vmlua and with QEMU by hand, as ratios in one run; then the size
-- of the saved state per GiB of guest RAM, and what compressing it would do.
--   build/bin/vmlua bench/restore.lua [-n RUNS] [ARCH ...]
-- Every run is timed from outside the same way: from spawn until the guest's
-- shell has answered `echo hi-$((6*7))`. By hand, QEMU gets vmlua's exact
-- argv with the console on stdio (a pty) and no vmlua monitors; its restore
-- is -incoming defer, QMP migrate-incoming "exec:cat STATE", then cont.
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "benchlib"
local guest = require "guest"
local vmlua = require "vmlua"
local config = require "vmlua.config"
local host = require "vmlua.host"
local qemu = require "vmlua.qemu"
local qmp = require "vmlua.qmp"
local runtime = require "vmlua.runtime"
local core, task = lib.core, lib.task

local RUNS, arches = 5, {}
local i = 1
while arg[i] do
  if arg[i] == "-n" then RUNS, i = assert(tonumber(arg[i + 1]), "-n RUNS"), i + 2
  else arches[#arches + 1], i = arg[i], i + 1 end
end
if #arches == 0 then arches = { "x86_64" } end

local PROBE, ANSWER = "echo hi-$((6*7))\n", "hi%-42"

local function read_line(cmd)
  local p = io.popen(cmd)
  local line = p:read("l")
  p:close()
  return line
end

-- vmlua's argv for the benchmark VM, console on stdio, no vmlua monitors.
local function direct_argv(arch)
  local cfg = config.vm(guest.spec(vmlua, arch))
  local args = qemu.command(cfg, runtime.paths(cfg.name)).args
  local out, k = {}, 1
  while args[k] do
    local a, v = args[k], args[k + 1]
    if a == "-qmp" or (a == "-chardev" and v:find("^pipe,id=console,")) then
      k = k + 2
    elseif a == "-serial" and v == "chardev:console" then
      out[#out + 1], out[#out + 2], k = "-serial", "stdio", k + 2
    else
      out[#out + 1], k = a, k + 1
    end
  end
  return out
end

-- QEMU by hand on a pty: the seconds from spawn until the shell answers.
-- prompt: wait for the prompt before asking; restore(p): runs before asking.
local function direct(args, prompt, restore)
  local p, t0, tail, asked = nil, nil, "", false
  local t, err = task.await(function(wake)
    t0 = core.now()
    p = lib.spawn { file = args[1], args = args, pty = {},
      on_stdout = function(data)
        tail = (tail .. data):sub(-256)
        if not asked and prompt and tail:find(prompt) then asked = true p:write(PROBE) end
        if asked and tail:find(ANSWER) then wake(core.now() - t0) end
      end,
      on_exit = function(code, signal) wake(nil, "QEMU exited: " .. tostring(signal or code) .. "\n" .. tail) end }
    if restore then
      task.spawn(function()
        local ok, why = pcall(restore, p)
        if not ok then wake(nil, why) return end
        asked = true
        p:write(PROBE)
      end)
    end
  end, 120)
  p:kill("KILL")
  lib.wait_exit(p, 5)
  if not t then error("by hand: " .. tostring(err), 2) end
  return t
end

-- The restore by hand: QMP on a socket the bench listens on.
local function direct_restore(argv, state, dir)
  local socket = dir .. "/qmp.sock"
  local args = {}
  for k, v in ipairs(argv) do args[k] = v end
  for _, v in ipairs { "-qmp", "unix:" .. socket, "-incoming", "defer" } do args[#args + 1] = v end
  os.remove(socket)
  local conn, server
  local function restore()
    local stream = task.await(function(wake)
      server = assert(core.listen(socket, function(s) wake(s) end))
    end, 30)
    server:close()
    local completed = false
    local done = task.condition()
    conn = qmp.new(assert(stream, "QEMU did not connect to QMP"), {
      on_event = function(name, data)
        if name == "MIGRATION" then completed = data.status; done.notify() end
      end,
      on_close = function() done.notify() end })
    assert(conn:handshake(30))
    assert(conn:execute("migrate-set-capabilities", { capabilities = { { capability = "events", state = true } } }, 30))
    assert(conn:execute("migrate-incoming", { uri = "exec:cat " .. state }, 30))
    done.wait(function() return completed == "completed" or completed == "failed" or not conn.open end, 60)
    assert(completed == "completed", "migration " .. tostring(completed))
    assert(conn:execute("cont", nil, 30))
  end
  local t = direct(args, nil, restore)
  if conn then conn:close() end
  return t
end

-- Through vmlua: a vmlua process per run (see restore-once.lua).
local function via_vmlua(...)
  local args = { lib.vmlua, lib.root .. "/bench/restore-once.lua", ... }
  local p, t0, out, err = nil, nil, "", ""
  local t, pid = task.await(function(wake)
    t0 = core.now()
    p = lib.spawn { file = args[1], args = args,
      on_stdout = function(data)
        out = out .. data
        local q = out:match("READY (%d+)\n")
        if q then wake(core.now() - t0, tonumber(q)) end
      end,
      on_stderr = function(data) err = (err .. data):sub(-2000) end,
      on_exit = function(code, signal) wake(nil, "vmlua exited: " .. tostring(signal or code)) end }
  end, 120)
  if not t then error(table.concat(args, " ", 2) .. ": " .. tostring(pid) .. "\n" .. err, 2) end
  lib.pids[pid] = "qemu-system-"
  if not lib.wait_exit(p, 10) then error("vmlua did not exit after READY") end
  lib.pids[pid] = nil
  return t
end

-- Saves the benchmark VM (MEMORY of RAM) through vmlua: seconds, state bytes.
local function save(arch, snap, memory)
  local out = read_line(string.format("'%s' '%s/bench/restore-once.lua' save %s '%s' %s 2>/dev/null",
                                      lib.vmlua, lib.root, arch, snap, memory))
  local seconds = tonumber(out and out:match("^SAVED ([%d.]+)"))
  assert(seconds, "the save failed: " .. tostring(out))
  return seconds, core.stat(snap .. "/state").size
end

local function row(name, xs)
  local s = lib.stats(xs)
  print(string.format("  %-22s %6.0f ms %6.0f ms %6.0f ms", name, s.median * 1e3, s.min * 1e3, s.max * 1e3))
  return s.median
end

local function mib(bytes) return bytes / (1 << 20) end

-- What zstd -1 makes of the state, and how long it takes back.
local function compression(state, dir)
  local zstd = host.which("zstd")
  if not zstd then return nil end
  local packed = dir .. "/state.zst"
  local pack = lib.time_run({ zstd, "-1", "-q", "-f", state, "-o", packed }, 60)
  local unpack = lib.time_run({ zstd, "-d", "-q", "-f", packed, "-o", "/dev/null" }, 60)
  local size = core.stat(packed).size
  os.remove(packed)
  return size, pack, unpack
end

lib.main(function()
  for _, arch in ipairs(arches) do
    local dir = read_line("mktemp -d /tmp/vmlua-bench.XXXXXX")
    local ok, err = pcall(function()
      local snap = dir .. "/snap"
      local save_s, bytes = save(arch, snap, "256M")
      local argv = direct_argv(arch)
      direct(argv, "vmlua# ") -- warm-up: QEMU, kernel and initrd into the page cache
      local t = { cold = {}, restore = {}, cold_direct = {}, restore_direct = {} }
      for round = 1, RUNS do
        local order = { "cold", "restore", "cold_direct", "restore_direct" }
        if round % 2 == 0 then order = { "restore_direct", "cold_direct", "restore", "cold" } end
        for _, which in ipairs(order) do
          local s
          if which == "cold" then s = via_vmlua("boot", arch)
          elseif which == "restore" then s = via_vmlua("restore", snap)
          elseif which == "cold_direct" then s = direct(argv, "vmlua# ")
          else s = direct_restore(argv, snap .. "/state", dir) end
          table.insert(t[which], s)
        end
      end
      print(string.format("to a shell that answers: %s (%s), 256 MiB guest, %d runs each, interleaved",
                          arch, qemu.accel(config.vm(guest.spec(vmlua, arch))), RUNS))
      print(string.format("  %-22s %9s %9s %9s", "", "median", "min", "max"))
      local cold = row("vmlua cold boot", t.cold)
      local restore = row("vmlua restore", t.restore)
      local cold_d = row("by hand cold boot", t.cold_direct)
      local restore_d = row("by hand restore", t.restore_direct)
      print(string.format("  restore / cold boot: vmlua %.3f, by hand %.3f          target: <= 0.1",
                          restore / cold, restore_d / cold_d))
      print(string.format("  vmlua restore / by hand restore %.2f (%+.0f ms)", restore / restore_d,
                          (restore - restore_d) * 1e3))
      local snap1g = dir .. "/snap-1g"
      local _, bytes1g = save(arch, snap1g, "1G")
      print("saved state (QEMU sends a zero page as a flag, not 4 KiB)")
      print(string.format("  256 MiB guest: %.1f MiB (%.0f MiB per GiB of RAM), saved in %.2f s",
                          mib(bytes), mib(bytes) / (256 / 1024), save_s))
      print(string.format("  1 GiB guest:   %.1f MiB (%.0f MiB per GiB of RAM)", mib(bytes1g), mib(bytes1g)))
      local size, pack, unpack = compression(snap .. "/state", dir)
      if size then
        print(string.format("  zstd -1 of the 256 MiB guest's: %.1f MiB (%.0f%%), %.0f ms to pack, %.0f ms to unpack",
                            mib(size), size / bytes * 100, pack * 1e3, unpack * 1e3))
      end
      print()
    end)
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(err, 0) end
  end
end)
