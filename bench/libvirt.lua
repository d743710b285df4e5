-- Boot to the shell prompt and a graceful stop of the x86_64 benchmark
-- guest three ways, interleaved, as ratios: QEMU by hand, `virsh create`
-- of the domain XML vmlua makes, and vmlua with its libvirt backend. The
-- libvirt daemon is the private one of the specs (tests/support/libvirtd.lua,
-- needs root), started here and stopped at the end: the host's libvirt is
-- never used.
--   build/bin/vmlua bench/libvirt.lua [-n RUNS] [-w WARMUP_ROUNDS]
-- (5 rounds after 1 warm-up round; each round starts with the next case).
-- Boot is timed from spawn (of QEMU, of `virsh create`, of a vmlua process
-- running bench/libvirt-once.lua) until "vmlua# " shows on the console:
--   by hand  vmlua's QEMU argv, console on -serial stdio, QMP on a socket
--            the bench listens on;
--   virsh    domain.xml's XML with its pty serial made a pipe serial (two
--            FIFOs the bench holds open before the create, as vmlua's QEMU
--            backend does), since `virsh console` is not for programs;
--   vmlua    vm:start() and vm:expect() (the console is libvirt's stream of
--            the pty serial).
-- Stop is the ACPI power button, timed until the VM is gone: by hand, QMP
-- system_powerdown until QEMU exits; virsh, spawning `virsh shutdown` until
-- libvirt's "Stopped" lifecycle event (`virsh event`); vmlua, the time
-- vm:stop() takes (it returns on that same event).
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "benchlib"
package.path = lib.root .. "/tests/?.lua;" .. package.path -- support.libvirtd
local guest = require "guest"
local vmlua = require "vmlua"
local config = require "vmlua.config"
local host = require "vmlua.host"
local qemu = require "vmlua.qemu"
local qmp = require "vmlua.qmp"
local runtime = require "vmlua.runtime"
local domain = require "vmlua.libvirt.domain"
local libvirtd = require "support.libvirtd"
local core, task = lib.core, lib.task

local RUNS, WARMUP = 5, 1
local i = 1
while arg[i] do
  if arg[i] == "-n" then RUNS, i = assert(tonumber(arg[i + 1]), "-n RUNS"), i + 2
  elseif arg[i] == "-w" then WARMUP, i = assert(tonumber(arg[i + 1]), "-w ROUNDS"), i + 2
  else error("usage: libvirt.lua [-n RUNS] [-w WARMUP_ROUNDS]") end
end

local ARCH, PROMPT, TIMEOUT = "x86_64", "vmlua# ", 120
local VIRSH_NAME, VMLUA_NAME = "lvbench-virsh", "lvbench-vmlua"

local function read_line(cmd)
  local p = io.popen(cmd)
  local line = p:read("l")
  p:close()
  return line
end

-- Calls on_prompt(now) once `pattern` shows in the chunks given to the
-- returned function.
local function watcher(pattern, on_prompt)
  local tail, seen = "", false
  return function(data)
    local now = core.now()
    tail = (tail .. data):sub(-256)
    if not seen and tail:find(pattern, 1, true) then seen = true on_prompt(now) end
  end, function() return tail end
end

-- vmlua's QEMU argv with the console on stdio and QMP connecting to `socket`.
local function direct_argv(cfg, socket)
  local out = lib.direct_argv(qemu.command(cfg, runtime.paths(cfg.name)).args, "stdio")
  out[#out + 1], out[#out + 2] = "-qmp", "unix:" .. socket
  return out
end

-- domain.xml's XML for the guest, named `name`, its serial a pipe at `path`.
local function virsh_xml(cfg, name, path)
  local xml = assert(domain.xml(cfg, { accel = qemu.accel(cfg) or "tcg" }))
  xml = xml:gsub("<name>[^<]*</name>", "<name>" .. name .. "</name>", 1)
  local pty = "    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n"
          .. "    <console type='pty'>\n      <target port='0' type='serial'/>\n    </console>\n"
  local pipe = "    <serial type='pipe'>\n      <source path='" .. path .. "'/>\n"
            .. "      <target port='0'/>\n    </serial>\n"
  local s, e = xml:find(pty, 1, true)
  assert(s, "domain.xml no longer has the expected pty serial and console")
  return xml:sub(1, s - 1) .. pipe .. xml:sub(e + 1)
end

-- (a) QEMU by hand: boot seconds, stop seconds.
local function by_hand(argv, socket)
  os.remove(socket)
  local changed, r, server, conn = task.condition(), {}, nil, nil
  local feed, tail = watcher(PROMPT, function(now) r.boot = now - r.t0 changed.notify() end)
  local ok = task.await(function(wake)
    server = assert(core.listen(socket, function(s) if not conn then conn = s wake(true) end end))
    r.t0 = core.now()
    lib.spawn { file = argv[1], args = argv, on_stdout = feed,
      on_exit = function() r.exited = core.now() changed.notify() wake(false) end }
  end, 30)
  server:close()
  if not ok then error("by hand: QEMU did not connect to QMP\n" .. tail()) end
  local client = qmp.new(conn, { on_event = function() end, on_close = function() end })
  assert(client:handshake(30))
  if not changed.wait(function() return r.boot or r.exited end, TIMEOUT) or not r.boot then
    error("by hand: no prompt\n" .. tail())
  end
  local s0 = core.now()
  client:send("system_powerdown", nil, function() end)
  if not changed.wait(function() return r.exited end, 60) then error("by hand: QEMU ignored system_powerdown") end
  client:close()
  return r.boot, r.exited - s0
end

-- Spawns `virsh -c URI args...` with output to `on_stdout`; the process.
local function virsh_spawn(d, args, on_stdout, on_exit)
  local argv = { host.which("virsh"), "-q", "-c", d.uri }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return lib.spawn { file = argv[1], args = argv, on_stdout = on_stdout, on_exit = on_exit }
end

-- (b) `virsh create` and `virsh shutdown`: boot seconds, stop seconds,
-- the seconds `virsh create` itself took.
local function by_virsh(d, xml_file, fifo)
  os.remove(fifo .. ".in")
  os.remove(fifo .. ".out")
  local console = assert(core.open_fifos(fifo .. ".out", fifo .. ".in"))
  local changed = task.condition()
  local r = {}
  local feed, tail = watcher(PROMPT, function(now) r.boot = now - r.t0 changed.notify() end)
  console:read(function(data) if data then feed(data) end end)
  local events = ""
  local ok, err = pcall(function()
    r.t0 = core.now()
    virsh_spawn(d, { "create", xml_file }, nil, function(code)
      r.created, r.create_code = core.now() - r.t0, code
      changed.notify()
    end)
    changed.wait(function() return r.created end, TIMEOUT)
    if r.create_code ~= 0 then error("virsh create: exit status " .. tostring(r.create_code)) end
    -- libvirt's lifecycle events for the domain, from long before the stop
    local watch = virsh_spawn(d, { "event", "--domain", VIRSH_NAME, "--event", "lifecycle", "--loop" },
      function(data)
        events = events .. data
        local how = events:match("Stopped (%a+)")
        if how and not r.stopped then r.stopped, r.how = core.now(), how changed.notify() end
      end)
    if not changed.wait(function() return r.boot end, TIMEOUT) then error("no prompt\n" .. tail()) end
    local pids = d:qemu_pids()
    local s0 = core.now()
    virsh_spawn(d, { "shutdown", VIRSH_NAME }, nil, function(code) r.shutdown_code = code changed.notify() end)
    if not changed.wait(function() return r.stopped end, 60) then
      error("no Stopped event within 60 s of virsh shutdown (exit status " .. tostring(r.shutdown_code)
        .. "); events:\n" .. events)
    end
    r.stop = r.stopped - s0
    if r.how ~= "Shutdown" then error("the domain stopped, but not by its shutdown: " .. r.how) end
    watch:kill("TERM")
    for _, pid in ipairs(pids) do
      if core.alive(pid) then error("QEMU " .. pid .. " still runs after libvirt's Stopped event") end
    end
  end)
  console:close()
  if not ok then
    d:virsh({ "destroy", VIRSH_NAME }, 30)
    error("virsh: " .. tostring(err), 0)
  end
  return r.boot, r.stop, r.created
end

-- (c) vmlua with the libvirt backend, a vmlua process per run: boot seconds
-- (spawn to prompt), stop seconds (vm:stop()), and how it stopped.
local function by_vmlua(d, stop_socket)
  local args = { lib.vmlua, lib.root .. "/bench/libvirt-once.lua", d.uri, VMLUA_NAME, stop_socket }
  local changed, r, out, err = task.condition(), {}, "", ""
  r.t0 = core.now()
  lib.spawn { file = args[1], args = args,
    on_stdout = function(data)
      local now = core.now()
      out = out .. data
      if not r.boot and out:find("PROMPT %d*\n") then r.boot = now - r.t0 end
      r.stop = r.stop or tonumber(out:match("STOPPED ([%d.]+)\n"))
      changed.notify()
    end,
    on_stderr = function(data) err = (err .. data):sub(-2000) end,
    on_exit = function(code, signal) r.exit = { code, signal } changed.notify() end }
  if not changed.wait(function() return r.boot or r.exit end, TIMEOUT) or not r.boot then
    error("vmlua: no prompt\n" .. err)
  end
  local pid = tonumber(out:match("PROMPT (%d+)\n"))
  local conn, why = task.await(function(wake) core.connect(stop_socket, function(s, e) wake(s, e) end) end, 10)
  if not conn then error("vmlua: cannot ask it to stop: " .. tostring(why)) end
  conn:close()
  if not changed.wait(function() return r.exit end, 60) then error("vmlua: did not exit after its stop\n" .. err) end
  if not r.stop or r.exit[1] ~= 0 then error("vmlua: " .. tostring(r.exit[2] or r.exit[1]) .. "\n" .. err) end
  if pid and core.alive(pid) then error("vmlua: QEMU " .. pid .. " still runs after vm:stop()") end
  return r.boot, r.stop, err:find("forcing it off", 1, true) and "forced" or "graceful"
end

local function ms(x) return string.format("%6.0f ms", x * 1e3) end

local function report(t, accel, load0)
  local s = {}
  for k, xs in pairs(t) do s[k] = lib.stats(xs) end
  print(string.format("boot to prompt and graceful stop: %s (%s), %d runs each, interleaved; load %s",
    ARCH, accel, s.raw_boot.n, load0))
  print(string.format("  %-22s %9s %9s %9s   %9s %9s %9s", "", "boot med", "min", "max", "stop med", "min", "max"))
  local rows = { { "QEMU by hand", "raw" }, { "virsh create/shutdown", "virsh" }, { "vmlua + libvirt", "vmlua" } }
  for _, row in ipairs(rows) do
    local b, st = s[row[2] .. "_boot"], s[row[2] .. "_stop"]
    print(string.format("  %-22s %s %s %s   %s %s %s", row[1], ms(b.median), ms(b.min), ms(b.max),
      ms(st.median), ms(st.min), ms(st.max)))
  end
  print(string.format("  (virsh create itself returned after %s median, %s min)",
    ms(s.virsh_create.median):gsub("^%s+", ""), ms(s.virsh_create.min):gsub("^%s+", "")))
  print("ratios of medians        boot    stop")
  local function ratio(label, a, b)
    print(string.format("  %-20s %6.3f  %6.3f   (boot %+.0f ms, stop %+.0f ms)", label,
      s[a .. "_boot"].median / s[b .. "_boot"].median, s[a .. "_stop"].median / s[b .. "_stop"].median,
      (s[a .. "_boot"].median - s[b .. "_boot"].median) * 1e3, (s[a .. "_stop"].median - s[b .. "_stop"].median) * 1e3))
  end
  ratio("vmlua+libvirt/virsh", "vmlua", "virsh")
  ratio("vmlua+libvirt/QEMU", "vmlua", "raw")
  ratio("virsh/QEMU", "virsh", "raw")
end

local function loadavg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then f:close() end
  return s:match("^(%S+ %S+ %S+)") or s
end

-- On Ctrl-C or SIGTERM, vmlua ends the script and closes its handles,
-- which SIGKILLs the daemon's runner before it can end its QEMUs (libvirt
-- daemonizes them: they would outlive the bench). This finalizer, of an
-- object d holds, runs before the runner's (it is made later), kills them
-- first and removes the directories.
local function guard_interrupt(d, tmp)
  d.guard = setmetatable({}, { __gc = function()
    if d.stopped then return end
    for _, pid in ipairs(d:qemu_pids()) do os.execute("kill -KILL " .. math.tointeger(pid)) end
    os.execute("rm -rf '" .. d.dir .. "' '" .. tmp .. "'")
  end })
end

-- The rounds, interleaved, and the table.
local function measure(d, cfg, tmp)
  local accel = qemu.accel(cfg) or "tcg"
  local argv = direct_argv(cfg, tmp .. "/qmp.sock")
  local xml_file = tmp .. "/domain.xml"
  local f = assert(io.open(xml_file, "w"))
  f:write(virsh_xml(cfg, VIRSH_NAME, tmp .. "/console"))
  f:close()
  local load0 = loadavg()
  local t = { raw_boot = {}, raw_stop = {}, virsh_boot = {}, virsh_stop = {}, virsh_create = {},
              vmlua_boot = {}, vmlua_stop = {} }
  local how = {}
  local cases = { "raw", "virsh", "vmlua" }
  for round = 1 - WARMUP, RUNS do
    for n = 0, 2 do -- each round starts with the next case
      local which = cases[(round + n) % 3 + 1]
      local b, st, extra
      if which == "raw" then b, st = by_hand(argv, tmp .. "/qmp.sock")
      elseif which == "virsh" then b, st, extra = by_virsh(d, xml_file, tmp .. "/console")
      else b, st, extra = by_vmlua(d, tmp .. "/stop.sock") how[extra] = (how[extra] or 0) + 1 end
      if round >= 1 then
        table.insert(t[which .. "_boot"], b)
        table.insert(t[which .. "_stop"], st)
        if which == "virsh" then table.insert(t.virsh_create, extra) end
      end
    end
  end
  report(t, accel, load0 .. " at the start, " .. loadavg() .. " at the end")
  if how.forced then
    print(string.format("  vmlua forced %d of its stops (the guest ignored the power button)", how.forced))
  end
end

lib.main(function()
  local dir = guest.dir(ARCH)
  for _, f in ipairs { "vmlinuz", "initrd.img" } do
    assert(core.can_open(dir .. f, "r"), dir .. f .. " is missing: run scripts/build-guests.sh")
  end
  local usable, why = libvirtd.usable()
  if not usable then print("skipped: the private libvirtd cannot run here (" .. why .. ")") return end
  local cfg = config.vm(guest.spec(vmlua, ARCH))
  local tmp = assert(read_line("mktemp -d /tmp/vmlua-bench.XXXXXX"))
  local d
  local ok, err = pcall(function()
    d = libvirtd.start()
    guard_interrupt(d, tmp)
    measure(d, cfg, tmp)
  end)
  if d then d:stop() end
  os.execute("rm -rf '" .. tmp .. "'")
  if not ok then error(err, 0) end
end)
