-- Console throughput: a guest floods its serial console with BYTES bytes,
-- once through vmlua (vm:run returns the whole output) and once with the
-- same QEMU command writing the console straight to a file; and vmlua's CPU
-- time during its floods. Runs alternate, a fresh guest for each.
--   build/bin/vmlua bench/console.lua [-n RUNS] [-b BYTES] [ARCH ...]
-- Both are timed the same way: from typing the command until its end marker
-- has arrived (in vmlua's hands, or in QEMU's file).
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "benchlib"
local guest = require "guest"
local vmlua = require "vmlua"
local config = require "vmlua.config"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"
local core, task = lib.core, lib.task

local RUNS, BYTES, arches = 3, 4 * 1024 * 1024, {}
local i = 1
while arg[i] do
  if arg[i] == "-n" then RUNS, i = assert(tonumber(arg[i + 1]), "-n RUNS"), i + 2
  elseif arg[i] == "-b" then BYTES, i = assert(math.tointeger(vmlua.size(arg[i + 1])), "-b BYTES"), i + 2
  else arches[#arches + 1], i = arg[i], i + 1 end
end
if #arches == 0 then arches = { "x86_64" } end

-- Lines of 32 bytes; the end marker goes through printf's %s, so the
-- command's echo never contains it.
local LINE = "vmlua console throughput bench"
local FLOOD = string.format("yes '%s' | head -c %d; printf '\\n<<%%s>>\\n' flood:end", LINE, BYTES)
local MARKER = "<<flood:end>>"

local function spec(arch, n)
  local s = guest.spec(vmlua, arch)
  s.name = string.format("bench-console-%d-%d", core.getpid(), n)
  return s
end

-- vmlua's QEMU argv without QMP, its console chardev (vmlua's FIFOs) a
-- socket the bench listens on, with QEMU logging all console output to `log`.
local function direct_argv(arch, sock, log)
  local cfg = config.vm(spec(arch, 0))
  local args = qemu.command(cfg, runtime.paths(cfg.name)).args
  local out, replaced, k = {}, 0, 1
  while args[k] do
    local a, v = args[k], args[k + 1]
    if a == "-qmp" then
      k = k + 2
    elseif a == "-chardev" and v:find("^pipe,id=console,") then
      out[#out + 1], out[#out + 2] = a, "socket,id=console,path=" .. sock .. ",logfile=" .. log
      replaced, k = replaced + 1, k + 2
    else
      out[#out + 1], k = a, k + 1
    end
  end
  assert(replaced == 1, "vmlua's QEMU argv no longer has the expected console -chardev")
  return out, qemu.accel(cfg)
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

-- Does `path` hold `text` after byte `from`? Reads only what is new.
local function watch_file(path, text, from)
  local seen, carry = from, ""
  return function()
    local f = io.open(path, "rb")
    if not f then return false end
    f:seek("set", seen)
    local data = f:read("a") or ""
    f:close()
    seen = seen + #data
    local found = (carry .. data):find(text, 1, true)
    carry = (carry .. data):sub(-#text)
    return found ~= nil
  end
end

-- QEMU alone: the bench types the command over the console socket, hangs
-- up, and QEMU goes on writing the console to its log file only.
local function flood_direct(arch, dir, n)
  local sock, log = dir .. "/direct-" .. n .. ".sock", dir .. "/direct-" .. n .. ".log"
  local argv, accel = direct_argv(arch, sock, log)
  local stream, seen = nil, ""
  local server = assert(core.listen(sock, function(s)
    stream = s
    s:read(function(data) if data then seen = (seen .. data):sub(-256) end end)
  end))
  local p = lib.spawn { file = argv[1], args = argv, on_stderr = function(d) io.stderr:write(d) end }
  local prompted = false
  for _ = 1, 1200 do
    if seen:find("vmlua# ", 1, true) then prompted = true break end
    task.sleep(0.05)
  end
  server:close()
  if not prompted then error("direct QEMU: no prompt within 60 s") end
  task.sleep(0.2) -- the prompt's escape sequences come last
  local done = watch_file(log, MARKER, file_size(log))
  local t0 = core.now()
  stream:write(FLOOD .. "\n")
  task.sleep(0.05)
  stream:close()
  while not done() do
    task.sleep(0.02)
    if core.now() - t0 > 600 then error("direct QEMU: the flood did not end within 600 s") end
  end
  local wall = core.now() - t0
  p:kill("KILL")
  lib.wait_exit(p, 5)
  os.remove(sock)
  os.remove(log)
  return wall, accel
end

-- Through vmlua: vm:run returns the whole flood, which is checked.
local function flood_vmlua(arch, n)
  local vm = vmlua.vm(spec(arch, n))
  vm:start()
  lib.pids[vm.process:pid()] = "qemu-system-" .. arch
  vm:expect("vmlua# ", { timeout = 60 })
  task.sleep(0.2)
  local cpu0, t0 = os.clock(), core.now()
  local out, status = vm:run(FLOOD, { timeout = 600 })
  local wall, cpu = core.now() - t0, os.clock() - cpu0
  lib.pids[vm.process:pid()] = nil
  vm:kill()
  assert(status == 0, "the flood exited with status " .. tostring(status))
  local body = out:sub(1, BYTES)
  local expected = string.rep(LINE .. "\n", BYTES // (#LINE + 1) + 1):sub(1, BYTES)
  assert(body == expected, string.format("vm:run returned %d bytes, not the %d the guest printed", #body, BYTES))
  return wall, cpu
end

local function report(arch, accel, direct, via, cpu)
  local d, v, c = lib.stats(direct), lib.stats(via), lib.stats(cpu)
  local mb = BYTES / 1e6
  print(string.format("console flood: %s (%s), %.1f MB of %d-byte lines, %d runs each, interleaved",
                      arch, accel, mb, #LINE + 1, d.n))
  print(string.format("  %-22s %9s %9s %11s", "", "median", "min", "throughput"))
  print(string.format("  %-22s %7.2f s %7.2f s %6.3f MB/s", "QEMU to a file", d.median, d.min, mb / d.median))
  print(string.format("  %-22s %7.2f s %7.2f s %6.3f MB/s", "vmlua (vm:run)", v.median, v.min, mb / v.median))
  print(string.format("  ratio vmlua/QEMU %.2f                          target: >= 0.9", d.median / v.median))
  print(string.format("  vmlua CPU during the flood: %.2f s median, %.0f%% of one CPU", c.median,
                      c.median / v.median * 100))
  print()
end

lib.main(function()
  local dir = assert(core.realpath(os.getenv("TMPDIR") or "/tmp"))
  dir = dir .. "/vmlua-bench-console-" .. core.getpid()
  assert(core.mkdir_private(dir))
  local ok, err = pcall(function()
    for _, arch in ipairs(arches) do
      local direct, via, cpu, accel = {}, {}, {}, nil
      for round = 1, RUNS do
        local order = round % 2 == 1 and { "direct", "vmlua" } or { "vmlua", "direct" }
        for _, which in ipairs(order) do
          if which == "direct" then
            direct[#direct + 1], accel = flood_direct(arch, dir, round)
          else
            local wall, c = flood_vmlua(arch, round)
            via[#via + 1], cpu[#cpu + 1] = wall, c
          end
        end
      end
      report(arch, accel, direct, via, cpu)
    end
  end)
  os.remove(dir)
  if not ok then error(err, 0) end
end)
