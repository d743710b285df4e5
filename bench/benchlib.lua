-- Helpers shared by the benchmarks: the build tree on the module path,
-- timed child processes, statistics, /proc readings, and cleanup of every
-- process a benchmark started.
local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local build = dir .. "/../" .. (os.getenv("VMLUA_BUILD") or "build") .. "/" -- VMLUA_BUILD: another build tree
package.path = build .. "share/lua/5.4/?.lua;" .. build .. "share/lua/5.4/?/init.lua;" .. package.path
package.cpath = build .. "lib/lua/5.4/?.so;" .. package.cpath

local core = require "vmlua.core"
local host = require "vmlua.host"
local task = require "vmlua.task"

local lib = { core = core, task = task, live = {}, pids = {} }
lib.root = assert(core.realpath(dir .. "/.."))
lib.vmlua = lib.root .. "/" .. (os.getenv("VMLUA_BUILD") or "build") .. "/bin/vmlua"
lib.TICK = 100 -- USER_HZ: /proc/PID/stat counts CPU time in 1/100 s on Linux

-- core.spawn, remembered until the process exits, so cleanup can end it.
-- lib.live[p] holds the functions to call when p exits.
function lib.spawn(spec)
  local on_exit = spec.on_exit
  local p
  spec.on_exit = function(code, signal)
    local waiters = lib.live[p]
    lib.live[p] = nil
    if on_exit then on_exit(code, signal) end
    for _, wake in ipairs(waiters or {}) do wake(true) end
  end
  local err
  p, err = core.spawn(spec)
  if not p then error(err, 2) end
  lib.live[p] = {}
  return p
end

-- Runs argv to its end and returns the seconds from spawn to exit; raises
-- if it fails.
function lib.time_run(args, timeout)
  local t0, t1
  local code, signal = task.await(function(wake)
    t0 = core.now()
    lib.spawn { file = args[1], args = args,
                on_exit = function(c, s) t1 = core.now() wake(c, s) end }
  end, timeout or 30)
  if code ~= 0 then error(table.concat(args, " ") .. ": " .. (signal or ("exit status " .. tostring(code))), 2) end
  return t1 - t0
end

-- Waits until process p exits; false after `timeout` seconds.
function lib.wait_exit(p, timeout)
  if not lib.live[p] then return true end
  return task.await(function(wake) table.insert(lib.live[p], wake) end, timeout) == true
end

-- Sends a signal to a pid we did not spawn ourselves (QEMU under vmlua),
-- after checking that it is still the program we expect.
function lib.signal_pid(pid, signal, program)
  local f = io.open("/proc/" .. pid .. "/cmdline")
  local cmd = f and f:read("a") or ""
  if f then f:close() end
  if not cmd:find(program, 1, true) then return false end
  return (pcall(lib.time_run, { host.which("kill"), "-" .. signal, tostring(pid) }))
end

-- Ends everything the benchmark started and that still runs: QEMU under
-- vmlua first (so vmlua sees its VM end and cleans up), then the children.
function lib.cleanup()
  for pid, program in pairs(lib.pids) do lib.signal_pid(pid, "KILL", program) end
  for p in pairs(lib.live) do p:kill("TERM") end
  local deadline = core.now() + 5
  for p in pairs(lib.live) do lib.wait_exit(p, math.max(0, deadline - core.now())) end
  for p in pairs(lib.live) do p:close() end -- SIGKILL and reap
end

-- Runs fn; whatever happens, ends every process it started. Exits 1 on error.
function lib.main(fn)
  -- Ctrl-C or SIGTERM: kill every child at once and exit as a shell would
  -- (a QEMU under a vmlua child gets SIGTERM from the kernel as vmlua dies).
  local watchers = {}
  for name, code in pairs { INT = 130, TERM = 143 } do
    watchers[#watchers + 1] = core.signal(name, function()
      for p in pairs(lib.live) do p:close() end
      io.stderr:write("bench: interrupted by SIG", name, "\n")
      os.exit(code)
    end)
  end
  local ok, err = xpcall(fn, debug.traceback)
  lib.cleanup()
  for _, w in ipairs(watchers) do w:close() end
  if not ok then
    io.stderr:write("bench: ", tostring(err), "\n")
    os.exit(1)
  end
end

-- Median, minimum, maximum and 90th percentile (nearest rank).
-- `args`, vmlua's QEMU argv (qemu.command's), as the same QEMU is run by
-- hand: its QMP sockets dropped and the console on `serial` ("stdio",
-- "file:PATH") instead of vmlua's FIFOs.
function lib.direct_argv(args, serial)
  local out, dropped, k = {}, 0, 1
  while args[k] do
    local a, v = args[k], args[k + 1]
    if a == "-qmp" or (a == "-chardev" and v:find("^pipe,id=console,")) then
      dropped, k = dropped + 1, k + 2
    elseif a == "-serial" and v == "chardev:console" then
      out[#out + 1], out[#out + 2], dropped, k = "-serial", serial, dropped + 1, k + 2
    else
      out[#out + 1], k = a, k + 1
    end
  end
  assert(dropped == 4, "vmlua's QEMU argv no longer has the expected -qmp/-chardev/-serial options")
  return out
end

function lib.stats(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  local median = n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
  return { n = n, median = median, min = s[1], max = s[n], p90 = s[math.ceil(0.9 * n)] }
end

-- Times each case's `args` from spawn to exit, `runs` times, interleaved so
-- all see the same machine, after `warmup` rounds that only warm up; then
-- prints the table (`note` ends its first line).
function lib.spawn_to_exit(cases, runs, warmup, note)
  for round = 1, warmup + runs do
    for _, c in ipairs(cases) do
      c.times = c.times or {}
      local t = lib.time_run(c.args)
      if round > warmup then c.times[#c.times + 1] = t * 1000 end
    end
  end
  print(string.format("spawn to exit, %d runs each (after %d warm-up runs)%s", runs, warmup, note or ""))
  print(string.format("  %-36s %8s %8s %8s   %s", "", "median", "min", "p90", "target"))
  for _, c in ipairs(cases) do
    local s = lib.stats(c.times)
    print(string.format("  %-36s %5.1f ms %5.1f ms %5.1f ms   %s", c.label, s.median, s.min, s.p90, c.target or ""))
  end
end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- VmRSS and VmHWM (peak) in KiB, threads, and the main thread's context
-- switches (voluntary + not): each is a wake-up.
function lib.status(pid)
  local s = assert(read("/proc/" .. pid .. "/status"), "no process " .. pid)
  local function field(name) return tonumber(s:match(name .. ":%s*(%d+)")) end
  return { rss = field("VmRSS"), hwm = field("VmHWM"), threads = field("Threads"),
           switches = field("voluntary_ctxt_switches") + field("nonvoluntary_ctxt_switches") }
end

-- CPU seconds used so far (user + system) by process pid.
function lib.cpu(pid)
  local s = assert(read("/proc/" .. pid .. "/stat"), "no process " .. pid)
  local rest = s:match("%) (.*)$") -- after the command name, which may hold spaces
  local f = {}
  for word in rest:gmatch("%S+") do f[#f + 1] = word end
  return (tonumber(f[12]) + tonumber(f[13])) / lib.TICK -- fields 14 and 15 of stat
end

return lib
